//! The adaptive limit's wait mode: a call finding every slot taken waits in its response
//! future for one (bounded by `max_wait`, the caller's deadline and `max_queue`), is
//! admitted as slots free or the limit grows, and leaves the queue when dropped.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use palisade_core::{BoxError, Deadline, Overloaded};
use palisade_rate_limit::{AdaptiveLimitConfig, AdaptiveLimitLayer, Aimd};
use proptest::prelude::*;
use tokio::time::{Instant, sleep};
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt, service_fn};

const WORK: Duration = Duration::from_millis(100);

/// A limit of `limit` that never moves (latency threshold far above the work).
fn waiting(limit: usize, max_wait: Duration) -> AdaptiveLimitLayer {
    AdaptiveLimitLayer::builder()
        .name("search")
        .algorithm(Aimd::new().latency_threshold(Duration::from_secs(3600)))
        .initial_limit(limit)
        .limits(limit, limit)
        .max_wait(max_wait)
        .max_queue(100)
        .build()
        .unwrap()
}

fn backend(calls: Arc<AtomicUsize>) -> BoxCloneService<u32, u32, BoxError> {
    BoxCloneService::new(service_fn(move |n: u32| {
        let calls = Arc::clone(&calls);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            sleep(WORK).await;
            Ok::<_, BoxError>(n)
        }
    }))
}

#[tokio::test(start_paused = true)]
async fn a_call_waits_for_a_slot_and_is_admitted_when_one_frees() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = waiting(1, Duration::from_secs(1));
    let handle = layer.handle();
    let svc = layer.layer(backend(Arc::clone(&calls)));
    let start = Instant::now();
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let second = tokio::spawn(svc.clone().oneshot(2));
    tokio::task::yield_now().await;
    assert_eq!(handle.waiting(), 1, "the second call waits");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "and has not reached the backend"
    );
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(
        second.await.unwrap().unwrap(),
        2,
        "admitted once the first freed its slot"
    );
    assert_eq!(start.elapsed(), WORK * 2, "one call after the other");
    assert_eq!(handle.waiting(), 0);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_wait_ends_at_max_wait_with_overloaded() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = waiting(1, Duration::from_millis(30));
    let handle = layer.handle();
    let svc = layer.layer(backend(Arc::clone(&calls)));
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let start = Instant::now();
    let err = svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(30));
    let overloaded = err
        .downcast_ref::<Overloaded>()
        .expect("refused by the limit");
    assert!(overloaded.to_string().contains("max wait"), "{overloaded}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the refused call never reached the backend"
    );
    assert_eq!(handle.waiting(), 0, "it left the queue");
    first.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_callers_deadline_ends_the_wait_first() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = waiting(1, Duration::MAX).layer(backend(Arc::clone(&calls)));
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let start = Instant::now();
    let deadline = Deadline::after(Duration::from_millis(40));
    let mut second = svc.clone();
    second.ready().await.unwrap();
    let fut = deadline.scope(|| second.call(2));
    let err = fut.await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(40));
    assert!(err.to_string().contains("deadline"), "{err}");
    first.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_at_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Aimd::new().latency_threshold(Duration::from_secs(3600)))
        .initial_limit(1)
        .limits(1, 1)
        .max_wait(Duration::from_secs(1))
        .max_queue(1)
        .build()
        .unwrap();
    let svc = layer.layer(backend(Arc::clone(&calls)));
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let second = tokio::spawn(svc.clone().oneshot(2));
    tokio::task::yield_now().await;
    let start = Instant::now();
    let err = svc.clone().oneshot(3).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "refused without waiting");
    assert!(err.to_string().contains("queue full"), "{err}");
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn dropping_a_waiting_call_leaves_the_queue_and_passes_the_slot_on() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = waiting(1, Duration::from_secs(1));
    let handle = layer.handle();
    let svc = layer.layer(backend(Arc::clone(&calls)));
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let dropped = tokio::spawn(svc.clone().oneshot(2));
    tokio::task::yield_now().await;
    let third = tokio::spawn(svc.clone().oneshot(3));
    tokio::task::yield_now().await;
    assert_eq!(handle.waiting(), 2);
    dropped.abort();
    tokio::task::yield_now().await;
    assert_eq!(handle.waiting(), 1, "the dropped call left the queue");
    first.await.unwrap().unwrap();
    assert_eq!(
        third.await.unwrap().unwrap(),
        3,
        "the next waiter got the slot"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_grown_limit_admits_waiting_calls() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Aimd::new().latency_threshold(Duration::from_secs(3600)))
        .initial_limit(1)
        .limits(1, 10)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(backend(Arc::clone(&calls)));
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let second = tokio::spawn(svc.clone().oneshot(2));
    tokio::task::yield_now().await;
    assert_eq!(handle.waiting(), 1);
    // An operator raises the limit: the waiting call is admitted at once.
    let config = handle
        .config()
        .to_builder()
        .initial_limit(2)
        .build()
        .unwrap();
    handle.update(config).unwrap();
    tokio::task::yield_now().await;
    assert_eq!(handle.waiting(), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "both calls run together");
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn reject_mode_is_the_default() {
    let config = AdaptiveLimitConfig::default();
    assert_eq!(config.max_wait(), Duration::ZERO);
    assert_eq!(config.max_queue(), None);
    let err = AdaptiveLimitConfig::builder()
        .max_queue(0)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_queue");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever the limit, the queue bound and the arrivals: every call is answered once,
    /// with its own answer or an `Overloaded`; no more calls than the limit run at once;
    /// and nothing is left waiting or holding a slot.
    #[test]
    fn every_call_is_answered_once_and_the_limit_holds(
        limit in 1usize..4,
        max_queue in 1usize..6,
        max_wait_ms in 1u64..400,
        gaps in proptest::collection::vec(0u64..60, 1..30),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let running = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            let backend = {
                let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
                service_fn(move |n: u32| {
                    let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
                    async move {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        sleep(Duration::from_millis(50)).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, BoxError>(n)
                    }
                })
            };
            let layer = AdaptiveLimitLayer::builder()
                .algorithm(Aimd::new().latency_threshold(Duration::from_secs(3600)))
                .initial_limit(limit)
                .limits(limit, limit)
                .max_wait(Duration::from_millis(max_wait_ms))
                .max_queue(max_queue)
                .build()
                .unwrap();
            let handle = layer.handle();
            let svc = layer.layer(backend);
            let mut tasks = Vec::new();
            for (i, gap) in gaps.iter().enumerate() {
                sleep(Duration::from_millis(*gap)).await;
                let n = u32::try_from(i).unwrap();
                tasks.push((n, tokio::spawn(svc.clone().oneshot(n))));
            }
            for (n, task) in tasks {
                match task.await.unwrap() {
                    Ok(answer) => assert_eq!(answer, n, "its own answer"),
                    Err(e) => assert!(e.is::<Overloaded>(), "{e}"),
                }
            }
            assert!(peak.load(Ordering::SeqCst) <= limit);
            assert_eq!(handle.waiting(), 0);
            assert_eq!(handle.in_flight(), 0);
        });
    }
}

#[tokio::test(start_paused = true)]
async fn a_max_queue_of_usize_max_is_unbounded_and_reads_back() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Aimd::new().latency_threshold(Duration::from_secs(3600)))
        .initial_limit(1)
        .limits(1, 1)
        .max_wait(Duration::MAX)
        .max_queue(usize::MAX)
        .build()
        .unwrap();
    let handle = layer.handle();
    assert_eq!(handle.config().max_queue(), Some(usize::MAX));
    let svc = layer.layer(backend(Arc::clone(&calls)));
    // Far more waiting calls than the limit (the default bound would refuse all but one).
    let tasks: Vec<_> = (0..5u32)
        .map(|n| tokio::spawn(svc.clone().oneshot(n)))
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(handle.waiting(), 4);
    for (n, task) in (0..5u32).zip(tasks) {
        assert_eq!(task.await.unwrap().unwrap(), n, "every call served in turn");
    }
    // And back to the default bound (the current limit) through an update.
    let config = AdaptiveLimitConfig::builder()
        .algorithm(Aimd::new().latency_threshold(Duration::from_secs(3600)))
        .initial_limit(1)
        .limits(1, 1)
        .max_wait(Duration::MAX)
        .build()
        .unwrap();
    handle.update(config).unwrap();
    assert_eq!(handle.config().max_queue(), None);
}
