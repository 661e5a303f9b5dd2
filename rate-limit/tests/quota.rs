//! The run-time rate of a GCRA limit (its handle, an upstream's quota) and the early refusal
//! of wait mode.
#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests do

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::throttle::Quota;
use palisade_core::{BoxError, Deadline, RateLimited};
use palisade_rate_limit::{LimitEvent, RateLimitConfig, RateLimitLayer};
use proptest::prelude::*;
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn echo() -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(|x: u32| std::future::ready(Ok::<_, BoxError>(x)))
}

fn retry_after(err: &BoxError) -> Duration {
    err.downcast_ref::<RateLimited>()
        .expect("a RateLimited rejection")
        .retry_after()
}

/// Calls admitted by a reject-mode service over `for_` when a caller tries every `every`.
async fn admitted_over<S>(svc: &S, for_: Duration, every: Duration) -> u32
where
    S: Service<u32, Response = u32, Error = BoxError> + Clone,
{
    let end = Instant::now() + for_;
    let mut n = 0;
    while Instant::now() < end {
        if svc.clone().oneshot(0).await.is_ok() {
            n += 1;
        }
        advance(every).await;
    }
    n
}

#[tokio::test(start_paused = true)]
async fn lowering_takes_effect_at_once_for_every_caller() {
    let layer = RateLimitLayer::builder(100, SEC).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(echo());
    let other = svc.clone();
    handle.set_rate(10, SEC).unwrap();
    // The pace's burst covers the configured burst's time (1 s): 10 cells at 10/s.
    for _ in 0..10 {
        svc.clone().oneshot(1).await.unwrap();
    }
    let err = other.clone().oneshot(1).await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_millis(100));
    // Over 10 s a busy caller gets 10/s, not 100/s.
    advance(SEC).await;
    let n = admitted_over(&svc, 10 * SEC, MS).await;
    assert!((100..=111).contains(&n), "{n} admitted in 10 s at 10/s");
    assert_eq!(handle.rate(), (10, SEC));
    assert_eq!(handle.snapshot().interval, 100 * MS);
}

#[tokio::test(start_paused = true)]
async fn raising_ramps_up_linearly_never_a_step_back_to_full_rate() {
    let layer = RateLimitLayer::builder(100, SEC)
        .burst(1)
        .ramp(10 * SEC)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(echo());
    handle.set_rate(1, SEC).unwrap();
    advance(SEC).await;
    handle.restore();
    assert!(handle.snapshot().ramping);
    assert_eq!(handle.rate(), (100, SEC));
    // The rate climbs by 10/s every second: about 1+5 in the first second... far below 100.
    let first = admitted_over(&svc, SEC, MS).await;
    assert!(first <= 12, "{first} admitted in the ramp's first second");
    let mut counts = vec![first];
    for _ in 0..9 {
        counts.push(admitted_over(&svc, SEC, MS).await);
    }
    // Each second admits more than the one before it (within one step), and the last
    // second of the ramp is close to the full rate.
    for w in counts.windows(2) {
        assert!(
            w[1] + 2 >= w[0],
            "the rate fell during the ramp: {counts:?}"
        );
    }
    assert!(counts[9] >= 85, "{counts:?}");
    assert!(!handle.snapshot().ramping, "{:?}", handle.snapshot());
    assert_eq!(handle.interval(), 10 * MS);
    let full = admitted_over(&svc, SEC, MS).await;
    assert!((99..=101).contains(&full), "{full} at the configured rate");
}

#[tokio::test(start_paused = true)]
async fn a_zero_ramp_raises_at_once_and_max_never_by_itself() {
    let at_once = RateLimitLayer::builder(100, SEC)
        .ramp(Duration::ZERO)
        .build()
        .unwrap()
        .handle();
    at_once.set_rate(1, SEC).unwrap();
    at_once.restore();
    assert_eq!(at_once.interval(), 10 * MS);
    let never = RateLimitLayer::builder(100, SEC)
        .ramp(Duration::MAX)
        .build()
        .unwrap()
        .handle();
    never.set_rate(1, SEC).unwrap();
    never.restore();
    advance(Duration::from_secs(3600)).await;
    assert!(never.interval() > 900 * MS, "{:?}", never.interval());
}

#[tokio::test(start_paused = true)]
async fn set_rate_refuses_bad_values_naming_the_field() {
    let handle = RateLimitLayer::builder(100, SEC).build().unwrap().handle();
    assert_eq!(handle.set_rate(0, SEC).unwrap_err().field(), "cells");
    assert_eq!(
        handle.set_rate(1, Duration::ZERO).unwrap_err().field(),
        "period"
    );
    assert_eq!(
        handle
            .set_rate(10, Duration::from_nanos(5))
            .unwrap_err()
            .field(),
        "period"
    );
    assert_eq!(
        handle.set_rate(1, Duration::MAX).unwrap_err().field(),
        "period"
    );
    let err = handle.set_rate(101, SEC).unwrap_err();
    assert_eq!(err.field(), "cells");
    assert!(err.to_string().contains("100 per 1s"), "{err}");
    // The configured rate itself, and anything slower, is fine.
    handle.set_rate(100, SEC).unwrap();
    handle.set_rate(1, Duration::from_secs(3600)).unwrap();
    assert_eq!(handle.interval(), Duration::from_secs(3600));
}

#[tokio::test(start_paused = true)]
async fn a_keyed_limit_shares_the_rate_across_its_keys() {
    let layer = RateLimitLayer::builder(100, SEC)
        .burst(1)
        .build()
        .unwrap()
        .key_by(|k: &u32| *k);
    let handle = layer.handle();
    let svc = layer.layer(echo());
    handle.set_rate(2, SEC).unwrap();
    svc.clone().oneshot(1).await.unwrap();
    // Another key is paced by the same rate.
    let err = svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_millis(500));
    advance(500 * MS).await;
    svc.clone().oneshot(2).await.unwrap();
    // The per-key drain is on the limiter.
    handle.restore();
    advance(20 * SEC).await;
    handle.limiter().drain(&3);
    assert!(svc.clone().oneshot(3).await.is_err());
    assert!(svc.clone().oneshot(4).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn drain_through_the_handle() {
    let layer = RateLimitLayer::builder(10, SEC).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(echo());
    handle.drain();
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn follows_an_upstream_quota_and_holds_when_nothing_remains() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let limit = RateLimitLayer::builder(100, SEC)
        .name("upstream")
        .on_event(move |e: &LimitEvent| seen.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let handle = limit.handle();
    // The upstream's answer is the quota left: (remaining, reset seconds).
    let quota = Arc::new(Mutex::new((39u64, 20u64)));
    let q = Arc::clone(&quota);
    let upstream = service_fn(move |_: u32| {
        let (r, t) = *q.lock().unwrap();
        std::future::ready(Ok::<_, BoxError>((r, t)))
    });
    let svc = limit
        .quota_hint(|res: &Result<(u64, u64), BoxError>| {
            let (r, t) = *res.as_ref().ok()?;
            Some(Quota::new(r, Duration::from_secs(t)))
        })
        .layer(upstream);
    svc.clone().oneshot(0).await.unwrap();
    assert_eq!(
        handle.interval(),
        500 * MS,
        "39 left in 20 s: one per 500 ms, the last before the reset"
    );
    assert_eq!(handle.rate(), (40, Duration::from_secs(20)));
    assert!(
        events.lock().unwrap().contains(&LimitEvent::RateSet {
            cells: 40,
            period: Duration::from_secs(20)
        }),
        "{:?}",
        events.lock().unwrap()
    );

    // Nothing remains: nobody is admitted until the reset, then one call per reset.
    *quota.lock().unwrap() = (0, 5);
    advance(SEC).await;
    svc.clone().oneshot(0).await.unwrap();
    let err = svc.clone().oneshot(0).await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_secs(5));
    advance(Duration::from_secs(5)).await;
    *quota.lock().unwrap() = (100, 1);
    svc.clone().oneshot(0).await.unwrap();
    // A quota allowing more than configured is followed up to the configured rate, by the
    // ramp.
    assert_eq!(handle.rate(), (100, SEC));
    assert!(handle.snapshot().ramping);
    advance(Duration::from_secs(10)).await;
    assert_eq!(handle.interval(), 10 * MS);

    // A zero reset says nothing.
    handle.follow(Quota::new(0, Duration::ZERO));
    assert_eq!(handle.interval(), 10 * MS);
}

#[tokio::test(start_paused = true)]
async fn hold_for_stops_everyone_then_paces_without_a_burst() {
    let layer = RateLimitLayer::builder(10, SEC).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(echo());
    handle.hold_for(Duration::from_secs(3));
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_secs(3));
    advance(Duration::from_secs(3)).await;
    svc.clone().oneshot(1).await.unwrap();
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_millis(100));
}

// ===== early refusal in wait mode =====

#[tokio::test(start_paused = true)]
async fn a_call_that_cannot_make_it_past_the_line_is_refused_at_once() {
    let layer = RateLimitLayer::builder(10, SEC)
        .burst(1)
        .max_wait(350 * MS)
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    let start = Instant::now();
    svc.clone().oneshot(0).await.unwrap();
    // Three calls wait in line: their turns come at 100, 200 and 300 ms.
    let waiters: Vec<_> = (1..=3)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    tokio::task::yield_now().await;
    // The fourth's turn would come at 400 ms, after its max wait: refused now, exactly.
    let err = svc.clone().oneshot(4).await.unwrap_err();
    assert_eq!(Instant::now(), start, "refused without waiting");
    assert_eq!(retry_after(&err), Duration::from_millis(400));
    for (i, w) in waiters.into_iter().enumerate() {
        assert_eq!(w.await.unwrap().unwrap(), i as u32 + 1);
    }
    assert_eq!(start.elapsed(), 300 * MS);
}

#[tokio::test(start_paused = true)]
async fn the_callers_deadline_refuses_early_too() {
    let layer = RateLimitLayer::builder(10, SEC)
        .burst(1)
        .max_wait(Duration::MAX)
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    svc.clone().oneshot(0).await.unwrap();
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    // Behind the first in line, a call with 150 ms left would get its turn at 200 ms.
    let deadline = Deadline::after(150 * MS);
    let start = Instant::now();
    let mut s = svc.clone();
    let ready = s.ready().await.unwrap();
    let err = deadline.scope(|| ready.call(2)).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(retry_after(&err), Duration::from_millis(200));
    assert_eq!(first.await.unwrap().unwrap(), 1);
}

/// Every call of a wait-mode run: (arrived, finished, max wait, admitted).
fn wait_run(
    cells: u32,
    burst: u32,
    arrivals: &[(u64, u32, u64)],
) -> Vec<(Instant, Instant, Duration, bool)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let layer = RateLimitLayer::builder(cells, SEC)
            .burst(burst)
            .max_wait(Duration::MAX)
            .build()
            .unwrap()
            .cost(|c: &u32| *c);
        let admitted = Arc::new(AtomicU32::new(0));
        let svc = layer.layer(service_fn(|c: u32| {
            std::future::ready(Ok::<_, BoxError>(c))
        }));
        let mut tasks = Vec::new();
        for &(gap, cost, wait_ms) in arrivals {
            // Sleep, not `advance`: the waiters' timers fire at their instants on the way.
            tokio::time::sleep(Duration::from_millis(gap)).await;
            let mut svc = svc.clone();
            let admitted = Arc::clone(&admitted);
            tasks.push(tokio::spawn(async move {
                let max_wait = Duration::from_millis(wait_ms);
                let arrived = Instant::now();
                let ready = svc.ready().await.unwrap();
                let res = Deadline::after(max_wait)
                    .scope(|| ready.call(cost.min(burst)))
                    .await;
                if res.is_ok() {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
                (arrived, Instant::now(), max_wait, res.is_ok())
            }));
            tokio::task::yield_now().await;
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// No caller waits past its deadline, whatever the line ahead of it, and a caller that
    /// cannot be admitted in time is refused at once.
    #[test]
    fn no_caller_waits_past_its_deadline(
        cells in 1u32..20,
        burst in 1u32..5,
        arrivals in prop::collection::vec((0u64..100, 1u32..4, 0u64..1500), 1..60),
    ) {
        for (arrived, finished, max_wait, admitted) in wait_run(cells, burst, &arrivals) {
            prop_assert!(
                finished - arrived <= max_wait,
                "waited {:?}, deadline {max_wait:?}", finished - arrived
            );
            // A call that will not be admitted in time is told so at once, never after
            // waiting its turn.
            prop_assert!(admitted || finished == arrived, "refused after {:?}", finished - arrived);
        }
    }
}

#[cfg(feature = "serde")]
#[test]
fn the_ramp_loads_from_data_and_round_trips() {
    let c: RateLimitConfig = serde_json::from_str(r#"{"cells": 5, "period": "1s"}"#).unwrap();
    assert_eq!(c.ramp(), palisade_rate_limit::DEFAULT_RAMP);
    for ramp in [Duration::ZERO, Duration::from_millis(1500), Duration::MAX] {
        let c = RateLimitConfig::builder(5, SEC).ramp(ramp).build().unwrap();
        let again: RateLimitConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
        let _ = RateLimitLayer::new(c);
    }
    let c: RateLimitConfig =
        serde_json::from_str(r#"{"cells": 5, "period": "1s", "ramp": "250ms"}"#).unwrap();
    assert_eq!(c.ramp(), 250 * MS);
    // A bare number has no unit: refused.
    assert!(
        serde_json::from_str::<RateLimitConfig>(r#"{"cells": 5, "period": "1s", "ramp": 3}"#)
            .is_err()
    );
}
