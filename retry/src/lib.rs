//! Retry with exponential backoff and jitter, retry budgets, server hints and hedging, as
//! [tower](https://docs.rs/tower) middleware. Part of
//! [Palisade](https://github.com/palisade-rs/palisade).
//!
//! Retries are where resilience libraries most often make outages worse: synchronized
//! retry waves, retry storms that multiply load exactly when a backend struggles, retries
//! past the caller's deadline. This crate makes the safe thing the default:
//!
//! - **Backoff with jitter** ([`Backoff`], [`Jitter`]): exponential from 100 ms with full
//!   jitter by default; constant and linear shapes; equal and decorrelated jitter; a
//!   seedable RNG; any `Iterator<Item = Duration>` plugs in.
//! - **A retry budget** ([`RetryBudget`]), on by default: retries add at most 20% extra
//!   load (plus a floor of 10 per second), shared by all clones and by handle across
//!   layers; gRPC-style token-bucket throttling as an alternative. Shared by a retry and a
//!   hedge layer, one budget bounds both together: a request deposits once whatever the
//!   order of the layers ([one budget, one deposit](RetryBudget#one-budget-one-deposit)).
//! - **Deadlines**: a retry never starts if its delay would pass the request's
//!   [`Deadline`](palisade_core::Deadline) (set by an outer `palisade-timeout` layer).
//! - **Bounded by attempts or by time**: three attempts by default, or
//!   [`until_deadline`](RetryConfigBuilder::until_deadline): retry until the caller's
//!   deadline or `max_elapsed`, with no attempt count, honouring every `retry_after`.
//! - **Classification** with palisade-core's [`Classify`](palisade_core::Classify): a `503`
//!   can be retried and a `400` not. The default is the same rejection-aware classifier as
//!   every palisade layer's, [`RejectionAware`]; see below for what it retries.
//! - **Flat errors**: when it gives up, retry returns the last attempt's result unchanged.
//! - **Hedging** ([`hedge`]): send a second copy of a slow idempotent request, take the
//!   first good answer, cancel the rest.
//!
//! # Example
//!
//! ```
//! use palisade_core::BoxError;
//! use palisade_retry::{Backoff, RetryConfig, RetryLayer};
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // A flaky backend: the first two calls fail.
//! let calls = Arc::new(AtomicU32::new(0));
//! let counter = Arc::clone(&calls);
//! let backend = tower::service_fn(move |name: &'static str| {
//!     let n = counter.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         if n < 2 { Err::<String, BoxError>("connection reset".into()) } else { Ok(format!("hello {name}")) }
//!     }
//! });
//!
//! let config = RetryConfig::builder()
//!     .name("greeter")
//!     .max_attempts(3)
//!     .backoff(Backoff::exponential(Duration::from_millis(100)))
//!     .build()?;
//! let service = ServiceBuilder::new().layer(RetryLayer::new(config)).service(backend);
//!
//! let reply = service.oneshot("world").await?;
//! assert_eq!(reply, "hello world");
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! # Ok(())
//! # }
//! ```
//!
//! # What is retried
//!
//! Two hooks decide, and the defaults are palisade-core's [`RejectionAware`] for both:
//!
//! - the classifier gives each attempt's **outcome**: `Failure` (the backend failed, or an
//!   attempt timed out: retried after the backoff), `Success` (returned), or `Ignore` (a
//!   rejection made by one of our own layers: not the backend's fault, so a token-bucket
//!   budget neither pays nor refills for it, as a breaker does not count it);
//! - the hint ([`RetryAfter`]) says whether an `Ignore`d result means "**later**": a rate
//!   limit (retried, never before its `retry_after`) and an overload (retried after the
//!   backoff) do; an open circuit, an inner retry that gave up and a request a rate limiter
//!   can never admit ([`is_permanent`](palisade_core::RateLimited::is_permanent)) mean "no"
//!   and are returned at once.
//!
//! A hint is honoured in full: one that would pass the deadline or `max_elapsed`, or (when
//! counting attempts) one longer than the backoff's `max_delay`, ends retrying rather than
//! retrying early into a certain refusal. Bounded by time
//! ([`until_deadline`](RetryConfigBuilder::until_deadline)), any hint that ends within the
//! limits is waited for.
//!
//! # Values that mean "forever"
//!
//! No value panics. `max_elapsed(Duration::MAX)` is no limit; a backoff or `max_delay` of
//! `Duration::MAX` waits "forever" (until the deadline, which then stops retrying at once);
//! a hedge delay of `Duration::MAX` never hedges. All time arithmetic saturates through
//! [`palisade_core::time`]. Invalid values (an empty name, a budget ratio outside 0 to 1,
//! a factor outside 1 to 100, a percentile outside (0, 1]) are refused by `build()` and by
//! deserializing, with an error naming the field, the value and the allowed range.
//!
//! # Error types
//!
//! The default classifier and hint ([`RejectionAware`]) look for palisade rejections in the
//! error, so they need `S::Error: AsRejection`: `BoxError` or `palisade_core::Error<E>`.
//! For any other error type, say which results to retry yourself:
//!
//! ```
//! use palisade_core::DefaultClassifier;
//! use palisade_retry::{NoRetryAfter, RetryConfig, RetryLayer};
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let backend = tower::service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) });
//! let config = RetryLayer::builder()
//!     .classifier(DefaultClassifier) // every Err is retried
//!     .retry_after(NoRetryAfter)
//!     .build()
//!     .unwrap();
//! let svc = config.layer(backend);
//! assert_eq!(svc.oneshot(4).await.unwrap(), 4);
//! # }
//! ```
//!
//! # Spawning
//!
//! A retried service runs in a spawned task. With `BoxError`, rustc (up to at least 1.95)
//! cannot compile one shape: an `async` block holding an *unboxed* stack whose type names
//! `BoxError` in a generic argument (a `service_fn` closure, a generic wrapper), because it
//! erases the lifetimes in an async block's captured types, `'static` included, and then
//! cannot prove a `'static`-only bound such as `BoxError: AsRejection` (tower's own
//! `Timeout` fails the same way on `Into<BoxError>`). Any of these compiles:
//!
//! ```
//! use palisade_core::BoxError;
//! use palisade_retry::{RetryConfig, RetryLayer};
//! use tower::{Layer, ServiceExt, util::BoxCloneService};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = RetryLayer::builder().name("spawned").build().unwrap();
//! let backend = tower::service_fn(|x: u32| async move { Ok::<_, BoxError>(x + 1) });
//!
//! // Spawn the oneshot future itself,
//! let svc = layer.layer(backend);
//! assert_eq!(tokio::spawn(svc.clone().oneshot(1)).await.unwrap().unwrap(), 2);
//! // or box the stack (as most code does to name its type) and use any async block.
//! let svc = BoxCloneService::new(svc);
//! let task = tokio::spawn(async move { svc.oneshot(1).await });
//! assert_eq!(task.await.unwrap().unwrap(), 2);
//! # }
//! ```
//!
//! `palisade_core::Error<E>` and named client types (`type Error = BoxError` in a
//! non-generic service) work in any async block. The shape that does not compile today:
//!
//! ```compile_fail
//! # use palisade_core::BoxError;
//! # use palisade_retry::{RetryConfig, RetryLayer};
//! # use tower::{Layer, ServiceExt};
//! # async fn f() {
//! let backend = tower::service_fn(|x: u32| async move { Ok::<_, BoxError>(x + 1) });
//! let svc = RetryLayer::new(RetryConfig::default()).layer(backend);
//! tokio::spawn(async move { svc.oneshot(1).await }); // "AsRejection is not general enough"
//! # }
//! ```
//!
//! # Where it goes in a stack
//!
//! Outside the circuit breaker and the per-attempt timeout, inside the overall timeout:
//! the overall timeout's deadline bounds all attempts, each attempt gets its own timeout,
//! and an open breaker answers at once (retried, with the default hook, when its next
//! probe may go, free of the budget: the call was never sent). A [`hedge::HedgeLayer`] goes
//! next to the retry layer, inside or outside it; give both the same [`RetryBudget`] handle
//! so retries and hedges together stay within one ratio of extra load (extra calls ≤
//! `ratio` × requests + the floor, tested in both orders).
//!
//! # Metrics
//!
//! With the `metrics` feature, the layer feeds the [`METRICS`] listed below, labelled with
//! the layer's `name`.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod budget;
mod config;
mod event;
mod future;
mod handle;
pub mod hedge;
mod layer;
mod policy;
mod service;

pub use backoff::{Backoff, Jitter, Schedule};
pub use budget::{BudgetConfig, RetryBudget};
pub use config::{
    DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_LIMIT, RetryConfig, RetryConfigBuilder, RetryLayerBuilder,
};
pub use event::{HedgeEvent, RetryEvent, StopReason};
pub use future::ResponseFuture;
pub use handle::{RetryHandle, RetrySnapshot};
pub use layer::RetryLayer;
pub use palisade_core::RejectionAware;
pub use policy::{CloneRequest, Cloned, NoRetryAfter, RetryAfter};
pub use service::Retry;

use palisade_core::metrics::{MetricDef, MetricKind};

/// Every metric this crate emits (with the `metrics` feature), each labelled `name`.
pub const METRICS: &[MetricDef] = &[
    MetricDef::new(
        "palisade_retry_attempts_total",
        MetricKind::Counter,
        "attempts sent by a retry layer, first tries included",
    ),
    MetricDef::new(
        "palisade_retry_retries_total",
        MetricKind::Counter,
        "retries sent (attempts after the first)",
    ),
    MetricDef::new(
        "palisade_retry_exhausted_total",
        MetricKind::Counter,
        "requests that failed and were not retried further (attempt limit, deadline, max_elapsed)",
    ),
    MetricDef::new(
        "palisade_retry_budget_rejected_total",
        MetricKind::Counter,
        "retries refused by the retry budget",
    ),
    MetricDef::new(
        "palisade_retry_attempts",
        MetricKind::Histogram,
        "attempts per request",
    ),
    MetricDef::new(
        "palisade_retry_hedges_total",
        MetricKind::Counter,
        "hedged copies sent by a hedge layer",
    ),
    MetricDef::new(
        "palisade_retry_hedge_wins_total",
        MetricKind::Counter,
        "requests answered by a hedged copy rather than the original",
    ),
    MetricDef::new(
        "palisade_retry_hedge_budget_rejected_total",
        MetricKind::Counter,
        "hedges refused by the hedge budget",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_follow_the_scheme() {
        for metric in METRICS {
            assert!(metric.follows_scheme(), "{}", metric.name);
        }
    }
}
