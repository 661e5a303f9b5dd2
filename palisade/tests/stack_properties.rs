//! Property test of the whole recommended stack: every layer, random configs within their
//! documented ranges, random fault scripts and random limits.
//!
//! overall timeout → retry (with a budget) → circuit breaker → limit (rate, concurrency or
//! the README's adaptive limit) → attempt timeout → a scripted backend. For every case:
//!
//! 1. nothing panics and every request is answered exactly once;
//! 2. no request waits past the caller's deadline (the overall timeout);
//! 3. extra backend load stays within the budget invariant:
//!    `backend calls ≤ requests + ratio × requests + min_per_sec × (ttl + run time)`;
//! 4. with a healthy backend, no breaker transition happens, however many calls the limit
//!    rejects: local rejections are neither success nor failure.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade::Stack;
use palisade::prelude::*;
use palisade::rate_limit::ConcurrencyLimitLayer;
use proptest::prelude::*;
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt, service_fn};

#[derive(Debug, Clone, Copy)]
enum Fault {
    Ok,
    Err,
    Hang,
    Slow(u64),
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        4 => Just(Fault::Ok),
        2 => Just(Fault::Err),
        1 => Just(Fault::Hang),
        2 => (1u64..2_000).prop_map(Fault::Slow),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    overall_ms: u64,
    attempt_ms: u64,
    max_attempts: u32,
    backoff_ms: u64,
    ratio: f64,
    min_per_sec: u32,
    window: u32,
    minimum_calls: u32,
    failure_rate: f64,
    open_ms: u64,
    limit: Limit,
    /// (arrival offset ms, what the backend does for each attempt of this request)
    requests: Vec<(u64, Vec<Fault>)>,
}

#[derive(Debug, Clone, Copy)]
enum Limit {
    Rate {
        per_sec: u32,
        burst: u32,
    },
    Concurrency(usize),
    /// AIMD at this latency threshold (ms), from this initial limit; calls over it wait up
    /// to `wait_ms` (0: refused, the reject mode) with at most `queue` waiting (the
    /// README's stack waits).
    Adaptive {
        threshold_ms: u64,
        initial: usize,
        wait_ms: u64,
        queue: usize,
    },
}

fn case() -> impl Strategy<Value = Case> {
    (
        (50u64..5_000, 10u64..1_000, 1u32..=5, 0u64..200),
        (0.0f64..=0.5, 0u32..=10),
        (5u32..=50, 1u32..=50, 10.0f64..=90.0, 100u64..10_000),
        prop_oneof![
            (1u32..=100, 1u32..=20).prop_map(|(per_sec, burst)| Limit::Rate { per_sec, burst }),
            (1usize..=10).prop_map(Limit::Concurrency),
            (
                1u64..1_000,
                1usize..=20,
                prop_oneof![Just(0u64), 1u64..3_000, Just(u64::MAX)],
                1usize..=1_000,
            )
                .prop_map(|(threshold_ms, initial, wait_ms, queue)| Limit::Adaptive {
                    threshold_ms,
                    initial,
                    wait_ms,
                    queue
                }),
        ],
        prop::collection::vec((0u64..100, prop::collection::vec(fault(), 5)), 1..60),
    )
        .prop_map(
            |(
                (overall_ms, attempt_ms, max_attempts, backoff_ms),
                (ratio, min_per_sec),
                (window, minimum_calls, failure_rate, open_ms),
                limit,
                requests,
            )| Case {
                overall_ms,
                attempt_ms,
                max_attempts,
                backoff_ms,
                ratio,
                min_per_sec,
                window,
                minimum_calls: minimum_calls.min(window),
                failure_rate,
                open_ms,
                limit,
                requests,
            },
        )
}

const TTL: Duration = Duration::from_secs(10);

struct Run {
    answered: usize,
    max_latency: Duration,
    backend_calls: u32,
    transitions: u32,
    run_time: Duration,
}

async fn run(case: &Case, healthy: bool) -> Run {
    let calls = Arc::new(AtomicU32::new(0));
    let transitions = Arc::new(AtomicU32::new(0));
    let t = Arc::clone(&transitions);

    let breaker = CircuitBreakerLayer::builder()
        .name("prop")
        .count_window(case.window)
        .minimum_calls(case.minimum_calls)
        .failure_rate_threshold(case.failure_rate)
        .open_duration(Duration::from_millis(case.open_ms))
        .on_event(move |e| {
            if matches!(
                e,
                palisade::circuit_breaker::CircuitBreakerEvent::StateTransition { .. }
            ) {
                t.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build()
        .unwrap();
    let retry = RetryLayer::builder()
        .name("prop")
        .max_attempts(case.max_attempts)
        .backoff(Backoff::exponential(Duration::from_millis(case.backoff_ms)))
        .share_budget(RetryBudget::tps(TTL, case.min_per_sec, case.ratio).unwrap())
        .seed(7)
        .build()
        .unwrap();
    let overall = TimeoutLayer::builder()
        .name("overall")
        .timeout(Duration::from_millis(case.overall_ms))
        .build()
        .unwrap();
    let attempt = TimeoutLayer::builder()
        .name("attempt")
        .timeout(Duration::from_millis(case.attempt_ms))
        .build()
        .unwrap();

    let scripts: Arc<Vec<Vec<Fault>>> =
        Arc::new(case.requests.iter().map(|(_, f)| f.clone()).collect());
    let attempt_no: Arc<Vec<AtomicU32>> = Arc::new(
        (0..case.requests.len())
            .map(|_| AtomicU32::new(0))
            .collect(),
    );
    let seen = Arc::clone(&calls);
    let backend = service_fn(move |id: usize| {
        seen.fetch_add(1, Ordering::Relaxed);
        let n = attempt_no[id].fetch_add(1, Ordering::Relaxed) as usize;
        let fault = if healthy {
            Fault::Ok
        } else {
            scripts[id][n % scripts[id].len()]
        };
        async move {
            match fault {
                Fault::Ok => Ok::<usize, BoxError>(id),
                Fault::Err => Err("backend failed".into()),
                Fault::Hang => {
                    std::future::pending::<()>().await;
                    Ok(id)
                }
                Fault::Slow(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(id)
                }
            }
        }
    });

    let stack = Stack::new()
        .timeout(overall)
        .retry(retry)
        .circuit_breaker(breaker)
        .attempt_timeout(attempt);
    let svc: BoxCloneService<usize, usize, BoxError> = match case.limit {
        Limit::Rate { per_sec, burst } => BoxCloneService::new(
            stack
                .limit(
                    RateLimitLayer::builder(per_sec, Duration::from_secs(1))
                        .name("prop")
                        .burst(burst)
                        .reject()
                        .build()
                        .unwrap(),
                )
                .layer(backend),
        ),
        Limit::Concurrency(n) => BoxCloneService::new(
            stack
                .limit(
                    ConcurrencyLimitLayer::builder(n)
                        .name("prop")
                        .build()
                        .unwrap(),
                )
                .layer(backend),
        ),
        Limit::Adaptive {
            threshold_ms,
            initial,
            wait_ms,
            queue,
        } => BoxCloneService::new(
            stack
                .limit(
                    AdaptiveLimitLayer::builder()
                        .name("prop")
                        .algorithm(
                            Aimd::new().latency_threshold(Duration::from_millis(threshold_ms)),
                        )
                        .initial_limit(initial)
                        .limits(1, 20)
                        .max_wait(Duration::from_millis(wait_ms))
                        .max_queue(queue)
                        .build()
                        .unwrap(),
                )
                .layer(backend),
        ),
    };

    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut at = Duration::ZERO;
    for (id, (gap, _)) in case.requests.iter().enumerate() {
        at += Duration::from_millis(*gap);
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start + at).await;
            let sent = Instant::now();
            let result = svc.oneshot(id).await;
            (result.is_ok(), sent.elapsed())
        }));
    }
    let mut answered = 0;
    let mut max_latency = Duration::ZERO;
    for task in tasks {
        let (_, latency) = task.await.expect("no task panicked");
        answered += 1;
        max_latency = max_latency.max(latency);
    }
    Run {
        answered,
        max_latency,
        backend_calls: calls.load(Ordering::Relaxed),
        transitions: transitions.load(Ordering::Relaxed),
        run_time: start.elapsed(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_full_stack_keeps_its_promises(case in case()) {
        let rt = runtime();
        let n = case.requests.len();
        let faulty = rt.block_on(run(&case, false));
        prop_assert_eq!(faulty.answered, n, "every request answered once");
        prop_assert!(
            faulty.max_latency <= Duration::from_millis(case.overall_ms),
            "no wait past the caller's deadline: {:?} > {} ms", faulty.max_latency, case.overall_ms
        );
        let floor = f64::from(case.min_per_sec) * (TTL + faulty.run_time).as_secs_f64();
        let bound = n as f64 * (1.0 + case.ratio) + floor;
        prop_assert!(
            f64::from(faulty.backend_calls) <= bound.ceil(),
            "extra load within the budget: {} calls for {} requests (bound {:.1})",
            faulty.backend_calls, n, bound
        );

        let healthy = rt.block_on(run(&case, true));
        prop_assert_eq!(healthy.answered, n);
        prop_assert_eq!(
            healthy.transitions, 0,
            "a healthy backend behind the caller's own limit never moves the breaker"
        );
    }
}
