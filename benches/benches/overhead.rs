//! Overhead per call of every palisade layer and of the full recommended stack, against the
//! floor (a bare `service_fn`) and the baselines users compare with, **in one run**: tower's
//! own layers, governor's `check`/`check_key`, failsafe's breaker (its synchronous `call` and
//! its future wrapper) and tower-resilience's every layer.
//!
//! `cargo bench -p palisade-benches --bench overhead`
//!
//! Rows run one after the other, so a shared machine's drifting load skews the ratios
//! between them; `PALISADE_INTERLEAVED=40 cargo bench -p palisade-benches --bench overhead`
//! measures the full stacks against tower's interleaved instead (medians over 40 rounds).
//!
//! `PALISADE_PROFILE=readme` (or `fixed`, `tower`, `timeout`, `retry`, `breaker`, `rate`) runs one full stack
//! or layer alone, for a profiler.
//!
//! The 2-thread contention rows are in `--bench contention`, the breaker's window sizes in
//! `--bench window`, allocations per call in `scripts/alloc-check.sh`.
//!
//! Every service answers at once with the same `BoxError` backend on a current-thread
//! runtime; one iteration is `poll_ready`, `call` and one poll of the response future. Read
//! the ratios between rows of one run, not absolute times (shared machines drift).

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
use palisade_benches::harness::{backend, call_once, marked_backend};
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

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut g = c.benchmark_group("overhead");
    let second = Duration::from_secs(1);

    let mut floor = backend();
    g.bench_function("floor: service_fn", |b| {
        b.iter(|| call_once(&mut floor, black_box(7)));
    });

    // ----- timeout
    let mut tower_timeout = tower::timeout::TimeoutLayer::new(second).layer(backend());
    g.bench_function("timeout: tower Timeout", |b| {
        b.iter(|| call_once(&mut tower_timeout, black_box(7)));
    });
    let mut timeout = TimeoutLayer::builder()
        .timeout(second)
        .build()
        .expect("valid config")
        .layer(backend());
    g.bench_function("timeout: palisade", |b| {
        b.iter(|| call_once(&mut timeout, black_box(7)));
    });
    let mut tr_timeout = tower_resilience::timelimiter::TimeLimiterLayer::builder()
        .timeout_duration(second)
        .build()
        .layer(backend());
    g.bench_function("timeout: tower-resilience TimeLimiter", |b| {
        b.iter(|| call_once(&mut tr_timeout, black_box(7)));
    });
    let mut tower_nested = tower::timeout::TimeoutLayer::new(second)
        .layer(tower::timeout::TimeoutLayer::new(second).layer(backend()));
    g.bench_function("timeout x2: tower", |b| {
        b.iter(|| call_once(&mut tower_nested, black_box(7)));
    });
    let mut nested = TimeoutLayer::builder()
        .timeout(second)
        .build()
        .expect("valid config")
        .layer(
            TimeoutLayer::builder()
                .timeout(second)
                .build()
                .expect("valid config")
                .layer(backend()),
        );
    g.bench_function("timeout x2: palisade", |b| {
        b.iter(|| call_once(&mut nested, black_box(7)));
    });

    // ----- retry
    let mut tower_retry = tower::retry::RetryLayer::new(Never).layer(backend());
    g.bench_function("retry, no budget: tower (trivial policy)", |b| {
        b.iter(|| call_once(&mut tower_retry, black_box(7)));
    });
    let mut retry = RetryLayer::builder()
        .name("bench")
        .no_budget()
        .build()
        .expect("config")
        .layer(backend());
    g.bench_function("retry, no budget: palisade", |b| {
        b.iter(|| call_once(&mut retry, black_box(7)));
    });
    let mut tr_retry = tower_resilience::retry::RetryLayer::<u64, u64, BoxError>::builder()
        .max_attempts(3)
        .build()
        .layer(backend());
    g.bench_function("retry, no budget: tower-resilience Retry", |b| {
        b.iter(|| call_once(&mut tr_retry, black_box(7)));
    });
    let tps = std::sync::Arc::new(tower::retry::budget::TpsBudget::new(
        Duration::from_secs(10),
        10,
        0.2,
    ));
    let mut tower_budget = tower::retry::RetryLayer::new(Budgeted(tps)).layer(backend());
    g.bench_function("retry, budget: tower (TpsBudget)", |b| {
        b.iter(|| call_once(&mut tower_budget, black_box(7)));
    });
    let mut retry_budget = RetryLayer::builder()
        .name("bench")
        .build()
        .expect("config")
        .layer(backend());
    g.bench_function("retry, budget: palisade", |b| {
        b.iter(|| call_once(&mut retry_budget, black_box(7)));
    });

    // ----- concurrency limit
    let mut tower_limit = tower::limit::ConcurrencyLimitLayer::new(1024).layer(backend());
    g.bench_function("concurrency: tower ConcurrencyLimit", |b| {
        b.iter(|| call_once(&mut tower_limit, black_box(7)));
    });
    let mut limit = ConcurrencyLimitLayer::builder(1024)
        .build()
        .expect("config")
        .layer(backend());
    g.bench_function("concurrency: palisade", |b| {
        b.iter(|| call_once(&mut limit, black_box(7)));
    });
    let mut tr_bulkhead = tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(1024)
        .reject_when_full()
        .build()
        .expect("a valid bulkhead")
        .layer(backend());
    g.bench_function("concurrency: tower-resilience Bulkhead", |b| {
        b.iter(|| call_once(&mut tr_bulkhead, black_box(7)));
    });
    let mut adaptive = AdaptiveLimitLayer::builder()
        .build()
        .expect("config")
        .layer(backend());
    g.bench_function("adaptive limit: palisade", |b| {
        b.iter(|| call_once(&mut adaptive, black_box(7)));
    });
    // The README's choice: AIMD at half the attempt timeout (the default above is the
    // gradient, which on a backend answering in nanoseconds moves its limit every call).
    let mut aimd = AdaptiveLimitLayer::builder()
        .algorithm(Aimd::new().latency_threshold(Duration::from_millis(150)))
        .build()
        .expect("config")
        .layer(backend());
    g.bench_function("adaptive limit (AIMD): palisade", |b| {
        b.iter(|| call_once(&mut aimd, black_box(7)));
    });

    // ----- rate limit
    let quota = Quota::per_second(NonZeroU32::new(HUGE).expect("non-zero"));
    let governor = RateLimiter::direct(quota);
    g.bench_function("rate, direct: governor check", |b| {
        b.iter(|| black_box(governor.check()).expect("admitted"));
    });
    let mut rate = RateLimitLayer::builder(HUGE, second)
        .build()
        .expect("config")
        .layer(backend());
    g.bench_function("rate, direct: palisade", |b| {
        b.iter(|| call_once(&mut rate, black_box(7)));
    });
    let mut tr_rate = tower_resilience::ratelimiter::RateLimiterLayer::builder()
        .limit_for_period(HUGE as usize)
        .refresh_period(second)
        .timeout_duration(Duration::ZERO)
        .build()
        .expect("a valid rate limiter")
        .layer(backend());
    g.bench_function("rate, direct: tower-resilience RateLimiter", |b| {
        b.iter(|| call_once(&mut tr_rate, black_box(7)));
    });
    let keyed_governor = RateLimiter::hashmap(quota);
    let mut key = 0u64;
    g.bench_function("rate, keyed 1000: governor check_key", |b| {
        b.iter(|| {
            key = (key + 1) % 1000;
            black_box(keyed_governor.check_key(&key)).expect("admitted");
        });
    });
    let mut keyed = RateLimitLayer::builder(HUGE, second)
        .build()
        .expect("config")
        .key_by(|req: &u64| *req)
        .layer(backend());
    g.bench_function("rate, keyed 1000: palisade", |b| {
        b.iter(|| {
            key = (key + 1) % 1000;
            call_once(&mut keyed, key);
        });
    });

    // ----- circuit breaker
    let failsafe_breaker = {
        use failsafe::{Config, backoff, failure_policy};
        let policy =
            failure_policy::consecutive_failures(5, backoff::constant(Duration::from_secs(30)));
        Config::new().failure_policy(policy).build()
    };
    g.bench_function("breaker: failsafe (consecutive)", |b| {
        use failsafe::CircuitBreaker;
        b.iter(|| {
            black_box(failsafe_breaker.call(|| Ok::<u64, ()>(black_box(7)))).expect("closed")
        });
    });
    let mut breaker = CircuitBreakerLayer::builder()
        .name("bench")
        .build()
        .expect("config")
        .layer(backend());
    g.bench_function("breaker: palisade (count window)", |b| {
        b.iter(|| call_once(&mut breaker, black_box(7)));
    });
    // failsafe's future wrapper: what a breaker around an async call costs there (it clones
    // its state machine's `Arc` into every future, as a tower layer must).
    let failsafe_async = {
        use failsafe::{Config, backoff, failure_policy};
        let policy =
            failure_policy::consecutive_failures(5, backoff::constant(Duration::from_secs(30)));
        Config::new().failure_policy(policy).build()
    };
    g.bench_function("breaker: failsafe futures (consecutive)", |b| {
        use failsafe::futures::CircuitBreaker;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        b.iter(|| {
            let fut = failsafe_async.call(std::future::ready(Ok::<u64, ()>(black_box(7))));
            match std::pin::pin!(fut).poll(&mut cx) {
                std::task::Poll::Ready(r) => black_box(r).expect("closed"),
                std::task::Poll::Pending => panic!("ready at once"),
            }
        });
    });
    let mut tr_breaker = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .build()
        .expect("a valid breaker")
        .layer(backend());
    g.bench_function("breaker: tower-resilience (count window)", |b| {
        b.iter(|| call_once(&mut tr_breaker, black_box(7)));
    });

    // ----- throttle gate, open
    let mut throttle =
        ThrottleLayer::new(ThrottleConfig::builder().build().expect("config")).layer(backend());
    g.bench_function("throttle gate (open): palisade", |b| {
        b.iter(|| call_once(&mut throttle, black_box(7)));
    });

    // ----- degrade (no peer in tower; tower's LoadShed+ConcurrencyLimit for shedding)
    let mut fallback = FallbackLayer::new(
        FallbackConfig::default(),
        palisade::degrade::fallback::Value::new(Marked::new(0)),
    )
    .layer(marked_backend());
    g.bench_function("fallback: palisade", |b| {
        b.iter(|| call_once(&mut fallback, black_box(7)));
    });
    let mut stale =
        StaleCacheLayer::new(StaleConfig::default(), |k: &u64| *k % 64).layer(marked_backend());
    g.bench_function("stale cache: palisade", |b| {
        b.iter(|| call_once(&mut stale, black_box(7)));
    });
    let mut tower_shed = tower::ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1024)
        .service(backend());
    g.bench_function("shed: tower LoadShed+ConcurrencyLimit", |b| {
        b.iter(|| call_once(&mut tower_shed, black_box(7)));
    });
    let mut shed = ShedLayer::new(
        ShedConfig::builder()
            .max_in_flight(1024)
            .build()
            .expect("config"),
    )
    .layer(backend());
    g.bench_function("shed: palisade", |b| {
        b.iter(|| call_once(&mut shed, black_box(7)));
    });

    // ----- the full recommended stack
    let mut tower_stack = tower_stack();
    g.bench_function(
        "full stack: tower (timeout, retry+budget, limit, timeout)",
        |b| {
            b.iter(|| call_once(&mut tower_stack, black_box(7)));
        },
    );
    let mut stack = fixed_stack();
    g.bench_function("full stack: palisade (+ breaker)", |b| {
        b.iter(|| call_once(&mut stack, black_box(7)));
    });
    let mut adaptive_stack = readme_stack();
    g.bench_function("full stack: palisade, adaptive limit (README)", |b| {
        b.iter(|| call_once(&mut adaptive_stack, black_box(7)));
    });
    let mut tr_stack = {
        use tower::ServiceExt;
        use tower_resilience::bulkhead::BulkheadLayer;
        use tower_resilience::circuitbreaker::CircuitBreakerLayer as TrBreaker;
        use tower_resilience::retry::RetryLayer as TrRetry;
        use tower_resilience::timelimiter::TimeLimiterLayer;
        let attempt = TimeLimiterLayer::builder()
            .timeout_duration(Duration::from_millis(300))
            .build()
            .layer(backend());
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
    };
    g.bench_function("full stack: tower-resilience (+ breaker)", |b| {
        b.iter(|| call_once(&mut tr_stack, black_box(7)));
    });

    g.finish();
}

/// tower's equivalent of the recommended stack: Timeout + Retry(TpsBudget) +
/// ConcurrencyLimit + Timeout.
fn tower_stack() -> impl Service<u64, Response = u64, Error = BoxError> {
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
        .service(backend())
}

/// The recommended stack with a fixed concurrency limit in the limit slot.
fn fixed_stack() -> impl Service<u64, Response = u64, Error = BoxError> {
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
        .layer(backend())
}

/// The README's 30-second example, built exactly as it builds it: the recommended stack
/// with an adaptive limit in the limit slot (the scorecard's "palisade default", one
/// definition for the scorecard, this bench and the allocation check).
fn readme_stack() -> impl Service<u64, Response = u64, Error = BoxError> {
    palisade_benches::scorecard::palisade_default()
        .expect("the README's stack is valid")
        .layer(backend())
}

/// Nanoseconds per call of `svc` over `n` calls.
fn per_call<S>(svc: &mut S, n: u64) -> f64
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    let start = tokio::time::Instant::now();
    for i in 0..n {
        black_box(call_once(svc, black_box(i)));
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The full-stack ratios measured interleaved: rounds of 50k calls through tower's stack,
/// each palisade stack, and tower's again, so a shared machine's load, which drifts over
/// seconds, weighs the same on both sides of each ratio; prints the medians over the
/// rounds. `PALISADE_INTERLEAVED=40 cargo bench -p palisade-benches --bench overhead`.
fn interleaved(rounds: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let (mut tower, mut fixed, mut readme) = (tower_stack(), fixed_stack(), readme_stack());
    let n = 50_000;
    for _ in 0..3 {
        per_call(&mut tower, n);
        per_call(&mut fixed, n);
        per_call(&mut readme, n);
    }
    let (mut t, mut f, mut a, mut rf, mut ra) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..rounds.max(1) {
        let before = per_call(&mut tower, n);
        let fixed = per_call(&mut fixed, n);
        let readme = per_call(&mut readme, n);
        let base = (before + per_call(&mut tower, n)) / 2.0;
        t.push(base);
        f.push(fixed);
        a.push(readme);
        rf.push(fixed / base);
        ra.push(readme / base);
    }
    println!(
        "full stack, interleaved, medians of {rounds} rounds: tower {:.1} ns; palisade (+ breaker) \
         {:.1} ns, ratio {:.2}; palisade, adaptive limit (README) {:.1} ns, ratio {:.2}",
        median(t),
        median(f),
        median(rf),
        median(a),
        median(ra)
    );
}

/// One stack alone for a profiler: `PALISADE_PROFILE=readme` (or `fixed`, `tower`, or a
/// layer alone: `timeout`, `retry` without budget, `breaker`, `rate`) runs 20M calls through it and nothing
/// else, e.g. under `perf record`.
fn profile(which: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let n = 20_000_000;
    let ns = match which {
        "tower" => per_call(&mut tower_stack(), n),
        "fixed" => per_call(&mut fixed_stack(), n),
        "readme" => per_call(&mut readme_stack(), n),
        "retry" => per_call(
            &mut RetryLayer::builder()
                .name("bench")
                .no_budget()
                .build()
                .expect("config")
                .layer(backend()),
            n,
        ),
        "breaker" => per_call(
            &mut CircuitBreakerLayer::builder()
                .name("bench")
                .build()
                .expect("config")
                .layer(backend()),
            n,
        ),
        "timeout" => per_call(
            &mut TimeoutLayer::builder()
                .timeout(Duration::from_secs(1))
                .build()
                .expect("valid config")
                .layer(backend()),
            n,
        ),
        "rate" => per_call(
            &mut RateLimitLayer::builder(HUGE, Duration::from_secs(1))
                .build()
                .expect("config")
                .layer(backend()),
            n,
        ),
        other => panic!(
            "PALISADE_PROFILE={other}: expected tower, fixed, readme, timeout, retry, breaker or rate"
        ),
    };
    println!("{which}: {ns:.1} ns per call over {n} calls");
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(which) = std::env::var("PALISADE_PROFILE") {
        profile(&which);
        return;
    }
    if let Some(rounds) = std::env::var("PALISADE_INTERLEAVED")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        interleaved(rounds);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
