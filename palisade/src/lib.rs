//! Palisade: resilience middleware for Rust services and data pipelines, as
//! [tower](https://docs.rs/tower) layers.
//!
//! This facade re-exports each palisade crate behind a cargo feature of its name and offers a
//! [`prelude`]. The default features are what a production service needs (`timeout`,
//! `retry`, `circuit-breaker`, `rate-limit`, `degrade`); `chaos` (fault injection and the
//! simulation kit) is opt-in, for tests and game days. Every layer wraps any `tower::Service`: an HTTP or
//! database client, a queue consumer, a plain `async fn` through `service_fn`.
//!
//! # Example
//!
//! ```
//! use palisade::prelude::*;
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // A flaky stage of a pipeline: here, one that hangs.
//! let stage = service_fn(|record: u64| async move {
//!     if record == 13 {
//!         std::future::pending::<()>().await;
//!     }
//!     Ok::<_, BoxError>(record * 2)
//! });
//! let mut stage = ServiceBuilder::new()
//!     .layer(TimeoutLayer::builder().timeout(Duration::from_millis(250)).build().expect("a valid timeout"))
//!     .service(stage);
//!
//! assert_eq!(stage.ready().await.unwrap().call(21).await.unwrap(), 42);
//! let err = stage.ready().await.unwrap().call(13).await.unwrap_err();
//! assert!(err.is::<Elapsed>(), "the hung call was cancelled after 250 ms");
//! # }
//! ```
//!
//! # Crates
//!
//! | feature | crate | what it does |
//! |---|---|---|
//! | (always) | [`core`] | classification, flat errors, events, metrics naming, deadlines |
//! | `timeout` | [`timeout`] | per-call timeouts and deadline propagation |
//! | `retry` | [`retry`] | retry with backoff and jitter, retry budgets, Retry-After, hedging |
//! | `circuit-breaker` | [`circuit_breaker`] | circuit breakers with sliding windows, keyed breakers |
//! | `rate-limit` | [`rate_limit`] | GCRA rate limits (direct, keyed), concurrency and adaptive limits |
//! | `degrade` | [`degrade`] | fallbacks, serve-stale, load shedding, degraded marks |
//! | `chaos` (opt-in) | [`chaos`] | fault injection and a deterministic incident simulation kit |
//! | `http` (opt-in) | `http` | HTTP and gRPC: rejections as responses, client keys, classifiers, `Retry-After`, deadlines over the wire |
//!
//! Other features: `metrics` (feed the `metrics` facade), `serde` (configs from data).
//! `policy` adds `palisade::policy` (whole policies from TOML or JSON files, with
//! environment overrides) and `palisade::registry` (policies shared by name,
//! reloaded in place, a JSON snapshot); `yaml` reads YAML files too; `watch` reloads a
//! registry when its file changes.
//! `http` also carries deadlines in `http::Request` extensions in every enabled crate.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use palisade_core as core;
pub use palisade_core::{
    AsRejection, BoxError, CircuitOpen, Classify, ConfigError, Deadline, DefaultClassifier,
    Elapsed, Error, Name, Outcome, Overloaded, Priority, RateLimited, Rejection, RejectionKind,
    RetriesExhausted, find_rejection,
};

#[cfg(feature = "timeout")]
pub use palisade_timeout as timeout;

#[cfg(feature = "retry")]
pub use palisade_retry as retry;

#[cfg(feature = "circuit-breaker")]
pub use palisade_circuit_breaker as circuit_breaker;

#[cfg(feature = "rate-limit")]
pub use palisade_rate_limit as rate_limit;

#[cfg(feature = "degrade")]
pub use palisade_degrade as degrade;

#[cfg(feature = "chaos")]
pub use palisade_chaos as chaos;

#[cfg(feature = "http")]
pub use palisade_http as http;

mod ext;
mod stack;
pub use ext::{ServiceBuilderExt, ServiceBuilderWith};
pub use stack::{Stack, StackLayer};

// The README's examples are tested with the crate's doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// Every metric the enabled layers emit, for dashboards and alert-rule checks.
pub fn metrics() -> Vec<palisade_core::metrics::MetricDef> {
    #[allow(unused_mut)]
    let mut all: Vec<palisade_core::metrics::MetricDef> = Vec::new();
    #[cfg(feature = "timeout")]
    all.extend_from_slice(palisade_timeout::METRICS);
    #[cfg(feature = "retry")]
    all.extend_from_slice(palisade_retry::METRICS);
    #[cfg(feature = "circuit-breaker")]
    all.extend_from_slice(palisade_circuit_breaker::METRICS);
    #[cfg(feature = "rate-limit")]
    all.extend_from_slice(palisade_rate_limit::METRICS);
    #[cfg(feature = "rate-limit")]
    all.extend_from_slice(palisade_rate_limit::throttle::METRICS);
    #[cfg(feature = "degrade")]
    all.extend_from_slice(palisade_degrade::METRICS);
    #[cfg(feature = "chaos")]
    all.extend_from_slice(palisade_chaos::METRICS);
    all
}

/// The names most programs need: `use palisade::prelude::*;`.
pub mod prelude {
    pub use palisade_core::{
        AsRejection, BoxError, CircuitOpen, Classify, Deadline, Elapsed, Error, Name, Outcome,
        Overloaded, Priority, RateLimited, RetriesExhausted,
    };

    pub use crate::{ServiceBuilderExt, Stack};

    #[cfg(feature = "timeout")]
    pub use palisade_timeout::{TimeoutConfig, TimeoutLayer};

    #[cfg(feature = "retry")]
    pub use palisade_retry::{Backoff, Jitter, RetryBudget, RetryConfig, RetryLayer};

    #[cfg(feature = "circuit-breaker")]
    pub use palisade_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};

    #[cfg(feature = "rate-limit")]
    pub use palisade_rate_limit::{
        AdaptiveLimitConfig, AdaptiveLimitLayer, Aimd, ConcurrencyLimitConfig,
        ConcurrencyLimitLayer, RateLimitConfig, RateLimitLayer,
    };

    #[cfg(feature = "degrade")]
    pub use palisade_degrade::{
        Degraded, FallbackConfig, FallbackLayer, Marked, ShedConfig, ShedLayer, StaleCacheLayer,
        StaleConfig, Switch,
    };

    #[cfg(feature = "chaos")]
    pub use palisade_chaos::{ChaosConfig, ChaosLayer};
}

#[cfg(feature = "policy")]
#[cfg_attr(docsrs, doc(cfg(feature = "policy")))]
pub mod policy;
#[cfg(feature = "policy")]
pub use policy::{Policies, Policy};
#[cfg(feature = "policy")]
#[cfg_attr(docsrs, doc(cfg(feature = "policy")))]
pub mod registry;
#[cfg(feature = "policy")]
pub use registry::Registry;
