//! Bounded in-process memory of facts that stay true once committed (a budget window exists, a
//! payee has been paid): a hit skips a database statement, a miss asks the database as before.
//! Only remember a fact after the transaction that made it true has committed.

use std::{
    collections::HashSet,
    sync::{Mutex, MutexGuard, PoisonError},
};

/// A set of at most `max` strings; when full, it forgets everything and relearns.
#[derive(Debug)]
pub struct KnownSet {
    known: Mutex<HashSet<String>>,
    max: usize,
}

impl KnownSet {
    pub fn new(max: usize) -> Self {
        Self {
            known: Mutex::default(),
            max: max.max(1),
        }
    }

    fn set(&self) -> MutexGuard<'_, HashSet<String>> {
        // A plain set stays valid whatever a panicking holder left behind.
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn contains(&self, item: &str) -> bool {
        self.set().contains(item)
    }

    pub fn insert(&self, item: String) {
        let mut set = self.set();
        if set.len() >= self.max && !set.contains(&item) {
            set.clear();
        }
        set.insert(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_up_to_its_bound_then_starts_again() {
        let known = KnownSet::new(2);
        assert!(!known.contains("a"));
        known.insert("a".into());
        known.insert("b".into());
        known.insert("b".into());
        assert!(known.contains("a") && known.contains("b"));
        known.insert("c".into());
        assert!(known.contains("c"));
        assert!(!known.contains("a") && !known.contains("b"));
    }
}
