//! Aggregations: a date histogram and terms top-N on keyword columns,
//! merged across partitions, within a memory and bucket budget.
//!
//! Uses tantivy's aggregation module: each partition yields intermediate
//! results (`DistributedAggregationCollector`), which are merged and then
//! finalized once. One [`AggregationLimitsGuard`] is shared by every
//! partition of a request, so the budget bounds the whole request; a
//! request over it fails with [`Error::Budget`] instead of growing.
//!
//! Terms counts are exact when each partition's segments hold at most
//! `segment_size` distinct values of the field; otherwise tantivy keeps the
//! top `segment_size` per segment and reports the possible error as
//! `doc_count_error_upper_bound`, passed on as `approximate`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::intermediate_agg_result::IntermediateAggregationResults;
use tantivy::aggregation::{
    AggContextParams, AggregationError, AggregationLimitsGuard, DistributedAggregationCollector,
};
use tantivy::collector::Count;
use tantivy::tokenizer::TokenizerManager;

use crate::cancel::{Cancel, Cancellable};
use crate::schema::{KEYWORD_COLUMNS, TIMESTAMP, WardSchema};
use crate::{Error, Store};

/// Most buckets a histogram may have.
pub const MAX_HISTOGRAM_BUCKETS: u64 = 10_000;
/// Largest `size` of a terms aggregation.
pub const MAX_TERMS_SIZE: usize = 1_000;
/// Buckets an automatic histogram aims at, at most.
const AUTO_BUCKETS: u64 = 200;

/// The interval of a date histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// Chosen from the time range: the shortest of 1s, 5s, 10s, 30s, 1m,
    /// 5m, 10m, 30m, 1h, 3h, 6h, 12h, 1d, 7d that gives at most 200 buckets.
    Auto,
    Fixed(Duration),
}

#[derive(Debug, Clone, Default)]
pub struct AggregateRequest {
    pub query: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub namespaces: Option<Vec<String>>,
    pub histogram: Option<Interval>,
    /// (dotted keyword field, top N).
    pub terms: Option<(String, usize)>,
    /// Stops the aggregation early once cancelled (see [`crate::cancel`]).
    pub cancel: Cancel,
}

#[derive(Debug, Serialize)]
pub struct AggregateResponse {
    /// Matches of the query in the range.
    pub total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Histogram>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terms: Option<Terms>,
}

#[derive(Debug, Serialize)]
pub struct Histogram {
    /// Bucket width, e.g. `1h`.
    pub interval: String,
    pub buckets: Vec<TimeBucket>,
}

#[derive(Debug, Serialize)]
pub struct TimeBucket {
    /// The bucket's first instant (RFC 3339).
    pub start: String,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct Terms {
    pub field: String,
    pub buckets: Vec<TermBucket>,
    /// Matches whose value is not among the buckets.
    pub other: u64,
    /// Whether counts may be underestimated (see the module docs).
    pub approximate: bool,
}

#[derive(Debug, Serialize)]
pub struct TermBucket {
    pub key: String,
    pub count: u64,
}

/// Limits of one aggregation request.
#[derive(Debug, Clone, Copy)]
pub struct AggregationBudget {
    pub memory_bytes: u64,
    pub buckets: u32,
}

impl Default for AggregationBudget {
    fn default() -> Self {
        AggregationBudget {
            memory_bytes: 256 * 1024 * 1024,
            buckets: 65_000,
        }
    }
}

/// Parses `auto` or a duration such as `30s`, `5m`, `1h`, `1d`.
pub fn parse_interval(text: &str) -> Result<Interval, Error> {
    if text == "auto" || text.is_empty() {
        return Ok(Interval::Auto);
    }
    let bad = || {
        Error::InvalidRequest(format!(
            "histogram={text:?}: give `auto` or a number with ms, s, m, h or d, e.g. 5m"
        ))
    };
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    let (n, unit) = text.split_at(digits);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(ms).filter(|ms| *ms > 0).ok_or_else(bad)?;
    Ok(Interval::Fixed(Duration::from_millis(ms)))
}

fn format_interval(ms: u64) -> String {
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

const AUTO_STEPS_MS: &[u64] = &[
    1_000,
    5_000,
    10_000,
    30_000,
    60_000,
    300_000,
    600_000,
    1_800_000,
    3_600_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    604_800_000,
];

impl Store {
    pub async fn aggregate(&self, request: AggregateRequest) -> Result<AggregateResponse, Error> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.aggregate_blocking(&request))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?
    }

    pub fn aggregate_blocking(
        &self,
        request: &AggregateRequest,
    ) -> Result<AggregateResponse, Error> {
        let query = self.compile_request(
            &request.query,
            request.start,
            request.end,
            request.namespaces.as_deref(),
        )?;
        let views = self.views_in(request.start, request.end);
        let mut aggs = serde_json::Map::new();
        let mut interval_ms = None;
        if let Some(interval) = request.histogram {
            // The range the buckets cover: the request's, or the days that
            // have data.
            let days = self.partitions();
            let lo = request
                .start
                .or_else(|| days.first().map(|d| d.start()))
                .unwrap_or_else(Utc::now);
            let hi = request
                .end
                .or_else(|| days.last().map(|d| d.end()))
                .unwrap_or_else(Utc::now);
            let span_ms = u64::try_from((hi - lo).num_milliseconds())
                .unwrap_or(0)
                .max(1);
            let ms = match interval {
                Interval::Auto => AUTO_STEPS_MS
                    .iter()
                    .copied()
                    .find(|step| span_ms.div_ceil(*step) <= AUTO_BUCKETS)
                    .unwrap_or_else(|| span_ms.div_ceil(AUTO_BUCKETS)),
                Interval::Fixed(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            };
            let buckets = span_ms.div_ceil(ms);
            if buckets > MAX_HISTOGRAM_BUCKETS {
                return Err(Error::Budget(format!(
                    "the histogram would have {buckets} buckets (at most {MAX_HISTOGRAM_BUCKETS}); use a longer interval or a shorter range"
                )));
            }
            interval_ms = Some(ms);
            let mut histogram = json!({
                "field": TIMESTAMP,
                "fixed_interval": format!("{ms}ms"),
                "min_doc_count": 0,
            });
            if request.start.is_some() || request.end.is_some() {
                let bounds =
                    json!({"min": lo.timestamp_millis(), "max": hi.timestamp_millis() - 1});
                histogram["hard_bounds"] = bounds.clone();
                histogram["extended_bounds"] = bounds;
            }
            aggs.insert("histogram".into(), json!({ "date_histogram": histogram }));
        }
        if let Some((field, size)) = &request.terms {
            let column = WardSchema::column_name(field).ok_or_else(|| {
                let known: Vec<&str> = KEYWORD_COLUMNS.iter().map(|(d, _)| *d).collect();
                Error::InvalidRequest(format!(
                    "terms={field:?} has no keyword column; terms work on {}",
                    known.join(", ")
                ))
            })?;
            if *size == 0 || *size > MAX_TERMS_SIZE {
                return Err(Error::InvalidRequest(format!(
                    "size must be between 1 and {MAX_TERMS_SIZE}"
                )));
            }
            aggs.insert(
                "terms".into(),
                json!({"terms": {
                    "field": column,
                    "size": size,
                    "segment_size": (size * 10).max(1_000),
                }}),
            );
        }
        let budget = self.aggregation_budget();
        let limits = AggregationLimitsGuard::new(Some(budget.memory_bytes), Some(budget.buckets));
        let parsed: Aggregations = serde_json::from_value(Value::Object(aggs))
            .map_err(|e| Error::InvalidRequest(format!("aggregation: {e}")))?;
        let mut total = 0u64;
        let mut merged: Option<IntermediateAggregationResults> = None;
        for view in &views {
            let searcher = view.reader.searcher();
            let collector = DistributedAggregationCollector::from_aggs(
                parsed.clone(),
                AggContextParams::new(limits.clone(), TokenizerManager::default()),
            );
            let collector = Cancellable {
                inner: (Count, collector),
                cancel: &request.cancel,
            };
            let (count, fruit) = searcher
                .search(&query, &collector)
                .map_err(|e| self.cancelled_or(&request.cancel, budget_error(e)))?;
            total += count as u64;
            match &mut merged {
                None => merged = Some(fruit),
                Some(m) => m.merge_fruits(fruit).map_err(budget_error)?,
            }
        }
        let result = merged
            .unwrap_or_default()
            .into_final_result(parsed, limits)
            .map_err(budget_error)?;
        let result = serde_json::to_value(&result)
            .map_err(|e| Error::InvalidRequest(format!("aggregation result: {e}")))?;
        let histogram = interval_ms.map(|ms| Histogram {
            interval: format_interval(ms),
            buckets: result["histogram"]["buckets"]
                .as_array()
                .map(|b| {
                    b.iter()
                        .map(|b| TimeBucket {
                            start: b["key"]
                                .as_f64()
                                .and_then(|k| DateTime::<Utc>::from_timestamp_millis(k as i64))
                                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                                .unwrap_or_default(),
                            count: b["doc_count"].as_u64().unwrap_or(0),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        });
        let terms = request.terms.as_ref().map(|(field, _)| {
            let t = &result["terms"];
            Terms {
                field: field.clone(),
                buckets: t["buckets"]
                    .as_array()
                    .map(|b| {
                        b.iter()
                            .map(|b| TermBucket {
                                key: match &b["key"] {
                                    Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                },
                                count: b["doc_count"].as_u64().unwrap_or(0),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                other: t["sum_other_doc_count"].as_u64().unwrap_or(0),
                approximate: t["doc_count_error_upper_bound"].as_u64().unwrap_or(0) > 0,
            }
        });
        Ok(AggregateResponse {
            total,
            histogram,
            terms,
        })
    }
}

fn budget_error(e: tantivy::TantivyError) -> Error {
    match e {
        tantivy::TantivyError::AggregationError(
            e @ (AggregationError::MemoryExceeded { .. }
            | AggregationError::BucketLimitExceeded { .. }),
        ) => Error::Budget(e.to_string()),
        tantivy::TantivyError::AggregationError(e) => Error::InvalidRequest(e.to_string()),
        e => Error::Tantivy(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse() {
        assert_eq!(parse_interval("auto").unwrap(), Interval::Auto);
        assert_eq!(
            parse_interval("5m").unwrap(),
            Interval::Fixed(Duration::from_secs(300))
        );
        assert_eq!(
            parse_interval("250ms").unwrap(),
            Interval::Fixed(Duration::from_millis(250))
        );
        for bad in ["5", "m", "0s", "5w", "-1h", "99999999999999999999d"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
        assert_eq!(format_interval(3_600_000), "1h");
        assert_eq!(format_interval(90_000), "90s");
    }
}
