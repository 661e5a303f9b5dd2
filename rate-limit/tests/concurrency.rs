//! The concurrency limit (bulkhead): reject and wait modes, FIFO order, no permit leaks.
#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests do

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{BoxError, Overloaded};
use palisade_rate_limit::{ConcurrencyLimitLayer, LimitEvent};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

/// A backend whose calls take `req` milliseconds; `u32::MAX` panics, `0` fails.
fn backend() -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(|req: u32| async move {
        match req {
            0 => Err::<u32, BoxError>("backend failed".into()),
            u32::MAX => panic!("backend bug"),
            ms => {
                sleep(Duration::from_millis(u64::from(ms))).await;
                Ok(ms)
            }
        }
    })
}

fn limit(max: usize, max_wait_ms: u64, queue: usize) -> ConcurrencyLimitLayer {
    ConcurrencyLimitLayer::builder(max)
        .max_wait(Duration::from_millis(max_wait_ms))
        .max_queue(queue)
        .build()
        .unwrap()
}

fn overloaded(r: Result<u32, BoxError>) -> &'static str {
    r.unwrap_err()
        .downcast_ref::<Overloaded>()
        .expect("Overloaded")
        .limit()
}

#[tokio::test(start_paused = true)]
async fn reject_mode_refuses_over_the_limit_and_frees_on_completion() {
    let layer = limit(2, 0, 0);
    let svc = layer.layer(backend());
    let a = tokio::spawn(svc.clone().oneshot(100));
    let b = tokio::spawn(svc.clone().oneshot(100));
    tokio::task::yield_now().await;
    assert_eq!(layer.handle().in_flight(), 2);
    assert_eq!(overloaded(svc.clone().oneshot(100).await), "max in-flight");
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(layer.handle().in_flight(), 0);
    assert!(svc.clone().oneshot(1).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn wait_mode_admits_in_order_and_bounds_queue_and_wait() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let layer = ConcurrencyLimitLayer::builder(1)
        .max_wait(Duration::from_millis(250))
        .max_queue(3)
        .on_event(move |e: &LimitEvent| seen.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&order);
    let svc = layer.layer(service_fn(move |req: u32| {
        log.lock().unwrap().push(req);
        async move {
            sleep(Duration::from_millis(100)).await;
            Ok::<_, BoxError>(req)
        }
    }));
    let mut tasks = Vec::new();
    for i in 1..=5 {
        tasks.push(tokio::spawn(svc.clone().oneshot(i)));
        tokio::task::yield_now().await;
    }
    let results: Vec<_> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    // 1 runs at once; 2 and 3 get the permit at 100ms and 200ms; 4 would at 300ms, past
    // its max wait; 5 found the queue (2, 3, 4) full.
    assert_eq!(*order.lock().unwrap(), [1, 2, 3]);
    let mut results = results.into_iter();
    for _ in 0..3 {
        assert!(results.next().unwrap().is_ok());
    }
    assert_eq!(overloaded(results.next().unwrap()), "max wait");
    assert_eq!(overloaded(results.next().unwrap()), "queue full");
    assert_eq!(layer.handle().in_flight(), 0);
    assert_eq!(layer.handle().waiting(), 0);
    let events = events.lock().unwrap();
    assert!(events.iter().any(|e| matches!(e, LimitEvent::Admitted { waited, .. } if *waited == Duration::from_millis(200))));
}

#[tokio::test(start_paused = true)]
async fn permits_never_leak() {
    let layer = limit(1, 1000, 10);
    let svc = layer.layer(backend());
    // An error frees the permit.
    assert!(svc.clone().oneshot(0).await.is_err());
    assert_eq!(layer.handle().in_flight(), 0);
    // A panic in the backend frees it (the future is dropped while unwinding).
    let panicked = tokio::spawn(svc.clone().oneshot(u32::MAX)).await;
    assert!(panicked.unwrap_err().is_panic());
    assert_eq!(layer.handle().in_flight(), 0);
    // A cancelled call frees it.
    let slow = tokio::spawn(svc.clone().oneshot(10_000));
    tokio::task::yield_now().await;
    assert_eq!(layer.handle().in_flight(), 1);
    slow.abort();
    let _ = slow.await;
    assert_eq!(layer.handle().in_flight(), 0);
    // A readied service dropped before `call` frees it; so does a dropped waiter.
    let ready = svc.clone().ready_oneshot().await.unwrap();
    assert_eq!(layer.handle().in_flight(), 1);
    let (tx, rx) = oneshot::channel();
    let waiter = tokio::spawn(async move {
        let _ = tx.send(());
        svc.clone().oneshot(1).await
    });
    rx.await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(layer.handle().waiting(), 1);
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(layer.handle().waiting(), 0);
    drop(ready);
    assert_eq!(layer.handle().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_limit_changes_at_run_time() {
    let layer = limit(2, 0, 0);
    let handle = layer.handle();
    let svc = layer.layer(backend());
    let a = tokio::spawn(svc.clone().oneshot(100));
    let b = tokio::spawn(svc.clone().oneshot(200));
    tokio::task::yield_now().await;
    // Lowered to 1 with 2 in flight: nothing is cancelled, new calls wait for both.
    handle.set_max_in_flight(1).unwrap();
    assert_eq!(handle.in_flight(), 2);
    assert!(handle.set_max_in_flight(0).is_err());
    a.await.unwrap().unwrap();
    assert_eq!(overloaded(svc.clone().oneshot(1).await), "max in-flight");
    b.await.unwrap().unwrap();
    assert_eq!(handle.in_flight(), 0);
    let c = tokio::spawn(svc.clone().oneshot(100));
    tokio::task::yield_now().await;
    assert_eq!(overloaded(svc.clone().oneshot(1).await), "max in-flight");
    // Raised to 3: two more fit beside c.
    handle.set_max_in_flight(3).unwrap();
    let d = tokio::spawn(svc.clone().oneshot(100));
    let e = tokio::spawn(svc.clone().oneshot(100));
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 3);
    assert_eq!(overloaded(svc.clone().oneshot(1).await), "max in-flight");
    for t in [c, d, e] {
        t.await.unwrap().unwrap();
    }
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(handle.max_in_flight(), 3);
}

/// The concurrency limit waits for a permit in its response future, where the caller's
/// deadline is in effect: it never waits past it (the rate limit has the same test).
#[tokio::test(start_paused = true)]
async fn wait_mode_never_waits_past_the_request_deadline() {
    let layer = limit(1, 10_000, 4);
    let mut svc = layer.layer(backend());
    let busy = tokio::spawn(svc.clone().oneshot(60_000));
    tokio::task::yield_now().await;
    assert_eq!(layer.handle().in_flight(), 1);
    // readiness does not wait: the wait is part of the call
    let start = Instant::now();
    let ready = svc.ready().await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    let fut = palisade_core::Deadline::after(Duration::from_millis(500)).scope(|| ready.call(1));
    assert_eq!(layer.handle().waiting(), 1);
    assert_eq!(overloaded(fut.await), "deadline");
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert_eq!(layer.handle().waiting(), 0);
    // Without a deadline, max_wait bounds it.
    let start = Instant::now();
    assert_eq!(overloaded(svc.clone().oneshot(1).await), "max wait");
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    busy.abort();
    let _ = busy.await;
    assert_eq!(layer.handle().in_flight(), 0);
}

/// `max_wait(Duration::MAX)` waits as long as it takes, not reject mode.
#[tokio::test(start_paused = true)]
async fn a_forever_max_wait_waits_for_the_permit() {
    let layer = ConcurrencyLimitLayer::builder(1)
        .max_wait(Duration::MAX)
        .build()
        .unwrap();
    let svc = layer.layer(backend());
    let hour = 3_600_000;
    let first = tokio::spawn(svc.clone().oneshot(hour));
    tokio::task::yield_now().await;
    let start = Instant::now();
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
    assert_eq!(start.elapsed(), Duration::from_millis(u64::from(hour) + 1));
    first.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_max_queue_of_usize_max_is_unbounded_and_reads_back() {
    let layer = limit(1, 10_000, usize::MAX);
    assert_eq!(layer.handle().config().max_queue(), Some(usize::MAX));
    let svc = layer.layer(backend());
    // Far more waiting calls than `max_in_flight` (the default bound would refuse all but one).
    let tasks: Vec<_> = (0..5)
        .map(|_| tokio::spawn(svc.clone().oneshot(10)))
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 10);
    }
}
