//! One breaker per key (host, endpoint, tenant), created on first use, evicted when idle.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::config::ensure;
use palisade_core::{CircuitOpen, Classify, ConfigError, Name, RejectionAware, time};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::event::Metrics;
use crate::future::{OwnCount, Recorder, ResponseFuture};
use crate::state::Breaker;
use crate::{CircuitBreakerConfig, CircuitBreakerHandle, State};

const SHARDS: usize = 16;

/// How many keys a keyed breaker keeps, and when an idle key is forgotten.
///
/// Memory per key is about 1.4 KB plus the key and the window: the breaker itself (at most
/// 1.25 KB with the `metrics` feature, checked by a test; its hot atomics sit on their own
/// cache lines so threads do not slow each other down), its map entry and name, and two
/// bits per slot of a count window (32 bytes for the default 100 slots) or eight bytes per
/// bucket of a time window. 10,000 keys with the default window take about 14 MB.
///
/// Loaded from data (`serde` feature), the limits are validated as
/// [`KeyedLimits::validate`] does; `with_limits` also checks them against the breaker's
/// config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(default, deny_unknown_fields, try_from = "LimitsData")
)]
pub struct KeyedLimits {
    /// At most this many keys; when full, idle keys are evicted first, then the least
    /// recently used eighth (closed breakers before open ones, whose state matters). Keys
    /// with calls in flight or a handle held, and forced-open keys, are never evicted, so
    /// when all keys are pinned the registry grows past the limit (it retries eviction
    /// after another eighth of new keys, not on every new key). Default 10,000: far more
    /// hosts or endpoints than a client usually talks to, and only a few MB.
    pub max_keys: usize,
    /// A key with no calls for this long is evicted (unless forced open). Default 10 minutes:
    /// longer than the default maximum open duration (5 minutes), so eviction never cuts an
    /// open period short. Must be at least the config's `max_open_duration`.
    #[cfg_attr(feature = "serde", serde(with = "palisade_core::config::duration"))]
    pub idle_timeout: Duration,
}

impl KeyedLimits {
    /// Check the limits on their own: `max_keys` at least 1, `idle_timeout` above 0.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            self.max_keys >= 1,
            "circuit_breaker",
            "max_keys",
            self.max_keys,
            "1 or more",
        )?;
        ensure(
            !self.idle_timeout.is_zero(),
            "circuit_breaker",
            "idle_timeout",
            self.idle_timeout,
            "above 0 (and at least the config's max_open_duration)",
        )
    }
}

/// `KeyedLimits` as data, validated into the real thing.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LimitsData {
    max_keys: usize,
    #[serde(with = "palisade_core::config::duration")]
    idle_timeout: Duration,
}

#[cfg(feature = "serde")]
impl Default for LimitsData {
    fn default() -> Self {
        let KeyedLimits {
            max_keys,
            idle_timeout,
        } = KeyedLimits::default();
        Self {
            max_keys,
            idle_timeout,
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<LimitsData> for KeyedLimits {
    type Error = ConfigError;

    fn try_from(d: LimitsData) -> Result<Self, ConfigError> {
        let limits = KeyedLimits {
            max_keys: d.max_keys,
            idle_timeout: d.idle_timeout,
        };
        limits.validate()?;
        Ok(limits)
    }
}

impl Default for KeyedLimits {
    fn default() -> Self {
        Self {
            max_keys: 10_000,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

// ===== registry =====

struct Slot {
    /// The key's breaker, behind the reference count its calls share.
    breaker: Arc<OwnCount>,
    /// Last use, in nanoseconds since the registry's origin (coarse: see `touch`).
    last_used: AtomicU64,
}

struct Registry<K> {
    name: Name,
    config: Mutex<CircuitBreakerConfig>,
    limits: KeyedLimits,
    shards: Box<[RwLock<HashMap<K, Slot>>]>,
    hasher: RandomState,
    len: AtomicUsize,
    origin: Instant,
    last_sweep: AtomicU64,
    /// Evict when a new key arrives and this many keys are held: `max_keys`, or more after
    /// a pass that could not get under it (every key pinned), so a pinned registry is not
    /// scanned on every new key.
    evict_at: AtomicUsize,
    /// Eviction passes run (for tests).
    passes: AtomicUsize,
}

impl<K: Hash + Eq + Clone + fmt::Debug> Registry<K> {
    fn nanos(&self, now: Instant) -> u64 {
        time::nanos_since(self.origin, now)
    }

    fn idle_nanos(&self) -> u64 {
        time::nanos(self.limits.idle_timeout)
    }

    /// The eviction batch when full: an eighth of the limit.
    fn batch(&self) -> usize {
        (self.limits.max_keys / 8).max(1)
    }

    fn shard(&self, key: &K) -> &RwLock<HashMap<K, Slot>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % self.shards.len()]
    }

    /// The breaker of `key`, created on first use.
    fn breaker(&self, key: K, now: Instant) -> Arc<OwnCount> {
        let t = self.nanos(now);
        {
            let map = self
                .shard(&key)
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = map.get(&key) {
                self.touch(slot, t);
                return Arc::clone(&slot.breaker);
            }
        }
        self.insert(key, now, t)
    }

    /// Mark a slot used. Stored only when it moved by a 64th of the idle timeout, so hot
    /// keys do not write a shared line on every call.
    fn touch(&self, slot: &Slot, t: u64) {
        let last = slot.last_used.load(Ordering::Relaxed);
        if t.saturating_sub(last) > self.idle_nanos() / 64 {
            slot.last_used.store(t, Ordering::Relaxed);
        }
    }

    fn insert(&self, key: K, now: Instant, t: u64) -> Arc<OwnCount> {
        let sweep_due =
            t.saturating_sub(self.last_sweep.load(Ordering::Relaxed)) >= self.idle_nanos();
        if sweep_due || self.len.load(Ordering::Relaxed) >= self.evict_at.load(Ordering::Relaxed) {
            self.evict(t);
        }
        // Lock order: the config, then a shard (as `update_config` does), so a key created
        // during a config update gets the new config or is updated with the others.
        let current = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        let mut map = self
            .shard(&key)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = map.get(&key) {
            return Arc::clone(&slot.breaker);
        }
        let mut config = current.clone();
        config.name = Name::from(format!("{}/{:?}", self.name, key));
        // Per-key breakers count into the layer's counters; per-key gauges would leave a
        // series behind for every evicted key.
        let metrics = Metrics::register(&self.name, false);
        let breaker = Arc::new(OwnCount(Arc::new(Breaker::new(config, now, metrics))));
        let slot = Slot {
            breaker: Arc::clone(&breaker),
            last_used: AtomicU64::new(t),
        };
        map.insert(key, slot);
        self.len.fetch_add(1, Ordering::Relaxed);
        breaker
    }

    /// Evict idle keys; if still full, the least recently used eighth (closed breakers
    /// first: an open breaker's state is what protects the backend). Returns how many keys
    /// were evicted. Keys with calls in flight (or a handle held) and forced-open keys stay.
    fn evict(&self, t: u64) -> usize {
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.last_sweep.store(t, Ordering::Relaxed);
        let idle = self.idle_nanos();
        let mut evicted =
            self.retain(|slot| t.saturating_sub(slot.last_used.load(Ordering::Relaxed)) < idle);
        if self.len.load(Ordering::Relaxed) >= self.limits.max_keys {
            evicted += self.evict_least_recently_used(self.batch());
        }
        self.rearm();
        evicted
    }

    /// Set the size of the next eviction: at the limit, or, when a pass could not get
    /// under it, another batch of new keys later.
    fn rearm(&self) {
        let len = self.len.load(Ordering::Relaxed);
        let max = self.limits.max_keys;
        let at = if len < max {
            max
        } else {
            len.saturating_add(self.batch())
        };
        self.evict_at.store(at, Ordering::Relaxed);
    }

    /// Evict exactly `batch` evictable keys (fewer if fewer are evictable): closed ones
    /// before open ones, least recently used first. Ties on the last use (keys touched at
    /// the same instant) do not widen the batch.
    fn evict_least_recently_used(&self, batch: usize) -> usize {
        let mut candidates: Vec<(bool, u64, usize, K)> = Vec::new();
        for (i, shard) in self.shards.iter().enumerate() {
            let map = shard.read().unwrap_or_else(PoisonError::into_inner);
            candidates.extend(
                map.iter()
                    .filter(|(_, slot)| !pinned(slot))
                    .map(|(key, slot)| {
                        let open = !matches!(slot.breaker.state(), State::Closed | State::Disabled);
                        (open, slot.last_used.load(Ordering::Relaxed), i, key.clone())
                    }),
            );
        }
        let batch = batch.min(candidates.len());
        if batch == 0 {
            return 0;
        }
        candidates.select_nth_unstable_by(batch - 1, |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        candidates.truncate(batch);
        let mut removed = 0;
        for (_, _, i, key) in candidates {
            let mut map = self.shards[i]
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            // Pinned since it was picked: it stays.
            if map.get(&key).is_some_and(|slot| !pinned(slot)) {
                map.remove(&key);
                removed += 1;
            }
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    /// Keep the slots for which `keep` holds (and those that must stay); returns how many
    /// were removed.
    fn retain(&self, keep: impl Fn(&Slot) -> bool) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
            let before = map.len();
            map.retain(|_, slot| keep(slot) || pinned(slot));
            removed += before - map.len();
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        removed
    }

    fn all_slots<T>(&self, f: impl Fn(&Slot) -> T) -> Vec<T> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let map = shard.read().unwrap_or_else(PoisonError::into_inner);
            out.extend(map.values().map(&f));
        }
        out
    }

    fn get(&self, key: &K) -> Option<Arc<Breaker>> {
        let map = self
            .shard(key)
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(key).map(|slot| Arc::clone(&slot.breaker.0))
    }
}

/// A slot that eviction must leave: calls in flight or a handle held (someone else holds
/// its breaker), or forced open by an operator.
fn pinned(slot: &Slot) -> bool {
    Arc::strong_count(&slot.breaker) > 1
        || Arc::strong_count(&slot.breaker.0) > 1
        || slot.breaker.state() == State::ForcedOpen
}

// ===== KeyedCircuitBreakerLayer =====

/// Applies one circuit breaker per key to a service: the key extractor (`Fn(&Req) -> K`)
/// picks the breaker, so a failing host opens only its own breaker.
///
/// Breakers are created on first use from one config (named `"<name>/<key:?>"`) and
/// evicted when idle or when [`KeyedLimits::max_keys`] is reached. Unlike the single
/// breaker's lock-free path, the per-call lookup takes a shared read lock on one of 16
/// shards (creating a key takes that shard's write lock) and reads the clock once, to track
/// idleness. Per-key breakers share the layer's counters (`transitions`, `rejected`) but
/// have no state or rate gauges: those series would outlive evicted keys. Their events and
/// rejections carry the per-key name.
///
/// ```
/// use palisade_circuit_breaker::{CircuitBreakerConfig, KeyedCircuitBreakerLayer, State};
/// use palisade_core::BoxError;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let config = CircuitBreakerConfig::builder().consecutive_failures(2).build().unwrap();
/// let layer = KeyedCircuitBreakerLayer::new(config, |host: &&'static str| *host);
/// let handle = layer.handle();
/// let mut svc = ServiceBuilder::new().layer(layer).service_fn(|host: &'static str| async move {
///     if host == "down" { Err::<(), BoxError>("refused".into()) } else { Ok(()) }
/// });
/// for _ in 0..2 {
///     let _ = svc.ready().await.unwrap().call("down").await;
/// }
/// assert_eq!(handle.get(&"down").map(|h| h.state()), Some(State::Open));
/// assert!(svc.ready().await.unwrap().call("up").await.is_ok());
/// # }
/// ```
pub struct KeyedCircuitBreakerLayer<F, K, C = RejectionAware> {
    registry: Arc<Registry<K>>,
    key_fn: F,
    classifier: C,
}

impl<F, K> KeyedCircuitBreakerLayer<F, K>
where
    K: Hash + Eq + Clone + fmt::Debug,
{
    /// One breaker per key, with the default [`KeyedLimits`] (the idle timeout raised to
    /// the config's `max_open_duration` if that is longer).
    pub fn new<Req>(config: CircuitBreakerConfig, key_fn: F) -> Self
    where
        F: Fn(&Req) -> K,
    {
        let limits = KeyedLimits {
            idle_timeout: KeyedLimits::default()
                .idle_timeout
                .max(config.max_open_duration()),
            ..KeyedLimits::default()
        };
        Self::build(config, key_fn, limits)
    }

    /// One breaker per key, with explicit limits.
    pub fn with_limits<Req>(
        config: CircuitBreakerConfig,
        key_fn: F,
        limits: KeyedLimits,
    ) -> Result<Self, ConfigError>
    where
        F: Fn(&Req) -> K,
    {
        let layer = "circuit_breaker";
        limits.validate()?;
        ensure(
            limits.idle_timeout >= config.max_open_duration(),
            layer,
            "idle_timeout",
            limits.idle_timeout,
            format!(
                "at least max_open_duration ({:?})",
                config.max_open_duration
            ),
        )?;
        Ok(Self::build(config, key_fn, limits))
    }

    fn build(config: CircuitBreakerConfig, key_fn: F, limits: KeyedLimits) -> Self {
        let now = Instant::now();
        let registry = Registry {
            name: config.name.clone(),
            config: Mutex::new(config),
            limits,
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            len: AtomicUsize::new(0),
            origin: now,
            last_sweep: AtomicU64::new(0),
            evict_at: AtomicUsize::new(limits.max_keys),
            passes: AtomicUsize::new(0),
        };
        Self {
            registry: Arc::new(registry),
            key_fn,
            classifier: RejectionAware,
        }
    }
}

impl<F, K, C> KeyedCircuitBreakerLayer<F, K, C> {
    /// Judge results with `classifier` (see
    /// [`CircuitBreakerLayer::classifier`](crate::CircuitBreakerLayer::classifier)).
    pub fn classifier<C2>(self, classifier: C2) -> KeyedCircuitBreakerLayer<F, K, C2> {
        KeyedCircuitBreakerLayer {
            registry: self.registry,
            key_fn: self.key_fn,
            classifier,
        }
    }

    /// The handle of this layer's breakers.
    pub fn handle(&self) -> KeyedCircuitBreakerHandle<K> {
        KeyedCircuitBreakerHandle {
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<F: Clone, K, C: Clone> Clone for KeyedCircuitBreakerLayer<F, K, C> {
    fn clone(&self) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
            key_fn: self.key_fn.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<F, K, C> fmt::Debug for KeyedCircuitBreakerLayer<F, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("name", &self.registry.name)
            .field("keys", &self.registry.len.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<S, F: Clone, K, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<F, K, C> {
    type Service = KeyedCircuitBreaker<S, F, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            registry: Arc::clone(&self.registry),
            key_fn: self.key_fn.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

// ===== KeyedCircuitBreaker =====

/// A service guarded by one circuit breaker per key; see [`KeyedCircuitBreakerLayer`].
pub struct KeyedCircuitBreaker<S, F, K, C = RejectionAware> {
    inner: S,
    registry: Arc<Registry<K>>,
    key_fn: F,
    classifier: C,
}

impl<S, F, K, C> KeyedCircuitBreaker<S, F, K, C> {
    /// The handle of this service's breakers.
    pub fn handle(&self) -> KeyedCircuitBreakerHandle<K> {
        KeyedCircuitBreakerHandle {
            registry: Arc::clone(&self.registry),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, F, K, C, Req> Service<Req> for KeyedCircuitBreaker<S, F, K, C>
where
    S: Service<Req>,
    S::Error: From<CircuitOpen>,
    F: Fn(&Req) -> K,
    K: Hash + Eq + Clone + fmt::Debug,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let now = Instant::now();
        let breaker = self.registry.breaker((self.key_fn)(&req), now);
        match breaker.acquire(|| now) {
            Ok(permit) => {
                let start = breaker.needs_start().then_some(now);
                let recorder = Recorder::new(breaker, permit, start);
                ResponseFuture::admitted(self.inner.call(req), recorder, self.classifier.clone())
            }
            Err(retry_after) => {
                let name = breaker.emitter().name().clone();
                ResponseFuture::rejected(CircuitOpen::new(name, retry_after))
            }
        }
    }
}

impl<S: Clone, F: Clone, K, C: Clone> Clone for KeyedCircuitBreaker<S, F, K, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            registry: Arc::clone(&self.registry),
            key_fn: self.key_fn.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: fmt::Debug, F, K, C> fmt::Debug for KeyedCircuitBreaker<S, F, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("name", &self.registry.name)
            .finish_non_exhaustive()
    }
}

// ===== KeyedCircuitBreakerHandle =====

/// Reads and controls the breakers of a keyed layer.
pub struct KeyedCircuitBreakerHandle<K> {
    registry: Arc<Registry<K>>,
}

impl<K: Hash + Eq + Clone + fmt::Debug> KeyedCircuitBreakerHandle<K> {
    /// The handle of `key`'s breaker, if it exists (it is created by the key's first call).
    pub fn get(&self, key: &K) -> Option<CircuitBreakerHandle> {
        self.registry.get(key).map(CircuitBreakerHandle::new)
    }

    /// How many keys have a breaker.
    pub fn len(&self) -> usize {
        self.registry.len.load(Ordering::Relaxed)
    }

    /// `true` when no key has a breaker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evict the keys idle for longer than the idle timeout now (this also happens on its
    /// own when new keys arrive); returns how many were evicted.
    pub fn evict_idle(&self) -> usize {
        let t = self.registry.nanos(Instant::now());
        let idle = self.registry.idle_nanos();
        self.registry.last_sweep.store(t, Ordering::Relaxed);
        let evicted = self
            .registry
            .retain(|slot| t.saturating_sub(slot.last_used.load(Ordering::Relaxed)) < idle);
        self.registry.rearm();
        evicted
    }

    /// Apply a new config to every existing key and to keys created from now on (see
    /// [`CircuitBreakerHandle::update`] for what may change).
    #[allow(
        clippy::needless_pass_by_value,
        reason = "one signature for every handle"
    )]
    pub fn update(&self, config: CircuitBreakerConfig) -> Result<(), ConfigError> {
        let config = &config;
        let mut current = self
            .registry
            .config
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ensure(
            config.window == current.window,
            "circuit_breaker",
            "window",
            config.window,
            "the window the breaker was built with",
        )?;
        config.validate()?;
        for breaker in self.registry.all_slots(|slot| Arc::clone(&slot.breaker)) {
            breaker.update_config(config)?;
        }
        let listeners = current.listeners.clone();
        let name = current.name.clone();
        *current = config.clone();
        current.listeners = listeners;
        current.name = name;
        Ok(())
    }
}

impl<K> Clone for KeyedCircuitBreakerHandle<K> {
    fn clone(&self) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
        }
    }
}

impl<K> fmt::Debug for KeyedCircuitBreakerHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerHandle")
            .field("name", &self.registry.name)
            .field("keys", &self.registry.len.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn layer(max_keys: usize) -> KeyedCircuitBreakerLayer<fn(&u32) -> u32, u32> {
        let config = CircuitBreakerConfig::builder()
            .name("k")
            .consecutive_failures(1)
            .build()
            .expect("valid config");
        let limits = KeyedLimits {
            max_keys,
            ..KeyedLimits::default()
        };
        KeyedCircuitBreakerLayer::with_limits(config, (|k: &u32| *k) as fn(&u32) -> u32, limits)
            .expect("valid limits")
    }

    #[tokio::test(start_paused = true)]
    async fn keys_used_at_one_instant_are_evicted_one_batch_at_a_time() {
        let layer = layer(80);
        let r = &layer.registry;
        let now = Instant::now();
        for k in 0..80 {
            drop(r.breaker(k, now));
        }
        // Some of them are open: their state must survive the eviction.
        for k in 0..5 {
            let b = r.breaker(k, now);
            let p = b.acquire(|| now).unwrap();
            b.record(p, palisade_core::Outcome::Failure, None, || now);
            assert_eq!(b.state(), State::Open);
        }
        drop(r.breaker(80, now));
        assert_eq!(r.len.load(Ordering::Relaxed), 71, "80 - a batch of 10 + 1");
        for k in 0..5 {
            assert_eq!(
                r.get(&k).map(|b| b.state()),
                Some(State::Open),
                "open breakers are evicted after closed ones"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pinned_registry_is_not_rescanned_on_every_new_key() {
        let layer = layer(16);
        let r = &layer.registry;
        let now = Instant::now();
        // Every key has a call in flight: nothing can be evicted.
        let held: Vec<_> = (0..16).map(|k| r.breaker(k, now)).collect();
        let passes = r.passes.load(Ordering::Relaxed);
        let more: Vec<_> = (16..32).map(|k| r.breaker(k, now)).collect();
        let ran = r.passes.load(Ordering::Relaxed) - passes;
        assert!(ran <= 8, "{ran} eviction passes for 16 new keys");
        assert_eq!(r.len.load(Ordering::Relaxed), 32, "pinned keys all stay");
        // Released, the next new key brings the registry back under its limit.
        drop((held, more));
        drop(r.breaker(100, now));
        assert!(r.len.load(Ordering::Relaxed) <= 32);
        let before = r.len.load(Ordering::Relaxed);
        for k in 200..240 {
            drop(r.breaker(k, now));
        }
        assert!(
            r.len.load(Ordering::Relaxed) <= before.max(16),
            "bounded again: {}",
            r.len.load(Ordering::Relaxed)
        );
    }
}
