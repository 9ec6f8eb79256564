//! How raw fields become trie segments: bounded length, canonical file paths.

use crate::digest::stable_hash;
use crate::words::{le64, le_upto8};

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
#[inline]
pub(crate) fn path_segments(path: &[u8]) -> PathSegments<'_> {
    PathSegments {
        path,
        marker: path.first() != Some(&b'/'),
        start: 0,
        base: 0,
        ends: segment_ends(path, 0),
    }
}

/// Iterator of [`path_segments`]. Finds the separators 64 bytes at a time.
#[derive(Debug, Clone)]
pub(crate) struct PathSegments<'a> {
    path: &'a [u8],
    /// The [`RELATIVE`] marker is still to come.
    marker: bool,
    /// Start of the segment being scanned.
    start: usize,
    /// Offset of the block that `ends` describes.
    base: usize,
    /// Bit `i` set: byte `base + i` is a not yet consumed `/`, or the end of
    /// the path.
    ends: u64,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// Bit `i` set for each byte `i` of `w` that is `/` (exact: no false positives
/// from borrows).
#[inline(always)]
fn slash_bits(w: u64) -> u64 {
    byte_bits(w, b'/')
}

/// Bit `i` set for each byte `i` of `w` that is `c` (`c` not zero: the zero
/// padding of a short word never matches).
#[inline(always)]
fn byte_bits(w: u64, c: u8) -> u64 {
    let x = w ^ (ONES * u64::from(c));
    let high = !(((x & LOW7) + LOW7) | x | LOW7);
    // Gather the eight 0x80 bits into the top byte (no carries: every
    // product bit lands on its own position), then down to bits 0..8.
    ((high >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
}

/// Segment ends in the 64 bytes of `path` from `base`: the `/` bytes, and the
/// end of the path when it falls inside the block.
#[inline(always)]
fn segment_ends(path: &[u8], base: usize) -> u64 {
    let len = path.len();
    let block = path.get(base..len.min(base + 64)).unwrap_or_default();
    let mut bits = 0u64;
    let mut k = 0;
    let mut words = block.chunks_exact(8);
    for w in &mut words {
        bits |= slash_bits(le64(w, 0)) << k;
        k += 8;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        // A zero pad byte is not `/`.
        bits |= slash_bits(le_upto8(tail)) << k;
    }
    if len - base < 64 {
        bits |= 1 << (len - base);
    }
    bits
}

/// Whether `path` is absolute, at most 64 bytes, and certainly canonical: no
/// empty (`//`, trailing `/`) and no `.` segments. Its bytes are then exactly
/// its [`path_segments`] joined with a leading `/` each.
///
/// One mask covers `/` and `.` (0x2f and 0x2e differ in the low bit only); two
/// neighbours in it (`//`, `/.`, `./`, `..`) send the path to the splitting
/// hash, which is always right: conservative for names like `/.config`.
#[inline(always)]
pub(crate) fn is_short_canonical_absolute(path: &[u8]) -> bool {
    let len = path.len();
    if len == 0 || len > 64 || path[0] != b'/' || path[len - 1] == b'/' {
        return false;
    }
    let mut marks = 0u64;
    let mut k = 0;
    let mut words = path.chunks_exact(8);
    for w in &mut words {
        marks |= byte_bits(le64(w, 0) | ONES, b'/') << k;
        k += 8;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        // the zero padding becomes 0x01: never `/` or `.`
        marks |= byte_bits(le_upto8(tail) | ONES, b'/') << k;
    }
    marks & (marks >> 1) == 0
}

impl PathSegments<'_> {
    /// Whether the [`RELATIVE`] marker is still to come.
    #[inline(always)]
    pub(crate) fn take_marker(&mut self) -> bool {
        std::mem::take(&mut self.marker)
    }

    /// The next canonical segment (ignoring the marker) as a byte range of
    /// the path.
    #[inline(always)]
    pub(crate) fn next_range(&mut self) -> Option<(usize, usize)> {
        loop {
            while self.ends == 0 {
                self.base += 64;
                if self.base > self.path.len() {
                    return None;
                }
                self.ends = segment_ends(self.path, self.base);
            }
            let end = self.base + self.ends.trailing_zeros() as usize;
            self.ends &= self.ends - 1;
            let start = self.start;
            self.start = end + 1;
            if start < end && !is_dot(self.path, start, end) {
                return Some((start, end));
            }
        }
    }
}

/// Whether `path[start..end]` is `.`.
#[inline(always)]
fn is_dot(path: &[u8], start: usize, end: usize) -> bool {
    end == start + 1 && path.get(start) == Some(&b'.')
}

impl<'a> Iterator for PathSegments<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.take_marker() {
            return Some(RELATIVE);
        }
        let (start, end) = self.next_range()?;
        self.path.get(start..end)
    }
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

    /// The splitting as first written, for comparison.
    fn reference_segments(path: &[u8]) -> Vec<&[u8]> {
        let relative = path.first() != Some(&b'/');
        let marker = relative.then_some(RELATIVE);
        marker
            .into_iter()
            .chain(
                path.split(|&b| b == b'/')
                    .filter(|s| !s.is_empty() && *s != b"."),
            )
            .collect()
    }

    #[test]
    fn word_at_a_time_splitting_equals_the_byte_at_a_time_reference() {
        let alphabet = [b'/', b'.', b'a', b'\xff', 0];
        // Every path of up to 7 bytes over the alphabet, then longer ones
        // crossing word boundaries.
        for len in 0..=7u32 {
            for code in 0..5usize.pow(len) {
                let mut c = code;
                let path: Vec<u8> = (0..len)
                    .map(|_| {
                        let b = alphabet[c % 5];
                        c /= 5;
                        b
                    })
                    .collect();
                let fast: Vec<&[u8]> = path_segments(&path).collect();
                assert_eq!(fast, reference_segments(&path), "{path:?}");
            }
        }
        for path in [
            &b"/usr/lib/x86_64-linux-gnu/file-17.dat"[..],
            b"////////////////////////////////",
            b"/aaaaaaa/bbbbbbb/ccccccc/ddddddd/",
            b"./././././././././.",
            b"relative/../path/with/a/segment/longer/than/eight/bytes/xxxxxxxxxxxxxxxxxxxxxx",
            b"/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z",
        ] {
            let fast: Vec<&[u8]> = path_segments(path).collect();
            assert_eq!(fast, reference_segments(path), "{path:?}");
        }
        // Separators and ends on both sides of the 64-byte blocks.
        for len in 60..=200 {
            for slash in [0, 1, 62, 63, 64, 65, 127, 128, 129, len - 1] {
                let mut path: Vec<u8> = (0..len)
                    .map(|i| if i % 9 == 4 { b'/' } else { b'q' })
                    .collect();
                if slash < len {
                    path[slash] = b'/';
                }
                let fast: Vec<&[u8]> = path_segments(&path).collect();
                assert_eq!(fast, reference_segments(&path), "{len} {slash}");
            }
        }
        let cloned: Vec<&[u8]> = path_segments(b"./x/y").clone().collect();
        assert_eq!(cloned, reference_segments(b"./x/y"));
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
