//! Rate limits, concurrency limits and adaptive concurrency for tower services.
//!
//! Limits protect a backend from its callers, and a caller from its own bursts:
//!
//! - [`RateLimitLayer`]: GCRA rate limits on [`governor`] (lock-free, one atomic word per
//!   limiter): one quota for all calls, or one per key with [`RateLimitLayer::key_by`]
//!   (tenant, user, API key, host); a [cost](RateLimitLayer::cost) per request; reject or
//!   wait mode.
//! - [`ConcurrencyLimitLayer`]: a bulkhead of at most N calls in flight, waiting in a
//!   bounded queue or rejecting.
//! - [`AdaptiveLimitLayer`]: a concurrency limit that follows the backend's capacity,
//!   with [`Aimd`] or [`Gradient`], rejecting or waiting in a bounded queue.
//!
//! Rejections are palisade's shared ones: [`RateLimited`](palisade_core::RateLimited)
//! (with the exact `retry_after` governor computed) and
//! [`Overloaded`](palisade_core::Overloaded). Each service has `type Error = S::Error` and
//! requires `S::Error: From<TheRejection>`, so [`BoxError`](palisade_core::BoxError) and
//! [`palisade_core::Error<E>`] both work.
//!
//! ```
//! use palisade_core::{BoxError, RateLimited};
//! use palisade_rate_limit::RateLimitLayer;
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let limit = RateLimitLayer::builder(2, Duration::from_secs(1))
//!     .name("api")
//!     .build()?;
//! let mut svc = ServiceBuilder::new()
//!     .layer(limit)
//!     .service(service_fn(|req: u32| async move { Ok::<_, BoxError>(req * 2) }));
//!
//! assert_eq!(svc.ready().await?.call(1).await?, 2);
//! assert_eq!(svc.ready().await?.call(2).await?, 4);
//! // The quota is used up: the third call fails fast with the exact wait.
//! let err = svc.ready().await?.call(3).await.unwrap_err();
//! let limited = err.downcast_ref::<RateLimited>().expect("rate limited");
//! assert_eq!(limited.retry_after(), Duration::from_millis(500));
//! # Ok(())
//! # }
//! ```
//!
//! # Keyed limits, cost and wait mode
//!
//! ```
//! use palisade_core::BoxError;
//! use palisade_rate_limit::RateLimitLayer;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! struct Batch { tenant: &'static str, rows: u32 }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // 1000 rows per second per tenant; a batch waits up to 2s for its rows.
//! let layer = RateLimitLayer::builder(1000, Duration::from_secs(1))
//!     .name("ingest")
//!     .max_wait(Duration::from_secs(2))
//!     .build()?.key_by(|b: &Batch| b.tenant)
//!     .cost(|b: &Batch| b.rows);
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|b: Batch| async move { Ok::<_, BoxError>(b.rows) }));
//!
//! let start = tokio::time::Instant::now();
//! svc.clone().oneshot(Batch { tenant: "a", rows: 1000 }).await?;
//! // Tenant a's quota is spent: its next batch waits 500ms; tenant b's does not wait.
//! svc.clone().oneshot(Batch { tenant: "b", rows: 1000 }).await?;
//! assert_eq!(start.elapsed(), Duration::ZERO);
//! svc.clone().oneshot(Batch { tenant: "a", rows: 500 }).await?;
//! assert_eq!(start.elapsed(), Duration::from_millis(500));
//! # Ok(())
//! # }
//! ```
//!
//! # Upstream throttling
//!
//! When an upstream says "slow down", every caller sharing these layers obeys:
//!
//! - **The throttle gate** ([`ThrottleLayer`], see [`throttle`]): a result with a hint
//!   (`429`/`503` + `Retry-After`, gRPC `RESOURCE_EXHAUSTED`, read by a
//!   [`ThrottleHint`](palisade_core::throttle::ThrottleHint)) closes it for every caller
//!   until the hinted instant; then it probes once per hinted interval and ramps back up.
//! - **The rate limit follows the upstream's quota** ([`RateLimitHandle`], from
//!   [`RateLimitLayer::handle`]): [`set_rate`](RateLimitHandle::set_rate) slows every
//!   caller at once; raising the rate climbs back linearly over the config's
//!   [`ramp`](RateLimitConfig::ramp) (default 10 s), never a step back to full rate.
//!   [`RateLimitLayer::quota_hint`] (or [`RateLimitHandle::follow_quota`]) reads the
//!   quota each answer advertises (`RateLimit-Remaining` / `RateLimit-Reset`, a
//!   [`QuotaHint`](palisade_core::throttle::QuotaHint) such as `palisade_http::quota_hint`)
//!   and spreads the remaining calls over the time to the reset, never above the configured
//!   rate; with nothing remaining it admits nothing until the reset. While the rate is the
//!   configured one this costs the admit path one atomic load.
//!   [`drain`](RateLimitHandle::drain) takes every cell available now.
//! - **Early refusal in wait mode**: a call that cannot be admitted before it gives up
//!   (its `max_wait` or the caller's deadline), given the cells of the calls in line ahead
//!   of it, is refused at once with the time its turn would come, never after waiting its
//!   turn. The estimate follows the line as it moves and allows for tokio's timers firing
//!   on whole milliseconds, so no caller waits past its deadline (a property test).
//!
//! 20 callers against an upstream with a quota of 5 calls per second that answers `429` +
//! `Retry-After` over it, for 30 s (`tests/upstream_throttling.rs`): each caller obeying
//! only its own `Retry-After`, the upstream receives 750 calls, 5× its quota; with the gate
//! and a limit following the advertised quota, it receives 150 and serves all 150.
//!
//! ```
//! use palisade_core::BoxError;
//! use palisade_core::throttle::{Quota, Throttle};
//! use palisade_rate_limit::{RateLimitLayer, ThrottleConfig, ThrottleLayer};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! // An upstream's answer: a status and its quota headers, parsed.
//! struct Answer { status: u16, remaining: u64, reset_secs: u64 }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let limit = RateLimitLayer::builder(100, Duration::from_secs(1))
//!     .name("partner-api")
//!     .max_wait(Duration::from_secs(2))
//!     .build()?;
//! let handle = limit.handle();
//! let gate = ThrottleLayer::new(ThrottleConfig::builder().name("partner-api").build()?)
//!     .hint(|res: &Result<Answer, BoxError>| match res {
//!         Ok(a) if a.status == 429 => Some(Throttle::For(Duration::from_secs(a.reset_secs))),
//!         _ => None,
//!     });
//! let client = ServiceBuilder::new()
//!     .layer(gate)
//!     .layer(limit.quota_hint(|res: &Result<Answer, BoxError>| {
//!         let a = res.as_ref().ok()?;
//!         Some(Quota::new(a.remaining, Duration::from_secs(a.reset_secs)))
//!     }))
//!     .service(service_fn(|_: ()| async {
//!         Ok::<_, BoxError>(Answer { status: 200, remaining: 9, reset_secs: 10 })
//!     }));
//! client.oneshot(()).await?;
//! // 9 calls left in 10 s: every caller is now paced at one call per second.
//! assert_eq!(handle.interval(), Duration::from_secs(1));
//! # Ok(())
//! # }
//! ```
//!
//! # Time
//!
//! Everything runs on tokio's clock: the limiter's governor state reads it through
//! [`clock::TokioClock`], and waits are `tokio::time::sleep_until` the instant governor
//! names (never governor's own `until_ready`, whose timer tokio cannot pause). Tests and
//! simulations on paused time (`#[tokio::test(start_paused = true)]`) see the limits
//! follow virtual time exactly.
//!
//! # Readiness
//!
//! - The rate limit's `poll_ready` is the inner service's: the cost and the key come from
//!   the request, so the limit is applied in `call`. A conforming call goes straight to the
//!   inner service; a waiting one waits in the response future, holding the readied inner
//!   service (hence `S: Clone`), in FIFO order for direct limits; see
//!   [`rate::ResponseFuture`]. Cells are taken only when a call is admitted, so a dropped
//!   waiter costs no quota.
//! - The concurrency and adaptive limits take a free permit in `poll_ready` and release it
//!   when the response future completes, fails, panics or is dropped, or when a readied
//!   service is dropped before `call`. When none is free, either limit's wait mode
//!   takes a place in its queue in `poll_ready` and waits for the permit **in the response
//!   future** (with the readied inner service, hence `S: Clone` there too), so the wait is
//!   inside the caller's deadline; a call that cannot get one is refused from `call` (or
//!   from its future, after waiting) with `Overloaded`; `poll_ready` never fails.
//!
//! # Deadlines bound all waiting
//!
//! Every wait in this crate happens after `call`, inside the response future, where an
//! outer timeout's deadline is in effect ([`Deadline::current`](palisade_core::Deadline))
//! and where the outer timeout's own future covers it. In wait mode, no layer waits past
//! that deadline: a rate-limited call whose cells would conform only after it is refused at
//! once, with the exact `retry_after`; a call waiting for a concurrency permit gives up at
//! the deadline. So a concurrency limit with `max_wait` 5 s under a 1 s overall timeout
//! answers `Elapsed` at 1 s, never later. A `max_wait` of `Duration::MAX` is honoured as
//! "wait forever": bounded only by the caller's deadline.
//!
//! The ambient deadline is a thread-local set while a layer's `call` and `poll` run: it
//! does **not** cross a task boundary. Behind `tower::buffer::Buffer` (which the
//! readiness notes above suggest for services that are not `Clone`) or a spawned task, the
//! request must carry it: implement [`RequestDeadline`](palisade_core::RequestDeadline) for
//! the request type and put `palisade_timeout::PropagateDeadlineLayer` on both sides of
//! the boundary (it writes the deadline onto the request before the buffer and makes it
//! current again behind it).
//!
//! # Costs above the burst
//!
//! A request costing more cells than the burst could never conform: it is refused at once,
//! in reject and in wait mode, with
//! [`RateLimited::insufficient_capacity`](palisade_core::RateLimited::insufficient_capacity)
//! (a permanent refusal: `is_permanent()`, never retried), never admitted at a discount and
//! never left waiting.
//!
//! # Observability
//!
//! Listeners registered with `.on_event(..)` on a builder receive [`LimitEvent`]s
//! (admitted after waiting, rejected, limit changed); the same events go to `tracing` on
//! the target `palisade::rate_limit`. With the `metrics` feature the layers feed the
//! metrics in [`METRICS`] (admitted, rejected, wait time, limit, in flight, keys), labelled
//! with the layer's `name` and `kind`.
//!
//! # Features
//!
//! - `metrics`: feed the [`metrics`](https://docs.rs/metrics) facade.
//! - `serde`: load [`RateLimitConfig`], [`ConcurrencyLimitConfig`] and
//!   [`AdaptiveLimitConfig`] from data (durations as `"250ms"`, `"2s"`).
//! - `redis`: one quota for a whole fleet, kept in Redis, with leases and a failure
//!   policy ([`redis`] module).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod adaptive;
pub mod clock;
pub mod concurrency;
mod event;
pub mod metrics;
pub mod rate;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub mod throttle;
mod wait_queue;

/// When a call that may wait `max_wait` from `now` must give up: `max_wait` from now
/// (`Duration::MAX`: never, honoured as "wait forever"), or the request's ambient deadline
/// (set by an outer timeout) if that comes first, since a call admitted after its deadline
/// is wasted. The flag says the deadline, not `max_wait`, is what bounds the wait.
pub(crate) fn give_up_at(
    now: tokio::time::Instant,
    max_wait: std::time::Duration,
) -> (tokio::time::Instant, bool) {
    give_up_with(now, max_wait, palisade_core::Deadline::current())
}

/// [`give_up_at`] with the caller's deadline read earlier (where the caller's scope was).
pub(crate) fn give_up_with(
    now: tokio::time::Instant,
    max_wait: std::time::Duration,
    ambient: Option<palisade_core::Deadline>,
) -> (tokio::time::Instant, bool) {
    let own = palisade_core::time::add(now, max_wait);
    match ambient {
        Some(deadline) if deadline.instant() < own => (deadline.instant(), true),
        _ => (own, false),
    }
}

pub use adaptive::{
    AdaptiveLimit, AdaptiveLimitConfig, AdaptiveLimitConfigBuilder, AdaptiveLimitHandle,
    AdaptiveLimitLayer, Aimd, Algorithm, Gradient, LatencyOnly,
};
pub use concurrency::{
    ConcurrencyLimit, ConcurrencyLimitConfig, ConcurrencyLimitConfigBuilder,
    ConcurrencyLimitHandle, ConcurrencyLimitLayer,
};
pub use event::{LimitEvent, LimitKind};
pub use metrics::METRICS;
pub use rate::{
    Cost, DEFAULT_CLEANUP_INTERVAL, DEFAULT_MAX_KEYS, DEFAULT_RAMP, Direct, FollowQuota,
    FollowQuotaLayer, Keyed, Limiter, MAX_REFILL, RateLimit, RateLimitConfig,
    RateLimitConfigBuilder, RateLimitHandle, RateLimitLayer, RateLimitSnapshot, UnitCost,
};
pub use throttle::{
    ThrottleConfig, ThrottleConfigBuilder, ThrottleEvent, ThrottleHandle, ThrottleLayer,
    ThrottleMode, ThrottleSnapshot, Throttled,
};
