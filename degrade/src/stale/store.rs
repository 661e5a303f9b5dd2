//! The bounded store behind the stale cache: the last good answer per key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// A bounded map from key to the last good answer, evicting the least recently *stored*
/// entry when full.
///
/// Why store order rather than read order: an entry's usefulness ends at `max_staleness`
/// after it was stored, whatever the reads; the least recently stored entry is the one that
/// goes too stale first, so it is the one to drop. Values are `Arc`s so a read under the
/// lock is a reference-count bump; the caller clones the answer after unlocking.
#[derive(Debug)]
pub(crate) struct Store<K, V> {
    map: HashMap<K, Entry<V>>,
    // Keys in store order, with the generation they were stored at; a key stored again
    // leaves its old position behind, skipped (and compacted) lazily.
    order: VecDeque<(K, u64)>,
    next_gen: u64,
    capacity: usize,
    // Keys with a stale-while-revalidate refresh in flight (at most one per key).
    refreshing: HashSet<K>,
}

#[derive(Debug)]
struct Entry<V> {
    value: Arc<V>,
    stored: Instant,
    generation: u64,
}

impl<K: Hash + Eq + Clone, V> Store<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            next_gen: 0,
            capacity,
            refreshing: HashSet::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }

    /// Mark a refresh of `key` in flight; `false` if one already is.
    pub(crate) fn begin_refresh(&mut self, key: &K) -> bool {
        !self.refreshing.contains(key) && self.refreshing.insert(key.clone())
    }

    /// The refresh of `key` is over.
    pub(crate) fn end_refresh(&mut self, key: &K) {
        self.refreshing.remove(key);
    }

    pub(crate) fn remove(&mut self, key: &K) -> bool {
        self.map.remove(key).is_some()
    }

    /// Store `value` for `key` as of `now`, evicting the least recently stored entries
    /// beyond capacity.
    pub(crate) fn insert(&mut self, key: K, value: Arc<V>, now: Instant) {
        let generation = self.next_gen;
        self.next_gen += 1;
        self.order.push_back((key.clone(), generation));
        self.map.insert(
            key,
            Entry {
                value,
                stored: now,
                generation,
            },
        );
        while self.map.len() > self.capacity {
            self.evict_oldest();
        }
        // Bound the queue of superseded positions: at most twice the live entries (plus a
        // little, so the sweep is amortized). Saturating: any capacity is a valid config.
        if self.order.len() > self.map.len().saturating_mul(2).saturating_add(16) {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|e| e.generation == *g));
        }
    }

    fn evict_oldest(&mut self) {
        while let Some((key, generation)) = self.order.pop_front() {
            if self
                .map
                .get(&key)
                .is_some_and(|e| e.generation == generation)
            {
                self.map.remove(&key);
                return;
            }
        }
    }

    /// The answer for `key` and its age, if it is at most `max_age` old at `now`. Entries
    /// found too old are dropped (they can never be served again).
    pub(crate) fn get(
        &mut self,
        key: &K,
        now: Instant,
        max_age: Duration,
    ) -> Option<(Arc<V>, Duration)> {
        let entry = self.map.get(key)?;
        let age = now.saturating_duration_since(entry.stored);
        if age > max_age {
            self.map.remove(key);
            return None;
        }
        Some((Arc::clone(&entry.value), age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_max_age() {
        let mut s = Store::new(4);
        s.insert("a", Arc::new(1), Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        assert_eq!(
            s.get(&"a", now, Duration::from_secs(10))
                .map(|(v, age)| (*v, age)),
            Some((1, Duration::from_secs(10)))
        );
        assert!(s.get(&"a", now, Duration::from_secs(9)).is_none());
        assert_eq!(s.len(), 0, "an expired entry is dropped");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Never more than `capacity` entries, and the `capacity` most recently stored
        /// distinct keys are all present with their latest value.
        #[test]
        fn bounded_and_keeps_the_most_recent(capacity in 1usize..8, keys in proptest::collection::vec(0u8..16, 0..200)) {
            let now = Instant::now();
            let mut s = Store::new(capacity);
            for (i, k) in keys.iter().enumerate() {
                s.insert(*k, Arc::new(i), now);
                prop_assert!(s.len() <= capacity);
                prop_assert!(s.order.len() <= 2 * capacity + 16 + 1);
            }
            let mut recent: Vec<(u8, usize)> = Vec::new();
            for (i, k) in keys.iter().enumerate().rev() {
                if recent.len() == capacity { break; }
                if !recent.iter().any(|(r, _)| r == k) { recent.push((*k, i)); }
            }
            for (k, i) in recent {
                let got = s.get(&k, now, Duration::ZERO).map(|(v, _)| *v);
                prop_assert_eq!(got, Some(i));
            }
        }
    }
}
