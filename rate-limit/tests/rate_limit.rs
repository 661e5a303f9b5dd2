//! The GCRA rate limit: reject and wait modes, cost, keyed isolation, the quota invariant.
#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests do

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{BoxError, RateLimited};
use palisade_rate_limit::{LimitEvent, RateLimitLayer};
use proptest::prelude::*;
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceExt, service_fn};

type Log = Arc<Mutex<Vec<(Instant, u32)>>>;

/// A backend that records when each request reached it.
fn recorder(
    log: &Log,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send + use<> {
    let log = Arc::clone(log);
    service_fn(move |req: u32| {
        log.lock().unwrap().push((Instant::now(), req));
        std::future::ready(Ok::<_, BoxError>(req))
    })
}

fn config(
    cells: u32,
    period_ms: u64,
) -> palisade_rate_limit::RateLimitConfigBuilder<RateLimitLayer> {
    RateLimitLayer::builder(cells, Duration::from_millis(period_ms))
}

fn retry_after(err: &BoxError) -> Duration {
    err.downcast_ref::<RateLimited>()
        .expect("a RateLimited rejection")
        .retry_after()
}

#[tokio::test(start_paused = true)]
async fn reject_mode_fails_fast_with_the_exact_wait() {
    let log = Log::default();
    let layer = config(10, 1000).burst(2).build().unwrap();
    let mut svc = layer.layer(recorder(&log));
    for i in 0..2 {
        assert_eq!(svc.ready().await.unwrap().call(i).await.unwrap(), i);
    }
    let err = svc.ready().await.unwrap().call(9).await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_millis(100));
    advance(Duration::from_millis(40)).await;
    let err = svc.ready().await.unwrap().call(9).await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_millis(60));
    advance(Duration::from_millis(60)).await;
    assert!(svc.ready().await.unwrap().call(3).await.is_ok());
    // The rejected calls never reached the backend.
    assert_eq!(log.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_request_may_cost_many_cells() {
    let log = Log::default();
    let layer = config(10, 1000).build().unwrap().cost(|rows: &u32| *rows);
    let mut svc = layer.layer(recorder(&log));
    assert!(svc.ready().await.unwrap().call(7).await.is_ok());
    // 3 cells left: 4 do not fit; the wait is for the one missing cell.
    let err = svc.ready().await.unwrap().call(4).await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_millis(100));
    assert!(svc.ready().await.unwrap().call(3).await.is_ok());
    // A free request passes even with the quota used up.
    assert!(svc.ready().await.unwrap().call(0).await.is_ok());
}

/// A cost above the burst could never conform: refused for good, not admitted at a
/// discount (1,000,000 cells against a 1,000-cell burst used to be charged 1,000 and
/// admitted), in both modes, at once, consuming nothing.
#[tokio::test(start_paused = true)]
async fn a_cost_above_the_burst_is_refused_for_good_in_both_modes() {
    for max_wait in [Duration::ZERO, Duration::from_secs(3600), Duration::MAX] {
        let log = Log::default();
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&events);
        let layer = config(1000, 1000)
            .max_wait(max_wait)
            .on_event(move |e: &LimitEvent| seen.lock().unwrap().push(e.clone()))
            .build()
            .unwrap()
            .cost(|rows: &u32| *rows);
        let mut svc = layer.layer(recorder(&log));
        let start = Instant::now();
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(1_000_000)
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::ZERO, "it never waits");
        let limited = err.downcast_ref::<RateLimited>().expect("RateLimited");
        assert!(limited.is_permanent());
        assert_eq!(limited.insufficient(), Some((1_000_000, 1000)));
        assert_eq!(limited.retry_after(), Duration::MAX);
        assert!(
            palisade_core::find_rejection(err.as_ref())
                .unwrap()
                .is_permanent()
        );
        // Nothing reached the backend, nothing was consumed: the full burst is still there.
        assert!(log.lock().unwrap().is_empty());
        assert!(svc.ready().await.unwrap().call(1000).await.is_ok());
        // One over the burst is refused; exactly the burst conforms (above).
        advance(Duration::from_secs(1)).await;
        let err = svc.ready().await.unwrap().call(1001).await.unwrap_err();
        assert!(err.downcast_ref::<RateLimited>().unwrap().is_permanent());
        assert!(events.lock().unwrap().iter().any(|e| matches!(
            e,
            LimitEvent::RateLimited { cost: 1_000_000, retry_after } if *retry_after == Duration::MAX
        )));
    }
}

/// `max_wait(Duration::MAX)` means "wait as long as it takes", not reject mode.
#[tokio::test(start_paused = true)]
async fn a_forever_max_wait_waits() {
    let log = Log::default();
    // One cell per hour.
    let layer = RateLimitLayer::builder(1, Duration::from_secs(3600))
        .max_wait(Duration::MAX)
        .build()
        .unwrap();
    let mut svc = layer.layer(recorder(&log));
    let start = Instant::now();
    svc.ready().await.unwrap().call(1).await.unwrap();
    svc.ready().await.unwrap().call(2).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(3600));
    // Still bounded by the caller's deadline.
    let ready = svc.ready().await.unwrap();
    let fut = palisade_core::Deadline::after(Duration::from_secs(60)).scope(|| ready.call(3));
    let err = fut.await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_secs(3600));
}

#[tokio::test(start_paused = true)]
async fn wait_mode_admits_in_arrival_order() {
    let log = Log::default();
    let layer = config(10, 1000)
        .burst(1)
        .max_wait(Duration::from_secs(10))
        .build()
        .unwrap()
        .cost(|cells: &u32| *cells);
    let svc = layer.layer(recorder(&log));
    let start = Instant::now();
    let costs = [1, 1, 1, 1, 1, 1, 1, 1];
    let mut tasks = Vec::new();
    for (i, cost) in costs.into_iter().enumerate() {
        let svc = svc.clone();
        tasks.push(tokio::spawn(
            async move { svc.oneshot(cost).await.map(|_| i) },
        ));
        // Each arrives while the ones before still wait.
        tokio::task::yield_now().await;
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let log = log.lock().unwrap();
    let offsets: Vec<u128> = log.iter().map(|(t, _)| (*t - start).as_millis()).collect();
    assert_eq!(offsets, [0, 100, 200, 300, 400, 500, 600, 700]);
}

#[tokio::test(start_paused = true)]
async fn wait_mode_serves_a_large_request_before_later_small_ones() {
    let log = Log::default();
    let layer = config(10, 1000)
        .burst(5)
        .max_wait(Duration::from_secs(10))
        .build()
        .unwrap()
        .cost(|cells: &u32| *cells);
    let svc = layer.layer(recorder(&log));
    svc.clone().oneshot(5).await.unwrap();
    let mut tasks = Vec::new();
    for cost in [5, 1, 1, 1] {
        let svc = svc.clone();
        tasks.push(tokio::spawn(svc.oneshot(cost)));
        tokio::task::yield_now().await;
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let order: Vec<u32> = log.lock().unwrap().iter().map(|(_, c)| *c).collect();
    assert_eq!(order, [5, 5, 1, 1, 1]);
}

#[tokio::test(start_paused = true)]
async fn wait_mode_rejects_past_max_wait() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let log = Log::default();
    let layer = config(10, 1000)
        .burst(1)
        .max_wait(Duration::from_millis(250))
        .on_event(move |e: &LimitEvent| seen.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let svc = layer.layer(recorder(&log));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        tasks.push(tokio::spawn(svc.clone().oneshot(1)));
        tokio::task::yield_now().await;
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    // 0ms, 100ms, 200ms fit in 250ms; the 4th (300ms) and 5th (400ms) do not.
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(admitted, 3);
    for r in &results[3..] {
        let err = r.as_ref().unwrap_err();
        assert!(err.is::<RateLimited>());
    }
    let events = events.lock().unwrap();
    assert!(events.iter().any(|e| matches!(e, LimitEvent::Admitted { waited, .. } if *waited == Duration::from_millis(200))));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, LimitEvent::RateLimited { .. }))
            .count(),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_consumes_nothing_and_passes_its_turn() {
    let log = Log::default();
    let layer = config(10, 1000)
        .burst(1)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = layer.layer(recorder(&log));
    svc.clone().oneshot(0).await.unwrap();
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let second = tokio::spawn(svc.clone().oneshot(2));
    tokio::task::yield_now().await;
    // The head of the line gives up: the next one gets its slot, at 100ms.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    second.await.unwrap().unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].1, 2);
    assert_eq!((log[1].0 - log[0].0), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn keyed_limits_isolate_keys_and_forget_idle_ones() {
    let layer = config(2, 1000)
        .cleanup_interval(Duration::from_secs(10))
        .build()
        .unwrap()
        .key_by(|req: &(u32, u32)| req.0);
    let svc = layer.layer(service_fn(|req: (u32, u32)| async move {
        Ok::<_, BoxError>(req.1)
    }));
    // Key 1 is noisy: after its burst it is throttled...
    let mut rejected = 0;
    for i in 0..10 {
        if svc.clone().oneshot((1, i)).await.is_err() {
            rejected += 1;
        }
    }
    assert_eq!(rejected, 8);
    // ...and key 2 is not.
    for i in 0..2 {
        svc.clone().oneshot((2, i)).await.unwrap();
    }
    assert_eq!(layer.limiter().len(), 2);
    // Idle keys are dropped by the next call after the cleanup interval.
    advance(Duration::from_secs(11)).await;
    // (The clock is looked at once per 64 calls.)
    for i in 0..64 {
        let _ = svc.clone().oneshot((3, i)).await;
    }
    assert_eq!(layer.limiter().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn keyed_wait_mode_does_not_hold_up_other_keys() {
    let layer = config(1, 1000)
        .max_wait(Duration::from_secs(5))
        .build()
        .unwrap()
        .key_by(|req: &u32| *req);
    let svc = layer.layer(service_fn(|req: u32| async move { Ok::<_, BoxError>(req) }));
    svc.clone().oneshot(1).await.unwrap();
    let waiting = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let start = Instant::now();
    svc.clone().oneshot(2).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    waiting.await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

// ===== the quota invariant =====

fn admitted_in_run(
    cells: u32,
    period_ms: u64,
    burst: u32,
    max_wait_ms: u64,
    arrivals: &[(u64, u32)],
) -> Vec<(Instant, u32)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let log = Log::default();
        let layer = config(cells, period_ms)
            .burst(burst)
            .max_wait(Duration::from_millis(max_wait_ms))
            .build()
            .unwrap()
            .cost(|c: &u32| *c);
        let svc = layer.layer(recorder(&log));
        let mut tasks = Vec::new();
        for &(gap, cost) in arrivals {
            advance(Duration::from_millis(gap)).await;
            tasks.push(tokio::spawn(svc.clone().oneshot(cost)));
            tokio::task::yield_now().await;
        }
        for t in tasks {
            let _ = t.await.unwrap();
        }
        log.lock().unwrap().clone()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Over any window of length `period`, at most `burst + cells` cells are admitted,
    /// in reject and wait mode, for random arrivals and costs.
    #[test]
    fn never_more_than_burst_plus_quota_in_any_period(
        cells in 1u32..20,
        period_ms in 10u64..2000,
        burst in 1u32..20,
        wait_mode in any::<bool>(),
        arrivals in prop::collection::vec((0u64..200, 1u32..25), 1..80),
    ) {
        let max_wait = if wait_mode { period_ms } else { 0 };
        let log = admitted_in_run(cells, period_ms, burst, max_wait, &arrivals);
        let period = Duration::from_millis(period_ms);
        for (i, (start, _)) in log.iter().enumerate() {
            let in_window: u32 = log[i..]
                .iter()
                .take_while(|(t, _)| *t - *start <= period)
                .map(|(_, c)| (*c).min(burst))
                .sum();
            prop_assert!(in_window <= burst + cells, "{in_window} cells in one period; log {log:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn wait_mode_does_not_wait_past_the_request_deadline() {
    let log = Log::default();
    let layer = config(1, 1000)
        .max_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut svc = layer.layer(recorder(&log));
    svc.ready().await.unwrap().call(1).await.unwrap();
    // An outer timeout leaves 500ms: waiting 1s for the next cell would be wasted.
    let ready = svc.ready().await.unwrap();
    let fut = palisade_core::Deadline::after(Duration::from_millis(500)).scope(|| ready.call(2));
    let start = Instant::now();
    let err = fut.await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_secs(1));
    assert_eq!(start.elapsed(), Duration::ZERO);
    // With 2s left, it waits.
    let ready = svc.ready().await.unwrap();
    let fut = palisade_core::Deadline::after(Duration::from_secs(2)).scope(|| ready.call(3));
    assert_eq!(fut.await.unwrap(), 3);
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

/// The keyed store is bounded: a new key at a full store is limited as if it had used its
/// burst (and not stored), until idle keys are swept to make room.
#[tokio::test(start_paused = true)]
async fn a_keyed_limit_keeps_at_most_max_keys() {
    let log = Log::default();
    let layer = config(10, 1000)
        .burst(1)
        .max_keys(3)
        .build()
        .unwrap()
        .key_by(|req: &u32| *req);
    let limiter = layer.limiter().clone();
    let mut svc = layer.layer(recorder(&log));
    for key in 1..=3 {
        svc.ready().await.unwrap().call(key).await.unwrap();
    }
    assert_eq!(limiter.len(), 3);
    // Full, and no key idle yet: the fourth is refused for one emission interval.
    let err = svc.ready().await.unwrap().call(4).await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_millis(100));
    assert_eq!(limiter.len(), 3);
    // Known keys are unaffected by the bound.
    advance(Duration::from_millis(100)).await;
    svc.ready().await.unwrap().call(2).await.unwrap();
    // Once keys 1 and 3 are idle, a new key sweeps them away and takes a place.
    advance(Duration::from_secs(1)).await;
    svc.ready().await.unwrap().call(4).await.unwrap();
    assert_eq!(limiter.len(), 1);
    assert_eq!(
        config(10, 1000).max_keys(0).build().unwrap_err().field(),
        "max_keys"
    );
}

/// Many threads on a few keys: the sharded store admits exactly each key's burst, no more
/// and no less (no lost update between threads).
#[test]
fn the_keyed_store_is_exact_across_threads() {
    // 200 per hour per key: within the test, each key admits exactly its burst.
    let layer = RateLimitLayer::builder(200, Duration::from_secs(3600))
        .build()
        .unwrap()
        .key_by(|req: &u32| *req % 8);
    let svc = layer.layer(service_fn(|req: u32| {
        std::future::ready(Ok::<_, BoxError>(req))
    }));
    let mut total = [0u32; 8];
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let svc = svc.clone();
                scope.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .unwrap();
                    let mut admitted = [0u32; 8];
                    for i in 0..2000u32 {
                        if rt.block_on(svc.clone().oneshot(i)).is_ok() {
                            admitted[(i % 8) as usize] += 1;
                        }
                    }
                    admitted
                })
            })
            .collect();
        for t in threads {
            for (key, n) in t.join().unwrap().into_iter().enumerate() {
                total[key] += n;
            }
        }
    });
    assert_eq!(total, [200; 8]);
}

/// `drain` takes every cell available now, for every caller: the next call waits (or is
/// refused with) exactly one emission interval per cell.
#[tokio::test(start_paused = true)]
async fn drain_takes_every_available_cell() {
    let log = Log::default();
    // 10 per second, burst 1000 (odd sizes exercise every power of two).
    let layer = config(10, 1000).burst(1000).build().unwrap();
    let mut svc = layer.layer(recorder(&log));
    for i in 0..3 {
        svc.ready().await.unwrap().call(i).await.unwrap();
    }
    layer.limiter().drain();
    let err = svc.ready().await.unwrap().call(9).await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_millis(100));
    advance(Duration::from_millis(100)).await;
    svc.ready().await.unwrap().call(4).await.unwrap();
    assert!(svc.ready().await.unwrap().call(5).await.is_err());

    // Keyed: only the drained key stops.
    let keyed = config(10, 1000)
        .burst(7)
        .build()
        .unwrap()
        .key_by(|r: &u32| *r);
    let mut svc = keyed.layer(recorder(&log));
    svc.ready().await.unwrap().call(1).await.unwrap();
    keyed.limiter().drain(&1);
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_millis(100));
    svc.ready().await.unwrap().call(2).await.unwrap();
}
