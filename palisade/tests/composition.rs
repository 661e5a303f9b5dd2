//! The recommended stack composed as the README shows it: rules that hold only between layers.
//!
//! - `Stack` applies the recommended order whatever order its setters are called in: the
//!   overall timeout bounds every attempt and every back-off sleep.
//! - A caller's own limit can never open its breaker: local rejections (`RateLimited`,
//!   `Overloaded`) under the breaker are neither successes nor failures for it.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade::circuit_breaker::State as CircuitState;
use palisade::prelude::*;
use palisade::rate_limit::ConcurrencyLimitLayer;
use palisade::{RejectionKind, Stack};
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

#[tokio::test(start_paused = true)]
async fn stack_order_holds_when_setters_are_called_in_reverse() {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    // a backend that always hangs: every attempt times out after 300 ms
    let backend = service_fn(move |_: u32| {
        seen.fetch_add(1, Ordering::Relaxed);
        async move {
            std::future::pending::<()>().await;
            Ok::<u32, BoxError>(0)
        }
    });
    // setters called innermost-first: the opposite of the recommended order
    let stack = Stack::new()
        .attempt_timeout(
            TimeoutLayer::builder()
                .name("attempt")
                .timeout(Duration::from_millis(300))
                .build()
                .unwrap(),
        )
        .limit(
            RateLimitLayer::builder(1_000, Duration::from_secs(1))
                .name("limit")
                .reject()
                .build()
                .unwrap(),
        )
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .name("breaker")
                .minimum_calls(100)
                .build()
                .unwrap(),
        )
        .retry(
            RetryLayer::builder()
                .name("retry")
                .max_attempts(10)
                .backoff(Backoff::constant(Duration::from_millis(50)).jitter(Jitter::None))
                .no_budget()
                .build()
                .unwrap(),
        )
        .timeout(
            TimeoutLayer::builder()
                .name("overall")
                .timeout(Duration::from_secs(1))
                .build()
                .unwrap(),
        );
    let svc = stack.layer(backend);
    let start = Instant::now();
    let err = svc.oneshot(1).await.unwrap_err();
    let took = start.elapsed();
    // had the retry been outside the overall timeout, 10 attempts × 350 ms = 3.5 s
    assert_eq!(
        took,
        Duration::from_secs(1),
        "the overall timeout bounds all attempts"
    );
    let rejection = err.as_rejection().expect("a rejection");
    assert_eq!(rejection.kind(), RejectionKind::Elapsed);
    // 300 ms attempts with 50 ms pauses inside 1 s: attempts start at 0, 350 and 700 ms
    assert_eq!(calls.load(Ordering::Relaxed), 3);
}

fn breaker(name: &'static str) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name(name)
        .count_window(20)
        .minimum_calls(10)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_burst_over_the_callers_own_rate_limit_does_not_open_its_breaker() {
    let breaker = breaker("burst");
    let handle = breaker.handle();
    let svc = Stack::new()
        .circuit_breaker(breaker)
        .limit(
            RateLimitLayer::builder(10, Duration::from_secs(1))
                .name("burst")
                .burst(10)
                .reject()
                .build()
                .unwrap(),
        )
        .layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }));

    let answers = futures_join_all((0..30).map(|i| svc.clone().oneshot(i))).await;
    let limited = answers
        .iter()
        .filter(|r| {
            r.as_ref()
                .err()
                .and_then(|e| e.as_rejection())
                .is_some_and(|r| r.kind() == RejectionKind::RateLimited)
        })
        .count();
    assert_eq!(limited, 20, "the excess of the burst is rate limited");
    assert_eq!(answers.iter().filter(|r| r.is_ok()).count(), 10);
    assert_eq!(
        handle.state(),
        CircuitState::Closed,
        "20 local rejections are no evidence against a healthy backend"
    );
    // and the breaker still admits calls once the quota refills
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(svc.clone().oneshot(7).await.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_full_concurrency_limit_does_not_open_its_breaker() {
    let breaker = breaker("bulkhead");
    let handle = breaker.handle();
    let svc = Stack::new()
        .circuit_breaker(breaker)
        .limit(
            ConcurrencyLimitLayer::builder(4)
                .name("bulkhead")
                .build()
                .unwrap(),
        )
        .layer(service_fn(|x: u32| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, BoxError>(x)
        }));
    let answers = futures_join_all((0..20).map(|i| svc.clone().oneshot(i))).await;
    let overloaded = answers
        .iter()
        .filter(|r| {
            r.as_ref()
                .err()
                .and_then(|e| e.as_rejection())
                .is_some_and(|r| r.kind() == RejectionKind::Overloaded)
        })
        .count();
    assert_eq!(overloaded, 16, "four run, sixteen are refused at once");
    assert_eq!(handle.state(), CircuitState::Closed);
}

/// `join_all` without a futures dependency: spawn each on the current runtime.
async fn futures_join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
