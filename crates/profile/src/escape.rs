//! Lossless text form of kernel bytes (paths, process names, peer names).
//!
//! Scheme (stable, used in the YAML form of profiles):
//! - valid UTF-8 is kept as it is, except a backslash, written `\\`;
//! - every byte that is not part of valid UTF-8 is written `\xHH` (two hex digits);
//! - in trie segments, a literal segment that is exactly `*` or `**` has its first
//!   byte written `\x2a`, so that the bare `*` (wildcard) and `**` (anything below)
//!   markers are never confused with a file of that name.
//!
//! Any other backslash sequence is an error when loading.

use std::borrow::Cow;

// The byte escaping is the event model's (one scheme across events, JSON and
// profiles); this module adds only the wildcard protection of trie segments.
pub use kestrel_events::{escape_bytes, unescape_bytes};

/// Escapes one literal trie segment (protects literal `*` and `**`).
pub(crate) fn escape_segment(bytes: &[u8]) -> Cow<'_, str> {
    match bytes {
        b"*" => Cow::Borrowed("\\x2a"),
        b"**" => Cow::Borrowed("\\x2a*"),
        _ => escape_bytes(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_utf8_without_backslash_is_borrowed() {
        assert!(matches!(escape_bytes(b"/etc/passwd"), Cow::Borrowed(_)));
    }

    #[test]
    fn invalid_bytes_and_backslashes_round_trip() {
        let raw = b"a\\b\xff\xfe/\xc3\xa9z";
        let esc = escape_bytes(raw);
        assert_eq!(esc, "a\\\\b\\xff\\xfe/éz");
        assert_eq!(unescape_bytes(&esc).unwrap(), raw.to_vec());
    }

    #[test]
    fn unknown_escapes_are_rejected_with_a_reason() {
        assert!(unescape_bytes("a\\q").unwrap_err().contains("bad escape"));
        assert!(unescape_bytes("a\\x4")
            .unwrap_err()
            .contains("two hex digits"));
    }

    #[test]
    fn literal_star_segments_do_not_look_like_wildcards() {
        assert_eq!(escape_segment(b"*"), "\\x2a");
        assert_eq!(
            unescape_bytes(&escape_segment(b"**")).unwrap(),
            b"**".to_vec()
        );
    }
}
