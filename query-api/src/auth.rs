//! Bearer tokens (`ward indexer --tokens FILE`).
//!
//! The file holds one `<name>:<token>` per line (`#` starts a comment), the
//! format of `deploy/kubernetes/overlays/production/secrets/tokens.yaml.example`.
//! The name says the role:
//!
//! | name | role | may |
//! | --- | --- | --- |
//! | `collector`, `audit-webhook`, `ingest` | ingest | `POST /api/v1/ingest`, `POST /api/v1/k8s/audit` |
//! | `reader`, `viewer` | viewer | (search; not enforced yet) |
//! | `analyst` | analyst | change alert status, run retro-hunts |
//! | `admin` | admin | everything |
//!
//! A name may repeat (several collector tokens, during a rotation). An
//! unknown name fails the start rather than silently granting nothing.
//! Presented tokens are compared with every configured token in constant
//! time, and tokens are never logged.

use std::path::Path;

use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ingest,
    Viewer,
    Analyst,
    Admin,
}

impl Role {
    fn from_name(name: &str) -> Option<Role> {
        match name {
            "collector" | "audit-webhook" | "ingest" => Some(Role::Ingest),
            "reader" | "viewer" => Some(Role::Viewer),
            "analyst" => Some(Role::Analyst),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Whether this role may send events.
    pub fn may_ingest(self) -> bool {
        matches!(self, Role::Ingest | Role::Admin)
    }

    /// Whether this role may change alerts and run retro-hunts.
    pub fn may_triage(self) -> bool {
        matches!(self, Role::Analyst | Role::Admin)
    }
}

struct Entry {
    name: String,
    role: Role,
    token: Vec<u8>,
}

/// The configured tokens.
pub struct Tokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        f.debug_struct("Tokens")
            .field("count", &self.entries.len())
            .finish()
    }
}

impl Tokens {
    /// Reads a tokens file; the error names the file and line, not the token.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, token)) = line.split_once(':') else {
                return Err(format!("line {}: not <name>:<token>", i + 1));
            };
            let (name, token) = (name.trim(), token.trim());
            let role = Role::from_name(name)
                .ok_or_else(|| format!("line {}: unknown role {name:?}", i + 1))?;
            if token.len() < 16 {
                return Err(format!(
                    "line {}: the {name} token is shorter than 16 characters",
                    i + 1
                ));
            }
            entries.push(Entry {
                name: name.to_owned(),
                role,
                token: token.as_bytes().to_vec(),
            });
        }
        if entries.is_empty() {
            return Err("no tokens in the file".into());
        }
        Ok(Tokens { entries })
    }

    /// The role of a presented token, comparing with every entry in
    /// constant time (only the length of a token can leak).
    pub fn role_of(&self, presented: &[u8]) -> Option<Role> {
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.token.as_slice().ct_eq(presented)) {
                found = found.or(Some(entry.role));
            }
        }
        found
    }

    /// The role of an `Authorization` header value (`Bearer <token>`).
    pub fn role_of_header(&self, value: Option<&[u8]>) -> Option<Role> {
        self.identity_of_header(value).map(|(role, _)| role)
    }

    /// The role and name (the line's `<name>`, recorded as who changed an
    /// alert) of an `Authorization` header value.
    pub fn identity_of_header(&self, value: Option<&[u8]>) -> Option<(Role, &str)> {
        let value = value?;
        let token = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))?;
        let presented = token.trim_ascii();
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.token.as_slice().ct_eq(presented)) {
                found = found.or(Some((entry.role, entry.name.as_str())));
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_from_names_and_bad_files() {
        let t = Tokens::parse(
            "# comment\ncollector:c0llector-token-123456\naudit-webhook:webhook-token-1234567\nreader:reader-token-12345678\n",
        )
        .unwrap();
        assert_eq!(
            t.role_of_header(Some(b"Bearer c0llector-token-123456")),
            Some(Role::Ingest)
        );
        assert_eq!(t.role_of(b"webhook-token-1234567"), Some(Role::Ingest));
        assert_eq!(t.role_of(b"reader-token-12345678"), Some(Role::Viewer));
        assert!(!Role::Viewer.may_ingest());
        assert_eq!(
            t.identity_of_header(Some(b"Bearer reader-token-12345678")),
            Some((Role::Viewer, "reader"))
        );
        assert_eq!(t.role_of(b"c0llector-token-12345"), None, "prefix");
        assert_eq!(t.role_of_header(Some(b"c0llector-token-123456")), None);
        assert_eq!(t.role_of_header(None), None);
        assert!(Tokens::parse("root:abcdefghijklmnopqrstu").is_err());
        assert!(Tokens::parse("collector:short").is_err());
        assert!(Tokens::parse("# nothing\n").is_err());
        assert!(!format!("{t:?}").contains("token-"));
    }
}
