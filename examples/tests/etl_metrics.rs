//! Prometheus metrics are served on a loopback port: palisade's layer metrics and the
//! pipeline's own, after a run. (Its own test binary: the recorder is process-global.)

mod etl_common;

use std::net::SocketAddr;

use etl_common::{config, flaky_source};
use palisade_examples::etl::{self, telemetry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(addr: SocketAddr) -> String {
    // The exporter's listener may take a moment to bind after install: bounded retries.
    for _ in 0..50 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            stream
                .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .await
                .expect("send the request");
            let mut body = String::new();
            stream
                .read_to_string(&mut body)
                .await
                .expect("read the answer");
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the metrics endpoint at {addr} never answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_observable_on_the_prometheus_endpoint() {
    let addr = telemetry::serve_metrics(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    assert!(telemetry::serve_metrics(SocketAddr::from(([0, 0, 0, 0], 0))).is_err());

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("etl.sqlite");
    let config = config(
        db.to_str().unwrap(),
        &dir.path().join("journal.jsonl"),
        4,
        flaky_source(),
    );
    let summary = etl::run(&config).await.unwrap();
    assert!(summary.ok(), "{summary}");

    let text = scrape(addr).await;
    assert!(text.starts_with("HTTP/1."), "{text}");
    // Metric name and the `name` label of the layer, whatever the other labels.
    let expected = [
        ("etl_records_total", "stage=\"extracted\"} 400"),
        ("etl_stage_duration_seconds", "stage=\"load\""),
        ("etl_journal_pending_batches", " 0"),
        ("palisade_retry_attempts_total", "name=\"source\""),
        ("palisade_retry_attempts_total", "name=\"sink\""),
        ("palisade_circuit_breaker_state", "name=\"source\""),
        ("palisade_rate_limit_admitted_total", "name=\"source\""),
        ("palisade_timeout_calls_total", "name=\"source-attempt\""),
        ("palisade_chaos_injected_total", "name=\"source-api\""),
        ("palisade_degrade_fallback_total", "name=\"load\""),
    ];
    for (metric, label) in expected {
        let found = text
            .lines()
            .any(|l| l.starts_with(metric) && l.contains(label));
        assert!(found, "/metrics lacks {metric} with {label}:\n{text}");
    }
}
