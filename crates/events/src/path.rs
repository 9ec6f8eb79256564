//! The canonical spelling of a path, so that `/etc//shadow`,
//! `/etc/./shadow` and `/tmp/../etc/shadow` are all `/etc/shadow` to the
//! profiles and the rules.
//!
//! Lexical only: `//` becomes `/`, `.` components go, `..` removes the
//! component before it (and stops at `/`: `/../etc` is `/etc`), a trailing
//! `/` goes. Symbolic links are not followed (the kernel side reports the
//! name the process asked for, and following links needs the process's view
//! of the filesystem). A relative path that the kernel side could not
//! resolve against the working directory stays relative, normalised the same
//! way, with leading `..` kept (`a/../../b` is `../b`). Callers keep the raw
//! spelling as evidence when it differs.

use std::borrow::Cow;

/// The canonical form of `path` (see the module docs); borrowed when it is
/// already canonical, which is the common case.
pub fn canonical_path(path: &[u8]) -> Cow<'_, [u8]> {
    if is_canonical(path) {
        return Cow::Borrowed(path);
    }
    let absolute = path.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => match parts.last() {
                Some(&p) if p != b".." => {
                    parts.pop();
                }
                // above the root is the root; a relative path keeps its `..`
                _ if absolute => {}
                _ => parts.push(part),
            },
            _ => parts.push(part),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    if absolute {
        out.push(b'/');
    }
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(p);
    }
    if out.is_empty() {
        out.push(b'.');
    }
    Cow::Owned(out)
}

/// No empty, `.` or `..` component and no trailing `/` (`/` itself is fine).
fn is_canonical(path: &[u8]) -> bool {
    if path.is_empty() {
        return false;
    }
    if path == b"/" {
        return true;
    }
    let inner = path.strip_prefix(b"/").unwrap_or(path);
    inner
        .split(|&b| b == b'/')
        .all(|p| !p.is_empty() && p != b"." && p != b"..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(p: &str) -> String {
        String::from_utf8(canonical_path(p.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn other_spellings_of_a_sensitive_file_become_its_name() {
        for p in [
            "/etc/shadow",
            "/etc//shadow",
            "//etc/shadow",
            "/etc/./shadow",
            "/tmp/../etc/shadow",
            "/../etc/shadow",
            "/etc/ssl/../shadow",
            "/./etc/./shadow/",
        ] {
            assert_eq!(c(p), "/etc/shadow", "{p}");
        }
    }

    #[test]
    fn canonical_paths_are_borrowed_and_relative_ones_stay_relative() {
        assert!(matches!(canonical_path(b"/usr/bin/sh"), Cow::Borrowed(_)));
        assert!(matches!(canonical_path(b"/"), Cow::Borrowed(_)));
        assert!(matches!(canonical_path(b"run/x.pid"), Cow::Borrowed(_)));
        assert_eq!(c("/"), "/");
        assert_eq!(c("//"), "/");
        assert_eq!(c("/.."), "/");
        assert_eq!(c("./x"), "x");
        assert_eq!(c("a/../../b"), "../b");
        assert_eq!(c("."), ".");
        assert_eq!(c(""), ".");
        assert_eq!(c("a/.."), ".");
    }

    #[test]
    fn non_utf8_bytes_are_kept() {
        assert_eq!(
            canonical_path(b"/tmp//\xff\xfe/./x").as_ref(),
            b"/tmp/\xff\xfe/x"
        );
    }

    proptest! {
        #[test]
        fn canonical_is_idempotent_and_has_no_dot_components(
            parts in proptest::collection::vec(
                prop_oneof!["", ".", "..", "[a-z]{1,3}", "\\.\\.x"], 0..8),
            absolute in any::<bool>(),
        ) {
            let raw = format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"));
            // an empty first part makes a relative spelling absolute
            let absolute = raw.starts_with('/');
            let once = canonical_path(raw.as_bytes()).into_owned();
            let twice = canonical_path(&once).into_owned();
            prop_assert_eq!(&twice, &once);
            prop_assert_eq!(once.first() == Some(&b'/'), absolute);
            let s = String::from_utf8(once).unwrap();
            prop_assert!(!s.contains("//"));
            // `.` alone is the empty relative path
            prop_assert!(s == "." || !s.split('/').any(|p| p == "."));
            if absolute {
                prop_assert!(!s.split('/').any(|p| p == ".."));
            }
        }
    }
}
