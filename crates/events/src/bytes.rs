//! Lossless byte strings from untrusted sources (argv, paths, comm).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Bytes as the kernel gave them: kept exactly, shown lossily.
///
/// Serialised as a string: valid UTF-8 is written as is, except that `\` is
/// written `\\`; every byte that is not part of valid UTF-8 is written `\xNN`.
/// [`ByteStr::from_escaped`] reverses this exactly, so non-UTF-8 argv and paths
/// survive JSON and YAML round trips.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteStr(Vec<u8>);

impl ByteStr {
    /// Wraps bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        ByteStr(bytes.into())
    }

    /// Bytes up to (not including) the first NUL, as C strings are stored.
    pub fn from_c(bytes: &[u8]) -> Self {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        ByteStr(bytes[..end].to_vec())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The text if it is valid UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Lossy text for display (invalid bytes become U+FFFD).
    pub fn to_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// The escaped form described on the type ([`escape_bytes`]).
    pub fn to_escaped(&self) -> String {
        escape_bytes(&self.0).into_owned()
    }

    /// Parses the escaped form ([`unescape_bytes`]); `None` if an escape is malformed.
    pub fn from_escaped(s: &str) -> Option<Self> {
        unescape_bytes(s).ok().map(ByteStr)
    }
}

/// Writes `bytes` as a string, losslessly: valid UTF-8 as it is except `\`
/// written `\\`, every byte that is not valid UTF-8 written `\xNN`.
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
            // writing to a String cannot fail
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// Reverses [`escape_bytes`]; the error says what is wrong and where.
pub fn unescape_bytes(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let v = bytes
                    .get(i + 2..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad `\\x` escape at byte {i}: want two hex digits"))?;
                out.push(v);
                i += 4;
            }
            _ => {
                return Err(format!(
                    "bad escape at byte {i}: only `\\\\` and `\\xNN` are allowed"
                ))
            }
        }
    }
    Ok(out)
}

impl From<&str> for ByteStr {
    fn from(s: &str) -> Self {
        ByteStr(s.as_bytes().to_vec())
    }
}

impl From<Vec<u8>> for ByteStr {
    fn from(v: Vec<u8>) -> Self {
        ByteStr(v)
    }
}

impl fmt::Display for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_lossy())
    }
}

impl fmt::Debug for ByteStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_escaped())
    }
}

impl Serialize for ByteStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_escaped())
    }
}

impl<'de> Deserialize<'de> for ByteStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ByteStr::from_escaped(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("malformed escape in {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn non_utf8_bytes_are_escaped_and_restored() {
        let b = ByteStr::new(b"a\xffb\\c".to_vec());
        assert_eq!(b.to_escaped(), "a\\xffb\\\\c");
        assert_eq!(ByteStr::from_escaped(&b.to_escaped()), Some(b));
    }

    #[test]
    fn from_c_stops_at_the_first_nul() {
        assert_eq!(ByteStr::from_c(b"sh\0garbage").as_bytes(), b"sh");
        assert_eq!(ByteStr::from_c(b"no-nul").as_bytes(), b"no-nul");
    }

    #[test]
    fn malformed_escapes_are_rejected() {
        assert_eq!(ByteStr::from_escaped("\\q"), None);
        assert_eq!(ByteStr::from_escaped("\\x4"), None);
        assert_eq!(ByteStr::from_escaped("\\xzz"), None);
    }

    proptest! {
        #[test]
        fn any_bytes_survive_the_escaped_form(v in proptest::collection::vec(any::<u8>(), 0..64)) {
            let b = ByteStr::new(v);
            prop_assert_eq!(ByteStr::from_escaped(&b.to_escaped()), Some(b));
        }
    }
}
