//! The Sigma detection condition: a small hand-written recursive-descent
//! parser and the compiled tree it produces.
//!
//! Grammar (keywords case-insensitive), loosest binding first:
//!
//! ```text
//! or_expr  := and_expr ("or" and_expr)*
//! and_expr := not_expr ("and" not_expr)*
//! not_expr := "not" not_expr | primary
//! primary  := "(" or_expr ")" | quant "of" target | name
//! quant    := "all" | "any" | <integer>          ("1 of" = any)
//! target   := "them" | name-pattern              (`*` wildcards)
//! ```
//!
//! Names are resolved to selection indices at compile time, and `x of
//! pattern*` is expanded then, so evaluation never touches strings. `them`
//! skips selections whose names start with `_`, as the spec asks. The old
//! aggregation syntax (`| count() by …`) is refused with a pointer to
//! correlation rules.

use crate::Error;

/// A compiled condition over selection indices.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    Sel(usize),
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    /// At least `n` of the selections match.
    AtLeast(usize, Vec<usize>),
}

impl Cond {
    pub(crate) fn eval(&self, sel: &mut dyn FnMut(usize) -> bool) -> bool {
        match self {
            Cond::Sel(i) => sel(*i),
            Cond::Not(c) => !c.eval(sel),
            Cond::And(cs) => cs.iter().all(|c| c.eval(sel)),
            Cond::Or(cs) => cs.iter().any(|c| c.eval(sel)),
            Cond::AtLeast(n, is) => {
                let mut hits = 0;
                for i in is {
                    if sel(*i) {
                        hits += 1;
                        if hits >= *n {
                            return true;
                        }
                    }
                }
                false
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token<'a> {
    Open,
    Close,
    Word(&'a str),
}

fn lex(s: &str) -> Result<Vec<Token<'_>>, String> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push(Token::Open);
                i += 1;
            }
            b')' => {
                out.push(Token::Close);
                i += 1;
            }
            b'|' => {
                return Err(
                    "aggregations (`| count() …`) are Sigma v1; write a correlation rule".into(),
                );
            }
            _ => {
                let start = i;
                while i < bytes.len()
                    && !matches!(bytes[i], b' ' | b'\t' | b'\n' | b'\r' | b'(' | b')' | b'|')
                {
                    i += 1;
                }
                out.push(Token::Word(&s[start..i]));
            }
        }
    }
    Ok(out)
}

fn is_kw(t: Option<&Token<'_>>, kw: &str) -> bool {
    matches!(t, Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw))
}

struct Parser<'a, 'n> {
    toks: Vec<Token<'a>>,
    pos: usize,
    names: &'n [String],
}

/// Parses `condition` over the named selections.
pub(crate) fn parse(condition: &str, names: &[String]) -> Result<Cond, Error> {
    let err = |reason: String| Error::Condition {
        condition: condition.to_owned(),
        reason,
    };
    let toks = lex(condition).map_err(err)?;
    if toks.is_empty() {
        return Err(err("empty condition".into()));
    }
    let mut p = Parser {
        toks,
        pos: 0,
        names,
    };
    let c = p.or_expr().map_err(err)?;
    if p.pos != p.toks.len() {
        return Err(err(format!("unexpected {:?}", p.toks[p.pos])));
    }
    Ok(c)
}

impl<'a> Parser<'a, '_> {
    fn peek(&self) -> Option<Token<'a>> {
        self.toks.get(self.pos).copied()
    }

    fn or_expr(&mut self) -> Result<Cond, String> {
        let mut items = vec![self.and_expr()?];
        while is_kw(self.peek().as_ref(), "or") {
            self.pos += 1;
            items.push(self.and_expr()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Cond::Or(items)
        })
    }

    fn and_expr(&mut self) -> Result<Cond, String> {
        let mut items = vec![self.not_expr()?];
        while is_kw(self.peek().as_ref(), "and") {
            self.pos += 1;
            items.push(self.not_expr()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Cond::And(items)
        })
    }

    fn not_expr(&mut self) -> Result<Cond, String> {
        if is_kw(self.peek().as_ref(), "not") {
            self.pos += 1;
            return Ok(Cond::Not(Box::new(self.not_expr()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Cond, String> {
        match self.peek() {
            None => Err("condition ends too early".into()),
            Some(Token::Close) => Err("unexpected `)`".into()),
            Some(Token::Open) => {
                self.pos += 1;
                let c = self.or_expr()?;
                if self.peek() != Some(Token::Close) {
                    return Err("missing `)`".into());
                }
                self.pos += 1;
                Ok(c)
            }
            Some(Token::Word(w)) => {
                if is_kw(self.toks.get(self.pos + 1), "of") {
                    self.pos += 2;
                    return self.quantified(w);
                }
                for kw in ["and", "or", "of", "them"] {
                    if w.eq_ignore_ascii_case(kw) {
                        return Err(format!("unexpected `{w}`"));
                    }
                }
                self.pos += 1;
                self.names
                    .iter()
                    .position(|n| n == w)
                    .map(Cond::Sel)
                    .ok_or_else(|| format!("no selection named {w:?}"))
            }
        }
    }

    fn quantified(&mut self, quant: &str) -> Result<Cond, String> {
        let target = match self.peek() {
            Some(Token::Word(t)) => t,
            _ => return Err(format!("`{quant} of` needs a selection pattern or `them`")),
        };
        self.pos += 1;
        let sels: Vec<usize> = if target.eq_ignore_ascii_case("them") {
            (0..self.names.len())
                .filter(|&i| !self.names[i].starts_with('_'))
                .collect()
        } else {
            (0..self.names.len())
                .filter(|&i| name_glob(target, &self.names[i]))
                .collect()
        };
        if sels.is_empty() {
            return Err(format!("{target:?} matches no selection"));
        }
        let n = if quant.eq_ignore_ascii_case("all") {
            sels.len()
        } else if quant.eq_ignore_ascii_case("any") {
            1
        } else {
            match quant.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("bad quantifier {quant:?}")),
            }
        };
        Ok(Cond::AtLeast(n, sels))
    }
}

/// `*`-only glob for selection names (case-sensitive, like the names).
fn name_glob(pat: &str, name: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    if parts.len() == 1 {
        return pat == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ns: &[&str]) -> Vec<String> {
        ns.iter().map(|s| s.to_string()).collect()
    }

    /// Evaluates `cond` with the selections in `true_sels` matching.
    fn run(cond: &str, ns: &[&str], true_sels: &[&str]) -> bool {
        let names = names(ns);
        let c = parse(cond, &names).unwrap();
        c.eval(&mut |i| true_sels.contains(&names[i].as_str()))
    }

    #[test]
    fn precedence_not_and_or() {
        let ns = ["a", "b", "c"];
        // and binds tighter than or.
        assert!(run("a or b and c", &ns, &["a"]));
        assert!(!run("(a or b) and c", &ns, &["a"]));
        // not binds tighter than and.
        assert!(run("not a and b", &ns, &["b"]));
        assert!(!run("not (a and b)", &ns, &["a", "b"]));
        assert!(run("not not a", &ns, &["a"]));
        assert!(run("a AND NOT b", &ns, &["a"]));
        assert!(run("((a))", &ns, &["a"]));
    }

    #[test]
    fn quantifiers() {
        let ns = ["sel_a", "sel_b", "filter", "_hidden"];
        assert!(run("1 of sel_*", &ns, &["sel_b"]));
        assert!(!run("1 of sel_*", &ns, &["filter"]));
        assert!(!run("all of sel_*", &ns, &["sel_a"]));
        assert!(run("all of sel_*", &ns, &["sel_a", "sel_b"]));
        assert!(run("any of sel_*", &ns, &["sel_a"]));
        assert!(run("2 of them", &ns, &["sel_a", "filter"]));
        // `them` ignores underscore-prefixed selections.
        assert!(run("all of them", &ns, &["sel_a", "sel_b", "filter"]));
        assert!(run("1 of sel_* and not 1 of filter*", &ns, &["sel_a"]));
        assert!(!run(
            "1 of sel_* and not 1 of filter*",
            &ns,
            &["sel_a", "filter"]
        ));
        assert!(run("all of *_b", &ns, &["sel_b"]));
    }

    #[test]
    fn errors() {
        let ns = names(&["a", "b"]);
        for bad in [
            "",
            "a and",
            "(a",
            "a)",
            "c",
            "a b",
            "1 of x*",
            "0 of them",
            "a | count() > 5",
            "and a",
            "all of",
        ] {
            assert!(parse(bad, &ns).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn name_glob_works() {
        assert!(name_glob("a*", "abc"));
        assert!(name_glob("*c", "abc"));
        assert!(name_glob("a*c", "abc"));
        assert!(name_glob("a*b*c", "axxbyyc"));
        assert!(!name_glob("a*b*c", "acb"));
        assert!(!name_glob("ab*ba", "aba"));
    }
}
