//! The shared vocabulary of [Palisade](https://github.com/palisade-rs/palisade)'s resilience
//! middleware.
//!
//! Every palisade layer (timeout, retry, circuit breaker, rate limit, degrade, chaos) speaks
//! this crate's language, so they compose in any order and a caller handles their outcomes
//! in one place:
//!
//! - [`Classify`] and [`Outcome`]: one answer to "was this call a failure?", shared by retry,
//!   the breaker, fallbacks and metrics; implemented for closures.
//! - Rejections ([`Elapsed`], [`CircuitOpen`], [`RateLimited`], [`Overloaded`],
//!   [`RetriesExhausted`]): what a layer returns instead of calling the service. Layers
//!   return `S::Error::from(rejection)`, so a stack's error type is either
//!   [`BoxError`] or [`Error<E>`], whatever the order of its layers.
//! - [`event`]: typed events to listeners and `tracing`; [`metrics`]: metric handles and the
//!   naming scheme (`palisade_<layer>_<what>`, label `name`).
//! - [`Deadline`]: deadline propagation from outer timeouts to inner layers.
//! - [`throttle`]: upstream throttle hints ("slow down until T") that a whole client obeys.
//! - [`time`]: saturating time arithmetic (`Duration::MAX` means "never", never a panic).
//! - [`Name`]: the cheap layer name on errors, events and metrics; [`ConfigError`]: the
//!   validation error every builder returns.
//!
//! # Example
//!
//! A caller handles an outcome the same way whether the stack's error is a `BoxError` or a
//! typed [`Error<E>`]:
//!
//! ```
//! use palisade_core::{AsRejection, BoxError, CircuitOpen, Classify, Error, Name, Outcome};
//! use std::time::Duration;
//!
//! // What a circuit breaker returns when it is open, as each error type:
//! let open = CircuitOpen::new(Name::new("payments"), Some(Duration::from_secs(4)));
//! let boxed: BoxError = open.clone().into();
//! let typed: Error<std::io::Error> = open.into();
//!
//! for rejection in [boxed.as_rejection(), typed.as_rejection()] {
//!     let rejection = rejection.expect("the breaker rejected the call");
//!     assert_eq!(rejection.name().as_str(), "payments");
//!     assert_eq!(rejection.retry_after(), Some(Duration::from_secs(4)));
//! }
//! assert_eq!(typed.to_string(), "circuit 'payments' is open; next probe in 4.0s");
//!
//! // A classifier that counts HTTP 5xx as failures and 4xx as the caller's problem:
//! let classify = |res: &Result<u16, BoxError>| match res {
//!     Ok(s) if *s >= 500 => Outcome::Failure,
//!     Ok(_) => Outcome::Success,
//!     Err(_) => Outcome::Failure,
//! };
//! assert_eq!(classify.classify(&Ok(503)), Outcome::Failure);
//! assert_eq!(classify.classify(&Ok(404)), Outcome::Success);
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod classify;
pub mod config;
pub mod deadline;
mod error;
pub mod event;
pub mod hash;
pub mod metrics;
mod name;
mod priority;
mod rejection;
pub mod throttle;
pub mod time;

pub use classify::{Classify, DefaultClassifier, Outcome, RejectionAware};
pub use config::ConfigError;
pub use deadline::{Deadline, RequestDeadline};
pub use error::{BoxError, Error};
pub use event::{Emitter, Event, Listeners};
pub use name::Name;
pub use priority::Priority;
pub use rejection::{
    AsRejection, CircuitOpen, Elapsed, Overloaded, RateLimited, Rejection, RejectionKind,
    RetriesExhausted, find_rejection,
};
