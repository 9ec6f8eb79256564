//! A bounded least-recently-used map from strings to values.
//!
//! Entries live in a slab (`Vec`) linked into a recency list by index; a
//! `HashMap` finds a key's slot. `get` and `insert` are O(1).

use std::collections::HashMap;
use std::sync::Arc;

const NONE: usize = usize::MAX;

struct Node<V> {
    key: Arc<str>,
    value: V,
    prev: usize,
    next: usize,
}

/// A map that holds at most `capacity` entries and evicts the least recently
/// used one to make room.
pub(crate) struct Lru<V> {
    map: HashMap<Arc<str>, usize>,
    nodes: Vec<Node<V>>,
    head: usize,
    tail: usize,
    capacity: usize,
}

impl<V: Clone> Lru<V> {
    /// An empty map for at most `capacity` entries (0 means caching is off).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::with_capacity(capacity.min(1 << 16)),
            nodes: Vec::with_capacity(capacity.min(1 << 16)),
            head: NONE,
            tail: NONE,
            capacity,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The value for `key`, which becomes the most recently used.
    pub(crate) fn get(&mut self, key: &str) -> Option<V> {
        let i = *self.map.get(key)?;
        self.detach(i);
        self.push_front(i);
        Some(self.nodes[i].value.clone())
    }

    /// Inserts or replaces `key`, evicting the least recently used entry when full.
    pub(crate) fn insert(&mut self, key: Arc<str>, value: V) {
        if self.capacity == 0 {
            return;
        }
        if let Some(&i) = self.map.get(&key) {
            self.nodes[i].value = value;
            self.detach(i);
            self.push_front(i);
            return;
        }
        let i = if self.nodes.len() < self.capacity {
            self.nodes.push(Node {
                key: Arc::clone(&key),
                value,
                prev: NONE,
                next: NONE,
            });
            self.nodes.len() - 1
        } else {
            let i = self.tail;
            self.detach(i);
            self.map.remove(&self.nodes[i].key);
            self.nodes[i].key = Arc::clone(&key);
            self.nodes[i].value = value;
            i
        };
        self.map.insert(key, i);
        self.push_front(i);
    }

    fn detach(&mut self, i: usize) {
        let (prev, next) = (self.nodes[i].prev, self.nodes[i].next);
        if prev == NONE {
            self.head = next;
        } else {
            self.nodes[prev].next = next;
        }
        if next == NONE {
            self.tail = prev;
        } else {
            self.nodes[next].prev = prev;
        }
        self.nodes[i].prev = NONE;
        self.nodes[i].next = NONE;
    }

    fn push_front(&mut self, i: usize) {
        self.nodes[i].next = self.head;
        self.nodes[i].prev = NONE;
        if self.head != NONE {
            self.nodes[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NONE {
            self.tail = i;
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
