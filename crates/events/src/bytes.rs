//! Lossless byte strings from untrusted sources (argv, paths, comm).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

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

    /// The escaped form described on the type.
    pub fn to_escaped(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c == '\\' {
                    out.push_str("\\\\");
                } else {
                    out.push(c);
                }
            }
            for b in chunk.invalid() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
        out
    }

    /// Parses the escaped form; `None` if an escape is malformed.
    pub fn from_escaped(s: &str) -> Option<Self> {
        let mut out = Vec::with_capacity(s.len());
        let bytes = s.as_bytes();
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
                    let hex = s.get(i + 2..i + 4)?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 4;
                }
                _ => return None,
            }
        }
        Some(ByteStr(out))
    }
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
