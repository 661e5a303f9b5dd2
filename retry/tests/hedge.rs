//! Hedging on paused time: the fast copy wins, the slow one is cancelled.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::ms;
use palisade_core::BoxError;
use palisade_retry::hedge::{Hedge, HedgeConfig, HedgeDelay, HedgeLayer};
use palisade_retry::{BudgetConfig, HedgeEvent};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// Sets its flag when dropped: proves a copy was cancelled, not left running.
struct DropGuard(Arc<AtomicBool>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A backend whose n-th call (0-based) takes `latencies[n]` (the last one repeats) and
/// answers `Ok(n)`, or `Err` where `fails[n]`. Each call's future holds a drop guard.
#[derive(Clone)]
struct Backend {
    latencies: Arc<Vec<u64>>,
    fails: Arc<Vec<bool>>,
    calls: Arc<AtomicU32>,
    dropped: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
}

impl Backend {
    fn new(latencies: &[u64]) -> Self {
        Self::failing(latencies, &[])
    }

    fn failing(latencies: &[u64], fails: &[bool]) -> Self {
        Self {
            latencies: Arc::new(latencies.to_vec()),
            fails: Arc::new(fails.to_vec()),
            calls: Arc::new(AtomicU32::new(0)),
            dropped: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    fn was_dropped(&self, n: usize) -> bool {
        self.dropped.lock().expect("lock")[n].load(Ordering::SeqCst)
    }
}

impl Service<u32> for Backend {
    type Response = u32;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u32) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) as usize;
        let latency = *self
            .latencies
            .get(n)
            .or(self.latencies.last())
            .expect("a latency");
        let fail = self.fails.get(n).copied().unwrap_or(false);
        let flag = Arc::new(AtomicBool::new(false));
        self.dropped.lock().expect("lock").push(Arc::clone(&flag));
        let guard = DropGuard(flag);
        Box::pin(async move {
            let _guard = guard;
            tokio::time::sleep(ms(latency)).await;
            if fail {
                Err(format!("call {n} failed").into())
            } else {
                Ok(n as u32)
            }
        })
    }
}

fn events() -> (
    Arc<Mutex<Vec<HedgeEvent>>>,
    impl Fn(&HedgeEvent) + Send + Sync,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    (seen, move |e: &HedgeEvent| {
        sink.lock().expect("lock").push(e.clone());
    })
}

fn fixed(delay: u64) -> palisade_retry::hedge::HedgeConfigBuilder {
    HedgeConfig::builder().delay(ms(delay))
}

#[tokio::test(start_paused = true)]
async fn the_fast_copy_wins_and_the_slow_one_is_cancelled() {
    let backend = Backend::new(&[1_000, 10]);
    let (seen, listener) = events();
    let svc = HedgeLayer::new(fixed(50).build().unwrap())
        .on_event(listener)
        .layer(backend.clone());
    let start = Instant::now();
    assert_eq!(svc.oneshot(1).await.unwrap(), 1);
    assert_eq!(start.elapsed(), ms(60));
    assert_eq!(backend.calls(), 2);
    assert!(backend.was_dropped(0), "the slow original was cancelled");
    assert_eq!(
        *seen.lock().expect("lock"),
        [
            HedgeEvent::Sent {
                copy: 1,
                after: ms(50)
            },
            HedgeEvent::Won { copy: 1 }
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_fast_original_sends_no_copy() {
    let backend = Backend::new(&[20]);
    let svc = HedgeLayer::new(fixed(50).build().unwrap()).layer(backend.clone());
    assert_eq!(svc.oneshot(1).await.unwrap(), 0);
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn requests_the_predicate_refuses_are_never_hedged() {
    let backend = Backend::new(&[1_000, 10]);
    let config = fixed(50).build().unwrap();
    let svc = HedgeLayer::new(config)
        .hedgeable(|req: &u32| *req != 0)
        .layer(backend.clone());
    let start = Instant::now();
    assert_eq!(svc.oneshot(0).await.unwrap(), 0);
    assert_eq!(start.elapsed(), ms(1_000));
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_copy_does_not_win_while_another_can_answer() {
    // The original fails at 70 ms, after the hedge left at 50 ms; the hedge answers at 80.
    let backend = Backend::failing(&[70, 30], &[true, false]);
    let svc = HedgeLayer::new(fixed(50).build().unwrap()).layer(backend.clone());
    let start = Instant::now();
    assert_eq!(svc.oneshot(1).await.unwrap(), 1);
    assert_eq!(start.elapsed(), ms(80));

    // When every copy fails, the last failure is returned.
    let backend = Backend::failing(&[70, 30], &[true, true]);
    let svc = HedgeLayer::new(fixed(50).build().unwrap()).layer(backend.clone());
    assert!(svc.oneshot(1).await.is_err());
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn max_hedges_bounds_the_copies() {
    let backend = Backend::new(&[1_000, 1_000, 1_000, 1_000]);
    let config = fixed(50).max_hedges(2).build().unwrap();
    let svc = HedgeLayer::new(config).layer(backend.clone());
    let start = Instant::now();
    assert_eq!(svc.oneshot(1).await.unwrap(), 0);
    assert_eq!(start.elapsed(), ms(1_000));
    assert_eq!(backend.calls(), 3);
    assert!(backend.was_dropped(1) && backend.was_dropped(2));
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_stops_hedging() {
    let backend = Backend::new(&[1_000, 10]);
    let (seen, listener) = events();
    let config = fixed(50)
        .budget_config(BudgetConfig::Tps {
            ttl: Duration::from_secs(1),
            min_per_sec: 0,
            ratio: 0.0,
        })
        .build()
        .unwrap();
    let svc = HedgeLayer::new(config)
        .on_event(listener)
        .layer(backend.clone());
    assert_eq!(svc.oneshot(1).await.unwrap(), 0);
    assert_eq!(backend.calls(), 1);
    assert_eq!(*seen.lock().expect("lock"), [HedgeEvent::BudgetExhausted]);
}

#[tokio::test(start_paused = true)]
async fn the_percentile_delay_learns_from_latencies() {
    // 19 requests of 10 ms and one of 100 ms; then hedging starts at p90 = 10 ms.
    let mut latencies = vec![10; 19];
    latencies.push(100);
    latencies.extend([1_000, 5]);
    let backend = Backend::new(&latencies);
    let delay = HedgeDelay::Percentile {
        percentile: 0.9,
        window: 20,
        min_samples: 20,
    };
    let config = HedgeConfig::builder().hedge_delay(delay).build().unwrap();
    let svc: Hedge<_> = HedgeLayer::new(config).layer(backend.clone());
    for _ in 0..19 {
        svc.clone().oneshot(1).await.unwrap();
    }
    assert_eq!(svc.current_delay(), None, "no hedging before min_samples");
    svc.clone().oneshot(1).await.unwrap();
    assert_eq!(svc.current_delay(), Some(ms(10)));

    let start = Instant::now();
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 21);
    assert_eq!(start.elapsed(), ms(15));
}

#[test]
fn invalid_hedge_configs_are_refused() {
    let err = HedgeConfig::builder()
        .delay(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "delay");
    let err = HedgeConfig::builder().max_hedges(0).build().unwrap_err();
    assert_eq!(err.field(), "max_hedges");
    let bad = HedgeDelay::Percentile {
        percentile: 1.5,
        window: 100,
        min_samples: 10,
    };
    let err = HedgeConfig::builder().hedge_delay(bad).build().unwrap_err();
    assert_eq!(err.field(), "percentile");
    let bad = HedgeDelay::Percentile {
        percentile: 0.9,
        window: 100,
        min_samples: 1000,
    };
    let err = HedgeConfig::builder().hedge_delay(bad).build().unwrap_err();
    assert_eq!(err.field(), "min_samples");
}

#[test]
fn an_empty_name_is_refused() {
    let err = HedgeConfig::builder().name("").build().unwrap_err();
    assert_eq!((err.layer(), err.field()), ("hedge", "name"));
}

#[tokio::test(start_paused = true)]
async fn a_delay_of_forever_never_hedges_and_never_panics() {
    let backend = Backend::new(&[1_000, 10]);
    let config = fixed(0).delay(Duration::MAX).build().unwrap();
    let svc = HedgeLayer::new(config).layer(backend.clone());
    let start = Instant::now();
    assert_eq!(svc.oneshot(1).await.unwrap(), 0);
    assert_eq!(start.elapsed(), ms(1_000));
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_only_token_bucket_counts_outcomes_and_throttles() {
    // Every call fails after 100 ms; a copy goes out at 10 ms while the bucket allows it.
    let backend = Backend::failing(&[100], &[true; 64]);
    let budget = palisade_retry::RetryBudget::token_bucket(10, 0.1).unwrap();
    let config = fixed(10).build().unwrap();
    let svc = HedgeLayer::new(config)
        .share_budget(budget.clone())
        .layer(backend.clone());
    for _ in 0..20 {
        assert!(svc.clone().oneshot(1).await.is_err());
    }
    // Each hedged request records two failures: 10 -> 8 -> 6 -> 4 tokens, and at 4 (not above
    // half of 10) hedging stops. Without recording, all 20 requests were hedged (40 calls).
    assert_eq!(backend.calls(), 3 * 2 + 17);
    assert_eq!(budget.available(), 0.0);
}

/// A backend that counts how often its readiness was reserved (as a concurrency limit
/// hands out a permit in `poll_ready`).
#[derive(Clone)]
struct Reserving {
    inner: Backend,
    reserved: Arc<AtomicU32>,
}

impl Service<u32> for Reserving {
    type Response = u32;
    type Error = BoxError;
    type Future = <Backend as Service<u32>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.reserved.fetch_add(1, Ordering::SeqCst);
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: u32) -> Self::Future {
        self.inner.call(req)
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_hedge_reserves_no_readiness() {
    let reserved = Arc::new(AtomicU32::new(0));
    let backend = Reserving {
        inner: Backend::new(&[1_000, 10]),
        reserved: Arc::clone(&reserved),
    };
    let config = fixed(50)
        .budget_config(BudgetConfig::Tps {
            ttl: Duration::from_secs(1),
            min_per_sec: 0,
            ratio: 0.0,
        })
        .build()
        .unwrap();
    let svc = HedgeLayer::new(config).layer(backend);
    assert_eq!(svc.oneshot(1).await.unwrap(), 0);
    // Only the caller's own `ready()`: the hedge asked the budget first and, refused, did not
    // take a permit it would then hold until the original answered.
    assert_eq!(reserved.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_copy_does_not_win_over_the_original() {
    // The copy is refused by a local limit at once; the original answers at 100 ms.
    #[derive(Clone)]
    struct Limited(Arc<AtomicU32>);
    impl Service<u32> for Limited {
        type Response = u32;
        type Error = BoxError;
        type Future = std::pin::Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: u32) -> Self::Future {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n == 0 {
                    tokio::time::sleep(ms(100)).await;
                    Ok(7)
                } else {
                    let limited = palisade_core::RateLimited::new("api".into(), ms(1));
                    Err(limited.into())
                }
            })
        }
    }
    let svc = HedgeLayer::new(fixed(10).build().unwrap()).layer(Limited(Arc::default()));
    assert_eq!(svc.oneshot(1).await.unwrap(), 7);
}

#[cfg(feature = "serde")]
#[test]
fn hedge_configs_round_trip_and_deserializing_validates() {
    let config = fixed(1)
        .name("search")
        .delay(Duration::from_micros(500))
        .max_hedges(2)
        .build()
        .unwrap();
    let json = serde_json::to_string(&config).unwrap();
    let back: HedgeConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back.delay(), config.delay());
    assert_eq!(back.max_hedges(), 2);
    assert_eq!(back.budget(), config.budget());
    assert_eq!(serde_json::to_string(&back).unwrap(), json);

    for bad in [
        r#"{ "kind": "fixed", "delay": "0ms" }"#,
        r#"{ "kind": "fixed", "delay": 40 }"#,
        r#"{ "kind": "percentile", "percentile": 1.5, "window": 100, "min_samples": 10 }"#,
    ] {
        assert!(serde_json::from_str::<HedgeDelay>(bad).is_err(), "{bad}");
    }
}
