//! The compact digest of a profile that agents use as an edge filter.
//!
//! A digest is a set of 64-bit keyed hashes, one per known concrete path
//! (process path plus normalised arguments, file path, network path). The agent
//! computes the same hash from an event's fields with [`Digest::event_hash`] (or
//! the [`DigestHasher`] it is built on) and drops events whose hash is in the set.
//! Patterns (wildcards, CIDRs, `**`) are not in the digest: events they match are
//! forwarded and matched by the profile itself, so the filter is conservative.
//!
//! The hash ("kestrel-digest-v3") is stable across builds and platforms: the
//! event's fields, framed (each field's length is folded into its last
//! 16-byte block), go through SipHash-1-3, a keyed pseudo-random function,
//! with a 128-bit key derived from the digest's seed and the activity class.
//! Whoever does not know the seed cannot aim a command line or a path at a
//! known entry's hash: a collision would make attacker activity invisible at
//! the edge, so the filter's hash must be keyed, not merely fast. The seed
//! comes from the operating system's random source at the operator's start
//! and never leaves the operator and its agents.
//!
//! (v2, a multiply-fold per block, was faster but not a PRF: its per-block
//! mixing is linear enough that structure in the input survives it.)
//! Agents and operators must run the same version: the digest travels as
//! plain hashes. An agent of another version matches nothing and forwards
//! everything, which is safe.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use crate::event::{Access, ActivityClass, Direction, Event, Peer, Protocol};
use crate::segment::{
    is_short_canonical_absolute, path_segments, segment_key, SegBuf, MAX_SEGMENT, RELATIVE,
};
use crate::words::{le64, le_upto16};

const K0: u64 = 0x9e37_79b9_7f4a_7c15;
const K1: u64 = 0xc2b2_ae3d_27d4_eb4f;
const K2: u64 = 0x1656_67b1_9e37_79f9;

#[inline(always)]
fn mix(a: u64, b: u64) -> u64 {
    let r = u128::from(a).wrapping_mul(u128::from(b));
    (r as u64) ^ ((r >> 64) as u64)
}

/// Stable 64-bit hash of one byte string: the fast multiply-fold of the
/// profile's own keys (argument interning, long segment keys, shape
/// buckets), which are stored in profiles and so must never change. Not the
/// edge filter's hash ([`DigestHasher`]).
pub(crate) fn stable_hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = FieldHasher::keyed(seed ^ K0, 0);
    text(&mut h, bytes);
    h.finish()
}

/// 16-byte blocks in, one hash out.
trait Blocks {
    fn absorb(&mut self, a: u64, b: u64);
}

/// Adds a byte field (16 bytes per block; the last block carries the
/// field's length, so fields are framed).
#[inline(always)]
fn text<B: Blocks>(h: &mut B, bytes: &[u8]) {
    let len = bytes.len();
    let mut at = 0;
    while len - at >= 16 {
        h.absorb(le64(bytes, at), le64(bytes, at + 8));
        at += 16;
    }
    let rest = &bytes[at..];
    // The tail, zero-padded to 16 bytes, read without a copy.
    let (a, b) = le_upto16(rest);
    // At most 15 tail bytes: the top byte of `b` is free for the tail length;
    // the whole length is folded into `a`.
    h.absorb(
        a ^ (len as u64).rotate_left(40) ^ K2,
        b ^ ((rest.len() as u64) << 56),
    );
}

/// The multiply-fold of [`stable_hash`]: every block hashed on its own,
/// keyed by its position, and summed.
#[derive(Debug, Clone, Copy)]
struct FieldHasher {
    acc: u64,
    key: u64,
    key2: u64,
}

impl FieldHasher {
    fn keyed(seed: u64, tag: u64) -> Self {
        FieldHasher {
            acc: 0,
            key: mix(seed ^ K0, K1 ^ tag),
            key2: mix(seed ^ K1, K2 ^ tag),
        }
    }

    fn finish(&self) -> u64 {
        // the final key encodes the number of blocks
        let s = mix(self.acc ^ K2, (self.key ^ K0) | 1);
        s ^ (s >> 31)
    }
}

impl Blocks for FieldHasher {
    #[inline(always)]
    fn absorb(&mut self, a: u64, b: u64) {
        self.acc = self.acc.wrapping_add(mix(a ^ self.key, b ^ self.key2));
        self.key = self.key.wrapping_add(K2);
    }
}

/// Streaming builder of digest hashes (the kestrel-digest-v3 hash):
/// SipHash-1-3 over the framed fields.
///
/// Fields are framed (tagged and length-terminated), so `["ab","c"]` and
/// `["a","bc"]` hash differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestHasher {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
    /// 8-byte words absorbed.
    words: u64,
}

impl Blocks for DigestHasher {
    #[inline(always)]
    fn absorb(&mut self, a: u64, b: u64) {
        self.word(a);
        self.word(b);
    }
}

impl DigestHasher {
    /// Starts a hash for one activity class under `seed`.
    #[inline]
    pub fn new(seed: u64, class: ActivityClass) -> Self {
        let tag = match class {
            ActivityClass::Process => 1,
            ActivityClass::File => 2,
            ActivityClass::Network => 3,
        };
        Self::keyed(seed, tag)
    }

    /// The SipHash key `(k0, k1)` of one seed and class: 128 bits spread
    /// from the seed (once per digest, not per event).
    #[inline(always)]
    fn keyed(seed: u64, tag: u64) -> Self {
        Self::with_keys(mix(seed ^ K0, K1 ^ tag), mix(seed ^ K1, K2 ^ tag))
    }

    /// SipHash's initial state for the key `(k0, k1)`.
    #[inline(always)]
    const fn with_keys(k0: u64, k1: u64) -> Self {
        DigestHasher {
            v0: k0 ^ 0x736f_6d65_7073_6575,
            v1: k1 ^ 0x646f_7261_6e64_6f6d,
            v2: k0 ^ 0x6c79_6765_6e65_7261,
            v3: k1 ^ 0x7465_6462_7974_6573,
            words: 0,
        }
    }

    #[inline(always)]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13) ^ self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16) ^ self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21) ^ self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17) ^ self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    /// One 8-byte message word (one compression round: SipHash-1-3).
    #[inline(always)]
    fn word(&mut self, m: u64) {
        self.v3 ^= m;
        self.round();
        self.v0 ^= m;
        self.words += 1;
    }

    /// Adds a byte field (the last 16-byte block carries the field's
    /// length, so fields are framed).
    #[inline(always)]
    pub fn text(&mut self, bytes: &[u8]) {
        text(self, bytes);
    }

    /// Adds an IP address field.
    #[inline]
    pub fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => self.absorb(u64::from(u32::from(a)), 0x0004 << 56),
            IpAddr::V6(a) => {
                let v = u128::from(a);
                self.absorb(v as u64, (v >> 64) as u64);
                self.absorb(0, 0x0006 << 56);
            }
        }
    }

    /// Adds a trie segment as the profile keys it (long segments truncated).
    #[inline(always)]
    pub fn segment(&mut self, raw: &[u8]) {
        if raw.len() <= MAX_SEGMENT {
            self.text(raw);
        } else {
            self.long_segment(raw);
        }
    }

    #[cold]
    #[inline(never)]
    fn long_segment(&mut self, raw: &[u8]) {
        let mut buf: SegBuf = [0; MAX_SEGMENT];
        self.text(segment_key(raw, &mut buf));
    }

    /// Adds a field of at most 8 bytes given as its little-endian word (the
    /// same hash as [`DigestHasher::text`] of those bytes).
    #[inline(always)]
    fn short(&mut self, (word, len): (u64, u64)) {
        self.absorb(word ^ len.rotate_left(40) ^ K2, len << 56);
    }

    /// Adds a file path as the profile keys it: one text field holding its
    /// canonical segments (see [`path_segments`]; long ones by their
    /// [`segment_key`]), each preceded by `/`. A short path that is already
    /// canonical is exactly that text, so it is hashed without splitting.
    #[inline]
    pub(crate) fn path(&mut self, path: &[u8]) {
        if is_short_canonical_absolute(path) {
            self.text(path);
        } else {
            self.split_path(path);
        }
    }

    #[inline(never)]
    fn split_path(&mut self, path: &[u8]) {
        let mut s = TextStream::new(*self);
        let mut segs = path_segments(path);
        if segs.take_marker() {
            s.feed(b"/");
            s.feed(RELATIVE);
        }
        while let Some((start, end)) = segs.next_range() {
            let mut buf: SegBuf = [0; MAX_SEGMENT];
            s.feed(b"/");
            s.feed(segment_key(
                path.get(start..end).unwrap_or_default(),
                &mut buf,
            ));
        }
        *self = s.finish();
    }

    /// Adds a file path given as its (already keyed) canonical segments: the
    /// same hash as [`DigestHasher::path`] of the path they came from.
    pub(crate) fn path_of_segments<'a>(&mut self, segs: impl IntoIterator<Item = &'a [u8]>) {
        let mut s = TextStream::new(*self);
        for seg in segs {
            s.feed(b"/");
            s.feed(seg);
        }
        *self = s.finish();
    }

    /// The hash: SipHash-1-3's finalisation (the message length in the
    /// last word, three rounds).
    #[inline]
    pub fn finish(&self) -> u64 {
        let mut s = *self;
        let b = s.words.wrapping_mul(8) << 56;
        s.v3 ^= b;
        s.round();
        s.v0 ^= b;
        s.v2 ^= 0xff;
        s.round();
        s.round();
        s.round();
        s.v0 ^ s.v1 ^ s.v2 ^ s.v3
    }
}

/// One text field fed in pieces: the same hash as [`DigestHasher::text`] of
/// the pieces' concatenation.
struct TextStream {
    h: DigestHasher,
    block: [u8; 16],
    fill: usize,
    len: usize,
}

impl TextStream {
    fn new(h: DigestHasher) -> Self {
        TextStream {
            h,
            block: [0; 16],
            fill: 0,
            len: 0,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len();
        while !bytes.is_empty() {
            let n = (16 - self.fill).min(bytes.len());
            self.block[self.fill..self.fill + n].copy_from_slice(&bytes[..n]);
            self.fill += n;
            bytes = &bytes[n..];
            if self.fill == 16 {
                self.h.absorb(le64(&self.block, 0), le64(&self.block, 8));
                self.fill = 0;
            }
        }
    }

    fn finish(mut self) -> DigestHasher {
        let (a, b) = le_upto16(&self.block[..self.fill]);
        self.h.absorb(
            a ^ (self.len as u64).rotate_left(40) ^ K2,
            b ^ ((self.fill as u64) << 56),
        );
        self.h
    }
}

/// Pass-through hasher for sets of already-hashed keys.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A set of hashes of what a profile knows, for the agent's edge filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    seed: u64,
    set: HashSet<u64, BuildHasherDefault<IdHasher>>,
    /// The hasher of each activity class, keyed by `seed` once (not per event).
    starts: [DigestHasher; 3],
}

impl Default for Digest {
    fn default() -> Self {
        Digest::from_hashes(0, [])
    }
}

impl Digest {
    /// A digest from its wire form (seed and hashes).
    pub fn from_hashes(seed: u64, hashes: impl IntoIterator<Item = u64>) -> Self {
        Digest {
            seed,
            set: hashes.into_iter().collect(),
            starts: [
                DigestHasher::new(seed, ActivityClass::Process),
                DigestHasher::new(seed, ActivityClass::File),
                DigestHasher::new(seed, ActivityClass::Network),
            ],
        }
    }

    /// The seed keying the hashes.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The hashes, sorted (the wire form).
    pub fn hashes(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.set.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// Number of hashes.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether the digest is empty.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Whether a precomputed hash is in the digest.
    #[inline]
    pub fn contains_hash(&self, hash: u64) -> bool {
        self.set.contains(&hash)
    }

    /// Whether the profile that produced this digest knows `event` exactly.
    /// `false` means "forward to the profile", not "anomalous".
    #[inline]
    pub fn contains(&self, event: &Event<'_>) -> bool {
        let start = match event {
            Event::Process(_) => self.starts[0],
            Event::File(_) => self.starts[1],
            Event::Network(_) => self.starts[2],
        };
        self.set.contains(&hash_event(start, event))
    }

    pub(crate) fn insert(&mut self, hash: u64) {
        self.set.insert(hash);
    }

    /// The digest hash of an event's fields, as the profile computes it for the
    /// paths it knows. Never allocates.
    #[inline]
    pub fn event_hash(seed: u64, event: &Event<'_>) -> u64 {
        hash_event(DigestHasher::new(seed, event.class()), event)
    }
}

/// The digest hash of an event, from the hasher of its class keyed by the
/// digest's seed.
#[inline(always)]
fn hash_event(start: DigestHasher, event: &Event<'_>) -> u64 {
    match event {
        Event::Process(e) => {
            let mut h = start;
            h.segment(e.image);
            h.segment(e.parent);
            h.segment(e.exe);
            h.text(e.args.as_bytes());
            h.finish()
        }
        Event::File(e) => {
            let mut h = start;
            h.segment(e.image);
            h.segment(e.process);
            h.short(access_word(e.access));
            h.path(e.path);
            h.finish()
        }
        Event::Network(e) => {
            let mut h = start;
            h.segment(e.image);
            h.segment(e.process);
            h.short(direction_word(e.direction));
            match e.peer {
                Peer::Ip(ip) => h.ip(ip),
                Peer::Name(n) => h.segment(n),
            }
            h.short(protocol_word(e.protocol));
            h.short(decimal_word(e.port));
            h.finish()
        }
    }
}

/// A label of at most 8 bytes as (little-endian word, length), at compile time.
const fn word(label: &str) -> (u64, u64) {
    let b = label.as_bytes();
    let mut w = 0u64;
    let mut i = b.len();
    while i > 0 {
        i -= 1;
        w = (w << 8) | b[i] as u64;
    }
    (w, b.len() as u64)
}

/// [`Access::as_str`] as a word.
#[inline(always)]
fn access_word(a: Access) -> (u64, u64) {
    const READ: (u64, u64) = word("read");
    const WRITE: (u64, u64) = word("write");
    const CREATE: (u64, u64) = word("create");
    const DELETE: (u64, u64) = word("delete");
    const RENAME: (u64, u64) = word("rename");
    const EXEC: (u64, u64) = word("exec");
    match a {
        Access::Read => READ,
        Access::Write => WRITE,
        Access::Create => CREATE,
        Access::Delete => DELETE,
        Access::Rename => RENAME,
        Access::Exec => EXEC,
    }
}

/// [`Direction::as_str`] as a word.
#[inline(always)]
fn direction_word(d: Direction) -> (u64, u64) {
    const OUTBOUND: (u64, u64) = word("outbound");
    const INBOUND: (u64, u64) = word("inbound");
    const LISTEN: (u64, u64) = word("listen");
    match d {
        Direction::Outbound => OUTBOUND,
        Direction::Inbound => INBOUND,
        Direction::Listen => LISTEN,
    }
}

/// [`Protocol::key`] as a word.
#[inline(always)]
fn protocol_word(p: Protocol) -> (u64, u64) {
    const TCP: (u64, u64) = word("tcp");
    const UDP: (u64, u64) = word("udp");
    const ICMP: (u64, u64) = word("icmp");
    match p {
        Protocol::Tcp => TCP,
        Protocol::Udp => UDP,
        Protocol::Icmp => ICMP,
        Protocol::Other(n) => {
            let (digits, len) = decimal_word(u16::from(n));
            // "ip" then the digits.
            (
                (digits << 16) | u64::from(u16::from_le_bytes(*b"ip")),
                len + 2,
            )
        }
    }
}

/// The decimal text of `n` (at most 5 digits) as a word, without memory.
#[inline(always)]
fn decimal_word(mut n: u16) -> (u64, u64) {
    let mut w = 0u64;
    let mut len = 0;
    loop {
        // Each new digit is more significant: it goes first (lowest byte).
        w = (w << 8) | u64::from(b'0' + (n % 10) as u8);
        len += 1;
        n /= 10;
        if n == 0 {
            return (w, len);
        }
    }
}

/// Buffer for [`port_key`].
pub(crate) fn itoa_buf() -> [u8; 5] {
    [0; 5]
}

/// Decimal text of a port without allocating.
#[inline]
pub(crate) fn port_key(port: u16, buf: &mut [u8; 5]) -> &[u8] {
    let mut n = port;
    let mut i = 5;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_framing_keeps_boundaries() {
        let mut a = DigestHasher::new(7, ActivityClass::File);
        a.text(b"ab");
        a.text(b"c");
        let mut b = DigestHasher::new(7, ActivityClass::File);
        b.text(b"a");
        b.text(b"bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn fields_in_another_order_or_repeated_hash_differently() {
        let hash = |fields: &[&[u8]]| {
            let mut h = DigestHasher::new(7, ActivityClass::File);
            for f in fields {
                h.text(f);
            }
            h.finish()
        };
        // blocks are keyed by position: swapping or doubling them shows
        assert_ne!(hash(&[b"etc", b"shadow"]), hash(&[b"shadow", b"etc"]));
        assert_ne!(hash(&[b"tmp", b"tmp"]), hash(&[]));
        assert_ne!(hash(&[b"tmp"]), hash(&[b"tmp", b"tmp", b"tmp"]));
        assert_ne!(hash(&[b"", b""]), hash(&[b""]));
    }

    /// The digest hash is SipHash-1-3 of the framed fields: the same as the
    /// `siphasher` crate's over the same words.
    #[test]
    fn the_digest_hash_is_siphash_1_3() {
        use std::hash::Hasher as _;
        let (k0, k1) = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        for words in [&[][..], &[1u64][..], &[1, 2, 3, 0xdead_beef, u64::MAX][..]] {
            let mut h = DigestHasher::with_keys(k0, k1);
            for &w in words {
                h.word(w);
            }
            let mut r = siphasher::sip::SipHasher13::new_with_keys(k0, k1);
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            r.write(&bytes);
            assert_eq!(h.finish(), r.finish(), "{words:?}");
        }
    }

    #[test]
    fn the_hash_is_stable_across_builds() {
        // Pinned values: agents and operators of different builds must agree.
        let mut h = DigestHasher::new(1, ActivityClass::Process);
        h.text(b"nginx:latest");
        h.ip("10.0.0.1".parse().unwrap());
        assert_eq!(h.finish(), PINNED_EVENT);
        assert_eq!(stable_hash(0, b"abc"), PINNED_ABC);
        assert_ne!(stable_hash(0, b"abc"), stable_hash(1, b"abc"));
    }

    /// Field hashing as first written (a copy per block):
    /// the word loads must give the same hashes for every length.
    fn reference_text(h: &mut DigestHasher, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(16);
        for c in &mut chunks {
            let (lo, hi) = c.split_at(8);
            let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
            a.copy_from_slice(lo);
            b.copy_from_slice(hi);
            h.absorb(u64::from_le_bytes(a), u64::from_le_bytes(b));
        }
        let rest = chunks.remainder();
        let mut w = [0u8; 16];
        w[..rest.len()].copy_from_slice(rest);
        let (lo, hi) = w.split_at(8);
        let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
        a.copy_from_slice(lo);
        b.copy_from_slice(hi);
        let len = bytes.len() as u64;
        h.absorb(
            u64::from_le_bytes(a) ^ len.rotate_left(40) ^ K2,
            u64::from_le_bytes(b) ^ ((rest.len() as u64) << 56),
        );
    }

    #[test]
    fn text_hashes_equal_the_reference_for_every_length_up_to_100() {
        let data: Vec<u8> = (0..100u32).map(|i| (i * 131 + 7) as u8).collect();
        for seed in [0, 1, 0x5eed, u64::MAX] {
            for n in 0..=data.len() {
                let mut fast = DigestHasher::new(seed, ActivityClass::File);
                let mut slow = fast;
                fast.text(&data[..n]);
                reference_text(&mut slow, &data[..n]);
                assert_eq!(fast.finish(), slow.finish(), "seed {seed} length {n}");
            }
        }
    }

    #[test]
    fn hashing_a_path_equals_hashing_its_keyed_segments() {
        let long = [b"/data/".as_slice(), &[b'x'; 600], b"/tail"].concat();
        let paths: [&[u8]; 12] = [
            b"/usr/lib/x86_64-linux-gnu/file-17.dat",
            b"relative/\xffpath",
            b"",
            b"/",
            b"./a/../b//c/./",
            b"/exactly-sixteen!/fifteen-bytes-x/and-seventeen-byte/s",
            b"/a/bb/ccc/dddd/eeeee/ffffff/ggggggg/hhhhhhhh/iiiiiiiii/jjjjjjjjjj",
            b"no-slash-at-all-and-longer-than-sixteen",
            b"/a/./b",
            b"/a/.",
            b"/a/..",
            &long,
        ];
        for path in paths {
            let mut fast = DigestHasher::new(9, ActivityClass::File);
            let mut slow = fast;
            fast.path(path);
            let keyed: Vec<Vec<u8>> = path_segments(path)
                .map(|s| {
                    let mut buf: SegBuf = [0; MAX_SEGMENT];
                    segment_key(s, &mut buf).to_vec()
                })
                .collect();
            slow.path_of_segments(keyed.iter().map(Vec::as_slice));
            assert_eq!(
                fast.finish(),
                slow.finish(),
                "{:?}",
                String::from_utf8_lossy(path)
            );
        }
    }

    #[test]
    fn every_short_path_hashes_like_its_segments() {
        // all paths of up to 7 bytes over `/ . a`: the canonical fast path
        // and the splitting path must agree
        let alphabet = [b'/', b'.', b'a'];
        let mut paths: Vec<Vec<u8>> = Vec::new();
        for len in 0..=7u32 {
            for mut code in 0..3usize.pow(len) {
                let mut p = Vec::new();
                for _ in 0..len {
                    p.push(alphabet[code % 3]);
                    code /= 3;
                }
                paths.push(p);
            }
        }
        let mut checked = 0;
        for path in &paths {
            let mut fast = DigestHasher::new(5, ActivityClass::File);
            let mut slow = fast;
            fast.path(path);
            slow.split_path(path);
            assert_eq!(
                fast.finish(),
                slow.finish(),
                "{:?}",
                String::from_utf8_lossy(path)
            );
            checked += 1;
        }
        assert!(checked > 3000, "{checked}");
    }

    #[test]
    fn text_streamed_in_pieces_hashes_like_the_whole() {
        let data: Vec<u8> = (0..70u32).map(|i| (i * 29 + 3) as u8).collect();
        for n in 0..=data.len() {
            for cut in [0, 1, 7, 15, 16, 17, 40] {
                let cut = cut.min(n);
                let mut whole = DigestHasher::new(2, ActivityClass::File);
                whole.text(&data[..n]);
                let mut s = TextStream::new(DigestHasher::new(2, ActivityClass::File));
                s.feed(&data[..cut]);
                s.feed(&data[cut..n]);
                assert_eq!(whole.finish(), s.finish().finish(), "length {n}, cut {cut}");
            }
        }
    }

    #[test]
    fn label_words_hash_like_the_labels_text() {
        fn same(word: (u64, u64), text: &[u8]) {
            let mut a = DigestHasher::new(3, ActivityClass::Network);
            let mut b = a;
            a.short(word);
            b.text(text);
            assert_eq!(a.finish(), b.finish(), "{}", String::from_utf8_lossy(text));
        }
        for x in Access::ALL {
            same(access_word(x), x.as_str().as_bytes());
        }
        for x in Direction::ALL {
            same(direction_word(x), x.as_str().as_bytes());
        }
        for n in 0..=u8::MAX {
            for p in [
                Protocol::Tcp,
                Protocol::Udp,
                Protocol::Icmp,
                Protocol::Other(n),
            ] {
                same(protocol_word(p), p.key().as_bytes());
            }
        }
        for port in 0..=u16::MAX {
            let mut buf = itoa_buf();
            same(decimal_word(port), port_key(port, &mut buf));
        }
    }

    const PINNED_EVENT: u64 = 15_188_380_130_242_319_058;
    const PINNED_ABC: u64 = 15_251_840_977_615_175_591;

    #[test]
    fn ports_are_written_in_decimal() {
        let mut b = itoa_buf();
        assert_eq!(port_key(0, &mut b), b"0");
        let mut b = itoa_buf();
        assert_eq!(port_key(65535, &mut b), b"65535");
        let mut b = itoa_buf();
        assert_eq!(port_key(443, &mut b), b"443");
    }
}
