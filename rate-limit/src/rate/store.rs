//! The keyed limiter's state store: governor's GCRA state per key, in shards, with a bound
//! on the number of keys.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use palisade_core::hash::SeededHasher;
use palisade_core::time;
use tokio::time::Instant;

/// Shards: enough that callers on different keys rarely meet on one lock.
const SHARDS: usize = 64;

/// One shard: keys and their GCRA state.
type Shard<K> = HashMap<K, InMemoryState, SeededHasher>;

/// Per-key GCRA state in [`SHARDS`] read-write-locked maps: a call for a known key takes
/// one shard's read lock (shared: calls never wait for each other there) and one atomic
/// compare-and-swap; only the first call of a new key and the idle-key sweep take a shard's
/// write lock. There is no store-wide lock on any path.
///
/// At most `max_keys` keys are kept. A new key arriving at a full store first sweeps the
/// idle keys of every shard (at most once per second); if there is still no room it is
/// limited as if it had just used its whole burst (its cells conform after `cost` emission
/// intervals), so memory stays bounded under a flood of one-off keys and the flood is
/// slowed, never admitted unlimited.
pub(crate) struct ShardedStore<K> {
    shards: Box<[RwLock<Shard<K>>]>,
    hasher: SeededHasher,
    max_keys: usize,
    keys: AtomicUsize,
    /// The limiter's start (governor counts its nanoseconds from here), its emission
    /// interval and its burst, to treat a key refused for lack of room as spent.
    start: Instant,
    interval: Nanos,
    burst: u64,
    /// When the last sweep forced by a full store ran (nanoseconds since `start`; 0: never).
    last_full_sweep: AtomicU64,
}

impl<K: Hash + Eq + Clone> ShardedStore<K> {
    /// A store of at most `max_keys` keys, for a limiter created now.
    pub(crate) fn new(max_keys: usize, interval: Duration, burst: u32) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::with_hasher(SeededHasher::new())))
                .collect(),
            hasher: SeededHasher::new(),
            max_keys,
            keys: AtomicUsize::new(0),
            start: Instant::now(),
            interval: Nanos::from(time::nanos(interval)),
            burst: u64::from(burst),
            last_full_sweep: AtomicU64::new(0),
        }
    }

    #[inline]
    fn shard(&self, key: &K) -> &RwLock<Shard<K>> {
        // Middle bits: the map inside the shard uses the low ones and the top seven.
        let index = (self.hasher.hash_one(key) >> 32) as usize % SHARDS;
        &self.shards[index]
    }

    /// The theoretical arrival time of a key that has just used its whole burst.
    fn spent(&self) -> Nanos {
        let now = time::nanos_since(self.start, Instant::now());
        let burst = u64::from(self.interval).saturating_mul(self.burst);
        Nanos::from(now.saturating_add(burst))
    }

    /// Drop the idle keys of one shard (its write lock held by the caller).
    fn sweep(&self, map: &mut Shard<K>, drop_below: Nanos) {
        let before = map.len();
        map.retain(|_, state| !is_idle(state, drop_below));
        self.keys.fetch_sub(before - map.len(), Ordering::AcqRel);
    }

    /// The `drop_below` of governor's `retain_recent`, computed here.
    fn idle_before(&self) -> Nanos {
        let now = time::nanos_since(self.start, Instant::now());
        Nanos::from(now.saturating_sub(u64::from(self.interval)))
    }
}

/// A key whose theoretical arrival time lies before `drop_below` is indistinguishable from a
/// fresh key: dropping it loses nothing.
fn is_idle(state: &InMemoryState, drop_below: Nanos) -> bool {
    // Read the state without changing it: the closure refuses to replace it.
    let tat = state
        .measure_and_replace(&NotKeyed::NonKey, Err::<((), Nanos), _>)
        .err()
        .flatten();
    tat.is_none_or(|tat| u64::from(tat) <= u64::from(drop_below))
}

impl<K: Hash + Eq + Clone> StateStore for ShardedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let shard = self.shard(key);
        {
            let map = shard.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(state) = map.get(key) {
                // The hot path: a known key, a shared lock and one compare-and-swap.
                return state.measure_and_replace(&NotKeyed::NonKey, f);
            }
        }
        if let Some(result) = self.insert_and_measure(shard, key, &f) {
            return result;
        }
        // Full: sweep every shard's idle keys (at most once per `FULL_SWEEP_EVERY`, with no
        // shard lock held), then try once more.
        if self.may_sweep_all() {
            self.retain_recent(self.idle_before());
        }
        if let Some(result) = self.insert_and_measure(shard, key, &f) {
            return result;
        }
        // Still full: limited as if it had just used its burst, and not stored.
        f(Some(self.spent())).map(|(result, _)| result)
    }
}

/// When the store is full, a new key may trigger a sweep of every shard at most this often
/// (a sweep is O(keys)); the regular sweep every `cleanup_interval` runs besides.
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(1);

impl<K: Hash + Eq + Clone> ShardedStore<K> {
    /// Measure `key` under its shard's write lock, adding it if there is room; `None` when
    /// the key is new and the store is full.
    fn insert_and_measure<T, F, E>(
        &self,
        shard: &RwLock<Shard<K>>,
        key: &K,
        f: &F,
    ) -> Option<Result<T, E>>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = map.get(key) {
            // Another caller added it meanwhile.
            return Some(state.measure_and_replace(&NotKeyed::NonKey, f));
        }
        if !self.reserve() {
            return None;
        }
        let state = map.entry(key.clone()).or_default();
        Some(state.measure_and_replace(&NotKeyed::NonKey, f))
    }

    /// Claim the next full sweep if one is due.
    fn may_sweep_all(&self) -> bool {
        let now = time::nanos_since(self.start, Instant::now());
        let last = self.last_full_sweep.load(Ordering::Acquire);
        let due = last == 0 || now >= last.saturating_add(time::nanos(FULL_SWEEP_EVERY));
        due && self
            .last_full_sweep
            .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

impl<K> ShardedStore<K> {
    /// Take a place for a new key, if there is room.
    fn reserve(&self) -> bool {
        self.keys
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_keys).then_some(n + 1)
            })
            .is_ok()
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for ShardedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        for shard in &self.shards {
            let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
            self.sweep(&mut map, drop_below);
        }
    }

    fn shrink_to_fit(&self) {
        for shard in &self.shards {
            shard
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.keys.load(Ordering::Acquire)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K> fmt::Debug for ShardedStore<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedStore")
            .field("keys", &self.keys.load(Ordering::Relaxed))
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeded_hash_tells_keys_apart_and_spreads_them_over_shards() {
        let h = SeededHasher::new();
        assert_ne!(h.hash_one("a"), h.hash_one("a\0"));
        assert_ne!(h.hash_one("tenant-1"), h.hash_one("tenant-2"));
        assert_ne!(h.hash_one((1u32, 2u32)), h.hash_one((2u32, 1u32)));
        assert_ne!(h.hash_one(0u64), h.hash_one(1u64));
        // Another store, another seed.
        assert_ne!(h.hash_one(7u64), SeededHasher::new().hash_one(7u64));
        // 6400 consecutive keys over 64 shards: every shard gets a fair share.
        let mut counts = [0u32; SHARDS];
        for key in 0..6400u64 {
            counts[(h.hash_one(key) >> 32) as usize % SHARDS] += 1;
        }
        assert!(
            counts.iter().all(|&n| (50..=160).contains(&n)),
            "{counts:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn string_keys_are_stored_and_bounded() {
        let store = ShardedStore::<String>::new(2, Duration::from_millis(100), 1);
        let admit = |tat: Option<Nanos>| {
            Ok::<_, ()>((
                (),
                Nanos::from(u64::from(tat.unwrap_or(Nanos::from(0u64))) + 1),
            ))
        };
        store.measure_and_replace(&"a".to_owned(), admit).unwrap();
        store.measure_and_replace(&"b".to_owned(), admit).unwrap();
        assert_eq!(store.len(), 2);
        // Full: a third key is not stored, and is measured as spent.
        let seen = store
            .measure_and_replace(&"c".to_owned(), Err::<((), Nanos), _>)
            .unwrap_err();
        assert!(seen.is_some());
        assert_eq!(store.len(), 2);
    }
}
