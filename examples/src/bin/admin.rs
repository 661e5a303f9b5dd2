//! An admin endpoint for a service's resilience policies: a [`Registry`] loaded from a
//! policies file (reloaded when the file changes), its live state as JSON, and breaker
//! controls, behind a bearer token, on loopback by default.
//!
//! Run: `PALISADE_ADMIN_TOKEN=$(openssl rand -hex 16) cargo run -p palisade-examples --bin
//! admin -- --policies policies.toml` (without `--policies`, two built-in policies). Then:
//!
//! ```text
//! curl -H "Authorization: Bearer $PALISADE_ADMIN_TOKEN" http://127.0.0.1:9901/resilience
//! curl -X POST -H "Authorization: Bearer $PALISADE_ADMIN_TOKEN" \
//!     http://127.0.0.1:9901/resilience/payments/breaker/force-open
//! ```
//!
//! | route | does |
//! |---|---|
//! | `GET /resilience` | the registry's snapshot: every policy's config and live state |
//! | `POST /resilience/{policy}/breaker/force-open` | reject every call until reset |
//! | `POST /resilience/{policy}/breaker/force-closed` | admit every call (never open) until reset |
//! | `POST /resilience/{policy}/breaker/reset` | back to closed and enforcing, window emptied |
//! | `POST /resilience/{policy}/degrade` | the policy's degrade switch to degraded mode: fallbacks answer, stale caches serve, shedders keep only critical traffic |
//! | `POST /resilience/{policy}/restore` | the degrade switch back to live |
//!
//! Every route needs `Authorization: Bearer <token>`, the token from the environment
//! variable `PALISADE_ADMIN_TOKEN` (not a flag: flags show in process lists). The program
//! refuses to start without one (or with one under 16 characters). A missing or wrong
//! token gets `401`; an unknown policy, or a policy without a breaker, `404`. Logs go to
//! stderr (`RUST_LOG`, default `info`).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use palisade::policy::Policies;
use palisade::registry::Registry;
use tracing_subscriber::EnvFilter;

/// The variable holding the admin token.
const TOKEN_VAR: &str = "PALISADE_ADMIN_TOKEN";
/// The shortest token accepted.
const MIN_TOKEN_LEN: usize = 16;

/// Policies used without `--policies`.
const BUILT_IN: &str = r#"
[policies.payments.timeout]
timeout = "2s"
[policies.payments.retry]
max_attempts = 3
backoff = { kind = "exponential", base = "50ms", max_delay = "1s" }
[policies.payments.circuit_breaker]
failure_rate_threshold = 50.0
open_duration = "30s"
[policies.payments.attempt_timeout]
timeout = "500ms"

[policies.search.timeout]
timeout = "300ms"
[policies.search.concurrency_limit]
max_in_flight = 64
"#;

/// Serve a policy registry's admin endpoint.
#[derive(Debug, Parser)]
#[command(name = "admin", about)]
struct Args {
    /// The policies file (`.toml`, `.json`); reloaded when it changes. `PALISADE__…`
    /// variables override its fields.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Where to listen. Loopback by default: expose it further only behind TLS.
    #[arg(long, default_value = "127.0.0.1:9901")]
    addr: SocketAddr,
}

/// The token every request must carry.
#[derive(Clone)]
struct Token(Arc<str>);

/// Never prints the secret.
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Refuse a missing, empty or short token.
    fn new(token: Option<String>) -> Result<Self, String> {
        match token {
            None => Err(format!(
                "{TOKEN_VAR} is not set; set it to a secret of {MIN_TOKEN_LEN} or more characters \
                 (e.g. `openssl rand -hex 16`)"
            )),
            Some(t) if t.trim().len() < MIN_TOKEN_LEN => Err(format!(
                "{TOKEN_VAR} is {} characters long; use {MIN_TOKEN_LEN} or more",
                t.trim().len()
            )),
            Some(t) => Ok(Self(t.trim().into())),
        }
    }

    /// Compare in constant time, so that timing does not tell how much of a guess is right.
    fn matches(&self, given: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        expected.len() == given.len()
            && expected
                .iter()
                .zip(given)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// `401` unless the request carries `Authorization: Bearer <token>`.
async fn authorize(State(token): State<Token>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match given {
        Some(given) if token.matches(given) => next.run(request).await,
        _ => {
            let mut response = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn snapshot(State(registry): State<Registry>) -> Response {
    Json(registry.snapshot()).into_response()
}

/// What a breaker control did.
#[derive(Clone, Copy)]
enum Control {
    ForceOpen,
    ForceClosed,
    Reset,
}

async fn control(registry: &Registry, policy: &str, control: Control) -> Response {
    let Some(handles) = registry.handles(policy) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no policy named {policy:?}"),
        );
    };
    let Some(breaker) = handles.circuit_breaker() else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("the policy {policy:?} has no circuit breaker"),
        );
    };
    match control {
        Control::ForceOpen => breaker.force_open(),
        Control::ForceClosed => breaker.disable(),
        Control::Reset => breaker.reset(),
    }
    tracing::info!(policy, state = %breaker.state(), "breaker controlled by an operator");
    Json(serde_json::json!({ "policy": policy, "state": breaker.state() })).into_response()
}

/// Flip the policy's degrade switch ([`Registry::degrade_switch`]).
async fn degrade(registry: &Registry, policy: &str, degraded: bool) -> Response {
    let Some(switch) = registry.degrade_switch(policy) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no policy named {policy:?}"),
        );
    };
    if degraded {
        switch.degrade();
    } else {
        switch.restore();
    }
    tracing::info!(policy, degraded, "degrade mode set by an operator");
    Json(serde_json::json!({ "policy": policy, "degraded": switch.is_degraded() })).into_response()
}

/// The admin routes over `registry`, every one behind `token`.
fn router(registry: Registry, token: Token) -> Router {
    let breaker = |c: Control| {
        move |State(registry): State<Registry>, Path(policy): Path<String>| async move {
            control(&registry, &policy, c).await
        }
    };
    Router::new()
        .route("/resilience", get(snapshot))
        .route(
            "/resilience/{policy}/breaker/force-open",
            post(breaker(Control::ForceOpen)),
        )
        .route(
            "/resilience/{policy}/breaker/force-closed",
            post(breaker(Control::ForceClosed)),
        )
        .route(
            "/resilience/{policy}/breaker/reset",
            post(breaker(Control::Reset)),
        )
        .route(
            "/resilience/{policy}/degrade",
            post(
                |State(registry): State<Registry>, Path(policy): Path<String>| async move {
                    degrade(&registry, &policy, true).await
                },
            ),
        )
        .route(
            "/resilience/{policy}/restore",
            post(
                |State(registry): State<Registry>, Path(policy): Path<String>| async move {
                    degrade(&registry, &policy, false).await
                },
            ),
        )
        .route_layer(middleware::from_fn_with_state(token, authorize))
        .with_state(registry)
}

async fn run(args: Args) -> Result<(), String> {
    let token = Token::new(std::env::var(TOKEN_VAR).ok())?;
    let env = std::env::vars();
    let (registry, _watcher) = match &args.policies {
        Some(path) => {
            let policies = Policies::from_path(path, env).map_err(|e| e.to_string())?;
            let registry = Registry::from_policies(policies);
            let watcher = registry
                .watch(path, std::env::vars(), |outcome| match outcome {
                    Ok(report) => tracing::info!(%report, "policies reloaded"),
                    Err(errors) => tracing::warn!(%errors, "policies file not applied"),
                })
                .map_err(|e| e.to_string())?;
            (registry, Some(watcher))
        }
        None => {
            let policies = Policies::load(palisade::policy::Format::Toml, BUILT_IN, env)
                .map_err(|e| e.to_string())?;
            (Registry::from_policies(policies), None)
        }
    };
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    if !args.addr.ip().is_loopback() {
        tracing::warn!(addr = %args.addr, "the admin endpoint listens beyond loopback");
    }
    tracing::info!(addr = %args.addr, policies = ?registry.names(), "admin endpoint ready");
    axum::serve(listener, router(registry, token))
        .await
        .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "admin: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use palisade::circuit_breaker::State as Breaker;
    use tower::ServiceExt;

    const TOKEN: &str = "0123456789abcdef-test";

    fn app() -> (Router, Registry) {
        let registry = Registry::from_policies(Policies::from_toml(BUILT_IN).unwrap());
        let token = Token::new(Some(TOKEN.to_owned())).unwrap();
        (router(registry.clone(), token), registry)
    }

    fn request(method: &str, uri: &str, auth: Option<&str>) -> Request<Body> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        request.body(Body::empty()).unwrap()
    }

    async fn body(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_missing_or_wrong_token_is_refused_on_every_route() {
        let (app, registry) = app();
        let bearer = format!("Bearer {TOKEN}");
        let wrong = format!("Bearer {TOKEN}x");
        for (method, uri) in [
            ("GET", "/resilience"),
            ("POST", "/resilience/payments/breaker/force-open"),
            ("POST", "/resilience/payments/breaker/force-closed"),
            ("POST", "/resilience/payments/breaker/reset"),
            ("POST", "/resilience/payments/degrade"),
            ("POST", "/resilience/payments/restore"),
        ] {
            for auth in [
                None,
                Some(wrong.as_str()),
                Some(TOKEN),
                Some("Bearer "),
                Some("Basic abc"),
            ] {
                let response = app
                    .clone()
                    .oneshot(request(method, uri, auth))
                    .await
                    .unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "{method} {uri} {auth:?}"
                );
                assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
            }
            let response = app
                .clone()
                .oneshot(request(method, uri, Some(&bearer)))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{method} {uri}");
        }
        // The refused calls changed nothing; the accepted ones ended with a reset and a
        // restore.
        assert_eq!(
            registry.degrade_switch("payments").map(|s| s.is_degraded()),
            Some(false)
        );
        let breaker = registry.handles("payments").unwrap();
        assert_eq!(breaker.circuit_breaker().unwrap().state(), Breaker::Closed);
    }

    #[tokio::test]
    async fn breaker_controls_show_in_the_snapshot() {
        let (app, _) = app();
        let bearer = format!("Bearer {TOKEN}");
        let response = app
            .clone()
            .oneshot(request(
                "POST",
                "/resilience/payments/breaker/force-open",
                Some(&bearer),
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body(response).await["state"], "forced_open");

        let response = app
            .clone()
            .oneshot(request("GET", "/resilience", Some(&bearer)))
            .await
            .unwrap();
        let snapshot = body(response).await;
        let payments = &snapshot["policies"]["payments"];
        assert_eq!(payments["circuit_breaker"]["state"], "forced_open");
        assert_eq!(payments["events"][0]["event"], "closed -> forced_open");
        assert_eq!(payments["events"][0]["reason"], "an operator");
        assert_eq!(
            snapshot["policies"]["search"]["concurrency_limit"]["max_in_flight"],
            64
        );

        let response = app
            .clone()
            .oneshot(request(
                "POST",
                "/resilience/payments/breaker/force-closed",
                Some(&bearer),
            ))
            .await
            .unwrap();
        assert_eq!(body(response).await["state"], "disabled");

        // Degrade mode, on the policy's switch, in the snapshot.
        let response = app
            .clone()
            .oneshot(request(
                "POST",
                "/resilience/payments/degrade",
                Some(&bearer),
            ))
            .await
            .unwrap();
        assert_eq!(body(response).await["degraded"], true);
        let response = app
            .clone()
            .oneshot(request("GET", "/resilience", Some(&bearer)))
            .await
            .unwrap();
        let snapshot = body(response).await;
        assert_eq!(snapshot["policies"]["payments"]["degraded"], true);
        assert_eq!(snapshot["policies"]["search"]["degraded"], false);
    }

    #[tokio::test]
    async fn unknown_policies_and_policies_without_a_breaker_are_not_found() {
        let (app, _) = app();
        let bearer = format!("Bearer {TOKEN}");
        for uri in [
            "/resilience/nope/breaker/reset",
            "/resilience/search/breaker/force-open",
            "/resilience/nope/degrade",
        ] {
            let response = app
                .clone()
                .oneshot(request("POST", uri, Some(&bearer)))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
            assert!(body(response).await["error"].is_string());
        }
    }

    #[test]
    fn the_program_refuses_to_start_without_a_good_token() {
        assert!(Token::new(None).unwrap_err().contains(TOKEN_VAR));
        assert!(Token::new(Some("short".into())).unwrap_err().contains("16"));
        assert!(Token::new(Some(" ".repeat(20))).is_err());
        let token = Token::new(Some(TOKEN.into())).unwrap();
        assert!(token.matches(TOKEN.as_bytes()));
        assert!(!token.matches(b"0123456789abcdef-tesT"));
        assert!(!token.matches(b""));
    }
}
