//! The timeout's happy path allocates nothing per call: a timeout alone, a timeout inside
//! a timeout (the deadline made current and shortened), and deadline propagation; and
//! neither does a call that is pending once (a timer armed, then dropped).
//!
//! Run without libtest's harness (`harness = false`): the harness's main thread allocates
//! while it waits for a test to finish, and dhat counts every thread.
#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests do
#![allow(clippy::print_stdout)] // without a harness, the test reports its own result

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Deadline, RequestDeadline};
use palisade_timeout::{PropagateDeadlineLayer, TimeoutLayer};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

struct Job {
    id: u64,
    deadline: Option<Deadline>,
}

impl RequestDeadline for Job {
    fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }
    fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = Some(deadline);
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let _profiler = dhat::Profiler::builder().testing().build();

    let overall = TimeoutLayer::builder()
        .name("overall")
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let attempt = TimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let backend = || service_fn(|job: Job| std::future::ready(Ok::<_, BoxError>(job.id)));

    let mut single = attempt.layer(backend());
    assert_no_allocations("timeout", &mut single);
    let mut nested = overall.layer(PropagateDeadlineLayer::new().layer(attempt.layer(backend())));
    assert_no_allocations("timeout inside a timeout, with propagation", &mut nested);
    // Pending at the first poll, as a network call is: the timers are armed.
    let pending = || {
        service_fn(|job: Job| PendingOnce {
            id: job.id,
            polled: false,
        })
    };
    let mut single = attempt.layer(pending());
    assert_no_allocations("timeout, pending once", &mut single);
    let mut nested = overall.layer(attempt.layer(pending()));
    assert_no_allocations("timeout inside a timeout, pending once", &mut nested);
    println!("alloc: timeout calls (answered at once, or pending once) allocate nothing ... ok");
}

/// Pending at its first poll (waking its task), its answer at the second.
struct PendingOnce {
    id: u64,
    polled: bool,
}

impl Future for PendingOnce {
    type Output = Result<u64, BoxError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.polled {
            return Poll::Ready(Ok(self.id));
        }
        self.polled = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn assert_no_allocations<S>(what: &str, svc: &mut S)
where
    S: Service<Job, Response = u64, Error = BoxError>,
{
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut call = |id: u64| {
        assert!(svc.poll_ready(&mut cx).is_ready());
        let job = Job { id, deadline: None };
        let mut fut = std::pin::pin!(svc.call(job));
        let out = loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                break out;
            }
        };
        assert_eq!(out.unwrap(), id);
    };
    for id in 0..100 {
        call(id);
    }
    let before = dhat::HeapStats::get();
    const CALLS: u64 = 10_000;
    for id in 0..CALLS {
        call(id);
    }
    let after = dhat::HeapStats::get();
    assert_eq!(
        after.total_blocks - before.total_blocks,
        0,
        "{what}: allocations in {CALLS} calls"
    );
}
