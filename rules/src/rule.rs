//! Rule metadata and the parsing of one YAML document into a detection
//! rule, a correlation rule or a filter.
//!
//! Only the attributes Ward uses are read; everything else in a Sigma
//! document (references, falsepositives, date, …) is accepted and ignored,
//! so SigmaHQ rules load unchanged.

use std::fmt;
use std::path::PathBuf;

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Error;
use crate::detection::Detection;

/// Where a rule came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum RuleSource {
    /// Embedded in the binary (path inside `rules/builtin/`).
    Builtin(String),
    /// Loaded from a file on disk.
    File(PathBuf),
    /// Passed as text to [`crate::RuleSet::from_sources`].
    Inline(String),
}

impl fmt::Display for RuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleSource::Builtin(n) => write!(f, "builtin:{n}"),
            RuleSource::File(p) => write!(f, "{}", p.display()),
            RuleSource::Inline(n) => write!(f, "{n}"),
        }
    }
}

/// Sigma severity. The order is meaningful: `Medium` and above route to
/// people, `Low` and `Informational` are hunting context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[serde(alias = "info")]
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "informational" | "info" => Level::Informational,
            "low" => Level::Low,
            "medium" => Level::Medium,
            "high" => Level::High,
            "critical" => Level::Critical,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;

    /// Case-insensitive; `info` is accepted for `informational`.
    fn from_str(s: &str) -> Result<Level, String> {
        Level::parse(s).ok_or_else(|| {
            format!("unknown level {s:?}: expected informational, low, medium, high or critical")
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the rest of Ward needs to know about a loaded rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleInfo {
    /// The Sigma `id`; when a rule has none, its `name`, else its title, so
    /// that alerts always name their rule.
    pub id: String,
    /// The Sigma `name` (used by correlations to refer to rules).
    pub name: Option<String>,
    pub title: String,
    /// Sigma leaves `level` optional; Ward treats a missing level as
    /// `medium` so that a rule is never silently buried.
    pub level: Level,
    pub author: Option<String>,
    pub description: Option<String>,
    pub status: Option<String>,
    pub tags: Vec<String>,
    pub source: RuleSource,
    /// True for correlation rules.
    pub correlation: bool,
}

/// One parsed document.
pub(crate) enum Doc {
    Detection {
        info: RuleInfo,
        detection: Detection,
    },
    Correlation {
        info: RuleInfo,
        spec: CorrelationSpec,
        generate: bool,
    },
    Filter {
        title: String,
        rules: Vec<String>,
        detection: Detection,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CorrKind {
    EventCount,
    ValueCount,
    Temporal,
    TemporalOrdered,
}

/// The `condition` of a correlation: an AND of bounds on a count.
#[derive(Debug, Clone, Default)]
pub(crate) struct CountCond {
    pub(crate) gt: Option<u64>,
    pub(crate) gte: Option<u64>,
    pub(crate) lt: Option<u64>,
    pub(crate) lte: Option<u64>,
    pub(crate) eq: Option<u64>,
    pub(crate) neq: Option<u64>,
}

impl CountCond {
    pub(crate) fn holds(&self, n: u64) -> bool {
        self.gt.is_none_or(|v| n > v)
            && self.gte.is_none_or(|v| n >= v)
            && self.lt.is_none_or(|v| n < v)
            && self.lte.is_none_or(|v| n <= v)
            && self.eq.is_none_or(|v| n == v)
            && self.neq.is_none_or(|v| n != v)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CorrelationSpec {
    pub(crate) kind: CorrKind,
    pub(crate) rules: Vec<String>,
    pub(crate) group_by: Vec<String>,
    pub(crate) timespan: TimeDelta,
    /// None for temporal types without a condition: all rules must appear.
    pub(crate) condition: Option<CountCond>,
    /// `value_count`'s field.
    pub(crate) field: Option<String>,
    /// alias → (rule reference → field).
    pub(crate) aliases: Vec<(String, Vec<(String, String)>)>,
}

fn opt_str(m: &Map<String, Value>, key: &str) -> Option<String> {
    match m.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn str_list(m: &Map<String, Value>, key: &str) -> Result<Vec<String>, Error> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(Error::Rule(format!("`{key}` must be a list of strings"))),
            })
            .collect(),
        Some(_) => Err(Error::Rule(format!("`{key}` must be a list of strings"))),
    }
}

/// Parses `5m`, `30s`, `1h`, `2d` (and `1w` as a convenience).
pub(crate) fn parse_timespan(s: &str) -> Result<TimeDelta, Error> {
    let bad = || Error::Rule(format!("invalid timespan {s:?} (use e.g. 30s, 5m, 1h, 1d)"));
    let s = s.trim();
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(bad());
    }
    let secs = match unit {
        's' => n,
        'm' => n.checked_mul(60).ok_or_else(bad)?,
        'h' => n.checked_mul(3600).ok_or_else(bad)?,
        'd' => n.checked_mul(86_400).ok_or_else(bad)?,
        'w' => n.checked_mul(7 * 86_400).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    TimeDelta::try_seconds(secs).ok_or_else(bad)
}

/// A short label for a document, for error messages: its title or id.
pub(crate) fn label(doc: &Value) -> Option<String> {
    let m = doc.as_object()?;
    opt_str(m, "title").or_else(|| opt_str(m, "id"))
}

fn info(m: &Map<String, Value>, source: &RuleSource, correlation: bool) -> Result<RuleInfo, Error> {
    let title = opt_str(m, "title").ok_or_else(|| Error::Rule("missing `title`".into()))?;
    let level = match m.get("level") {
        None | Some(Value::Null) => Level::Medium,
        Some(Value::String(s)) => {
            Level::parse(s).ok_or_else(|| Error::Rule(format!("unknown level {s:?}")))?
        }
        Some(_) => return Err(Error::Rule("`level` must be a string".into())),
    };
    let name = opt_str(m, "name");
    let id = opt_str(m, "id")
        .or_else(|| name.clone())
        .unwrap_or_else(|| title.clone());
    Ok(RuleInfo {
        id,
        name,
        title,
        level,
        author: opt_str(m, "author"),
        description: opt_str(m, "description").map(|d| d.trim().to_owned()),
        status: opt_str(m, "status"),
        tags: str_list(m, "tags")?,
        source: source.clone(),
        correlation,
    })
}

/// Classifies and compiles one YAML document.
pub(crate) fn parse_doc(doc: &Value, source: &RuleSource) -> Result<Doc, Error> {
    let m = doc
        .as_object()
        .ok_or_else(|| Error::Rule("a rule must be a YAML mapping".into()))?;
    if let Some(action) = m.get("action") {
        return Err(Error::Rule(format!(
            "Sigma v1 rule collections (`action: {action}`) are not supported"
        )));
    }
    if let Some(corr) = m.get("correlation") {
        let info = info(m, source, true)?;
        let spec = parse_correlation(corr)?;
        let generate = match m
            .get("generate")
            .or_else(|| corr.as_object().and_then(|c| c.get("generate")))
        {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Error::Rule("`generate` must be true or false".into())),
        };
        return Ok(Doc::Correlation {
            info,
            spec,
            generate,
        });
    }
    if let Some(filter) = m.get("filter") {
        let title = opt_str(m, "title").ok_or_else(|| Error::Rule("missing `title`".into()))?;
        let fm = filter
            .as_object()
            .ok_or_else(|| Error::Rule("`filter` must be a mapping".into()))?;
        let rules = str_list(fm, "rules")?;
        if rules.is_empty() {
            return Err(Error::Rule("a filter needs `rules`".into()));
        }
        let detection = Detection::compile(filter, &["rules"])?;
        return Ok(Doc::Filter {
            title,
            rules,
            detection,
        });
    }
    if let Some(det) = m.get("detection") {
        let info = info(m, source, false)?;
        let detection = Detection::compile(det, &[])?;
        return Ok(Doc::Detection { info, detection });
    }
    Err(Error::Rule(
        "neither `detection`, `correlation` nor `filter`".into(),
    ))
}

fn parse_correlation(v: &Value) -> Result<CorrelationSpec, Error> {
    let m = v
        .as_object()
        .ok_or_else(|| Error::Rule("`correlation` must be a mapping".into()))?;
    let kind = match m.get("type").and_then(Value::as_str) {
        Some("event_count") => CorrKind::EventCount,
        Some("value_count") => CorrKind::ValueCount,
        Some("temporal") => CorrKind::Temporal,
        Some("temporal_ordered") => CorrKind::TemporalOrdered,
        Some(other) => {
            return Err(Error::Rule(format!("unknown correlation type {other:?}")));
        }
        None => return Err(Error::Rule("correlation needs a `type`".into())),
    };
    let rules = str_list(m, "rules")?;
    if rules.is_empty() {
        return Err(Error::Rule("correlation needs `rules`".into()));
    }
    if rules.len() > 64 {
        return Err(Error::Rule(
            "a correlation may refer to at most 64 rules".into(),
        ));
    }
    let group_by = str_list(m, "group-by")?;
    let timespan = match m.get("timespan").or_else(|| m.get("timeframe")) {
        Some(Value::String(s)) => parse_timespan(s)?,
        _ => return Err(Error::Rule("correlation needs a `timespan`".into())),
    };
    let mut field = None;
    let condition = match m.get("condition") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => {
            let mut cc = CountCond::default();
            for (k, v) in c {
                if k == "field" {
                    field = v.as_str().map(str::to_owned);
                    continue;
                }
                let n = v
                    .as_u64()
                    .ok_or_else(|| Error::Rule(format!("condition `{k}` needs a count")))?;
                match k.as_str() {
                    "gt" => cc.gt = Some(n),
                    "gte" => cc.gte = Some(n),
                    "lt" => cc.lt = Some(n),
                    "lte" => cc.lte = Some(n),
                    "eq" => cc.eq = Some(n),
                    "neq" => cc.neq = Some(n),
                    _ => return Err(Error::Rule(format!("unknown condition operator {k:?}"))),
                }
            }
            Some(cc)
        }
        Some(_) => {
            return Err(Error::Rule(
                "correlation `condition` must be a mapping".into(),
            ));
        }
    };
    match kind {
        CorrKind::EventCount | CorrKind::ValueCount if condition.is_none() => {
            return Err(Error::Rule(
                "this correlation type needs a `condition`".into(),
            ));
        }
        CorrKind::ValueCount if field.is_none() => {
            return Err(Error::Rule("value_count needs `condition.field`".into()));
        }
        _ => {}
    }
    let mut aliases = Vec::new();
    if let Some(a) = m.get("aliases") {
        let a = a
            .as_object()
            .ok_or_else(|| Error::Rule("`aliases` must be a mapping".into()))?;
        for (alias, per_rule) in a {
            let per_rule = per_rule
                .as_object()
                .ok_or_else(|| Error::Rule(format!("alias {alias:?} must map rules to fields")))?;
            let mut pairs = Vec::new();
            for (rule, f) in per_rule {
                let f = f
                    .as_str()
                    .ok_or_else(|| Error::Rule(format!("alias {alias:?}: field must be text")))?;
                pairs.push((rule.clone(), f.to_owned()));
            }
            aliases.push((alias.clone(), pairs));
        }
    }
    Ok(CorrelationSpec {
        kind,
        rules,
        group_by,
        timespan,
        condition,
        field,
        aliases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("5m").unwrap(), TimeDelta::minutes(5));
        assert_eq!(parse_timespan("30s").unwrap(), TimeDelta::seconds(30));
        assert_eq!(parse_timespan("1h").unwrap(), TimeDelta::hours(1));
        assert_eq!(parse_timespan("2d").unwrap(), TimeDelta::days(2));
        for bad in ["", "m", "5", "5x", "-1m", "0s", "99999999999999999d"] {
            assert!(parse_timespan(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn count_conditions() {
        let c = CountCond {
            gt: Some(2),
            lte: Some(4),
            ..CountCond::default()
        };
        assert!(!c.holds(2));
        assert!(c.holds(3));
        assert!(c.holds(4));
        assert!(!c.holds(5));
    }
}
