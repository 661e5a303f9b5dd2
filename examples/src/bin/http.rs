//! Palisade on both ends of HTTP: an axum server with a per-client rate limit, a request
//! timeout and the caller's deadline; a hyper client with retries that honour
//! `Retry-After`, a circuit breaker and its deadline sent upstream. No glue code: the
//! server's stack answers its own rejections (429, 503, 504) and the client classifies
//! responses with palisade-http.
//!
//! Run: `cargo run -p palisade-examples --bin http` (about three seconds, then it exits).

use std::net::SocketAddr;
use std::time::Duration;

use axum::{Router, extract::ConnectInfo, http::StatusCode, routing::get};
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::http::{self as ph, key::ClientIp};
use palisade::prelude::*;
use palisade::rate_limit::RateLimitLayer;
use tower::{ServiceBuilder, ServiceExt};

/// The server: 5 requests per second per client IP, 500 ms per request, and never more
/// than the caller's own deadline (`grpc-timeout`).
async fn server() -> Result<SocketAddr, BoxError> {
    let per_client = RateLimitLayer::builder(5, Duration::from_secs(1))
        .name("per-client")
        .build()?
        .key_by(
            ClientIp::peer()
                .peer_addr_from(|c: &ConnectInfo<SocketAddr>| c.0)
                .key_fn(),
        );
    let app = Router::new()
        .route("/items", get(|| async { "items" }))
        .route("/down", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route(
            "/slow",
            get(|headers: http::HeaderMap| async move {
                let left = Deadline::current().map(Deadline::remaining);
                tracing::info!(caller = ?headers.get("grpc-timeout"), ?left, "slow handler hangs");
                std::future::pending::<&str>().await
            }),
        )
        .layer(
            ph::RejectionResponseLayer::default().around(
                ServiceBuilder::new()
                    .layer(ph::IncomingDeadlineLayer::grpc())
                    .layer(
                        TimeoutLayer::builder()
                            .timeout(Duration::from_millis(500))
                            .build()
                            .expect("a valid timeout"),
                    )
                    .layer(per_client),
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// The client: a 3 s budget per call, up to 3 attempts of idempotent requests (waiting as
/// long as the server's `Retry-After` says), a breaker that opens after 4 server errors in
/// a row (a `404` counts as a success: the server is fine), and the time left sent
/// upstream in `grpc-timeout`.
async fn client(addr: SocketAddr) -> Result<(), BoxError> {
    let retry = RetryLayer::builder()
        .classifier(ph::HttpClassifier)
        .retry_after(ph::retry_after)
        .clone_request(ph::clone_request)
        .on_event(|event| tracing::info!(?event, "retry"))
        .build()?;
    let breaker = CircuitBreakerLayer::builder()
        .name("backend")
        .consecutive_failures(4);
    let client = ServiceBuilder::new()
        .layer(
            TimeoutLayer::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("a valid timeout"),
        )
        .layer(retry)
        .layer(breaker.build()?.classifier(ph::HttpClassifier))
        .layer(ph::SendDeadlineLayer::grpc())
        .layer(ph::BoxErrorLayer::new())
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    let paths = ["/items"; 6]
        .into_iter()
        .chain(["/slow", "/nope", "/down", "/down"]);
    for path in paths {
        let started = tokio::time::Instant::now();
        let req = Request::get(format!("http://{addr}{path}")).body(Full::default())?;
        match client.clone().oneshot(req).await {
            Ok(res) => tracing::info!("GET {path} -> {} in {:?}", res.status(), started.elapsed()),
            Err(err) => tracing::info!("GET {path} -> {err} in {:?}", started.elapsed()),
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let addr = server().await?;
    client(addr).await
}
