//! Bearer tokens (`ward indexer --tokens FILE`) and what each role may do.
//!
//! The file holds one `<role>[/<label>][@<ns>,<ns>…]:<token>` per line (`#`
//! starts a comment), the format of
//! `deploy/kubernetes/overlays/production/secrets/tokens.yaml.example`:
//!
//! ```text
//! collector:3kT9…                 an ingest token
//! viewer/alice@shop,payments:Zq…  alice sees only namespaces shop and payments
//! admin/ops:Hh…                   the label names the holder in the audit trail
//! ```
//!
//! | role (names) | may |
//! | --- | --- |
//! | ingest (`collector`, `audit-webhook`, `ingest`) | `POST /api/v1/ingest`, `POST /api/v1/k8s/audit` only |
//! | viewer (`reader`, `viewer`) | search, aggregate, timeline, tail |
//! | analyst | also export (and alert changes, retro-hunts) |
//! | admin | everything, ingest and backups (`GET /api/v1/alerts/export`) included |
//!
//! `/metrics` needs a viewer, analyst or admin token without a namespace
//! scope (its counts cover every namespace), unless `--metrics-open`.
//!
//! A namespace scope limits what the token sees to container lines of
//! those namespaces (`kubernetes.namespace`) and audit events about objects
//! in them (`objectRef.namespace`); cluster-scoped events and Ward's own
//! audit trail are outside every scope. A name may repeat (several
//! collector tokens, during a rotation). An unknown role fails the start
//! rather than silently granting nothing. Presented tokens are compared
//! with every configured token in constant time, and tokens are never
//! logged: the audit trail names a token by its label, or its role and the
//! first 8 hex digits of its SHA-256.
//!
//! A tokens file others may read, or one its group may read when that is
//! not the indexer's own group (a Kubernetes Secret mounted `0440` with
//! the pod's `fsGroup` is fine), is refused unless the caller accepts it
//! ([`Tokens::load`]'s `accept_readable`, `--tokens-readable`, logged
//! loudly). Tokens that still hold the examples' placeholder
//! (`REPLACE_ME`, `CHANGE_ME`, of `deploy/`) are refused.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ingest,
    Viewer,
    Analyst,
    Admin,
}

/// What an endpoint does, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Ingest,
    Search,
    Aggregate,
    Timeline,
    Tail,
    Export,
    /// Read alerts and sink status.
    Alerts,
    /// Change alert status, run retro-hunts.
    Triage,
    /// Ask who the token belongs to (any valid token may).
    Whoami,
    /// Dump whole stores for a backup (the alert store export): every
    /// alert of every namespace, so admin only.
    Backup,
    /// Read `/metrics`: counts over every namespace, so only tokens
    /// without a namespace scope (viewer, analyst, admin).
    Metrics,
}

impl Action {
    /// Every action, in the order the API documents them.
    pub const ALL: [Action; 11] = [
        Action::Ingest,
        Action::Search,
        Action::Aggregate,
        Action::Timeline,
        Action::Tail,
        Action::Export,
        Action::Alerts,
        Action::Triage,
        Action::Whoami,
        Action::Backup,
        Action::Metrics,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Ingest => "ingest",
            Action::Search => "search",
            Action::Aggregate => "aggregate",
            Action::Timeline => "timeline",
            Action::Tail => "tail",
            Action::Export => "export",
            Action::Alerts => "alerts",
            Action::Triage => "triage",
            Action::Whoami => "whoami",
            Action::Backup => "backup",
            Action::Metrics => "metrics",
        }
    }
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

    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may change alerts and run retro-hunts.
    pub fn may_triage(self) -> bool {
        matches!(self, Role::Analyst | Role::Admin)
    }

    /// Whether this role may send events.
    pub fn may_ingest(self) -> bool {
        self.may(Action::Ingest)
    }

    pub fn may(self, action: Action) -> bool {
        use Action as A;
        if action == A::Whoami {
            return true;
        }
        match self {
            Role::Admin => true,
            Role::Ingest => action == A::Ingest,
            Role::Viewer => matches!(
                action,
                A::Search | A::Aggregate | A::Timeline | A::Tail | A::Alerts | A::Metrics
            ),
            Role::Analyst => matches!(
                action,
                A::Search
                    | A::Aggregate
                    | A::Timeline
                    | A::Tail
                    | A::Export
                    | A::Alerts
                    | A::Triage
                    | A::Metrics
            ),
        }
    }
}

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    /// The label, or `<role>:<sha256 prefix>`: never the token.
    pub name: String,
    pub namespaces: Option<Vec<String>>,
}

struct Entry {
    identity: Identity,
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

fn fingerprint(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a tokens file was refused; never holds a token.
#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is readable by {who} (mode {mode:o}): chmod 600 it (or 640 with the indexer's group), or accept it with --tokens-readable"
    )]
    Readable {
        path: std::path::PathBuf,
        who: &'static str,
        mode: u32,
    },
    #[error("{path}: {reason}")]
    Invalid {
        path: std::path::PathBuf,
        reason: String,
    },
}

/// Placeholders of the examples under `deploy/`: a token holding one was
/// never replaced.
const PLACEHOLDERS: [&str; 3] = ["replace_me", "change_me", "changeme"];

/// Who besides the owner may read the file, when they should not.
#[cfg(unix)]
fn readable_by(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode();
    if mode & 0o004 != 0 {
        return Some("others");
    }
    if mode & 0o040 != 0 && !own_group(meta.gid()) {
        return Some("its group");
    }
    None
}

#[cfg(not(unix))]
fn readable_by(_meta: &std::fs::Metadata) -> Option<&'static str> {
    None
}

/// Whether `gid` is one of this process's groups (from `/proc/self/status`;
/// unknown counts as not).
#[cfg(unix)]
fn own_group(gid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .filter_map(|l| l.strip_prefix("Gid:").or_else(|| l.strip_prefix("Groups:")))
        .flat_map(str::split_whitespace)
        .any(|g| g.parse::<u32>() == Ok(gid))
}

impl Tokens {
    /// Reads a tokens file; the error names the file and line, not the
    /// token. A file readable by others (or by a group not the process's
    /// own) is refused unless `accept_readable`, and then logged as a
    /// warning.
    pub fn load(path: &Path, accept_readable: bool) -> Result<Tokens, TokensFileError> {
        let read_error = |source| TokensFileError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_error)?;
        if let Some(who) = readable_by(&meta) {
            #[cfg(unix)]
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
            #[cfg(not(unix))]
            let mode = 0;
            if !accept_readable {
                return Err(TokensFileError::Readable {
                    path: path.to_owned(),
                    who,
                    mode,
                });
            }
            tracing::warn!(
                path = %path.display(),
                readable_by = who,
                mode = format!("{mode:o}"),
                "THE TOKENS FILE IS READABLE BY {}: anyone who can read it can use Ward as any of its tokens (accepted by --tokens-readable)",
                who.to_uppercase()
            );
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Tokens::parse(&text).map_err(|reason| TokensFileError::Invalid {
            path: path.to_owned(),
            reason,
        })
    }

    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((spec, token)) = line.split_once(':') else {
                return Err(format!("line {}: not <role>:<token>", i + 1));
            };
            let (spec, token) = (spec.trim(), token.trim());
            let (spec, namespaces) = match spec.split_once('@') {
                Some((spec, list)) => {
                    let namespaces: Vec<String> = list
                        .split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                        .collect();
                    if namespaces.is_empty() {
                        return Err(format!("line {}: '@' names no namespace", i + 1));
                    }
                    (spec, Some(namespaces))
                }
                None => (spec, None),
            };
            let (name, label) = match spec.split_once('/') {
                Some((name, label)) => (name, Some(label)),
                None => (spec, None),
            };
            let role = Role::from_name(name)
                .ok_or_else(|| format!("line {}: unknown role {name:?}", i + 1))?;
            let lower = token.to_ascii_lowercase();
            if PLACEHOLDERS.iter().any(|p| lower.contains(p)) {
                return Err(format!(
                    "line {}: the {name} token is still the example's placeholder: replace it with a random one",
                    i + 1
                ));
            }
            if token.len() < 16 {
                return Err(format!(
                    "line {}: the {name} token is shorter than 16 characters",
                    i + 1
                ));
            }
            let name = match label {
                Some(l) if !l.is_empty() => l.to_owned(),
                _ => format!("{}:{}", role.name(), fingerprint(token)),
            };
            entries.push(Entry {
                identity: Identity {
                    role,
                    name,
                    namespaces,
                },
                token: token.as_bytes().to_vec(),
            });
        }
        if entries.is_empty() {
            return Err("no tokens in the file".into());
        }
        Ok(Tokens { entries })
    }

    /// Who a presented token belongs to, comparing with every entry in
    /// constant time (only the length of a token can leak).
    pub fn identify(&self, presented: &[u8]) -> Option<&Identity> {
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.token.as_slice().ct_eq(presented)) {
                found = found.or(Some(&entry.identity));
            }
        }
        found
    }

    /// Who an `Authorization` header value (`Bearer <token>`) belongs to.
    pub fn identify_header(&self, value: Option<&[u8]>) -> Option<&Identity> {
        let value = value?;
        let token = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))?;
        self.identify(token.trim_ascii())
    }

    /// The role of a presented token.
    pub fn role_of(&self, presented: &[u8]) -> Option<Role> {
        self.identify(presented).map(|i| i.role)
    }

    /// The role and name (recorded as who changed an alert) of an
    /// `Authorization` header value.
    pub fn identity_of_header(&self, value: Option<&[u8]>) -> Option<(Role, &str)> {
        self.identify_header(value)
            .map(|i| (i.role, i.name.as_str()))
    }

    /// The role of an `Authorization` header value.
    pub fn role_of_header(&self, value: Option<&[u8]>) -> Option<Role> {
        self.identify_header(value).map(|i| i.role)
    }
}

/// The caller of an API request, as handlers see it: set by the access
/// middleware (anonymous, unscoped, when no tokens are configured).
#[derive(Debug, Clone)]
pub struct Caller {
    /// `None` when the API runs without tokens.
    pub identity: Option<Identity>,
    pub namespaces: Option<Vec<String>>,
    /// Results the handler reports for the audit trail (-1: none).
    count: Arc<AtomicI64>,
}

impl Caller {
    pub(crate) fn new(identity: Option<Identity>) -> Caller {
        Caller {
            namespaces: identity.as_ref().and_then(|i| i.namespaces.clone()),
            identity,
            count: Arc::new(AtomicI64::new(-1)),
        }
    }

    /// Records how many results the request returned (for the audit trail).
    pub fn record_count(&self, n: u64) {
        self.count
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn count(&self) -> Option<u64> {
        u64::try_from(self.count.load(Ordering::Relaxed)).ok()
    }

    pub fn name(&self) -> &str {
        self.identity
            .as_ref()
            .map_or("anonymous", |i| i.name.as_str())
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Caller, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(|| Caller::new(None)))
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
        assert_eq!(t.role_of(b"c0llector-token-12345"), None, "prefix");
        assert_eq!(t.role_of_header(Some(b"c0llector-token-123456")), None);
        assert_eq!(t.role_of_header(None), None);
        assert!(Tokens::parse("root:abcdefghijklmnopqrstu").is_err());
        assert!(Tokens::parse("collector:short").is_err());
        assert!(Tokens::parse("# nothing\n").is_err());
        assert!(!format!("{t:?}").contains("token-"));
    }

    #[test]
    fn labels_and_namespace_scopes() {
        let t = Tokens::parse(
            "viewer/alice@shop, payments:alice-token-1234567\nanalyst:analyst-token-1234567\n",
        )
        .unwrap();
        let alice = t.identify(b"alice-token-1234567").unwrap();
        assert_eq!(alice.role, Role::Viewer);
        assert_eq!(alice.name, "alice");
        assert_eq!(
            alice.namespaces,
            Some(vec!["shop".to_owned(), "payments".to_owned()])
        );
        let analyst = t.identify(b"analyst-token-1234567").unwrap();
        assert!(analyst.name.starts_with("analyst:"), "{}", analyst.name);
        assert!(!analyst.name.contains("token"));
        assert_eq!(analyst.namespaces, None);
        assert!(Tokens::parse("viewer@:abcdefghijklmnopqrstu").is_err());
        assert!(Role::Analyst.may(Action::Export));
        assert!(!Role::Viewer.may(Action::Export));
        assert!(!Role::Ingest.may(Action::Search));
        assert!(Role::Admin.may(Action::Ingest));
        assert!(Role::Ingest.may(Action::Whoami));
        assert!(!Role::Viewer.may(Action::Triage));
        assert!(Role::Admin.may(Action::Backup));
        assert!(!Role::Analyst.may(Action::Backup));
    }

    /// Issue 15: the example's placeholder tokens were accepted.
    #[test]
    fn tokens_still_holding_the_example_placeholder_are_refused() {
        let example = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/kubernetes/overlays/production/secrets/tokens.yaml.example"
        ))
        .unwrap();
        let err = Tokens::parse(&example).unwrap_err();
        assert!(err.contains("placeholder"), "{err}");
        assert!(
            !err.contains("REPLACE_ME"),
            "the error names no token: {err}"
        );
        assert!(Tokens::parse("reader:change_me_please_123456").is_err());
    }

    /// Issue 15: a tokens file anyone on the host could read was loaded.
    #[cfg(unix)]
    #[test]
    fn tokens_files_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "reader:reader-token-12345678\n").unwrap();
        let chmod = |mode| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        chmod(0o644);
        let err = Tokens::load(&path, false).unwrap_err();
        assert!(
            matches!(err, TokensFileError::Readable { who: "others", .. }),
            "{err}"
        );
        assert!(Tokens::load(&path, true).is_ok(), "accepted when asked to");
        chmod(0o600);
        assert!(Tokens::load(&path, false).is_ok());
        // Group-readable is fine with the process's own group (a Secret
        // mounted 0440 with the pod's fsGroup).
        chmod(0o640);
        assert!(Tokens::load(&path, false).is_ok());
    }
}
