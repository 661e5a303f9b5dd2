//! Server side: palisade rejections answered as HTTP responses, so a whole stack's error is
//! `Infallible` and it sits directly on an axum `Router` or a hyper service.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::response::Parts;
use http::{Response, StatusCode};
use palisade_core::config::ensure;
use palisade_core::{AsRejection, ConfigError, Name, Rejection, RejectionKind};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::boxed::BoxErrors;
use crate::headers::{
    RATELIMIT, RATELIMIT_POLICY, RateLimitPolicy, rate_limit_value, retry_after_value,
};

const LAYER: &str = "rejection_response";

/// What an error response answers for: one of palisade's rejections, or any other error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// A rate limit was exceeded ([`RateLimited`](palisade_core::RateLimited)). Default
    /// `429 Too Many Requests` with `Retry-After` and the `RateLimit` headers.
    RateLimited,
    /// A concurrency limit or load shedder refused the request
    /// ([`Overloaded`](palisade_core::Overloaded)). Default `503 Service Unavailable` with
    /// `Retry-After` ([`RejectionResponseConfigBuilder::overloaded_retry_after`]).
    Overloaded,
    /// A circuit breaker is open ([`CircuitOpen`](palisade_core::CircuitOpen)). Default `503`,
    /// with `Retry-After` when the breaker knows its next probe.
    CircuitOpen,
    /// A timeout elapsed ([`Elapsed`](palisade_core::Elapsed)) while waiting on something
    /// else: an upstream call, the caller's deadline. Default `504 Gateway Timeout`.
    Elapsed,
    /// The server's own request timeout elapsed: an [`Elapsed`](palisade_core::Elapsed) from
    /// a timeout named with [`RejectionResponseConfigBuilder::request_timeout`]. Default
    /// `408 Request Timeout`, as tower-http answers.
    RequestTimeout,
    /// A retry or hedge layer gave up
    /// ([`RetriesExhausted`](palisade_core::RetriesExhausted)). Default `503`.
    RetriesExhausted,
    /// Any other error: `500 Internal Server Error`, logged at `error` level on target
    /// `palisade::http`.
    Other,
}

impl Cause {
    const ALL: [Cause; 7] = [
        Cause::RateLimited,
        Cause::Overloaded,
        Cause::CircuitOpen,
        Cause::Elapsed,
        Cause::RequestTimeout,
        Cause::RetriesExhausted,
        Cause::Other,
    ];

    const fn index(self) -> usize {
        self as usize
    }

    const fn default_status(self) -> StatusCode {
        match self {
            Cause::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Cause::Overloaded | Cause::CircuitOpen | Cause::RetriesExhausted => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Cause::Elapsed => StatusCode::GATEWAY_TIMEOUT,
            Cause::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Cause::Other => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    const fn field(self) -> &'static str {
        match self {
            Cause::RateLimited => "status.rate_limited",
            Cause::Overloaded => "status.overloaded",
            Cause::CircuitOpen => "status.circuit_open",
            Cause::Elapsed => "status.elapsed",
            Cause::RequestTimeout => "status.request_timeout",
            Cause::RetriesExhausted => "status.retries_exhausted",
            Cause::Other => "status.other",
        }
    }
}

// ===== RejectionResponseConfig =====

/// How [`RejectionResponseLayer`] answers each [`Cause`]: status, body, hints.
///
/// ```
/// use http::{HeaderValue, StatusCode};
/// use palisade_http::{Cause, RejectionResponseConfig, headers::RateLimitPolicy};
/// use std::time::Duration;
///
/// let config = RejectionResponseConfig::builder()
///     .request_timeout("request")          // our own timeout: 408, not 504
///     .rate_limit_policy("per-ip", RateLimitPolicy::new(100, Duration::from_secs(60)))
///     .body(Cause::Overloaded, r#"{"error":"busy"}"#)
///     .content_type(HeaderValue::from_static("application/json"))
///     .build()
///     .unwrap();
/// assert_eq!(config.status(Cause::RateLimited), StatusCode::TOO_MANY_REQUESTS);
///
/// let err = RejectionResponseConfig::builder()
///     .status(Cause::RateLimited, StatusCode::OK)
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "status.rate_limited");
/// ```
#[derive(Debug, Clone)]
pub struct RejectionResponseConfig {
    statuses: [StatusCode; 7],
    bodies: [Option<Bytes>; 7],
    content_type: HeaderValue,
    detailed: bool,
    request_timeouts: Vec<Name>,
    overloaded_retry_after: Option<Duration>,
    rate_limit_headers: bool,
    policies: Vec<(Name, RateLimitPolicy)>,
}

impl RejectionResponseConfig {
    /// A builder with the documented defaults.
    pub fn builder() -> RejectionResponseConfigBuilder {
        RejectionResponseConfigBuilder {
            config: Self::default(),
        }
    }

    /// The status answered for `cause`.
    pub fn status(&self, cause: Cause) -> StatusCode {
        self.statuses[cause.index()]
    }
}

impl Default for RejectionResponseConfig {
    fn default() -> Self {
        Self {
            statuses: Cause::ALL.map(Cause::default_status),
            bodies: Default::default(),
            content_type: HeaderValue::from_static("text/plain; charset=utf-8"),
            detailed: false,
            request_timeouts: Vec::new(),
            overloaded_retry_after: Some(Duration::from_secs(1)),
            rate_limit_headers: true,
            policies: Vec::new(),
        }
    }
}

/// Builds a [`RejectionResponseConfig`].
#[derive(Debug, Clone)]
pub struct RejectionResponseConfigBuilder {
    config: RejectionResponseConfig,
}

impl RejectionResponseConfigBuilder {
    /// The status for `cause` (a `4xx` or `5xx`; defaults on [`Cause`]).
    #[must_use]
    pub fn status(mut self, cause: Cause, status: StatusCode) -> Self {
        self.config.statuses[cause.index()] = status;
        self
    }

    /// The body for `cause` (default: the status's reason phrase, e.g. `Too Many Requests`).
    #[must_use]
    pub fn body(mut self, cause: Cause, body: impl Into<Bytes>) -> Self {
        self.config.bodies[cause.index()] = Some(body.into());
        self
    }

    /// The `Content-Type` of every body (default `text/plain; charset=utf-8`).
    #[must_use]
    pub fn content_type(mut self, content_type: HeaderValue) -> Self {
        self.config.content_type = content_type;
        self
    }

    /// Answer rejections with their message (`rate limit 'api' exceeded; retry after 1.2s`)
    /// instead of the reason phrase, where no body is set (default off: messages name your
    /// layers). Other errors never show their message.
    #[must_use]
    pub fn detailed(mut self, detailed: bool) -> Self {
        self.config.detailed = detailed;
        self
    }

    /// Timeouts named `name` are the server's own request timeout: their
    /// [`Elapsed`](palisade_core::Elapsed) is [`Cause::RequestTimeout`] (`408`), not
    /// [`Cause::Elapsed`] (`504`). May be called for several names.
    #[must_use]
    pub fn request_timeout(mut self, name: impl Into<Name>) -> Self {
        self.config.request_timeouts.push(name.into());
        self
    }

    /// The `Retry-After` sent with [`Cause::Overloaded`] (an overload rejection carries no
    /// hint of its own). Default 1 s: long enough to let a spike drain, short enough that
    /// clients come back while the server still has them in mind. `None` sends none.
    #[must_use]
    pub fn overloaded_retry_after(mut self, delay: Option<Duration>) -> Self {
        self.config.overloaded_retry_after = delay;
        self
    }

    /// Send the IETF `RateLimit` header (and `RateLimit-Policy`, where a policy is known)
    /// with rate-limit rejections (default on).
    #[must_use]
    pub fn rate_limit_headers(mut self, on: bool) -> Self {
        self.config.rate_limit_headers = on;
        self
    }

    /// Announce the quota of the rate limit named `name` in `RateLimit-Policy` when it
    /// rejects (a rejection knows when to come back, not the quota).
    #[must_use]
    pub fn rate_limit_policy(mut self, name: impl Into<Name>, policy: RateLimitPolicy) -> Self {
        self.config.policies.push((name.into(), policy));
        self
    }

    /// Validate and build.
    pub fn build(self) -> Result<RejectionResponseConfig, ConfigError> {
        for cause in Cause::ALL {
            let status = self.config.status(cause);
            let error = status.is_client_error() || status.is_server_error();
            ensure(error, LAYER, cause.field(), status, "a 4xx or 5xx status")?;
        }
        for (name, policy) in &self.config.policies {
            ensure(
                !policy.window().is_zero(),
                LAYER,
                "rate_limit_policy.window",
                policy.window(),
                format!("more than 0 (policy '{name}')"),
            )?;
        }
        Ok(self.config)
    }
}

// ===== answering =====

impl RejectionResponseConfig {
    /// The response for `err`, as parts and a body.
    fn answer<E: AsRejection + fmt::Display>(&self, err: &E) -> (Parts, Bytes) {
        let rejection = err.as_rejection();
        let cause = match rejection {
            Some(Rejection::RateLimited(_)) => Cause::RateLimited,
            Some(Rejection::Overloaded(_)) => Cause::Overloaded,
            Some(Rejection::CircuitOpen(_)) => Cause::CircuitOpen,
            Some(Rejection::Elapsed(e)) if self.request_timeouts.contains(e.name()) => {
                Cause::RequestTimeout
            }
            Some(Rejection::Elapsed(_)) => Cause::Elapsed,
            Some(Rejection::RetriesExhausted(_)) => Cause::RetriesExhausted,
            None => Cause::Other,
        };
        match rejection {
            Some(r) => tracing::debug!(
                target: "palisade::http",
                layer = %r.name(),
                rejection = ?r.kind(),
                "request rejected: {err}"
            ),
            None => tracing::error!(target: "palisade::http", "request failed: {err}"),
        }
        let status = self.status(cause);
        let body = match &self.bodies[cause.index()] {
            Some(body) => body.clone(),
            None if self.detailed && rejection.is_some() => Bytes::from(err.to_string()),
            None => Bytes::from_static(status.canonical_reason().unwrap_or("Error").as_bytes()),
        };
        let mut response = Response::new(());
        *response.status_mut() = status;
        if !body.is_empty() {
            response
                .headers_mut()
                .insert(CONTENT_TYPE, self.content_type.clone());
        }
        if let Some(r) = rejection {
            self.hint(&mut response, &r);
            response.extensions_mut().insert(r.kind());
        }
        (response.into_parts().0, body)
    }

    /// `Retry-After` and the `RateLimit` fields, where the rejection says when to return.
    fn hint(&self, response: &mut Response<()>, rejection: &Rejection<'_>) {
        let retry_after = match rejection {
            Rejection::Overloaded(_) => self.overloaded_retry_after,
            other => other.retry_after(),
        };
        let headers = response.headers_mut();
        if let Some(delay) = retry_after {
            headers.insert(RETRY_AFTER, retry_after_value(delay));
        }
        if let (Rejection::RateLimited(r), true) = (rejection, self.rate_limit_headers) {
            let name = r.name();
            headers.insert(&RATELIMIT, rate_limit_value(name.as_str(), r.retry_after()));
            if let Some((_, policy)) = self.policies.iter().find(|(n, _)| n == name) {
                headers.insert(&RATELIMIT_POLICY, policy.header_value(name.as_str()));
            }
        }
    }
}

// ===== RejectionResponseLayer =====

/// Answers palisade rejections (and any other error) with HTTP responses, so the stack
/// below it never fails: its error type is `Infallible`, what an axum `Router` and hyper's
/// `serve_connection` need.
///
/// | error | default response |
/// |---|---|
/// | [`RateLimited`](palisade_core::RateLimited) | `429`, `Retry-After`, `RateLimit` (and `RateLimit-Policy` where configured) |
/// | [`Overloaded`](palisade_core::Overloaded) | `503`, `Retry-After: 1` |
/// | [`CircuitOpen`](palisade_core::CircuitOpen) | `503`, `Retry-After` when the next probe is known |
/// | [`Elapsed`](palisade_core::Elapsed) | `504`; `408` for timeouts named as the request timeout |
/// | [`RetriesExhausted`](palisade_core::RetriesExhausted) | `503` |
/// | any other error | `500`, logged |
///
/// `Retry-After` is in whole seconds, rounded up, so a client that honours it does not come
/// back before the limiter would admit it. The inner error must be [`AsRejection`] (a
/// `BoxError` or a `palisade_core::Error<E>`); the response body type must be
/// `From<Bytes>` (axum's `Body`, `Full<Bytes>` and `Bytes` are; `String` is not). The
/// response's extensions carry the [`RejectionKind`] for access logs.
///
/// On an axum `Router`, wrap the palisade layers with [`around`](Self::around), which also
/// boxes the router's `Infallible` error below them:
///
/// ```
/// use axum::{Router, routing::get};
/// use palisade_http::RejectionResponseLayer;
/// use palisade_timeout::TimeoutLayer;
/// use std::time::Duration;
/// use tower::ServiceBuilder;
///
/// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(
///     RejectionResponseLayer::default().around(
///         ServiceBuilder::new().layer(TimeoutLayer::builder().timeout(Duration::from_secs(5)).build().expect("a valid timeout")),
///     ),
/// );
/// # let _ = app;
/// ```
#[derive(Debug, Clone, Default)]
pub struct RejectionResponseLayer {
    config: Arc<RejectionResponseConfig>,
}

impl RejectionResponseLayer {
    /// A layer answering as `config` says.
    pub fn new(config: RejectionResponseConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// The config.
    pub fn config(&self) -> &RejectionResponseConfig {
        &self.config
    }

    /// This layer on top of `stack` (any palisade layers, e.g. a `ServiceBuilder`), with a
    /// [`BoxErrorLayer`](crate::BoxErrorLayer) below it: for a service whose own error is
    /// not `From` palisade's rejections (an axum `Router`'s `Infallible`).
    pub fn around<L>(self, stack: L) -> Around<L> {
        Around {
            responses: self,
            stack,
        }
    }
}

impl<S> Layer<S> for RejectionResponseLayer {
    type Service = RejectionResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RejectionResponse {
            inner,
            config: Arc::clone(&self.config),
            not_ready: None,
        }
    }
}

/// A [`RejectionResponseLayer`] around a stack of layers, with the service's error boxed
/// below them; made by [`RejectionResponseLayer::around`].
#[derive(Debug, Clone)]
pub struct Around<L> {
    responses: RejectionResponseLayer,
    stack: L,
}

impl<S, L> Layer<S> for Around<L>
where
    L: Layer<BoxErrors<S>>,
{
    type Service = RejectionResponse<L::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        self.responses
            .layer(self.stack.layer(BoxErrors::new(inner)))
    }
}

// ===== RejectionResponse =====

/// The service of [`RejectionResponseLayer`].
#[derive(Debug)]
pub struct RejectionResponse<S> {
    inner: S,
    config: Arc<RejectionResponseConfig>,
    // The answer to a failed `poll_ready`, sent to the next call: an `Infallible` service
    // must report ready.
    not_ready: Option<(Parts, Bytes)>,
}

impl<S: Clone> Clone for RejectionResponse<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
            not_ready: None,
        }
    }
}

impl<S> RejectionResponse<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwrap the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req, B> Service<Req> for RejectionResponse<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: AsRejection + fmt::Display,
    B: From<Bytes>,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.not_ready.is_none()
            && let Err(err) = ready!(self.inner.poll_ready(cx))
        {
            self.not_ready = Some(self.config.answer(&err));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.not_ready.take() {
            Some(answer) => ResponseFuture {
                kind: Kind::Answered {
                    answer: Some(answer),
                },
            },
            None => ResponseFuture {
                kind: Kind::Called {
                    inner: self.inner.call(req),
                    config: Arc::clone(&self.config),
                },
            },
        }
    }
}

pin_project! {
    /// The response future of [`RejectionResponse`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        // Waiting for the inner service.
        Called { #[pin] inner: F, config: Arc<RejectionResponseConfig> },
        // Answered without calling it (its readiness failed).
        Answered { answer: Option<(Parts, Bytes)> },
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: AsRejection + fmt::Display,
    B: From<Bytes>,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (parts, body) = match self.project().kind.project() {
            KindProj::Called { inner, config } => match ready!(inner.poll(cx)) {
                Ok(response) => return Poll::Ready(Ok(response)),
                Err(err) => config.answer(&err),
            },
            KindProj::Answered { answer } => answer
                .take()
                .expect("ResponseFuture polled after completion"),
        };
        Poll::Ready(Ok(Response::from_parts(parts, B::from(body))))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// The kind of rejection a response answered for, if it answered for one (read from the
/// response's extensions, where [`RejectionResponseLayer`] puts it).
pub fn rejection_kind<B>(response: &Response<B>) -> Option<RejectionKind> {
    response.extensions().get::<RejectionKind>().copied()
}
