//! Recent task ids, so that a retried RunTask (or a cancel that overtook it) never runs an id twice.

use std::collections::{HashSet, VecDeque};
use std::hash::Hasher;

use super::SEEN_CAPACITY;

/// Recent task ids, oldest evicted first. Kept as 64-bit hashes: a few bytes per id instead of the
/// whole string keeps a long-lived agent's memory flat, and a collision among 4096 ids is ~1e-12.
#[derive(Debug, Default)]
pub(super) struct Seen {
    pub(super) order: VecDeque<u64>,
    set: HashSet<u64>,
}

fn id_hash(id: &str) -> u64 {
    // DefaultHasher::new() has fixed keys, so the same id always hashes the same within the process.
    let mut h = std::hash::DefaultHasher::new();
    h.write(id.as_bytes());
    h.finish()
}

impl Seen {
    pub(super) fn insert(&mut self, id: &str) {
        let h = id_hash(id);
        if self.set.insert(h) {
            self.order.push_back(h);
            while self.order.len() > SEEN_CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.set.contains(&id_hash(id))
    }
}
