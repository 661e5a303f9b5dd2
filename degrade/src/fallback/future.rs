//! The fallback response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use palisade_core::{AsRejection, Classify};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{FallbackSource, Shared};
use crate::{ByMark, DegradeEvent, Degraded, Marker, Trigger};

type SourceOf<S, F, Req> =
    <F as FallbackSource<Req, <S as Service<Req>>::Response, <S as Service<Req>>::Error>>::Future;
type SavedOf<S, F, Req> =
    <F as FallbackSource<Req, <S as Service<Req>>::Response, <S as Service<Req>>::Error>>::Saved;

pin_project! {
    /// The response future of [`Fallback`](super::Fallback).
    pub struct ResponseFuture<S, F, C, Req, M = ByMark>
    where
        S: Service<Req>,
        F: FallbackSource<Req, S::Response, S::Error>,
    {
        shared: Arc<Shared<F>>,
        marker: (C, M),
        #[pin]
        state: State<S::Future, SourceOf<S, F, Req>, SavedOf<S, F, Req>, S::Error, Result<S::Response, S::Error>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Live, Backup, Saved, Error, Original> {
        // Waiting for the live answer; `saved` is what the fallback may need.
        Live { #[pin] fut: Live, saved: Option<Saved> },
        // The inner service's `poll_ready` failed: that error is the live result.
        NotReady { error: Option<Error>, saved: Option<Saved> },
        // Waiting for the fallback; `original` is the live result it replaces (`None` in
        // manual mode).
        Fallback { #[pin] fut: Backup, trigger: Trigger, original: Option<Original> },
    }
}

impl<S, F, C, Req, M> ResponseFuture<S, F, C, Req, M>
where
    S: Service<Req>,
    F: FallbackSource<Req, S::Response, S::Error>,
{
    pub(crate) fn live(
        shared: Arc<Shared<F>>,
        marker: (C, M),
        fut: S::Future,
        saved: SavedOf<S, F, Req>,
    ) -> Self {
        Self {
            shared,
            marker,
            state: State::Live {
                fut,
                saved: Some(saved),
            },
        }
    }

    pub(crate) fn not_ready(
        shared: Arc<Shared<F>>,
        marker: (C, M),
        error: S::Error,
        saved: SavedOf<S, F, Req>,
    ) -> Self {
        Self {
            shared,
            marker,
            state: State::NotReady {
                error: Some(error),
                saved: Some(saved),
            },
        }
    }

    pub(crate) fn manual(
        shared: Arc<Shared<F>>,
        marker: (C, M),
        saved: SavedOf<S, F, Req>,
    ) -> Self {
        let fut = shared.source.answer(saved, None);
        Self {
            shared,
            marker,
            state: State::Fallback {
                fut,
                trigger: Trigger::Manual,
                original: None,
            },
        }
    }
}

impl<S, F, C, Req, M> Future for ResponseFuture<S, F, C, Req, M>
where
    S: Service<Req>,
    S::Error: AsRejection,
    F: FallbackSource<Req, S::Response, S::Error>,
    C: Classify<S::Response, S::Error>,
    M: Marker<S::Response>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let shared: &Shared<F> = this.shared;
        loop {
            // First the live result (an answer, or the readiness error): return it unless
            // it triggers the fallback.
            let (result, saved) = match this.state.as_mut().project() {
                StateProj::Live { fut, saved } => {
                    let result = ready!(fut.poll(cx));
                    (result, saved.take().expect("the live state is left once"))
                }
                StateProj::NotReady { error, saved } => (
                    Err(error.take().expect("the not-ready state is left once")),
                    saved.take().expect("the not-ready state is left once"),
                ),
                // Then the fallback: marked if it answers, joined to the original if not.
                StateProj::Fallback {
                    fut,
                    trigger,
                    original,
                } => {
                    let trigger = *trigger;
                    return match ready!(fut.poll(cx)) {
                        Ok(mut res) => {
                            this.marker
                                .1
                                .mark(&mut res, Degraded::fallback(shared.name.clone(), trigger));
                            shared.served.increment(trigger);
                            shared
                                .emitter
                                .emit(|| DegradeEvent::FallbackServed { trigger });
                            Poll::Ready(Ok(res))
                        }
                        Err(failure) => {
                            shared.failed.increment(1);
                            shared
                                .emitter
                                .emit(|| DegradeEvent::FallbackFailed { trigger });
                            Poll::Ready(match original.take() {
                                // The live path did answer (a response classified as a
                                // failure): that real answer beats an error.
                                Some(Ok(res)) => Ok(res),
                                Some(Err(e)) => Err(F::failed(&shared.name, failure, Some(e))),
                                None => Err(F::failed(&shared.name, failure, None)),
                            })
                        }
                    };
                }
            };
            let Some(trigger) = shared.triggers.load().check(&this.marker.0, &result) else {
                return Poll::Ready(result);
            };
            let backup = shared.source.answer(saved, result.as_ref().err());
            this.state.set(State::Fallback {
                fut: backup,
                trigger,
                original: Some(result),
            });
        }
    }
}

impl<S, F, C, Req, M> fmt::Debug for ResponseFuture<S, F, C, Req, M>
where
    S: Service<Req>,
    F: FallbackSource<Req, S::Response, S::Error>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}
