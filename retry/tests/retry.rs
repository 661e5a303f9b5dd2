//! The retry layer's behaviour, on paused time.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{CallFailed, Scripted, always_failing, ms};
use palisade_core::{
    BoxError, CircuitOpen, Deadline, Elapsed, Error, Name, Outcome, Overloaded, RateLimited,
    RetriesExhausted,
};
use palisade_retry::{
    Backoff, BudgetConfig, Jitter, NoRetryAfter, RetryBudget, RetryConfig, RetryEvent, RetryLayer,
    StopReason,
};
use proptest::prelude::*;
use tower::{Layer, Service, ServiceExt};

fn exact(base: u64) -> Backoff {
    Backoff::exponential(ms(base)).jitter(Jitter::None)
}

fn events() -> (
    Arc<Mutex<Vec<RetryEvent>>>,
    impl Fn(&RetryEvent) + Send + Sync,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    (seen, move |e: &RetryEvent| {
        sink.lock().expect("lock").push(e.clone());
    })
}

#[tokio::test(start_paused = true)]
async fn retries_with_the_exact_backoff_until_success() {
    let backend = Scripted::new([Err("a".into()), Err("b".into())], |_| {
        Ok::<_, BoxError>(7u32)
    });
    let (seen, listener) = events();
    let config = RetryLayer::builder()
        .max_attempts(3)
        .backoff(exact(100))
        .on_event(listener)
        .build()
        .unwrap();
    let svc = config.layer(backend.clone());
    assert_eq!(svc.oneshot(()).await.unwrap(), 7);
    assert_eq!(backend.call_times(), [0, 100, 300]);
    assert_eq!(
        *seen.lock().expect("lock"),
        [
            RetryEvent::Retrying {
                attempt: 1,
                delay: ms(100)
            },
            RetryEvent::Retrying {
                attempt: 2,
                delay: ms(200)
            },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts_with_the_last_error_unchanged() {
    let backend = always_failing();
    let (seen, listener) = events();
    let config = RetryLayer::builder()
        .max_attempts(4)
        .backoff(exact(10))
        .no_budget()
        .on_event(listener)
        .build()
        .unwrap();
    let err = config.layer(backend.clone()).oneshot(()).await.unwrap_err();
    assert_eq!(err.downcast_ref::<CallFailed>(), Some(&CallFailed(4)));
    assert_eq!(backend.count(), 4);
    let last = seen.lock().expect("lock").last().cloned();
    assert_eq!(
        last,
        Some(RetryEvent::Exhausted {
            attempts: 4,
            reason: StopReason::MaxAttempts
        })
    );
}

#[tokio::test(start_paused = true)]
async fn one_attempt_means_no_retry() {
    let backend = always_failing();
    let config = RetryConfig::builder().max_attempts(1).build().unwrap();
    let svc = RetryLayer::new(config).layer(backend.clone());
    assert!(svc.oneshot(()).await.is_err());
    assert_eq!(backend.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_classifier_retries_503_and_not_400() {
    let by_status = |res: &Result<u16, BoxError>| match res {
        Ok(s) if *s >= 500 => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    };
    let layer = RetryLayer::builder()
        .backoff(exact(10))
        .classifier(by_status)
        .retry_after(NoRetryAfter)
        // this test is about classification: the default budget's floor (3 retries a
        // second) would refuse the third request's second retry
        .no_budget()
        .build()
        .unwrap();

    let unavailable = Scripted::new([Ok(503), Ok(503)], |_| Ok::<u16, BoxError>(200));
    let status = layer.layer(unavailable.clone()).oneshot(()).await.unwrap();
    assert_eq!((status, unavailable.count()), (200, 3));

    let bad_request = Scripted::new([Ok(400)], |_| Ok::<u16, BoxError>(200));
    let status = layer.layer(bad_request.clone()).oneshot(()).await.unwrap();
    assert_eq!((status, bad_request.count()), (400, 1));

    // Out of attempts, a 503 is returned as the response it is.
    let down = Scripted::new([], |_| Ok::<u16, BoxError>(503));
    let status = layer.layer(down.clone()).oneshot(()).await.unwrap();
    assert_eq!((status, down.count()), (503, 3));
}

#[tokio::test(start_paused = true)]
async fn rate_limit_retry_after_is_honoured_never_cut_short() {
    let limited = |after: Duration| -> Result<u32, Error<CallFailed>> {
        Err(RateLimited::new(Name::new("api"), after).into())
    };
    let config = RetryConfig::builder()
        .max_attempts(2)
        .backoff(exact(100).max_delay(ms(5_000)))
        .build()
        .unwrap();
    let layer = RetryLayer::new(config);

    let backend = Scripted::new([limited(ms(2_000))], |_| Ok(1));
    assert_eq!(layer.layer(backend.clone()).oneshot(()).await.unwrap(), 1);
    assert_eq!(backend.call_times(), [0, 2_000]);

    // A hint above the cap is not cut to the cap (the limiter would refuse again): the
    // rate limit is returned at once.
    let backend = Scripted::new([limited(ms(60_000))], |_| Ok(1));
    let err = layer.layer(backend.clone()).oneshot(()).await.unwrap_err();
    assert!(matches!(err, Error::RateLimited(_)));
    assert_eq!(backend.call_times(), [0]);
}

#[tokio::test(start_paused = true)]
async fn http_style_retry_after_from_the_response() {
    // (status, Retry-After seconds)
    let hint = |res: &Result<(u16, u64), BoxError>| match res {
        Ok((503, secs)) => Some(Duration::from_secs(*secs)),
        _ => None,
    };
    let classify = |res: &Result<(u16, u64), BoxError>| match res {
        Ok((503, _)) | Err(_) => Outcome::Failure,
        Ok(_) => Outcome::Success,
    };
    let backend = Scripted::new([Ok((503, 3))], |_| Ok::<_, BoxError>((200, 0)));
    let config = RetryLayer::builder()
        .backoff(exact(10))
        .classifier(classify)
        .retry_after(hint)
        .build()
        .unwrap();
    let svc = config.layer(backend.clone());
    assert_eq!(svc.oneshot(()).await.unwrap(), (200, 0));
    assert_eq!(backend.call_times(), [0, 3_000]);
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_is_not_retried_a_timeout_is() {
    let layer = RetryLayer::builder().backoff(exact(10)).build().unwrap();

    let open = Scripted::new([], |_| {
        Err::<u32, Error<CallFailed>>(CircuitOpen::new(Name::new("db"), None).into())
    });
    let err = layer.layer(open.clone()).oneshot(()).await.unwrap_err();
    assert!(matches!(err, Error::CircuitOpen(_)));
    assert_eq!(open.count(), 1);

    let slow: Scripted<u32, BoxError> =
        Scripted::new([Err(Elapsed::new(Name::new("t"), ms(5)).into())], |_| Ok(3));
    assert_eq!(layer.layer(slow.clone()).oneshot(()).await.unwrap(), 3);
    assert_eq!(slow.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn no_retry_starts_past_the_callers_deadline() {
    let backend = always_failing();
    let (seen, listener) = events();
    let config = RetryLayer::builder()
        .max_attempts(10)
        .backoff(Backoff::constant(ms(100)).jitter(Jitter::None))
        .on_event(listener)
        .build()
        .unwrap();
    let mut svc = config.layer(backend.clone());
    ServiceExt::<()>::ready(&mut svc).await.unwrap();
    // An outer timeout sets the deadline around `call`.
    let future = Deadline::after(ms(250)).scope(|| svc.call(()));
    assert!(future.await.is_err());
    assert_eq!(backend.call_times(), [0, 100, 200]);
    let last = seen.lock().expect("lock").last().cloned();
    assert_eq!(
        last,
        Some(RetryEvent::Exhausted {
            attempts: 3,
            reason: StopReason::Deadline
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_set_around_polls_cuts_a_pending_wait() {
    let backend = always_failing();
    let config = RetryConfig::builder()
        .max_attempts(10)
        .backoff(Backoff::constant(ms(100)).jitter(Jitter::None))
        .build()
        .unwrap();
    let mut svc = RetryLayer::new(config).layer(backend.clone());
    ServiceExt::<()>::ready(&mut svc).await.unwrap();
    let mut future = Box::pin(svc.call(()));
    let start = tokio::time::Instant::now();
    let deadline = Deadline::after(ms(150));
    // The way an outer timeout polls its inner future: inside the deadline's scope.
    let result = std::future::poll_fn(|cx| deadline.scope(|| future.as_mut().poll(cx))).await;
    assert!(result.is_err());
    assert_eq!(backend.call_times(), [0, 100]);
    assert!(start.elapsed() <= ms(150));
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_stops_retrying() {
    let backend = always_failing();
    let config = RetryConfig::builder()
        .max_attempts(10)
        .max_elapsed(ms(250))
        .backoff(Backoff::constant(ms(100)).jitter(Jitter::None))
        .build()
        .unwrap();
    let svc = RetryLayer::new(config).layer(backend.clone());
    assert!(svc.oneshot(()).await.is_err());
    assert_eq!(backend.call_times(), [0, 100, 200]);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_returns_the_failure_at_once() {
    let backend = always_failing();
    let (seen, listener) = events();
    let config = RetryLayer::builder()
        .budget_config(BudgetConfig::Tps {
            ttl: Duration::from_secs(1),
            min_per_sec: 0,
            ratio: 0.0,
        })
        .on_event(listener)
        .build()
        .unwrap();
    let svc = config.layer(backend.clone());
    let start = tokio::time::Instant::now();
    assert!(svc.oneshot(()).await.is_err());
    assert_eq!(backend.count(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(
        *seen.lock().expect("lock"),
        [RetryEvent::BudgetExhausted { attempts: 1 }]
    );
}

#[derive(Debug, PartialEq)]
struct NotClone(u32);

#[tokio::test(start_paused = true)]
async fn requests_that_are_not_clone_use_a_hook() {
    let backend = Scripted::new([Err("a".into())], |_| Ok::<_, BoxError>(1u32));
    let config = RetryLayer::builder()
        .backoff(exact(10))
        .clone_request(|r: &NotClone| Some(NotClone(r.0)))
        .build()
        .unwrap();
    let svc = config.layer(backend.clone());
    assert_eq!(svc.oneshot(NotClone(1)).await.unwrap(), 1);
    assert_eq!(backend.count(), 2);

    // A hook that cannot copy: the result is returned, with an event saying why.
    let (seen, listener) = events();
    let config = RetryLayer::builder()
        .clone_request(|_: &NotClone| None)
        .on_event(listener)
        .build()
        .unwrap();
    let backend = always_failing();
    let svc = config.layer(backend.clone());
    assert!(svc.oneshot(NotClone(1)).await.is_err());
    assert_eq!(backend.count(), 1);
    assert_eq!(
        *seen.lock().expect("lock"),
        [RetryEvent::Exhausted {
            attempts: 1,
            reason: StopReason::NotCloneable
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn a_seed_replays_the_same_jittered_delays() {
    async fn run(seed: u64) -> Vec<u64> {
        let backend = always_failing();
        let config = RetryConfig::builder()
            .max_attempts(6)
            .no_budget()
            .seed(seed)
            .backoff(Backoff::exponential(ms(100)).jitter(Jitter::Full))
            .build()
            .unwrap();
        let svc = RetryLayer::new(config).layer(backend.clone());
        let _ = svc.oneshot(()).await;
        backend.call_times()
    }
    assert_eq!(run(5).await, run(5).await);
    assert_ne!(run(5).await, run(6).await);
}

#[tokio::test(start_paused = true)]
async fn works_with_both_flat_error_types() {
    let boxed = Scripted::new([Err::<u32, BoxError>("x".into())], |_| Ok(1));
    let typed = Scripted::new(
        [Err::<u32, Error<std::io::Error>>(Error::inner(
            std::io::Error::other("x"),
        ))],
        |_| Ok(1),
    );
    let layer = RetryLayer::builder().backoff(exact(1)).build().unwrap();
    assert_eq!(layer.layer(boxed).oneshot(()).await.unwrap(), 1);
    assert_eq!(layer.layer(typed).oneshot(()).await.unwrap(), 1);
}

#[cfg(feature = "serde")]
#[test]
fn configs_load_from_data_and_are_validated() {
    let config: RetryConfig = serde_json::from_str(
        r#"{ "max_attempts": 2, "backoff": { "kind": "constant", "delay": "250ms", "jitter": "none" },
             "budget": { "kind": "token_bucket", "max_tokens": 10, "token_ratio": 0.1 } }"#,
    )
    .unwrap();
    assert_eq!(config.max_attempts(), 2);
    assert_eq!(config.backoff().get_jitter(), Jitter::None);
    assert!(matches!(config.budget(), BudgetConfig::TokenBucket { .. }));

    let defaults: RetryConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(defaults.max_attempts(), 3);

    let err = serde_json::from_str::<RetryConfig>(r#"{ "max_attempts": 0 }"#).unwrap_err();
    assert!(err.to_string().contains("max_attempts"));
    let err =
        serde_json::from_str::<RetryConfig>(r#"{ "budget": { "kind": "none" }, "tries": 3 }"#);
    assert!(err.is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Against an always-failing backend: never more attempts than allowed, no attempt at or
    /// past the deadline, and the caller is answered by the deadline.
    #[test]
    fn attempts_and_time_stay_within_limits(
        max_attempts in 1u32..8,
        base_ms in 1u64..500,
        jitter in prop_oneof![Just(Jitter::None), Just(Jitter::Full), Just(Jitter::Equal), Just(Jitter::Decorrelated)],
        deadline_ms in 1u64..3_000,
        seed: u64,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (times, elapsed) = rt.block_on(async {
            let backend = always_failing();
            let config = RetryConfig::builder()
                .max_attempts(max_attempts)
                .no_budget()
                .seed(seed)
                .backoff(Backoff::exponential(ms(base_ms)).jitter(jitter))
                .build()
                .unwrap();
            let mut svc = RetryLayer::new(config).layer(backend.clone());
            ServiceExt::<()>::ready(&mut svc).await.unwrap();
            let start = tokio::time::Instant::now();
            let future = Deadline::after(ms(deadline_ms)).scope(|| svc.call(()));
            let _ = future.await;
            (backend.call_times(), start.elapsed())
        });
        prop_assert!(times.len() as u32 <= max_attempts);
        prop_assert!(times.iter().all(|t| *t < deadline_ms), "{:?}", times);
        prop_assert!(elapsed < ms(deadline_ms));
    }
}

#[tokio::test(start_paused = true)]
async fn a_wait_is_abandoned_when_a_poll_brings_an_earlier_deadline() {
    let backend = always_failing();
    let (seen, listener) = events();
    let config = RetryLayer::builder()
        .backoff(Backoff::constant(ms(100)).jitter(Jitter::None))
        .on_event(listener)
        .build()
        .unwrap();
    let mut svc = config.layer(backend.clone());
    ServiceExt::<()>::ready(&mut svc).await.unwrap();
    let mut future = Box::pin(svc.call(()));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // No deadline yet: the first attempt fails and a retry is scheduled for t = 100ms.
    assert!(future.as_mut().poll(&mut cx).is_pending());
    tokio::time::advance(ms(10)).await;
    // Polled again under a deadline before the wake-up: give up now with the failure.
    let deadline = Deadline::after(ms(40));
    let polled = deadline.scope(|| future.as_mut().poll(&mut cx));
    assert!(matches!(polled, std::task::Poll::Ready(Err(_))));
    assert_eq!(backend.count(), 1);
    let last = seen.lock().expect("lock").last().cloned();
    assert_eq!(
        last,
        Some(RetryEvent::Exhausted {
            attempts: 1,
            reason: StopReason::Deadline
        })
    );
}

type Typed = Result<u32, Error<CallFailed>>;

fn rejected(err: impl Into<Error<CallFailed>>) -> Typed {
    Err(err.into())
}

#[tokio::test(start_paused = true)]
async fn local_rejections_are_retried_only_when_they_mean_later() {
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .backoff(exact(100))
        .build()
        .unwrap();
    let api = || Name::new("api");

    // A rate limit: retried, not before its retry_after.
    let limited = Scripted::new([rejected(RateLimited::new(api(), ms(700)))], |_| Ok(1));
    assert_eq!(layer.layer(limited.clone()).oneshot(()).await.unwrap(), 1);
    assert_eq!(limited.call_times(), [0, 700]);

    // An overload: retried after the backoff.
    let overloaded = Scripted::new([rejected(Overloaded::new(api(), "max in-flight"))], |_| {
        Ok(1)
    });
    assert_eq!(
        layer.layer(overloaded.clone()).oneshot(()).await.unwrap(),
        1
    );
    assert_eq!(overloaded.call_times(), [0, 100]);

    // An open circuit: retried when its next probe may go, not before the backoff.
    for (open_for, at) in [(50, 100), (250, 250)] {
        let open = Scripted::new(
            [rejected(CircuitOpen::new(api(), Some(ms(open_for))))],
            |_| Ok(1),
        );
        assert_eq!(layer.layer(open.clone()).oneshot(()).await.unwrap(), 1);
        assert_eq!(open.call_times(), [0, at]);
    }

    // "No" is returned at once: a request the limiter can never admit, a breaker forced
    // open, an inner retry that gave up.
    let never: [fn() -> Typed; 3] = [
        || {
            rejected(RateLimited::insufficient_capacity(
                Name::new("api"),
                1_000_000,
                1_000,
            ))
        },
        || rejected(CircuitOpen::new(Name::new("db"), None)),
        || rejected(RetriesExhausted::new(Name::new("inner"), 3)),
    ];
    for answer in never {
        let backend = Scripted::new([], move |_| answer());
        let err = layer.layer(backend.clone()).oneshot(()).await.unwrap_err();
        assert!(err.is_rejection());
        assert_eq!(backend.count(), 1, "{err}");
    }
}

#[tokio::test(start_paused = true)]
async fn refusals_that_never_sent_the_call_are_retried_free_of_the_budget() {
    // An empty budget: no retry of a backend failure is allowed.
    let budget = RetryBudget::token_bucket(10, 0.1).unwrap();
    for _ in 0..5 {
        budget.record(Outcome::Failure);
    }
    assert!(!budget.withdraw(), "half the tokens left: no retry");
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .backoff(exact(10))
        .share_budget(budget.clone())
        .build()
        .unwrap();
    let api = || Name::new("api");
    // An open circuit and a full limit never sent the call: retried all the same.
    let refused = Scripted::new(
        [
            rejected(CircuitOpen::new(api(), Some(ms(5)))),
            rejected(Overloaded::new(api(), "max in-flight")),
        ],
        |_| Ok(1),
    );
    assert_eq!(layer.layer(refused.clone()).oneshot(()).await.unwrap(), 1);
    assert_eq!(refused.count(), 3);
    // A backend failure and a rate limit (possibly the upstream's) are paid: not retried.
    for answer in [
        rejected(Error::inner(CallFailed(1))),
        rejected(RateLimited::new(api(), ms(5))),
    ] {
        let backend = Scripted::new([answer], |_| Ok(1));
        assert!(layer.layer(backend.clone()).oneshot(()).await.is_err());
        assert_eq!(backend.count(), 1, "over budget: not retried");
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_bucket_does_not_count_local_rejections() {
    // Each request is rate limited once, then served. The limiter's refusals are not the
    // backend's failures: the bucket must stay full (it drained to nothing when they counted).
    let budget = RetryBudget::token_bucket(10, 0.1).unwrap();
    let layer = RetryLayer::builder()
        .backoff(exact(1))
        .share_budget(budget.clone())
        .build()
        .unwrap();
    for _ in 0..20 {
        let backend = Scripted::new(
            [rejected(RateLimited::new(Name::new("api"), ms(5)))],
            |_| Ok(1),
        );
        assert_eq!(layer.layer(backend.clone()).oneshot(()).await.unwrap(), 1);
        assert_eq!(backend.count(), 2);
    }
    assert_eq!(budget.available(), 5.0);
}

#[test]
fn an_empty_name_is_refused() {
    let err = RetryConfig::builder().name("").build().unwrap_err();
    assert_eq!((err.layer(), err.field()), ("retry", "name"));
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_of_forever_is_no_limit_and_never_panics() {
    let backend = always_failing();
    let config = RetryConfig::builder()
        .max_attempts(4)
        .max_elapsed(Duration::MAX)
        .backoff(exact(10))
        .no_budget()
        .build()
        .unwrap();
    let svc = RetryLayer::new(config).layer(backend.clone());
    assert!(svc.oneshot(()).await.is_err());
    assert_eq!(backend.call_times(), [0, 10, 30, 70]);
}

#[tokio::test(start_paused = true)]
async fn a_backoff_of_forever_waits_forever_or_up_to_the_deadline() {
    let forever = Backoff::constant(Duration::MAX)
        .max_delay(Duration::MAX)
        .jitter(Jitter::None);
    let (seen, listener) = events();
    let config = RetryLayer::builder()
        .backoff(forever)
        .no_budget()
        .on_event(listener)
        .build()
        .unwrap();
    let layer = config;

    // Under a deadline: no retry can start before it, so the failure comes back at once.
    let backend = always_failing();
    let mut svc = layer.layer(backend.clone());
    ServiceExt::<()>::ready(&mut svc).await.unwrap();
    let call = Deadline::after(Duration::from_secs(1)).scope(|| svc.call(()));
    assert!(call.await.is_err());
    assert_eq!(backend.count(), 1);
    assert_eq!(
        seen.lock().expect("lock").last().cloned(),
        Some(RetryEvent::Exhausted {
            attempts: 1,
            reason: StopReason::Deadline
        })
    );

    // Without one, "forever" is honoured: a day later the retry is still waiting.
    let backend = always_failing();
    let task = tokio::spawn(layer.layer(backend.clone()).oneshot(()));
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    assert!(!task.is_finished());
    assert_eq!(backend.count(), 1);
    task.abort();

    // Also under a max_elapsed of forever, which is no limit.
    let config = RetryConfig::builder()
        .backoff(
            Backoff::constant(Duration::MAX)
                .max_delay(Duration::MAX)
                .jitter(Jitter::None),
        )
        .max_elapsed(Duration::MAX)
        .no_budget()
        .build()
        .unwrap();
    let backend = Scripted::new([], |_| Err::<u32, BoxError>("slow failure".into()));
    let slow = tower::ServiceBuilder::new()
        .layer(RetryLayer::new(config))
        .map_future(|f| async move {
            tokio::time::sleep(ms(5)).await;
            f.await
        })
        .service(backend.clone());
    let task = tokio::spawn(slow.oneshot(()));
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    assert!(
        !task.is_finished(),
        "waiting forever, not stopped by max_elapsed"
    );
    assert_eq!(backend.count(), 1);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn until_deadline_retries_past_any_attempt_count_until_max_elapsed() {
    let backend = always_failing();
    let (seen, listener) = events();
    let config = RetryLayer::builder()
        .until_deadline()
        .max_elapsed(Duration::from_secs(5))
        .backoff(Backoff::constant(ms(10)).jitter(Jitter::None))
        .no_budget()
        .on_event(listener)
        .build()
        .unwrap();
    assert!(config.config().until_deadline());
    let svc = config.layer(backend.clone());
    let start = tokio::time::Instant::now();
    assert!(svc.oneshot(()).await.is_err());
    // One attempt every 10 ms for 5 s: far more than the 100-attempt cap of the counted mode,
    // and none starting past max_elapsed.
    let times = backend.call_times();
    assert!(times.len() > 400, "{} attempts", times.len());
    assert!(times.iter().all(|t| *t <= 5_000));
    assert!(start.elapsed() <= Duration::from_secs(5));
    let last = seen.lock().expect("lock").last().cloned();
    assert!(matches!(
        last,
        Some(RetryEvent::Exhausted {
            reason: StopReason::MaxElapsed,
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn until_deadline_honours_every_retry_after_up_to_the_callers_deadline() {
    // Rate limited 5 times (each "retry after 2 s"), then served: 5 retries, each waiting the
    // full hint, all inside the caller's 30 s deadline.
    let limited = || rejected(RateLimited::new(Name::new("api"), Duration::from_secs(2)));
    let backend = Scripted::new((0..5).map(|_| limited()), |_| Ok(9));
    let config = RetryConfig::builder()
        .until_deadline()
        .backoff(exact(100))
        .build()
        .unwrap();
    let mut svc = RetryLayer::new(config).layer(backend.clone());
    ServiceExt::<()>::ready(&mut svc).await.unwrap();
    let call = Deadline::after(Duration::from_secs(30)).scope(|| svc.call(()));
    assert_eq!(call.await.unwrap(), 9);
    let times = backend.call_times();
    assert_eq!(times.len(), 6);
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= 2_000, "{times:?}");
    }

    // A hint longer than the backoff's max_delay (10 s by default) is waited for in full
    // when retrying is bounded by time: the answer comes at 30 s, inside the 60 s deadline.
    let backend = Scripted::new(
        [rejected(RateLimited::new(
            Name::new("api"),
            Duration::from_secs(30),
        ))],
        |_| Ok(5),
    );
    let config = RetryConfig::builder().until_deadline().build().unwrap();
    let mut svc = RetryLayer::new(config).layer(backend.clone());
    ServiceExt::<()>::ready(&mut svc).await.unwrap();
    let call = Deadline::after(Duration::from_secs(60)).scope(|| svc.call(()));
    assert_eq!(call.await.unwrap(), 5);
    assert_eq!(backend.call_times(), [0, 30_000]);

    // Always limited: it stops before the deadline with the limiter's answer.
    let backend = Scripted::new([], move |_| limited());
    let config = RetryConfig::builder().until_deadline().build().unwrap();
    let mut svc = RetryLayer::new(config).layer(backend.clone());
    ServiceExt::<()>::ready(&mut svc).await.unwrap();
    let start = tokio::time::Instant::now();
    let call = Deadline::after(Duration::from_secs(7)).scope(|| svc.call(()));
    assert!(matches!(call.await, Err(Error::RateLimited(_))));
    assert!(start.elapsed() < Duration::from_secs(7));
    assert_eq!(backend.count(), 4); // at 0, 2, 4 and 6 s
}

#[cfg(feature = "serde")]
#[test]
fn configs_round_trip_exactly_and_deserializing_validates() {
    let config = RetryConfig::builder()
        .name("orders")
        .max_attempts(5)
        .max_elapsed(Duration::from_micros(2_500))
        .backoff(
            Backoff::exponential(Duration::from_micros(500))
                .factor(1.5)
                .max_delay(Duration::from_millis(1_500))
                .jitter(Jitter::Equal),
        )
        .budget_config(BudgetConfig::Tps {
            ttl: Duration::from_millis(1_500),
            min_per_sec: 3,
            ratio: 0.25,
        })
        .seed(7)
        .build()
        .unwrap();
    let json = serde_json::to_string(&config).unwrap();
    let back: RetryConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
    assert_eq!(back.max_elapsed(), Some(Duration::from_micros(2_500)));
    assert_eq!(back.backoff().get_max_delay(), Duration::from_millis(1_500));
    assert_eq!(back.budget(), config.budget());

    let timed = RetryConfig::builder()
        .until_deadline()
        .no_budget()
        .build()
        .unwrap();
    let json = serde_json::to_string(&timed).unwrap();
    let back: RetryConfig = serde_json::from_str(&json).unwrap();
    assert!(back.until_deadline() && *back.budget() == BudgetConfig::None);

    for (bad, field) in [
        (r#"{ "name": "" }"#, "name"),
        (r#"{ "max_elapsed": 250 }"#, "unit"),
        (r#"{ "max_elapsed": "0ms" }"#, "max_elapsed"),
        (
            r#"{ "until_deadline": true, "max_attempts": 3 }"#,
            "max_attempts",
        ),
        (
            r#"{ "backoff": { "kind": "exponential", "base": "1s", "factor": 1000.0 } }"#,
            "backoff.factor",
        ),
        (
            r#"{ "budget": { "kind": "tps", "ttl": "10s", "min_per_sec": 1, "ratio": 5.0 } }"#,
            "budget.ratio",
        ),
    ] {
        let err = serde_json::from_str::<RetryConfig>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{bad}: {err}");
    }
    // A budget alone is validated too.
    let err = serde_json::from_str::<BudgetConfig>(
        r#"{ "kind": "token_bucket", "max_tokens": 0, "token_ratio": 0.1 }"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("budget.max_tokens"), "{err}");
}

/// The handle changes a running layer: services made before the update take the new
/// settings at their next call; a wrong name or an invalid value changes nothing.
#[tokio::test(start_paused = true)]
async fn the_handle_updates_a_running_layer() {
    let backend = always_failing();
    let layer = RetryLayer::builder()
        .name("db")
        .max_attempts(2)
        .backoff(exact(10))
        .no_budget()
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend.clone());
    assert!(
        ServiceExt::<()>::ready(&mut svc)
            .await
            .unwrap()
            .call(())
            .await
            .is_err()
    );
    assert_eq!(backend.count(), 2);

    let more = handle
        .config()
        .to_builder()
        .max_attempts(4)
        .build()
        .unwrap();
    handle.update(more).unwrap();
    assert_eq!(handle.config().max_attempts(), 4);
    assert!(
        ServiceExt::<()>::ready(&mut svc)
            .await
            .unwrap()
            .call(())
            .await
            .is_err()
    );
    assert_eq!(
        backend.count(),
        2 + 4,
        "the service made before the update took it"
    );

    let renamed = RetryConfig::builder().name("other").build().unwrap();
    assert_eq!(handle.update(renamed).unwrap_err().field(), "name");
    assert_eq!(handle.config().max_attempts(), 4);
    let snapshot = handle.snapshot();
    assert_eq!(snapshot.config.max_attempts(), 4);
    assert_eq!(snapshot.budget_available, None);
}

#[tokio::test(start_paused = true)]
async fn the_backoff_timer_is_reported_to_enclosing_timeouts() {
    use palisade_core::deadline::{armed_timer, watch_timers};
    use std::future::Future;
    use std::task::{Context, Waker};

    // While a request waits to retry, its backoff timer wakes the task before any
    // enclosing deadline: an enclosing timeout relies on it instead of arming its own, and
    // a watcher sees nothing once the request is gone.
    let backend = Scripted::new([Err("a".into())], |_| Ok::<_, BoxError>(7u32));
    let mut svc = RetryLayer::builder()
        .max_attempts(3)
        .backoff(exact(100))
        .build()
        .unwrap()
        .layer(backend);
    let start = tokio::time::Instant::now();
    let mut fut = Box::pin(ServiceExt::<()>::ready(&mut svc).await.unwrap().call(()));
    let mut cx = Context::from_waker(Waker::noop());
    watch_timers();
    assert!(fut.as_mut().poll(&mut cx).is_pending(), "waiting to retry");
    assert_eq!(armed_timer(Waker::noop()), Some(start + ms(100)));
    drop(fut);
    assert_eq!(armed_timer(Waker::noop()), None, "taken back when dropped");
}
