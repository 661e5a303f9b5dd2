//! The Redis rate limit layer and its service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use palisade_core::{Name, RateLimited};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::limiter::{Pending, RedisLimiter, Start};
use crate::rate::{Cost, UnitCost};

/// How a Redis rate limit finds a request's Redis key.
pub trait RedisKey<Req>: Clone {
    /// The Redis key of `req` for `limiter` (see [`RedisLimiter::redis_key`]).
    fn redis_key(&self, limiter: &RedisLimiter, req: &Req) -> String;
}

/// One fleet-wide quota for every call.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectRedis;

impl<Req> RedisKey<Req> for DirectRedis {
    fn redis_key(&self, limiter: &RedisLimiter, _req: &Req) -> String {
        limiter.redis_key(None)
    }
}

/// One fleet-wide quota per key, the key extracted by `F: Fn(&Req) -> K` (`K: Display`).
#[derive(Clone)]
pub struct KeyedRedis<F> {
    key_fn: F,
}

impl<F> fmt::Debug for KeyedRedis<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRedis").finish_non_exhaustive()
    }
}

impl<Req, K, F> RedisKey<Req> for KeyedRedis<F>
where
    F: Fn(&Req) -> K + Clone,
    K: fmt::Display,
{
    fn redis_key(&self, limiter: &RedisLimiter, req: &Req) -> String {
        limiter.redis_key(Some(&(self.key_fn)(req).to_string()))
    }
}

/// Applies a fleet-wide rate limit kept in Redis to every call of the wrapped service.
///
/// Made as the local [`RateLimitLayer`](crate::RateLimitLayer) is, plus the connection:
/// [`RedisRateLimitLayer::new(config, conn)`](Self::new) (or the builder's
/// [`build(conn)`](super::RedisRateLimitBuilder::build)); one quota per key with
/// [`key_by`](Self::key_by); charge more than one cell per request with
/// [`cost`](Self::cost); listeners with [`on_event`](Self::on_event).
pub struct RedisRateLimitLayer<K = DirectRedis, C = UnitCost> {
    limiter: RedisLimiter,
    key: K,
    cost: C,
}

impl RedisRateLimitLayer {
    /// A fleet-wide limit with `config` (validated here: its fields are plain data) on
    /// `conn`: one quota shared by every call.
    pub fn new(
        config: super::RedisRateLimitConfig,
        conn: impl super::RedisConnection,
    ) -> Result<Self, palisade_core::ConfigError> {
        super::RedisRateLimitBuilder::from_config(config).build(conn)
    }

    /// One fleet-wide quota per key instead of one for all: `key_fn` extracts the key from
    /// each request (its `Display` form goes into the Redis key), as the local
    /// [`RateLimitLayer::key_by`](crate::RateLimitLayer::key_by).
    pub fn key_by<Req, K, F>(self, key_fn: F) -> RedisRateLimitLayer<KeyedRedis<F>>
    where
        F: Fn(&Req) -> K,
        K: fmt::Display,
    {
        Self::keyed(self.limiter, key_fn)
    }

    pub(crate) fn direct(limiter: RedisLimiter) -> Self {
        Self {
            limiter,
            key: DirectRedis,
            cost: UnitCost,
        }
    }

    pub(crate) fn keyed<F>(limiter: RedisLimiter, key_fn: F) -> RedisRateLimitLayer<KeyedRedis<F>> {
        RedisRateLimitLayer {
            limiter,
            key: KeyedRedis { key_fn },
            cost: UnitCost,
        }
    }
}

impl<K, C> RedisRateLimitLayer<K, C> {
    /// Charge each request `cost(&req)` cells instead of one (e.g. the rows of a batch).
    pub fn cost<C2>(self, cost: C2) -> RedisRateLimitLayer<K, C2> {
        RedisRateLimitLayer {
            limiter: self.limiter,
            key: self.key,
            cost,
        }
    }

    /// The shared limiter: its [`mode`](RedisLimiter::mode), its keys, direct checks.
    pub fn limiter(&self) -> &RedisLimiter {
        &self.limiter
    }

    /// The layer's handle, as every palisade layer has one: for this limit, the shared
    /// [`RedisLimiter`] (cheap to clone): its [`name`](RedisLimiter::name),
    /// [`config`](RedisLimiter::config), [`mode`](RedisLimiter::mode) and local keys. Its
    /// quota lives in Redis, shared by every replica, so it has no `update`: change the
    /// config of every replica together (a new layer per replica).
    pub fn handle(&self) -> RedisLimiter {
        self.limiter.clone()
    }

    /// The limit's name.
    pub fn name(&self) -> &Name {
        self.limiter.name()
    }

    /// Call `listener` with every event of this limit (services made before this call see
    /// the listener too).
    #[must_use]
    pub fn on_event(
        self,
        listener: impl Fn(&super::RedisLimitEvent) + Send + Sync + 'static,
    ) -> Self {
        self.limiter.add_listener(listener);
        self
    }
}

impl<K: Clone, C: Clone> Clone for RedisRateLimitLayer<K, C> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            cost: self.cost.clone(),
        }
    }
}

impl<K, C> fmt::Debug for RedisRateLimitLayer<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, K: Clone, C: Clone> Layer<S> for RedisRateLimitLayer<K, C> {
    type Service = RedisRateLimit<S, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RedisRateLimit {
            inner,
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            cost: self.cost.clone(),
        }
    }
}

/// A service whose calls are limited fleet-wide; built by [`RedisRateLimitLayer`].
///
/// Readiness is the inner service's; the limit is applied in `call` (the key and the cost
/// come from the request). A call admitted from a lease goes straight to the inner service;
/// one that needs Redis (or waits, in wait mode) takes the readied inner service into its
/// response future (hence `S: Clone`) and calls it once admitted. Dropping the future
/// before then calls nothing.
pub struct RedisRateLimit<S, K = DirectRedis, C = UnitCost> {
    inner: S,
    limiter: RedisLimiter,
    key: K,
    cost: C,
}

impl<S, K, C> RedisRateLimit<S, K, C> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &RedisLimiter {
        &self.limiter
    }
}

impl<S: Clone, K: Clone, C: Clone> Clone for RedisRateLimit<S, K, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            cost: self.cost.clone(),
        }
    }
}

impl<S: fmt::Debug, K, C> fmt::Debug for RedisRateLimit<S, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, K, C, Req> Service<Req> for RedisRateLimit<S, K, C>
where
    S: Service<Req> + Clone,
    S::Error: From<RateLimited>,
    K: RedisKey<Req>,
    C: Cost<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let cost = self.cost.cost(&req);
        let key = self.key.redis_key(&self.limiter, &req);
        match self
            .limiter
            .start(key, cost, palisade_core::Deadline::current())
        {
            Start::Done(Ok(_)) => ResponseFuture {
                state: State::Called {
                    fut: self.inner.call(req),
                },
            },
            Start::Done(Err(error)) => ResponseFuture {
                state: State::Rejected { error: Some(error) },
            },
            Start::Pending(pending) => {
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture {
                    state: State::Deciding {
                        pending,
                        inner: Some(inner),
                        req: Some(req),
                    },
                }
            }
        }
    }
}

pin_project! {
    /// The response future of [`RedisRateLimit`].
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Called { #[pin] fut: S::Future },
        Deciding { pending: Pending, inner: Option<S>, req: Option<Req> },
        Rejected { error: Option<RateLimited> },
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: From<RateLimited>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Called { fut } => return fut.poll(cx),
                StateProj::Rejected { error } => {
                    let error = error.take().expect("polled after completion");
                    return Poll::Ready(Err(error.into()));
                }
                StateProj::Deciding {
                    pending,
                    inner,
                    req,
                } => {
                    if let Err(error) = std::task::ready!(pending.as_mut().poll(cx)) {
                        return Poll::Ready(Err(error.into()));
                    }
                    let mut inner = inner.take().expect("polled after completion");
                    let req = req.take().expect("polled after completion");
                    let fut = inner.call(req);
                    state.set(State::Called { fut });
                }
            }
        }
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Deciding { .. } => "deciding",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
