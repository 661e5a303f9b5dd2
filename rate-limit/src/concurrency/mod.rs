//! A concurrency limit (bulkhead): at most N calls in flight, shared by clones.

mod config;
mod future;
mod handle;
mod layer;
mod service;

pub use config::{ConcurrencyLimitConfig, ConcurrencyLimitConfigBuilder};
pub use future::ResponseFuture;
pub use handle::ConcurrencyLimitHandle;
pub use layer::ConcurrencyLimitLayer;
pub use service::ConcurrencyLimit;
