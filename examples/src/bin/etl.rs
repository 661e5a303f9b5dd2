//! The ETL pipeline: a flaky HTTP API → validation and de-duplication → idempotent batched
//! loads into SQLite or PostgreSQL, hardened by palisade, with a Prometheus endpoint, a
//! progress bar and a final summary with reconciliation.
//!
//! Run: `cargo run --release -p palisade-examples --bin etl` (see `--help`). With no flags
//! it starts its own flaky API on a loopback port (the `flaky` chaos scenario: errors,
//! `429` + `Retry-After`, latency, a source outage and a sink outage), loads into
//! `$TMPDIR/palisade-etl/etl.sqlite`, serves Prometheus metrics on a free loopback port
//! (logged at start) and prints the summary on stdout (logs go to stderr); a second run
//! changes nothing. Exit code 0 when reconciliation holds, 2 when it does not (the summary
//! is printed then too, with the errors that stopped the run), 1 on a setup error (a bad
//! setting, an unreachable sink, another run holding the journal). Passwords in the sink
//! are never printed.
//!
//! ```text
//! etl --scenario harsh --chaos-seed 3          # more faults, another fault sequence
//! etl --sink postgres://etl@127.0.0.1:5432/etl # PostgreSQL instead of SQLite
//! etl --sink "host=127.0.0.1 user=etl dbname=etl" # the same, libpq key=value form
//! etl --config examples/etl.toml --json-logs   # settings from a file, JSON logs
//! ETL_RATE=10 etl                              # every flag has an ETL_* variable
//! ```

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use palisade::BoxError;
use palisade_examples::etl::redact::redact;
use palisade_examples::etl::{self, Cli, EtlConfig, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(err) => {
            // Errors may quote a connection string: never print a password.
            let err = redact(&err.to_string());
            tracing::error!(error = %err, "etl failed");
            let _ = writeln!(std::io::stderr(), "etl: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<bool, BoxError> {
    let config = EtlConfig::from_cli(Cli::parse())?;
    let progress = etl::progress_bar(&config);
    telemetry::init_logs(config.json_logs, progress.clone());
    if let Some(addr) = config.metrics_addr {
        let addr = telemetry::serve_metrics(addr)?;
        tracing::info!("Prometheus metrics at http://{addr}/metrics");
    }
    tracing::info!(
        sink = %config.sink_display(),
        journal = %config.journal_path()?.display(),
        "etl starting"
    );
    let summary = etl::run_with_progress(&config, progress).await?;
    // The summary is the program's output: stdout, so it can be piped.
    writeln!(std::io::stdout(), "{summary}")?;
    Ok(summary.ok())
}
