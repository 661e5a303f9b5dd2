//! The fleet-wide limiter: leases and certain rejections on this replica, GCRA in Redis,
//! the breaker and the failure policy.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::RateLimiter;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use palisade_core::{Deadline, Emitter, Listeners, Name, RateLimited, time};
use tokio::time::Instant;

use super::breaker::{Breaker, Transition};
use super::config::{FailurePolicy, RedisRateLimitConfig};
use super::conn::{Ask, Conn, Reply, micros_text};
use super::event::{Decider, Mode, RedisLimitEvent, RedisMetrics};
use crate::clock::{TokioClock, TokioInstant};

type Fallback =
    RateLimiter<String, DefaultKeyedStateStore<String>, TokioClock, NoOpMiddleware<TokioInstant>>;

/// The local state of a limiter is swept of idle keys once per this many decisions.
const SWEEP_EVERY: u64 = 1024;

/// A call the limiter admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// Who admitted it.
    pub by: Decider,
    /// From the call to its admission: the round trip, and in wait mode the wait for its
    /// cells.
    pub waited: Duration,
}

/// A fleet-wide GCRA limiter kept in Redis, shared by all clones (and by every layer built
/// from it). See the [module docs](super) for the algorithm, the leases and their bound,
/// and the failure policy.
///
/// Usable without tower: [`check`](Self::check) and [`check_key`](Self::check_key) decide
/// one call (waiting in wait mode) and never wait past `call_timeout` on Redis.
#[derive(Clone)]
pub struct RedisLimiter {
    shared: Arc<Shared>,
}

struct Shared {
    config: RedisRateLimitConfig,
    emitter: Emitter<RedisLimitEvent>,
    metrics: RedisMetrics,
    conn: Conn,
    interval: Duration,
    /// `burst × interval`.
    tau: Duration,
    interval_us: Arc<str>,
    burst: u32,
    /// `palisade:rl:{<name>}`.
    base_key: String,
    breaker: Breaker,
    fallback: Fallback,
    fallback_burst: NonZeroU32,
    local: Mutex<HashMap<String, KeyState>>,
    decisions: AtomicU64,
}

/// What this replica knows about one key.
#[derive(Debug)]
struct KeyState {
    /// Leased cells left, usable until `lease_until`.
    lease: u32,
    lease_until: Instant,
    /// A lower bound of the key's TAT in Redis, on this replica's clock, from Redis's
    /// answers (the TAT only grows, so a bound stays a bound).
    tat: Option<Instant>,
    /// Cells asked for in the current and the previous `lease_ttl` window.
    demand: u64,
    prev_demand: u64,
    window_start: Instant,
    /// A lease round trip is in flight (at most one per key per replica).
    refilling: bool,
}

impl KeyState {
    fn new(now: Instant) -> Self {
        Self {
            lease: 0,
            lease_until: now,
            tat: None,
            demand: 0,
            prev_demand: 0,
            window_start: now,
            refilling: false,
        }
    }

    fn idle(&self, now: Instant, ttl: Duration) -> bool {
        !self.refilling
            && (self.lease == 0 || now >= self.lease_until)
            && self.tat.is_none_or(|tat| now >= tat)
            && now.saturating_duration_since(self.window_start) >= ttl
    }
}

/// The first, synchronous step of a decision.
enum Step {
    Admit,
    Reject(Duration),
    Ask { want: u32, lease: bool },
}

/// The outcome of one attempt.
enum Attempt {
    Admit(Decider),
    Reject { retry_after: Duration, by: Decider },
}

/// A decision in progress (boxed: it holds a round trip to Redis).
pub(crate) type Pending = Pin<Box<dyn Future<Output = Result<Admitted, RateLimited>> + Send>>;

/// How a decision starts: decided on this replica, or a round trip under way.
pub(crate) enum Start {
    Done(Result<Admitted, RateLimited>),
    Pending(Pending),
}

impl RedisLimiter {
    pub(crate) fn new(
        config: RedisRateLimitConfig,
        listeners: Listeners<RedisLimitEvent>,
        conn: Conn,
    ) -> Self {
        let interval = config.emission_interval();
        let fallback_config = config.fallback_config();
        let fallback_burst =
            NonZeroU32::new(fallback_config.effective_burst()).unwrap_or(NonZeroU32::MIN);
        let metrics = RedisMetrics::register(&config.name);
        metrics.mode.set(Mode::Redis.as_gauge());
        let shared = Shared {
            emitter: Emitter::new(config.name.clone(), listeners),
            metrics,
            conn,
            interval,
            tau: interval.saturating_mul(config.effective_burst()),
            interval_us: micros_text(interval).into(),
            burst: config.effective_burst(),
            base_key: format!("palisade:rl:{{{}}}", config.name),
            breaker: Breaker::new(
                config.breaker_failures,
                config.breaker_cooldown,
                config.call_timeout,
            ),
            fallback: RateLimiter::hashmap_with_clock(fallback_config.quota(), TokioClock::new()),
            fallback_burst,
            local: Mutex::new(HashMap::new()),
            decisions: AtomicU64::new(0),
            config,
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The limit's name.
    pub fn name(&self) -> &Name {
        self.shared.emitter.name()
    }

    pub(crate) fn add_listener(&self, listener: impl Fn(&RedisLimitEvent) + Send + Sync + 'static) {
        self.shared.emitter.add_listener(listener);
    }

    /// The validated config.
    pub fn config(&self) -> &RedisRateLimitConfig {
        &self.shared.config
    }

    /// Who decides now: [`Mode::Redis`] while the breaker is closed, the failure policy's
    /// mode while it is open.
    pub fn mode(&self) -> Mode {
        if self.shared.breaker.is_open() {
            policy_mode(self.shared.config.failure)
        } else {
            Mode::Redis
        }
    }

    /// The Redis key holding `key`'s state: `palisade:rl:{<name>}:<key>`, or
    /// `palisade:rl:{<name>}` for the direct limit (`None`).
    pub fn redis_key(&self, key: Option<&str>) -> String {
        match key {
            None => self.shared.base_key.clone(),
            Some(key) => format!("{}:{key}", self.shared.base_key),
        }
    }

    /// Keys whose state (a lease, a known wait, the recent rate) this replica keeps; idle
    /// ones are dropped every 1024 decisions.
    pub fn local_keys(&self) -> usize {
        self.shared.lock().len()
    }

    /// Decide a call costing `cost` cells against the direct (keyless) quota.
    ///
    /// Admits, or refuses with [`RateLimited`]: with `retry_after` as Redis computed it (to
    /// the microsecond), at least that long when refused on this replica without a round
    /// trip, and permanently ([`RateLimited::is_permanent`]) when `cost` exceeds the burst.
    /// In wait mode it waits up to `max_wait` (and never past the caller's ambient
    /// [`Deadline`]). A round trip never takes longer than `call_timeout`.
    pub fn check(&self, cost: u32) -> impl Future<Output = Result<Admitted, RateLimited>> + Send {
        self.check_redis_key(self.shared.base_key.clone(), cost)
    }

    /// Decide a call costing `cost` cells against `key`'s quota (see [`check`](Self::check)).
    pub fn check_key(
        &self,
        key: impl fmt::Display,
        cost: u32,
    ) -> impl Future<Output = Result<Admitted, RateLimited>> + Send {
        self.check_redis_key(format!("{}:{key}", self.shared.base_key), cost)
    }

    fn check_redis_key(
        &self,
        redis_key: String,
        cost: u32,
    ) -> impl Future<Output = Result<Admitted, RateLimited>> + Send {
        // The ambient deadline is read now, where the caller's scope is.
        let start = self.start(redis_key, cost, Deadline::current());
        async move {
            match start {
                Start::Done(result) => result,
                Start::Pending(pending) => pending.await,
            }
        }
    }

    pub(crate) fn start(&self, redis_key: String, cost: u32, ambient: Option<Deadline>) -> Start {
        let shared = &self.shared;
        let Some(cells) = NonZeroU32::new(cost) else {
            return Start::Done(Ok(Admitted {
                by: Decider::Local,
                waited: Duration::ZERO,
            }));
        };
        if cost > shared.burst {
            shared.metrics.rejected.increment(1);
            shared.emitter.emit(|| RedisLimitEvent::RateLimited {
                cost,
                retry_after: Duration::MAX,
                by: Decider::Local,
            });
            return Start::Done(Err(RateLimited::insufficient_capacity(
                self.name().clone(),
                u64::from(cost),
                u64::from(shared.burst),
            )));
        }
        let now = Instant::now();
        let (give_up, _) = crate::give_up_with(now, shared.config.max_wait, ambient);
        match shared.step(&redis_key, cells.get(), now, true) {
            Step::Admit => {
                shared.metrics.local.increment(1);
                shared.metrics.admitted.increment(1);
                Start::Done(Ok(Admitted {
                    by: Decider::Local,
                    waited: Duration::ZERO,
                }))
            }
            Step::Reject(retry_after) if time::add(now, retry_after) > give_up => {
                shared.metrics.local.increment(1);
                Start::Done(Err(shared.reject(cells.get(), retry_after, Decider::Local)))
            }
            first => {
                let shared = Arc::clone(shared);
                Start::Pending(Box::pin(async move {
                    shared
                        .decide(redis_key, cells.get(), first, now, give_up, ambient)
                        .await
                }))
            }
        }
    }
}

fn policy_mode(policy: FailurePolicy) -> Mode {
    match policy {
        FailurePolicy::FailOpen => Mode::FailOpen,
        FailurePolicy::FailClosed => Mode::FailClosed,
    }
}

/// When a call that may wait `max_wait` from `now` must give up: then, or at the caller's
/// deadline if earlier. (A copy of the crate's private helper, so this module does not
/// reach into the local limiter.)
impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, KeyState>> {
        self.local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What this replica can decide alone about `n` cells of `key`.
    fn step(&self, key: &str, n: u32, now: Instant, count_demand: bool) -> Step {
        let ttl = self.config.lease_ttl;
        let lease_cells = self.config.lease_cells;
        let sweep = self.decisions.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1;
        let mut local = self.lock();
        if sweep {
            local.retain(|_, state| !state.idle(now, ttl));
        }
        let state = match local.get_mut(key) {
            Some(state) => state,
            None => local.entry(key.to_owned()).or_insert(KeyState::new(now)),
        };
        if count_demand {
            let since = now.saturating_duration_since(state.window_start);
            if since >= ttl {
                // A window that ended long ago says nothing about the recent rate.
                state.prev_demand = if since >= ttl * 2 { 0 } else { state.demand };
                state.demand = 0;
                state.window_start = now;
            }
            state.demand = state.demand.saturating_add(u64::from(n));
        }
        if state.lease >= n && now < state.lease_until {
            state.lease -= n;
            return Step::Admit;
        }
        // n cells conform once `now + burst·T >= TAT + n·T`; the TAT in Redis only grows,
        // so while that fails for our bound of it, it certainly fails in Redis too,
        // whatever the other replicas do.
        if let Some(tat) = state.tat {
            let conform = time::add(tat, self.interval * n);
            let reach = time::add(now, self.tau);
            if reach < conform {
                return Step::Reject(conform - reach);
            }
        }
        if lease_cells > 1 && !state.refilling {
            state.refilling = true;
            // Ask for the cells this key used in the last lease_ttl, at most a lease.
            let recent = state.prev_demand.max(state.demand);
            let want = u32::try_from(recent)
                .unwrap_or(u32::MAX)
                .clamp(n, lease_cells.max(n));
            return Step::Ask { want, lease: true };
        }
        Step::Ask {
            want: n,
            lease: false,
        }
    }

    /// Record what Redis answered (sent at `sent`) for `key`.
    fn learn(&self, key: &str, n: u32, sent: Instant, lease: bool, reply: Option<Reply>) {
        let mut local = self.lock();
        let Some(state) = local.get_mut(key) else {
            return;
        };
        if lease {
            state.refilling = false;
        }
        if let Some(reply) = reply {
            let tat = time::add(sent, reply.tat());
            state.tat = Some(state.tat.map_or(tat, |known| known.max(tat)));
        }
        if let (true, Some(Reply::Granted { granted, .. })) = (lease, reply) {
            // Keep at most `lease_cells - 1` cells: the bound of the docs.
            let left = if sent < state.lease_until {
                state.lease
            } else {
                0
            };
            state.lease = left
                .saturating_add(granted.saturating_sub(n))
                .min(self.config.lease_cells.saturating_sub(1));
            state.lease_until = time::add(sent, self.config.lease_ttl);
        }
    }

    fn reject(&self, cost: u32, retry_after: Duration, by: Decider) -> RateLimited {
        self.metrics.rejected.increment(1);
        self.emitter.emit(|| RedisLimitEvent::RateLimited {
            cost,
            retry_after,
            by,
        });
        RateLimited::new(self.emitter.name().clone(), retry_after)
    }

    fn transition(&self, transition: Transition) {
        let (from, to) = match transition {
            Transition::None => return,
            Transition::Opened => (Mode::Redis, policy_mode(self.config.failure)),
            Transition::Closed => {
                // Back on Redis: forget the fallback's keys.
                self.fallback.retain_recent();
                self.fallback.shrink_to_fit();
                (policy_mode(self.config.failure), Mode::Redis)
            }
        };
        self.metrics.mode.set(to.as_gauge());
        self.emitter
            .emit(|| RedisLimitEvent::ModeChanged { from, to });
    }

    /// The failure policy's decision.
    fn fallback(&self, key: &str, n: u32, now: Instant) -> Attempt {
        match self.config.failure {
            FailurePolicy::FailClosed => Attempt::Reject {
                retry_after: self
                    .breaker
                    .next_probe(now)
                    .unwrap_or(self.config.call_timeout),
                by: Decider::Fallback,
            },
            FailurePolicy::FailOpen => {
                // A cost above this replica's share of the burst is charged the whole share.
                let cells = NonZeroU32::new(n)
                    .unwrap_or(NonZeroU32::MIN)
                    .min(self.fallback_burst);
                if self
                    .decisions
                    .load(Ordering::Relaxed)
                    .is_multiple_of(SWEEP_EVERY)
                {
                    self.fallback.retain_recent();
                }
                match self.fallback.check_key_n(&key.to_owned(), cells) {
                    Ok(Ok(())) => Attempt::Admit(Decider::Fallback),
                    Ok(Err(not_until)) => Attempt::Reject {
                        retry_after: not_until
                            .earliest_possible()
                            .into_inner()
                            .saturating_duration_since(now),
                        by: Decider::Fallback,
                    },
                    Err(_) => Attempt::Reject {
                        retry_after: self.config.period,
                        by: Decider::Fallback,
                    },
                }
            }
        }
    }

    /// One attempt: the local step (given for the first), then Redis or the fallback.
    async fn attempt(&self, key: &str, n: u32, step: Step, ambient: Option<Deadline>) -> Attempt {
        let (want, lease) = match step {
            Step::Admit => {
                self.metrics.local.increment(1);
                return Attempt::Admit(Decider::Local);
            }
            Step::Reject(retry_after) => {
                self.metrics.local.increment(1);
                return Attempt::Reject {
                    retry_after,
                    by: Decider::Local,
                };
            }
            Step::Ask { want, lease } => (want, lease),
        };
        let sent = Instant::now();
        if !self.breaker.allow(sent) {
            self.learn(key, n, sent, lease, None);
            return self.fallback(key, n, sent);
        }
        let own = time::add(sent, self.config.call_timeout);
        let until = ambient.map_or(own, |d| d.instant().min(own));
        let ask = Ask {
            interval_us: Arc::clone(&self.interval_us),
            burst: self.burst,
            need: n,
            want,
        };
        self.metrics.round_trips.increment(1);
        let result = tokio::time::timeout_at(until, self.conn.gcra(key.to_owned(), ask)).await;
        let error = match result {
            Ok(Ok(reply)) => {
                self.transition(self.breaker.success());
                self.learn(key, n, sent, lease, Some(reply));
                return match reply {
                    Reply::Granted { .. } => Attempt::Admit(Decider::Redis),
                    Reply::Rejected { retry_after, .. } => Attempt::Reject {
                        retry_after,
                        by: Decider::Redis,
                    },
                };
            }
            Ok(Err(error)) => Some(error.to_string()),
            // Our own timeout is Redis's failure; the caller's deadline is not.
            Err(_) if until == own => Some("timed out".to_owned()),
            Err(_) => None,
        };
        let now = Instant::now();
        self.learn(key, n, sent, lease, None);
        if let Some(error) = error {
            self.metrics.failures.increment(1);
            self.emitter.emit(|| RedisLimitEvent::RedisFailed { error });
            self.transition(self.breaker.failure(now));
        }
        self.fallback(key, n, now)
    }

    /// Decide, waiting in wait mode until `give_up`.
    async fn decide(
        &self,
        key: String,
        n: u32,
        first: Step,
        started: Instant,
        give_up: Instant,
        ambient: Option<Deadline>,
    ) -> Result<Admitted, RateLimited> {
        let mut step = first;
        let mut slept = false;
        loop {
            match self.attempt(&key, n, step, ambient).await {
                Attempt::Admit(by) => {
                    self.metrics.admitted.increment(1);
                    let waited = started.elapsed();
                    if slept {
                        self.emitter
                            .emit(|| RedisLimitEvent::Admitted { waited, by });
                    }
                    return Ok(Admitted { by, waited });
                }
                Attempt::Reject { retry_after, by } => {
                    let now = Instant::now();
                    let at = time::add(now, retry_after);
                    if at > give_up {
                        return Err(self.reject(n, retry_after, by));
                    }
                    tokio::time::sleep_until(at).await;
                    slept = true;
                    step = self.step(&key, n, Instant::now(), false);
                }
            }
        }
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("config", &self.shared.config)
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}
