//! Interned trie keys: each distinct segment or address is stored once.
//!
//! Symbols are reference counted so that keys of collapsed (removed) children
//! are freed and the interner stays bounded by the live trie.

use std::collections::HashMap;
use std::net::IpAddr;

use foldhash::fast::RandomState;

/// An interned key.
pub(crate) type Sym = u32;

/// What a symbol stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    /// A (possibly truncated) byte segment.
    Text(Box<[u8]>),
    /// An IP address (network peers).
    Ip(IpAddr),
    /// A freed slot.
    Free,
}

#[derive(Debug)]
struct Entry {
    key: Key,
    refs: u32,
}

/// Reference-counted interner of text segments and IP addresses.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    text: HashMap<Box<[u8]>, Sym, RandomState>,
    ips: HashMap<IpAddr, Sym, RandomState>,
    entries: Vec<Entry>,
    free: Vec<Sym>,
}

impl Interner {
    /// The symbol of `bytes`, if interned. Never allocates.
    #[inline]
    pub(crate) fn lookup_text(&self, bytes: &[u8]) -> Option<Sym> {
        self.text.get(bytes).copied()
    }

    /// The symbol of `ip`, if interned.
    #[inline]
    pub(crate) fn lookup_ip(&self, ip: IpAddr) -> Option<Sym> {
        self.ips.get(&ip).copied()
    }

    /// Interns `bytes` (adding one reference).
    pub(crate) fn intern_text(&mut self, bytes: &[u8]) -> Sym {
        if let Some(&s) = self.text.get(bytes) {
            self.entries[s as usize].refs += 1;
            return s;
        }
        let boxed: Box<[u8]> = bytes.into();
        let s = self.alloc(Key::Text(boxed.clone()));
        self.text.insert(boxed, s);
        s
    }

    /// Interns `ip` (adding one reference).
    pub(crate) fn intern_ip(&mut self, ip: IpAddr) -> Sym {
        if let Some(&s) = self.ips.get(&ip) {
            self.entries[s as usize].refs += 1;
            return s;
        }
        let s = self.alloc(Key::Ip(ip));
        self.ips.insert(ip, s);
        s
    }

    fn alloc(&mut self, key: Key) -> Sym {
        let entry = Entry { key, refs: 1 };
        match self.free.pop() {
            Some(s) => {
                self.entries[s as usize] = entry;
                s
            }
            None => {
                // Symbols are u32: a trie is bounded far below 4 G nodes by its node budget.
                let s = self.entries.len() as Sym;
                self.entries.push(entry);
                s
            }
        }
    }

    /// Drops one reference; frees the key when none is left.
    pub(crate) fn release(&mut self, sym: Sym) {
        let Some(e) = self.entries.get_mut(sym as usize) else {
            return;
        };
        e.refs = e.refs.saturating_sub(1);
        if e.refs > 0 {
            return;
        }
        match std::mem::replace(&mut e.key, Key::Free) {
            Key::Text(b) => {
                self.text.remove(&b);
            }
            Key::Ip(ip) => {
                self.ips.remove(&ip);
            }
            Key::Free => return,
        }
        self.free.push(sym);
    }

    /// What `sym` stands for.
    #[inline]
    pub(crate) fn key(&self, sym: Sym) -> &Key {
        self.entries
            .get(sym as usize)
            .map(|e| &e.key)
            .unwrap_or(&Key::Free)
    }

    /// Number of live symbols.
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.text.len() + self.ips.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_symbols_are_forgotten_and_reused() {
        let mut i = Interner::default();
        let a = i.intern_text(b"a");
        let a2 = i.intern_text(b"a");
        assert_eq!(a, a2);
        i.release(a);
        assert_eq!(i.lookup_text(b"a"), Some(a));
        i.release(a);
        assert_eq!(i.lookup_text(b"a"), None);
        let b = i.intern_text(b"b");
        assert_eq!(b, a);
        assert_eq!(i.live(), 1);
    }
}
