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

use crate::ByteStr;
use std::borrow::Cow;

/// The canonical path of `path` as the process meant it: a relative path
/// joined to `dir` (the directory the kernel side resolved for it, see
/// `FileOp::dir`) first, then [`canonical_path`]. Without a `dir` a
/// relative path stays relative.
pub fn resolved_path<'a>(dir: Option<&ByteStr>, path: &'a [u8]) -> Cow<'a, [u8]> {
    match dir {
        Some(d) if path.first() != Some(&b'/') => {
            let mut joined = Vec::with_capacity(d.len() + 1 + path.len());
            joined.extend_from_slice(d.as_bytes());
            joined.push(b'/');
            joined.extend_from_slice(path);
            Cow::Owned(canonical_path(&joined).into_owned())
        }
        _ => canonical_path(path),
    }
}

/// The directory a kernel dir tail names: its components from the leaf up,
/// each NUL-terminated (`b"x\0tmp\0"` is `/tmp/x`, an empty tail `/`).
/// `None` when a component is empty, `.`, `..` or holds a `/`, which a
/// dentry name never does: the tail was damaged, and a guess would misname
/// the file.
pub fn dir_from_tail(tail: &[u8]) -> Option<ByteStr> {
    let body = match tail.split_last() {
        None => return Some(ByteStr::new(b"/".to_vec())),
        Some((0, body)) => body,
        Some(_) => return None,
    };
    let mut out = Vec::with_capacity(tail.len() + 1);
    for part in body.split(|&b| b == 0).rev() {
        if part.is_empty() || part == b"." || part == b".." || part.contains(&b'/') {
            return None;
        }
        out.push(b'/');
        out.extend_from_slice(part);
    }
    Some(ByteStr::new(out))
}

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

    #[test]
    fn a_relative_path_is_named_from_the_directory_the_kernel_resolved() {
        let tmp = ByteStr::new(b"/tmp");
        let r = |dir: Option<&ByteStr>, p: &str| {
            String::from_utf8(resolved_path(dir, p.as_bytes()).into_owned()).unwrap()
        };
        assert_eq!(r(Some(&tmp), "../etc/shadow"), "/etc/shadow");
        assert_eq!(r(Some(&tmp), "./miner"), "/tmp/miner");
        assert_eq!(r(Some(&ByteStr::new(b"/")), "etc//shadow"), "/etc/shadow");
        // an absolute path ignores the directory; no directory keeps it relative
        assert_eq!(r(Some(&tmp), "/etc/passwd"), "/etc/passwd");
        assert_eq!(r(None, "./x/../shadow"), "shadow");
        // AT_EMPTY_PATH: the directory itself
        assert_eq!(r(Some(&tmp), ""), "/tmp");
    }

    #[test]
    fn dir_tails_read_leaf_first_and_damaged_ones_are_refused() {
        let d = |t: &[u8]| dir_from_tail(t).map(|b| b.to_escaped());
        assert_eq!(d(b"x\0tmp\0").as_deref(), Some("/tmp/x"));
        assert_eq!(d(b"etc\0").as_deref(), Some("/etc"));
        assert_eq!(d(b"").as_deref(), Some("/"));
        // not NUL-terminated (cut short), empty or dot components, a slash
        assert_eq!(d(b"x\0tm"), None);
        assert_eq!(d(b"x\0\0tmp\0"), None);
        assert_eq!(d(b"..\0tmp\0"), None);
        assert_eq!(d(b"a/b\0"), None);
        // non-UTF-8 names are kept byte for byte
        assert_eq!(
            dir_from_tail(b"\xff\0data\0").unwrap().as_bytes(),
            b"/data/\xff"
        );
    }

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
