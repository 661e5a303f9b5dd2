//! Adaptive concurrency against a simulated backend whose capacity drops and recovers.
#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests do

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use palisade_core::{BoxError, Classify, Outcome, Overloaded};
use palisade_rate_limit::{
    AdaptiveLimitHandle, AdaptiveLimitLayer, Aimd, Algorithm, Gradient, LatencyOnly, LimitEvent,
};
use tokio::time::{Instant, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

/// A backend serving `capacity` calls at its base latency of 10ms; beyond that, calls
/// share it (processor sharing): `n` calls in flight take `10ms * n / capacity`.
#[derive(Clone, Default)]
struct Backend {
    capacity: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
}

impl Backend {
    fn service(
        &self,
    ) -> impl Service<(), Response = (), Error = BoxError, Future: Send> + Clone + Send + use<>
    {
        let this = self.clone();
        service_fn(move |()| {
            let this = this.clone();
            async move {
                let n = this.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                let capacity = this.capacity.load(Ordering::SeqCst);
                let load = (n as f64 / capacity as f64).max(1.0);
                sleep(Duration::from_secs_f64(0.010 * load)).await;
                this.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, BoxError>(())
            }
        })
    }
}

/// Runs 80 closed-loop clients through the limit for three phases of capacity (20, 5, 20)
/// and returns the mean limit over the second half of each phase.
async fn track(algorithm: Algorithm) -> [f64; 3] {
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(algorithm)
        .initial_limit(10)
        .limits(1, 200)
        .build()
        .unwrap();
    let handle = layer.handle();
    let backend = Backend::default();
    backend.capacity.store(20, Ordering::SeqCst);
    let svc = layer.layer(backend.service());
    let stop = Instant::now() + Duration::from_secs(6);
    let mut clients = Vec::new();
    for _ in 0..80 {
        let svc = svc.clone();
        clients.push(tokio::spawn(async move {
            while Instant::now() < stop {
                if svc.clone().oneshot(()).await.is_err() {
                    // Rejected: back off a little before trying again.
                    sleep(Duration::from_millis(2)).await;
                }
            }
        }));
    }
    let mut means = [0.0; 3];
    for (phase, capacity) in [20, 5, 20].into_iter().enumerate() {
        backend.capacity.store(capacity, Ordering::SeqCst);
        means[phase] = mean_limit(&handle).await;
    }
    for c in clients {
        c.await.unwrap();
    }
    means
}

/// Two seconds of a phase: settle for one, then average the limit over the other.
async fn mean_limit(handle: &AdaptiveLimitHandle) -> f64 {
    sleep(Duration::from_secs(1)).await;
    let mut sum = 0;
    for _ in 0..100 {
        sleep(Duration::from_millis(10)).await;
        sum += handle.limit();
    }
    sum as f64 / 100.0
}

#[tokio::test(start_paused = true)]
async fn aimd_tracks_capacity_down_and_up() {
    let aimd = Aimd::new().latency_threshold(Duration::from_millis(15));
    let [high, low, recovered] = track(aimd.into()).await;
    // Above capacity * 1.5, calls slow past the threshold, so the limit hovers near
    // 1.5 * capacity: 30, then 7.5, then 30 again (measured: 29.6, 7.5, 29.6).
    assert!((22.0..=38.0).contains(&high), "{high}");
    assert!((4.0..=11.0).contains(&low), "{low}");
    assert!((22.0..=38.0).contains(&recovered), "{recovered}");
}

#[tokio::test(start_paused = true)]
async fn gradient_tracks_capacity_down_and_up() {
    let [high, low, recovered] = track(Gradient::new().into()).await;
    // It settles below tolerance (2) * capacity plus its queue allowance (46, then 13),
    // well above capacity (measured: 34.6, 14.3, 34.3).
    assert!((25.0..=50.0).contains(&high), "{high}");
    assert!((8.0..=20.0).contains(&low), "{low}");
    assert!((25.0..=50.0).contains(&recovered), "{recovered}");
}

#[tokio::test(start_paused = true)]
async fn failures_shrink_the_limit_and_emit_events() {
    let changes = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&changes);
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Aimd::new())
        .initial_limit(10)
        .on_event(move |e: &LimitEvent| {
            if matches!(e, LimitEvent::LimitChanged { .. }) {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .unwrap()
        // 1 is a failure; 2 says nothing about the backend.
        .classifier(|r: &Result<u32, BoxError>| match r {
            Ok(2) => Outcome::Ignore,
            Ok(1) | Err(_) => Outcome::Failure,
            Ok(_) => Outcome::Success,
        });
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|req: u32| async move {
        sleep(Duration::from_millis(1)).await;
        Ok::<_, BoxError>(req)
    }));
    svc.clone().oneshot(2).await.unwrap();
    assert_eq!(handle.limit(), 10);
    for _ in 0..3 {
        svc.clone().oneshot(1).await.unwrap();
    }
    // 10 * 0.8^3 = 5.12
    assert_eq!(handle.limit(), 5);
    assert!(changes.load(Ordering::SeqCst) >= 2);
}

#[tokio::test(start_paused = true)]
async fn slots_never_leak() {
    let layer = AdaptiveLimitLayer::builder()
        .initial_limit(1)
        .limits(1, 1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|req: u32| async move {
        match req {
            0 => Err::<u32, BoxError>("failed".into()),
            u32::MAX => panic!("backend bug"),
            ms => {
                sleep(Duration::from_millis(u64::from(ms))).await;
                Ok(ms)
            }
        }
    }));
    assert!(svc.clone().oneshot(0).await.is_err());
    assert!(
        tokio::spawn(svc.clone().oneshot(u32::MAX))
            .await
            .unwrap_err()
            .is_panic()
    );
    let slow = tokio::spawn(svc.clone().oneshot(10_000));
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 1);
    let refused = svc.clone().oneshot(5).await.unwrap_err();
    assert!(refused.is::<Overloaded>());
    slow.abort();
    let _ = slow.await;
    let ready = svc.clone().ready_oneshot().await.unwrap();
    assert_eq!(handle.in_flight(), 1);
    drop(ready);
    assert_eq!(handle.in_flight(), 0);
    assert!(svc.clone().oneshot(5).await.is_ok());
}

/// Failures of calls that all started before a decrease decrease the limit once per round
/// trip, not once each (the update is lock-free; the claim of a decrease is atomic).
#[tokio::test(start_paused = true)]
async fn concurrent_failures_decrease_once_per_round_trip() {
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Aimd::new())
        .initial_limit(10)
        .build()
        .unwrap()
        // Backend errors as decrease signals (the default, latency alone, ignores them).
        .classifier(palisade_core::RejectionAware);
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|fail: bool| async move {
        sleep(Duration::from_millis(10)).await;
        if fail {
            Err::<(), BoxError>("backend failed".into())
        } else {
            Ok(())
        }
    }));
    let calls: Vec<_> = (0..6)
        .map(|_| tokio::spawn(svc.clone().oneshot(true)))
        .collect();
    for c in calls {
        assert!(c.await.unwrap().is_err());
    }
    assert_eq!(handle.limit(), 8, "10 × 0.8 once, not 10 × 0.8⁶");
    // A call started after the decrease may decrease it again.
    assert!(svc.clone().oneshot(true).await.is_err());
    assert_eq!(handle.limit(), 6, "8 × 0.8 = 6.4");
}

/// By default ([`LatencyOnly`]) errors feed no sample: fast backend errors and timed-out
/// attempts leave the limit where it was, while slow answers past the latency threshold
/// shrink it.
#[tokio::test(start_paused = true)]
async fn by_default_latency_alone_moves_the_limit_and_a_slow_error_only_when_nothing_is_fast() {
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Aimd::new().latency_threshold(Duration::from_millis(100)))
        .initial_limit(10)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|(fail, ms): (bool, u64)| async move {
        sleep(Duration::from_millis(ms)).await;
        if fail {
            Err::<(), BoxError>("backend failed".into())
        } else {
            Ok(())
        }
    }));
    for _ in 0..5 {
        assert!(svc.clone().oneshot((true, 1)).await.is_err());
    }
    assert_eq!(handle.limit(), 10, "fast errors say nothing about load");
    // A slow error (a timed-out attempt, say) while fast answers keep coming: a few slow
    // calls (a brown-out), not a slow backend.
    for _ in 0..5 {
        let slow = tokio::spawn(svc.clone().oneshot((true, 500)));
        for _ in 0..10 {
            assert!(svc.clone().oneshot((false, 20)).await.is_ok());
        }
        assert!(slow.await.unwrap().is_err());
    }
    assert_eq!(
        handle.limit(),
        10,
        "slow errors beside fast answers say nothing"
    );
    assert!(svc.clone().oneshot((false, 500)).await.is_ok());
    assert_eq!(
        handle.limit(),
        8,
        "a slow answer is a decrease signal: 10 × 0.8"
    );
    // A slow error with no fast answer while it ran: the whole backend is slow (an
    // overload's queue, where every attempt times out and no answer gives a sample).
    sleep(Duration::from_millis(1)).await;
    assert!(svc.clone().oneshot((true, 500)).await.is_err());
    assert_eq!(handle.limit(), 6, "8 × 0.8, floored");
    // The same after a fast answer that ended before it started.
    assert!(svc.clone().oneshot((false, 1)).await.is_ok());
    sleep(Duration::from_millis(5)).await;
    assert!(svc.clone().oneshot((true, 500)).await.is_err());
    assert_eq!(handle.limit(), 5, "6.4 × 0.8, floored");
    assert_eq!(
        LatencyOnly.classify(&Err::<(), BoxError>("x".into())),
        Outcome::Ignore
    );
}

/// Inside a palisade timeout's `call`, the round trip starts at the instant that timeout
/// read the clock at (`palisade_core::deadline::now`), so a stack reads the clock once per
/// call; outside one, at the clock. Shown with a reading 150 ms old against a 100 ms
/// threshold: the same fast answer is slow from there, and fast from the clock.
#[tokio::test(start_paused = true)]
async fn the_round_trip_starts_at_the_enclosing_calls_reading() {
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Aimd::new().latency_threshold(Duration::from_millis(100)))
        .initial_limit(10)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|()| async { Ok::<_, BoxError>(()) }));
    let earlier = Instant::now();
    tokio::time::advance(Duration::from_millis(150)).await;

    svc.ready().await.unwrap();
    svc.call(()).await.unwrap();
    assert_eq!(handle.limit(), 10, "from the clock: an instant answer");

    svc.ready().await.unwrap();
    let fut = palisade_core::deadline::call_scope(None, Some(earlier), || svc.call(()));
    fut.await.unwrap();
    assert_eq!(
        handle.limit(),
        8,
        "from the enclosing reading: 150 ms, 10 × 0.8"
    );
}
