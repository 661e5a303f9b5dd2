//! Overhead per call of every palisade layer and of the full recommended stack, against the
//! floor (a bare `service_fn`) and the baselines users compare with, **in one run**: tower's
//! own layers, governor's `check`/`check_key`, failsafe's breaker (its synchronous `call` and
//! its future wrapper) and tower-resilience's every layer.
//!
//! `cargo bench -p palisade-benches --bench overhead`
//!
//! Every row runs three times, over three backends that answer at the first poll: one that answers
//! inside `call` (`std::future::ready`, the group `overhead`), one whose future answers
//! when polled, as a real client's future does (`overhead, answer when polled`), and one
//! that also clones as a real client does, an `Arc`'s reference count (`overhead, over a
//! client`: tower's `Retry` clones its service on every call). The first
//! writes its answer to memory that the layers' futures read back a moment later, and how
//! each future copies it decides whether that read stalls (a store-forwarding stall, up to
//! ten nanoseconds a call on the project's machine), for baselines and palisade alike.
//! A fourth backend is pending at the first poll and answers at the second, as a network
//! call is (`overhead, pending once`): the timeouts arm their timers then (tokio's timer
//! wheel), so its rows are the timeouts and the stacks.
//!
//! Criterion's rows run one after the other, so a shared machine's drifting load skews the
//! ratios between them; `PALISADE_INTERLEAVED=40 cargo bench -p palisade-benches --bench
//! overhead` measures every palisade row against its baseline interleaved instead (40
//! rounds of baseline, palisade, baseline, spread over 8 passes through the table; medians,
//! and the ratio of the quiet rounds, see `print_table`) and prints the README's table,
//! for every backend
//! (`PALISADE_BACKEND=ready`, `polled`, `client` or `pending`, or a list, for some).
//!
//! `PALISADE_PROFILE=readme` (or `fixed`, `tower`, `timeout`, `tower-timeout`, `retry`,
//! `breaker`, `rate`, `adaptive`, `concurrency`) runs one full stack or layer alone, for a
//! profiler (over the first of `PALISADE_BACKEND`'s backends).
//!
//! The 2-thread contention rows are in `--bench contention`, the breaker's window sizes in
//! `--bench window`, allocations per call in `scripts/alloc-check.sh`.
//!
//! One iteration is `poll_ready`, `call` and one poll of the response future (two over the
//! pending backend), on a
//! current-thread runtime, every service over the same `BoxError` backend. Read the ratios
//! between rows of one run, not absolute times (shared machines drift).

#![allow(missing_docs)]
#![allow(clippy::print_stdout)] // the interleaved mode prints its result

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use governor::{Quota, RateLimiter};
use palisade::prelude::*;
use palisade::rate_limit::{ConcurrencyLimitLayer, ThrottleConfig, ThrottleLayer};
use palisade_benches::harness::{self, call_once, call_until_ready, marked_backend};
use tower::{Layer, Service};

/// tower's `Retry` with the trivial policy: never retries.
#[derive(Clone)]
struct Never;

impl<Req: Clone, Res, E> tower::retry::Policy<Req, Res, E> for Never {
    type Future = std::future::Ready<()>;
    fn retry(&mut self, _: &mut Req, _: &mut Result<Res, E>) -> Option<Self::Future> {
        None
    }
    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// tower's `Retry` with a `TpsBudget`, retrying errors while the budget allows.
#[derive(Clone)]
struct Budgeted(std::sync::Arc<tower::retry::budget::TpsBudget>);

impl<Req: Clone, Res, E> tower::retry::Policy<Req, Res, E> for Budgeted {
    type Future = std::future::Ready<()>;
    fn retry(&mut self, _: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        use tower::retry::budget::Budget;
        match result {
            Ok(_) => {
                self.0.deposit();
                None
            }
            Err(_) => self.0.withdraw().then(|| std::future::ready(())),
        }
    }
    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

const HUGE: u32 = 1_000_000_000;

/// The backends every row runs over, in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    /// [`harness::backend`]: answers inside `call`.
    Ready,
    /// [`harness::polled_backend`]: answers when polled.
    Polled,
    /// [`harness::client`]: answers when polled, and a clone of it is an `Arc`'s, as a
    /// real client's is.
    Client,
    /// [`harness::pending_backend`]: pending at the first poll, as a network call is, so
    /// the timeouts arm their timers; the rows where that matters (timeouts and stacks).
    Pending,
}

impl Which {
    const ALL: [Self; 4] = [Self::Ready, Self::Polled, Self::Client, Self::Pending];

    /// `PALISADE_BACKEND=ready`, `polled`, `client` or `pending` (a comma-separated list);
    /// all four when unset.
    fn from_env() -> Vec<Self> {
        let Ok(list) = std::env::var("PALISADE_BACKEND") else {
            return Self::ALL.to_vec();
        };
        list.split(',')
            .map(|name| {
                Self::named(name.trim()).unwrap_or_else(|| {
                    panic!("PALISADE_BACKEND={name}: expected ready, polled, client or pending")
                })
            })
            .collect()
    }

    /// The name `PALISADE_BACKEND` knows it by.
    fn name(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Polled => "polled",
            Self::Client => "client",
            Self::Pending => "pending",
        }
    }

    /// The backend of that [`name`](Self::name).
    fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }

    /// Criterion's group for the rows over this backend.
    fn group(self) -> &'static str {
        match self {
            Self::Ready => "overhead",
            Self::Polled => "overhead, answer when polled",
            Self::Client => "overhead, over a client (its clone is an Arc)",
            Self::Pending => "overhead, pending once (timers armed)",
        }
    }

    /// What the backend is, for the interleaved table's heading.
    fn describe(self) -> &'static str {
        match self {
            Self::Ready => "answers inside `call`",
            Self::Polled => "answers when polled",
            Self::Client => "answers when polled and is cloned as a real client is (an `Arc`)",
            Self::Pending => {
                "is pending at the first poll and answers at the second, as a network call \
                 (the timeouts arm their timers)"
            }
        }
    }

    /// Every row over this backend into `out`; `all` adds the rows without a baseline.
    fn rows(self, out: &mut impl Rows, all: bool) {
        match self {
            Self::Ready => rows(out, harness::backend, all),
            Self::Polled => rows(out, harness::polled_backend, all),
            Self::Client => rows(out, harness::client, all),
            Self::Pending => pending_rows(out),
        }
    }

    /// [`profile`] over this backend.
    fn profile(self, which: &str) {
        match self {
            Self::Ready => profile(which, harness::backend, false),
            Self::Polled => profile(which, harness::polled_backend, false),
            Self::Client => profile(which, harness::client, false),
            Self::Pending => profile(which, harness::pending_backend, true),
        }
    }
}

/// What every row's backend is (see [`Which`]).
trait Backend:
    Service<u64, Response = u64, Error = BoxError, Future: Send + Sync + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Backend for T where
    T: Service<u64, Response = u64, Error = BoxError, Future: Send + Sync + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    for which in Which::from_env() {
        let mut timed = Timed {
            group: c.benchmark_group(which.group()),
            seen: std::collections::HashSet::new(),
        };
        // The same rows against a backend whose future answers when polled, as a real
        // client's does: a backend answering inside `call` writes its answer to memory
        // that the layers' futures read back at once, and how each future copies it
        // decides whether the read stalls (a store-forwarding stall, up to ten nanoseconds
        // a call on the project's machine), for baselines and palisade alike. And against
        // one cloned as a real client is, for the layers that clone their service per call.
        which.rows(&mut timed, which == Which::Ready);
        timed.group.finish();
    }
}

/// Where the rows go: criterion's group ([`Criterion`]'s timed rows) or interleaved rounds
/// ([`Interleaved`]: the ratios alone, each palisade row against its baseline).
trait Rows {
    /// A palisade row (`ours`) and its baseline (`base`), side by side. Each closure makes
    /// one call; it gets the call's number (a request, or a key).
    fn pair(
        &mut self,
        base_row: &str,
        ours_row: &str,
        base: impl FnMut(u64),
        ours: impl FnMut(u64),
    );
    /// A row without a baseline here (tower-resilience's, the degrade layers', the
    /// adaptive limit and throttle gate alone): criterion's rows only.
    fn single(&mut self, row: &str, f: impl FnMut(u64));

    /// [`pair`](Self::pair) of two services, one call each.
    fn services<A, P>(&mut self, base_row: &str, ours_row: &str, base: &mut A, ours: &mut P)
    where
        A: Service<u64>,
        A::Error: std::fmt::Debug,
        P: Service<u64>,
        P::Error: std::fmt::Debug,
    {
        self.pair(
            base_row,
            ours_row,
            |i| {
                call_once(base, i);
            },
            |i| {
                call_once(ours, i);
            },
        );
    }

    /// [`single`](Self::single) of a service, one call each.
    fn service<S>(&mut self, row: &str, svc: &mut S)
    where
        S: Service<u64>,
        S::Error: std::fmt::Debug,
    {
        self.single(row, |i| {
            call_once(svc, i);
        });
    }
}

/// Criterion's rows, each row once (the breaker's row is paired with two baselines).
struct Timed<'a> {
    group: criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>,
    seen: std::collections::HashSet<String>,
}

impl Rows for Timed<'_> {
    fn pair(
        &mut self,
        base_row: &str,
        ours_row: &str,
        base: impl FnMut(u64),
        ours: impl FnMut(u64),
    ) {
        self.single(base_row, base);
        self.single(ours_row, ours);
    }

    fn single(&mut self, row: &str, mut f: impl FnMut(u64)) {
        if self.seen.insert(row.to_owned()) {
            self.group
                .bench_function(row, |b| b.iter(|| f(black_box(7))));
        }
    }
}

/// Every row, each service over `backend`; `all` adds the rows without a baseline that
/// depends on the backend.
fn rows<B: Backend>(out: &mut impl Rows, backend: fn() -> B, all: bool) {
    let second = Duration::from_secs(1);
    let timeout = || {
        TimeoutLayer::builder()
            .timeout(second)
            .build()
            .expect("valid config")
    };

    let mut floor = backend();
    out.service("floor: service_fn", &mut floor);

    // ----- timeout
    let mut tower_timeout = tower::timeout::TimeoutLayer::new(second).layer(backend());
    let mut ours = timeout().layer(backend());
    out.services(
        "timeout: tower Timeout",
        "timeout: palisade",
        &mut tower_timeout,
        &mut ours,
    );
    if all {
        let mut tr_timeout = tower_resilience::timelimiter::TimeLimiterLayer::builder()
            .timeout_duration(second)
            .build()
            .layer(backend());
        out.service("timeout: tower-resilience TimeLimiter", &mut tr_timeout);
    }
    let mut tower_nested = tower::timeout::TimeoutLayer::new(second)
        .layer(tower::timeout::TimeoutLayer::new(second).layer(backend()));
    let mut nested = timeout().layer(timeout().layer(backend()));
    out.services(
        "timeout x2: tower",
        "timeout x2: palisade",
        &mut tower_nested,
        &mut nested,
    );

    // ----- retry
    let mut tower_retry = tower::retry::RetryLayer::new(Never).layer(backend());
    let mut retry = RetryLayer::builder()
        .name("bench")
        .no_budget()
        .build()
        .expect("config")
        .layer(backend());
    out.services(
        "retry, no budget: tower (trivial policy)",
        "retry, no budget: palisade",
        &mut tower_retry,
        &mut retry,
    );
    if all {
        let mut tr_retry = tower_resilience::retry::RetryLayer::<u64, u64, BoxError>::builder()
            .max_attempts(3)
            .build()
            .layer(backend());
        out.service("retry, no budget: tower-resilience Retry", &mut tr_retry);
    }
    let tps = std::sync::Arc::new(tower::retry::budget::TpsBudget::new(
        Duration::from_secs(10),
        10,
        0.2,
    ));
    let mut tower_budget = tower::retry::RetryLayer::new(Budgeted(tps)).layer(backend());
    let mut retry_budget = RetryLayer::builder()
        .name("bench")
        .build()
        .expect("config")
        .layer(backend());
    out.services(
        "retry, budget: tower (TpsBudget)",
        "retry, budget: palisade",
        &mut tower_budget,
        &mut retry_budget,
    );

    // ----- concurrency limit
    let mut tower_limit = tower::limit::ConcurrencyLimitLayer::new(1024).layer(backend());
    let mut limit = ConcurrencyLimitLayer::builder(1024)
        .build()
        .expect("config")
        .layer(backend());
    out.services(
        "concurrency: tower ConcurrencyLimit",
        "concurrency: palisade",
        &mut tower_limit,
        &mut limit,
    );
    if all {
        let mut tr_bulkhead = tower_resilience::bulkhead::BulkheadLayer::builder()
            .max_concurrent_calls(1024)
            .reject_when_full()
            .build()
            .expect("a valid bulkhead")
            .layer(backend());
        out.service("concurrency: tower-resilience Bulkhead", &mut tr_bulkhead);
        let mut adaptive = AdaptiveLimitLayer::builder()
            .build()
            .expect("config")
            .layer(backend());
        out.service("adaptive limit: palisade", &mut adaptive);
        // The README's choice: AIMD at half the attempt timeout (the default above is the
        // gradient, which on a backend answering in nanoseconds moves its limit every call).
        let mut aimd = AdaptiveLimitLayer::builder()
            .algorithm(Aimd::new().latency_threshold(Duration::from_millis(150)))
            .build()
            .expect("config")
            .layer(backend());
        out.service("adaptive limit (AIMD): palisade", &mut aimd);
    }

    // ----- rate limit
    let quota = Quota::per_second(NonZeroU32::new(HUGE).expect("non-zero"));
    let governor = RateLimiter::direct(quota);
    let mut rate = RateLimitLayer::builder(HUGE, second)
        .build()
        .expect("config")
        .layer(backend());
    out.pair(
        "rate, direct: governor check",
        "rate, direct: palisade",
        |_| black_box(governor.check()).expect("admitted"),
        |i| {
            call_once(&mut rate, i);
        },
    );
    if all {
        let mut tr_rate = tower_resilience::ratelimiter::RateLimiterLayer::builder()
            .limit_for_period(HUGE as usize)
            .refresh_period(second)
            .timeout_duration(Duration::ZERO)
            .build()
            .expect("a valid rate limiter")
            .layer(backend());
        out.service("rate, direct: tower-resilience RateLimiter", &mut tr_rate);
    }
    let keyed_governor = RateLimiter::hashmap(quota);
    let mut keyed = RateLimitLayer::builder(HUGE, second)
        .build()
        .expect("config")
        .key_by(|req: &u64| *req)
        .layer(backend());
    let (mut base_key, mut key) = (0u64, 0u64);
    out.pair(
        "rate, keyed 1000: governor check_key",
        "rate, keyed 1000: palisade",
        |_| {
            base_key = (base_key + 1) % 1000;
            black_box(keyed_governor.check_key(&base_key)).expect("admitted");
        },
        |_| {
            key = (key + 1) % 1000;
            call_once(&mut keyed, key);
        },
    );

    // ----- circuit breaker
    let consecutive = || {
        use failsafe::{Config, backoff, failure_policy};
        let policy =
            failure_policy::consecutive_failures(5, backoff::constant(Duration::from_secs(30)));
        Config::new().failure_policy(policy).build()
    };
    let failsafe_breaker = consecutive();
    let mut breaker = CircuitBreakerLayer::builder()
        .name("bench")
        .build()
        .expect("config")
        .layer(backend());
    out.pair(
        "breaker: failsafe (consecutive)",
        "breaker: palisade (count window)",
        |i| {
            use failsafe::CircuitBreaker;
            black_box(failsafe_breaker.call(|| Ok::<u64, ()>(black_box(i)))).expect("closed");
        },
        |i| {
            call_once(&mut breaker, i);
        },
    );
    // failsafe's future wrapper around the same backend's call: what a breaker around an
    // async call costs there (it clones its state machine's `Arc` into every future, as a
    // tower layer must).
    let failsafe_async = consecutive();
    let mut wrapped = backend();
    out.pair(
        "breaker: failsafe futures (consecutive)",
        "breaker: palisade (count window)",
        |i| {
            use failsafe::futures::CircuitBreaker;
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let fut = failsafe_async.call(wrapped.call(i));
            match std::pin::pin!(fut).poll(&mut cx) {
                std::task::Poll::Ready(r) => {
                    black_box(r).expect("closed");
                }
                std::task::Poll::Pending => panic!("ready at once"),
            }
        },
        |i| {
            call_once(&mut breaker, i);
        },
    );
    if all {
        let mut tr_breaker = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
            .failure_rate_threshold(0.5)
            .sliding_window_size(100)
            .build()
            .expect("a valid breaker")
            .layer(backend());
        out.service("breaker: tower-resilience (count window)", &mut tr_breaker);

        // ----- throttle gate, open
        let mut throttle =
            ThrottleLayer::new(ThrottleConfig::builder().build().expect("config")).layer(backend());
        out.service("throttle gate (open): palisade", &mut throttle);

        // ----- degrade (no peer in tower; tower's LoadShed+ConcurrencyLimit for shedding)
        let mut fallback = FallbackLayer::new(
            FallbackConfig::default(),
            palisade::degrade::fallback::Value::new(Marked::new(0)),
        )
        .layer(marked_backend());
        out.service("fallback: palisade", &mut fallback);
        let mut stale =
            StaleCacheLayer::new(StaleConfig::default(), |k: &u64| *k % 64).layer(marked_backend());
        out.service("stale cache: palisade", &mut stale);
    }
    let mut tower_shed = tower::ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1024)
        .service(backend());
    let mut shed = ShedLayer::new(
        ShedConfig::builder()
            .max_in_flight(1024)
            .build()
            .expect("config"),
    )
    .layer(backend());
    out.services(
        "shed: tower LoadShed+ConcurrencyLimit",
        "shed: palisade",
        &mut tower_shed,
        &mut shed,
    );

    // ----- the full recommended stack
    const TOWER_STACK: &str = "full stack: tower (timeout, retry+budget, limit, timeout)";
    let mut tower_stack = tower_stack(backend());
    let mut stack = fixed_stack(backend());
    out.services(
        TOWER_STACK,
        "full stack: palisade (+ breaker)",
        &mut tower_stack,
        &mut stack,
    );
    let mut adaptive_stack = readme_stack(backend());
    out.services(
        TOWER_STACK,
        "full stack: palisade, adaptive limit (README)",
        &mut tower_stack,
        &mut adaptive_stack,
    );
    if all {
        let mut tr_stack = tower_resilience_stack(backend());
        out.service("full stack: tower-resilience (+ breaker)", &mut tr_stack);
    }
}

/// The rows over [`harness::pending_backend`]: those where a pending call costs more than a
/// second poll, the timeouts (which arm their timers then) and the stacks. Same names as
/// the other backends' rows.
fn pending_rows(out: &mut impl Rows) {
    let backend = harness::pending_backend;
    let second = Duration::from_secs(1);
    let timeout = |d| {
        TimeoutLayer::builder()
            .timeout(d)
            .build()
            .expect("valid config")
    };
    let mut tower_timeout = tower::timeout::TimeoutLayer::new(second).layer(backend());
    let mut ours = timeout(second).layer(backend());
    pending_pair(
        out,
        "timeout: tower Timeout",
        "timeout: palisade",
        &mut tower_timeout,
        &mut ours,
    );
    // The recommended stack's two: an overall deadline over a shorter attempt timeout.
    let mut tower_nested = tower::timeout::TimeoutLayer::new(2 * second)
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(300)).layer(backend()));
    let mut nested =
        timeout(2 * second).layer(timeout(Duration::from_millis(300)).layer(backend()));
    pending_pair(
        out,
        "timeout x2: tower",
        "timeout x2: palisade",
        &mut tower_nested,
        &mut nested,
    );
    const TOWER_STACK: &str = "full stack: tower (timeout, retry+budget, limit, timeout)";
    let mut tower_stack = tower_stack(backend());
    let mut stack = fixed_stack(backend());
    pending_pair(
        out,
        TOWER_STACK,
        "full stack: palisade (+ breaker)",
        &mut tower_stack,
        &mut stack,
    );
    let mut adaptive_stack = readme_stack(backend());
    pending_pair(
        out,
        TOWER_STACK,
        "full stack: palisade, adaptive limit (README)",
        &mut tower_stack,
        &mut adaptive_stack,
    );
}

/// [`Rows::services`] over a backend whose future may be pending.
fn pending_pair<A, P>(
    out: &mut impl Rows,
    base_row: &str,
    ours_row: &str,
    base: &mut A,
    ours: &mut P,
) where
    A: Service<u64>,
    A::Error: std::fmt::Debug,
    P: Service<u64>,
    P::Error: std::fmt::Debug,
{
    out.pair(
        base_row,
        ours_row,
        |i| {
            call_until_ready(base, i);
        },
        |i| {
            call_until_ready(ours, i);
        },
    );
}

/// tower-resilience's equivalent of the recommended stack (with its breaker).
fn tower_resilience_stack<B: Backend>(
    backend: B,
) -> impl Service<u64, Response = u64, Error = BoxError> {
    use tower::ServiceExt;
    use tower_resilience::bulkhead::BulkheadLayer;
    use tower_resilience::circuitbreaker::CircuitBreakerLayer as TrBreaker;
    use tower_resilience::retry::RetryLayer as TrRetry;
    use tower_resilience::timelimiter::TimeLimiterLayer;
    let attempt = TimeLimiterLayer::builder()
        .timeout_duration(Duration::from_millis(300))
        .build()
        .layer(backend);
    let attempt = ServiceExt::<u64>::map_err(attempt, BoxError::from);
    let limited = BulkheadLayer::builder()
        .max_concurrent_calls(1024)
        .reject_when_full()
        .build()
        .expect("a valid bulkhead")
        .layer(attempt);
    let limited = ServiceExt::<u64>::map_err(limited, BoxError::from);
    let guarded = TrBreaker::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .build()
        .expect("a valid breaker")
        .layer(limited);
    let guarded = ServiceExt::<u64>::map_err(guarded, BoxError::from);
    let retried = TrRetry::<u64, u64, BoxError>::builder()
        .max_attempts(3)
        .build()
        .layer(guarded);
    let overall = TimeLimiterLayer::builder()
        .timeout_duration(Duration::from_secs(2))
        .build()
        .layer(retried);
    ServiceExt::<u64>::map_err(overall, BoxError::from)
}

/// tower's equivalent of the recommended stack: Timeout + Retry(TpsBudget) +
/// ConcurrencyLimit + Timeout.
fn tower_stack<B: Backend>(backend: B) -> impl Service<u64, Response = u64, Error = BoxError> {
    let tps = std::sync::Arc::new(tower::retry::budget::TpsBudget::new(
        Duration::from_secs(10),
        10,
        0.2,
    ));
    tower::ServiceBuilder::new()
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(2)))
        .layer(tower::retry::RetryLayer::new(Budgeted(tps)))
        .layer(tower::limit::ConcurrencyLimitLayer::new(1024))
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(
            300,
        )))
        .service(backend)
}

/// The recommended stack with a fixed concurrency limit in the limit slot.
fn fixed_stack<B: Backend>(backend: B) -> impl Service<u64, Response = u64, Error = BoxError> {
    Stack::new()
        .timeout(
            TimeoutLayer::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("valid config"),
        )
        .retry(RetryLayer::builder().name("bench").build().expect("config"))
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .name("bench")
                .build()
                .expect("config"),
        )
        .limit(
            ConcurrencyLimitLayer::builder(1024)
                .build()
                .expect("config"),
        )
        .attempt_timeout(
            TimeoutLayer::builder()
                .timeout(Duration::from_millis(300))
                .build()
                .expect("valid config"),
        )
        .layer(backend)
}

/// The README's 30-second example, built exactly as it builds it: the recommended stack
/// with an adaptive limit in the limit slot (the scorecard's "palisade default", one
/// definition for the scorecard, this bench and the allocation check).
fn readme_stack<B: Backend>(backend: B) -> impl Service<u64, Response = u64, Error = BoxError> {
    palisade_benches::scorecard::palisade_default()
        .expect("the README's stack is valid")
        .layer(backend)
}

/// Nanoseconds per call of `f` over `n` calls.
fn per_iter(n: u64, mut f: impl FnMut(u64)) -> f64 {
    let start = tokio::time::Instant::now();
    for i in 0..n {
        f(black_box(i));
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// Nanoseconds per call of `svc` over `n` calls.
fn per_call<S>(pending: bool, svc: &mut S, n: u64) -> f64
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    if pending {
        return per_iter(n, |i| {
            black_box(call_until_ready(svc, i));
        });
    }
    per_iter(n, |i| {
        black_box(call_once(svc, i));
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Each row's ratio to its baseline measured interleaved: `rounds` rounds of the baseline,
/// the palisade row and the baseline again (`calls` calls each), so a shared machine's
/// load, which drifts over seconds, weighs the same on both sides of each ratio. Each
/// round's times go to `samples`, under the backend being measured.
struct Interleaved {
    rounds: usize,
    calls: u64,
    backend: Which,
    samples: Samples,
}

/// Per row (in order of measurement): its backend, its palisade row and baseline row,
/// and each round's (baseline ns, palisade ns).
type Samples = Vec<((Which, String, String), Vec<(f64, f64)>)>;

impl Rows for Interleaved {
    fn pair(
        &mut self,
        base_row: &str,
        ours_row: &str,
        mut base: impl FnMut(u64),
        mut ours: impl FnMut(u64),
    ) {
        let n = self.calls;
        // Warm up (caches, branch predictors, the services' first calls).
        per_iter(n, &mut base);
        per_iter(n, &mut ours);
        let mut rounds = Vec::with_capacity(self.rounds);
        for _ in 0..self.rounds.max(1) {
            let before = per_iter(n, &mut base);
            let palisade = per_iter(n, &mut ours);
            let baseline = (before + per_iter(n, &mut base)) / 2.0;
            rounds.push((baseline, palisade));
        }
        let key = (self.backend, ours_row.to_owned(), base_row.to_owned());
        // A later pass adds its rounds to the row's.
        match self.samples.iter_mut().find(|(k, _)| *k == key) {
            Some((_, all)) => all.append(&mut rounds),
            None => self.samples.push((key, rounds)),
        }
    }

    fn single(&mut self, _: &str, _: impl FnMut(u64)) {}
}

/// How many passes over every row the interleaved table's rounds are spread over: a row's
/// rounds then sample the whole run, not the half second it takes to measure them at
/// once, and a busy spell of the host (see [`print_table`]) that covers a row's every
/// round in one pass covers a few in eight.
const PASSES: usize = 8;

/// Every row's ratio measured interleaved ([`Interleaved`]), over every backend:
/// `PALISADE_INTERLEAVED=40 cargo bench -p palisade-benches --bench overhead` (40 rounds
/// a row, over [`PASSES`] passes).
/// `PALISADE_BACKEND=ready`, `polled` or `client` (or a list) runs those backends' rows.
fn interleaved(rounds: usize, backends: &[Which]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let calls = 100_000;
    let mut out = Interleaved {
        rounds: rounds.div_ceil(PASSES),
        calls,
        backend: Which::Ready,
        samples: Vec::new(),
    };
    for _ in 0..PASSES {
        for &which in backends {
            out.backend = which;
            which.rows(&mut out, false);
        }
    }
    print_table(&out.samples, out.rounds * PASSES, calls);
}

/// The README's table: per backend, each row's median times, the median of the rounds'
/// ratios and the ratio of the quiet rounds' times.
///
/// The project's machine is a VM whose host is busy by spells (a neighbour on the sibling
/// hyperthread, presumably): a spell slows every row for a second or so, palisade's more
/// than tower's (its timeout at 50 ns against tower's 42, where in quiet spells both take
/// 36), so the median ratio moves with how much of a run was busy. The quiet ratio
/// compares each side's tenth-percentile round (noise only ever adds time): the cost of
/// the code itself, on an idle core.
fn print_table(samples: &Samples, rounds: usize, calls: u64) {
    let mut shown = None;
    for ((which, ours, base), r) in samples {
        if shown != Some(*which) {
            shown = Some(*which);
            println!(
                "\nthe backend {}, {rounds} rounds of {calls} calls:\n",
                which.describe(),
            );
            println!(
                "| row | baseline | baseline ns | palisade ns | ratio | middle half of the ratios | quiet ratio |"
            );
            println!("|---|---|---:|---:|---:|---|---:|");
        }
        let mut ratios: Vec<f64> = r.iter().map(|(b, o)| o / b).collect();
        ratios.sort_by(f64::total_cmp);
        let quartiles = (ratios[ratios.len() / 4], ratios[ratios.len() * 3 / 4]);
        let quiet =
            decile(r.iter().map(|x| x.1).collect()) / decile(r.iter().map(|x| x.0).collect());
        println!(
            "| {ours} | {base} | {:.1} | {:.1} | {:.2} | {:.2}-{:.2} | {quiet:.2} |",
            median(r.iter().map(|x| x.0).collect()),
            median(r.iter().map(|x| x.1).collect()),
            median(ratios),
            quartiles.0,
            quartiles.1
        );
    }
}

/// The tenth percentile.
fn decile(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 10]
}

/// One stack alone for a profiler: `PALISADE_PROFILE=readme` (or `fixed`, `tower`, or a
/// layer alone: `timeout`, `retry` without budget, `breaker`, `rate`, the README's
/// `adaptive` limit, a fixed `concurrency` limit) runs 20M calls through it and nothing
/// else, e.g. under `perf record`, over the first of `PALISADE_BACKEND`'s backends.
fn profile<B: Backend>(which: &str, backend: fn() -> B, pending: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let n = 20_000_000;
    let ns = match which {
        "tower" => per_call(pending, &mut tower_stack(backend()), n),
        "fixed" => per_call(pending, &mut fixed_stack(backend()), n),
        "readme" => per_call(pending, &mut readme_stack(backend()), n),
        "retry" => per_call(
            pending,
            &mut RetryLayer::builder()
                .name("bench")
                .no_budget()
                .build()
                .expect("config")
                .layer(backend()),
            n,
        ),
        "breaker" => per_call(
            pending,
            &mut CircuitBreakerLayer::builder()
                .name("bench")
                .build()
                .expect("config")
                .layer(backend()),
            n,
        ),
        "tower-timeout" => per_call(
            pending,
            &mut tower::timeout::TimeoutLayer::new(Duration::from_secs(1)).layer(backend()),
            n,
        ),
        "timeout" => per_call(
            pending,
            &mut TimeoutLayer::builder()
                .timeout(Duration::from_secs(1))
                .build()
                .expect("valid config")
                .layer(backend()),
            n,
        ),
        "adaptive" => per_call(
            pending,
            &mut palisade_benches::scorecard::DefaultLayers::new()
                .expect("the README's layers are valid")
                .limit
                .layer(backend()),
            n,
        ),
        "concurrency" => per_call(
            pending,
            &mut ConcurrencyLimitLayer::builder(1024)
                .build()
                .expect("config")
                .layer(backend()),
            n,
        ),
        "rate" => per_call(
            pending,
            &mut RateLimitLayer::builder(HUGE, Duration::from_secs(1))
                .build()
                .expect("config")
                .layer(backend()),
            n,
        ),
        other => panic!(
            "PALISADE_PROFILE={other}: expected tower, fixed, readme, timeout, tower-timeout, retry, breaker, rate, adaptive or concurrency"
        ),
    };
    println!("{which}: {ns:.1} ns per call over {n} calls");
}

criterion_group!(benches, bench);

fn main() {
    let backends = Which::from_env();
    if let Ok(which) = std::env::var("PALISADE_PROFILE") {
        backends[0].profile(&which);
        return;
    }
    if let Some(rounds) = std::env::var("PALISADE_INTERLEAVED")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        interleaved(rounds, &backends);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
