//! The CRI container log format written by containerd and CRI-O:
//! `<RFC3339Nano> <stdout|stderr> <P|F>[:tags] <message>`.
//!
//! `P` marks a partial chunk of a longer line (runtimes cut lines at 16 KiB),
//! `F` the final chunk; [`crate::partial::PartialMerger`] joins them.

use std::borrow::Cow;

use crate::time::parse_rfc3339;
use crate::{Error, Stream};

/// One physical line of a container log file, in either format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub stream: Stream,
    /// True when more chunks of the same logical line follow.
    pub partial: bool,
    pub message: Cow<'a, [u8]>,
}

/// Parses one CRI line, without its trailing newline.
pub fn parse(line: &[u8]) -> Result<Chunk<'_>, Error> {
    let (timestamp, rest) = split_field(line).ok_or(Error::Cri("missing stream"))?;
    let (stream, rest) = split_field(rest).ok_or(Error::Cri("missing tag"))?;
    // The message may be empty, and then the separating space may be absent.
    let (tag, message) = split_field(rest).unwrap_or((rest, &[][..]));
    let timestamp = std::str::from_utf8(timestamp)
        .ok()
        .and_then(|t| parse_rfc3339(t).ok())
        .ok_or(Error::Cri("first field is not an RFC 3339 timestamp"))?;
    let stream = Stream::parse(stream).ok_or(Error::Cri("stream is neither stdout nor stderr"))?;
    let partial = match tag.split(|&b| b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(Error::Cri("tag is neither P nor F")),
    };
    Ok(Chunk {
        timestamp,
        stream,
        partial,
        message: Cow::Borrowed(message),
    })
}

fn split_field(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = input.iter().position(|&b| b == b' ')?;
    Some((&input[..space], &input[space + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_partial_lines() {
        let c = parse(b"2016-10-06T00:17:09.669794202Z stdout F log content 1").unwrap();
        assert_eq!(c.stream, Stream::Stdout);
        assert!(!c.partial);
        assert_eq!(&*c.message, b"log content 1");
        let c = parse(b"2016-10-06T00:17:09.669794203Z stderr P part").unwrap();
        assert!(c.partial);
        assert_eq!(c.stream, Stream::Stderr);
    }

    #[test]
    fn empty_message_with_and_without_separator() {
        assert!(
            parse(b"2016-10-06T00:17:09Z stdout F ")
                .unwrap()
                .message
                .is_empty()
        );
        assert!(
            parse(b"2016-10-06T00:17:09Z stdout F")
                .unwrap()
                .message
                .is_empty()
        );
    }

    #[test]
    fn message_keeps_inner_spaces_and_tag_extensions() {
        let c = parse(b"2016-10-06T00:17:09Z stdout F:x  two  spaces ").unwrap();
        assert_eq!(&*c.message, b" two  spaces ");
    }

    #[test]
    fn non_utf8_message_is_kept_as_bytes() {
        let c = parse(b"2016-10-06T00:17:09Z stdout F \xff\xfe ok").unwrap();
        assert_eq!(&*c.message, b"\xff\xfe ok");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse(b"hello"), Err(Error::Cri("missing stream")));
        assert_eq!(
            parse(b"notatime stdout F x"),
            Err(Error::Cri("first field is not an RFC 3339 timestamp"))
        );
        assert_eq!(
            parse(b"2016-10-06T00:17:09Z stdin F x"),
            Err(Error::Cri("stream is neither stdout nor stderr"))
        );
        assert_eq!(
            parse(b"2016-10-06T00:17:09Z stdout X x"),
            Err(Error::Cri("tag is neither P nor F"))
        );
    }
}
