//! One rate limit for a whole fleet, kept in Redis (feature `redis`), without a round trip
//! per call.
//!
//! A per-process limiter lets N replicas send N times the quota to a shared backend. A
//! [`RedisRateLimitLayer`] shares one GCRA quota between every replica that uses the same
//! limit name and Redis, with the local limiter's API: the same config fields (`cells`,
//! `period`, `burst`, `max_wait`; a [`RateLimitConfig`](crate::RateLimitConfig) converts with
//! `From`), the same key function, the same [`cost`](RedisRateLimitLayer::cost), the same
//! reject or wait modes and the same [`RateLimited`](palisade_core::RateLimited) rejection.
//!
//! ```
//! use palisade_core::{BoxError, RateLimited};
//! use palisade_rate_limit::redis::{Decider, Mode, RedisRateLimitConfig};
//! use redis::aio::{ConnectionManager, ConnectionManagerConfig};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! // Any clonable async connection of the `redis` crate; a ConnectionManager reconnects by
//! // itself. (Nothing listens on port 1 here: this example shows the failure policy.)
//! let client = redis::Client::open("redis://127.0.0.1:1/")?;
//! let conn = ConnectionManager::new_lazy_with_config(client, ConnectionManagerConfig::new())?;
//!
//! let layer = RedisRateLimitConfig::builder(100, Duration::from_secs(1))
//!     .name("partner-api")
//!     .expected_replicas(4) // fail-open: this replica allows 25/s, burst 25
//!     .lease_cells(5) // up to 5 cells per round trip: over-admission ≤ 4 × 4 per period
//!     .call_timeout(Duration::from_millis(20))
//!     .breaker_failures(1)
//!     .build(conn)?
//!     .key_by(|tenant: &&'static str| *tenant);
//! let limiter = layer.limiter().clone();
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|tenant: &'static str| async move { Ok::<_, BoxError>(tenant.len()) }));
//!
//! // Redis is unreachable: the call is decided by the failure policy (fail-open by
//! // default) within the call timeout, and the limiter says so.
//! assert_eq!(svc.clone().oneshot("acme").await?, 4);
//! assert_eq!(limiter.mode(), Mode::FailOpen);
//! let admitted = limiter.check_key("acme", 1).await?;
//! assert_eq!(admitted.by, Decider::Fallback);
//! // A cost above the burst is refused for good, without asking anyone.
//! let refused = limiter.check_key("acme", 101).await.unwrap_err();
//! assert!(refused.is_permanent());
//! # Ok(())
//! # }
//! ```
//!
//! # The algorithm: GCRA in one Lua script
//!
//! Each decision runs one script (`EVALSHA`, loaded on first use) that reads the key's
//! theoretical arrival time (TAT), the server's clock (`TIME`: one clock for the whole
//! fleet, no skew between replicas), decides, and writes the new TAT, atomically: no race
//! between replicas, one round trip. The rules are the local limiter's: `T = period /
//! cells`, a call of `n` cells conforms if `max(TAT, now) + n·T − now ≤ burst·T`, and a
//! refusal carries the exact wait, to the microsecond (Redis's clock resolution). The
//! same arrivals get the same decisions as the local GCRA (tested against a model).
//!
//! **Keys and memory.** A limit named `api` keeps key `tenant-7` in
//! `palisade:rl:{api}:tenant-7` (a direct limit: `palisade:rl:{api}`): one string of about
//! 20 bytes of value per active key. Each write sets `PEXPIRE` to the time until the key
//! would be fresh again (at most `burst × T`, i.e. one period with the default burst), so
//! Redis holds only keys used in the last period. The `{api}` hash tag puts all keys of one
//! limit in one Redis Cluster slot.
//!
//! # Leases: the local fast path
//!
//! With [`lease_cells`](RedisRateLimitConfig::lease_cells) `= L > 1`, a replica that needs
//! a round trip asks for more than it needs: the cells its key used in the last
//! [`lease_ttl`](RedisRateLimitConfig::lease_ttl) (its recent rate), at most `L`. Redis grants
//! what conforms now (at least the call's own cells), the replica keeps the rest and admits
//! the next calls locally, without a round trip, until the lease is spent or its ttl ends
//! (unused cells are dropped: they were counted in Redis, so that wastes quota, never
//! exceeds it). At most one lease request per key is in flight per replica; callers
//! arriving meanwhile ask for their own cells only.
//!
//! Calls that certainly cannot conform are refused without a round trip: Redis's answer
//! tells when the next cell conforms, and since other replicas can only push the TAT
//! later, a call for `n` cells before `that + (n − 1)·T` is refused locally (its
//! `retry_after` is then a lower bound).
//!
//! **The accuracy trade-off, in numbers.** The GCRA admits at most `burst + cells` in any
//! window of one period (as the local limiter). A replica never holds more than `L − 1`
//! unused leased cells per key, and only those can be spent in a later window than the one
//! Redis counted them in, so with `R` replicas, in any window of one period:
//!
//! ```text
//! admitted ≤ burst + cells + R × (L − 1)        (per key)
//! ```
//!
//! [`lease_slack`](RedisRateLimitConfig::lease_slack) computes `R × (L − 1)` with `R =
//! expected_replicas`. Example: 1000/s, burst 100, 4 replicas, `L = 10`: at most 1136 in any
//! second instead of 1100 (3.3%), for about one round trip per 10 calls under load.
//! Without leases (`L = 1`, the default) the bound is exact and every decision that is not a
//! certain refusal is one round trip. The test `fleet_never_exceeds_quota_plus_lease_slack`
//! runs 4 replicas with separate connections against a real server and checks the bound on
//! every window; the bench `redis` measures it under saturation.
//!
//! # When Redis fails
//!
//! Every round trip has a timeout ([`call_timeout`](RedisRateLimitConfig::call_timeout),
//! cut short by the caller's ambient [`Deadline`](palisade_core::Deadline)); a call whose
//! round trip fails or times out is decided by the [`FailurePolicy`] at once, so no caller
//! waits on Redis longer than the call timeout. After
//! [`breaker_failures`](RedisRateLimitConfig::breaker_failures) consecutive failures a small
//! breaker opens: calls skip Redis entirely for
//! [`breaker_cooldown`](RedisRateLimitConfig::breaker_cooldown), then one call probes, and a
//! success switches back to Redis.
//!
//! - [`FailurePolicy::FailOpen`] (default): a local GCRA on this replica at `quota /
//!   expected_replicas` decides. Its admissions are not counted in Redis: while some
//!   replicas fail open and others still reach Redis, the fleet may admit up to
//!   `quota / expected_replicas` more per failing replica than the bound above;
//!   the leases and the bound hold again once every replica is back on Redis;
//! - [`FailurePolicy::FailClosed`]: every call is refused, retry after the next probe.
//!
//! [`RedisLimiter::mode`] says who decides; a [`RedisLimitEvent::ModeChanged`] (at `WARN` on
//! `palisade::rate_limit`) and the gauge [`MODE`] (0 Redis, 1 fail-open, 2 fail-closed)
//! report each switch, [`RedisLimitEvent::RedisFailed`] and [`FAILURES`] each failed round
//! trip. Give the connection its own short timeouts too (`ConnectionManagerConfig::
//! set_connection_timeout`, `set_response_timeout`, `set_number_of_retries`): the limiter
//! stops waiting at its timeout, the connection's own retries go on in its background task.
//!
//! # Cluster and Sentinel
//!
//! The limiter runs on any [`RedisConnection`]: a clonable async connection of the `redis`
//! crate. Enable the `redis` crate's own features in your `Cargo.toml` (they add to ours):
//!
//! - **Cluster** (`cluster-async`): `redis::cluster::ClusterClient::new(nodes)?
//!   .get_async_connection().await?` gives a `ClusterConnection`; pass it as the connection.
//!   Every key of one limit carries the hash tag `{<name>}`, so it maps to one slot and every
//!   decision is one round trip to that slot's primary, following `MOVED` redirections
//!   during resharding. Different limit names spread over the cluster.
//! - **Sentinel** (`sentinel`): `redis::sentinel::SentinelClient::build(sentinels,
//!   master_name, None, SentinelServerType::Master)?`, then its `get_async_connection()`
//!   gives a multiplexed connection to the current primary. After a failover, rebuild the
//!   layer's connection (or use one connection per limiter created from the new primary's
//!   address); while the old primary is gone, the failure policy decides.
//!
//! The script needs Redis 5 or later (script effects replication, for `TIME` in a script
//! that writes); the tests run on Redis 7.
//!
//! # Tests and costs
//!
//! The tests in `tests/redis.rs` start a real `redis-server` on a free loopback port (they
//! skip, saying why, when it is not installed; under `CI` they fail instead). Each decision
//! that goes to Redis allocates its key and its future (a round trip costs far more); a
//! lease hit takes one short mutex on this replica's key map and no allocation beyond the
//! key.

mod breaker;
mod config;
mod conn;
mod event;
mod layer;
mod limiter;

pub use config::{FailurePolicy, MAX_REDIS_WAIT, RedisRateLimitBuilder, RedisRateLimitConfig};
pub use conn::RedisConnection;
pub use event::{
    Decider, FAILURES, LOCAL_DECISIONS, MODE, Mode, REDIS_METRICS, ROUND_TRIPS, RedisLimitEvent,
};
pub use layer::{
    DirectRedis, KeyedRedis, RedisKey, RedisRateLimit, RedisRateLimitLayer, ResponseFuture,
};
pub use limiter::{Admitted, RedisLimiter};

/// The GCRA script run by every decision, for reading and for loading by hand
/// (`SCRIPT LOAD`).
pub const GCRA_SCRIPT: &str = conn::GCRA_LUA;
