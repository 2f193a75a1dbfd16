//! Ward's query language: Lucene's query-string syntax, as analysts and
//! tools (Kibana, pySigma's Lucene backend) write it.
//!
//! ```text
//! verb:create AND objectRef.subresource:exec
//! kubernetes.namespace:prod AND message:"connection refused"
//! user.username:system\:anonymous NOT sourceIPs:10.*
//! verb:(create OR delete) responseStatus.code:[400 TO 499] _exists_:impersonatedUser
//! requestURI:/.*exec.*/
//! ```
//!
//! Terms next to each other are joined with AND (what an analyst narrowing a
//! search means). `AND`/`OR`/`NOT` are upper case, as in Lucene; `&&`, `||`,
//! `!`, and a leading `-` work too. `\` escapes any character. Unescaped `*`
//! and `?` in a term are wildcards. Errors carry the byte position at which
//! the query went wrong.

use std::ops::Bound;

use crate::Error;

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// Matches every record (`*`, `*:*`, or an empty query).
    All,
    /// A term, possibly with wildcards. `field` is `None` for field-less text search.
    Term {
        field: Option<String>,
        value: Pattern,
    },
    /// A quoted phrase.
    Phrase {
        field: Option<String>,
        text: String,
    },
    /// `/regex/`, anchored at both ends as in Lucene.
    Regex {
        field: Option<String>,
        pattern: String,
    },
    /// `[a TO b]`, `{a TO b}`, with `*` for an open end.
    Range {
        field: String,
        lower: Bound<String>,
        upper: Bound<String>,
    },
    /// `_exists_:field` or `field:*`.
    Exists {
        field: String,
    },
    And(Vec<Query>),
    Or(Vec<Query>),
    Not(Box<Query>),
}

/// A term value: literal text and wildcards.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pattern(pub Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// `*`
    AnyString,
    /// `?`
    AnyChar,
}

impl Pattern {
    pub fn literal(text: &str) -> Pattern {
        Pattern(vec![Piece::Text(text.to_owned())])
    }

    /// The text when the pattern has no wildcard.
    pub fn as_literal(&self) -> Option<String> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::AnyString | Piece::AnyChar => return None,
            }
        }
        Some(out)
    }

    pub fn is_match_all(&self) -> bool {
        !self.0.is_empty() && self.0.iter().all(|p| *p == Piece::AnyString)
    }
}

impl Pattern {
    /// Whether the pattern matches `text`, ignoring ASCII case (as keyword
    /// terms match).
    pub fn matches(&self, text: &str) -> bool {
        fn go(pieces: &[Piece], text: &str) -> bool {
            match pieces.split_first() {
                None => text.is_empty(),
                Some((Piece::Text(t), rest)) => {
                    text.get(..t.len())
                        .is_some_and(|head| head.eq_ignore_ascii_case(t))
                        && go(rest, &text[t.len()..])
                }
                Some((Piece::AnyChar, rest)) => {
                    let mut chars = text.chars();
                    chars.next().is_some() && go(rest, chars.as_str())
                }
                Some((Piece::AnyString, rest)) => text
                    .char_indices()
                    .map(|(i, _)| i)
                    .chain([text.len()])
                    .any(|i| go(rest, &text[i..])),
            }
        }
        go(&self.0, text)
    }
}

impl Query {
    /// Whether the query names `field` with a term, phrase, wildcard or
    /// regex that could match `value` (a regex or range on the field counts
    /// as naming it), anywhere, negated or not: what "asks for" records
    /// of that value means (`source:ward`, `source:Ward`, `source:w*`).
    pub fn mentions(&self, field: &str, value: &str) -> bool {
        match self {
            Query::All => false,
            Query::Term { field: f, value: v } => {
                f.as_deref() == Some(field) && v.matches(value.trim())
            }
            Query::Phrase { field: f, text } => {
                f.as_deref() == Some(field) && text.trim().eq_ignore_ascii_case(value)
            }
            Query::Regex { field: f, .. } => f.as_deref() == Some(field),
            Query::Range { field: f, .. } | Query::Exists { field: f } => f == field,
            Query::And(items) | Query::Or(items) => items.iter().any(|q| q.mentions(field, value)),
            Query::Not(inner) => inner.mentions(field, value),
        }
    }
}

const MAX_DEPTH: usize = 64;

/// Parses a query string.
pub fn parse(input: &str) -> Result<Query, Error> {
    let mut parser = Parser {
        input,
        pos: 0,
        depth: 0,
    };
    parser.skip_ws();
    if parser.at_end() {
        return Ok(Query::All);
    }
    let query = parser.parse_or(None)?;
    parser.skip_ws();
    if !parser.at_end() {
        let what = if parser.peek() == Some(')') {
            "unbalanced ')'"
        } else {
            "unexpected input"
        };
        return Err(Error::query(what, parser.pos));
    }
    Ok(query)
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
    depth: usize,
}

fn is_ws(c: char) -> bool {
    c.is_whitespace()
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.input[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.bump();
        }
    }

    /// Whether an operator keyword (`AND`, `OR`, `NOT`, `&&`, `||`) starts here.
    fn at_keyword(&self, keyword: &str) -> bool {
        let rest = self.rest();
        if !rest.starts_with(keyword) {
            return false;
        }
        if keyword == "&&" || keyword == "||" {
            return true;
        }
        rest[keyword.len()..]
            .chars()
            .next()
            .is_none_or(|c| is_ws(c) || c == '(')
    }

    fn eat_keyword(&mut self, keywords: &[&str]) -> bool {
        for k in keywords {
            if self.at_keyword(k) {
                self.pos += k.len();
                return true;
            }
        }
        false
    }

    fn parse_or(&mut self, field: Option<&str>) -> Result<Query, Error> {
        let mut items = vec![self.parse_and(field)?];
        loop {
            self.skip_ws();
            if self.eat_keyword(&["OR", "||"]) {
                items.push(self.parse_and(field)?);
            } else {
                break;
            }
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Query::Or(items)
        })
    }

    fn parse_and(&mut self, field: Option<&str>) -> Result<Query, Error> {
        let mut items = vec![self.parse_unary(field)?];
        loop {
            self.skip_ws();
            if self.at_end()
                || self.peek() == Some(')')
                || self.at_keyword("OR")
                || self.at_keyword("||")
            {
                break;
            }
            self.eat_keyword(&["AND", "&&"]);
            items.push(self.parse_unary(field)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Query::And(items)
        })
    }

    fn parse_unary(&mut self, field: Option<&str>) -> Result<Query, Error> {
        self.skip_ws();
        if self.eat_keyword(&["NOT"]) {
            return Ok(Query::Not(Box::new(self.nested(|p| p.parse_unary(field))?)));
        }
        match self.peek() {
            Some('!') | Some('-') if self.rest()[1..].chars().next().is_some_and(|c| !is_ws(c)) => {
                self.bump();
                Ok(Query::Not(Box::new(self.nested(|p| p.parse_unary(field))?)))
            }
            Some('+') => {
                self.bump();
                self.parse_primary(field)
            }
            _ => self.parse_primary(field),
        }
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, Error>) -> Result<T, Error> {
        if self.depth >= MAX_DEPTH {
            return Err(Error::query("query is nested too deeply", self.pos));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn parse_primary(&mut self, field: Option<&str>) -> Result<Query, Error> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            None => Err(Error::query("expected a term", start)),
            Some('(') => {
                self.bump();
                let inner = self.nested(|p| p.parse_or(field))?;
                self.skip_ws();
                if self.bump() != Some(')') {
                    return Err(Error::query("missing ')' for '(' here", start));
                }
                Ok(inner)
            }
            Some(')') => Err(Error::query("expected a term before ')'", start)),
            Some('"') => {
                let text = self.phrase()?;
                Ok(Query::Phrase {
                    field: field.map(str::to_owned),
                    text,
                })
            }
            Some('/') if self.looks_like_regex() => {
                let pattern = self.regex()?;
                Ok(Query::Regex {
                    field: field.map(str::to_owned),
                    pattern,
                })
            }
            Some('[') | Some('{') => match field {
                Some(f) => self.range(f),
                None => Err(Error::query(
                    "a range needs a field, as in field:[a TO b]",
                    start,
                )),
            },
            Some(_) => {
                if ["AND", "OR", "&&", "||"].iter().any(|k| self.at_keyword(k)) {
                    return Err(Error::query("expected a term before the operator", start));
                }
                // In a field's value, ':' is part of the term (`system:admin`).
                let (pattern, raw_field) = self.word(field.is_none())?;
                if field.is_none() && self.peek() == Some(':') {
                    let name = raw_field
                        .ok_or_else(|| Error::query("a field name cannot hold wildcards", start))?;
                    if name.is_empty() {
                        return Err(Error::query("empty field name", start));
                    }
                    self.bump();
                    return self.field_value(name, start);
                }
                if pattern.0.is_empty() {
                    return Err(Error::query("expected a term", start));
                }
                if field.is_none() && pattern.is_match_all() {
                    return Ok(Query::All);
                }
                Ok(term(field, pattern))
            }
        }
    }

    fn field_value(&mut self, name: String, start: usize) -> Result<Query, Error> {
        if self.peek().is_none_or(is_ws) {
            return Err(Error::query(
                format!("missing value after '{name}:'"),
                self.pos,
            ));
        }
        if name == "_exists_" {
            let (pattern, _) = self.word(false)?;
            let field = pattern
                .as_literal()
                .filter(|f| !f.is_empty())
                .ok_or_else(|| Error::query("_exists_ takes a field name", start))?;
            return Ok(Query::Exists { field });
        }
        if name == "*" {
            // `*:value` is a field-less search, `*:*` everything.
            return self.parse_primary(None);
        }
        self.parse_primary(Some(&name))
    }

    /// Reads a bare word. Returns the pattern and, when `stop_at_colon`,
    /// the literal text for use as a field name (None if it had wildcards).
    fn word(&mut self, stop_at_colon: bool) -> Result<(Pattern, Option<String>), Error> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut literal = String::new();
        let mut has_wildcard = false;
        while let Some(c) = self.peek() {
            if is_ws(c)
                || matches!(c, '(' | ')' | '"' | '[' | ']' | '{' | '}')
                || (stop_at_colon && c == ':')
            {
                break;
            }
            self.bump();
            match c {
                '\\' => {
                    let escaped = self.bump().ok_or_else(|| {
                        Error::query("'\\' at the end of the query escapes nothing", self.pos)
                    })?;
                    text.push(escaped);
                    literal.push(escaped);
                }
                '*' | '?' => {
                    has_wildcard = true;
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(if c == '*' {
                        Piece::AnyString
                    } else {
                        Piece::AnyChar
                    });
                    literal.push(c);
                }
                _ => {
                    text.push(c);
                    literal.push(c);
                }
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        let field_name = (!has_wildcard || literal == "*").then_some(literal);
        Ok((Pattern(pieces), field_name))
    }

    fn phrase(&mut self) -> Result<String, Error> {
        let start = self.pos;
        self.bump();
        let mut text = String::new();
        loop {
            match self.bump() {
                None => return Err(Error::query("unterminated phrase: missing '\"'", start)),
                Some('"') => return Ok(text),
                Some('\\') => match self.bump() {
                    Some(c) => text.push(c),
                    None => return Err(Error::query("unterminated phrase: missing '\"'", start)),
                },
                Some(c) => text.push(c),
            }
        }
    }

    /// `/…/` followed by the end of the term. Paths such as `/api/v1/pods`
    /// are terms, not a regex with trailing junk.
    fn looks_like_regex(&self) -> bool {
        let mut chars = self.rest().char_indices().skip(1);
        while let Some((_, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '/' => {
                    return chars.next().is_none_or(|(_, c)| is_ws(c) || c == ')');
                }
                _ => {}
            }
        }
        false
    }

    fn regex(&mut self) -> Result<String, Error> {
        let start = self.pos;
        self.bump();
        let mut pattern = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(Error::query(
                        "unterminated regular expression: missing '/'",
                        start,
                    ));
                }
                Some('/') => return Ok(pattern),
                Some('\\') if self.peek() == Some('/') => {
                    self.bump();
                    pattern.push('/');
                }
                Some('\\') => {
                    pattern.push('\\');
                    if let Some(c) = self.bump() {
                        pattern.push(c);
                    }
                }
                Some(c) => pattern.push(c),
            }
        }
    }

    fn range(&mut self, field: &str) -> Result<Query, Error> {
        let start = self.pos;
        let inclusive_low = self.bump() == Some('[');
        let lower = self.range_bound()?;
        self.skip_ws();
        if !self.eat_keyword(&["TO"]) {
            return Err(Error::query("expected 'TO' in range", self.pos));
        }
        let upper = self.range_bound()?;
        self.skip_ws();
        let inclusive_high = match self.bump() {
            Some(']') => true,
            Some('}') => false,
            _ => {
                return Err(Error::query(
                    "unterminated range: missing ']' or '}'",
                    start,
                ));
            }
        };
        let bound = |value: Option<String>, inclusive: bool| match value {
            None => Bound::Unbounded,
            Some(v) if inclusive => Bound::Included(v),
            Some(v) => Bound::Excluded(v),
        };
        Ok(Query::Range {
            field: field.to_owned(),
            lower: bound(lower, inclusive_low),
            upper: bound(upper, inclusive_high),
        })
    }

    /// One end of a range; `None` for `*`.
    fn range_bound(&mut self) -> Result<Option<String>, Error> {
        self.skip_ws();
        if self.peek() == Some('"') {
            return self.phrase().map(Some);
        }
        let start = self.pos;
        let mut text = String::new();
        while let Some(c) = self.peek() {
            if is_ws(c) || matches!(c, ']' | '}') {
                break;
            }
            self.bump();
            if c == '\\' {
                match self.bump() {
                    Some(e) => text.push(e),
                    None => return Err(Error::query("'\\' escapes nothing", self.pos)),
                }
            } else {
                text.push(c);
            }
        }
        match text.as_str() {
            "" => Err(Error::query("expected a range bound", start)),
            "*" => Ok(None),
            _ => Ok(Some(text)),
        }
    }
}

fn term(field: Option<&str>, pattern: Pattern) -> Query {
    if let Some(f) = field
        && pattern.is_match_all()
    {
        return Query::Exists {
            field: f.to_owned(),
        };
    }
    Query::Term {
        field: field.map(str::to_owned),
        value: pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(field: &str, value: &str) -> Query {
        Query::Term {
            field: Some(field.into()),
            value: Pattern::literal(value),
        }
    }

    #[test]
    fn fields_and_boolean_operators() {
        assert_eq!(
            parse("verb:create AND objectRef.subresource:exec").unwrap(),
            Query::And(vec![
                t("verb", "create"),
                t("objectRef.subresource", "exec")
            ])
        );
        assert_eq!(
            parse("a:1 OR b:2 c:3").unwrap(),
            Query::Or(vec![
                t("a", "1"),
                Query::And(vec![t("b", "2"), t("c", "3")])
            ])
        );
        assert_eq!(parse("NOT a:1").unwrap(), Query::Not(Box::new(t("a", "1"))));
        assert_eq!(parse("-a:1").unwrap(), Query::Not(Box::new(t("a", "1"))));
        assert_eq!(
            parse("a:1 && !b:2").unwrap(),
            Query::And(vec![t("a", "1"), Query::Not(Box::new(t("b", "2")))])
        );
        assert_eq!(parse("").unwrap(), Query::All);
        assert_eq!(parse("*").unwrap(), Query::All);
        assert_eq!(parse("*:*").unwrap(), Query::All);
    }

    #[test]
    fn grouped_values_and_escapes_from_pysigma() {
        assert_eq!(
            parse("verb:(create OR delete)").unwrap(),
            Query::Or(vec![t("verb", "create"), t("verb", "delete")])
        );
        assert_eq!(
            parse(r"objectRef.namespace:kube\-system").unwrap(),
            t("objectRef.namespace", "kube-system")
        );
        let Query::Term { value, .. } = parse(r"cmd:*\/bin\/sh*").unwrap() else {
            panic!()
        };
        assert_eq!(
            value.0,
            vec![
                Piece::AnyString,
                Piece::Text("/bin/sh".into()),
                Piece::AnyString
            ]
        );
    }

    #[test]
    fn values_may_hold_colons_and_slashes() {
        assert_eq!(
            parse("user.username:system:admin").unwrap(),
            t("user.username", "system:admin")
        );
        assert_eq!(
            parse("annotations.authorization.k8s.io/decision:forbid").unwrap(),
            t("annotations.authorization.k8s.io/decision", "forbid")
        );
        // A value that starts with '/' is a regex only when it ends in one.
        assert_eq!(
            parse("requestURI:/api/v1/pods").unwrap(),
            t("requestURI", "/api/v1/pods")
        );
        assert_eq!(
            parse("requestURI:/api/v1/pods verb:get").unwrap(),
            Query::And(vec![t("requestURI", "/api/v1/pods"), t("verb", "get")])
        );
    }

    #[test]
    fn phrases_regex_ranges_exists() {
        assert_eq!(
            parse(r#"message:"connection refused""#).unwrap(),
            Query::Phrase {
                field: Some("message".into()),
                text: "connection refused".into()
            }
        );
        assert_eq!(
            parse(r"requestURI:/.*exec\/x.*/").unwrap(),
            Query::Regex {
                field: Some("requestURI".into()),
                pattern: ".*exec/x.*".into()
            }
        );
        assert_eq!(
            parse("responseStatus.code:[400 TO 499}").unwrap(),
            Query::Range {
                field: "responseStatus.code".into(),
                lower: Bound::Included("400".into()),
                upper: Bound::Excluded("499".into())
            }
        );
        assert_eq!(
            parse("timestamp:[* TO 2024-01-01T00:00:00Z]").unwrap(),
            Query::Range {
                field: "timestamp".into(),
                lower: Bound::Unbounded,
                upper: Bound::Included("2024-01-01T00:00:00Z".into())
            }
        );
        assert_eq!(
            parse("_exists_:impersonatedUser").unwrap(),
            Query::Exists {
                field: "impersonatedUser".into()
            }
        );
        assert_eq!(
            parse("impersonatedUser:*").unwrap(),
            Query::Exists {
                field: "impersonatedUser".into()
            }
        );
    }

    #[test]
    fn errors_say_where() {
        for (q, pos) in [
            ("verb:(create", 5),
            ("a:1 )", 4),
            ("message:\"open", 8),
            ("a:[1 TO", 7),
            ("a:[1 TO 2", 2),
            ("a: b", 2),
            ("a AND", 5),
            ("OR a", 0),
            ("x\\", 2),
        ] {
            match parse(q) {
                Err(Error::Query { position, .. }) => assert_eq!(position, pos, "{q}"),
                other => panic!("{q}: {other:?}"),
            }
        }
        let deep = "(".repeat(200) + "a" + &")".repeat(200);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn queries_say_whether_they_mention_a_field_value() {
        for (q, want) in [
            ("source:ward", true),
            ("source:WARD AND verb:get", true),
            ("NOT source:ward", true),
            ("verb:get OR (source:w* AND x)", true),
            ("source:\"ward\"", true),
            ("source:/w.*/", true),
            ("source:audit", false),
            ("ward", false),
            ("message:source\\:ward", false),
            ("api.source:ward", false),
            ("", false),
        ] {
            assert_eq!(parse(q).unwrap().mentions("source", "ward"), want, "{q}");
        }
        assert!(
            Pattern(vec![
                Piece::Text("w".into()),
                Piece::AnyChar,
                Piece::AnyString
            ])
            .matches("WaRd")
        );
        assert!(!Pattern::literal("war").matches("ward"));
    }
}
