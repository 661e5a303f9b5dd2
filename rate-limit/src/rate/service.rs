//! The rate limit service.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use palisade_core::{Name, RateLimited};
use tokio::time::Instant;
use tower_service::Service;

use super::future::ResponseFuture;
use super::limiter::{Common, Cost, Direct, Limiter, UnitCost};
use crate::event::LimitEvent;

/// A service whose calls are rate limited; built by [`RateLimitLayer`](super::RateLimitLayer).
///
/// Readiness is the inner service's: the limit is applied in `call`, because the cost and
/// the key come from the request. A call that conforms goes straight to the inner service.
/// One that does not is rejected (reject mode) or waits in its response future (wait mode,
/// see [`ResponseFuture`]). One that costs more than the burst is refused for good with
/// [`RateLimited::insufficient_capacity`].
///
/// The inner service must be `Clone`: a waiting call takes the readied service with it
/// and leaves a clone in its place (wrap a service that is not `Clone` in
/// `tower::buffer::Buffer`).
pub struct RateLimit<S, L = Direct, C = UnitCost> {
    inner: S,
    common: Arc<Common>,
    limiter: L,
    cost: C,
}

impl<S, L, C> RateLimit<S, L, C> {
    pub(crate) fn from_parts(inner: S, common: Arc<Common>, limiter: L, cost: C) -> Self {
        Self {
            inner,
            common,
            limiter,
            cost,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, consuming the limit.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The limiter's state.
    pub fn limiter(&self) -> &L {
        &self.limiter
    }

    /// The limit's name.
    pub fn name(&self) -> &Name {
        self.common.emitter.name()
    }

    fn reject(&self, cells: NonZeroU32, retry_after: std::time::Duration) -> RateLimited {
        self.common.metrics.rejected.increment(1);
        self.common.emitter.emit(|| LimitEvent::RateLimited {
            cost: cells.get(),
            retry_after,
        });
        RateLimited::new(self.common.emitter.name().clone(), retry_after)
    }

    #[cold]
    fn refuse_insufficient(&self, cost: u32, burst: u32) -> RateLimited {
        self.common.metrics.rejected.increment(1);
        self.common.emitter.emit(|| LimitEvent::RateLimited {
            cost,
            retry_after: std::time::Duration::MAX,
        });
        RateLimited::insufficient_capacity(
            self.common.emitter.name().clone(),
            u64::from(cost),
            u64::from(burst),
        )
    }
}

impl<S, L, C, Req> Service<Req> for RateLimit<S, L, C>
where
    S: Service<Req> + Clone,
    S::Error: From<RateLimited>,
    L: Limiter<Req>,
    C: Cost<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, L>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let cost = self.cost.cost(&req);
        let burst = self.common.burst.get();
        if cost > burst {
            // It could never conform: refuse it for good, in either mode, without waiting.
            return ResponseFuture::rejected(self.refuse_insufficient(cost, burst));
        }
        let Some(cells) = NonZeroU32::new(cost) else {
            // A free request consumes nothing.
            return ResponseFuture::called(self.inner.call(req));
        };
        let key = self.limiter.key(&req);
        // While calls wait in line, a newcomer queues behind them rather than take the
        // cells the head of the line is waiting for.
        let fifo = self.limiter.fifo();
        let line = fifo && self.common.waiting.load(Ordering::Acquire) > 0;
        let mut conforms_at = None;
        if line {
            // Early refusal: a call whose turn, after everyone in line ahead of it, would
            // come only after it gives up is refused now, with the time until that turn.
            let now = Instant::now();
            let give_up = crate::give_up_at(now, self.common.max_wait).0;
            if let Err(turn) = self.common.join_line(cells, now, give_up) {
                let wait = turn.saturating_duration_since(now);
                return ResponseFuture::rejected(self.reject(cells, wait));
            }
        } else {
            match self.common.check::<Req, L>(&self.limiter, &key, cells) {
                Ok(()) => {
                    self.common.metrics.admitted.increment(1);
                    return ResponseFuture::called(self.inner.call(req));
                }
                Err(at) => {
                    let now = Instant::now();
                    if at > crate::give_up_at(now, self.common.max_wait).0 {
                        let wait = at.saturating_duration_since(now);
                        return ResponseFuture::rejected(self.reject(cells, wait));
                    }
                    if fifo {
                        self.common.start_line(at, cells);
                    }
                    conforms_at = Some(at);
                }
            }
        }
        // Wait mode: the readied inner service waits with the request in the future.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::waiting(
            Arc::clone(&self.common),
            self.limiter.clone(),
            key,
            cells,
            conforms_at,
            inner,
            req,
        )
    }
}

impl<S: Clone, L: Clone, C: Clone> Clone for RateLimit<S, L, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            common: Arc::clone(&self.common),
            limiter: self.limiter.clone(),
            cost: self.cost.clone(),
        }
    }
}

impl<S: fmt::Debug, L: fmt::Debug, C> fmt::Debug for RateLimit<S, L, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("common", &self.common)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}
