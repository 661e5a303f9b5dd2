//! Carrying deadlines across boundaries on the request itself.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use palisade_core::{Deadline, RequestDeadline, deadline};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// Bridges the ambient deadline and a deadline carried on the request
/// ([`RequestDeadline`]): the earlier of the two is written onto the request and made
/// current for the layers inside.
///
/// Put it at every boundary the thread-local ambient deadline cannot cross:
///
/// - **a task boundary** (`tower::buffer::Buffer`, a `tokio::spawn`ed call): one on each
///   side. The outer one writes the deadline onto the request; the inner one, running in
///   the worker task, makes it current again, so the limits, retries and timeouts behind
///   the buffer give up at the caller's deadline (see the crate docs for an example);
/// - **a process boundary**: on a server, right after the request is parsed, so a caller's
///   deadline (e.g. from a header your code decoded into the request) bounds every timeout
///   and retry inside; on a client, right before the transport, so the request that leaves
///   carries what is left of the deadline.
///
/// It does not enforce the deadline itself: a [`TimeoutLayer`](crate::TimeoutLayer) does
/// (and the waiting layers inside give up at it).
///
/// ```
/// use palisade_core::{Deadline, RequestDeadline};
/// use palisade_timeout::PropagateDeadlineLayer;
/// use std::time::Duration;
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
///
/// #[derive(Default)]
/// struct Job { deadline: Option<Deadline> }
/// impl RequestDeadline for Job {
///     fn deadline(&self) -> Option<Deadline> { self.deadline }
///     fn set_deadline(&mut self, d: Deadline) { self.deadline = Some(d); }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let job = Job { deadline: Some(Deadline::after(Duration::from_secs(3))) };
/// let expected = job.deadline;
/// let mut svc = ServiceBuilder::new()
///     .layer(PropagateDeadlineLayer::new())
///     .service(service_fn(|_job: Job| async { Ok::<_, palisade_core::BoxError>(Deadline::current()) }));
/// let seen = svc.ready().await.unwrap().call(job).await.unwrap();
/// assert_eq!(seen, expected);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateDeadlineLayer {
    _priv: (),
}

impl PropagateDeadlineLayer {
    /// The layer.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateDeadline { inner }
    }
}

/// The service of [`PropagateDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct PropagateDeadline<S> {
    inner: S,
}

impl<S> PropagateDeadline<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for PropagateDeadline<S>
where
    S: Service<Req>,
    Req: RequestDeadline,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = DeadlineFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let effective = Deadline::earliest(req.deadline(), Deadline::current());
        if let Some(d) = effective {
            req.set_deadline(d);
        }
        let inner = deadline::scope(effective, || self.inner.call(req));
        DeadlineFuture {
            inner,
            deadline: effective,
        }
    }
}

pin_project! {
    /// A future polled with a deadline in effect ([`Deadline::current`]).
    #[derive(Debug)]
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        deadline: Option<Deadline>,
    }
}

impl<F: Future> Future for DeadlineFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        deadline::scope(*this.deadline, || this.inner.poll(cx))
    }
}
