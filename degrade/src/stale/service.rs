//! The stale cache service and its shared state.

use std::any::Any;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::hash::SeededHasher;
use palisade_core::metrics::{Counter, Histogram};
use palisade_core::{AsRejection, Classify, Emitter, Name, RejectionAware, time};
use tokio::time::Instant;
use tower_service::Service;

use super::store::Store;
use super::{ResponseFuture, StaleConfig};
use crate::config::AtomicTriggers;
use crate::metrics::{ByTrigger, mode_gauge, stale_age};
use crate::{DegradeEvent, Degraded, Mark, Switch, Trigger};

/// What one service holds: the layer's shared core and its classifier.
pub(crate) struct Shared<KF, K, V, C> {
    core: Arc<Core<KF, K, V>>,
    classifier: C,
}

impl<KF, K, V, C> Shared<KF, K, V, C> {
    pub(crate) fn new(core: Arc<Core<KF, K, V>>, classifier: C) -> Self {
        Self { core, classifier }
    }
}

impl<KF, K, V, C> std::ops::Deref for Shared<KF, K, V, C> {
    type Target = Core<KF, K, V>;

    fn deref(&self) -> &Core<KF, K, V> {
        &self.core
    }
}

/// State shared by a layer and all its services: the cache itself, config and metrics.
pub(crate) struct Core<KF, K, V> {
    pub(crate) name: Name,
    pub(crate) triggers: AtomicTriggers,
    // Nanoseconds; a handle may change it.
    max_staleness: AtomicU64,
    pub(crate) capacity: usize,
    pub(crate) key: KF,
    /// The entries in shards, each behind its own lock, picked by the key's hash: calls on
    /// different keys rarely meet on a lock, and no lock is store-wide.
    shards: Box<[Mutex<Store<K, V>>]>,
    hasher: SeededHasher,
    pub(crate) emitter: Emitter<DegradeEvent>,
    served: ByTrigger,
    missed: Counter,
    age: Histogram,
    pub(crate) switch: Switch,
}

impl<KF, K, V> Core<KF, K, V>
where
    K: Hash + Eq + Clone,
{
    pub(crate) fn new(config: StaleConfig, key: KF) -> Self {
        let StaleConfig {
            name,
            capacity,
            max_staleness,
            triggers,
            listeners,
            switch,
        } = config;
        let emitter = Emitter::new(name.clone(), listeners);
        switch.watch(emitter.clone(), mode_gauge(&name));
        Self {
            served: ByTrigger::register("palisade_degrade_stale_total", &name),
            missed: Counter::register("palisade_degrade_stale_missed_total", &name, &[]),
            age: stale_age(&name),
            shards: shards(capacity),
            hasher: SeededHasher::new(),
            name,
            triggers: AtomicTriggers::new(triggers),
            max_staleness: AtomicU64::new(time::nanos(max_staleness)),
            capacity,
            key,
            emitter,
            switch,
        }
    }

    /// The shard of `key`, locked.
    #[inline]
    fn store(&self, key: &K) -> MutexGuard<'_, Store<K, V>> {
        let index = if self.shards.len() == 1 {
            0
        } else {
            (self.hasher.hash_one(key) % self.shards.len() as u64) as usize
        };
        lock(&self.shards[index])
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// How old an entry may be and still be served.
    pub(crate) fn max_staleness(&self) -> Duration {
        time::from_nanos(self.max_staleness.load(Ordering::Relaxed))
    }

    pub(crate) fn set_max_staleness(&self, max_staleness: Duration) {
        self.max_staleness
            .store(time::nanos(max_staleness), Ordering::Relaxed);
    }

    pub(crate) fn clear(&self) {
        for shard in &self.shards {
            lock(shard).clear();
        }
    }

    pub(crate) fn remove(&self, key: &K) -> bool {
        self.store(key).remove(key)
    }

    /// Remember a live answer (cloned outside the lock; the lock is held for the insert).
    pub(crate) fn remember(&self, key: K, value: &V)
    where
        V: Clone,
    {
        let value = Arc::new(value.clone());
        let now = Instant::now();
        self.store(&key).insert(key, value, now);
    }

    /// The entry for `key` and its age, if it is fresh enough to serve.
    fn lookup(&self, key: &K) -> Option<(Arc<V>, Duration)> {
        let now = Instant::now();
        self.store(key).get(key, now, self.max_staleness())
    }

    /// Serve a remembered answer: clone it (outside the lock), mark it, count it.
    fn serve(&self, value: &V, age: Duration, trigger: Trigger) -> V
    where
        V: Clone + Mark,
    {
        let mut answer = value.clone();
        answer.mark(Degraded::stale(self.name.clone(), age, trigger));
        self.served.increment(trigger);
        self.age.record(age.as_secs_f64());
        self.emitter
            .emit(|| DegradeEvent::StaleServed { age, trigger });
        answer
    }

    /// A fresh-enough answer for `key`, marked stale, or `None` (reported as a miss).
    pub(crate) fn stale(&self, key: &K, trigger: Trigger) -> Option<V>
    where
        V: Clone + Mark,
    {
        let Some((value, age)) = self.lookup(key) else {
            self.missed.increment(1);
            self.emitter.emit(|| DegradeEvent::StaleMissed { trigger });
            return None;
        };
        Some(self.serve(&value, age, trigger))
    }
}

impl<KF, K, V, C> Shared<KF, K, V, C>
where
    K: Hash + Eq + Clone,
{
    /// Whether `result` is a good live answer worth remembering: a success by the
    /// classifier and not already degraded by an inner layer ("the last good response").
    fn is_good<E>(&self, result: &Result<V, E>) -> bool
    where
        V: Mark,
        C: Classify<V, E>,
    {
        matches!(result, Ok(answer) if answer.degraded().is_none())
            && self.classifier.classify(result).is_success()
    }

    /// Settle a live result: serve stale if it triggers, remember it if it is good.
    pub(crate) fn settle<E>(&self, key: K, result: Result<V, E>) -> Result<V, E>
    where
        V: Clone + Mark,
        E: AsRejection,
        C: Classify<V, E>,
    {
        if let Some(trigger) = self.triggers.load().check(&self.classifier, &result) {
            return self.stale(&key, trigger).map_or(result, Ok);
        }
        if let Ok(answer) = &result
            && self.is_good(&result)
        {
            self.remember(key, answer);
        }
        result
    }
}

/// Capacities from this one up are split over [`SHARDS`] locks.
const SHARDED_FROM: usize = 1024;
/// Shards of a large store: enough that callers on different keys rarely meet on a lock.
const SHARDS: usize = 16;

/// The shards of a store of `capacity` entries: one below [`SHARDED_FROM`] (the least
/// recently stored entry of the whole store is evicted first), else [`SHARDS`], whose
/// capacities add up to `capacity` exactly (each evicts its own least recently stored
/// entry first, at least 64 entries deep).
fn shards<K: Hash + Eq + Clone, V>(capacity: usize) -> Box<[Mutex<Store<K, V>>]> {
    let n = if capacity >= SHARDED_FROM { SHARDS } else { 1 };
    (0..n)
        .map(|i| Mutex::new(Store::new(capacity / n + usize::from(i < capacity % n))))
        .collect()
}

/// Lock a shard. A panic elsewhere cannot leave a store inconsistent (every method restores
/// its invariants before returning), so a poisoned lock is still usable.
#[inline]
fn lock<K, V>(shard: &Mutex<Store<K, V>>) -> MutexGuard<'_, Store<K, V>> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Mode: every call goes live; the cache answers only when the live call fails (the
/// default).
#[derive(Debug, Clone, Copy, Default)]
pub struct OnFailure;

/// Mode: stale-while-revalidate. A key with a fresh-enough entry is answered from the cache
/// at once (marked [`Trigger::Revalidate`]) while one background call per key refreshes it;
/// keys without one go live as in [`OnFailure`]. Needs a tokio runtime to spawn on (without
/// one, calls go live) and `Send + 'static` service futures.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhileRevalidating;

/// A service that remembers the last good answer per key and serves it, marked stale, when
/// the live call fails. Built by [`StaleCacheLayer`](super::StaleCacheLayer).
///
/// Readiness is honest: an error from the inner service's `poll_ready` (a closed
/// connection, a `Buffer` whose worker is gone) is not passed to the caller. `poll_ready`
/// records it and reports ready; the next `call` treats it as the live call's error: a
/// fresh-enough entry answers if it triggers, the error is returned if not. The inner
/// service is not called after a readiness error.
pub struct StaleCache<S, KF, K, V, C = RejectionAware, M = OnFailure> {
    inner: S,
    shared: Arc<Shared<KF, K, V, C>>,
    // The inner service's readiness error (an `S::Error`), for the next `call`; reached
    // only through `&mut self` (`get_mut`, never locked).
    ready_error: Mutex<Option<Box<dyn Any + Send>>>,
    _mode: PhantomData<fn() -> M>,
}

impl<S, KF, K, V, C, M> StaleCache<S, KF, K, V, C, M> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<KF, K, V, C>>) -> Self {
        Self {
            inner,
            shared,
            ready_error: Mutex::new(None),
            _mode: PhantomData,
        }
    }

    /// Poll the inner service; a readiness error is kept for the next call.
    fn poll_inner<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>>
    where
        S: Service<Req>,
        S::Error: Send + 'static,
    {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(e)) => {
                *self.ready_slot() = Some(Box::new(e));
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) => {
                // Ready again after an error that no call consumed: the live path is back.
                self.ready_slot().take();
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The readiness error recorded for this call, if any.
    fn take_ready_error<Req>(&mut self) -> Option<S::Error>
    where
        S: Service<Req>,
        S::Error: 'static,
    {
        let error = self.ready_slot().take()?;
        Some(
            *error
                .downcast::<S::Error>()
                .expect("only the inner service's readiness error is stored"),
        )
    }

    fn ready_slot(&mut self) -> &mut Option<Box<dyn Any + Send>> {
        self.ready_error
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The degrade switch.
    pub fn switch(&self) -> &Switch {
        &self.shared.switch
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, KF, K, V, C, Req> Service<Req> for StaleCache<S, KF, K, V, C, OnFailure>
where
    S: Service<Req, Response = V>,
    S::Error: AsRejection + Send + 'static,
    KF: Fn(&Req) -> K,
    K: Hash + Eq + Clone,
    V: Clone + Mark,
    C: Classify<V, S::Error>,
{
    type Response = V;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, KF, K, V, C, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Even in degraded mode a call may need the service (a key with no entry).
        self.poll_inner(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = (self.shared.key)(&req);
        if let Some(error) = self.take_ready_error() {
            return ResponseFuture::settled(self.shared.settle(key, Err(error)));
        }
        if self.shared.switch.is_degraded()
            && let Some(answer) = self.shared.stale(&key, Trigger::Manual)
        {
            return ResponseFuture::cached(answer);
        }
        let fut = self.inner.call(req);
        ResponseFuture::live(Arc::clone(&self.shared), fut, key)
    }
}

impl<S, KF, K, V, C, Req> Service<Req> for StaleCache<S, KF, K, V, C, WhileRevalidating>
where
    S: Service<Req, Response = V>,
    S::Future: Send + 'static,
    S::Error: AsRejection + Send + 'static,
    KF: Fn(&Req) -> K + Send + Sync + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Mark + Send + Sync + 'static,
    C: Classify<V, S::Error> + Send + Sync + 'static,
{
    type Response = V;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, KF, K, V, C, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.poll_inner(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = (self.shared.key)(&req);
        // The inner service failed its readiness: it cannot refresh anything; the cache
        // answers for it as for a failed live call.
        if let Some(error) = self.take_ready_error() {
            return ResponseFuture::settled(self.shared.settle(key, Err(error)));
        }
        if self.shared.switch.is_degraded()
            && let Some(answer) = self.shared.stale(&key, Trigger::Manual)
        {
            return ResponseFuture::cached(answer);
        }
        let runtime = tokio::runtime::Handle::try_current();
        let found = runtime.as_ref().ok().and_then(|_| self.shared.lookup(&key));
        let (Ok(runtime), Some((value, age))) = (runtime, found) else {
            let fut = self.inner.call(req);
            return ResponseFuture::live(Arc::clone(&self.shared), fut, key);
        };
        if self.shared.store(&key).begin_refresh(&key) {
            let refresh = Refresh {
                shared: Arc::clone(&self.shared),
                key: Some(key),
            };
            let fut = self.inner.call(req);
            runtime.spawn(async move { refresh.finish(&fut.await) });
        }
        ResponseFuture::cached(self.shared.serve(&value, age, Trigger::Revalidate))
    }
}

/// One background refresh of a key; ends the refresh even if the task is dropped.
struct Refresh<KF, K: Hash + Eq + Clone, V, C> {
    shared: Arc<Shared<KF, K, V, C>>,
    key: Option<K>,
}

impl<KF, K: Hash + Eq + Clone, V, C> Refresh<KF, K, V, C> {
    fn finish<E>(mut self, result: &Result<V, E>)
    where
        V: Clone + Mark,
        C: Classify<V, E>,
    {
        let key = self.key.take().expect("finished once");
        let refreshed = self.shared.is_good(result);
        self.shared.store(&key).end_refresh(&key);
        if let Ok(answer) = result
            && refreshed
        {
            self.shared.remember(key, answer);
        }
        self.shared
            .emitter
            .emit(|| DegradeEvent::Revalidated { refreshed });
    }
}

impl<KF, K: Hash + Eq + Clone, V, C> Drop for Refresh<KF, K, V, C> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.shared.store(&key).end_refresh(&key);
        }
    }
}

impl<S: Clone, KF, K, V, C, M> Clone for StaleCache<S, KF, K, V, C, M> {
    fn clone(&self) -> Self {
        Self::from_shared(self.inner.clone(), Arc::clone(&self.shared))
    }
}

impl<S: fmt::Debug, KF, K, V, C, M> fmt::Debug for StaleCache<S, KF, K, V, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleCache")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_large_store_is_sharded_and_holds_its_capacity_exactly() {
        let config = StaleConfig::builder().capacity(2050).build().unwrap();
        let core: Core<_, u64, u64> = Core::new(config, |k: &u64| *k);
        assert_eq!(core.shards.len(), SHARDS);
        for k in 0..20_000u64 {
            core.remember(k, &k);
        }
        assert_eq!(core.len(), 2050, "every shard full, none over");
        assert_eq!(core.lookup(&19_999).map(|(v, _)| *v), Some(19_999));
        assert!(core.remove(&19_999));
        core.clear();
        assert_eq!(core.len(), 0);

        let small = StaleConfig::builder().capacity(1023).build().unwrap();
        let small: Core<_, u64, u64> = Core::new(small, |k: &u64| *k);
        assert_eq!(
            small.shards.len(),
            1,
            "below 1024, one store: exact eviction order"
        );
    }
}
