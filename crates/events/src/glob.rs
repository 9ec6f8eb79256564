//! The one glob syntax of Kestrel: rule `glob:` operators and the
//! container-id patterns of configured workloads both use it.
//!
//! Syntax: `*` any run of characters except `/`; `**` any run including `/`
//! (`**/` also matches nothing, so `/etc/**/x` matches `/etc/x`); `?` one
//! character except `/`; `[abc]`, `[a-z]`, `[!abc]` character classes;
//! `{a,b}` alternatives; `\` escapes the next character.

use std::fmt;

/// A glob that cannot be compiled, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid glob {glob:?}: {reason}")]
pub struct GlobError {
    /// The pattern as written.
    pub glob: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A compiled glob: matches whole strings.
#[derive(Clone)]
pub struct Glob {
    source: String,
    re: regex::Regex,
}

impl Glob {
    /// Compiles `glob`, or says what is wrong with it.
    pub fn new(glob: &str) -> Result<Self, GlobError> {
        let re = regex::Regex::new(&to_regex(glob)?).map_err(|_| GlobError {
            glob: glob.to_string(),
            reason: "a character class is invalid (a reversed range?) or the pattern is too large",
        })?;
        Ok(Glob {
            source: glob.to_string(),
            re,
        })
    }

    /// Whether the whole of `text` matches.
    pub fn is_match(&self, text: &str) -> bool {
        self.re.is_match(text)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.source)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Glob {}

impl std::str::FromStr for Glob {
    type Err = GlobError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Glob::new(s)
    }
}

impl TryFrom<String> for Glob {
    type Error = GlobError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Glob::new(&s)
    }
}

impl From<Glob> for String {
    fn from(g: Glob) -> String {
        g.source
    }
}

impl serde::Serialize for Glob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for Glob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Glob::new(&s).map_err(serde::de::Error::custom)
    }
}

/// Translates a glob into an anchored regex (for callers that compile many
/// patterns into one set), or says what is wrong.
pub fn to_regex(glob: &str) -> Result<String, GlobError> {
    let err = |reason| GlobError {
        glob: glob.to_string(),
        reason,
    };
    let mut out = String::with_capacity(glob.len() * 2 + 8);
    out.push('^');
    let chars: Vec<char> = glob.chars().collect();
    let mut i = 0;
    let mut brace_depth = 0usize;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' => {
                if chars.get(i + 1) == Some(&'*') {
                    if chars.get(i + 2) == Some(&'/') {
                        out.push_str("(?:.*/)?");
                        i += 3;
                    } else {
                        out.push_str(".*");
                        i += 2;
                    }
                    continue;
                }
                out.push_str("[^/]*");
            }
            '?' => out.push_str("[^/]"),
            '[' => {
                let close = chars[i + 1..]
                    .iter()
                    .enumerate()
                    .skip(1)
                    .find(|(_, ch)| **ch == ']')
                    .map(|(k, _)| i + 1 + k)
                    .ok_or_else(|| err("unclosed '['"))?;
                out.push('[');
                let mut j = i + 1;
                if chars[j] == '!' || chars[j] == '^' {
                    out.push('^');
                    j += 1;
                }
                for ch in &chars[j..close] {
                    if matches!(ch, '\\' | '[' | ']' | '&' | '~') {
                        out.push('\\');
                    }
                    out.push(*ch);
                }
                out.push(']');
                i = close;
            }
            '{' => {
                brace_depth += 1;
                out.push_str("(?:");
            }
            '}' if brace_depth > 0 => {
                brace_depth -= 1;
                out.push(')');
            }
            ',' if brace_depth > 0 => out.push('|'),
            '\\' => {
                i += 1;
                let next = chars.get(i).ok_or_else(|| err("trailing '\\'"))?;
                out.push_str(&regex::escape(&next.to_string()));
            }
            _ => {
                let mut buf = [0u8; 4];
                out.push_str(&regex::escape(c.encode_utf8(&mut buf)));
            }
        }
        i += 1;
    }
    if brace_depth > 0 {
        return Err(err("unclosed '{'"));
    }
    out.push('$');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{to_regex as glob_to_regex, Glob};

    fn matches(glob: &str, s: &str) -> bool {
        Glob::new(glob).unwrap().is_match(s)
    }

    #[test]
    fn a_single_star_stays_within_one_path_component() {
        assert!(matches("/tmp/*", "/tmp/x"));
        assert!(!matches("/tmp/*", "/tmp/a/b"));
    }

    #[test]
    fn a_double_star_crosses_components_and_may_match_nothing() {
        assert!(matches("/tmp/**", "/tmp/a/b"));
        assert!(matches("/home/**/.ssh/id_*", "/home/u/.ssh/id_rsa"));
        assert!(matches("**/.ssh/id_*", "/root/.ssh/id_ed25519"));
        assert!(matches("/etc/**/x", "/etc/x"));
    }

    #[test]
    fn classes_alternatives_and_escapes_work() {
        assert!(matches("/usr/{bin,sbin}/ab[!c]", "/usr/sbin/abd"));
        assert!(!matches("/usr/{bin,sbin}/ab[!c]", "/usr/sbin/abc"));
        assert!(matches("a\\*b", "a*b"));
        assert!(!matches("a\\*b", "axb"));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "axb"));
    }

    #[test]
    fn malformed_globs_are_errors() {
        assert!(glob_to_regex("[abc").is_err());
        assert!(glob_to_regex("{a,b").is_err());
        assert!(glob_to_regex("a\\").is_err());
        let e = Glob::new("web-[0-9").unwrap_err();
        assert_eq!(e.to_string(), "invalid glob \"web-[0-9\": unclosed '['");
    }

    #[test]
    fn globs_round_trip_through_serde_and_reject_bad_patterns() {
        let g: Glob = serde_json::from_str("\"web-*\"").unwrap();
        assert!(g.is_match("web-1") && !g.is_match("db-1"));
        assert_eq!(serde_json::to_string(&g).unwrap(), "\"web-*\"");
        let e = serde_json::from_str::<Glob>("\"{a,b\"").unwrap_err();
        assert!(e.to_string().contains("unclosed '{'"), "{e}");
    }
}
