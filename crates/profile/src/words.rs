//! Little-endian word loads of byte strings, without copying through memory.
//!
//! The hot paths (digest hashing, path splitting) read bytes a word at a time.
//! A short tail is loaded with at most three overlapping reads and shifts, which
//! gives exactly the value of the tail zero-padded to the word, without a call
//! to `memcpy`.

/// The 8 bytes at `at` as a little-endian word. Panics (bounds check) if they
/// are not all inside `b`; callers check first.
#[inline(always)]
pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

#[inline(always)]
fn le32(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u64::from(u32::from_le_bytes(w))
}

/// Up to 8 bytes as a little-endian word, zero-padded (`b.len() > 8` reads
/// the first 8).
#[inline(always)]
pub(crate) fn le_upto8(b: &[u8]) -> u64 {
    let n = b.len();
    if n >= 8 {
        le64(b, 0)
    } else if n >= 4 {
        // Bytes 0..4, and bytes n-4..n shifted so that only 4..n remain, in place.
        le32(b, 0) | ((le32(b, n - 4) >> (8 * (8 - n))) << 32)
    } else if n > 0 {
        u64::from(b[0])
            | u64::from(b[n / 2]) << (8 * (n / 2))
            | u64::from(b[n - 1]) << (8 * (n - 1))
    } else {
        0
    }
}

/// Up to 16 bytes as two little-endian words, zero-padded (`b.len() > 16`
/// reads the first 16).
#[inline(always)]
pub(crate) fn le_upto16(b: &[u8]) -> (u64, u64) {
    let n = b.len();
    if n > 8 {
        let hi = if n >= 16 {
            le64(b, 8)
        } else {
            // Bytes n-8..n shifted so that only 8..n remain.
            le64(b, n - 8) >> (8 * (16 - n))
        };
        (le64(b, 0), hi)
    } else {
        (le_upto8(b), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(b: &[u8]) -> (u64, u64) {
        let mut w = [0u8; 16];
        let n = b.len().min(16);
        w[..n].copy_from_slice(&b[..n]);
        let (lo, hi) = w.split_at(8);
        (le64(lo, 0), le64(hi, 0))
    }

    #[test]
    fn short_loads_equal_the_zero_padded_bytes_for_every_length() {
        let data: Vec<u8> = (1..=20u8).map(|i| i.wrapping_mul(37) | 1).collect();
        for n in 0..=data.len() {
            let b = &data[..n];
            assert_eq!(le_upto16(b), padded(b), "length {n}");
            assert_eq!(le_upto8(b), padded(b).0, "length {n}");
        }
    }
}
