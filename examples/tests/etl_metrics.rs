//! Prometheus metrics are served on a loopback port, at `/metrics` only: palisade's layer
//! metrics and the pipeline's own after a run, histograms with buckets, a `# HELP` line
//! for every metric, and `promtool check metrics` has nothing to say about them. (Its own
//! test binary: the recorder is process-global.)

mod etl_common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use etl_common::{config, flaky_source};
use palisade_examples::etl::{self, telemetry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path`: the status line and the body.
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    // The listener is bound before `serve_metrics` returns; retries only cover a slow
    // server thread start. Bounded.
    for _ in 0..50 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            stream
                .write_all(request.as_bytes())
                .await
                .expect("send the request");
            let mut text = String::new();
            stream
                .read_to_string(&mut text)
                .await
                .expect("read the answer");
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            let status = head.lines().next().unwrap_or_default().to_owned();
            return (status, body.to_owned());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the metrics endpoint at {addr} never answered");
}

/// `promtool` if installed. Missing: a failure when `CI` is set, else a skip that says why.
#[allow(clippy::print_stderr)] // a skipped check says why
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("promtool");
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "promtool is missing and CI is set: install it (Debian package `prometheus`)"
    );
    eprintln!(
        "SKIPPED: promtool is not installed (Debian package `prometheus`); not checking the exposition with it"
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_observable_on_the_prometheus_endpoint() {
    let addr = telemetry::serve_metrics(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    assert_ne!(addr.port(), 0, "the bound port is reported");
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

    let (status, text) = get(addr, "/metrics").await;
    assert!(status.contains(" 200 "), "{status}");
    // Metric name and the `name` label of the layer, whatever the other labels.
    let expected = [
        ("etl_records_total", "stage=\"extracted\"} 400"),
        ("etl_stage_duration_seconds_bucket", "stage=\"load\""),
        ("etl_journal_pending_batches", " 0"),
        ("etl_run_completeness_ratio", " 1"),
        ("palisade_retry_attempts_total", "name=\"source\""),
        ("palisade_retry_attempts_total", "name=\"sink\""),
        ("palisade_retry_attempts_bucket", "le=\"2\""),
        ("palisade_circuit_breaker_state", "name=\"source\""),
        ("palisade_rate_limit_admitted_total", "name=\"source\""),
        ("palisade_timeout_calls_total", "name=\"source-attempt\""),
        (
            "palisade_timeout_call_duration_seconds_bucket",
            "name=\"source-request\",le=\"1\"",
        ),
        ("palisade_chaos_injected_total", "name=\"source-api\""),
        ("palisade_degrade_fallback_total", "name=\"load\""),
    ];
    for (metric, label) in expected {
        let found = text
            .lines()
            .any(|l| l.starts_with(metric) && l.contains(label));
        assert!(found, "/metrics lacks {metric} with {label}:\n{text}");
    }
    // Histograms, not summaries; and every metric family has its help text.
    assert!(
        !text.contains("quantile="),
        "a summary is exported:\n{text}"
    );
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let family = line.split_whitespace().nth(2).unwrap();
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no # HELP for {family}"
        );
    }
    assert!(
        text.contains("# HELP palisade_retry_exhausted_total requests that failed"),
        "{text}"
    );

    // `/metrics` only.
    for path in ["/", "/metrics/x", "/favicon.ico"] {
        let (status, _) = get(addr, path).await;
        assert!(status.contains(" 404 "), "{path}: {status}");
    }

    if let Some(promtool) = promtool() {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
