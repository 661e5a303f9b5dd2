//! Criterion benches for palisade, run with `cargo bench -p palisade-benches`, and the
//! incident scorecard, run with `cargo run --release -p palisade-benches --bin scorecard`.
//!
//! Each bench compares a palisade layer against the floor (a bare `tower::service_fn`) and
//! the nearest alternative (tower's own middleware) in the same run, on the same machine.
//! The [`scorecard`] replays named incidents against palisade and its alternatives:
//!
//! ```
//! use palisade_benches::scorecard::{self, StackKind};
//!
//! // 10% of calls fail for 15 s: retries within the budget hide them.
//! let row = scorecard::run("random-errors", StackKind::PalisadeTuned).expect("known");
//! assert!(row.success_ratio > 0.99 && row.amplification < 1.2);
//! ```
#![forbid(unsafe_code)]

#[path = "src/scorecard/mod.rs"]
pub mod scorecard;

/// What the criterion benches share: one ready-and-call of a service whose backend answers
/// at once, and that backend.
pub mod harness {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use palisade::BoxError;
    use palisade::prelude::Marked;
    use tower::{Service, service_fn};

    /// One `poll_ready`, `call` and poll of the response future: the backend is immediate,
    /// so it completes, and what is measured is the layers' own work on the happy path.
    ///
    /// ```
    /// use palisade_benches::harness::{backend, call_once};
    ///
    /// let mut svc = backend();
    /// assert_eq!(call_once(&mut svc, 7), 7);
    /// ```
    #[inline]
    pub fn call_once<S>(svc: &mut S, x: u64) -> S::Response
    where
        S: Service<u64>,
        S::Error: std::fmt::Debug,
    {
        let mut cx = Context::from_waker(Waker::noop());
        match svc.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => {}
            _ => panic!("the benched service is always ready"),
        }
        let fut = pin!(svc.call(x));
        match fut.poll(&mut cx) {
            Poll::Ready(Ok(v)) => v,
            Poll::Ready(Err(e)) => panic!("the benched backend answers with Ok: {e:?}"),
            Poll::Pending => panic!("the benched backend answers at once"),
        }
    }

    /// The backend every bench wraps: answers its request at once, with `BoxError` errors.
    pub fn backend() -> impl Service<
        u64,
        Response = u64,
        Error = BoxError,
        Future = std::future::Ready<Result<u64, BoxError>>,
    > + Clone {
        service_fn(|x: u64| std::future::ready(Ok::<_, BoxError>(x)))
    }

    /// The same backend, answering when its future is polled rather than inside `call`,
    /// as a real client's future does (its answer is written by `poll`, not read back from
    /// memory that `call` wrote a moment ago).
    ///
    /// ```
    /// use palisade_benches::harness::{call_once, polled_backend};
    ///
    /// let mut svc = polled_backend();
    /// assert_eq!(call_once(&mut svc, 7), 7);
    /// ```
    pub fn polled_backend()
    -> impl Service<u64, Response = u64, Error = BoxError, Future = Answer> + Clone {
        service_fn(Answer)
    }

    /// [`polled_backend`]'s response future: answers with its request when polled.
    #[derive(Debug, Clone, Copy)]
    pub struct Answer(pub u64);

    impl Future for Answer {
        type Output = Result<u64, BoxError>;

        #[inline]
        fn poll(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            Poll::Ready(Ok(self.0))
        }
    }

    /// A client as the ones palisade wraps in production are: reqwest's `Client`,
    /// hyper-util's `Client` and tonic's `Channel` share their connection pool through an
    /// `Arc` (tonic's through a channel sender), so cloning one is an atomic reference
    /// count, not nothing as for a bare `service_fn`. Its future answers when polled, as
    /// [`polled_backend`]'s does. A layer that clones its service on every call (tower's
    /// `Retry` clones itself and everything below it) pays for that clone over this
    /// backend and not over the others.
    ///
    /// ```
    /// use palisade_benches::harness::{call_once, client};
    ///
    /// let mut svc = client();
    /// let clone = svc.clone();
    /// assert_eq!(call_once(&mut svc, 7), 7);
    /// assert_eq!(svc.pool_users(), 2, "the clone shares the pool");
    /// # drop(clone);
    /// ```
    pub fn client() -> Client {
        Client(std::sync::Arc::new(Pool))
    }

    /// [`client`]'s service.
    #[derive(Debug, Clone)]
    pub struct Client(std::sync::Arc<Pool>);

    /// What a real client shares between its clones (here: nothing but the count).
    #[derive(Debug)]
    pub struct Pool;

    impl Client {
        /// How many clones share this client's pool.
        pub fn pool_users(&self) -> usize {
            std::sync::Arc::strong_count(&self.0)
        }
    }

    impl Service<u64> for Client {
        type Response = u64;
        type Error = BoxError;
        type Future = Answer;

        #[inline]
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        #[inline]
        fn call(&mut self, x: u64) -> Answer {
            Answer(x)
        }
    }

    /// A backend whose future is pending at its first poll (waking its task at once) and
    /// answers at the second, as a network call's is: the layers' futures see a pending
    /// call, so timeouts arm their timers (tokio's timer wheel: an insert, then a removal
    /// when the call's future is dropped). Driven by [`call_until_ready`].
    ///
    /// ```
    /// use palisade_benches::harness::{call_until_ready, pending_backend};
    ///
    /// let mut svc = pending_backend();
    /// assert_eq!(call_until_ready(&mut svc, 7), 7);
    /// ```
    pub fn pending_backend()
    -> impl Service<u64, Response = u64, Error = BoxError, Future = PendingOnce> + Clone {
        service_fn(|x| PendingOnce(x, false))
    }

    /// [`pending_backend`]'s response future: pending at its first poll, then its request.
    #[derive(Debug, Clone, Copy)]
    pub struct PendingOnce(pub u64, pub bool);

    impl Future for PendingOnce {
        type Output = Result<u64, BoxError>;

        #[inline]
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            if self.1 {
                return Poll::Ready(Ok(self.0));
            }
            self.1 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// [`call_once`] for a backend whose future may be pending: `poll_ready`, `call`, and
    /// polls of the response future until it answers.
    #[inline]
    pub fn call_until_ready<S>(svc: &mut S, x: u64) -> S::Response
    where
        S: Service<u64>,
        S::Error: std::fmt::Debug,
    {
        let mut cx = Context::from_waker(Waker::noop());
        match svc.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => {}
            _ => panic!("the benched service is always ready"),
        }
        let mut fut = pin!(svc.call(x));
        loop {
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(Ok(v)) => return v,
                Poll::Ready(Err(e)) => panic!("the benched backend answers with Ok: {e:?}"),
                Poll::Pending => {}
            }
        }
    }

    /// [`backend`] for the degrade layers, whose responses carry a degraded mark.
    pub fn marked_backend() -> impl Service<
        u64,
        Response = Marked<u64>,
        Error = BoxError,
        Future = std::future::Ready<Result<Marked<u64>, BoxError>>,
    > + Clone {
        service_fn(|x: u64| std::future::ready(Ok::<_, BoxError>(Marked::new(x))))
    }
}
