//! Answer from a fallback when the live call fails or is rejected.
//!
//! [`FallbackLayer`] wraps a service; when a call's result triggers (a failure by the
//! classifier, or a rejection kind its [`Triggers`](crate::Triggers) select), it answers
//! from its [`FallbackSource`] instead: a [`Value`], a function of the error
//! ([`FromError`]), a function of the request and the error ([`FromRequest`]), or a
//! [`Secondary`] service. The answer is marked [`Degraded`](crate::Degraded) with the
//! trigger (unless the layer is [`unmarked`](FallbackLayer::unmarked), for response types
//! that cannot carry a mark). An inner service that fails its `poll_ready` (a closed
//! connection, a `Buffer` whose worker is gone) is answered for too: the error is recorded,
//! the layer reports ready, and the next call treats it as the live path's error. If the fallback fails too, its error is returned with the original as its
//! source ([`FallbackFailed`]); nothing is swallowed. (When the live path *answered*, with
//! a response the classifier called a failure, and the fallback fails, that live response
//! is returned unmarked: a real answer beats an error; the failure is still counted and
//! reported as [`DegradeEvent::FallbackFailed`](crate::DegradeEvent::FallbackFailed).)
//!
//! While its [`Switch`](crate::Switch) is in degraded mode the layer answers from the
//! fallback without calling (or waiting for) the service.
//!
//! ```
//! use palisade_degrade::fallback::{FallbackLayer, Secondary};
//! use palisade_degrade::{FallbackConfig, Marked};
//! use palisade_core::BoxError;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let primary = service_fn(|_: &'static str| async { Err::<Marked<&str>, BoxError>("primary down".into()) });
//! let replica = service_fn(|q: &'static str| async move { Ok::<_, BoxError>(Marked::new(q)) });
//!
//! let svc = ServiceBuilder::new()
//!     .layer(FallbackLayer::new(FallbackConfig::default(), Secondary::new(replica)))
//!     .service(primary);
//! let answer = svc.oneshot("rust").await?;
//! assert_eq!(*answer, "rust");
//! assert!(answer.is_degraded());
//! # Ok(())
//! # }
//! ```

mod config;
mod future;
mod handle;
mod layer;
mod service;
mod source;
mod state;

pub use config::{FallbackConfig, FallbackConfigBuilder};
pub use future::ResponseFuture;
pub use handle::{FallbackHandle, FallbackSnapshot};
pub use layer::FallbackLayer;
pub use service::Fallback;
pub use source::{
    FallbackFailed, FallbackSource, FromError, FromRequest, Oneshot, Secondary, Value,
};
pub(crate) use state::Shared;
