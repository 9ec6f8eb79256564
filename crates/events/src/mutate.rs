//! Deterministic input mutation for the bounded fuzz runs of `cargo test`
//! (the parsers that face untrusted input: BPF records, wire messages,
//! profile, alert, rule and config files). Each mutant applies one to four
//! random edits to a valid seed — a byte replaced (often by a byte that
//! means something to a parser), bytes inserted, a range deleted or
//! duplicated, a cut — so most mutants are *almost* valid and reach deep
//! into the parser, unlike random bytes. Coverage-guided runs of the same
//! parsers: `fuzz/` (cargo-fuzz, docs/fuzzing.md).

/// Bytes that mean something to the parsers fuzzed here.
const INTERESTING: &[u8] = b"\0\xff\x80\x7f\n\r\t :-[]{}\"'*/\\#&!|,.0129%";

/// A small, fast PRNG (xorshift64*), deterministic for a given seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a constant).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// `count` mutants of `seed`, deterministic for `rng_seed`.
pub fn mutants(seed: &[u8], count: usize, rng_seed: u64) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut rng = Rng::new(rng_seed);
    (0..count).map(move |_| mutant(seed, &mut rng))
}

/// One mutant of `seed`.
pub fn mutant(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let len = v.len();
        match rng.below(6) {
            0 if len > 0 => {
                let at = rng.below(len);
                v[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            1 if len > 0 => {
                let at = rng.below(len);
                v[at] = rng.next_u64() as u8;
            }
            2 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n)
                    .map(|_| INTERESTING[rng.below(INTERESTING.len())])
                    .collect();
                v.splice(at..at, bytes);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                v.drain(at..end);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(64)).min(len);
                let chunk = v[at..end].to_vec();
                let to = rng.below(v.len() + 1);
                v.splice(to..to, chunk);
            }
            _ => v.truncate(rng.below(len + 1)),
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutants_are_deterministic_and_differ_from_the_seed() {
        let seed = b"learning:\n  window: 1h\n";
        let a: Vec<Vec<u8>> = mutants(seed, 100, 7).collect();
        let b: Vec<Vec<u8>> = mutants(seed, 100, 7).collect();
        assert_eq!(a, b);
        assert!(a.iter().filter(|m| m.as_slice() != seed).count() > 90);
        assert!(mutants(b"", 50, 1).all(|m| m.len() < 400));
    }
}
