//! Query AST → tantivy query, against [`WardSchema`].
//!
//! Field-less terms search the text of container lines (`message`) and the
//! short values of audit events (`_all`). `message` is full text; every
//! other field is a keyword in `_flat`, matched whole and case-insensitively,
//! with wildcards and regexes compiled to automata over that field's slice
//! of the term dictionary.

use std::ops::Bound;

use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, Occur, PhraseQuery, Query as TantivyQuery, RangeQuery,
    RegexQuery, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DateTime, Term};

use crate::Error;
use crate::query::{Pattern, Piece, Query};
use crate::schema::{
    AUDIT_ID, MESSAGE, PATH_SEPARATOR, STATUS_CODE, TIMESTAMP, WardSchema, flat_term_text,
    ip_term_text, parse_ip, text_analyzer,
};

type Boxed = Box<dyn TantivyQuery>;

/// Compiles a parsed query.
pub fn compile(schema: &WardSchema, query: &Query) -> Result<Boxed, Error> {
    Ok(match query {
        Query::All => Box::new(AllQuery),
        Query::And(items) => {
            let mut clauses = Vec::with_capacity(items.len() + 1);
            for item in items {
                match item {
                    Query::Not(inner) => clauses.push((Occur::MustNot, compile(schema, inner)?)),
                    _ => clauses.push((Occur::Must, compile(schema, item)?)),
                }
            }
            if clauses.iter().all(|(o, _)| *o == Occur::MustNot) {
                clauses.push((Occur::Must, Box::new(AllQuery)));
            }
            Box::new(BooleanQuery::new(clauses))
        }
        Query::Or(items) => Box::new(BooleanQuery::new(
            items
                .iter()
                .map(|i| Ok((Occur::Should, compile(schema, i)?)))
                .collect::<Result<Vec<_>, Error>>()?,
        )),
        Query::Not(inner) => Box::new(BooleanQuery::new(vec![
            (Occur::Must, Box::new(AllQuery) as Boxed),
            (Occur::MustNot, compile(schema, inner)?),
        ])),
        Query::Exists { field } => exists(schema, field),
        Query::Term { field, value } => match field.as_deref() {
            None => fieldless(
                schema,
                text_pattern(schema.message, value)?,
                text_pattern(schema.all, value)?,
                value.as_literal().as_deref(),
            ),
            Some(MESSAGE) => text_pattern(schema.message, value)?,
            Some(TIMESTAMP) => {
                let literal = value.as_literal().ok_or_else(|| {
                    Error::InvalidRequest(
                        "timestamp takes a time or a range, not a wildcard".into(),
                    )
                })?;
                let t = parse_time(&literal)?;
                Box::new(RangeQuery::new(
                    Bound::Included(Term::from_field_date(schema.timestamp, t)),
                    Bound::Included(Term::from_field_date(schema.timestamp, t)),
                ))
            }
            Some(f) => flat_pattern(schema, f, value)?,
        },
        Query::Phrase { field, text } => match field.as_deref() {
            None => fieldless(
                schema,
                text_phrase(schema.message, text),
                text_phrase(schema.all, text),
                Some(text),
            ),
            Some(MESSAGE) => text_phrase(schema.message, text),
            Some(f) => flat_pattern(schema, f, &Pattern::literal(text))?,
        },
        Query::Regex { field, pattern } => match field.as_deref() {
            None => either(
                text_regex(schema.message, pattern)?,
                text_regex(schema.all, pattern)?,
            ),
            Some(MESSAGE) => text_regex(schema.message, pattern)?,
            Some(f) => regex_query(
                schema.flat,
                &format!("{}(?i:{pattern})", path_prefix_regex(f)),
            )?,
        },
        Query::Range {
            field,
            lower,
            upper,
        } => range(schema, field, lower, upper)?,
    })
}

/// Records of these namespaces: container lines by `kubernetes.namespace`,
/// audit events by `objectRef.namespace`. Records of no namespace
/// (cluster-scoped requests, Ward's own events) are outside every scope.
pub fn namespace_scope(schema: &WardSchema, namespaces: &[String]) -> Boxed {
    let mut clauses: Vec<(Occur, Boxed)> = Vec::with_capacity(namespaces.len() * 2);
    let mut term = String::new();
    for ns in namespaces {
        for path in ["kubernetes.namespace", "objectRef.namespace"] {
            flat_term_text(path, ns, &mut term);
            clauses.push((Occur::Should, term_query(schema.flat, &term)));
        }
    }
    if clauses.is_empty() {
        return Box::new(EmptyQuery);
    }
    Box::new(BooleanQuery::new(clauses))
}

/// `_exists_:field`: the record has a value at `field` (a leaf, or an
/// object with at least one leaf under it, as in Elasticsearch).
///
/// Answered from `_flat`, which has a term `<path>\0<value>` for every
/// leaf: the field's leaves are the terms from `field\0` up to `field\x01`,
/// and the leaves under it the terms from `field.` up to `field/`. A
/// top-level object has an `_exists` term instead of the second range (a
/// request body has hundreds of leaves to scan). As in Elasticsearch, where
/// dotted keys are objects, `annotations.authorization` exists when an
/// `authorization.k8s.io/…` annotation does. Older partitions have an
/// `_exists` term for every path; the term is ORed in everywhere.
fn exists(schema: &WardSchema, field: &str) -> Boxed {
    if field == TIMESTAMP {
        return Box::new(AllQuery);
    }
    let slice = |from: char, to: char| -> (Occur, Boxed) {
        let term = |c: char| {
            let mut text = String::with_capacity(field.len() + 1);
            text.push_str(field);
            text.push(c);
            Term::from_field_text(schema.flat, &text)
        };
        (
            Occur::Should,
            Box::new(RangeQuery::new(
                Bound::Included(term(from)),
                Bound::Excluded(term(to)),
            )),
        )
    };
    let mut clauses = vec![
        (Occur::Should, term_query(schema.exists, field)),
        slice(PATH_SEPARATOR, '\u{1}'),
    ];
    if field.contains('.') {
        clauses.push(slice('.', '/'));
    }
    Box::new(BooleanQuery::new(clauses))
}

/// Field-less search: container lines, the short values of audit events,
/// and, for a literal, an `auditID` matched whole (`_all` leaves it out).
fn fieldless(schema: &WardSchema, message: Boxed, all: Boxed, literal: Option<&str>) -> Boxed {
    let Some(literal) = literal else {
        return either(message, all);
    };
    let mut term = String::new();
    flat_term_text(AUDIT_ID, literal, &mut term);
    Box::new(BooleanQuery::new(vec![
        (Occur::Should, message),
        (Occur::Should, all),
        (Occur::Should, term_query(schema.flat, &term)),
    ]))
}

fn either(a: Boxed, b: Boxed) -> Boxed {
    Box::new(BooleanQuery::new(vec![
        (Occur::Should, a),
        (Occur::Should, b),
    ]))
}

fn term_query(field: Field, text: &str) -> Boxed {
    Box::new(TermQuery::new(
        Term::from_field_text(field, text),
        IndexRecordOption::Basic,
    ))
}

fn regex_query(field: Field, pattern: &str) -> Result<Boxed, Error> {
    RegexQuery::from_pattern(pattern, field)
        .map(|q| Box::new(q) as Boxed)
        .map_err(|e| Error::InvalidRequest(format!("invalid regular expression: {e}")))
}

fn flat_pattern(schema: &WardSchema, field: &str, value: &Pattern) -> Result<Boxed, Error> {
    if let Some(literal) = value.as_literal() {
        if let Some((low, high)) = parse_cidr(&literal)? {
            return Ok(ip_range(
                schema,
                field,
                Bound::Included(low),
                Bound::Included(high),
            ));
        }
        let mut term = String::new();
        flat_term_text(field, &literal, &mut term);
        let exact = term_query(schema.flat, &term);
        if let Some(bits) = parse_ip(&literal) {
            // `::1` and `0:0::1` are one address: match the normalized
            // form too.
            ip_term_text(field, bits, &mut term);
            return Ok(either(exact, term_query(schema.ip, &term)));
        }
        return Ok(exact);
    }
    let mut regex = path_prefix_regex(field);
    push_wildcards(&mut regex, value);
    regex_query(schema.flat, &regex)
}

/// Regex matching the `_flat` terms of one path: the path, then the separator.
fn path_prefix_regex(field: &str) -> String {
    let mut regex = String::with_capacity(field.len() + 8);
    escape_into(&mut regex, field);
    regex.push_str(&format!("\\x{:02x}", PATH_SEPARATOR as u32));
    regex
}

fn push_wildcards(regex: &mut String, value: &Pattern) {
    for piece in &value.0 {
        match piece {
            Piece::Text(t) => escape_into(regex, &t.to_lowercase()),
            // Any character, the separator and newlines included.
            Piece::AnyString => regex.push_str("(?s:.*)"),
            Piece::AnyChar => regex.push_str("(?s:.)"),
        }
    }
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        if c.is_control() {
            out.push_str(&format!("\\x{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
}

fn tokens(text: &str) -> Vec<String> {
    let mut analyzer = text_analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

fn text_phrase(field: Field, text: &str) -> Boxed {
    let terms: Vec<Term> = tokens(text)
        .iter()
        .map(|t| Term::from_field_text(field, t))
        .collect();
    match terms.len() {
        0 => Box::new(EmptyQuery),
        1 => Box::new(TermQuery::new(terms[0].clone(), IndexRecordOption::Basic)),
        _ => Box::new(PhraseQuery::new(terms)),
    }
}

fn text_pattern(field: Field, value: &Pattern) -> Result<Boxed, Error> {
    if let Some(literal) = value.as_literal() {
        return Ok(text_phrase(field, &literal));
    }
    // A wildcard term matches single words of the text.
    let mut regex = String::new();
    push_wildcards(&mut regex, value);
    regex_query(field, &regex)
}

fn text_regex(field: Field, pattern: &str) -> Result<Boxed, Error> {
    regex_query(field, &format!("(?i:{pattern})"))
}

fn parse_time(value: &str) -> Result<DateTime, Error> {
    let t = chrono::DateTime::parse_from_rfc3339(value)
        .map_err(|_| Error::InvalidRequest(format!("{value:?} is not an RFC 3339 time")))?;
    Ok(DateTime::from_timestamp_nanos(
        t.timestamp_nanos_opt().unwrap_or(i64::MAX),
    ))
}

fn range(
    schema: &WardSchema,
    field: &str,
    lower: &Bound<String>,
    upper: &Bound<String>,
) -> Result<Boxed, Error> {
    fn map<T>(b: &Bound<String>, f: impl Fn(&str) -> Result<T, Error>) -> Result<Bound<T>, Error> {
        Ok(match b {
            Bound::Included(v) => Bound::Included(f(v)?),
            Bound::Excluded(v) => Bound::Excluded(f(v)?),
            Bound::Unbounded => Bound::Unbounded,
        })
    }
    match field {
        TIMESTAMP => {
            let to_term = |v: &str| Ok(Term::from_field_date(schema.timestamp, parse_time(v)?));
            Ok(Box::new(RangeQuery::new(
                map(lower, to_term)?,
                map(upper, to_term)?,
            )))
        }
        STATUS_CODE => {
            let to_term = |v: &str| {
                v.parse::<u64>()
                    .map(|n| Term::from_field_u64(schema.status_code, n))
                    .map_err(|_| {
                        Error::InvalidRequest(format!(
                            "{STATUS_CODE} range bound {v:?} is not a number"
                        ))
                    })
            };
            let (lower, upper) = (map(lower, to_term)?, map(upper, to_term)?);
            if matches!((&lower, &upper), (Bound::Unbounded, Bound::Unbounded)) {
                return Ok(exists(schema, STATUS_CODE));
            }
            Ok(Box::new(RangeQuery::new(lower, upper)))
        }
        _ if is_ip_range(lower, upper) => {
            let bits = |v: &str| {
                parse_ip(v)
                    .ok_or_else(|| Error::InvalidRequest(format!("{v:?} is not an IP address")))
            };
            Ok(ip_range(
                schema,
                field,
                map(lower, bits)?,
                map(upper, bits)?,
            ))
        }
        _ => {
            // Keyword range: lexicographic on the lowercased values of the path.
            let to_term = |v: &str| {
                let mut text = String::new();
                flat_term_text(field, v, &mut text);
                Ok(Term::from_field_text(schema.flat, &text))
            };
            let open_low = || {
                let mut text = field.to_owned();
                text.push(PATH_SEPARATOR);
                Term::from_field_text(schema.flat, &text)
            };
            let open_high = || {
                let mut text = field.to_owned();
                text.push(char::from_u32(PATH_SEPARATOR as u32 + 1).unwrap_or('\u{1}'));
                Term::from_field_text(schema.flat, &text)
            };
            let lower = match map(lower, to_term)? {
                Bound::Unbounded => Bound::Included(open_low()),
                b => b,
            };
            let upper = match map(upper, to_term)? {
                Bound::Unbounded => Bound::Excluded(open_high()),
                b => b,
            };
            Ok(Box::new(RangeQuery::new(lower, upper)))
        }
    }
}

/// `addr/prefix` as the first and last address of the block (IPv4 blocks
/// mapped into `::ffff:0:0/96`, like the indexed addresses). `None` when the
/// text is not of that shape; an error when it is but is out of range.
fn parse_cidr(text: &str) -> Result<Option<(u128, u128)>, Error> {
    let Some((addr, prefix)) = text.split_once('/') else {
        return Ok(None);
    };
    let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
        return Ok(None);
    };
    let Ok(prefix) = prefix.parse::<u32>() else {
        return Ok(None);
    };
    let (max, offset) = match ip {
        std::net::IpAddr::V4(_) => (32, 96),
        std::net::IpAddr::V6(_) => (128, 0),
    };
    if prefix > max {
        return Err(Error::InvalidRequest(format!(
            "{text:?}: a prefix length is at most {max}"
        )));
    }
    let bits = crate::schema::ip_bits(ip);
    let host_bits = 128 - (prefix + offset);
    let host_mask: u128 = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    Ok(Some((bits & !host_mask, bits | host_mask)))
}

/// Whether a range's bounds are IP addresses (an open end counts as one).
fn is_ip_range(lower: &Bound<String>, upper: &Bound<String>) -> bool {
    let ip = |b: &Bound<String>| match b {
        Bound::Included(v) | Bound::Excluded(v) => Some(parse_ip(v).is_some()),
        Bound::Unbounded => None,
    };
    match (ip(lower), ip(upper)) {
        (Some(a), Some(b)) => a && b,
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => false,
    }
}

/// A range of addresses of one path, over its `_ip` terms.
fn ip_range(schema: &WardSchema, field: &str, lower: Bound<u128>, upper: Bound<u128>) -> Boxed {
    let term = |bits: u128| {
        let mut text = String::new();
        ip_term_text(field, bits, &mut text);
        Term::from_field_text(schema.ip, &text)
    };
    let lower = match lower {
        Bound::Included(b) => Bound::Included(term(b)),
        Bound::Excluded(b) => Bound::Excluded(term(b)),
        Bound::Unbounded => Bound::Included(term(0)),
    };
    let upper = match upper {
        Bound::Included(b) => Bound::Included(term(b)),
        Bound::Excluded(b) => Bound::Excluded(term(b)),
        Bound::Unbounded => Bound::Included(term(u128::MAX)),
    };
    Box::new(RangeQuery::new(lower, upper))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks_cover_their_addresses() {
        let v4 = |s: &str| crate::schema::parse_ip(s).unwrap();
        let (lo, hi) = parse_cidr("10.0.0.0/8").unwrap().unwrap();
        assert_eq!((lo, hi), (v4("10.0.0.0"), v4("10.255.255.255")));
        let (lo, hi) = parse_cidr("192.168.1.77/32").unwrap().unwrap();
        assert_eq!(lo, hi);
        let (lo, hi) = parse_cidr("0.0.0.0/0").unwrap().unwrap();
        assert_eq!((lo, hi), (v4("0.0.0.0"), v4("255.255.255.255")));
        let (lo, hi) = parse_cidr("2001:db8::/32").unwrap().unwrap();
        assert_eq!(
            (lo, hi),
            (
                v4("2001:db8::"),
                v4("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")
            )
        );
        let (lo, hi) = parse_cidr("::/0").unwrap().unwrap();
        assert_eq!((lo, hi), (0, u128::MAX));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert_eq!(parse_cidr("/api/v1").unwrap(), None);
        assert_eq!(v4("::ffff:10.1.2.3"), v4("10.1.2.3"));
    }
}
