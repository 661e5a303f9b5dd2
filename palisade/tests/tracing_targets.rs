//! Every layer logs on the `tracing` target named after it (`palisade::<layer>`), so a user
//! can filter one layer's logs with `RUST_LOG=palisade::circuit_breaker=debug`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::prelude::*;
use tower::{Layer, ServiceExt, service_fn};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A subscriber that records the target of every event.
#[derive(Clone, Default)]
struct Targets {
    seen: Arc<Mutex<BTreeSet<String>>>,
    ids: Arc<AtomicU64>,
}

impl Subscriber for Targets {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.ids.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        self.seen
            .lock()
            .unwrap()
            .insert(event.metadata().target().to_owned());
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn each_layer_logs_on_its_own_target() {
    let targets = Targets::default();
    let _guard = tracing::subscriber::set_default(targets.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        // timeout: a hung call elapses
        let hung = TimeoutLayer::builder()
            .name("t")
            .timeout(Duration::from_millis(10))
            .build()
            .unwrap()
            .layer(service_fn(|_: u32| async {
                std::future::pending::<()>().await;
                Ok::<u32, BoxError>(0)
            }));
        assert!(hung.oneshot(1).await.is_err());

        // retry: a failing call is retried
        let retried = RetryLayer::builder()
            .name("r")
            .max_attempts(2)
            .no_budget()
            .build()
            .unwrap()
            .layer(service_fn(|_: u32| async {
                Err::<u32, BoxError>("down".into())
            }));
        assert!(retried.oneshot(1).await.is_err());

        // circuit breaker: a transition
        let breaker = CircuitBreakerLayer::builder().name("c").build().unwrap();
        breaker.handle().force_open();

        // rate limit: a rejection
        let limited = RateLimitLayer::builder(1, Duration::from_secs(1))
            .name("l")
            .reject()
            .build()
            .unwrap()
            .layer(service_fn(|x: u32| async move { Ok::<u32, BoxError>(x) }));
        let _ = limited.clone().oneshot(1).await;
        assert!(limited.oneshot(2).await.is_err());
    });
    let seen = targets.seen.lock().unwrap().clone();
    for layer in ["timeout", "retry", "circuit_breaker", "rate_limit"] {
        let target = format!("palisade::{layer}");
        assert!(seen.contains(&target), "no event on {target}; saw {seen:?}");
    }
    assert!(
        seen.iter().all(|t| t.starts_with("palisade")),
        "palisade's layers log only on palisade targets: {seen:?}"
    );
}
