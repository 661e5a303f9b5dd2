//! Adaptive concurrency: a concurrency limit that follows the backend's capacity.

mod aimd;
mod config;
mod future;
mod gradient;
mod handle;
mod layer;
mod service;
mod signal;

use std::time::Duration;

pub use aimd::Aimd;
pub use config::{AdaptiveLimitConfig, AdaptiveLimitConfigBuilder, Algorithm};
pub use future::ResponseFuture;
pub use gradient::Gradient;
pub use handle::AdaptiveLimitHandle;
pub use layer::AdaptiveLimitLayer;
pub use service::AdaptiveLimit;
pub use signal::LatencyOnly;

/// One finished call, as the algorithms see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// How long the call took.
    pub(crate) rtt: Duration,
    /// Calls in flight when it started (itself included).
    pub(crate) in_flight: usize,
    /// It failed (by the layer's classifier).
    pub(crate) dropped: bool,
}
