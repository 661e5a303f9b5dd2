//! A deadline crosses a task boundary (`tower::buffer::Buffer`, `tokio::spawn`) on the
//! request, not in the thread-local: the ambient deadline is per task and per poll.
#![allow(clippy::unwrap_used)] // test helpers unwrap like the tests do

use std::time::Duration;

use palisade_core::{BoxError, Deadline, Elapsed, RequestDeadline};
use palisade_timeout::{PropagateDeadlineLayer, TimeoutLayer};
use tokio::time::Instant;
use tower::buffer::BufferLayer;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// A job that carries its deadline.
#[derive(Debug, Default)]
struct Job {
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

/// What the service behind the buffer sees in `call`: the deadline in effect there.
fn seen_in_call()
-> impl Service<Job, Response = Option<Deadline>, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(|_job: Job| {
        let current = Deadline::current();
        async move { Ok::<_, BoxError>(current) }
    })
}

fn overall() -> TimeoutLayer {
    TimeoutLayer::builder()
        .name("overall")
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn behind_a_buffer_the_thread_local_deadline_is_lost() {
    // The buffer's worker task calls the inner service: no outer scope is in effect there.
    let svc = ServiceBuilder::new()
        .layer(overall())
        .layer(BufferLayer::new(8))
        .service(seen_in_call());
    assert_eq!(svc.oneshot(Job::default()).await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn propagate_on_both_sides_carries_the_deadline_through_a_buffer() {
    // Caller side: the deadline is written onto the request. Worker side: read back and
    // made current for everything inside.
    let svc = ServiceBuilder::new()
        .layer(overall())
        .layer(PropagateDeadlineLayer::new())
        .layer(BufferLayer::new(8))
        .layer(PropagateDeadlineLayer::new())
        .service(seen_in_call());
    let start = Instant::now();
    let seen = svc.oneshot(Job::default()).await.unwrap();
    assert_eq!(seen, Some(Deadline::at(start + Duration::from_secs(1))));
}

#[tokio::test(start_paused = true)]
async fn an_inner_timeout_behind_a_buffer_ends_at_the_callers_deadline() {
    let attempt = TimeoutLayer::builder()
        .name("attempt")
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let never = service_fn(|_job: Job| std::future::pending::<Result<(), BoxError>>());
    // No outer timeout on the caller's side at all: only the deadline the request carries.
    let svc = ServiceBuilder::new()
        .layer(BufferLayer::new(8))
        .layer(PropagateDeadlineLayer::new())
        .layer(attempt)
        .service(never);
    let start = Instant::now();
    let job = Job {
        deadline: Some(Deadline::after(Duration::from_secs(2))),
    };
    let err = svc.oneshot(job).await.unwrap_err();
    let elapsed = err.downcast_ref::<Elapsed>().expect("Elapsed");
    assert_eq!(elapsed.timeout(), Duration::from_secs(2));
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_spawned_task_gets_the_deadline_from_the_request() {
    let svc = ServiceBuilder::new()
        .layer(PropagateDeadlineLayer::new())
        .service(seen_in_call());
    let deadline = Deadline::after(Duration::from_secs(3));
    let job = Job {
        deadline: Some(deadline),
    };
    let seen = tokio::spawn(svc.oneshot(job)).await.unwrap().unwrap();
    assert_eq!(seen, Some(deadline));
}
