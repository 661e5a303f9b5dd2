//! Behaviour of the timeout layer, on paused tokio time.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use palisade_core::{BoxError, Deadline, Elapsed, Error};
use palisade_timeout::{TimeoutConfig, TimeoutEvent, TimeoutLayer};
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceExt, service_fn};

const NS: Duration = Duration::from_nanos(1);

/// A service that answers after `delay`, and records when its future is dropped.
fn slow(
    delay: Duration,
    dropped: Arc<AtomicBool>,
) -> impl Service<
    u32,
    Response = u32,
    Error = BoxError,
    Future = impl Future<Output = Result<u32, BoxError>>,
> + Clone {
    service_fn(move |x: u32| {
        let guard = DropFlag(Arc::clone(&dropped));
        async move {
            tokio::time::sleep(delay).await;
            drop(guard);
            Ok(x)
        }
    })
}

struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    std::pin::Pin::new(fut).poll(&mut cx)
}

#[tokio::test(start_paused = true)]
async fn fires_at_the_duration_and_not_a_tick_before() {
    let dropped = Arc::new(AtomicBool::new(false));
    let mut svc = TimeoutLayer::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap()
        .layer(slow(Duration::from_secs(60), Arc::clone(&dropped)));
    let mut fut = Box::pin(svc.ready().await.unwrap().call(1));

    advance(Duration::from_millis(100) - NS).await;
    assert!(poll_once(&mut fut).is_pending(), "fired a tick early");
    assert!(!dropped.load(Ordering::SeqCst));

    advance(NS).await;
    let Poll::Ready(Err(err)) = poll_once(&mut fut) else {
        panic!("did not fire at the duration");
    };
    let elapsed = err.downcast_ref::<Elapsed>().expect("an Elapsed");
    assert_eq!(elapsed.timeout(), Duration::from_millis(100));
    assert_eq!(elapsed.name().as_str(), "timeout");
    // The inner future was dropped at expiry, while we still hold the response future.
    assert!(dropped.load(Ordering::SeqCst), "inner future not cancelled");
}

#[tokio::test(start_paused = true)]
async fn a_fast_call_passes_through_untouched() {
    let dropped = Arc::new(AtomicBool::new(false));
    let svc = TimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(slow(Duration::from_millis(999), Arc::clone(&dropped)));
    let start = Instant::now();
    assert_eq!(svc.oneshot(7).await.unwrap(), 7);
    assert_eq!(start.elapsed(), Duration::from_millis(999));
}

#[tokio::test(start_paused = true)]
async fn per_request_timeout_and_none() {
    let layer = TimeoutLayer::builder()
        .name("per-request")
        .build()
        .unwrap()
        .per_request(|x: &u32| (*x > 0).then(|| Duration::from_millis(u64::from(*x))));
    let flag = Arc::new(AtomicBool::new(false));
    let svc = layer.layer(slow(Duration::from_secs(5), flag));

    let start = Instant::now();
    let err = svc.clone().oneshot(250).await.unwrap_err();
    assert!(err.is::<Elapsed>());
    assert_eq!(start.elapsed(), Duration::from_millis(250));

    // None: no timeout of this layer's own, the call runs to completion.
    let start = Instant::now();
    assert_eq!(svc.oneshot(0).await.unwrap(), 0);
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn an_outer_deadline_shrinks_an_inner_timeout() {
    let inner = TimeoutLayer::builder()
        .name("attempt")
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let outer = TimeoutLayer::builder()
        .name("overall")
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let svc = outer.layer(inner.layer(slow(Duration::from_secs(60), flag)));

    let start = Instant::now();
    let err = svc.oneshot(1).await.unwrap_err();
    let elapsed = err.downcast_ref::<Elapsed>().expect("Elapsed");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    // The deadline that ran out was the outer layer's: the error names it and its 1 s,
    // although the inner layer (shortened to the time left) noticed at the same instant.
    assert_eq!(elapsed.name().as_str(), "overall");
    assert_eq!(elapsed.timeout(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn an_inner_timeout_that_is_shorter_names_itself() {
    let inner = TimeoutLayer::builder()
        .name("attempt")
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let outer = TimeoutLayer::builder()
        .name("overall")
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let svc = outer.layer(inner.layer(slow(Duration::from_secs(60), flag)));
    let err = svc.oneshot(1).await.unwrap_err();
    let elapsed = err.downcast_ref::<Elapsed>().expect("Elapsed");
    assert_eq!(elapsed.name().as_str(), "attempt");
    assert_eq!(elapsed.timeout(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn the_outer_name_holds_with_the_typed_error_too() {
    let attempt = TimeoutLayer::builder()
        .name("attempt")
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let overall = TimeoutLayer::builder()
        .name("overall")
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let backend = service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<(), Error<std::io::Error>>(())
    });
    let svc = overall.layer(attempt.layer(backend));
    match svc.oneshot(()).await {
        Err(Error::Elapsed(e)) => {
            assert_eq!(
                (e.name().as_str(), e.timeout()),
                ("overall", Duration::from_secs(2))
            );
        }
        other => panic!("expected Elapsed, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_inside_an_overall_deadline_get_only_the_time_left() {
    // A hand-rolled "retry" inside an overall timeout: each attempt has an 800 ms timeout,
    // but the second one may only use the 200 ms left of the 1 s deadline, and the third
    // none at all.
    let attempt = TimeoutLayer::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let backend = attempt.layer(slow(Duration::from_secs(60), flag));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    let retrying = service_fn(move |x: u32| {
        let backend = backend.clone();
        let seen = Arc::clone(&seen2);
        async move {
            let mut last = None;
            for _ in 0..3 {
                let start = Instant::now();
                let r = backend.clone().oneshot(x).await;
                seen.lock().unwrap().push(start.elapsed());
                last = Some(r);
            }
            last.expect("three attempts")
        }
    });
    let svc = TimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(retrying);
    let start = Instant::now();
    assert!(svc.oneshot(1).await.unwrap_err().is::<Elapsed>());
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(
        *seen.lock().unwrap(),
        // the third attempt starts at the deadline and fails at once, without waiting
        vec![
            Duration::from_millis(800),
            Duration::from_millis(200),
            Duration::ZERO
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_current_inside_call_and_poll() {
    let svc = TimeoutLayer::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .layer(service_fn(|_: ()| {
            let at_call = Deadline::current();
            async move { Ok::<_, BoxError>((at_call, Deadline::current())) }
        }));
    let start = Instant::now();
    let (at_call, at_poll) = svc.oneshot(()).await.unwrap();
    let expected = Some(Deadline::at(start + Duration::from_secs(2)));
    assert_eq!(at_call, expected);
    assert_eq!(at_poll, expected);
    assert_eq!(
        Deadline::current(),
        None,
        "the deadline leaked out of the layer"
    );
}

#[tokio::test(start_paused = true)]
async fn works_with_the_typed_error() {
    let svc = TimeoutLayer::builder()
        .timeout(Duration::from_millis(10))
        .build()
        .unwrap()
        .layer(service_fn(|_: ()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<(), Error<std::io::Error>>(())
        }));
    match svc.oneshot(()).await {
        Err(Error::Elapsed(e)) => assert_eq!(e.timeout(), Duration::from_millis(10)),
        other => panic!("expected Error::Elapsed, got {other:?}"),
    }
    let failing = TimeoutLayer::builder()
        .timeout(Duration::from_millis(10))
        .build()
        .unwrap()
        .layer(service_fn(|_: ()| async {
            Err::<(), _>(Error::Inner(std::io::Error::other("disk")))
        }));
    assert!(matches!(failing.oneshot(()).await, Err(Error::Inner(_))));
}

#[tokio::test(start_paused = true)]
async fn concurrent_calls_time_out_independently() {
    let layer = TimeoutLayer::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(ms)
    }));
    let start = Instant::now();
    let calls = [100u64, 499, 500, 501, 2000].map(|ms| tokio::spawn(svc.clone().oneshot(ms)));
    let mut results = Vec::new();
    for c in calls {
        results.push(c.await.unwrap().map_err(|e| e.is::<Elapsed>()));
    }
    // A call that would finish exactly at the deadline still completes: the inner future
    // is polled before the timer.
    assert_eq!(
        results,
        vec![Ok(100), Ok(499), Ok(500), Err(true), Err(true)]
    );
    assert_eq!(start.elapsed(), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn events_report_completion_and_expiry() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let layer = TimeoutLayer::builder()
        .timeout(Duration::from_millis(100))
        .on_event(move |e| sink.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(ms)
    }));
    svc.clone().oneshot(30).await.unwrap();
    svc.oneshot(300).await.unwrap_err();
    assert_eq!(
        *events.lock().unwrap(),
        vec![
            TimeoutEvent::Completed {
                elapsed: Duration::from_millis(30)
            },
            TimeoutEvent::Elapsed {
                timeout: Duration::from_millis(100)
            },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_handle_changes_the_timeout_for_all_clones() {
    let layer = TimeoutLayer::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let svc = layer.layer(service_fn(move |_: ()| {
        c.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, BoxError>(())
        }
    }));
    let clone = svc.clone();
    svc.handle().set_timeout(Duration::from_millis(50)).unwrap();
    let start = Instant::now();
    assert!(clone.oneshot(()).await.unwrap_err().is::<Elapsed>());
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(layer.handle().timeout(), Duration::from_millis(50));
}

#[test]
fn invalid_configs_are_refused_with_the_field_named() {
    let err = TimeoutLayer::builder()
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!((err.layer(), err.field()), ("timeout", "timeout"));
}

#[test]
fn an_empty_name_is_refused() {
    let err = TimeoutLayer::builder().name("").build().unwrap_err();
    assert_eq!((err.layer(), err.field()), ("timeout", "name"));
}

#[tokio::test(start_paused = true)]
async fn every_timeout_a_user_can_type_works_without_panic() {
    // 1 ns: fires after one nanosecond.
    let tiny = TimeoutLayer::builder().timeout(NS).build().unwrap();
    let flag = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let err = tiny
        .layer(slow(Duration::from_secs(1), Arc::clone(&flag)))
        .oneshot(1)
        .await
        .unwrap_err();
    assert!(err.is::<Elapsed>());
    // tokio's timer resolution is one millisecond
    assert!(start.elapsed() <= Duration::from_millis(1));
    // Duration::MAX: "no timeout of its own", honoured, not a panic on `Instant + MAX`.
    let forever = TimeoutLayer::builder()
        .timeout(Duration::MAX)
        .build()
        .unwrap();
    assert_eq!(forever.handle().timeout(), Duration::MAX);
    let start = Instant::now();
    let day = Duration::from_secs(86_400);
    assert_eq!(forever.layer(slow(day, flag)).oneshot(7).await.unwrap(), 7);
    assert_eq!(start.elapsed(), day);
    // Inside an outer deadline, "forever" still ends at the outer deadline.
    let outer = TimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = outer.layer(forever.layer(service_fn(|_: u32| {
        std::future::pending::<Result<u32, BoxError>>()
    })));
    let start = Instant::now();
    assert!(svc.oneshot(1).await.unwrap_err().is::<Elapsed>());
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    // The handle takes every value above zero too, and reports it back exactly.
    for d in [NS, Duration::from_secs(3600), Duration::MAX] {
        forever.handle().set_timeout(d).unwrap();
        assert_eq!(forever.handle().timeout(), d);
    }
}

#[cfg(feature = "serde")]
#[test]
fn config_loads_from_data() {
    let config: TimeoutConfig = serde_json::from_str(r#"{"name":"db","timeout":"250ms"}"#).unwrap();
    assert_eq!(config.timeout(), Duration::from_millis(250));
    assert_eq!(config.name().as_str(), "db");
    let defaults: TimeoutConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(defaults, TimeoutConfig::default());
    assert!(serde_json::from_str::<TimeoutConfig>(r#"{"timeout":"soon"}"#).is_err());
    assert!(serde_json::from_str::<TimeoutConfig>(r#"{"timout":"1s"}"#).is_err());
}

#[cfg(feature = "serde")]
#[test]
fn invalid_data_never_loads() {
    let err = |text: &str| {
        serde_json::from_str::<TimeoutConfig>(text)
            .unwrap_err()
            .to_string()
    };
    // A zero timeout is refused while loading, naming the field and the range.
    let zero = err(r#"{"timeout":"0s"}"#);
    assert!(
        zero.contains("timeout = 0ns") && zero.contains("above zero"),
        "{zero}"
    );
    // A bare number is refused: seconds or milliseconds?
    let bare = err(r#"{"timeout":0}"#);
    assert!(bare.contains("bare number"), "{bare}");
    assert!(err(r#"{"timeout":250}"#).contains("unit"));
    // An empty name is refused.
    assert!(err(r#"{"name":""}"#).contains("name"));
}

#[cfg(feature = "serde")]
#[test]
fn configs_round_trip_exactly_at_the_edges() {
    for timeout in [
        NS,
        Duration::from_micros(500),
        Duration::from_millis(1500),
        Duration::MAX,
    ] {
        let config = TimeoutConfig::builder().timeout(timeout).build().unwrap();
        let text = serde_json::to_string(&config).unwrap();
        let again: TimeoutConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(again, config, "{text}");
    }
}

#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn http_requests_carry_the_deadline_out() {
    use palisade_core::RequestDeadline;
    use palisade_timeout::PropagateDeadlineLayer;
    let client =
        service_fn(|req: http::Request<()>| async move { Ok::<_, BoxError>(req.deadline()) });
    let svc = TimeoutLayer::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap()
        .layer(PropagateDeadlineLayer::new().layer(client));
    let start = Instant::now();
    let carried = svc.oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(carried, Some(Deadline::at(start + Duration::from_secs(3))));
}
