//! HTTP and gRPC for [Palisade](https://github.com/palisade-rs/palisade)'s resilience
//! layers: palisade on an axum or hyper server and around an HTTP client, with no glue.
//!
//! Built on the `http` crate only (no web framework): it works with axum, hyper, tonic
//! and reqwest-style clients alike.
//!
//! # Example
//!
//! A rate limit on an axum `Router`, answering `429` with `Retry-After` by itself:
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use palisade_http::RejectionResponseLayer;
//! use palisade_rate_limit::RateLimitLayer;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limit = RateLimitLayer::builder(1, Duration::from_secs(2)).name("api").build()?;
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(RejectionResponseLayer::default().around(ServiceBuilder::new().layer(limit)));
//!
//! let get = || Request::get("/").body(Body::empty()).unwrap();
//! assert_eq!(app.clone().oneshot(get()).await?.status(), StatusCode::OK);
//! let limited = app.oneshot(get()).await?;
//! assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(limited.headers()["retry-after"], "2");
//! assert_eq!(limited.headers()["ratelimit"], r#""api";r=0;t=2"#);
//! # Ok(())
//! # }
//! ```
//!
//! # Server side
//!
//! - [`RejectionResponseLayer`]: rejections become responses (`RateLimited` → `429` with
//!   `Retry-After` and `RateLimit`; `Overloaded`, `CircuitOpen` → `503`; `Elapsed` →
//!   `504`, or `408` for the server's own request timeout; other errors → `500`), so the
//!   stack's error is `Infallible`. [`around`](RejectionResponseLayer::around) also boxes
//!   the router's error below your layers ([`BoxErrorLayer`]).
//! - [`key`]: client keys for keyed rate limits and breakers: the peer address, trusted
//!   `X-Forwarded-For` / `Forwarded` with a proxy count, a header (API key, tenant).
//! - [`PriorityFrom`]: a request's priority for load shedding from a header or its route.
//! - [`IncomingDeadlineLayer`]: the caller's deadline from `grpc-timeout` (or a header of
//!   your choice) bounds the server's work.
//!
//! # Client side
//!
//! - [`HttpClassifier`] for retry and breakers: `5xx`, `429`, `408` and connection errors
//!   are failures; other `4xx` are not (a breaker never opens on `404`); our own layers'
//!   local refusals are ignored. [`GrpcClassifier`] does the same from `grpc-status`.
//! - [`retry_after`]: the server's `Retry-After` (seconds or HTTP-date), `RateLimit` or
//!   gRPC pushback as the retry delay, within the caller's deadline.
//! - [`clone_request`]: copies of `http::Request`s with cloneable bodies for retries and
//!   hedges; only idempotent methods (or requests with an `Idempotency-Key`) are copied,
//!   so a `POST` is never sent twice by default. [`BufferRequestBodyLayer`] buffers
//!   streamed bodies (a gateway forwarding axum's `Body`) so they can be copied too.
//! - [`SendDeadlineLayer`]: the caller's remaining time sent upstream in `grpc-timeout`.
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use palisade_core::BoxError;
//! use palisade_http::{HttpClassifier, SendDeadlineLayer, clone_request, retry_after};
//! use palisade_retry::{RetryConfig, RetryLayer};
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // A transport whose server is busy once, then answers.
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = Arc::clone(&calls);
//! let transport = service_fn(move |_req: Request<Full<Bytes>>| {
//!     let busy = seen.fetch_add(1, Ordering::SeqCst) == 0;
//!     async move {
//!         let status = if busy { 503 } else { 200 };
//!         Ok::<_, BoxError>(Response::builder().status(status).header("retry-after", "1").body(())?)
//!     }
//! });
//! let retry = RetryLayer::builder()
//!     .classifier(HttpClassifier)
//!     .retry_after(retry_after)
//!     .clone_request(clone_request)
//!     .build()?;
//! let client = ServiceBuilder::new()
//!     .layer(retry)
//!     .layer(SendDeadlineLayer::grpc())
//!     .service(transport);
//!
//! let started = tokio::time::Instant::now();
//! let response = client.oneshot(Request::get("/").body(Full::default())?).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! assert!(started.elapsed() >= std::time::Duration::from_secs(1)); // Retry-After honoured
//! # Ok(())
//! # }
//! ```
//!
//! # The `http` feature of the facade
//!
//! In the `palisade` facade crate, the `http` feature brings this crate in as
//! `palisade::http` and turns on deadlines in `http::Request` extensions in the other
//! crates.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod boxed;
mod buffer;
mod classify;
pub mod deadline;
pub mod headers;
pub mod key;
pub mod priority;
mod quota;
mod response;

pub use boxed::{BoxErrorFuture, BoxErrorLayer, BoxErrors};
pub use buffer::{BufferError, BufferFuture, BufferRequestBody, BufferRequestBodyLayer};
pub use classify::{
    GRPC_RETRY_PUSHBACK_MS, GRPC_STATUS, GrpcClassifier, GrpcLoadSignal, HttpClassifier,
    HttpLoadSignal, IDEMPOTENCY_KEY, clone_any_request, clone_request, grpc_code, grpc_outcome,
    grpc_status, grpc_status_header, is_retry_safe, retry_after, status_outcome, throttle_hint,
};
pub use deadline::{IncomingDeadline, IncomingDeadlineLayer, SendDeadline, SendDeadlineLayer};
pub use priority::PriorityFrom;
pub use quota::{X_RATELIMIT_REMAINING, X_RATELIMIT_RESET, quota_hint};
pub use response::{
    Around, Cause, RejectionResponse, RejectionResponseConfig, RejectionResponseConfigBuilder,
    RejectionResponseLayer, ResponseFuture, rejection_kind,
};
