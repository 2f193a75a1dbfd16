//! Timestamp parsing shared by every parser.

use chrono::{DateTime, Utc};

use crate::Error;

/// Parses an RFC 3339 timestamp with any fractional precision (CRI and
/// Docker write nanoseconds, the API server microseconds) and any offset.
pub fn parse_rfc3339(value: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| Error::Timestamp {
            value: truncate_for_message(value),
        })
}

/// Error messages quote the offending input, but never more than a screenful.
pub(crate) fn truncate_for_message(value: &str) -> String {
    const MAX: usize = 64;
    if value.len() <= MAX {
        return value.to_owned();
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nanos_and_offsets() {
        let t = parse_rfc3339("2016-10-06T00:17:09.669794202Z").unwrap();
        assert_eq!(t.timestamp_subsec_nanos(), 669_794_202);
        let t = parse_rfc3339("2016-10-06T02:17:09.5+02:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2016-10-06T00:17:09.500+00:00");
        assert!(parse_rfc3339("yesterday").is_err());
    }
}
