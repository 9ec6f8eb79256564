//! How raw fields become trie segments: bounded length, canonical file paths.

use crate::digest::stable_hash;

/// Longest segment kept verbatim (Linux `NAME_MAX`).
pub(crate) const MAX_SEGMENT: usize = 255;
const HASH_TAIL: usize = 2 + 16; // "~#" + 16 hex digits
const KEPT_PREFIX: usize = MAX_SEGMENT - HASH_TAIL;

/// Stack buffer for a truncated segment key.
pub(crate) type SegBuf = [u8; MAX_SEGMENT];

/// The key of a raw segment: itself when short enough, otherwise its first bytes,
/// `~#` and 16 hex digits of a stable hash of the whole segment. Never allocates.
#[inline]
pub(crate) fn segment_key<'a>(raw: &'a [u8], buf: &'a mut SegBuf) -> &'a [u8] {
    if raw.len() <= MAX_SEGMENT {
        return raw;
    }
    buf[..KEPT_PREFIX].copy_from_slice(&raw[..KEPT_PREFIX]);
    buf[KEPT_PREFIX] = b'~';
    buf[KEPT_PREFIX + 1] = b'#';
    let h = stable_hash(0, raw);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..16 {
        buf[KEPT_PREFIX + 2 + i] = HEX[((h >> (60 - 4 * i)) & 0xf) as usize];
    }
    &buf[..]
}

/// Marker segment that starts a relative path.
pub(crate) const RELATIVE: &[u8] = b".";

/// Canonical segments of a file path: empty and `.` segments dropped; a relative
/// path starts with the [`RELATIVE`] marker. `..` is kept (no symlink resolution).
pub(crate) fn path_segments(path: &[u8]) -> impl Iterator<Item = &[u8]> + Clone {
    let relative = path.first() != Some(&b'/');
    let marker = relative.then_some(RELATIVE);
    marker.into_iter().chain(
        path.split(|&b| b == b'/')
            .filter(|s| !s.is_empty() && *s != b"."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_segments_are_their_own_key() {
        let mut buf = [0; MAX_SEGMENT];
        assert_eq!(segment_key(b"passwd", &mut buf), b"passwd");
    }

    #[test]
    fn long_segments_keep_a_prefix_and_a_hash_of_the_whole() {
        let a = vec![b'a'; 4096];
        let mut b = a.clone();
        b[4000] = b'b';
        let (mut ba, mut bb) = ([0; MAX_SEGMENT], [0; MAX_SEGMENT]);
        let ka = segment_key(&a, &mut ba).to_vec();
        let kb = segment_key(&b, &mut bb).to_vec();
        assert_eq!(ka.len(), MAX_SEGMENT);
        assert_ne!(ka, kb);
        assert_eq!(&ka[..KEPT_PREFIX], &a[..KEPT_PREFIX]);
    }

    #[test]
    fn paths_are_split_canonically() {
        let segs: Vec<&[u8]> = path_segments(b"/etc//./nginx/").collect();
        assert_eq!(segs, vec![&b"etc"[..], b"nginx"]);
        let segs: Vec<&[u8]> = path_segments(b"./a/../b").collect();
        assert_eq!(segs, vec![&b"."[..], b"a", b"..", b"b"]);
        assert_eq!(path_segments(b"/").count(), 0);
        assert_eq!(path_segments(b"").collect::<Vec<_>>(), vec![&b"."[..]]);
    }
}
