//! How a glob pattern becomes an anchored regular expression.
//!
//! Syntax: `*` any run of characters except `/`; `**` any run including `/`
//! (`**/` also matches nothing, so `/etc/**/x` matches `/etc/x`); `?` one
//! character except `/`; `[abc]`, `[a-z]`, `[!abc]` character classes;
//! `{a,b}` alternatives; `\` escapes the next character.

/// Translates a glob into an anchored regex, or says what is wrong.
pub(crate) fn glob_to_regex(glob: &str) -> Result<String, String> {
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
                    .ok_or_else(|| format!("unclosed '[' in glob {glob:?}"))?;
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
                let next = chars
                    .get(i)
                    .ok_or_else(|| format!("trailing '\\' in glob {glob:?}"))?;
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
        return Err(format!("unclosed '{{' in glob {glob:?}"));
    }
    out.push('$');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::glob_to_regex;

    fn matches(glob: &str, s: &str) -> bool {
        regex::Regex::new(&glob_to_regex(glob).unwrap())
            .unwrap()
            .is_match(s)
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
    }
}
