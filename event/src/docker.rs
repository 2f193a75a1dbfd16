//! Docker's json-file log driver format: `{"log":"…\n","stream":"stdout","time":"…"}`.
//!
//! A `log` value that does not end in a newline is a partial chunk (Docker
//! cuts lines at 16 KiB); the chunk that ends in a newline is the final one.

use std::borrow::Cow;

use serde::Deserialize;

use crate::cri::Chunk;
use crate::time::{parse_rfc3339, truncate_for_message};
use crate::{Error, Stream};

#[derive(Deserialize)]
struct DockerLine<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

/// Parses one json-file line, without its trailing newline.
pub fn parse(line: &[u8]) -> Result<Chunk<'_>, Error> {
    let parsed: DockerLine<'_> =
        serde_json::from_slice(line).map_err(|e| Error::Docker(e.to_string()))?;
    let stream = Stream::parse(parsed.stream.as_bytes()).ok_or_else(|| {
        Error::Docker(format!(
            "stream {:?} is neither stdout nor stderr",
            truncate_for_message(&parsed.stream)
        ))
    })?;
    let timestamp = parse_rfc3339(&parsed.time)?;
    let partial = !parsed.log.ends_with('\n');
    let message: Cow<'_, [u8]> = match parsed.log {
        Cow::Borrowed(s) => Cow::Borrowed(s.strip_suffix('\n').unwrap_or(s).as_bytes()),
        Cow::Owned(mut s) => {
            if s.ends_with('\n') {
                s.pop();
            }
            Cow::Owned(s.into_bytes())
        }
    };
    Ok(Chunk {
        timestamp,
        stream,
        partial,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_line() {
        let c =
            parse(br#"{"log":"hello \"world\"\n","stream":"stderr","time":"2019-01-01T11:11:11.111111111Z"}"#)
                .unwrap();
        assert_eq!(&*c.message, b"hello \"world\"");
        assert_eq!(c.stream, Stream::Stderr);
        assert!(!c.partial);
    }

    #[test]
    fn partial_and_empty() {
        let c =
            parse(br#"{"log":"part","stream":"stdout","time":"2019-01-01T11:11:11Z"}"#).unwrap();
        assert!(c.partial);
        let c = parse(br#"{"log":"\n","stream":"stdout","time":"2019-01-01T11:11:11Z"}"#).unwrap();
        assert!(!c.partial);
        assert!(c.message.is_empty());
    }

    #[test]
    fn rejects_other_json() {
        assert!(parse(br#"{"msg":"x"}"#).is_err());
        assert!(parse(br#"{"log":"x\n","stream":"stdin","time":"2019-01-01T11:11:11Z"}"#).is_err());
        assert!(parse(b"not json").is_err());
    }
}
