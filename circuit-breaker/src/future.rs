//! The response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use palisade_core::{CircuitOpen, Classify, Outcome};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::state::{Breaker, Permit};

pin_project! {
    /// The future of a [`CircuitBreaker`](crate::CircuitBreaker) call: the inner call's
    /// future, whose outcome is recorded when it completes, or the rejection.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Admitted {
            #[pin]
            future: F,
            recorder: Recorder,
            classifier: C,
        },
        Rejected {
            open: Option<CircuitOpen>,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    #[inline]
    pub(crate) fn admitted(future: F, recorder: Recorder, classifier: C) -> Self {
        Self {
            kind: Kind::Admitted {
                future,
                recorder,
                classifier,
            },
        }
    }

    pub(crate) fn rejected(open: CircuitOpen) -> Self {
        Self {
            kind: Kind::Rejected { open: Some(open) },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: From<CircuitOpen>,
    C: Classify<T, E>,
{
    type Output = Result<T, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted {
                future,
                recorder,
                classifier,
            } => {
                // Wait for the call, then tell the breaker how it went.
                let result = ready!(future.poll(cx));
                recorder.finish(classifier.classify(&result));
                Poll::Ready(result)
            }
            KindProj::Rejected { open } => Poll::Ready(Err(reject(open))),
        }
    }
}

/// The rejection, out of line: converting it (boxing, for `BoxError`) is the cold path.
#[cold]
#[inline(never)]
fn reject<E: From<CircuitOpen>>(open: &mut Option<CircuitOpen>) -> E {
    let open = open
        .take()
        .expect("ResponseFuture polled after it completed");
    E::from(open)
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Admitted { .. } => "admitted",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

// ===== Recorder =====

/// Carries a call's permit to its outcome; dropped without an outcome (the caller gave up
/// on the call), it hands the permit back so a probe slot is not lost.
#[derive(Debug)]
pub(crate) struct Recorder {
    breaker: Arc<OwnCount>,
    permit: Option<Permit>,
    start: Option<Instant>,
}

/// The breaker as a call's future holds it: through a reference count that is either
/// shared by every service of the layer (and by every call of a keyed breaker's key) or
/// one service's own ([`CircuitBreaker`](crate::CircuitBreaker) makes one once it has been
/// called a few times). On its own count, a service called from one thread does not write
/// the count other threads' calls write, so threads calling their own clones share no
/// written line while the breaker is healthy.
#[derive(Debug)]
pub(crate) struct OwnCount(pub(crate) Arc<Breaker>);

impl std::ops::Deref for OwnCount {
    type Target = Breaker;

    #[inline]
    fn deref(&self) -> &Breaker {
        &self.0
    }
}

impl Recorder {
    #[inline]
    pub(crate) fn new(breaker: Arc<OwnCount>, permit: Permit, start: Option<Instant>) -> Self {
        Self {
            breaker,
            permit: Some(permit),
            start,
        }
    }

    #[inline]
    pub(crate) fn finish(&mut self, outcome: Outcome) {
        if let Some(permit) = self.permit.take() {
            self.breaker
                .record(permit, outcome, self.start, Instant::now);
        }
    }
}

impl Drop for Recorder {
    #[inline]
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.cancel(permit);
        }
    }
}
