//! The limits composed as the recommended stack composes them: under an overall timeout,
//! behind a `Buffer`, under an adaptive limit. The caller's deadline bounds every wait, and
//! a caller's own limit never reads as the backend's failure.
#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests do

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Deadline, Elapsed, Overloaded, RateLimited, RequestDeadline};
use palisade_rate_limit::{AdaptiveLimitLayer, Aimd, ConcurrencyLimitLayer, RateLimitLayer};
use palisade_timeout::{PropagateDeadlineLayer, TimeoutLayer};
use tokio::time::{Instant, sleep};
use tower::buffer::BufferLayer;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// A job carrying its deadline across task boundaries; `ms` is how long the backend takes.
#[derive(Debug, Default)]
struct Job {
    ms: u64,
    deadline: Option<Deadline>,
}

impl Job {
    fn new(ms: u64) -> Self {
        Self { ms, deadline: None }
    }
}

impl RequestDeadline for Job {
    fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }
    fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = Some(deadline);
    }
}

fn backend() -> impl Service<Job, Response = u64, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(|job: Job| async move {
        sleep(Duration::from_millis(job.ms)).await;
        Ok::<_, BoxError>(job.ms)
    })
}

fn overall() -> TimeoutLayer {
    TimeoutLayer::builder()
        .name("overall")
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// One permit, wait mode up to 5 s.
fn bulkhead() -> ConcurrencyLimitLayer {
    ConcurrencyLimitLayer::builder(1)
        .name("bulkhead")
        .max_wait(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Issue: a concurrency limit with `max_wait` 5 s under a 1 s overall timeout waited 5 s
/// (in `poll_ready`, which no timeout covers). Now the wait is part of the call.
#[tokio::test(start_paused = true)]
async fn a_permit_wait_under_an_overall_timeout_ends_at_its_deadline() {
    let limit = bulkhead();
    let svc = ServiceBuilder::new()
        .layer(overall())
        .layer(limit.clone())
        .service(backend());
    let busy = tokio::spawn(svc.clone().oneshot(Job::new(60_000)));
    tokio::task::yield_now().await;
    assert_eq!(limit.handle().in_flight(), 1);

    let start = Instant::now();
    let err = svc.clone().oneshot(Job::new(1)).await.unwrap_err();
    let elapsed = err
        .downcast_ref::<Elapsed>()
        .expect("Elapsed, not Overloaded");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(elapsed.name().as_str(), "overall");
    assert_eq!(elapsed.timeout(), Duration::from_secs(1));
    assert_eq!(limit.handle().waiting(), 0, "the waiter left the queue");
    busy.abort();
}

/// The same with the typed error: `Error::Elapsed`, naming the overall timeout.
#[tokio::test(start_paused = true)]
async fn the_typed_error_says_elapsed_too() {
    let limit = bulkhead();
    let typed = service_fn(|job: Job| async move {
        sleep(Duration::from_millis(job.ms)).await;
        Ok::<_, palisade_core::Error<std::io::Error>>(job.ms)
    });
    let svc = ServiceBuilder::new()
        .layer(overall())
        .layer(limit)
        .service(typed);
    let busy = tokio::spawn(svc.clone().oneshot(Job::new(60_000)));
    tokio::task::yield_now().await;
    let start = Instant::now();
    match svc.clone().oneshot(Job::new(1)).await {
        Err(palisade_core::Error::Elapsed(e)) => assert_eq!(e.name().as_str(), "overall"),
        other => panic!("expected Elapsed, got {other:?}"),
    }
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    busy.abort();
}

/// Behind a `Buffer` the limit is called from the buffer's worker task, where the
/// thread-local deadline is not in effect. Carried on the request (propagation on both
/// sides), it bounds the wait there too.
#[tokio::test(start_paused = true)]
async fn the_deadline_crosses_a_buffer_on_the_request() {
    let limit = bulkhead();
    let inner = ServiceBuilder::new()
        .layer(BufferLayer::new(16))
        .layer(PropagateDeadlineLayer::new())
        .layer(limit.clone())
        .service(backend());
    let busy = tokio::spawn(inner.clone().oneshot(Job::new(60_000)));
    tokio::task::yield_now().await;
    assert_eq!(limit.handle().in_flight(), 1);

    // With the overall timeout in front, writing the deadline onto the job.
    let svc = ServiceBuilder::new()
        .layer(overall())
        .layer(PropagateDeadlineLayer::new())
        .service(inner.clone());
    let start = Instant::now();
    let err = svc.oneshot(Job::new(1)).await.unwrap_err();
    assert!(err.is::<Elapsed>(), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(1));

    // With only the deadline the job carries (no timeout on this side at all): the limit
    // behind the buffer gives up at it, with Overloaded("deadline"), not after 5 s.
    let start = Instant::now();
    let job = Job {
        ms: 1,
        deadline: Some(Deadline::after(Duration::from_millis(700))),
    };
    let err = inner.clone().oneshot(job).await.unwrap_err();
    let overloaded = err.downcast_ref::<Overloaded>().expect("Overloaded");
    assert_eq!(overloaded.limit(), "deadline");
    assert_eq!(start.elapsed(), Duration::from_millis(700));
    assert_eq!(limit.handle().waiting(), 0);
    busy.abort();
}

/// Behind a `Buffer` a wait-mode rate limit sees the carried deadline too: a call whose
/// cells would conform after it is refused at once with the exact wait.
#[tokio::test(start_paused = true)]
async fn a_rate_limit_behind_a_buffer_refuses_at_once_past_the_carried_deadline() {
    let rate = RateLimitLayer::builder(1, Duration::from_secs(10))
        .max_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(overall())
        .layer(PropagateDeadlineLayer::new())
        .layer(BufferLayer::new(16))
        .layer(PropagateDeadlineLayer::new())
        .layer(rate)
        .service(backend());
    svc.clone().oneshot(Job::new(1)).await.unwrap();
    let start = Instant::now();
    let err = svc.clone().oneshot(Job::new(1)).await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().expect("RateLimited");
    assert!(limited.retry_after() > Duration::from_secs(9));
    assert_eq!(start.elapsed(), Duration::ZERO);
}

/// A service that is not ready for `ready_after` after each call, then answers at once.
#[derive(Clone)]
struct SlowToReady {
    ready_at: Arc<std::sync::Mutex<Option<Instant>>>,
    sleep: Arc<std::sync::Mutex<Option<std::pin::Pin<Box<tokio::time::Sleep>>>>>,
    ready_after: Duration,
    calls: Arc<AtomicUsize>,
}

impl Service<u32> for SlowToReady {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let mut at = self.ready_at.lock().unwrap();
        let ready_at = *at.get_or_insert_with(|| Instant::now() + self.ready_after);
        let mut sleep = self.sleep.lock().unwrap();
        let sleep = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(ready_at)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        *self.ready_at.lock().unwrap() = None;
        *self.sleep.lock().unwrap() = None;
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(req))
    }
}

use std::future::Future as _;

/// Issue: the adaptive limit started its round-trip clock in `poll_ready`, so time spent
/// waiting for the inner service's readiness read as backend latency and shrank the limit
/// of a backend that answers at once.
#[tokio::test(start_paused = true)]
async fn the_adaptive_limit_measures_the_call_not_the_readiness_wait() {
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Aimd::new().latency_threshold(Duration::from_secs(1)))
        .initial_limit(10)
        .limits(1, 10)
        .build()
        .unwrap();
    let handle = layer.handle();
    let inner = SlowToReady {
        ready_at: Arc::default(),
        sleep: Arc::default(),
        ready_after: Duration::from_secs(3),
        calls: Arc::default(),
    };
    let mut svc = layer.layer(inner.clone());
    for i in 0..5 {
        let start = Instant::now();
        assert_eq!(svc.ready().await.unwrap().call(i).await.unwrap(), i);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
    assert_eq!(inner.calls.load(Ordering::SeqCst), 5);
    assert_eq!(handle.limit(), 10, "an instant backend never reads as slow");
}

/// Issue: a caller's own limit must not shrink its adaptive limit. A reject-mode rate limit
/// under the adaptive limit refuses a burst; those `RateLimited` results feed no sample,
/// even with the rejection-aware classifier, under which an attempt's `Elapsed` counts as
/// a failure (the default classifier, latency alone, ignores every error).
#[tokio::test(start_paused = true)]
async fn local_rejections_below_the_adaptive_limit_never_shrink_it() {
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Aimd::new())
        .initial_limit(20)
        .limits(1, 20)
        .build()
        .unwrap()
        .classifier(palisade_core::RejectionAware);
    let handle = layer.handle();
    let rate = RateLimitLayer::builder(5, Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .layer(rate)
        .service(backend());
    let calls: Vec<_> = (0..20)
        .map(|_| tokio::spawn(svc.clone().oneshot(Job::new(10))))
        .collect();
    let mut limited = 0;
    for c in calls {
        if let Err(e) = c.await.unwrap() {
            assert!(e.is::<RateLimited>());
            limited += 1;
        }
    }
    assert_eq!(limited, 15);
    assert_eq!(
        handle.limit(),
        20,
        "RateLimited is not the backend's failure"
    );

    // An attempt that times out below it is a failure: the limit shrinks.
    let attempt = TimeoutLayer::builder()
        .timeout(Duration::from_millis(5))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .layer(attempt)
        .service(backend());
    svc.oneshot(Job::new(1000)).await.unwrap_err();
    assert_eq!(handle.limit(), 16, "20 × 0.8");
}
