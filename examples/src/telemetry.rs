//! The Prometheus endpoint of the examples: histograms with buckets, a `# HELP` line for
//! every documented metric, and `/metrics` as the only path served.
//!
//! [`install_recorder`] installs the process-wide `metrics` recorder (once; later calls
//! return the same handle). [`serve_metrics`] also serves it over HTTP on a loopback
//! address. Both must run before the palisade layers are built: layers register their
//! metric handles when they are built.
//!
//! Histograms are rendered as Prometheus histograms (`_bucket`, `_sum`, `_count`), not as
//! summaries, so they can be aggregated across instances and an SLO can count the calls
//! faster than a threshold: every latency threshold an SLO uses must be one of
//! [`LATENCY_BUCKETS`] (the SLO generator, [`crate::slo`], refuses any other).
//!
//! ```
//! use palisade_examples::telemetry;
//!
//! let handle = telemetry::install_recorder()?;
//! metrics::counter!("etl_records_total", "stage" => "extracted").increment(3);
//! let text = handle.render();
//! assert!(text.contains("# HELP etl_records_total"));
//! assert!(text.contains("etl_records_total{stage=\"extracted\"} 3"));
//! # Ok::<(), palisade::BoxError>(())
//! ```

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use palisade::BoxError;
use palisade::core::metrics::MetricKind;

use crate::etl::Summary;
use crate::etl::stats::ETL_METRICS;

/// Bucket bounds (seconds) of every latency histogram (`*_seconds`).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Bucket bounds (seconds) of `palisade_degrade_stale_age_seconds`: stale answers are
/// seconds to hours old.
pub const STALE_AGE_BUCKETS: &[f64] = &[
    1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];

/// Bucket bounds of `palisade_retry_attempts` (attempts per request).
pub const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 20.0, 50.0, 100.0];

/// The pipeline metrics this module sets at the end of each run (data completeness), with
/// their kind and help text; [`ETL_METRICS`] lists the pipeline's others.
pub const RUN_METRICS: &[(&str, MetricKind, &str)] = &[
    (
        "etl_run_expected_records",
        MetricKind::Gauge,
        "records the last finished run should have loaded: the source's declared rows minus rejected and duplicate rows",
    ),
    (
        "etl_run_loaded_records",
        MetricKind::Gauge,
        "records of the last finished run's source held by the sink at its end",
    ),
    (
        "etl_run_completeness_ratio",
        MetricKind::Gauge,
        "loaded / expected records of the last finished run (1 when nothing was expected)",
    ),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process-wide Prometheus recorder with histogram buckets and the help text
/// of every metric palisade and the examples document; returns its handle (the same one
/// on every later call). Fails if another `metrics` recorder is already installed.
pub fn install_recorder() -> Result<PrometheusHandle, BoxError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = builder()?.install_recorder()?;
    describe_all();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The exporter's configuration: [`LATENCY_BUCKETS`] for every histogram, with
/// [`STALE_AGE_BUCKETS`] and [`ATTEMPT_BUCKETS`] for the two that do not measure latency.
pub fn builder() -> Result<PrometheusBuilder, BoxError> {
    Ok(PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("palisade_degrade_stale_age_seconds".into()),
            STALE_AGE_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("palisade_retry_attempts".into()),
            ATTEMPT_BUCKETS,
        )?)
}

/// Register the `# HELP` text of `palisade::metrics()`, [`ETL_METRICS`], [`RUN_METRICS`]
/// and the stream consumer's [`STREAM_METRICS`](crate::stream::redis::STREAM_METRICS) with
/// the installed recorder.
fn describe_all() {
    for m in palisade::metrics() {
        describe(m.name, m.kind, m.help);
    }
    for (name, text) in ETL_METRICS {
        // The pipeline's list writes the kind first: "counter; label stage = ...".
        let (kind, help) = text.split_once("; ").unwrap_or(("gauge", text));
        let kind = match kind {
            "counter" => MetricKind::Counter,
            "histogram" => MetricKind::Histogram,
            _ => MetricKind::Gauge,
        };
        describe(name, kind, help);
    }
    for (name, kind, help) in RUN_METRICS {
        describe(name, *kind, help);
    }
    for (name, kind, help) in crate::stream::redis::STREAM_METRICS {
        describe(name, *kind, help);
    }
}

fn describe(name: &'static str, kind: MetricKind, help: &'static str) {
    match kind {
        MetricKind::Counter => metrics::describe_counter!(name, help),
        MetricKind::Gauge => metrics::describe_gauge!(name, help),
        MetricKind::Histogram => metrics::describe_histogram!(name, help),
    }
}

/// Serve Prometheus metrics at `http://{addr}/metrics` (loopback only; port 0 picks a
/// free port) and install the recorder ([`install_recorder`]). Every other path answers
/// `404`. Returns the address served.
///
/// The server runs on its own thread, so it outlives the caller's runtime and keeps
/// answering while the pipeline runs; the recorder's upkeep runs there every 5 s.
pub fn serve_metrics(addr: SocketAddr) -> Result<SocketAddr, BoxError> {
    if !addr.ip().is_loopback() {
        return Err(format!("metrics address {addr} is not a loopback address").into());
    }
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| format!("metrics address {addr}: cannot listen: {e}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let handle = install_recorder()?;
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    tracing::error!(error = %err, "metrics endpoint: no runtime");
                    return;
                }
            };
            if let Err(err) = runtime.block_on(serve(listener, handle)) {
                tracing::error!(error = %err, "metrics endpoint stopped");
            }
        })?;
    Ok(bound)
}

async fn serve(listener: std::net::TcpListener, handle: PrometheusHandle) -> Result<(), BoxError> {
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::from_std(listener)?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Data completeness of a finished run, as the `etl_run_*` gauges of [`RUN_METRICS`]:
/// expected = the source's declared rows minus the rejected and duplicate rows seen;
/// loaded = the records of this source the sink holds. Returns `summary` unchanged, so
/// the pipeline records it in one expression.
pub fn record_run(summary: Summary) -> Summary {
    let (expected, loaded, ratio) = completeness(
        summary.source_rows,
        summary.rejected + summary.duplicates,
        summary.sink_counts.records,
    );
    metrics::gauge!(RUN_METRICS[0].0).set(expected as f64);
    metrics::gauge!(RUN_METRICS[1].0).set(loaded as f64);
    metrics::gauge!(RUN_METRICS[2].0).set(ratio);
    summary
}

/// `(expected, loaded, loaded / expected)` of a run whose source declared `source_rows`,
/// of which `dropped` were rejected or duplicates, and whose sink holds `loaded` records;
/// the ratio is 1 when nothing was expected.
pub fn completeness(source_rows: u64, dropped: u64, loaded: u64) -> (u64, u64, f64) {
    let expected = source_rows.saturating_sub(dropped);
    let ratio = if expected == 0 {
        1.0
    } else {
        loaded as f64 / expected as f64
    };
    (expected, loaded, ratio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_lists_are_sorted_and_positive() {
        for list in [LATENCY_BUCKETS, STALE_AGE_BUCKETS, ATTEMPT_BUCKETS] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
            assert!(list[0] > 0.0);
        }
    }

    #[test]
    fn completeness_counts_what_should_have_loaded() {
        assert_eq!(completeness(100, 10, 90), (90, 90, 1.0));
        assert_eq!(completeness(100, 10, 45), (90, 45, 0.5));
        assert_eq!(completeness(0, 0, 0), (0, 0, 1.0));
        assert_eq!(completeness(5, 10, 0), (0, 0, 1.0));
    }
}
