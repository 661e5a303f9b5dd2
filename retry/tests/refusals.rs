//! A refusal by a layer below holds nothing there while the request waits to retry it.
//!
//! A circuit breaker's `poll_ready` readies the limit below it (a slot is taken for this
//! service); open, its `call` refuses without calling the limit, so the slot stays with the
//! service the call was made on. A request waiting to retry that refusal must not keep such
//! a slot (nor leave one with the caller's clone of the service): the limit would hand out
//! fewer slots to calls that can run, exactly when a backend recovers.

use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, CircuitOpen, Name};
use palisade_retry::{Backoff, Jitter, RetryConfig, RetryLayer};
use proptest::prelude::*;
use tower::{Layer, Service, ServiceExt};

/// A concurrency limit's readiness: `poll_ready` reserves a slot for this service, held
/// until `call` (whose call answers at once, releasing it) or until the service is dropped.
struct Slots {
    reserved: Arc<AtomicUsize>,
    clones: Arc<AtomicUsize>,
    held: bool,
}

impl Clone for Slots {
    /// A clone holds no slot: it must be readied itself.
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            reserved: Arc::clone(&self.reserved),
            clones: Arc::clone(&self.clones),
            held: false,
        }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        if self.held {
            self.reserved.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Service<u32> for Slots {
    type Response = u32;
    type Error = BoxError;
    type Future = Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if !self.held {
            self.held = true;
            self.reserved.fetch_add(1, Ordering::SeqCst);
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        assert!(self.held, "call without poll_ready");
        self.held = false;
        self.reserved.fetch_sub(1, Ordering::SeqCst);
        ready(Ok(req))
    }
}

/// A breaker over `Slots`: readies it, and while `open` refuses calls without calling it
/// (an open circuit, its hint 10 ms).
#[derive(Clone)]
struct Gate {
    inner: Slots,
    open: Arc<AtomicBool>,
}

impl Service<u32> for Gate {
    type Response = u32;
    type Error = BoxError;
    type Future = Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: u32) -> Self::Future {
        if self.open.load(Ordering::SeqCst) {
            let open = CircuitOpen::new(Name::new("gate"), Some(Duration::from_millis(10)));
            return ready(Err(open.into()));
        }
        self.inner.call(req)
    }
}

struct Setup {
    reserved: Arc<AtomicUsize>,
    clones: Arc<AtomicUsize>,
    open: Arc<AtomicBool>,
    layer: RetryLayer,
}

fn setup() -> (Setup, Gate) {
    let reserved = Arc::new(AtomicUsize::new(0));
    let clones = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicBool::new(false));
    let gate = Gate {
        inner: Slots {
            reserved: Arc::clone(&reserved),
            clones: Arc::clone(&clones),
            held: false,
        },
        open: Arc::clone(&open),
    };
    let config = RetryConfig::builder()
        .until_deadline()
        .no_budget()
        .backoff(Backoff::constant(Duration::from_millis(5)).jitter(Jitter::None))
        .build()
        .expect("a valid config");
    let setup = Setup {
        reserved,
        clones,
        open,
        layer: RetryLayer::new(config),
    };
    (setup, gate)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn a_caller_keeping_its_service_until_the_answer_leaves_no_slot_with_it() {
    let (s, gate) = setup();
    let svc = s.layer.layer(gate);
    s.open.store(true, Ordering::SeqCst);
    // Eight requests, each on a clone the caller keeps until the answer.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let mut svc = svc.clone();
            tokio::spawn(async move { svc.ready().await?.call(i).await })
        })
        .collect();
    // While the breaker refuses, the requests wait to retry: only the first one, refused
    // before any refusal was retried, left its slot with its caller's service.
    for _ in 0..20 {
        tokio::time::sleep(ms(3)).await;
        let reserved = s.reserved.load(Ordering::SeqCst);
        assert!(
            reserved <= 1,
            "{reserved} slots held by requests waiting to retry"
        );
    }
    s.open.store(false, Ordering::SeqCst);
    for (i, task) in (0..).zip(tasks) {
        assert_eq!(task.await.unwrap().unwrap(), i);
    }
    assert_eq!(s.reserved.load(Ordering::SeqCst), 0, "every slot released");
}

#[tokio::test(start_paused = true)]
async fn a_request_on_a_service_dropped_after_call_holds_no_slot_while_it_waits() {
    let (s, gate) = setup();
    let svc = s.layer.layer(gate);
    s.open.store(true, Ordering::SeqCst);
    // `oneshot` drops the caller's service after `call`: the request alone could hold one.
    let tasks: Vec<_> = (0..8)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    for _ in 0..20 {
        tokio::time::sleep(ms(3)).await;
        assert_eq!(
            s.reserved.load(Ordering::SeqCst),
            0,
            "a waiting request holds a slot"
        );
    }
    s.open.store(false, Ordering::SeqCst);
    for (i, task) in (0..).zip(tasks) {
        assert_eq!(task.await.unwrap().unwrap(), i);
    }
    assert_eq!(s.reserved.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn while_refusals_are_retried_a_call_hands_over_its_service_until_one_succeeds() {
    let (s, gate) = setup();
    let mut svc = s.layer.layer(gate);
    for i in 0..10 {
        assert_eq!(svc.ready().await.unwrap().call(i).await.unwrap(), i);
    }
    let before = s.clones.load(Ordering::SeqCst);
    assert_eq!(before, 1, "only the layer's spare: no clone per call");
    s.open.store(true, Ordering::SeqCst);
    // Refused, and retried after the hint.
    let first = tokio::spawn(svc.ready().await.unwrap().call(1));
    tokio::task::yield_now().await;
    // Now a call hands its readied service to its request and keeps a clone.
    let second = svc.ready().await.unwrap().call(2);
    assert_eq!(s.clones.load(Ordering::SeqCst), before + 1);
    assert_eq!(s.reserved.load(Ordering::SeqCst), 1, "the handed-over slot");
    let second = tokio::spawn(second);
    tokio::task::yield_now().await;
    assert_eq!(
        s.reserved.load(Ordering::SeqCst),
        0,
        "the refused request dropped the service holding it"
    );
    s.open.store(false, Ordering::SeqCst);
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(second.await.unwrap().unwrap(), 2);
    // An attempt succeeded: calls are made on the caller's service again, with no clone.
    let after = s.clones.load(Ordering::SeqCst);
    for i in 0..10 {
        assert_eq!(svc.ready().await.unwrap().call(i).await.unwrap(), i);
    }
    assert_eq!(s.clones.load(Ordering::SeqCst), after, "no clone per call");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Requests arrive at random moments while the breaker opens and closes at random: at
    /// every moment each request holds at most one slot (the callers keep their service
    /// until the answer), every request is answered, and no slot is left afterwards.
    #[test]
    fn no_request_holds_two_slots_and_none_is_left(
        arrivals in prop::collection::vec(0u64..200, 1..20),
        flips in prop::collection::vec(1u64..60, 0..8),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let (s, gate) = setup();
            let svc = s.layer.layer(gate);
            let in_flight = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for (i, at) in (0u32..).zip(arrivals.iter().copied()) {
                let mut svc = svc.clone();
                let in_flight = Arc::clone(&in_flight);
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(ms(at)).await;
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let answer = svc.ready().await?.call(i).await;
                    drop(svc);
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    answer.map(|n| (i, n))
                }));
            }
            // Open and close at the flips' moments, then stay closed.
            let mut at = 0;
            for (n, flip) in flips.iter().enumerate() {
                let until = at + flip;
                s.open.store(n % 2 == 0, Ordering::SeqCst);
                while at < until {
                    tokio::time::sleep(ms(1)).await;
                    at += 1;
                    let reserved = s.reserved.load(Ordering::SeqCst);
                    let requests = in_flight.load(Ordering::SeqCst);
                    assert!(reserved <= requests, "{reserved} slots held by {requests} requests");
                }
            }
            s.open.store(false, Ordering::SeqCst);
            for task in tasks {
                let (i, n) = task.await.unwrap().unwrap();
                assert_eq!(i, n);
            }
            assert_eq!(s.reserved.load(Ordering::SeqCst), 0, "every slot released");
        });
    }
}
