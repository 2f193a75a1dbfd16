//! Value matchers: one Sigma value plus its modifiers, compiled once.
//!
//! Everything that can be decided when the rule loads is decided here, so
//! that matching an event only compares bytes: needles are lowercased once
//! (Sigma matches case-insensitively unless `cased`), wildcard values whose
//! only wildcards are at the ends become plain prefix / suffix / substring
//! tests, regexes are built once, CIDR masks computed once, base64 and
//! windash variants generated once.
//!
//! Case-insensitive comparison lowercases the event side byte by byte when
//! the event text is ASCII (Kubernetes audit text nearly always is) and only
//! falls back to an allocated Unicode lowercase for other text.

use std::fmt::Write as _;
use std::net::IpAddr;

use regex::{Regex, RegexBuilder};
use serde_json::Value;

use crate::Error;
use crate::field;
use ward_event::tree::{Members, Node};

/// One token of a Sigma wildcard value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    Lit(char),
    /// `?`: exactly one character.
    One,
    /// `*`: any run of characters, possibly empty.
    Many,
}

/// Splits a Sigma string value into tokens. `\*`, `\?` and `\\` are literal
/// `*`, `?` and `\`; a backslash before anything else is itself literal (so
/// Windows paths need no doubling), as in pySigma.
pub(crate) fn tokenize(s: &str) -> Vec<Tok> {
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push(Tok::Many),
            '?' => out.push(Tok::One),
            '\\' => match chars.peek() {
                Some(&n @ ('*' | '?' | '\\')) => {
                    chars.next();
                    out.push(Tok::Lit(n));
                }
                _ => out.push(Tok::Lit('\\')),
            },
            c => out.push(Tok::Lit(c)),
        }
    }
    out
}

fn literal_of(toks: &[Tok]) -> Option<String> {
    toks.iter()
        .map(|t| match t {
            Tok::Lit(c) => Some(*c),
            _ => None,
        })
        .collect()
}

/// How a string needle is compared with the event's text.
#[derive(Debug, Clone)]
pub(crate) enum StrKind {
    Exact,
    Prefix,
    Suffix,
    Contains,
    /// Any text at all (the value was only `*`s).
    Any,
    /// General wildcard pattern.
    Glob(Vec<Tok>),
}

/// A compiled string comparison.
#[derive(Debug, Clone)]
pub(crate) struct StrMatch {
    pub(crate) kind: StrKind,
    /// Lowercased unless `cased`; empty for `Any` and `Glob`.
    pub(crate) needle: String,
    pub(crate) cased: bool,
    /// For `Exact` needles that are numbers: `403` must match `403.0` too.
    pub(crate) num: Option<f64>,
}

impl StrMatch {
    /// Builds the cheapest matcher for a token list.
    pub(crate) fn new(mut toks: Vec<Tok>, cased: bool) -> StrMatch {
        if !cased {
            toks = toks
                .into_iter()
                .flat_map(|t| match t {
                    Tok::Lit(c) => c.to_lowercase().map(Tok::Lit).collect::<Vec<_>>(),
                    t => vec![t],
                })
                .collect();
        }
        // `**` is `*`.
        toks.dedup_by(|a, b| *a == Tok::Many && *b == Tok::Many);
        let lead = toks.first() == Some(&Tok::Many);
        let trail = toks.len() > 1 && toks.last() == Some(&Tok::Many);
        let inner = &toks[usize::from(lead)..toks.len() - usize::from(trail)];
        let (kind, needle) = match literal_of(inner) {
            Some(_) if toks.len() == 1 && lead => (StrKind::Any, String::new()),
            Some(lit) => match (lead, trail) {
                (false, false) => (StrKind::Exact, lit),
                (false, true) => (StrKind::Prefix, lit),
                (true, false) => (StrKind::Suffix, lit),
                (true, true) => (StrKind::Contains, lit),
            },
            None => (StrKind::Glob(toks), String::new()),
        };
        let num = match kind {
            StrKind::Exact => needle.parse::<f64>().ok().filter(|n| n.is_finite()),
            _ => None,
        };
        StrMatch {
            kind,
            needle,
            cased,
            num,
        }
    }

    /// A plain case-sensitive exact / substring match on raw text (used by
    /// the encoding modifiers, whose output must not be case-folded).
    fn raw(text: String, kind: StrKind) -> StrMatch {
        StrMatch {
            kind,
            needle: text,
            cased: true,
            num: None,
        }
    }

    pub(crate) fn matches_text(&self, hay: &str) -> bool {
        if self.cased || hay.is_ascii() {
            self.matches_folded(hay.as_bytes(), !self.cased)
        } else {
            // Rare: non-ASCII event text compared case-insensitively.
            let low = hay.to_lowercase();
            self.matches_folded(low.as_bytes(), false)
        }
    }

    /// `fold`: lowercase ASCII bytes of `hay` on the fly.
    fn matches_folded(&self, hay: &[u8], fold: bool) -> bool {
        let n = self.needle.as_bytes();
        match &self.kind {
            StrKind::Any => true,
            StrKind::Exact => hay.len() == n.len() && eq_bytes(hay, n, fold),
            StrKind::Prefix => hay.len() >= n.len() && eq_bytes(&hay[..n.len()], n, fold),
            StrKind::Suffix => {
                hay.len() >= n.len() && eq_bytes(&hay[hay.len() - n.len()..], n, fold)
            }
            StrKind::Contains => contains_bytes(hay, n, fold),
            StrKind::Glob(toks) => {
                // `hay` is valid UTF-8 here: either the event text or its
                // lowercase. ASCII text is matched byte-wise, other text by
                // chars so that `?` is one character.
                if hay.is_ascii() {
                    glob(toks, hay, |c, b| {
                        let b = if fold { b.to_ascii_lowercase() } else { b };
                        c == char::from(b)
                    })
                } else {
                    let s = String::from_utf8_lossy(hay);
                    let chars: Vec<char> = s.chars().collect();
                    glob(toks, &chars, |c, h| c == h)
                }
            }
        }
    }

    fn matches_value(&self, v: &Node<'_>) -> bool {
        match v {
            Node::String(s) => self.matches_text(s),
            Node::Number(n) => {
                if self.num.is_some() && self.num == n.as_f64() {
                    return true;
                }
                let mut buf = NumBuf::default();
                // Writing a number into 40 bytes cannot overflow for the
                // integers and floats serde_json produces; if it somehow
                // did, the value simply does not match.
                if write!(buf, "{n}").is_err() {
                    return false;
                }
                self.matches_text(buf.as_str())
            }
            Node::Bool(b) => self.matches_text(if *b { "true" } else { "false" }),
            Node::Null | Node::Array(_) | Node::Object(_) => false,
        }
    }
}

fn eq_bytes(hay: &[u8], needle: &[u8], fold: bool) -> bool {
    if fold {
        hay.iter()
            .zip(needle)
            .all(|(h, n)| h.to_ascii_lowercase() == *n)
    } else {
        hay == needle
    }
}

fn contains_bytes(hay: &[u8], needle: &[u8], fold: bool) -> bool {
    let Some(&first) = needle.first() else {
        return true;
    };
    if needle.len() > hay.len() {
        return false;
    }
    let last = hay.len() - needle.len();
    (0..=last).any(|i| {
        let h = if fold {
            hay[i].to_ascii_lowercase()
        } else {
            hay[i]
        };
        h == first && eq_bytes(&hay[i + 1..i + needle.len()], &needle[1..], fold)
    })
}

/// Wildcard matching with single-star backtracking: linear in practice,
/// O(n·m) worst case, no allocation.
fn glob<T: Copy>(pat: &[Tok], hay: &[T], eq: impl Fn(char, T) -> bool) -> bool {
    let (mut p, mut h) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while h < hay.len() {
        match pat.get(p) {
            Some(Tok::Many) => {
                star = Some((p, h));
                p += 1;
            }
            Some(Tok::One) => {
                p += 1;
                h += 1;
            }
            Some(Tok::Lit(c)) if eq(*c, hay[h]) => {
                p += 1;
                h += 1;
            }
            _ => match star {
                Some((sp, sh)) => {
                    p = sp + 1;
                    h = sh + 1;
                    star = Some((sp, sh + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|t| *t == Tok::Many)
}

/// A stack buffer for rendering numbers without allocating.
struct NumBuf {
    buf: [u8; 40],
    len: usize,
}

impl Default for NumBuf {
    fn default() -> Self {
        NumBuf {
            buf: [0; 40],
            len: 0,
        }
    }
}

impl NumBuf {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for NumBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum CmpOp {
    Lt,
    Lte,
    Gt,
    Gte,
}

/// An IP network for `cidr`.
#[derive(Debug, Clone)]
pub(crate) struct Cidr {
    net: u128,
    mask: u128,
    v6: bool,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u32>().ok()?)),
            None => (s, None),
        };
        let ip: IpAddr = addr.trim().parse().ok()?;
        let (bits, v6, max) = match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), false, 32),
            IpAddr::V6(v6) => (u128::from(v6), true, 128),
        };
        let len = len.unwrap_or(max);
        if len > max {
            return None;
        }
        let mask = if len == 0 {
            0
        } else {
            (u128::MAX << (128 - len)) >> (128 - max)
        };
        Some(Cidr {
            net: bits & mask,
            mask,
            v6,
        })
    }

    fn contains(&self, text: &str) -> bool {
        match text.trim().parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) if !self.v6 => u128::from(u32::from(v4)) & self.mask == self.net,
            Ok(IpAddr::V6(v6)) if self.v6 => u128::from(v6) & self.mask == self.net,
            // An IPv4-mapped IPv6 address in a v4 network.
            Ok(IpAddr::V6(v6)) => v6
                .to_ipv4_mapped()
                .is_some_and(|v4| u128::from(u32::from(v4)) & self.mask == self.net),
            _ => false,
        }
    }
}

/// Which part of the other field a `fieldref` compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RefKind {
    Exact,
    Prefix,
    Suffix,
    Contains,
}

/// One compiled value of a detection item.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    Str(StrMatch),
    Re(Regex),
    Cidr(Cidr),
    Cmp(CmpOp, f64),
    /// `exists`: the field is (true) / is not (false) present with a
    /// non-null value.
    Exists(bool),
    /// The value `null`: the field is absent or null.
    Null,
    /// `fieldref`: compare with the value(s) of another field of the event.
    FieldRef {
        other: String,
        kind: RefKind,
        cased: bool,
    },
}

impl Matcher {
    /// Does this matcher accept one leaf value of the field? (`Exists` and
    /// `Null` are decided on the whole field by the caller.)
    pub(crate) fn leaf(&self, v: &Node<'_>, root: &Members<'_>) -> bool {
        match self {
            Matcher::Str(s) => s.matches_value(v),
            Matcher::Re(re) => with_text(v, |t| re.is_match(t)),
            Matcher::Cidr(c) => v.as_str().is_some_and(|t| c.contains(t)),
            Matcher::Cmp(op, want) => {
                let got = match v {
                    Node::Number(n) => n.as_f64(),
                    Node::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                };
                got.is_some_and(|g| match op {
                    CmpOp::Lt => g < *want,
                    CmpOp::Lte => g <= *want,
                    CmpOp::Gt => g > *want,
                    CmpOp::Gte => g >= *want,
                })
            }
            Matcher::Exists(_) | Matcher::Null => false,
            Matcher::FieldRef { other, kind, cased } => with_text(v, |mine| {
                let mut found = false;
                field::visit(root, other, &mut found, &mut |o| {
                    with_text(o, |theirs| {
                        let (a, b) = if *cased {
                            (mine.to_owned(), theirs.to_owned())
                        } else {
                            (mine.to_lowercase(), theirs.to_lowercase())
                        };
                        match kind {
                            RefKind::Exact => a == b,
                            RefKind::Prefix => a.starts_with(&b),
                            RefKind::Suffix => a.ends_with(&b),
                            RefKind::Contains => a.contains(&b),
                        }
                    })
                })
            }),
        }
    }

    /// Does this matcher accept a bare text (an object key, for keywords)?
    pub(crate) fn leaf_text(&self, text: &str) -> bool {
        match self {
            Matcher::Str(s) => s.matches_text(text),
            Matcher::Re(re) => re.is_match(text),
            _ => false,
        }
    }

    /// The exact lowercase text this matcher requires, if it is a plain
    /// case-insensitive equality (used to index rules by `verb` & co).
    pub(crate) fn exact_needle(&self) -> Option<&str> {
        match self {
            Matcher::Str(StrMatch {
                kind: StrKind::Exact,
                needle,
                cased: false,
                ..
            }) => Some(needle),
            _ => None,
        }
    }
}

/// Runs `f` on the text form of a scalar (strings, numbers, booleans).
pub(crate) fn with_text(v: &Node<'_>, f: impl FnOnce(&str) -> bool) -> bool {
    match v {
        Node::String(s) => f(s),
        Node::Number(n) => {
            let mut buf = NumBuf::default();
            write!(buf, "{n}").is_ok() && f(buf.as_str())
        }
        Node::Bool(b) => f(if *b { "true" } else { "false" }),
        _ => false,
    }
}

/// The modifiers of one detection item, parsed from `field|mod|mod`.
#[derive(Debug, Default)]
pub(crate) struct Modifiers {
    pub(crate) all: bool,
    pub(crate) neq: bool,
    kind: Option<RefKind>,
    cased: bool,
    re: bool,
    re_flags: (bool, bool, bool),
    cidr: bool,
    cmp: Option<CmpOp>,
    exists: bool,
    fieldref: bool,
    windash: bool,
    /// Encodings applied in order before base64 / base64offset.
    encodings: Vec<Encoding>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Encoding {
    Utf16Le,
    Utf16Be,
    Utf16Bom,
    Base64,
    Base64Offset,
}

impl Modifiers {
    pub(crate) fn parse<'a>(
        field: &str,
        mods: impl Iterator<Item = &'a str>,
    ) -> Result<Modifiers, Error> {
        let mut m = Modifiers::default();
        for raw in mods {
            let bad = || Error::Modifier {
                field: field.to_owned(),
                modifier: raw.to_owned(),
            };
            match raw {
                "contains" => m.kind = Some(RefKind::Contains),
                "startswith" => m.kind = Some(RefKind::Prefix),
                "endswith" => m.kind = Some(RefKind::Suffix),
                "all" => m.all = true,
                "cased" => m.cased = true,
                "exists" => m.exists = true,
                "re" => m.re = true,
                // Regex flags only make sense after `re`.
                "i" | "ignorecase" if m.re => m.re_flags.0 = true,
                "m" | "multiline" if m.re => m.re_flags.1 = true,
                "s" | "dotall" if m.re => m.re_flags.2 = true,
                "cidr" => m.cidr = true,
                "lt" => m.cmp = Some(CmpOp::Lt),
                "lte" => m.cmp = Some(CmpOp::Lte),
                "gt" => m.cmp = Some(CmpOp::Gt),
                "gte" => m.cmp = Some(CmpOp::Gte),
                "neq" => m.neq = true,
                "fieldref" => m.fieldref = true,
                "windash" => m.windash = true,
                "base64" => m.encodings.push(Encoding::Base64),
                "base64offset" => m.encodings.push(Encoding::Base64Offset),
                "wide" | "utf16le" => m.encodings.push(Encoding::Utf16Le),
                "utf16be" => m.encodings.push(Encoding::Utf16Be),
                "utf16" => m.encodings.push(Encoding::Utf16Bom),
                _ => return Err(bad()),
            }
        }
        let typed = [m.re, m.cidr, m.cmp.is_some(), m.exists, m.fieldref]
            .iter()
            .filter(|b| **b)
            .count();
        if typed > 1 || (typed == 1 && (!m.encodings.is_empty() || m.windash)) {
            return Err(Error::Value {
                field: field.to_owned(),
                reason: "conflicting modifiers".into(),
            });
        }
        Ok(m)
    }

    /// Compiles one YAML value under these modifiers into matchers (several
    /// when a modifier such as `windash` or `base64offset` expands it).
    pub(crate) fn compile(&self, field: &str, value: &Value) -> Result<Vec<Matcher>, Error> {
        let bad = |reason: &str| Error::Value {
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        if self.exists {
            let b = match value {
                Value::Bool(b) => *b,
                Value::String(s) if s.eq_ignore_ascii_case("true") => true,
                Value::String(s) if s.eq_ignore_ascii_case("false") => false,
                _ => return Err(bad("exists needs true or false")),
            };
            return Ok(vec![Matcher::Exists(b)]);
        }
        let text = match value {
            Value::Null => {
                if self.kind.is_some() || self.re || self.cidr || self.cmp.is_some() {
                    return Err(bad("null cannot take a modifier"));
                }
                return Ok(vec![Matcher::Null]);
            }
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Array(_) | Value::Object(_) => {
                return Err(bad("values must be scalars or a list of scalars"));
            }
        };
        if let Some(op) = self.cmp {
            let n = match value {
                Value::Number(n) => n.as_f64(),
                _ => text.trim().parse::<f64>().ok(),
            }
            .ok_or_else(|| bad("comparison needs a number"))?;
            return Ok(vec![Matcher::Cmp(op, n)]);
        }
        if self.cidr {
            let c = Cidr::parse(&text).ok_or_else(|| bad("not a CIDR network"))?;
            return Ok(vec![Matcher::Cidr(c)]);
        }
        if self.re {
            let (i, m, s) = self.re_flags;
            let re = RegexBuilder::new(&text)
                .case_insensitive(i)
                .multi_line(m)
                .dot_matches_new_line(s)
                .build()
                .map_err(|e| Error::Regex {
                    field: field.to_owned(),
                    reason: e.to_string(),
                })?;
            return Ok(vec![Matcher::Re(re)]);
        }
        if self.fieldref {
            return Ok(vec![Matcher::FieldRef {
                other: text,
                kind: self.kind.unwrap_or(RefKind::Exact),
                cased: self.cased,
            }]);
        }
        if !self.encodings.is_empty() {
            return self.compile_encoded(field, &text);
        }
        let variants = if self.windash {
            windash(&text)
        } else {
            vec![text]
        };
        Ok(variants
            .iter()
            .map(|v| {
                let mut toks = tokenize(v);
                self.wrap(&mut toks);
                Matcher::Str(StrMatch::new(toks, self.cased))
            })
            .collect())
    }

    fn wrap(&self, toks: &mut Vec<Tok>) {
        match self.kind {
            Some(RefKind::Contains) => {
                toks.insert(0, Tok::Many);
                toks.push(Tok::Many);
            }
            Some(RefKind::Prefix) => toks.push(Tok::Many),
            Some(RefKind::Suffix) => toks.insert(0, Tok::Many),
            Some(RefKind::Exact) | None => {}
        }
    }

    /// `wide`/`utf16*` then `base64`/`base64offset`: the value is taken
    /// literally (Sigma has no wildcards inside encoded values) and the
    /// encoded text is matched case-sensitively, since base64 is.
    fn compile_encoded(&self, field: &str, text: &str) -> Result<Vec<Matcher>, Error> {
        let mut bytes: Vec<Vec<u8>> = vec![text.as_bytes().to_vec()];
        let mut texts: Option<Vec<String>> = None;
        for enc in &self.encodings {
            if texts.is_some() {
                return Err(Error::Value {
                    field: field.to_owned(),
                    reason: "nothing can follow base64 / base64offset".into(),
                });
            }
            match enc {
                Encoding::Utf16Le | Encoding::Utf16Be | Encoding::Utf16Bom => {
                    bytes = bytes.iter().map(|b| utf16(b, *enc)).collect();
                }
                Encoding::Base64 => texts = Some(bytes.iter().map(|b| base64(b)).collect()),
                Encoding::Base64Offset => {
                    texts = Some(bytes.iter().flat_map(|b| base64_offsets(b)).collect());
                }
            }
        }
        let Some(texts) = texts else {
            return Err(Error::Value {
                field: field.to_owned(),
                reason: "utf16 / wide encodings need base64 or base64offset after them".into(),
            });
        };
        let kind = match self.kind {
            Some(RefKind::Contains) => StrKind::Contains,
            Some(RefKind::Prefix) => StrKind::Prefix,
            Some(RefKind::Suffix) => StrKind::Suffix,
            Some(RefKind::Exact) | None => StrKind::Exact,
        };
        Ok(texts
            .into_iter()
            .map(|t| Matcher::Str(StrMatch::raw(t, kind.clone())))
            .collect())
    }
}

fn utf16(bytes: &[u8], enc: Encoding) -> Vec<u8> {
    let s = String::from_utf8_lossy(bytes);
    let mut out = Vec::with_capacity(bytes.len() * 2 + 2);
    if enc == Encoding::Utf16Bom {
        out.extend_from_slice(&[0xFF, 0xFE]);
    }
    for unit in s.encode_utf16() {
        if enc == Encoding::Utf16Be {
            out.extend_from_slice(&unit.to_be_bytes());
        } else {
            out.extend_from_slice(&unit.to_le_bytes());
        }
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub(crate) fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The three base64 renderings of `data` at byte offsets 0, 1 and 2 inside
/// a larger encoded blob, trimmed to the characters that do not depend on
/// the surrounding bytes (Sigma's `base64offset`).
pub(crate) fn base64_offsets(data: &[u8]) -> Vec<String> {
    (0..3)
        .map(|i| {
            let mut padded = vec![b' '; i];
            padded.extend_from_slice(data);
            let enc = base64(&padded);
            let start = [0, 2, 3][i];
            let end_trim = [0, 3, 2][(data.len() + i) % 3];
            let end = enc.len().saturating_sub(end_trim).max(start);
            enc[start..end].to_owned()
        })
        .collect()
}

/// `windash`: every option-like dash or slash (at the start or after
/// whitespace, followed by a letter or digit) is tried as each of `-`, `/`,
/// en dash, em dash and horizontal bar, as Windows tools accept them all.
pub(crate) fn windash(s: &str) -> Vec<String> {
    const DASHES: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];
    // More than a few positions explode combinatorially; 4 positions already
    // give 625 variants.
    const MAX_POSITIONS: usize = 4;
    let chars: Vec<char> = s.chars().collect();
    let positions: Vec<usize> = (0..chars.len())
        .filter(|&i| {
            (chars[i] == '-' || chars[i] == '/')
                && (i == 0 || chars[i - 1].is_whitespace())
                && chars.get(i + 1).is_some_and(|c| c.is_alphanumeric())
        })
        .take(MAX_POSITIONS)
        .collect();
    let mut out = vec![chars];
    for &p in &positions {
        out = out
            .into_iter()
            .flat_map(|v| {
                DASHES.iter().map(move |d| {
                    let mut v = v.clone();
                    v[p] = *d;
                    v
                })
            })
            .collect();
    }
    out.into_iter().map(|v| v.into_iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(mods: &[&str], value: Value) -> Vec<Matcher> {
        Modifiers::parse("f", mods.iter().copied())
            .unwrap()
            .compile("f", &value)
            .unwrap()
    }

    fn hit(ms: &[Matcher], v: Value) -> bool {
        let v = Node::of_value(&v);
        ms.iter().any(|m| m.leaf(&v, &Vec::new()))
    }

    #[test]
    fn plain_value_is_case_insensitive_exact() {
        let ms = m(&[], json!("Create"));
        assert!(hit(&ms, json!("create")));
        assert!(hit(&ms, json!("CREATE")));
        assert!(!hit(&ms, json!("created")));
        assert!(!hit(&ms, json!("recreate")));
    }

    #[test]
    fn cased_opts_out() {
        let ms = m(&["cased"], json!("Create"));
        assert!(hit(&ms, json!("Create")));
        assert!(!hit(&ms, json!("create")));
        let ms = m(&["contains", "cased"], json!("Admin"));
        assert!(hit(&ms, json!("xAdminx")));
        assert!(!hit(&ms, json!("xadminx")));
    }

    #[test]
    fn contains_startswith_endswith() {
        let c = m(&["contains"], json!("exec"));
        assert!(hit(&c, json!("/api/v1/pods/x/EXEC?command=sh")));
        assert!(!hit(&c, json!("/api/v1/pods/x/log")));
        let s = m(&["startswith"], json!("system:"));
        assert!(hit(&s, json!("System:node:a")));
        assert!(!hit(&s, json!("x-system:")));
        let e = m(&["endswith"], json!(".sock"));
        assert!(hit(&e, json!("/var/run/docker.SOCK")));
        assert!(!hit(&e, json!("/var/run/docker.sock/x")));
    }

    #[test]
    fn wildcards_and_escapes() {
        let g = m(&[], json!("kube-*-?x"));
        assert!(hit(&g, json!("kube-proxy-ax")));
        assert!(hit(&g, json!("KUBE--bx")));
        assert!(!hit(&g, json!("kube-proxy-x")));
        // Escaped wildcard is literal.
        let lit = m(&[], json!("a\\*b"));
        assert!(hit(&lit, json!("a*b")));
        assert!(!hit(&lit, json!("axxb")));
        let q = m(&[], json!("a\\?"));
        assert!(hit(&q, json!("a?")));
        assert!(!hit(&q, json!("ab")));
        // Escaped backslash followed by a real wildcard.
        let bs = m(&[], json!("c:\\\\*"));
        assert!(hit(&bs, json!("c:\\windows")));
        // Backslash before an ordinary char stays literal.
        let path = m(&[], json!("C:\\Windows"));
        assert!(hit(&path, json!("c:\\windows")));
        // `*` alone matches any scalar, even empty, but not null.
        let any = m(&[], json!("*"));
        assert!(hit(&any, json!("")));
        assert!(hit(&any, json!(5)));
        assert!(!hit(&any, Value::Null));
        // Non-ASCII text under a `?`.
        let u = m(&[], json!("caf?"));
        assert!(hit(&u, json!("CAFÉ")));
    }

    #[test]
    fn numbers_match_as_text_and_value() {
        let n = m(&[], json!(403));
        assert!(hit(&n, json!(403)));
        assert!(hit(&n, json!("403")));
        assert!(hit(&n, json!(403.0)));
        assert!(!hit(&n, json!(4030)));
        let s = m(&[], json!("403"));
        assert!(hit(&s, json!(403)));
        let w = m(&[], json!("40*"));
        assert!(hit(&w, json!(401)));
        let b = m(&[], json!(true));
        assert!(hit(&b, json!(true)));
        assert!(hit(&b, json!("True")));
        assert!(!hit(&b, json!(false)));
    }

    #[test]
    fn regex_and_flags() {
        let r = m(&["re"], json!("^/api/v1/namespaces/[^/]+/secrets$"));
        assert!(hit(&r, json!("/api/v1/namespaces/kube-system/secrets")));
        assert!(!hit(&r, json!("/api/v1/namespaces/a/b/secrets")));
        // Regexes are case-sensitive unless `i`.
        let cs = m(&["re"], json!("^admin$"));
        assert!(!hit(&cs, json!("ADMIN")));
        let ci = m(&["re", "i"], json!("^admin$"));
        assert!(hit(&ci, json!("ADMIN")));
        let ml = m(&["re", "m"], json!("^b$"));
        assert!(hit(&ml, json!("a\nb\nc")));
        assert!(!hit(&cs, json!("x\nadmin")));
        let dot = m(&["re", "s"], json!("a.b"));
        assert!(hit(&dot, json!("a\nb")));
        assert!(!hit(&m(&["re"], json!("a.b")), json!("a\nb")));
        assert!(
            Modifiers::parse("f", ["re"].into_iter())
                .unwrap()
                .compile("f", &json!("("))
                .is_err()
        );
    }

    #[test]
    fn base64_and_offsets() {
        assert_eq!(base64(b"Hello"), "SGVsbG8=");
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"ab"), "YWI=");
        let b = m(&["base64"], json!("/bin/sh"));
        assert!(hit(&b, json!("L2Jpbi9zaA==")));
        // Encoded text is compared case-sensitively.
        assert!(!hit(&b, json!("l2jpbi9zaa==")));
        let bc = m(&["base64", "contains"], json!("/bin/sh"));
        assert!(hit(&bc, json!("echo L2Jpbi9zaA== | base64 -d")));
        // base64offset finds the text wherever it sits in an encoded blob.
        let off = m(&["base64offset", "contains"], json!("http://"));
        for prefix in ["", "x", "xy"] {
            let blob = base64(format!("{prefix}http://evil").as_bytes());
            assert!(hit(&off, json!(blob)), "{prefix}");
        }
        assert!(!hit(&off, json!(base64(b"https//evil"))));
        // Encodings before base64.
        let wide = m(&["wide", "base64offset", "contains"], json!("ping"));
        let blob = base64(&utf16(b"x ping y", Encoding::Utf16Le));
        assert!(hit(&wide, json!(blob)));
        let be = m(&["utf16be", "base64"], json!("a"));
        assert!(hit(&be, json!(base64(&[0, b'a']))));
        let bom = m(&["utf16", "base64"], json!("a"));
        assert!(hit(&bom, json!(base64(&[0xFF, 0xFE, b'a', 0]))));
    }

    #[test]
    fn windash_variants() {
        let w = m(&["windash", "contains"], json!(" -exec "));
        assert!(hit(&w, json!("tool /exec x")));
        assert!(hit(&w, json!("tool \u{2013}exec x")));
        assert!(hit(&w, json!("tool -EXEC x")));
        assert!(!hit(&w, json!("tool +exec x")));
        assert_eq!(windash("a-b").len(), 1);
    }

    #[test]
    fn cidr_v4_v6() {
        let c = m(&["cidr"], json!("10.0.0.0/8"));
        assert!(hit(&c, json!("10.1.2.3")));
        assert!(!hit(&c, json!("11.0.0.1")));
        assert!(hit(&c, json!("::ffff:10.0.0.1")));
        assert!(!hit(&c, json!("not an ip")));
        let c6 = m(&["cidr"], json!("fd00::/8"));
        assert!(hit(&c6, json!("fd12::1")));
        assert!(!hit(&c6, json!("fe80::1")));
        let all = m(&["cidr"], json!("0.0.0.0/0"));
        assert!(hit(&all, json!("8.8.8.8")));
        assert!(
            Modifiers::parse("f", ["cidr"].into_iter())
                .unwrap()
                .compile("f", &json!("10.0.0.0/33"))
                .is_err()
        );
    }

    #[test]
    fn comparisons() {
        let lt = m(&["lt"], json!(400));
        assert!(hit(&lt, json!(200)));
        assert!(!hit(&lt, json!(400)));
        let lte = m(&["lte"], json!(400));
        assert!(hit(&lte, json!(400)));
        let gt = m(&["gt"], json!("399"));
        assert!(hit(&gt, json!("403")));
        assert!(!hit(&gt, json!(399)));
        let gte = m(&["gte"], json!(500));
        assert!(hit(&gte, json!(500.0)));
        assert!(!hit(&gte, json!("abc")));
        assert!(
            Modifiers::parse("f", ["gt"].into_iter())
                .unwrap()
                .compile("f", &json!("many"))
                .is_err()
        );
    }

    #[test]
    fn unknown_and_expand_modifiers_are_errors() {
        assert!(matches!(
            Modifiers::parse("f", ["expand"].into_iter()),
            Err(Error::Modifier { .. })
        ));
        assert!(Modifiers::parse("f", ["contain"].into_iter()).is_err());
        assert!(Modifiers::parse("f", ["re", "cidr"].into_iter()).is_err());
        // `i` only as a regex flag.
        assert!(Modifiers::parse("f", ["i"].into_iter()).is_err());
    }
}
