//! The connection to Redis and the GCRA script it runs.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::{RedisResult, Script};

/// A connection a [`RedisLimiter`](super::RedisLimiter) can run its script on: any clonable,
/// shareable async connection of the `redis` crate.
///
/// - [`redis::aio::ConnectionManager`] (recommended for one server or a Sentinel-fronted
///   one): one multiplexed connection that reconnects by itself;
/// - [`redis::aio::MultiplexedConnection`];
/// - `redis::cluster_async::ClusterConnection` (the `redis` crate's `cluster-async`
///   feature): all of one limiter's keys carry the hash tag `{<name>}`, so they live in
///   one slot and every decision is one round trip to one node.
///
/// Every clone must talk to the same server (or cluster): a decision clones the connection
/// (cheap: an `Arc`) and runs one `EVALSHA` on it.
pub trait RedisConnection: ::redis::aio::ConnectionLike + Clone + Send + Sync + 'static {}

impl<T: ::redis::aio::ConnectionLike + Clone + Send + Sync + 'static> RedisConnection for T {}

/// GCRA on the server's clock, atomically: one key per limiter key holding its theoretical
/// arrival time (TAT) in microseconds since 2023-11-14 (a recent epoch keeps the doubles of
/// Lua exact to a few nanoseconds), expiring when the key would be fresh again.
///
/// `ARGV`: emission interval `T` in microseconds (may be fractional), burst, cells needed
/// `n`, cells wanted `want` (`n <= want`: a lease asks for more than it needs). Grants
/// between `n` and `want` cells if at least `n` conform now. Returns `{granted, wait, tat}`
/// in nanoseconds: `granted = 0` and the wait until `n` cells conform, or the cells granted
/// and 0; and in both cases how far the key's TAT is ahead of now (0 or more).
pub(crate) const GCRA_LUA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = (tonumber(t[1]) - 1700000000) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local tau = burst * T
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local free = math.floor((tau - (tat - now)) / T + 0.001)
if free < n then
  return {0, math.ceil((tat + n * T - tau - now) * 1000), math.floor((tat - now) * 1000)}
end
local granted = math.min(want, free)
local new_tat = tat + granted * T
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {granted, 0, math.floor((new_tat - now) * 1000)}
";

static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA_LUA));

/// What the script answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `granted` cells were taken; the key's TAT is now `tat` ahead of the server's clock.
    Granted { granted: u32, tat: Duration },
    /// Nothing taken: the cells needed conform after `retry_after`; the TAT is `tat` ahead.
    Rejected {
        retry_after: Duration,
        tat: Duration,
    },
}

impl Reply {
    fn from_parts(granted: i64, wait: i64, tat: i64) -> Self {
        let ns = |n: i64| Duration::from_nanos(u64::try_from(n).unwrap_or(0));
        match u32::try_from(granted) {
            Ok(0) | Err(_) => Reply::Rejected {
                retry_after: ns(wait),
                tat: ns(tat),
            },
            Ok(granted) => Reply::Granted {
                granted,
                tat: ns(tat),
            },
        }
    }

    /// How far the key's TAT was ahead of the server's clock.
    pub(crate) fn tat(self) -> Duration {
        match self {
            Reply::Granted { tat, .. } | Reply::Rejected { tat, .. } => tat,
        }
    }
}

/// The arguments of one script call.
#[derive(Debug, Clone)]
pub(crate) struct Ask {
    /// The emission interval in microseconds, as Lua reads it (`"1000.5"`).
    pub(crate) interval_us: Arc<str>,
    pub(crate) burst: u32,
    pub(crate) need: u32,
    pub(crate) want: u32,
}

/// `d` in microseconds, written exactly to the nanosecond.
pub(crate) fn micros_text(d: Duration) -> String {
    let nanos = d.as_nanos();
    format!("{}.{:03}", nanos / 1000, nanos % 1000)
}

type ReplyFuture = Pin<Box<dyn Future<Output = RedisResult<Reply>> + Send>>;

trait DynConn: Send + Sync {
    fn gcra(&self, key: String, ask: Ask) -> ReplyFuture;
}

struct Typed<C>(C);

impl<C: RedisConnection> DynConn for Typed<C> {
    fn gcra(&self, key: String, ask: Ask) -> ReplyFuture {
        let mut conn = self.0.clone();
        Box::pin(async move {
            let (granted, wait, tat): (i64, i64, i64) = GCRA
                .key(key)
                .arg(&*ask.interval_us)
                .arg(ask.burst)
                .arg(ask.need)
                .arg(ask.want)
                .invoke_async(&mut conn)
                .await?;
            Ok(Reply::from_parts(granted, wait, tat))
        })
    }
}

/// A type-erased [`RedisConnection`].
#[derive(Clone)]
pub(crate) struct Conn(Arc<dyn DynConn>);

impl Conn {
    pub(crate) fn new(conn: impl RedisConnection) -> Self {
        Self(Arc::new(Typed(conn)))
    }

    /// Run the GCRA script on `key`.
    pub(crate) fn gcra(&self, key: String, ask: Ask) -> ReplyFuture {
        self.0.gcra(key, ask)
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_are_exact() {
        assert_eq!(micros_text(Duration::from_millis(10)), "10000.000");
        assert_eq!(micros_text(Duration::from_nanos(1_000_500)), "1000.500");
        assert_eq!(micros_text(Duration::from_nanos(333_333)), "333.333");
    }

    #[test]
    fn replies() {
        let us = Duration::from_micros;
        assert_eq!(
            Reply::from_parts(0, 5_000, 7_000),
            Reply::Rejected {
                retry_after: us(5),
                tat: us(7)
            }
        );
        assert_eq!(
            Reply::from_parts(3, 0, 9_000),
            Reply::Granted {
                granted: 3,
                tat: us(9)
            }
        );
        assert_eq!(Reply::from_parts(3, 0, 9_000).tat(), us(9));
        assert_eq!(
            Reply::from_parts(-1, -4, -2),
            Reply::Rejected {
                retry_after: Duration::ZERO,
                tat: Duration::ZERO
            }
        );
    }
}
