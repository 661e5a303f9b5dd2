//! A correct, lock-free circuit breaker for [tower](https://docs.rs/tower) services, with
//! truly sliding windows, keyed breakers and operator control.
//!
//! The breaker stops a failing dependency from taking the caller down with it and gives it
//! room to recover:
//!
//! - **Closed**: calls flow; each outcome (classified by a `palisade_core::Classify`,
//!   default [`palisade_core::RejectionAware`]) goes into a sliding window: the last N
//!   calls, or the last T seconds in B buckets. Both truly slide: old outcomes leave the
//!   window.
//! - It **opens** when the window's failure rate or slow-call rate reaches its threshold
//!   (once the window holds a minimum number of calls), or after N failures in a row.
//! - **Open**: calls fail fast with [`CircuitOpen`](palisade_core::CircuitOpen), whose
//!   `retry_after` says when a probe will be admitted. The open duration can grow on each
//!   re-open (up to a cap; by default it does not), so a large fleet need not probe a
//!   dead backend every interval forever.
//! - **Half-open**: once the open duration has passed, the next calls are probes (never
//!   more than configured, even under concurrency, except one more each open interval
//!   while every probe is out, so a probe stuck in a backend that was still slow cannot
//!   hide its return); when the configured number have completed, their rates close the
//!   breaker or re-open it. No background task: the first call after the open
//!   duration is the first probe. A probe that takes longer than
//!   [`max_probe_duration`](CircuitBreakerConfigBuilder::max_probe_duration) counts as a
//!   failure and frees the half-open state, so a hung probe cannot keep it half-open
//!   forever; calls rejected while the probes are out are told to come back when the
//!   verdict is due (at most a tenth of the open duration, never "in 0s").
//! - An upstream's throttle hint or an operator can open it for a given time
//!   ([`CircuitBreakerHandle::open_for`], [`open_until`](CircuitBreakerHandle::open_until))
//!   without counting a failure.
//!
//! # What counts as a failure
//!
//! The default classifier, [`palisade_core::RejectionAware`], counts the backend's errors
//! and an attempt's `Elapsed` (a timeout below the breaker) as failures, and ignores the
//! rejections made by the caller's own layers (`RateLimited`, `Overloaded`, `CircuitOpen`,
//! `RetriesExhausted`): **a caller's own limit can never open its breaker.** A burst over a
//! reject-mode rate limit or a concurrency limit placed under the breaker (the recommended
//! order) is the caller's load, not the backend's health. The error type must implement
//! `palisade_core::AsRejection` for that (`BoxError` and `palisade_core::Error<E>` do);
//! with another error type, pass a classifier with
//! [`CircuitBreakerLayer::classifier`] (e.g. `palisade_core::DefaultClassifier`,
//! "every `Err` is a failure").
//! - Operators can force it open, disable it (always closed, still recording) or put it in
//!   metrics-only mode (the state machine runs and reports, but never rejects) through a
//!   [`CircuitBreakerHandle`], which also reads the window and updates the config at run
//!   time.
//!
//! The closed path takes no lock and allocates nothing: an atomic state word, a ring of
//! outcome bits (or atomic buckets) with running totals, so a healthy call costs one atomic
//! read-modify-write on the window plus the reference count of the response future's handle
//! on the breaker. Only a state change takes a lock; listeners run after it is released.
//!
//! # Example
//!
//! ```
//! use palisade_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, State};
//! use palisade_core::{BoxError, CircuitOpen};
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer: CircuitBreakerLayer = CircuitBreakerLayer::builder()
//!     .name("payments")
//!     .count_window(10)
//!     .minimum_calls(4)
//!     .failure_rate_threshold(50.0)
//!     .open_duration(Duration::from_secs(5))
//!     .half_open_probes(1)
//!     .build()
//!     .expect("valid config");
//! let handle = layer.handle();
//!
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service_fn(|fail: bool| async move {
//!         if fail { Err::<&str, BoxError>("backend down".into()) } else { Ok("ok") }
//!     });
//!
//! // Four failures in a window of at least four calls: the breaker opens.
//! for _ in 0..4 {
//!     let _ = svc.ready().await.unwrap().call(true).await;
//! }
//! assert_eq!(handle.state(), State::Open);
//!
//! // Calls now fail fast, without reaching the backend, and say when to come back.
//! let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().expect("rejected by the breaker");
//! assert_eq!(open.retry_after(), Some(Duration::from_secs(5)));
//!
//! // After the open duration, a successful probe closes it again.
//! tokio::time::advance(Duration::from_secs(5)).await;
//! assert_eq!(svc.ready().await.unwrap().call(false).await.unwrap(), "ok");
//! assert_eq!(handle.state(), State::Closed);
//! # }
//! ```
//!
//! # Error types
//!
//! The service's error is the inner service's error: it must implement
//! `From<CircuitOpen>`, which both `palisade_core::BoxError` and `palisade_core::Error<E>`
//! do, so breakers compose with the other palisade layers in any order.
//!
//! # Observability
//!
//! Events ([`CircuitBreakerEvent`]) go to listeners registered with
//! [`CircuitBreakerLayer::on_event`] and to `tracing` on the target
//! `palisade::circuit_breaker`. With the `metrics` feature the breaker feeds the
//! metrics listed in [`METRICS`]: a gauge per state (1 for the current state, 0 for the others,
//! all set on every transition), transitions, rejected calls, and the window's failure and
//! slow-call rates.
//!
//! # Placement
//!
//! Put the breaker inside retry (so retries see `CircuitOpen` and stop) and outside a
//! per-attempt timeout (so a hanging backend counts as failing: the timeout's `Elapsed` is
//! an `Err`). A call dropped before it completes (an outer timeout, a client gone) is not
//! recorded; if it was a probe, its permit is handed back.
//!
//! # Features
//!
//! - `metrics`: feed the `metrics` facade.
//! - `serde`: load [`CircuitBreakerConfig`] and [`KeyedLimits`] from data.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod event;
mod future;
mod handle;
mod hint;
mod keyed;
mod layer;
#[cfg(all(test, not(loom)))]
mod model;
mod service;
mod state;
mod sync;
mod window;

pub use config::{
    CircuitBreakerConfig, CircuitBreakerConfigBuilder, MAX_BUCKETS, MAX_COUNT_WINDOW, MAX_PROBES,
    SlidingWindow,
};
pub use event::{CircuitBreakerEvent, METRICS, State, TransitionReason};
pub use future::ResponseFuture;
pub use handle::CircuitBreakerHandle;
pub use hint::HintedClassifier;
pub use keyed::{
    KeyedCircuitBreaker, KeyedCircuitBreakerHandle, KeyedCircuitBreakerLayer, KeyedLimits,
};
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
pub use state::WindowSnapshot;
