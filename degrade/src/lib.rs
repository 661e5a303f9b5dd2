//! Graceful degradation as tower layers: keep part of the functionality working when a
//! dependency fails or the system is overloaded, instead of failing whole.
//!
//! - [`FallbackLayer`]: when the live call fails or is rejected (open circuit, rate limit,
//!   timeout, overload; which ones is configurable per kind with [`Triggers`]), answer from
//!   a value, a function of the request and the error, or a secondary service.
//! - [`StaleCacheLayer`]: remember the last good answer per key (bounded, with a maximum
//!   staleness) and serve it when the live call fails; live answers refresh it.
//! - [`ShedLayer`]: under overload (in-flight count, queueing delay, or an external
//!   signal), refuse low-priority requests first so critical traffic survives.
//! - Every answer that did not come from the live path carries a [`Degraded`] mark (what
//!   answered, why, how stale), through the [`Mark`] trait: the [`Marked`] wrapper, or an
//!   `http::Response` extension with the `http` feature. Live answers carry none.
//! - A [`Switch`] puts layers into degraded mode and back at run time (an operator's
//!   incident lever): always fall back, serve from the cache, shed all but critical.
//!
//! # Example
//!
//! A recommendations stage that sheds background requests under overload and answers a
//! generic list, marked as degraded, whenever the live path cannot:
//!
//! ```
//! use palisade_degrade::fallback::Value;
//! use palisade_degrade::{FallbackConfig, FallbackLayer, Marked, ShedConfig, ShedLayer, Trigger};
//! use palisade_core::{BoxError, Priority};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! #[derive(Clone)]
//! struct Request { user: u64, background: bool }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let recommender = service_fn(|req: Request| async move {
//!     Ok::<_, BoxError>(Marked::new(vec![format!("picked for {}", req.user)]))
//! });
//!
//! let fallback = FallbackLayer::new(
//!     FallbackConfig::builder().name("recommendations").build()?,
//!     Value::new(Marked::new(vec!["bestsellers".to_string()])),
//! );
//! let shed = ShedLayer::new(ShedConfig::builder().name("recommender").max_in_flight(64).build()?)
//!     .prioritize(|r: &Request| if r.background { Priority::Sheddable } else { Priority::Default });
//!
//! let mut svc = ServiceBuilder::new().layer(fallback.clone()).layer(shed.clone()).service(recommender);
//!
//! // Healthy: the live answer, unmarked.
//! let live = svc.ready().await?.call(Request { user: 7, background: false }).await?;
//! assert!(live.is_live());
//!
//! // An incident: the operator sheds everything but critical traffic.
//! shed.switch().degrade();
//! let answer = svc.ready().await?.call(Request { user: 7, background: true }).await?;
//! assert_eq!(*answer, ["bestsellers"]);
//! let mark = answer.degraded().expect("not live");
//! assert_eq!(mark.trigger(), Trigger::Shed(Priority::Sheddable));
//! # Ok(())
//! # }
//! ```
//!
//! # Where the layers go
//!
//! Outermost: a fallback (or stale cache) answers for everything below it, including the
//! rejections of timeouts, retries, breakers and limiters. Shedding sits low, next to the
//! service, where in-flight counts and readiness waits reflect the backend's load. A
//! typical order: `Fallback → StaleCache → Timeout → Retry → CircuitBreaker → Shed → service`.
//!
//! # What triggers, and readiness
//!
//! Rejections made by palisade layers below (open circuit, rate limit, overload, timeout,
//! retries exhausted) trigger by kind, as [`Triggers`] say; other results are judged by the
//! classifier, by default [`palisade_core::RejectionAware`] (the same health classifier as
//! the breaker's: every other `Err` is a failure).
//!
//! Readiness is honest: a fallback or a stale cache answers for everything below it,
//! including an inner service that cannot become ready. An error from the inner
//! `poll_ready` (a closed connection, a `Buffer` whose worker is gone) is not passed to the
//! caller, who could only give up: `poll_ready` records it and reports ready, and the next
//! `call` treats it as the live path's error (the fallback or a fresh-enough entry answers
//! if it triggers; the error is returned from `call` if not).
//!
//! Marking is optional: a fallback over a response type that cannot carry a [`Degraded`]
//! mark works with [`FallbackLayer::unmarked`].
//!
//! # Errors stay flat
//!
//! The services return `S::Error` unchanged. [`ShedLayer`] needs `S::Error:
//! From<Overloaded>` (true of `BoxError` and `palisade_core::Error<E>`); the fallback and
//! the stale cache find rejections with `palisade_core::AsRejection`. A fallback that fails
//! itself (only a [`Secondary`](fallback::Secondary) service can) returns a
//! [`FallbackFailed`] holding both errors, with the original as its `source()`.
//!
//! # Observability
//!
//! Events ([`DegradeEvent`]) go to listeners registered with `.on_event(..)` on each config
//! builder and to `tracing` (target `palisade::degrade`); with the `metrics` feature the
//! counters and gauges in [`METRICS`] are fed, labelled by layer name. Nobody listening
//! costs nothing.
//!
//! # Features
//!
//! - `metrics`: feed the `metrics` facade.
//! - `serde`: load the configs from data.
//! - `http`: implement [`Mark`] for `http::Response` (the mark is an extensions entry).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod event;
pub mod fallback;
mod mark;
mod metrics;
pub mod shed;
pub mod stale;
mod switch;

pub use config::Triggers;
pub use event::DegradeEvent;
pub use fallback::{Fallback, FallbackConfig, FallbackFailed, FallbackLayer};
pub use mark::{ByMark, Degraded, Mark, Marked, Marker, NoMark, Origin, Trigger};
pub use metrics::METRICS;
pub use shed::{Shed, ShedConfig, ShedLayer};
pub use stale::{StaleCache, StaleCacheLayer, StaleConfig};
pub use switch::Switch;
