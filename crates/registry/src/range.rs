//! HTTP `Range` requests on blobs (RFC 9110 §14), single range only.

use std::ops::Range;

/// A satisfiable byte range, end exclusive.
pub type ByteRange = Range<u64>;

/// What a `Range` header asks of a blob of a known size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: serve the whole blob (RFC 9110 lets a server ignore a
    /// malformed or multi-range header).
    Whole,
    Partial(ByteRange),
    Unsatisfiable,
}

impl RangeRequest {
    pub fn parse(header: Option<&str>, size: u64) -> Self {
        let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
            return RangeRequest::Whole;
        };
        if spec.contains(',') {
            return RangeRequest::Whole;
        }
        let Some((first, last)) = spec.trim().split_once('-') else {
            return RangeRequest::Whole;
        };
        let number = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
        };
        match (first, last) {
            ("", suffix) => match number(suffix) {
                None => RangeRequest::Whole,
                Some(0) => RangeRequest::Unsatisfiable,
                Some(_) if size == 0 => RangeRequest::Unsatisfiable,
                Some(n) => RangeRequest::Partial(size.saturating_sub(n)..size),
            },
            (first, last) => {
                let Some(start) = number(first) else {
                    return RangeRequest::Whole;
                };
                let end = match last {
                    "" => size,
                    last => match number(last) {
                        Some(end) if end >= start => end.saturating_add(1).min(size),
                        _ => return RangeRequest::Whole,
                    },
                };
                if start >= size {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Partial(start..end)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::{self, *};

    fn parse(h: &str, size: u64) -> RangeRequest {
        RangeRequest::parse(Some(h), size)
    }

    #[test]
    fn ranges() {
        assert_eq!(RangeRequest::parse(None, 10), Whole);
        assert_eq!(parse("bytes=0-0", 10), Partial(0..1));
        assert_eq!(parse("bytes=2-5", 10), Partial(2..6));
        assert_eq!(parse("bytes=2-", 10), Partial(2..10));
        assert_eq!(parse("bytes=5-100", 10), Partial(5..10));
        assert_eq!(parse("bytes=-3", 10), Partial(7..10));
        assert_eq!(parse("bytes=-30", 10), Partial(0..10));
        assert_eq!(parse("bytes=10-", 10), Unsatisfiable);
        assert_eq!(parse("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(parse("bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse("bytes=5-2", 10), Whole);
        assert_eq!(parse("bytes=0-1,4-5", 10), Whole);
        assert_eq!(parse("items=0-1", 10), Whole);
        assert_eq!(parse("bytes=a-b", 10), Whole);
        assert_eq!(parse("bytes=+1-2", 10), Whole);
    }
}
