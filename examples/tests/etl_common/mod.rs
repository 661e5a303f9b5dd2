//! Shared helpers of the ETL tests: small, fast configurations and the expected outcome,
//! computed from the dataset independently of the pipeline.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use palisade_examples::etl::record::{Record, validate};
use palisade_examples::etl::source::generate_rows;
use palisade_examples::etl::{ChaosScenario, DatasetConfig, EtlConfig, ResilienceConfig};

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A small dataset, short timings, no metrics or progress bar.
pub fn config(sink: &str, journal: &Path, seed: u64, chaos: ChaosScenario) -> EtlConfig {
    EtlConfig {
        sink: sink.to_owned(),
        journal: Some(journal.to_path_buf()),
        dataset: DatasetConfig {
            rows: 400,
            page_size: 20,
            seed,
            ..DatasetConfig::default()
        },
        chaos: Some(chaos),
        chaos_seed: seed,
        rate: 100,
        burst: Some(5),
        batch_size: 40,
        resilience: ResilienceConfig {
            attempt_timeout: ms(300),
            request_timeout: ms(2000),
            backoff_base: ms(5),
            backoff_max: ms(60),
            breaker_open: ms(100),
            sink_timeout: ms(2000),
            ..ResilienceConfig::default()
        },
        metrics_addr: None,
        json_logs: false,
        progress: false,
        max_run_time: Duration::from_secs(20),
        ..EtlConfig::default()
    }
}

/// Errors, throttling, latency and a short source outage.
pub fn flaky_source() -> ChaosScenario {
    ChaosScenario {
        error_rate: 0.15,
        throttle_rate: 0.05,
        retry_after_secs: 1,
        latency_rate: 0.2,
        latency: ms(1)..ms(15),
        source_outage: Some(ms(50)..ms(250)),
        sink_outage: None,
    }
}

/// What a correct run loads: the first valid row of each key, the rejected count and the
/// duplicate count.
pub struct Expected {
    pub records: BTreeMap<String, Record>,
    pub rejected: u64,
    pub duplicates: u64,
}

pub fn expected(config: &EtlConfig) -> Expected {
    let mut out = Expected {
        records: BTreeMap::new(),
        rejected: 0,
        duplicates: 0,
    };
    for row in generate_rows(&config.dataset) {
        match validate(&row) {
            Ok(r) if out.records.contains_key(&r.id) => out.duplicates += 1,
            Ok(r) => {
                out.records.insert(r.id.clone(), r);
            }
            Err(_) => out.rejected += 1,
        }
    }
    out
}

/// Every record of `source` in a SQLite sink, by key.
pub fn sqlite_records(path: &Path, source: &str) -> BTreeMap<String, Record> {
    let conn = rusqlite::Connection::open(path).expect("open the sqlite sink");
    let mut stmt = conn
        .prepare(
            "SELECT id, name, amount_cents, currency, updated_at FROM records WHERE source = ?1",
        )
        .expect("prepare");
    let rows = stmt
        .query_map([source], |r| {
            Ok(Record {
                id: r.get(0)?,
                name: r.get(1)?,
                amount_cents: r.get(2)?,
                currency: r.get(3)?,
                updated_at: r.get(4)?,
            })
        })
        .expect("query");
    let mut out = BTreeMap::new();
    for row in rows {
        let row = row.expect("read a row");
        assert!(
            out.insert(row.id.clone(), row).is_none(),
            "a key loaded twice"
        );
    }
    out
}

/// The `etl` binary with no metrics endpoint, no progress bar and no `ETL_*` or `RUST_LOG`
/// from the environment.
pub fn etl_bin() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_etl"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETL_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .args(["--no-metrics", "--no-progress"]);
    cmd
}

/// A config file for the binary: `rows` rows at `rate` pages per second into `sink`, with
/// light faults and a short sink outage.
pub fn write_config(dir: &Path, sink: &str, rows: usize, rate: u32) -> std::path::PathBuf {
    let path = dir.join("etl.toml");
    let text = format!(
        r#"
sink = "{sink}"
rate = {rate}
batch_size = 40
max_run_time = "30s"
[dataset]
rows = {rows}
page_size = 20
seed = 5
[resilience]
attempt_timeout = "300ms"
backoff_base = "5ms"
backoff_max = "60ms"
breaker_open = "100ms"
[chaos]
error_rate = 0.1
throttle_rate = 0.05
retry_after_secs = 0
latency_rate = 0.2
latency = ["1ms", "15ms"]
sink_outage = ["100ms", "400ms"]
"#
    );
    std::fs::write(&path, text).expect("write the config file");
    path
}

/// The source tag the built-in API's rows are stored under for `write_config`'s dataset.
pub fn builtin_source(rows: usize) -> String {
    format!("builtin:seed=5:rows={rows}:page=20")
}

/// The dataset `write_config` writes.
pub fn file_dataset(rows: usize) -> EtlConfig {
    EtlConfig {
        dataset: DatasetConfig {
            rows,
            page_size: 20,
            seed: 5,
            ..DatasetConfig::default()
        },
        ..EtlConfig::default()
    }
}
