//! Errors stay flat with **every** palisade layer, in two orders and with both error types:
//! fallback, stale cache, shed, hedge, concurrency limit, adaptive limit and chaos join the
//! timeout / retry / breaker / rate limit of `flat_errors.rs`.
//!
//! Each layer requires only `S::Error: From<TheRejection>` (and `AsRejection` for the
//! default classifiers), so `BoxError` and `palisade::Error<E>` satisfy the whole stack in any
//! order; the backend's own error passes through every layer untouched, and a rejection
//! from deep inside is still found by kind at the top.

#![cfg(feature = "chaos")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use palisade::chaos::{ChaosConfig, ChaosLayer};
use palisade::degrade::fallback::Value;
use palisade::degrade::{
    FallbackConfig, FallbackLayer, Marked, ShedConfig, ShedLayer, StaleCacheLayer, StaleConfig,
};
use palisade::prelude::*;
use palisade::rate_limit::{AdaptiveLimitLayer, ConcurrencyLimitLayer};
use palisade::retry::hedge::HedgeLayer;
use palisade::{RejectionKind, Stack};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// Request 1 fails in the backend; 2 answers; anything else answers too.
async fn backend<E>(x: u32, wrap: fn(std::io::Error) -> E) -> Result<Marked<u32>, E> {
    match x {
        1 => Err(wrap(std::io::Error::other("backend failed"))),
        _ => Ok(Marked::new(x)),
    }
}

fn boxed(e: std::io::Error) -> BoxError {
    e.into()
}

fn kind_boxed(e: &BoxError) -> Option<RejectionKind> {
    e.as_rejection().map(|r| r.kind())
}

fn kind_typed(e: &Error<std::io::Error>) -> Option<RejectionKind> {
    e.as_rejection().map(|r| r.kind())
}

async fn check<S, E>(mut svc: S, kind: fn(&E) -> Option<RejectionKind>)
where
    S: Service<u32, Response = Marked<u32>, Error = E>,
    E: std::fmt::Debug,
{
    // the live answer
    let ok = svc.ready().await.unwrap().call(2).await.unwrap();
    assert_eq!(*ok, 2);
    assert!(ok.is_live());
    // the backend's own error passes through every layer as itself
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(kind(&err), None, "{err:?}");
    // a rejection from the rate limit deep inside (quota of 3: two calls above, this is
    // the third) answers once more, then the fourth is rate limited and found by kind
    let _ = svc.ready().await.unwrap().call(3).await;
    let err = svc.ready().await.unwrap().call(4).await.unwrap_err();
    assert_eq!(kind(&err), Some(RejectionKind::RateLimited), "{err:?}");
}

macro_rules! layers {
    ($wrap:expr) => {{
        // the fallback answers only for an open circuit: the other outcomes reach the caller
        let fallback = FallbackLayer::new(
            FallbackConfig::builder()
                .name("fb")
                .on_failure(false)
                .on_rejection(RejectionKind::RateLimited, false)
                .on_rejection(RejectionKind::Overloaded, false)
                .on_rejection(RejectionKind::Elapsed, false)
                .on_rejection(RejectionKind::RetriesExhausted, false)
                .build()
                .unwrap(),
            Value::new(Marked::new(0u32)),
        );
        let stale = StaleCacheLayer::new(
            StaleConfig::builder()
                .name("stale")
                .max_staleness(Duration::from_millis(1))
                .build()
                .unwrap(),
            |x: &u32| *x,
        );
        let shed = ShedLayer::new(
            ShedConfig::builder()
                .name("shed")
                .max_in_flight(64)
                .build()
                .unwrap(),
        );
        let hedge = HedgeLayer::builder()
            .name("hedge")
            .delay(Duration::from_secs(3600))
            .build()
            .unwrap();
        let concurrency = ConcurrencyLimitLayer::builder(64)
            .name("bulkhead")
            .build()
            .unwrap();
        let adaptive = AdaptiveLimitLayer::builder()
            .name("adaptive")
            .build()
            .unwrap();
        let chaos = ChaosLayer::new(
            ChaosConfig::builder()
                .name("chaos")
                .error(0.0, move |_: &u32| $wrap(std::io::Error::other("injected")))
                .build()
                .unwrap(),
        );
        let limit = RateLimitLayer::builder(3, Duration::from_secs(3600))
            .name("quota")
            .burst(3)
            .reject()
            .build()
            .unwrap();
        (
            fallback,
            stale,
            shed,
            hedge,
            concurrency,
            adaptive,
            chaos,
            limit,
        )
    }};
}

macro_rules! check_two_orders {
    ($wrap:expr, $kind:expr) => {{
        let (fallback, stale, shed, hedge, concurrency, adaptive, chaos, limit) = layers!($wrap);
        let svc = Stack::new()
            .fallback(fallback)
            .retry(hedge)
            .limit(
                ServiceBuilder::new()
                    .layer(stale)
                    .layer(shed)
                    .layer(concurrency)
                    .layer(adaptive)
                    .layer(limit)
                    .layer(chaos)
                    .into_inner(),
            )
            .layer(service_fn(|x: u32| backend(x, $wrap)));
        check(svc, $kind).await;

        let (fallback, stale, shed, hedge, concurrency, adaptive, chaos, limit) = layers!($wrap);
        let svc = ServiceBuilder::new()
            .layer(chaos)
            .layer(limit)
            .layer(adaptive)
            .layer(concurrency)
            .layer(hedge)
            .layer(shed)
            .layer(stale)
            .layer(fallback)
            .service(service_fn(|x: u32| backend(x, $wrap)));
        check(svc, $kind).await;
    }};
}

#[tokio::test(start_paused = true)]
async fn every_layer_keeps_boxed_errors_flat_in_two_orders() {
    check_two_orders!(boxed, kind_boxed);
}

#[tokio::test(start_paused = true)]
async fn every_layer_keeps_typed_errors_flat_in_two_orders() {
    check_two_orders!(Error::Inner, kind_typed);
}
