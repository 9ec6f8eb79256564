//! Similarity buckets for anomalies: the profile's answer to "are these two
//! anomalies the same thing?", used by cluster statistics, incident grouping
//! and the LLM cache (`AnomalyShape::bucket`).
//!
//! Two anomalies under the same key (the shape's trie path: image, parent,
//! program, signal kinds) share a bucket when their arguments are within the
//! profile's argument-similarity threshold, measured exactly as the profile
//! measures exemplars ([`kestrel_embed::arg_distance`]: the embeddings' angle
//! plus the structural distance). So two replicas running the same miner with
//! different wallets, or one script run with a new timestamp, are one shape;
//! a miner and `cat /etc/shadow` under the same parent are two.
//!
//! Buckets are formed leader-first: the first anomaly with arguments outside
//! every bucket of its key opens a bucket whose id is the stable hash of its
//! arguments; later anomalies join the nearest bucket whose leader is within
//! the threshold. The id therefore depends only on the first arguments seen,
//! not on the pod or the order of later ones.
//!
//! Embedding costs about 10 ms of CPU per new string with the default model
//! (`docs/BENCHMARKS.md`), and the engine handles events on one thread, so a
//! burst of distinct anomalies (a sweep that runs a new program per file)
//! must not stall it: each set has a token bucket of [`EMBED_BURST`] embeddings
//! refilled at [`EMBEDS_PER_SEC`] per second. Without a token, an anomaly
//! whose arguments are not in the exact cache gets the exact hash of its
//! arguments (more shapes for a while, never a wrong merge), and
//! [`AnomalyBuckets::rate_limited`] counts it.
//!
//! Everything is bounded: at most [`LEADERS_PER_KEY`] buckets per key (past
//! it, an anomaly far from every leader gets the exact hash of its
//! arguments: more shapes, never a merge of dissimilar ones), an exact cache
//! of [`EXACT_PER_KEY`] argument strings per key, and [`KEYS_CAP`] keys per
//! set (the oldest key is dropped first). The set is runtime state, not part
//! of the stored profile: after a restart the first anomaly of each kind opens
//! its bucket again, with the same id when its arguments are the same.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use kestrel_embed::{ArgShape, Embedder};

use crate::digest::stable_hash;
use crate::error::Result;
use crate::exemplar::Exemplar;
use crate::profile::{embed_all, Profile};

/// Buckets kept per key.
pub const LEADERS_PER_KEY: usize = 32;
/// Argument strings remembered exactly per key.
pub const EXACT_PER_KEY: usize = 256;
/// Keys kept per set.
pub const KEYS_CAP: usize = 4096;

/// Embeddings a set may spend at once.
pub const EMBED_BURST: f64 = 32.0;
/// Embeddings a set regains per second.
pub const EMBEDS_PER_SEC: f64 = 8.0;

/// Seed of bucket ids (distinct from the profile's other hashes).
const BUCKET_SEED: u64 = 0x6b65_7374_7265_6c62;

/// The buckets of one key.
#[derive(Debug, Default)]
struct KeyBuckets {
    leaders: Vec<(u64, Exemplar)>,
    /// Argument string → bucket id, oldest first.
    exact: HashMap<Box<str>, u64>,
    exact_order: VecDeque<Box<str>>,
}

impl KeyBuckets {
    fn remember(&mut self, args: &str, id: u64) {
        if self.exact.contains_key(args) {
            return;
        }
        if self.exact.len() >= EXACT_PER_KEY {
            if let Some(old) = self.exact_order.pop_front() {
                self.exact.remove(&old);
            }
        }
        self.exact.insert(args.into(), id);
        self.exact_order.push_back(args.into());
    }
}

/// The similarity buckets of one workload's anomalies (see the module docs).
#[derive(Debug, Default)]
pub struct AnomalyBuckets {
    keys: HashMap<String, KeyBuckets>,
    order: VecDeque<String>,
    /// Embedding tokens left, and when they were last refilled.
    tokens: Option<(f64, Duration)>,
    rate_limited: u64,
}

impl AnomalyBuckets {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys held.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// Anomalies given their exact shape because the embedding budget was
    /// spent.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited
    }

    /// Takes one embedding token at `now`, if there is one.
    fn take_token(&mut self, now: Duration) -> bool {
        let (left, at) = self.tokens.unwrap_or((EMBED_BURST, now));
        let gained = now.saturating_sub(at).as_secs_f64() * EMBEDS_PER_SEC;
        let left = (left + gained).min(EMBED_BURST);
        if left >= 1.0 {
            self.tokens = Some((left - 1.0, now.max(at)));
            true
        } else {
            self.tokens = Some((left, now.max(at)));
            self.rate_limited += 1;
            false
        }
    }

    /// Number of buckets (leaders) held under `key`.
    pub fn buckets(&self, key: &str) -> usize {
        self.keys.get(key).map_or(0, |k| k.leaders.len())
    }

    fn key_mut(&mut self, key: &str) -> &mut KeyBuckets {
        if !self.keys.contains_key(key) {
            if self.keys.len() >= KEYS_CAP {
                if let Some(old) = self.order.pop_front() {
                    self.keys.remove(&old);
                }
            }
            self.order.push_back(key.to_string());
        }
        self.keys.entry(key.to_string()).or_default()
    }
}

/// The exact-argument id: used for a bucket's id and past the leader cap.
fn exact_id(args: &str) -> u64 {
    stable_hash(BUCKET_SEED, args.as_bytes())
}

impl Profile {
    /// The similarity bucket of an anomaly's (normalised) arguments under
    /// `key`, by this profile's embedding model and threshold (see
    /// [`crate::AnomalyBuckets`]). Embeds `args` at most once per distinct
    /// string and key while it stays in the exact cache, and within the
    /// set's embedding budget at `now` (past it: the exact id).
    ///
    /// # Errors
    /// When the embedder fails or is not the profile's model; the caller
    /// keeps its exact shape then.
    pub fn anomaly_bucket(
        &self,
        buckets: &mut AnomalyBuckets,
        key: &str,
        args: &str,
        embedder: &dyn Embedder,
        now: Duration,
    ) -> Result<u64> {
        let threshold = self.config.similarity_threshold;
        if let Some(id) = buckets.keys.get(key).and_then(|k| k.exact.get(args)) {
            return Ok(*id);
        }
        if !buckets.take_token(now) {
            return Ok(exact_id(args));
        }
        let k = buckets.key_mut(key);
        let v = embed_all(embedder, &self.model_id, &[args])?
            .pop()
            .ok_or_else(|| crate::Error::Embedding("embedder returned no vector".into()))?;
        let shape = ArgShape::of(args);
        let nearest = k
            .leaders
            .iter()
            .map(|(id, e)| (*id, e.distance_to(&v, &shape), e))
            .filter(|(_, d, e)| *d <= e.radius())
            .min_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.2.args.cmp(&b.2.args)));
        let id = match nearest {
            Some((id, ..)) => id,
            None => {
                let id = exact_id(args);
                if k.leaders.len() < LEADERS_PER_KEY {
                    k.leaders
                        .push((id, Exemplar::new(args.into(), v, threshold)));
                }
                id
            }
        };
        k.remember(args, id);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestEmbedder;
    use crate::ProfileConfig;
    use std::time::Duration;

    fn profile(e: &TestEmbedder) -> Profile {
        let cfg = ProfileConfig::builder()
            .similarity_threshold(0.6)
            .build()
            .unwrap();
        Profile::new(cfg, e.model_id(), Duration::ZERO).unwrap()
    }

    const KEY: &str = "web:1/sh/xmrig/unknown_process";
    const T0: Duration = Duration::from_secs(1_000);

    fn at(i: usize) -> Duration {
        T0 + Duration::from_secs(i as u64)
    }

    #[test]
    fn the_same_miner_with_another_wallet_and_worker_is_one_bucket_another_command_is_not() {
        let e = TestEmbedder::new();
        let p = profile(&e);
        let mut b = AnomalyBuckets::new();
        // as the profile sees them (normalised): one miner, two wallets,
        // ports, workers and thread counts (the test embedder is no language
        // model: the real model's verdict on pools is in embed-onnx's tests)
        let a = &kestrel_embed::normalize("--url stratum+tcp://pool.minexmr.com:4444 --user 44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A --pass rig01 --threads 2 --donate-level 1");
        let c = &kestrel_embed::normalize("--url stratum+tcp://pool.minexmr.com:443 --user 48edfHu7V9Z84YzzMa6fUueoELZ9ZRXq9VetWzYGzKt52XU5xvqgzYnDK9URnRoJMk1j8nLwEVsaSWJ4fhdUyZijBGUicoD --pass rig02 --threads 4 --donate-level 1");
        assert_ne!(a, c);
        let ba = p.anomaly_bucket(&mut b, KEY, a, &e, T0).unwrap();
        let bc = p.anomaly_bucket(&mut b, KEY, c, &e, T0).unwrap();
        assert_eq!(ba, bc, "two wallets, one miner");
        assert_eq!(
            ba,
            exact_id(a),
            "the bucket is named after its first arguments"
        );
        let other = p
            .anomaly_bucket(&mut b, KEY, "/etc/shadow", &e, T0)
            .unwrap();
        assert_ne!(other, ba);
        assert_eq!(b.buckets(KEY), 2);
        // the same arguments under another key are another shape
        let elsewhere = "web:1/sh/curl/unknown_process";
        assert_eq!(p.anomaly_bucket(&mut b, elsewhere, a, &e, T0).unwrap(), ba);
        assert_eq!(b.keys(), 2);
    }

    #[test]
    fn the_bucket_of_a_string_is_stable_and_served_from_the_exact_cache() {
        let e = TestEmbedder::new();
        let p = profile(&e);
        let mut b = AnomalyBuckets::new();
        let first = p.anomaly_bucket(&mut b, KEY, "-c id", &e, T0).unwrap();
        for _ in 0..3 {
            assert_eq!(
                p.anomaly_bucket(&mut b, KEY, "-c id", &e, T0).unwrap(),
                first
            );
        }
        // a fresh set gives the same id for the same first arguments
        let mut again = AnomalyBuckets::new();
        assert_eq!(
            p.anomaly_bucket(&mut again, KEY, "-c id", &e, T0).unwrap(),
            first
        );
    }

    #[test]
    fn past_the_leader_cap_dissimilar_arguments_keep_exact_ids_and_nothing_grows_unbounded() {
        let e = TestEmbedder::new();
        let p = profile(&e);
        let mut b = AnomalyBuckets::new();
        let words = |i: usize| format!("alpha{i} beta{} gamma{} delta{}", i * 7, i * 13, i * 31);
        let ids: Vec<u64> = (0..LEADERS_PER_KEY + 10)
            .map(|i| p.anomaly_bucket(&mut b, KEY, &words(i), &e, at(i)).unwrap())
            .collect();
        assert_eq!(b.buckets(KEY), LEADERS_PER_KEY);
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "no two unlike strings merged");
        assert_eq!(
            ids[LEADERS_PER_KEY + 3],
            exact_id(&words(LEADERS_PER_KEY + 3))
        );
        for i in 0..KEYS_CAP + 5 {
            p.anomaly_bucket(&mut b, &format!("k{i}"), "-x", &e, at(100 + i))
                .unwrap();
        }
        assert_eq!(b.keys(), KEYS_CAP);
        for i in 0..EXACT_PER_KEY * 2 {
            p.anomaly_bucket(&mut b, "one", &format!("-n {i}"), &e, at(10_000 + i))
                .unwrap();
        }
        let k = &b.keys["one"];
        assert!(k.exact.len() <= EXACT_PER_KEY && k.exact_order.len() <= EXACT_PER_KEY);
        assert_eq!(b.rate_limited(), 0, "one a second is within the budget");
    }

    #[test]
    fn a_burst_of_distinct_anomalies_spends_the_budget_then_keeps_exact_ids() {
        let e = TestEmbedder::new();
        let p = profile(&e);
        let mut b = AnomalyBuckets::new();
        let miner = |i: usize| format!("-o pool.minexmr.com:4444 -u wallet -p rig{i}");
        let burst = EMBED_BURST as usize;
        for i in 0..burst {
            p.anomaly_bucket(&mut b, KEY, &miner(i), &e, T0).unwrap();
        }
        assert_eq!(b.rate_limited(), 0);
        // the budget is spent: a similar string is not embedded, so it keeps
        // its exact id instead of joining the miner's bucket
        let late = miner(burst + 1);
        let id = p.anomaly_bucket(&mut b, KEY, &late, &e, T0).unwrap();
        assert_eq!(id, exact_id(&late));
        assert_eq!(b.rate_limited(), 1);
        // strings already seen are still answered from the exact cache
        assert_eq!(
            p.anomaly_bucket(&mut b, KEY, &miner(3), &e, T0).unwrap(),
            exact_id(&miner(0))
        );
        // a second later the set has tokens again and groups as before
        let later = T0 + Duration::from_secs(1);
        let id = p
            .anomaly_bucket(&mut b, KEY, &miner(burst + 2), &e, later)
            .unwrap();
        assert_eq!(id, exact_id(&miner(0)));
    }

    #[test]
    fn an_embedder_of_another_model_is_an_error_not_a_bucket() {
        let e = TestEmbedder::new();
        let p = profile(&e);
        struct Other;
        impl Embedder for Other {
            fn model_id(&self) -> &str {
                "other"
            }
            fn dim(&self) -> usize {
                4
            }
            fn embed_batch(&self, i: &[&str]) -> kestrel_embed::Result<Vec<Vec<f32>>> {
                Ok(i.iter().map(|_| vec![1.0, 0.0, 0.0, 0.0]).collect())
            }
        }
        let mut b = AnomalyBuckets::new();
        assert!(p.anomaly_bucket(&mut b, KEY, "-c id", &Other, T0).is_err());
        assert_eq!(b.buckets(KEY), 0);
    }
}
