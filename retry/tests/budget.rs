//! Retry budgets cap the extra load retries add under a permanent outage.

mod common;

use std::time::Duration;

use common::{always_failing, ms};
use palisade_retry::{Backoff, Jitter, RetryBudget, RetryConfig, RetryLayer};
use tower::{Layer, ServiceExt};

const REQUESTS: usize = 1000;
const MAX_ATTEMPTS: u32 = 5;

fn config() -> palisade_retry::RetryConfigBuilder {
    RetryConfig::builder()
        .max_attempts(MAX_ATTEMPTS)
        .backoff(Backoff::constant(ms(1)).jitter(Jitter::None))
}

/// Send `REQUESTS` requests, one every 5 ms (about 5 s in all: within one budget window),
/// to an always-failing backend through `layer`; return how many calls reached the backend.
async fn outage(layer: RetryLayer) -> usize {
    let backend = always_failing();
    let svc = layer.layer(backend.clone());
    let start = tokio::time::Instant::now();
    for _ in 0..REQUESTS {
        assert!(svc.clone().oneshot(()).await.is_err());
        tokio::time::sleep(ms(5)).await;
    }
    assert!(start.elapsed() < Duration::from_secs(10));
    backend.count()
}

#[tokio::test(start_paused = true)]
async fn without_a_budget_an_outage_multiplies_load_by_max_attempts() {
    let calls = outage(RetryLayer::new(config().no_budget().build().unwrap())).await;
    assert_eq!(calls, REQUESTS * MAX_ATTEMPTS as usize);
}

#[tokio::test(start_paused = true)]
async fn the_default_budget_caps_amplification_at_one_plus_ratio() {
    // The default: ratio 0.2 over a 10 s window, a floor of 10 retries per second.
    let calls = outage(RetryLayer::new(config().build().unwrap())).await;
    let ratio = 0.2;
    let floor = 10 * 10; // min_per_sec * ttl: the run fits in one window
    let cap = (REQUESTS as f64 * (1.0 + ratio)) as usize + floor;
    assert!(calls <= cap, "{calls} backend calls, cap {cap}");
    // The budget is used, not just refused: retries do happen.
    assert!(calls > REQUESTS + REQUESTS / 10, "{calls} backend calls");
}

#[tokio::test(start_paused = true)]
async fn a_budget_without_floor_allows_exactly_the_ratio() {
    let budget = RetryBudget::tps(Duration::from_secs(10), 0, 0.1).unwrap();
    let calls = outage(RetryLayer::new(config().build().unwrap()).share_budget(budget)).await;
    // Deposits expire after the window, so slightly fewer than 10% may be retried.
    assert!(calls <= REQUESTS + REQUESTS / 10, "{calls}");
    assert!(calls >= REQUESTS + REQUESTS / 10 - 10, "{calls}");
}

#[tokio::test(start_paused = true)]
async fn token_bucket_throttling_stops_retries_under_an_outage() {
    let budget = RetryBudget::token_bucket(10, 0.1).unwrap();
    let calls = outage(RetryLayer::new(config().build().unwrap()).share_budget(budget)).await;
    // Each failed attempt takes a token; below half full no retry is allowed: at most the
    // 5 tokens above half can pay for retries, and nothing refills them.
    assert!(calls <= REQUESTS + 5, "{calls}");
}

#[tokio::test(start_paused = true)]
async fn one_budget_handle_caps_several_layers_together() {
    let budget = RetryBudget::tps(Duration::from_secs(10), 0, 0.1).unwrap();
    let a = RetryLayer::new(config().build().unwrap()).share_budget(budget.clone());
    let b = RetryLayer::new(config().build().unwrap()).share_budget(budget.clone());
    assert!(a.budget().unwrap().same_as(&budget));

    let (backend_a, backend_b) = (always_failing(), always_failing());
    let (svc_a, svc_b) = (a.layer(backend_a.clone()), b.layer(backend_b.clone()));
    for _ in 0..REQUESTS / 2 {
        let _ = svc_a.clone().oneshot(()).await;
        let _ = svc_b.clone().oneshot(()).await;
        tokio::time::sleep(ms(5)).await;
    }
    let calls = backend_a.count() + backend_b.count();
    assert!(calls <= REQUESTS + REQUESTS / 10, "{calls}");
}

/// What one attempt meets in [`refusals_never_make_the_budget_overspend`].
#[derive(Debug, Clone, Copy)]
enum Meets {
    /// The backend answers.
    Answer,
    /// The backend fails.
    Fails,
    /// An open breaker refuses it, unsent.
    Open,
    /// A full concurrency limit refuses it, unsent.
    Full,
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Refusals that never sent the call are retried free of the budget; the budget's
    /// promise holds all the same: backend calls ≤ requests + the retries the budget
    /// allowed, whatever mix of answers, failures and refusals the attempts meet. With a
    /// floor of `floor` retries per second over a 10 s window and no ratio, the run
    /// within one window: at most `10 × floor` paid retries.
    #[test]
    fn refusals_never_make_the_budget_overspend(
        script in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just(Meets::Answer),
                proptest::strategy::Just(Meets::Fails),
                proptest::strategy::Just(Meets::Open),
                proptest::strategy::Just(Meets::Full),
            ],
            1..200,
        ),
        requests in 1usize..40,
        floor in 0u32..10,
    ) {
        use palisade_core::{BoxError, CircuitOpen, Name, Overloaded};
        use std::sync::{Arc, Mutex};
        use std::sync::atomic::{AtomicUsize, Ordering};

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let (sent, refused) = rt.block_on(async {
            let script = Arc::new(Mutex::new(script.into_iter()));
            let sent = Arc::new(AtomicUsize::new(0));
            let refused = Arc::new(AtomicUsize::new(0));
            let (s, r) = (Arc::clone(&sent), Arc::clone(&refused));
            let backend = tower::service_fn(move |()| {
                let meets = script.lock().expect("lock").next().unwrap_or(Meets::Answer);
                let out: Result<(), BoxError> = match meets {
                    Meets::Answer => { s.fetch_add(1, Ordering::SeqCst); Ok(()) }
                    Meets::Fails => { s.fetch_add(1, Ordering::SeqCst); Err("boom".into()) }
                    Meets::Open => {
                        r.fetch_add(1, Ordering::SeqCst);
                        Err(CircuitOpen::new(Name::new("b"), Some(ms(1))).into())
                    }
                    Meets::Full => {
                        r.fetch_add(1, Ordering::SeqCst);
                        Err(Overloaded::new(Name::new("l"), "max in-flight").into())
                    }
                };
                std::future::ready(out)
            });
            let budget = RetryBudget::tps(Duration::from_secs(10), floor, 0.0).expect("budget");
            let layer = RetryLayer::new(config().build().expect("config")).share_budget(budget);
            let svc = layer.layer(backend);
            for _ in 0..requests {
                let _ = svc.clone().oneshot(()).await;
            }
            (sent.load(Ordering::SeqCst), refused.load(Ordering::SeqCst))
        });
        // Every backend call after a request's first follows a paid retry; a request's
        // first backend call may come after refusals, which cost nothing.
        proptest::prop_assert!(
            sent <= requests + 10 * floor as usize,
            "{sent} backend calls for {requests} requests, floor {floor} ({refused} refusals)"
        );
    }
}
