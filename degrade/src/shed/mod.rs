//! Shed low-priority requests first under overload, so critical traffic survives.
//!
//! [`ShedLayer`] tells each request's [`Priority`](palisade_core::Priority) (critical,
//! default, sheddable, in the style of Google SRE's criticality) with a
//! [`Prioritize`] extractor, and refuses it in `call` with
//! [`Overloaded`](palisade_core::Overloaded) (carrying the priority) when an overload
//! signal passes that priority's threshold ([`Thresholds`]):
//!
//! - **in flight**: the requests in flight through the layer, against `max_in_flight`;
//! - **queueing delay**: how long `poll_ready` waits for the inner service (the queue
//!   below: a concurrency limit, a buffer), against `target_delay`. The estimate jumps to a
//!   longer wait at once and decays gradually as waits shorten; the clock is read only when
//!   the inner service is not ready at once;
//! - **an external signal** (`overloaded_when`, e.g. an adaptive limiter's state) and the
//!   degrade [`Switch`](crate::Switch): while on, everything below critical is shed.
//!
//! The admitted path is two atomic updates and a reference-count bump: no lock, no
//! allocation, no clock read. A [`Fallback`](crate::Fallback) above the shedder turns the
//! sheds into degraded answers, marked with [`Trigger::Shed`](crate::Trigger::Shed).
//!
//! ```
//! use palisade_degrade::shed::{ShedConfig, ShedLayer};
//! use palisade_core::{BoxError, Overloaded, Priority};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let config = ShedConfig::builder().name("api").max_in_flight(100).build()?;
//! let shed = ShedLayer::new(config.clone());
//! shed.switch().degrade(); // e.g. an operator during an incident
//! let mut svc = ServiceBuilder::new()
//!     .layer(shed.prioritize(|path: &&'static str| {
//!         if path.starts_with("/checkout") { Priority::Critical } else { Priority::Sheddable }
//!     }))
//!     .service(service_fn(|path: &'static str| async move { Ok::<_, BoxError>(path.len()) }));
//!
//! assert_eq!(svc.ready().await?.call("/checkout/pay").await?, 13);
//! let err = svc.ready().await?.call("/recommendations").await.unwrap_err();
//! let shed = err.downcast_ref::<Overloaded>().expect("shed");
//! assert_eq!(shed.priority(), Some(Priority::Sheddable));
//! # Ok(())
//! # }
//! ```

mod config;
mod future;
mod handle;
mod layer;
mod service;
mod state;

pub use config::{ShedConfig, ShedConfigBuilder, Signal, Thresholds};
pub use future::ResponseFuture;
pub use handle::{ShedHandle, ShedSnapshot};
pub use layer::ShedLayer;
pub use service::{AllDefault, Prioritize, Shed};
pub(crate) use state::Shared;
