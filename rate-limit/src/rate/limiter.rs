//! The limiters behind a [`RateLimit`](super::RateLimit): direct (one quota) and keyed (one
//! quota per key), both governor GCRA state on the tokio clock; and the cost of a request.

use std::fmt;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, RateLimiter};
use palisade_core::config::ensure;
use palisade_core::metrics::Gauge;
use palisade_core::throttle::Quota;
use palisade_core::time::{self, AtomicInstant};
use palisade_core::{ConfigError, Emitter, Listeners};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::config::RateLimitConfig;
use super::pace::Pace;
use super::store::ShardedStore;
use crate::clock::{TokioClock, TokioInstant};
use crate::event::{LimitEvent, LimitKind};
use crate::metrics::Metrics;

type DirectGovernor =
    RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>;
type KeyedGovernor<K> = RateLimiter<K, ShardedStore<K>, TokioClock, NoOpMiddleware<TokioInstant>>;

// ===== Limiter =====

/// GCRA state that decides whether a request's cells conform now.
///
/// Implemented by [`Direct`] (one quota for all calls) and [`Keyed`] (one quota per key).
pub trait Limiter<Req>: Clone {
    /// What a request is limited by: `()` for a direct limiter, the extracted key for a
    /// keyed one.
    type Key;

    /// The request's key.
    fn key(&self, req: &Req) -> Self::Key;

    /// Consume `cells` cells for `key` if they conform now; otherwise consume nothing and
    /// return the earliest instant at which they would conform.
    fn check(&self, key: &Self::Key, cells: NonZeroU32) -> Result<(), Instant>;

    /// `true` when waiting calls are served strictly in arrival order through one queue
    /// (direct limiters). A keyed limiter returns `false`: one queue for all keys would let
    /// a noisy key hold up the others.
    fn fifo(&self) -> bool;
}

/// How late a tokio timer may fire: it rounds its deadline up to a whole millisecond.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

/// The limiter's settings and observability, shared by all clones of a layer.
pub(crate) struct Common {
    pub(crate) emitter: Emitter<LimitEvent>,
    pub(crate) metrics: Metrics,
    pub(crate) max_wait: Duration,
    pub(crate) burst: NonZeroU32,
    /// Hands the right to check the limiter to one waiting call at a time, in arrival
    /// order (tokio's semaphore is FIFO).
    pub(crate) turnstile: Arc<Semaphore>,
    /// Calls waiting in wait mode; while any wait, new calls queue behind them instead of
    /// taking the cells the head of the queue is waiting for.
    pub(crate) waiting: AtomicUsize,
    /// When the head of the queue expects its cells: the `retry_after` of a call whose max
    /// wait ends while it is still queued.
    next_conform: AtomicInstant,
    /// When the line last moved (a call in it was admitted), ns since `origin`: the cells
    /// of everyone in line are due one emission interval each after it (early refusal in
    /// wait mode).
    line_base: AtomicU64,
    /// The cells of the calls in line.
    pub(crate) queued: AtomicU64,
    origin: Instant,
    /// The run-time rate (see [`RateLimitHandle`](super::RateLimitHandle)).
    pub(crate) pace: Pace,
    /// The config the layer was built with.
    pub(crate) config: RateLimitConfig,
}

impl Common {
    pub(crate) fn new(config: RateLimitConfig, listeners: Listeners<LimitEvent>) -> Self {
        let now = Instant::now();
        Self {
            metrics: Metrics::register(&config.name, LimitKind::Rate),
            burst: NonZeroU32::new(config.effective_burst()).unwrap_or(NonZeroU32::MIN),
            emitter: Emitter::new(config.name.clone(), listeners),
            max_wait: config.max_wait,
            turnstile: Arc::new(Semaphore::new(1)),
            waiting: AtomicUsize::new(0),
            next_conform: AtomicInstant::new(now),
            line_base: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            origin: now,
            pace: Pace::new(
                config.cells,
                config.period,
                config.effective_burst(),
                config.ramp,
            ),
            config,
        }
    }

    /// Take `cells` for `key` from the pace and the limiter if both let them through now;
    /// otherwise take nothing (the pace's share is given back) and say when to look again.
    #[inline]
    pub(crate) fn check<Req, L: Limiter<Req>>(
        &self,
        limiter: &L,
        key: &L::Key,
        cells: NonZeroU32,
    ) -> Result<(), Instant> {
        let taken = self.pace.check(cells.get())?;
        limiter
            .check(key, cells)
            .inspect_err(|_| self.pace.refund(taken))
    }

    /// Set the rate to `cells` per `period` (validated: 1 cell or more, at least 1ns per
    /// cell, no faster than the configured rate).
    pub(crate) fn set_rate(&self, cells: u32, period: Duration) -> Result<(), ConfigError> {
        const LAYER: &str = "rate_limit";
        ensure(cells >= 1, LAYER, "cells", cells, "1 or more")?;
        ensure(
            !period.is_zero() && !(period / cells).is_zero(),
            LAYER,
            "period",
            period,
            "at least 1ns per cell (period / cells)",
        )?;
        ensure(
            period / cells <= super::MAX_REFILL,
            LAYER,
            "period",
            period,
            "at most about 30 years per cell (period / cells)",
        )?;
        let c = &self.config;
        // cells / period <= c.cells / c.period, exactly.
        let faster =
            u128::from(cells) * c.period.as_nanos() > u128::from(c.cells) * period.as_nanos();
        ensure(
            !faster,
            LAYER,
            "cells",
            format!(
                "{cells} per {}",
                palisade_core::config::duration::format(period)
            ),
            format!(
                "at most the configured rate, {} per {} (update the config to go faster)",
                c.cells,
                palisade_core::config::duration::format(c.period)
            ),
        )?;
        self.apply_rate(cells, period, time::nanos(period / cells));
        Ok(())
    }

    fn apply_rate(&self, cells: u32, period: Duration, interval: u64) {
        if self.pace.set(cells, period, interval) {
            self.emitter.emit(|| LimitEvent::RateSet { cells, period });
        }
    }

    /// Back to the configured rate, by the ramp.
    pub(crate) fn restore_rate(&self) {
        let c = &self.config;
        self.apply_rate(c.cells, c.period, 0);
    }

    /// Follow an upstream's advertised quota: `remaining` calls spread over `reset` (one
    /// per `reset / (remaining + 1)`), never above the configured rate; nothing until the
    /// reset when nothing remains.
    pub(crate) fn follow(&self, quota: Quota) {
        if quota.reset.is_zero() {
            return; // the quota resets now: nothing to learn
        }
        let c = &self.config;
        // `remaining` calls spread over `reset`, the last one before the reset: one per
        // `reset / (remaining + 1)`.
        let slots = quota.remaining.saturating_add(1).min(u64::from(u32::MAX));
        let interval = time::nanos(quota.reset) / slots;
        let configured = time::nanos(c.emission_interval());
        if interval <= configured {
            self.restore_rate();
        } else {
            let cells = u32::try_from(slots).unwrap_or(u32::MAX);
            self.apply_rate(cells, quota.reset, interval);
        }
        if quota.remaining == 0 {
            self.pace.hold_until(time::add(Instant::now(), quota.reset));
        }
    }

    pub(crate) fn set_next_conform(&self, at: Instant) {
        self.next_conform.store(at);
    }

    pub(crate) fn next_conform(&self) -> Instant {
        self.next_conform.load()
    }

    /// The first call to wait (no line ahead of it) expects its `cells` at `at`.
    pub(crate) fn start_line(&self, at: Instant, cells: NonZeroU32) {
        let cost = self.line_cost(cells);
        let base = time::nanos_since(self.origin, at).saturating_sub(cost);
        self.line_base.store(base, Ordering::Release);
    }

    /// A call in line was admitted `now`: the next cells are due from now.
    pub(crate) fn line_moved(&self, now: Instant) {
        self.line_base
            .store(time::nanos_since(self.origin, now), Ordering::Release);
    }

    fn line_cost(&self, cells: NonZeroU32) -> u64 {
        time::nanos(self.pace.interval()).saturating_mul(u64::from(cells.get()))
    }

    /// Whether a call costing `cells` may join the line: its turn comes after the cells of
    /// everyone in line, one emission interval each from when the line last moved. `Ok`
    /// if that is by `give_up`; otherwise `Err` with when its turn would come.
    pub(crate) fn join_line(
        &self,
        cells: NonZeroU32,
        now: Instant,
        give_up: Instant,
    ) -> Result<(), Instant> {
        let now_ns = time::nanos_since(self.origin, now);
        let queued = self.queued.load(Ordering::Acquire);
        let interval = time::nanos(self.pace.interval());
        let ahead = interval.saturating_mul(queued);
        let turn = self
            .line_base
            .load(Ordering::Acquire)
            .saturating_add(ahead)
            .max(now_ns)
            .saturating_add(self.line_cost(cells));
        // tokio's timers fire on whole milliseconds: each call in line (and this one) may
        // be admitted up to one later than its turn, which delays every turn after it.
        let calls = self.waiting.load(Ordering::Acquire) as u64;
        let slack = time::nanos(TIMER_RESOLUTION).saturating_mul(calls.saturating_add(1));
        if turn.saturating_add(slack) > time::nanos_since(self.origin, give_up) {
            return Err(time::add(self.origin, Duration::from_nanos(turn)));
        }
        Ok(())
    }
}

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Common")
            .field("name", self.emitter.name())
            .field("max_wait", &self.max_wait)
            .field("burst", &self.burst)
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn earliest(not_until: &NotUntil<TokioInstant>) -> Instant {
    not_until.earliest_possible().into_inner()
}

// ===== Direct =====

/// One GCRA quota shared by every call (and every clone of the layer).
///
/// The happy path is governor's `check_n`: one atomic compare-and-swap, no lock, no
/// allocation.
#[derive(Clone)]
pub struct Direct {
    governor: Arc<DirectGovernor>,
    refill: Duration,
    burst: NonZeroU32,
}

impl Direct {
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        Self {
            governor: Arc::new(RateLimiter::direct_with_clock(
                config.quota(),
                TokioClock::new(),
            )),
            refill: config.quota().burst_size_replenished_in(),
            burst: config.quota().burst_size(),
        }
    }

    /// Take every cell available now, as when an upstream says "slow down": no call
    /// conforms until cells replenish again (one per emission interval), for every caller
    /// sharing the limit; waiting calls wait longer, rejected ones get the new
    /// `retry_after`. As resilience4j's `drainPermissions`.
    ///
    /// ```
    /// use palisade_core::{BoxError, RateLimited};
    /// use palisade_rate_limit::RateLimitLayer;
    /// use std::time::Duration;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let layer = RateLimitLayer::builder(10, Duration::from_secs(1)).build().unwrap();
    /// let svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }));
    /// layer.limiter().drain();
    /// let err = svc.oneshot(1).await.unwrap_err();
    /// let limited = err.downcast_ref::<RateLimited>().unwrap();
    /// assert_eq!(limited.retry_after(), Duration::from_millis(100));
    /// # }
    /// ```
    pub fn drain(&self) {
        drain_with(self.burst, |cells| {
            matches!(self.governor.check_n(cells), Ok(Ok(())))
        });
    }
}

/// Take cells with `take` (true: taken) until none is left: the largest powers of two
/// first, so draining a burst of `b` cells takes O(log b) checks.
fn drain_with(burst: NonZeroU32, mut take: impl FnMut(NonZeroU32) -> bool) {
    let mut size = burst.get().checked_next_power_of_two().unwrap_or(1 << 31);
    while let Some(cells) = NonZeroU32::new(size) {
        while take(cells) {}
        size /= 2;
    }
}

impl<Req> Limiter<Req> for Direct {
    type Key = ();

    #[inline]
    fn key(&self, _req: &Req) {}

    #[inline]
    fn check(&self, _key: &(), cells: NonZeroU32) -> Result<(), Instant> {
        // One cell, the common case, takes governor's cheaper single-cell path.
        if cells == NonZeroU32::MIN {
            return self.governor.check().map_err(|n| earliest(&n));
        }
        match self.governor.check_n(cells) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(earliest(&not_until)),
            // Callers refuse costs above the burst before checking, so the batch always
            // fits; if it did not, it never would: "not before a full refill".
            Err(_) => Err(time::add(Instant::now(), self.refill)),
        }
    }

    fn fifo(&self) -> bool {
        true
    }
}

impl fmt::Debug for Direct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Direct").finish_non_exhaustive()
    }
}

// ===== Keyed =====

/// One GCRA quota per key, the key extracted from each request by `F: Fn(&Req) -> K`
/// (tenant, user, API key, host).
///
/// # Concurrency
///
/// Keys live in a sharded store (64 shards, each a read-write-locked map): a call for a
/// known key takes its shard's read lock, shared with every other such call, and one atomic
/// compare-and-swap of governor's GCRA state. No lock is store-wide; only a new key and
/// the idle-key sweep take one shard's write lock.
///
/// # Memory
///
/// One entry per key seen since it last went idle: `size_of::<K>() + 8` bytes (the key and
/// one `AtomicU64` of GCRA state) plus the map's 1 control byte and its load-factor slack
/// (up to 8/7), plus whatever the key owns on the heap. For a `u64` key that is about 20
/// bytes per key; for a `String` key, about 37 bytes plus the string's length.
///
/// The store keeps at most [`max_keys`](super::RateLimitConfig::max_keys) keys (default
/// [`DEFAULT_MAX_KEYS`](super::DEFAULT_MAX_KEYS), about 20 MB of `u64` keys). A new key
/// arriving at a full store first sweeps the idle keys (at most once per second); if there
/// is still no room, it is limited as if it had just used its whole burst, and not stored:
/// a flood of one-off keys (a scan, a bot) can neither exhaust memory nor pass unlimited.
///
/// A key whose state equals a fresh key's (it has been idle for the time its burst takes to
/// replenish) is dropped by a sweep that runs at most once per
/// [`cleanup_interval`](super::RateLimitConfig::cleanup_interval), piggybacked on
/// calls (no background task; a due sweep runs within 64 calls, give or take a few when
/// callers race);
/// [`retain_recent`](Keyed::retain_recent) runs one by hand.
pub struct Keyed<K: Hash + Eq + Clone, F> {
    state: Arc<KeyedState<K>>,
    key_fn: F,
}

struct KeyedState<K: Hash + Eq + Clone> {
    governor: KeyedGovernor<K>,
    refill: Duration,
    burst: NonZeroU32,
    cleanup_every: Duration,
    epoch: Instant,
    /// Next sweep, in nanoseconds since `epoch`.
    next_cleanup: AtomicU64,
    calls: AtomicU64,
    keys: Gauge,
}

impl<K: Hash + Eq + Clone, F> Keyed<K, F> {
    pub(crate) fn new(config: &RateLimitConfig, keys: Gauge, key_fn: F) -> Self {
        let quota = config.quota();
        let store = ShardedStore::new(
            config.max_keys,
            quota.replenish_interval(),
            config.effective_burst(),
        );
        let governor = RateLimiter::new(quota, store, TokioClock::new());
        let cleanup_every = config.cleanup_interval;
        Self {
            state: Arc::new(KeyedState {
                governor,
                refill: config.quota().burst_size_replenished_in(),
                burst: config.quota().burst_size(),
                cleanup_every,
                epoch: Instant::now(),
                next_cleanup: AtomicU64::new(time::nanos(cleanup_every)),
                calls: AtomicU64::new(0),
                keys,
            }),
            key_fn,
        }
    }

    /// The number of keys whose state is kept.
    pub fn len(&self) -> usize {
        self.state.governor.len()
    }

    /// `true` when no key's state is kept.
    pub fn is_empty(&self) -> bool {
        self.state.governor.is_empty()
    }

    /// Take every cell `key` has now, as when an upstream says "slow down" for that key:
    /// none of its calls conforms until its cells replenish (see [`Direct::drain`]).
    pub fn drain(&self, key: &K) {
        drain_with(self.state.burst, |cells| {
            matches!(self.state.governor.check_key_n(key, cells), Ok(Ok(())))
        });
    }

    /// Drop the state of every idle key now (O(keys), one shard's write lock at a time).
    pub fn retain_recent(&self) {
        self.state.governor.retain_recent();
        self.state.governor.shrink_to_fit();
        self.state.keys.set(self.state.governor.len() as f64);
    }

    fn maybe_cleanup(&self) {
        let state = &self.state;
        // Reading the clock costs as much as the check itself: look only every 64 calls.
        // The count is a plain load and store, not an atomic read-modify-write (a locked
        // instruction per call, as much again as governor's compare-and-swap): callers
        // racing on it may lose an increment, which only delays a look at the clock by
        // a few calls; a single caller counts exactly.
        let calls = state.calls.load(Ordering::Relaxed);
        state.calls.store(calls.wrapping_add(1), Ordering::Relaxed);
        if !calls.is_multiple_of(CLEANUP_CHECK_EVERY) {
            return;
        }
        let now = time::nanos_since(state.epoch, Instant::now());
        let due = state.next_cleanup.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        // One caller wins the sweep; the others go on.
        let next = now.saturating_add(time::nanos(state.cleanup_every));
        if state
            .next_cleanup
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.retain_recent();
        }
    }
}

/// A keyed limiter looks at the clock for a due sweep once per this many calls.
const CLEANUP_CHECK_EVERY: u64 = 64;

impl<K, F, Req> Limiter<Req> for Keyed<K, F>
where
    K: Hash + Eq + Clone,
    F: Fn(&Req) -> K + Clone,
{
    type Key = K;

    #[inline]
    fn key(&self, req: &Req) -> K {
        (self.key_fn)(req)
    }

    fn check(&self, key: &K, cells: NonZeroU32) -> Result<(), Instant> {
        self.maybe_cleanup();
        if cells == NonZeroU32::MIN {
            return self.state.governor.check_key(key).map_err(|n| earliest(&n));
        }
        match self.state.governor.check_key_n(key, cells) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(earliest(&not_until)),
            Err(_) => Err(time::add(Instant::now(), self.state.refill)),
        }
    }

    fn fifo(&self) -> bool {
        false
    }
}

impl<K: Hash + Eq + Clone, F: Clone> Clone for Keyed<K, F> {
    fn clone(&self) -> Self {
        Self {
            state: Arc::clone(&self.state),
            key_fn: self.key_fn.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone, F> fmt::Debug for Keyed<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("keys", &self.state.governor.len())
            .finish_non_exhaustive()
    }
}

// ===== Cost =====

/// How many cells a request consumes.
///
/// Implemented for [`UnitCost`] (every request costs one cell, the default) and for every
/// closure `Fn(&Req) -> u32` (e.g. a batch of 500 rows costs 500). A cost of zero is free.
/// A cost above the burst could never conform: the call is refused at once, in reject and
/// in wait mode, with
/// [`RateLimited::insufficient_capacity`](palisade_core::RateLimited::insufficient_capacity)
/// (permanent: never retried), never admitted at a discount and never left waiting.
pub trait Cost<Req> {
    /// The request's cost in cells.
    fn cost(&self, req: &Req) -> u32;
}

/// Every request costs one cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitCost;

impl<Req> Cost<Req> for UnitCost {
    #[inline]
    fn cost(&self, _req: &Req) -> u32 {
        1
    }
}

impl<Req, F: Fn(&Req) -> u32> Cost<Req> for F {
    #[inline]
    fn cost(&self, req: &Req) -> u32 {
        self(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_per_key_as_documented() {
        // One map entry: the key and governor's 8-byte state (hashbrown adds a control
        // byte and load-factor slack on top).
        assert_eq!(size_of::<(u64, InMemoryState)>(), 16);
        assert_eq!(size_of::<(String, InMemoryState)>(), 32);
    }
}
