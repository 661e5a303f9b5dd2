//! The stacks of the scorecard, each built fresh for every run.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use palisade::chaos::sim::{LoadGen, Report, SimBackend, SimError, SimErrorKind, SimResponse};
use palisade::core::throttle::Throttle;
use palisade::prelude::*;
use tower::ServiceBuilder;
use tower::ServiceExt;
use tower::layer::Layer;

use super::incidents::SEED;

/// A stack under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StackKind {
    /// The backend, called directly.
    None,
    /// tower's `Retry` with 3 attempts, no backoff, no budget: what a hurried user writes.
    NaiveRetry,
    /// tower's built-ins: `Retry` (3 attempts, 50 ms then 100 ms backoff) over `LoadShed`
    /// over `ConcurrencyLimit(64)` over a 300 ms `Timeout` per attempt.
    Tower,
    /// tower-resilience's equivalent: `Retry` (3 attempts, exponential from 20 ms) over a
    /// `Bulkhead` (64, no waiting) over a 300 ms `TimeLimiter`. Its circuit breaker is left
    /// out: it times its open state with the wall clock (`std::time::Instant`), which a
    /// simulation on tokio's paused clock cannot advance.
    TowerResilience,
    /// palisade exactly as the README recommends, with default configs: `Stack` of a 2 s
    /// overall timeout, retry (until that deadline, exponential from 20 ms, the default budget), a
    /// default circuit breaker, an AIMD adaptive limit at half the attempt timeout and a
    /// 300 ms attempt timeout.
    PalisadeDefault,
    /// The same `Stack` with what an HTTP client's classifiers add ([`tuned`](super::tuned)):
    /// an upstream's `429` is not a failure and its Retry-After is honoured, a backend's
    /// shedding (a `503`) shrinks the adaptive limit, a budget floor of 1 retry per second.
    PalisadeTuned,
    /// "palisade tuned" with the throttle gate around the backend
    /// ([`throttle_gate`](super::throttle_gate)): an upstream's `429` + Retry-After holds
    /// back every caller until the hinted instant, then probes and ramps back up.
    PalisadeThrottle,
}

impl StackKind {
    /// Every stack, in the table's order.
    pub const ALL: [StackKind; 7] = [
        StackKind::None,
        StackKind::NaiveRetry,
        StackKind::Tower,
        StackKind::TowerResilience,
        StackKind::PalisadeDefault,
        StackKind::PalisadeTuned,
        StackKind::PalisadeThrottle,
    ];

    /// The stack's name in the table.
    pub fn label(self) -> &'static str {
        match self {
            StackKind::None => "no resilience",
            StackKind::NaiveRetry => "naive retry",
            StackKind::Tower => "tower built-ins",
            StackKind::TowerResilience => "tower-resilience",
            StackKind::PalisadeDefault => "palisade default",
            StackKind::PalisadeTuned => "palisade tuned",
            StackKind::PalisadeThrottle => "palisade tuned + throttle gate",
        }
    }

    /// The stack's line colour in the charts (RGB).
    pub fn colour(self) -> (u8, u8, u8) {
        match self {
            StackKind::None => (140, 140, 140),
            StackKind::NaiveRetry => (230, 159, 0),
            StackKind::Tower => (86, 180, 233),
            StackKind::TowerResilience => (204, 121, 167),
            StackKind::PalisadeDefault => (213, 94, 0),
            StackKind::PalisadeTuned => (0, 158, 115),
            StackKind::PalisadeThrottle => (0, 114, 178),
        }
    }

    /// The colour's name, for the charts' key.
    pub fn colour_name(self) -> &'static str {
        match self {
            StackKind::None => "grey",
            StackKind::NaiveRetry => "orange",
            StackKind::Tower => "sky blue",
            StackKind::TowerResilience => "pink",
            StackKind::PalisadeDefault => "vermilion",
            StackKind::PalisadeTuned => "green",
            StackKind::PalisadeThrottle => "blue",
        }
    }
}

/// The per-attempt timeout every stack with timeouts uses (the README's value).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);
/// The overall timeout of the palisade stacks (the README's value).
pub const OVERALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The concurrency limit of the tower and tower-resilience stacks.
pub const CONCURRENCY: usize = 64;

/// tower's retry policy: up to `attempts` attempts of any error, sleeping `backoff(n)`
/// before retry `n` (1-based).
#[derive(Clone, Copy)]
struct Attempts {
    left: u32,
    backoff: fn(u32) -> Duration,
    done: u32,
}

impl Attempts {
    fn new(attempts: u32, backoff: fn(u32) -> Duration) -> Self {
        Self {
            left: attempts,
            backoff,
            done: 1,
        }
    }
}

type Pause = Pin<Box<dyn Future<Output = ()> + Send>>;

impl<Req: Clone, Res, E> tower::retry::Policy<Req, Res, E> for Attempts {
    type Future = Pause;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Pause> {
        if result.is_ok() || self.left <= 1 {
            return None;
        }
        self.left -= 1;
        let delay = (self.backoff)(self.done);
        self.done += 1;
        if delay.is_zero() {
            Some(Box::pin(std::future::ready(())))
        } else {
            Some(Box::pin(tokio::time::sleep(delay)))
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

fn no_backoff(_: u32) -> Duration {
    Duration::ZERO
}

fn tower_backoff(retry: u32) -> Duration {
    Duration::from_millis(50 << (retry - 1).min(10))
}

/// The README's recommended stack, with every config at its default but the values the
/// README sets: a 2 s overall timeout, retries until it with exponential backoff from 20 ms, a
/// default breaker, an AIMD adaptive concurrency limit at a latency threshold of half the
/// attempt timeout (floor 4, calls over it waiting up to 1 s, 1000 at most), and a 300 ms
/// attempt timeout. The one definition of the README's stack in this crate: the overhead
/// bench and the allocation check build it from here too.
pub fn palisade_default() -> Result<DefaultStack, palisade::core::ConfigError> {
    Ok(DefaultLayers::new()?.stack())
}

/// The README's stack's type: its five layers in a [`Stack`].
pub type DefaultStack = Stack<
    tower::layer::util::Identity,
    TimeoutLayer,
    RetryLayer,
    CircuitBreakerLayer,
    AdaptiveLimitLayer,
    TimeoutLayer,
>;

/// The README's stack as its five layers, before they are put in a [`Stack`]: for a test or
/// a probe that needs a layer's handle (`limit.handle()`, `breaker.handle()`) or wraps one
/// of them. [`palisade_default`] is `DefaultLayers::new()?.stack()`.
pub struct DefaultLayers {
    /// The overall timeout, 2 s.
    pub overall: TimeoutLayer,
    /// Retries until the overall deadline, exponential backoff from 20 ms.
    pub retry: RetryLayer,
    /// The default breaker.
    pub breaker: CircuitBreakerLayer,
    /// AIMD at half the attempt timeout, floor 4, calls over it waiting up to 1 s (1000 at
    /// most).
    pub limit: AdaptiveLimitLayer,
    /// The per-attempt timeout, 300 ms.
    pub attempt: TimeoutLayer,
}

impl DefaultLayers {
    /// The README's layers, configured as the README configures them.
    pub fn new() -> Result<Self, palisade::core::ConfigError> {
        Ok(Self {
            overall: TimeoutLayer::builder()
                .name("overall")
                .timeout(OVERALL_TIMEOUT)
                .build()?,
            retry: RetryLayer::builder()
                .name("api")
                .until_deadline()
                .backoff(Backoff::exponential(Duration::from_millis(20)))
                .seed(SEED)
                .build()?,
            breaker: CircuitBreakerLayer::builder().name("api").build()?,
            limit: AdaptiveLimitLayer::builder()
                .name("api")
                .algorithm(Aimd::new().latency_threshold(ATTEMPT_TIMEOUT / 2))
                .limits(4, 1000)
                .max_wait(Duration::from_secs(1))
                .max_queue(1000)
                .build()?,
            attempt: TimeoutLayer::builder()
                .name("attempt")
                .timeout(ATTEMPT_TIMEOUT)
                .build()?,
        })
    }

    /// The layers in the README's order.
    pub fn stack(self) -> DefaultStack {
        Stack::new()
            .timeout(self.overall)
            .retry(self.retry)
            .circuit_breaker(self.breaker)
            .limit(self.limit)
            .attempt_timeout(self.attempt)
    }
}

/// The breaker classifier of the tuned stack: a timed-out attempt is neither a success nor
/// a failure for the failure rate; with `slow_call_duration` at the attempt timeout it
/// counts as a slow call instead, so a brown-out (some calls slow, most fine) does not
/// open the breaker on the failure rate, while a stall (most calls slow) still does. A
/// quota's refusal (a `429`) and local rejections are not the backend failing.
pub fn elapsed_is_slow(result: &Result<SimResponse, BoxError>) -> Outcome {
    match result {
        Err(e) if e.is::<Elapsed>() => Outcome::Success,
        other => quota_is_not_failure(other),
    }
}

/// The breaker classifier that counts every backend error as a failure except a quota's
/// refusal (a `429` with Retry-After: the backend is fine, the caller is over quota) and
/// local rejections.
pub fn quota_is_not_failure(result: &Result<SimResponse, BoxError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(e)
            if e.downcast_ref::<SimError>()
                .is_some_and(|s| s.kind() == SimErrorKind::RateLimited) =>
        {
            Outcome::Ignore
        }
        Err(e) if e.is::<CircuitOpen>() || e.is::<Overloaded>() || e.is::<RateLimited>() => {
            Outcome::Ignore
        }
        Err(_) => Outcome::Failure,
    }
}

/// The adaptive limit's classifier: only a backend that shed the call is a failure (a
/// decrease signal, beside the algorithm's own latency threshold); fast errors say
/// nothing about load, and a timed-out attempt is ambiguous (a slowed call in a
/// brown-out is not overload), so it feeds no sample.
pub fn overload_signal(result: &Result<SimResponse, BoxError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(e) if e.is::<Elapsed>() => Outcome::Ignore,
        Err(e)
            if e.downcast_ref::<SimError>()
                .is_some_and(|s| s.kind() == SimErrorKind::Overloaded) =>
        {
            Outcome::Failure
        }
        Err(_) => Outcome::Ignore,
    }
}

/// An upstream's throttle hint for the throttle gate: a simulated `429`'s Retry-After
/// (palisade's own rejections are never hints).
pub fn sim_throttle_hint(result: &Result<SimResponse, BoxError>) -> Option<Throttle> {
    let sim = result.as_ref().err()?.downcast_ref::<SimError>()?;
    (sim.kind() == SimErrorKind::RateLimited)
        .then(|| sim.retry_after().map(Throttle::For))
        .flatten()
}

/// A server's Retry-After hint: a simulated `429`'s, or a palisade rejection's.
pub fn sim_retry_after(result: &Result<SimResponse, BoxError>) -> Option<Duration> {
    let err = result.as_ref().err()?;
    if let Some(sim) = err.downcast_ref::<SimError>() {
        return sim.retry_after();
    }
    err.as_rejection().and_then(|r| r.retry_after())
}

/// Run `incident`'s backend under `load` through the stack `kind`; the report of the run.
pub async fn run_stack(kind: StackKind, backend: SimBackend, load: &LoadGen) -> Report {
    let request = |_id: u64| ();
    let b = backend.clone();
    let run = match kind {
        StackKind::None => load.run(b, request).await,
        StackKind::NaiveRetry => {
            let stack = ServiceBuilder::new()
                .layer(tower::retry::RetryLayer::new(Attempts::new(3, no_backoff)))
                .service(b);
            load.run(stack, request).await
        }
        StackKind::Tower => {
            let stack = ServiceBuilder::new()
                .layer(tower::retry::RetryLayer::new(Attempts::new(
                    3,
                    tower_backoff,
                )))
                .layer(tower::load_shed::LoadShedLayer::new())
                .layer(tower::limit::ConcurrencyLimitLayer::new(CONCURRENCY))
                .layer(tower::timeout::TimeoutLayer::new(ATTEMPT_TIMEOUT))
                .service(b);
            load.run(stack, request).await
        }
        StackKind::TowerResilience => {
            use tower_resilience::bulkhead::BulkheadLayer;
            use tower_resilience::retry::RetryLayer as TrRetry;
            use tower_resilience::timelimiter::TimeLimiterLayer;
            let limiter = TimeLimiterLayer::builder()
                .timeout_duration(ATTEMPT_TIMEOUT)
                .build();
            let bulkhead = BulkheadLayer::builder()
                .max_concurrent_calls(CONCURRENCY)
                .reject_when_full()
                .build()
                .expect("a valid bulkhead");
            let retry = TrRetry::<(), SimResponse, BoxError>::builder()
                .max_attempts(3)
                .exponential_backoff(Duration::from_millis(20))
                .build();
            let attempt = ServiceExt::<()>::map_err(limiter.layer(b), BoxError::from);
            let limited = ServiceExt::<()>::map_err(bulkhead.layer(attempt), BoxError::from);
            let stack = retry.layer(limited);
            load.run(stack, request).await
        }
        StackKind::PalisadeDefault => {
            let stack = palisade_default().expect("the README's configs are valid");
            load.run(stack.layer(b), request).await
        }
        StackKind::PalisadeTuned => {
            let stack = super::tuned().expect("the tuned configs are valid");
            load.run(stack.layer(b), request).await
        }
        StackKind::PalisadeThrottle => {
            let stack = super::tuned().expect("the tuned configs are valid");
            let gate = super::throttle_gate().expect("the gate's config is valid");
            load.run(stack.layer(gate.layer(b)), request).await
        }
    };
    run.report(&backend)
}
