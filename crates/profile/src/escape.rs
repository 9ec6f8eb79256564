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
use std::fmt::Write as _;

/// Writes `bytes` as a string, losslessly (see the module docs for the scheme).
///
/// Borrowed when `bytes` is valid UTF-8 without a backslash.
pub fn escape_bytes(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        if !s.contains('\\') {
            return Cow::Borrowed(s);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// Reverses [`escape_bytes`]. The error says what is wrong with the input.
pub fn unescape_bytes(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = bytes
                    .get(i + 2..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 4;
                    }
                    None => {
                        return Err(format!("bad `\\x` escape at byte {i}: want two hex digits"))
                    }
                }
            }
            _ => {
                return Err(format!(
                    "unknown escape at byte {i}: only `\\\\` and `\\xHH` are allowed"
                ))
            }
        }
    }
    Ok(out)
}

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
        assert!(unescape_bytes("a\\q")
            .unwrap_err()
            .contains("unknown escape"));
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
