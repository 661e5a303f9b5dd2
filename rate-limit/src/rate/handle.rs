//! The rate limit's handle: read its rate and change it at run time.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade_core::throttle::Quota;
use palisade_core::{ConfigError, Name, time};
use tokio::time::Instant;

use super::config::RateLimitConfig;
use super::limiter::{Common, Direct};
use super::quota::FollowQuotaLayer;

/// Reads and changes one rate limit at run time; every clone of the layer, of its services
/// and of this handle acts on the same limit. Made by
/// [`RateLimitLayer::handle`](super::RateLimitLayer::handle).
///
/// # The run-time rate
///
/// [`set_rate`](Self::set_rate) and [`follow`](Self::follow) (an upstream's advertised
/// quota, e.g. through [`follow_quota`](Self::follow_quota)) move the rate below the
/// configured one, for every caller sharing the limit (a keyed limit's keys share it: it
/// paces all keys together, on top of each key's own quota):
///
/// - **lowering takes effect at once**: the next call is paced at the new rate;
/// - **raising ramps up**: the rate climbs linearly by the configured rate per
///   [`ramp`](RateLimitConfig::ramp) (default 10 s), in steps of a sixteenth of it, so
///   from almost nothing back to the configured rate takes `ramp`; never a step back to
///   full rate;
/// - the rate is never above the configured one ([`set_rate`](Self::set_rate) refuses it;
///   a quota allowing more is followed up to the configured rate);
/// - the burst shrinks with the rate: it covers the same time as the configured burst
///   (`burst × period / cells`), at least one cell.
///
/// While the rate is the configured one, this costs the admit path one atomic load.
///
/// ```
/// use palisade_core::{BoxError, RateLimited};
/// use palisade_rate_limit::RateLimitLayer;
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let layer = RateLimitLayer::builder(100, Duration::from_secs(1)).burst(1).build().unwrap();
/// let handle = layer.handle();
/// let svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }));
///
/// // The upstream asked for 2 calls per second: every caller slows down at once.
/// handle.set_rate(2, Duration::from_secs(1)).unwrap();
/// assert_eq!(handle.rate(), (2, Duration::from_secs(1)));
/// svc.clone().oneshot(1).await.unwrap();
/// let err = svc.clone().oneshot(2).await.unwrap_err();
/// let limited = err.downcast_ref::<RateLimited>().unwrap();
/// assert_eq!(limited.retry_after(), Duration::from_millis(500));
///
/// // Faster than configured is refused, naming the field.
/// let err = handle.set_rate(1000, Duration::from_secs(1)).unwrap_err();
/// assert_eq!(err.field(), "cells");
///
/// // Back to 100/s: it climbs there over the ramp (10 s by default).
/// handle.restore();
/// assert_eq!(handle.interval(), Duration::from_millis(500));
/// tokio::time::advance(Duration::from_secs(10)).await;
/// assert_eq!(handle.interval(), Duration::from_millis(10));
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimitHandle<L = Direct> {
    common: Arc<Common>,
    limiter: L,
}

/// A rate limit's state, from [`RateLimitHandle::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitSnapshot {
    /// The rate set: `cells` per `period` (the configured one unless set at run time).
    pub cells: u32,
    /// The rate's period.
    pub period: Duration,
    /// The emission interval in effect now (one cell per `interval`); above
    /// `period / cells` while climbing back up.
    pub interval: Duration,
    /// `true` while the rate climbs to the one set.
    pub ramping: bool,
    /// Calls waiting in line for their cells (wait mode, direct limits).
    pub waiting: usize,
}

impl<L> RateLimitHandle<L> {
    pub(crate) fn new(common: Arc<Common>, limiter: L) -> Self {
        Self { common, limiter }
    }

    /// The limit's name.
    pub fn name(&self) -> &Name {
        self.common.emitter.name()
    }

    /// The config the limit was built with (its configured rate is the ceiling of the
    /// run-time rate).
    pub fn config(&self) -> &RateLimitConfig {
        &self.common.config
    }

    /// The rate set: `cells` per `period` (while ramping up, the one it climbs to; see
    /// [`interval`](Self::interval) for the rate in effect).
    pub fn rate(&self) -> (u32, Duration) {
        let (cells, period, _) = self.common.pace.target();
        (cells, period)
    }

    /// The emission interval in effect now: one cell per `interval`.
    pub fn interval(&self) -> Duration {
        self.common.pace.interval()
    }

    /// Set the rate to `cells` per `period`, for every caller: lower at once, higher by the
    /// ramp (see the type's docs). Refused, naming the field, the value and the allowed
    /// range, when `cells` is 0, `period / cells` is under 1ns or above about 30 years, or
    /// the rate is above the configured one.
    pub fn set_rate(&self, cells: u32, period: Duration) -> Result<(), ConfigError> {
        self.common.set_rate(cells, period)
    }

    /// Apply `config` at run time: its rate becomes the rate set (as
    /// [`set_rate`](Self::set_rate): lower at once, higher by the ramp, never above the rate
    /// the layer was built with). The rest of a limit's shape (burst, wait, keys, ramp) is
    /// fixed when it is built: a config that changes it is refused, naming the field, as is
    /// another name or an invalid config; nothing changes then.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "one signature for every handle"
    )]
    pub fn update(&self, config: RateLimitConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let built = &self.common.config;
        palisade_core::config::ensure_same_name("rate_limit", self.name(), config.name())?;
        let fixed = [
            (
                "burst",
                config.effective_burst() == built.effective_burst(),
                format!("{}", config.effective_burst()),
            ),
            (
                "max_wait",
                config.max_wait() == built.max_wait(),
                format!("{:?}", config.max_wait()),
            ),
            (
                "cleanup_interval",
                config.cleanup_interval() == built.cleanup_interval(),
                format!("{:?}", config.cleanup_interval()),
            ),
            (
                "max_keys",
                config.max_keys() == built.max_keys(),
                format!("{}", config.max_keys()),
            ),
            (
                "ramp",
                config.ramp() == built.ramp(),
                format!("{:?}", config.ramp()),
            ),
        ];
        for (field, same, value) in fixed {
            palisade_core::config::ensure(
                same,
                "rate_limit",
                field,
                value,
                "the value the limit was built with (only the rate changes at run time)",
            )?;
        }
        self.set_rate(config.cells(), config.period())
    }

    /// Back to the configured rate, by the ramp.
    pub fn restore(&self) {
        self.common.restore_rate();
    }

    /// Follow an upstream's advertised quota: pace every caller so that the `remaining`
    /// calls are spread evenly over `reset`, the last one before the reset (one call per
    /// `reset / (remaining + 1)`, never faster than the configured rate); when nothing
    /// remains, admit nothing until the reset, then one call per `reset` until a later
    /// quota says more. Slower takes effect at once, faster by the ramp. A quota with a
    /// zero `reset` says nothing and is ignored.
    ///
    /// ```
    /// use palisade_core::throttle::Quota;
    /// use palisade_rate_limit::RateLimitLayer;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let handle = RateLimitLayer::builder(100, Duration::from_secs(1)).build().unwrap().handle();
    /// handle.follow(Quota::new(39, Duration::from_secs(20)));
    /// assert_eq!(handle.interval(), Duration::from_millis(500)); // 39 calls, then the reset
    /// handle.follow(Quota::new(10_000, Duration::from_secs(1)));
    /// assert_eq!(handle.rate(), (100, Duration::from_secs(1))); // never above the configured rate
    /// # }
    /// ```
    pub fn follow(&self, quota: Quota) {
        self.common.follow(quota);
    }

    /// Admit nothing before `until` (for every caller), then one call per emission
    /// interval in effect, without a burst.
    pub fn hold_until(&self, until: Instant) {
        self.common.pace.hold_until(until);
    }

    /// [`hold_until`](Self::hold_until) `duration` from now (saturating).
    pub fn hold_for(&self, duration: Duration) {
        self.hold_until(time::add(Instant::now(), duration));
    }

    /// A layer that reads each result's advertised quota with `hint` (a
    /// [`QuotaHint`](palisade_core::throttle::QuotaHint), e.g. `palisade_http::quota_hint`)
    /// and makes this limit [`follow`](Self::follow) it. Put it around the client, inside
    /// the limit (or anywhere it sees the upstream's results).
    pub fn follow_quota<H>(&self, hint: H) -> FollowQuotaLayer<H> {
        FollowQuotaLayer::new(Arc::clone(&self.common), hint)
    }

    /// The limit's state.
    pub fn snapshot(&self) -> RateLimitSnapshot {
        // The interval first: reading it takes a due ramp step.
        let interval = self.common.pace.interval();
        let (cells, period, ramping) = self.common.pace.target();
        RateLimitSnapshot {
            cells,
            period,
            interval,
            ramping,
            waiting: self.common.waiting.load(Ordering::Relaxed),
        }
    }

    /// The limiter (for a keyed limit: [`Keyed::drain`](super::Keyed::drain) of one key,
    /// [`Keyed::len`](super::Keyed::len)).
    pub fn limiter(&self) -> &L {
        &self.limiter
    }
}

impl RateLimitHandle<Direct> {
    /// Take every cell available now (see [`Direct::drain`]): no call conforms until
    /// cells replenish again, one per emission interval, for every caller.
    pub fn drain(&self) {
        self.limiter.drain();
    }
}

impl<L> fmt::Debug for RateLimitHandle<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitHandle")
            .field("name", self.common.emitter.name())
            .field("snapshot", &self.snapshot())
            .finish_non_exhaustive()
    }
}
