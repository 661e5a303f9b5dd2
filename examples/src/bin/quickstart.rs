//! Palisade in 30 seconds: a flaky pipeline stage under a timeout.
//!
//! A stage that extracts records from a source that sometimes hangs. Without a timeout, one
//! hung call stalls the whole job; with palisade's `TimeoutLayer`, the hung call is
//! cancelled after its deadline, counted, and the job moves on.
//!
//! Run: `cargo run -p palisade-examples --bin quickstart`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade::prelude::*;
use palisade::timeout::TimeoutEvent;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    // The source: every 7th record hangs (a stuck connection), the rest take 5 ms.
    let source = service_fn(|id: u64| async move {
        if id % 7 == 6 {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok::<_, BoxError>(format!("record-{id}"))
    });

    let timed_out = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&timed_out);
    let timeout = TimeoutLayer::builder()
        .name("extract")
        .timeout(Duration::from_millis(100))
        .on_event(move |event| {
            if let TimeoutEvent::Elapsed { .. } = event {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build()?;

    let mut stage = ServiceBuilder::new().layer(timeout).service(source);

    let started = tokio::time::Instant::now();
    let (mut loaded, mut failed) = (0u64, 0u64);
    for id in 0..28 {
        match stage.ready().await?.call(id).await {
            Ok(record) => {
                loaded += 1;
                tracing::debug!(%record, "extracted");
            }
            Err(err) => {
                failed += 1;
                tracing::warn!(id, error = %err, "record skipped");
            }
        }
    }

    let summary = format!(
        "extracted {loaded} records, {failed} cancelled by the timeout ({} events) in {:?}",
        timed_out.load(Ordering::Relaxed),
        started.elapsed()
    );
    tracing::info!("{summary}");
    assert_eq!(failed, 4, "every hung call was cancelled");
    Ok(())
}
