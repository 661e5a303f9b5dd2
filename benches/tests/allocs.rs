//! Allocations per happy-path call of every palisade layer and of the full recommended
//! stack, counted with a counting allocator (dhat), next to the peers' for comparison, and
//! the size of each response future. Fails if a palisade happy path allocates (the stale
//! cache excepted: it stores a copy of each live answer, one allocation per call).
//!
//! Run by `scripts/alloc-check.sh`. No libtest harness (`harness = false`): its main thread
//! allocates while it waits for a test, and dhat counts every thread.
#![allow(missing_docs, clippy::print_stdout, clippy::unwrap_used)]

use std::num::NonZeroU32;
use std::time::Duration;

use palisade::prelude::*;
use palisade::rate_limit::{ConcurrencyLimitLayer, ThrottleConfig, ThrottleLayer};
use palisade_benches::harness::{backend, call_once, marked_backend};
use tower::{Layer, Service};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Calls measured per service, after a warm-up of as many with the same arguments (so a
/// keyed limiter has seen every key: a key's first call stores it).
const CALLS: u64 = 1000;

/// Allocations (blocks) per call of `call`, over [`CALLS`] calls.
fn per_call(mut call: impl FnMut(u64)) -> f64 {
    for n in 0..CALLS {
        call(n);
    }
    let before = dhat::HeapStats::get().total_blocks;
    for n in 0..CALLS {
        call(n);
    }
    let after = dhat::HeapStats::get().total_blocks;
    (after - before) as f64 / CALLS as f64
}

fn future_size<S: Service<u64>>(_: &S) -> usize {
    size_of::<S::Future>()
}

struct Row {
    name: &'static str,
    palisade: bool,
    allocs: f64,
    bytes: usize,
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let second = Duration::from_secs(1);
    let mut rows: Vec<Row> = Vec::new();

    macro_rules! row {
        ($name:expr, $palisade:expr, $svc:expr) => {{
            let mut svc = $svc;
            let bytes = future_size(&svc);
            let allocs = per_call(|n| {
                let _ = call_once(&mut svc, n);
            });
            rows.push(Row {
                name: $name,
                palisade: $palisade,
                allocs,
                bytes,
            });
        }};
    }
    let timeout = || TimeoutLayer::builder().timeout(second).build().unwrap();
    let huge = 1_000_000_000;

    row!("floor: service_fn", false, backend());
    row!(
        "tower Timeout",
        false,
        tower::timeout::TimeoutLayer::new(second).layer(backend())
    );
    row!("timeout", true, timeout().layer(backend()));
    row!(
        "timeout x2",
        true,
        timeout().layer(timeout().layer(backend()))
    );
    row!(
        "tower-resilience TimeLimiter",
        false,
        tower_resilience::timelimiter::TimeLimiterLayer::builder()
            .timeout_duration(second)
            .build()
            .layer(backend())
    );
    row!(
        "retry, no budget",
        true,
        RetryLayer::builder()
            .no_budget()
            .build()
            .unwrap()
            .layer(backend())
    );
    row!(
        "retry, budget",
        true,
        RetryLayer::builder().build().unwrap().layer(backend())
    );
    row!(
        "tower-resilience Retry",
        false,
        tower_resilience::retry::RetryLayer::<u64, u64, BoxError>::builder()
            .max_attempts(3)
            .build()
            .layer(backend())
    );
    row!(
        "concurrency limit",
        true,
        ConcurrencyLimitLayer::builder(1024)
            .build()
            .unwrap()
            .layer(backend())
    );
    row!(
        "tower ConcurrencyLimit",
        false,
        tower::limit::ConcurrencyLimitLayer::new(1024).layer(backend())
    );
    row!(
        "adaptive limit",
        true,
        AdaptiveLimitLayer::builder()
            .build()
            .unwrap()
            .layer(backend())
    );
    row!(
        "rate limit, direct",
        true,
        RateLimitLayer::builder(huge, second)
            .build()
            .unwrap()
            .layer(backend())
    );
    row!(
        "rate limit, keyed (1000 keys)",
        true,
        RateLimitLayer::builder(huge, second)
            .build()
            .unwrap()
            .key_by(|req: &u64| *req % 1000)
            .layer(backend())
    );
    row!(
        "circuit breaker (count window)",
        true,
        CircuitBreakerLayer::builder()
            .build()
            .unwrap()
            .layer(backend())
    );
    row!(
        "circuit breaker (time window)",
        true,
        CircuitBreakerLayer::builder()
            .time_window(Duration::from_secs(60), 10)
            .build()
            .unwrap()
            .layer(backend())
    );
    row!(
        "tower-resilience CircuitBreaker",
        false,
        tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
            .build()
            .unwrap()
            .layer(backend())
    );
    row!(
        "throttle gate",
        true,
        ThrottleLayer::new(ThrottleConfig::builder().build().unwrap()).layer(backend())
    );
    row!(
        "fallback",
        true,
        FallbackLayer::new(
            FallbackConfig::default(),
            palisade::degrade::fallback::Value::new(Marked::new(0)),
        )
        .layer(marked_backend())
    );
    row!(
        "shed",
        true,
        ShedLayer::new(ShedConfig::builder().max_in_flight(1024).build().unwrap()).layer(backend())
    );
    row!(
        "full recommended stack",
        true,
        Stack::new()
            .timeout(
                TimeoutLayer::builder()
                    .timeout(Duration::from_secs(2))
                    .build()
                    .unwrap()
            )
            .retry(RetryLayer::builder().build().unwrap())
            .circuit_breaker(CircuitBreakerLayer::builder().build().unwrap())
            .limit(ConcurrencyLimitLayer::builder(1024).build().unwrap())
            .attempt_timeout(
                TimeoutLayer::builder()
                    .timeout(Duration::from_millis(300))
                    .build()
                    .unwrap()
            )
            .layer(backend())
    );
    row!(
        "full recommended stack, adaptive limit (README)",
        true,
        palisade_benches::scorecard::palisade_default()
            .unwrap()
            .layer(backend())
    );
    // Rows that are not a `Service<u64>` of the same shape.
    let stale = {
        let mut svc =
            StaleCacheLayer::new(StaleConfig::default(), |k: &u64| *k % 64).layer(marked_backend());
        per_call(|n| {
            let _ = call_once(&mut svc, n);
        })
    };
    let governor = {
        let limiter = governor::RateLimiter::direct(governor::Quota::per_second(
            NonZeroU32::new(huge).unwrap(),
        ));
        per_call(|_| limiter.check().unwrap())
    };
    let failsafe_sync = {
        use failsafe::CircuitBreaker;
        let breaker = failsafe::Config::new().build();
        per_call(|n| {
            breaker.call(|| Ok::<u64, ()>(n)).unwrap();
        })
    };

    println!("| service | allocations per call | response future bytes |");
    println!("|---|---:|---:|");
    for r in &rows {
        let who = if r.palisade { "palisade " } else { "" };
        println!("| {who}{} | {:.2} | {} |", r.name, r.allocs, r.bytes);
    }
    println!("| palisade stale cache (stores each answer) | {stale:.2} | |");
    println!("| governor check | {governor:.2} | |");
    println!("| failsafe call | {failsafe_sync:.2} | |");

    sizes();

    let offenders: Vec<_> = rows
        .iter()
        .filter(|r| r.palisade && r.allocs > 0.0)
        .map(|r| format!("{} ({:.2})", r.name, r.allocs))
        .collect();
    assert!(
        offenders.is_empty(),
        "happy paths that allocate: {}",
        offenders.join(", ")
    );
    // One stored copy per call, plus the store's amortized growth of its order queue.
    assert!(
        stale <= 1.01,
        "the stale cache allocates only the stored copy of each answer, found {stale:.3} per call"
    );
    println!("allocs: no palisade happy path allocates ... ok");
}

/// Bytes of each layer's service and response future, innermost first, in the two
/// recommended stacks and in tower's: what a call builds and moves once per layer.
fn sizes() {
    fn size<S: Service<u64>>(layer: &str, svc: &S) {
        println!(
            "| {layer} | {} | {} |",
            size_of_val(svc),
            size_of::<S::Future>()
        );
    }
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
    let timeout = |d| TimeoutLayer::builder().timeout(d).build().unwrap();
    let (overall, attempt) = (Duration::from_secs(2), Duration::from_millis(300));

    println!("| layer (innermost first) | service bytes | response future bytes |");
    println!("|---|---:|---:|");
    size("backend (service_fn)", &backend());
    let a = timeout(attempt).layer(backend());
    size("per-attempt timeout", &a);
    let fixed = ConcurrencyLimitLayer::builder(1024)
        .build()
        .unwrap()
        .layer(a.clone());
    size("concurrency limit", &fixed);
    let adaptive = AdaptiveLimitLayer::builder()
        .algorithm(Aimd::new().latency_threshold(attempt / 2))
        .limits(4, 1000)
        .max_wait(Duration::from_secs(1))
        .max_queue(1000)
        .build()
        .unwrap()
        .layer(a);
    size("adaptive limit", &adaptive);
    let breaker = || CircuitBreakerLayer::builder().build().unwrap();
    let (fixed, adaptive) = (breaker().layer(fixed), breaker().layer(adaptive));
    size("breaker (over concurrency)", &fixed);
    size("breaker (over adaptive)", &adaptive);
    let retry = || RetryLayer::builder().build().unwrap();
    let (fixed, adaptive) = (retry().layer(fixed), retry().layer(adaptive));
    size("retry with budget (concurrency)", &fixed);
    size("retry with budget (adaptive)", &adaptive);
    size(
        "overall timeout (concurrency)",
        &timeout(overall).layer(fixed),
    );
    size(
        "overall timeout (adaptive)",
        &timeout(overall).layer(adaptive),
    );
    let t = tower::timeout::TimeoutLayer::new(attempt).layer(backend());
    size("tower Timeout", &t);
    let t = tower::limit::ConcurrencyLimitLayer::new(1024).layer(t);
    size("tower ConcurrencyLimit", &t);
    let t = tower::retry::RetryLayer::new(Never).layer(t);
    size("tower Retry", &t);
    size(
        "tower Timeout (overall)",
        &tower::timeout::TimeoutLayer::new(overall).layer(t),
    );
}
