//! GCRA rate limits on [`governor`]: direct or keyed, cost per request, reject or wait mode.

mod config;
mod future;
mod handle;
mod layer;
mod limiter;
mod pace;
mod quota;
mod service;
mod store;

pub use config::{
    DEFAULT_CLEANUP_INTERVAL, DEFAULT_MAX_KEYS, DEFAULT_RAMP, MAX_REFILL, RateLimitConfig,
    RateLimitConfigBuilder,
};
pub use future::ResponseFuture;
pub use handle::{RateLimitHandle, RateLimitSnapshot};
pub use layer::RateLimitLayer;
pub use limiter::{Cost, Direct, Keyed, Limiter, UnitCost};
pub use quota::{FollowQuota, FollowQuotaFuture, FollowQuotaLayer};
pub use service::RateLimit;
