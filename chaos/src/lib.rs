//! Fault injection for tower services, and a deterministic simulation kit for replaying
//! incidents in virtual time.
//!
//! Resilience code is only trusted once it has been seen surviving the faults it claims to
//! handle. [`ChaosLayer`] wraps any tower service and, per call, by probability and/or on a
//! schedule of time windows, injects:
//!
//! - an error from your function ([`ChaosConfigBuilder::error`]) or the built-in
//!   [`InjectedFault`];
//! - a replaced response (a `503`) ([`ChaosConfigBuilder::replace`]);
//! - latency, fixed, uniform or long-tailed ([`Latency`]);
//! - a hang: the call never answers ([`ChaosConfigBuilder::hang`]);
//! - a readiness failure ([`ChaosConfigBuilder::fail_readiness`]; read its note on tower's
//!   contract);
//! - your own behaviour on the request or the answer ([`ChaosConfigBuilder::behaviour`],
//!   [`ChaosConfigBuilder::answer_behaviour_fn`]).
//!
//! Runs are reproducible: the RNG is seeded, and every time is tokio's, so on a paused clock
//! the same seed injects the same faults into the same calls. A [`ChaosHandle`] switches
//! injection on and off and changes rates at run time; switched off, a call costs one
//! atomic load. Every injected fault is counted, emitted as a [`ChaosEvent`] and (feature
//! `metrics`) recorded in [`METRICS`].
//!
//! The [`sim`] module (feature `sim`, on by default) replays whole incidents: a simulated
//! backend with a capacity and a fault script, an open-loop load generator and a report
//! (goodput, amplification, percentiles, time to recover).
//!
//! # Example
//!
//! One call in ten fails, one in five is slowed by a long-tailed delay, and from t=30s to
//! t=60s every call fails (an outage):
//!
//! ```
//! use palisade_chaos::{ChaosConfig, ChaosLayer, Fault, FaultKind, Latency, Window};
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secs = Duration::from_secs;
//! let config = ChaosConfig::builder()
//!     .name("orders-db")
//!     .seed(42)
//!     .error(0.1, |_req: &u32| std::io::Error::other("injected"))
//!     .latency(0.2, Latency::lognormal(Duration::from_millis(20), 1.0))
//!     .window(Window::new(Fault::Error, secs(30)..secs(60)))
//!     .build()?;
//! let chaos = ChaosLayer::new(config);
//! let handle = chaos.handle();
//!
//! let mut svc = ServiceBuilder::new()
//!     .layer(chaos)
//!     .service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n * 2) });
//!
//! let mut failed = 0;
//! for n in 0..1000 {
//!     if svc.ready().await?.call(n).await.is_err() {
//!         failed += 1;
//!     }
//! }
//! assert!((60..140).contains(&failed), "about one in ten: {failed}");
//! assert_eq!(handle.injected(FaultKind::Error), failed);
//!
//! // During the outage window, every call fails.
//! tokio::time::advance(secs(31)).await;
//! assert!(svc.ready().await?.call(1).await.is_err());
//!
//! // Off: the service answers untouched.
//! handle.disable();
//! assert_eq!(svc.ready().await?.call(21).await?, 42);
//! # Ok(()) }
//! ```
//!
//! # Placement
//!
//! Innermost, right above the service, a chaos layer plays a misbehaving dependency: every
//! layer above it (per-attempt timeout, breaker, retry) sees its faults as the backend's.
//! A chaos layer injecting latency or hangs must sit *inside* a timeout, or nothing ends
//! the hang. Switched off (the handle), it costs one relaxed atomic load per call and
//! allocates nothing, so it can stay in production stacks for game days.
//!
//! # Metrics
//!
//! With the `metrics` feature: `palisade_chaos_injected_total` (label `fault`),
//! `palisade_chaos_injected_delay_seconds` and `palisade_chaos_enabled`, each labelled
//! `name`; see [`METRICS`].
//!
//! # Features
//!
//! - `sim` (default): the [`sim`] module; needs tokio's `rt` to spawn request tasks.
//! - `metrics`: feed the `metrics` facade.
//! - `serde`: load [`ChaosSettings`] (rates, latency, schedule) from data.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod event;
mod fault;
mod future;
mod handle;
mod layer;
mod schedule;
mod service;

pub use config::{ChaosConfig, ChaosConfigBuilder, ChaosSettings, FaultRates, InjectedFault};
pub use event::{ChaosEvent, METRICS};
pub use fault::{Fault, FaultKind, Latency};
pub use future::ResponseFuture;
pub use handle::ChaosHandle;
pub use layer::ChaosLayer;
pub use schedule::Window;
pub use service::Chaos;

#[cfg(feature = "sim")]
pub mod sim;
