//! The throttle layer's response future.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use palisade_core::RateLimited;
use palisade_core::throttle::ThrottleHint;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::state::{Admit, Gate};

pin_project! {
    /// The response future of [`Throttled`](super::Throttled): the call, a refusal, or (in
    /// wait mode) a wait for the gate followed by the call.
    pub struct ResponseFuture<S, Req, H>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
        gate: Arc<Gate>,
        hint: H,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Called { #[pin] fut: S::Future },
        Waiting {
            sleep: Pin<Box<Sleep>>,
            svc: Option<S>,
            req: Option<Req>,
            give_up: Instant,
        },
        Rejected { error: Option<RateLimited> },
    }
}

impl<S: Service<Req>, Req, H> std::fmt::Debug for ResponseFuture<S, Req, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("name", self.gate.name())
            .finish_non_exhaustive()
    }
}

impl<S: Service<Req>, Req, H> ResponseFuture<S, Req, H> {
    pub(crate) fn called(fut: S::Future, gate: Arc<Gate>, hint: H) -> Self {
        Self {
            state: State::Called { fut },
            gate,
            hint,
        }
    }

    pub(crate) fn rejected(error: RateLimited, gate: Arc<Gate>, hint: H) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
            gate,
            hint,
        }
    }

    pub(crate) fn waiting(
        svc: S,
        req: Req,
        wake: Instant,
        give_up: Instant,
        gate: Arc<Gate>,
        hint: H,
    ) -> Self {
        Self {
            state: State::Waiting {
                sleep: Box::pin(tokio::time::sleep_until(wake)),
                svc: Some(svc),
                req: Some(req),
                give_up,
            },
            gate,
            hint,
        }
    }
}

impl<S, Req, H> Future for ResponseFuture<S, Req, H>
where
    S: Service<Req>,
    S::Error: From<RateLimited>,
    H: ThrottleHint<S::Response, S::Error>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { fut } => {
                    let out = ready!(fut.poll(cx));
                    if let Some(hint) = this.hint.throttle(&out) {
                        this.gate.throttle(Instant::now(), hint);
                    }
                    return Poll::Ready(out);
                }
                StateProj::Rejected { error } => {
                    let error = error.take().expect("polled after completion");
                    return Poll::Ready(Err(error.into()));
                }
                StateProj::Waiting {
                    sleep,
                    svc,
                    req,
                    give_up,
                } => {
                    ready!(sleep.as_mut().poll(cx));
                    match this.gate.admit() {
                        Admit::Open => {
                            let mut svc = svc.take().expect("polled after completion");
                            let req = req.take().expect("polled after completion");
                            let fut = svc.call(req);
                            this.state.set(State::Called { fut });
                        }
                        Admit::Refuse(retry_after) => {
                            let now = Instant::now();
                            let wake = palisade_core::time::add(now, retry_after);
                            if wake > *give_up {
                                let error = RateLimited::new(this.gate.name().clone(), retry_after);
                                this.state.set(State::Rejected { error: Some(error) });
                            } else {
                                sleep.as_mut().reset(wake);
                            }
                        }
                    }
                }
            }
        }
    }
}
