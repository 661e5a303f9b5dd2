//! Timeouts and deadline propagation for [tower] services: part of
//! [Palisade](https://github.com/palisade-rs/palisade).
//!
//! [`TimeoutLayer`] fails a call with [`Elapsed`] when it takes
//! longer than its timeout, and drops (cancels) the inner future at that moment. The
//! timeout is fixed, changeable at run time through a [`TimeoutHandle`], or chosen per
//! request by a closure.
//!
//! Deadlines propagate: while the inner service runs, the layer's deadline is in effect
//! ([`Deadline::current`]), and an inner timeout takes the
//! smaller of its own duration and the time left. So a per-attempt timeout inside a retry
//! never outlives the overall timeout outside it, and every layer that waits inside it (a
//! retry's back-off, a limiter's queue, a concurrency permit) gives up at the deadline.
//! The [`Elapsed`] names the layer whose deadline ran out: an overall 1 s timeout around a
//! 5 s attempt timeout fails with the overall layer's name and its 1 s.
//!
//! Timers are armed only for calls that are pending, and once per call where timeouts
//! nest: a timeout arms its timer on the first poll that finds the call pending (a call
//! answered at once registers none), and not at all while a timer armed inside it (a
//! per-attempt timeout's, a retry's back-off) wakes the task by its deadline
//! ([`palisade_core::deadline::watch_timers`]). The recommended stack's overall deadline
//! over a per-attempt timeout therefore registers one timer in tokio's timer wheel per
//! pending call, where tower's two `Timeout`s register two.
//!
//! # Deadlines across tasks (`Buffer`, `spawn`)
//!
//! The ambient deadline lives in a thread-local that a layer sets only while its own
//! `call` and its future's `poll` run: it follows the request through layers in one task,
//! and is **not** seen by another task. Behind `tower::buffer::Buffer` the inner service
//! is called by the buffer's worker task, and a `tokio::spawn`ed call runs in a new task:
//! there, [`Deadline::current`] is `None`. To carry it across, the request carries it:
//! implement [`RequestDeadline`] for your request type (`http::Request` does with the
//! `http` feature) and put a [`PropagateDeadlineLayer`] on both sides of the boundary: the
//! outer one writes the deadline onto the request, the inner one makes it current again for
//! the layers behind the boundary.
//!
//! ```
//! use palisade_core::{BoxError, Deadline, RequestDeadline};
//! use palisade_timeout::{PropagateDeadlineLayer, TimeoutLayer};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, buffer::BufferLayer, service_fn};
//!
//! struct Job { deadline: Option<Deadline> }
//! impl RequestDeadline for Job {
//!     fn deadline(&self) -> Option<Deadline> { self.deadline }
//!     fn set_deadline(&mut self, d: Deadline) { self.deadline = Some(d); }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::builder().timeout(Duration::from_secs(1)).build().expect("a valid timeout"))
//!     .layer(PropagateDeadlineLayer::new()) // writes the deadline onto the job
//!     .layer(BufferLayer::new(64))          // the worker task calls what follows
//!     .layer(PropagateDeadlineLayer::new()) // makes it current again in the worker
//!     .service(service_fn(|_job: Job| async { Ok::<_, BoxError>(Deadline::current()) }));
//! let seen = svc.oneshot(Job { deadline: None }).await.unwrap();
//! assert!(seen.is_some(), "the worker saw the caller's deadline");
//! # }
//! ```
//!
//! Errors stay flat: the service's error type is the inner one, which must implement
//! `From<Elapsed>`: both `tower::BoxError` and [`palisade_core::Error<E>`] do.
//!
//! # Example
//!
//! An overall 1 s deadline around a slow call with a 5 s timeout of its own: the inner
//! timeout is shortened to what is left of the deadline.
//!
//! ```
//! use palisade_core::Error;
//! use palisade_timeout::TimeoutLayer;
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let slow = service_fn(|_req: &str| async {
//!     tokio::time::sleep(Duration::from_secs(30)).await;
//!     Ok::<_, Error<std::io::Error>>("done")
//! });
//! let overall = TimeoutLayer::builder().name("overall").timeout(Duration::from_secs(1));
//! let attempt = TimeoutLayer::builder().name("attempt").timeout(Duration::from_secs(5));
//! let mut svc = ServiceBuilder::new()
//!     .layer(overall.build().unwrap())
//!     .layer(attempt.build().unwrap())
//!     .service(slow);
//!
//! let start = tokio::time::Instant::now();
//! let err = svc.ready().await.unwrap().call("report").await.unwrap_err();
//! match err {
//!     Error::Elapsed(elapsed) => {
//!         // the overall deadline ran out: the error names that layer and its 1 s
//!         assert_eq!(elapsed.name().as_str(), "overall");
//!         assert_eq!(elapsed.timeout(), Duration::from_secs(1));
//!     }
//!     other => panic!("expected a timeout, got {other}"),
//! }
//! assert_eq!(start.elapsed(), Duration::from_secs(1));
//! # }
//! ```
//!
//! # Metrics
//!
//! With the `metrics` feature (names per [`palisade_core::metrics`]): see [`METRICS`].
//!
//! [tower]: https://docs.rs/tower
#![forbid(unsafe_code)]

mod config;
mod event;
mod future;
mod handle;
mod layer;
mod propagate;
mod service;

pub use config::{DEFAULT_TIMEOUT, TimeoutConfig, TimeoutConfigBuilder};
pub use event::TimeoutEvent;
pub use future::ResponseFuture;
pub use handle::TimeoutHandle;
pub use layer::{Fixed, PerRequest, RequestTimeout, TimeoutLayer};
pub use palisade_core::{Deadline, Elapsed, RequestDeadline};
pub use propagate::{DeadlineFuture, PropagateDeadline, PropagateDeadlineLayer};
pub use service::Timeout;

use palisade_core::metrics::{MetricDef, MetricKind};

/// The metrics a timeout layer emits (label `name` on all).
pub const METRICS: &[MetricDef] = &[
    MetricDef::new(
        "palisade_timeout_calls_total",
        MetricKind::Counter,
        "calls through a timeout layer; label outcome = completed | elapsed",
    ),
    MetricDef::new(
        "palisade_timeout_call_duration_seconds",
        MetricKind::Histogram,
        "time from call to completion, or to cancellation when the timeout elapsed",
    ),
];

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_follow_the_naming_scheme() {
        for m in super::METRICS {
            assert!(m.follows_scheme(), "{m:?}");
        }
    }
}
