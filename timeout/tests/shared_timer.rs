//! A timeout over another one relies on the inner one's timer when it fires first, so a
//! pending call through an overall deadline and a per-attempt timeout registers one timer.
//! The outer deadline must still hold whenever that timer is gone or wakes someone else.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_core::deadline::{armed_timer, watch_timers};
use palisade_core::{BoxError, Deadline, Elapsed};
use palisade_timeout::TimeoutLayer;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

fn layer(name: &'static str, timeout: Duration) -> TimeoutLayer {
    TimeoutLayer::builder()
        .name(name)
        .timeout(timeout)
        .build()
        .unwrap()
}

/// A service that never answers.
fn silent() -> impl Service<(), Response = (), Error = BoxError, Future: Send> + Clone {
    service_fn(|()| async {
        std::future::pending::<()>().await;
        Ok::<(), BoxError>(())
    })
}

/// `inner` behind an overall timeout of `overall`: the call fails with the overall
/// timeout's `Elapsed` at its deadline exactly. Bounded: a deadline that no timer enforces
/// fails the test instead of hanging it.
async fn expires_at_the_overall_deadline<S>(inner: S, overall: Duration)
where
    S: Service<(), Response = (), Error = BoxError>,
{
    let svc = layer("overall", overall).layer(inner);
    let start = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(60), svc.oneshot(()))
        .await
        .expect("the overall deadline holds");
    assert_eq!(elapsed_name(&result.unwrap_err()), "overall");
    assert_eq!(start.elapsed(), overall);
}

fn elapsed_name(err: &BoxError) -> String {
    err.downcast_ref::<Elapsed>()
        .unwrap_or_else(|| panic!("an Elapsed, got {err}"))
        .name()
        .as_str()
        .to_string()
}

#[tokio::test(start_paused = true)]
async fn an_overall_timeout_relays_the_attempt_timer_instead_of_arming_its_own() {
    let mut svc = layer("overall", Duration::from_secs(2))
        .layer(layer("attempt", Duration::from_millis(300)).layer(silent()));
    let start = Instant::now();
    let mut fut = pin!(svc.ready().await.unwrap().call(()));
    let mut cx = Context::from_waker(Waker::noop());
    watch_timers();
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    // What an enclosing timeout would read: the attempt's timer (300 ms), not one of the
    // overall timeout's own (2 s).
    assert_eq!(
        armed_timer(Waker::noop()),
        Some(start + Duration::from_millis(300))
    );
    // Another waker (another task) is not woken by it.
    let other = futures_util::task::noop_waker();
    assert_eq!(armed_timer(&other), None);
}

#[tokio::test(start_paused = true)]
async fn a_single_timeout_reports_its_own_timer() {
    let mut svc = layer("only", Duration::from_millis(300)).layer(silent());
    let start = Instant::now();
    let mut fut = pin!(svc.ready().await.unwrap().call(()));
    let mut cx = Context::from_waker(Waker::noop());
    watch_timers();
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    assert_eq!(
        armed_timer(Waker::noop()),
        Some(start + Duration::from_millis(300))
    );
}

#[tokio::test(start_paused = true)]
async fn the_outer_deadline_fires_through_the_relayed_timer_under_its_own_name() {
    // The attempt timeout is the longer: inside the overall deadline it fires at 1 s, and
    // the expiry is the overall one's.
    let inner = layer("attempt", Duration::from_secs(5)).layer(silent());
    expires_at_the_overall_deadline(inner, Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn the_overall_deadline_holds_after_an_inner_timer_is_dropped_in_the_same_poll() {
    // Inside the overall timeout: an attempt (with its own timer) raced against an answer
    // that is ready at once, then a wait on something that never answers. The attempt
    // reported its timer and was dropped in that same poll; the overall timeout must not
    // rely on it.
    let attempt = layer("attempt", Duration::from_millis(100));
    let inner = service_fn(move |()| {
        let mut attempt = attempt.layer(silent());
        async move {
            tokio::select! {
                biased;
                _ = attempt.call(()) => unreachable!("the attempt never answers first"),
                () = std::future::ready(()) => {}
            }
            std::future::pending::<()>().await;
            Ok::<(), BoxError>(())
        }
    });
    expires_at_the_overall_deadline(inner, Duration::from_secs(2)).await;
}

#[tokio::test(start_paused = true)]
async fn the_overall_deadline_holds_when_the_inner_timer_wakes_another_waker() {
    // Inside the overall timeout, an attempt is polled with a waker of its own (here one
    // that wakes nobody) and kept: its timer is armed but does not wake this task.
    let attempt = layer("attempt", Duration::from_millis(100));
    let inner = service_fn(move |()| {
        let mut attempt = attempt.layer(silent());
        async move {
            let mut fut = Box::pin(attempt.call(()));
            let mut polled = false;
            std::future::poll_fn(|_| {
                if !polled {
                    polled = true;
                    let mut cx = Context::from_waker(Waker::noop());
                    assert!(fut.as_mut().poll(&mut cx).is_pending());
                }
                Poll::<()>::Pending
            })
            .await;
            drop(fut);
            Ok::<(), BoxError>(())
        }
    });
    expires_at_the_overall_deadline(inner, Duration::from_secs(2)).await;
}

#[tokio::test(start_paused = true)]
async fn attempts_one_after_another_inside_one_deadline() {
    // Attempts of 300 ms in a row inside a 1 s deadline: each relays its timer while it
    // runs; the last one is cut to the time left, and the expiry is the overall one's.
    let attempt = layer("attempt", Duration::from_millis(300));
    let inner = service_fn(move |()| {
        let attempt = attempt.clone();
        async move {
            loop {
                let err = attempt.layer(silent()).oneshot(()).await.unwrap_err();
                assert_eq!(elapsed_name(&err), "attempt");
                // The deadline in effect is the overall one: stop once it has passed.
                if Deadline::current().unwrap().is_expired() {
                    return Err::<(), BoxError>(err);
                }
            }
        }
    });
    expires_at_the_overall_deadline(inner, Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn an_inner_timer_that_fires_after_the_outer_deadline_is_not_relied_on() {
    // An attempt called outside the overall timeout (its 5 s deadline fixed then), polled
    // inside it: its timer fires after the overall deadline, which needs a timer of its own.
    let mut attempt = layer("attempt", Duration::from_secs(5)).layer(silent());
    let early = attempt.ready().await.unwrap().call(());
    let early = std::sync::Mutex::new(Some(early));
    let inner = service_fn(move |()| early.lock().unwrap().take().expect("called once"));
    expires_at_the_overall_deadline(inner, Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_timer_armed_beside_a_timeout_is_not_relied_on() {
    // A combinator polls an attempt, then an overall timeout over a call that never
    // answers; when the attempt's timer wakes the task it drops the attempt without
    // polling the overall timeout. Only timers armed inside the overall timeout's own poll
    // count for it, so it has a timer of its own and fires at its deadline.
    let mut attempt = layer("attempt", Duration::from_millis(100)).layer(silent());
    let mut overall = layer("overall", Duration::from_secs(2)).layer(silent());
    let mut beside = Some(Box::pin(attempt.ready().await.unwrap().call(())));
    let mut timed = Box::pin(overall.ready().await.unwrap().call(()));
    let start = Instant::now();
    let mut polls = 0;
    let polled = std::future::poll_fn(|cx| {
        polls += 1;
        match polls {
            1 => {
                let attempt = beside.as_mut().expect("not yet dropped");
                assert!(attempt.as_mut().poll(cx).is_pending());
                assert!(timed.as_mut().poll(cx).is_pending());
                Poll::Pending
            }
            2 => {
                beside = None;
                Poll::Pending
            }
            _ => timed.as_mut().poll(cx),
        }
    });
    let result = tokio::time::timeout(Duration::from_secs(60), polled)
        .await
        .expect("the overall deadline holds");
    assert_eq!(elapsed_name(&result.unwrap_err()), "overall");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}
