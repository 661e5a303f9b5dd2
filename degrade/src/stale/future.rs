//! The stale cache's response future.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use palisade_core::{AsRejection, Classify};
use pin_project_lite::pin_project;

use super::Shared;
use crate::Mark;

pin_project! {
    /// The response future of [`StaleCache`](super::StaleCache).
    pub struct ResponseFuture<F, KF, K, V, C, E> {
        #[pin]
        state: State<F, KF, K, V, C, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, KF, K, V, C, E> {
        // Answered without the live call: from the cache (degraded mode, revalidation), or
        // settled from the inner service's readiness error.
        Done { result: Option<Result<V, E>> },
        // The live call; its result is settled against the cache.
        Live { #[pin] fut: F, key: Option<K>, shared: Arc<Shared<KF, K, V, C>> },
    }
}

impl<F, KF, K, V, C, E> ResponseFuture<F, KF, K, V, C, E> {
    pub(crate) fn cached(answer: V) -> Self {
        Self::settled(Ok(answer))
    }

    pub(crate) fn settled(result: Result<V, E>) -> Self {
        Self {
            state: State::Done {
                result: Some(result),
            },
        }
    }

    pub(crate) fn live(shared: Arc<Shared<KF, K, V, C>>, fut: F, key: K) -> Self {
        Self {
            state: State::Live {
                fut,
                key: Some(key),
                shared,
            },
        }
    }
}

impl<F, KF, K, V, C, E> Future for ResponseFuture<F, KF, K, V, C, E>
where
    F: Future<Output = Result<V, E>>,
    E: AsRejection,
    K: Hash + Eq + Clone,
    V: Clone + Mark,
    C: Classify<V, E>,
{
    type Output = Result<V, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Done { result } => {
                Poll::Ready(result.take().expect("polled after completion"))
            }
            StateProj::Live { fut, key, shared } => {
                let result = ready!(fut.poll(cx));
                let key = key.take().expect("polled after completion");
                Poll::Ready(shared.settle(key, result))
            }
        }
    }
}

impl<F, KF, K, V, C, E> fmt::Debug for ResponseFuture<F, KF, K, V, C, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
