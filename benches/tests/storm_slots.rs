//! The README's stack with an open breaker over its adaptive limit: requests waiting to
//! retry the breaker's refusals hold none of the limit's slots.
//!
//! The breaker's `poll_ready` readies the limit (a slot is taken for that service); open,
//! its `call` refuses without calling the limit. When a retried request's later attempts
//! went to a clone of the retry layer's service, the caller's readied service kept that slot
//! until the answer, and each refused retry kept one more through its backoff: in the
//! retry-storm incident (seed 0) a limit at 7 slots had 5.6 of them held by services not
//! calling, and goodput fell from 96.1 to 94.6 req/s (the example `storm_probe` measures
//! it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use palisade::prelude::*;
use palisade_benches::scorecard::DefaultLayers;
use tower::{Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One request on `svc`, kept until the answer (`ready().await?.call(req).await`).
async fn keep_until_answered<S: Service<u32>>(
    mut svc: S,
    req: u32,
) -> Result<S::Response, S::Error> {
    svc.ready().await?.call(req).await
}

#[tokio::test(start_paused = true)]
async fn requests_waiting_for_an_open_breaker_hold_no_slot_of_the_limit_below() {
    let layers = DefaultLayers::new().expect("the README's stack is valid");
    let (slots, circuit) = (layers.limit.handle(), layers.breaker.handle());
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let backend = tower::service_fn(move |i: u32| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<u32, BoxError>(i) }
    });
    let stack = layers.stack();
    let svc = stack.layer(backend);
    circuit.open_for(ms(300));
    // Twenty requests, one every 5 ms, each on a clone its caller keeps until the answer.
    let mut tasks = Vec::new();
    for i in 0..20 {
        tasks.push(tokio::spawn(keep_until_answered(svc.clone(), i)));
        tokio::time::sleep(ms(5)).await;
        // Only the first request, refused before any refusal was retried, left its slot
        // with its caller's service.
        assert!(slots.in_flight() <= 1, "{} slots taken", slots.in_flight());
        assert_eq!(slots.waiting(), 0);
    }
    tokio::time::sleep(ms(150)).await;
    assert!(slots.in_flight() <= 1, "{} slots taken", slots.in_flight());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the breaker let nothing through"
    );
    // The open interval ends: a probe, then every request is served.
    for (i, task) in (0..).zip(tasks) {
        assert_eq!(task.await.expect("no panic").expect("served"), i);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 20);
    assert_eq!(slots.in_flight(), 0, "every slot released");
    assert_eq!(slots.limit(), 20, "the limit did not shrink for refusals");
}
