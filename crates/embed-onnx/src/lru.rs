//! The exact cache's eviction order: the `lru` crate's `LruCache`, with a
//! capacity of 0 meaning "no cache" (the crate needs a non-zero one).
//!
//! A hand-written slab LRU served here until session 5; the crate was as fast
//! or faster on the cache benches (`docs/benchmarks/hand-written-vs-crates.md`).

use std::num::NonZeroUsize;
use std::sync::Arc;

/// A map that holds at most `capacity` entries and evicts the least recently
/// used one to make room.
pub(crate) struct Lru<V> {
    inner: Option<lru::LruCache<Arc<str>, V>>,
}

impl<V: Clone> Lru<V> {
    /// An empty map for at most `capacity` entries (0 means caching is off).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: NonZeroUsize::new(capacity).map(lru::LruCache::new),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, lru::LruCache::len)
    }

    pub(crate) fn capacity(&self) -> usize {
        self.inner.as_ref().map_or(0, |c| c.cap().get())
    }

    /// The value for `key`, which becomes the most recently used.
    pub(crate) fn get(&mut self, key: &str) -> Option<V> {
        self.inner.as_mut()?.get(key).cloned()
    }

    /// Inserts or replaces `key`, evicting the least recently used entry when full.
    pub(crate) fn insert(&mut self, key: Arc<str>, value: V) {
        if let Some(c) = self.inner.as_mut() {
            c.put(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn the_least_recently_used_entry_is_evicted_first() {
        let mut lru = Lru::new(2);
        lru.insert("a".into(), 1);
        lru.insert("b".into(), 2);
        assert_eq!(lru.get("a"), Some(1)); // b is now the oldest
        lru.insert("c".into(), 3);
        assert_eq!(lru.get("b"), None);
        assert_eq!(lru.get("a"), Some(1));
        assert_eq!(lru.get("c"), Some(3));
        assert_eq!(lru.len(), 2);
    }

    #[test]
    fn inserting_an_existing_key_replaces_it_without_growing() {
        let mut lru = Lru::new(2);
        lru.insert("a".into(), 1);
        lru.insert("a".into(), 2);
        assert_eq!(lru.len(), 1);
        assert_eq!(lru.get("a"), Some(2));
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let mut lru = Lru::new(0);
        lru.insert("a".into(), 1);
        assert_eq!(lru.get("a"), None);
        assert_eq!(lru.len(), 0);
    }

    #[test]
    fn a_long_sequence_keeps_exactly_the_newest_entries() {
        let mut lru = Lru::new(100);
        for i in 0..1000 {
            lru.insert(i.to_string().into(), i);
        }
        assert_eq!(lru.len(), 100);
        assert!((0..900).all(|i| lru.get(&i.to_string()).is_none()));
        assert!((900..1000).all(|i| lru.get(&i.to_string()) == Some(i)));
    }
}
