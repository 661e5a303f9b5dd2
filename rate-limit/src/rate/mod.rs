//! GCRA rate limits on [`governor`]: direct or keyed, cost per request, reject or wait mode.

mod config;
mod future;
mod layer;
mod limiter;
mod service;
mod store;

pub use config::{
    DEFAULT_CLEANUP_INTERVAL, DEFAULT_MAX_KEYS, MAX_REFILL, RateLimitBuilder, RateLimitConfig,
};
pub use future::ResponseFuture;
pub use layer::RateLimitLayer;
pub use limiter::{Cost, Direct, Keyed, Limiter, UnitCost};
pub use service::RateLimit;
