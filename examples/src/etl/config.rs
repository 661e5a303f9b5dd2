//! The pipeline's configuration: embedded defaults, overlaid by a TOML file, then by flags
//! and environment variables (`ETL_*`). Nothing is hard-coded in the pipeline itself.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use palisade::BoxError;
use palisade::core::config::duration;
use serde::{Deserialize, Deserializer};

// ===== EtlConfig =====

/// Everything a run needs. `Default` is the embedded configuration a fresh clone runs with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtlConfig {
    /// The source API's base URL (it serves `GET {url}/records?page=N`). `None`: start the
    /// built-in flaky API on a loopback port.
    pub source_url: Option<String>,
    /// Where to load: a SQLite file path (optionally `sqlite:` prefixed) or a
    /// `postgres://` / `postgresql://` connection URL. Default: `etl.sqlite` in the
    /// system's temporary directory under `palisade-etl/`, so a run needs no setup and a
    /// second run finds the first one's rows (and changes nothing).
    pub sink: String,
    /// The local journal batches spill to while the sink is down. Default: next to a SQLite
    /// sink (`<file>.journal.jsonl`), or in the temporary directory for PostgreSQL.
    pub journal: Option<PathBuf>,
    /// The built-in API's dataset: how many rows, how many per page, and the seed they are
    /// generated from.
    pub dataset: DatasetConfig,
    /// The chaos scenario's name (`none`, `calm`, `flaky`, `harsh`); ignored when a
    /// `[chaos]` table is given.
    pub scenario: String,
    /// A custom chaos scenario (TOML `[chaos]`), instead of a named one.
    pub chaos: Option<ChaosScenario>,
    /// Seed of the chaos RNGs (faults are reproducible for a seed).
    pub chaos_seed: u64,
    /// Client-side rate limit on source requests, per second. Default 40: well under the
    /// built-in API's capacity, and a full default run still takes only a few seconds.
    pub rate: u32,
    /// Requests the rate limit lets through at once after a quiet spell. Default 4: a
    /// little slack for a page re-fetched right after another, without bursts that defeat
    /// the limit.
    pub burst: u32,
    /// Valid records per load batch (one sink transaction; the rejected rows seen since the
    /// last batch ride along). Default 100: big enough to amortize a transaction, small
    /// enough that a spilled batch is a small journal entry.
    pub batch_size: usize,
    /// Resilience settings of the extract and load stacks.
    pub resilience: ResilienceConfig,
    /// Serve Prometheus metrics on this loopback address while running (`None`: off; port
    /// 0 picks a free port).
    pub metrics_addr: Option<SocketAddr>,
    /// Logs as JSON lines instead of human-readable text.
    pub json_logs: bool,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// The whole run's deadline: a source or sink that never comes back fails the run
    /// (reconciliation FAILED) instead of hanging. Default 50 s.
    #[serde(deserialize_with = "de_duration")]
    pub max_run_time: Duration,
}

impl Default for EtlConfig {
    fn default() -> Self {
        Self {
            source_url: None,
            sink: default_sink_path().display().to_string(),
            journal: None,
            dataset: DatasetConfig::default(),
            scenario: "flaky".into(),
            chaos: None,
            chaos_seed: 7,
            rate: 40,
            burst: 4,
            batch_size: 100,
            resilience: ResilienceConfig::default(),
            metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            json_logs: false,
            progress: true,
            max_run_time: Duration::from_secs(50),
        }
    }
}

fn default_sink_path() -> PathBuf {
    std::env::temp_dir().join("palisade-etl").join("etl.sqlite")
}

impl EtlConfig {
    /// Read a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, BoxError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()).into())
    }

    /// Parse TOML over the defaults.
    pub fn from_toml(text: &str) -> Result<Self, BoxError> {
        Ok(toml::from_str(text)?)
    }

    /// The defaults, overlaid by the `--config` file if given, then by flags and env vars.
    pub fn from_cli(cli: Cli) -> Result<Self, BoxError> {
        let mut config = match &cli.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        cli.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// The chaos scenario in effect: the `[chaos]` table, or the named preset.
    pub fn chaos_scenario(&self) -> Result<ChaosScenario, BoxError> {
        match &self.chaos {
            Some(custom) => Ok(custom.clone()),
            None => ChaosScenario::named(&self.scenario),
        }
    }

    /// The journal path in effect.
    pub fn journal_path(&self) -> PathBuf {
        if let Some(path) = &self.journal {
            return path.clone();
        }
        match SinkTarget::parse(&self.sink) {
            SinkTarget::Sqlite(path) => {
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push(".journal.jsonl");
                path.with_file_name(name)
            }
            SinkTarget::Postgres(_) => std::env::temp_dir()
                .join("palisade-etl")
                .join("postgres.journal.jsonl"),
        }
    }

    /// Check the values a run cannot work with.
    pub fn validate(&self) -> Result<(), BoxError> {
        let checks: [(bool, &str); 7] = [
            (self.rate > 0, "rate must be at least 1 request per second"),
            (
                (1..=self.rate.max(1)).contains(&self.burst),
                "burst must be 1 to rate",
            ),
            (self.batch_size > 0, "batch_size must be at least 1"),
            (
                self.dataset.page_size > 0,
                "dataset.page_size must be at least 1",
            ),
            (
                !self.max_run_time.is_zero(),
                "max_run_time must be above zero",
            ),
            (
                self.resilience.max_attempts > 0,
                "resilience.max_attempts must be at least 1",
            ),
            (!self.sink.trim().is_empty(), "sink must not be empty"),
        ];
        for (ok, message) in checks {
            if !ok {
                return Err(message.into());
            }
        }
        self.chaos_scenario()?;
        Ok(())
    }
}

// ===== DatasetConfig =====

/// The built-in API's data: deterministic for a seed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetConfig {
    /// Rows served in total, invalid rows and duplicates included. Default 2000: enough
    /// pages (40) for the chaos to bite, a run of a few seconds.
    pub rows: usize,
    /// Rows per page. Default 50.
    pub page_size: usize,
    /// Seed of the generated rows.
    pub seed: u64,
    /// Share of rows that break the schema. Default 4%.
    pub invalid_rate: f64,
    /// Share of rows that repeat an earlier row's key. Default 5%.
    pub duplicate_rate: f64,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        Self {
            rows: 2000,
            page_size: 50,
            seed: 42,
            invalid_rate: 0.04,
            duplicate_rate: 0.05,
        }
    }
}

// ===== ResilienceConfig =====

/// The knobs of the palisade stacks around the source client and the sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResilienceConfig {
    /// Per-attempt timeout of a source request. Default 500 ms: the built-in API answers in
    /// under 100 ms even with injected latency, so a slower answer is a stuck one.
    #[serde(deserialize_with = "de_duration")]
    pub attempt_timeout: Duration,
    /// Overall timeout of one page fetch, retries included. Default 5 s.
    #[serde(deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// Attempts per page fetch, the first included. Default 4.
    pub max_attempts: u32,
    /// First backoff delay (exponential, full jitter). Default 50 ms.
    #[serde(deserialize_with = "de_duration")]
    pub backoff_base: Duration,
    /// Cap of one backoff delay, server `Retry-After` hints included. Default 1 s.
    #[serde(deserialize_with = "de_duration")]
    pub backoff_max: Duration,
    /// Consecutive failures that open a breaker. Default 5.
    pub breaker_failures: u32,
    /// How long a breaker stays open before probing. Default 500 ms: short, because the
    /// built-in outage is short; a production source would use seconds.
    #[serde(deserialize_with = "de_duration")]
    pub breaker_open: Duration,
    /// Timeout of one sink batch write. Default 5 s.
    #[serde(deserialize_with = "de_duration")]
    pub sink_timeout: Duration,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(5),
            max_attempts: 4,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            breaker_failures: 5,
            breaker_open: Duration::from_millis(500),
            sink_timeout: Duration::from_secs(5),
        }
    }
}

// ===== ChaosScenario =====

/// What goes wrong, and when: faults of the built-in source API and of the sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChaosScenario {
    /// Share of source requests answered `500`/`503`.
    pub error_rate: f64,
    /// Share of source requests answered `429` with `Retry-After`.
    pub throttle_rate: f64,
    /// The `Retry-After` a `429` carries, in whole seconds (the header's unit; the client
    /// caps its wait at `resilience.backoff_max`).
    pub retry_after_secs: u64,
    /// Share of source requests delayed.
    pub latency_rate: f64,
    /// Delay range of a slowed request.
    #[serde(deserialize_with = "de_range")]
    pub latency: Range<Duration>,
    /// A source outage (every request `503`), from..until the API's start.
    #[serde(deserialize_with = "de_opt_range")]
    pub source_outage: Option<Range<Duration>>,
    /// A sink outage (every write fails), from..until the run's start.
    #[serde(deserialize_with = "de_opt_range")]
    pub sink_outage: Option<Range<Duration>>,
}

impl Default for ChaosScenario {
    fn default() -> Self {
        Self::none()
    }
}

impl ChaosScenario {
    /// The scenario names [`ChaosScenario::named`] knows.
    pub const NAMES: &'static [&'static str] = &["none", "calm", "flaky", "harsh"];

    /// No faults at all.
    pub fn none() -> Self {
        Self {
            error_rate: 0.0,
            throttle_rate: 0.0,
            retry_after_secs: 1,
            latency_rate: 0.0,
            latency: Duration::ZERO..Duration::ZERO,
            source_outage: None,
            sink_outage: None,
        }
    }

    /// A named preset: `none`; `calm` (rare errors, no outage); `flaky` (the default: 8%
    /// errors, 5% throttling, latency, a 1.5 s source outage and a 0.6 s sink outage);
    /// `harsh` (20% errors, 10% throttling, longer outages).
    pub fn named(name: &str) -> Result<Self, BoxError> {
        let ms = Duration::from_millis;
        let scenario = match name {
            "none" => Self::none(),
            "calm" => Self {
                error_rate: 0.02,
                throttle_rate: 0.01,
                latency_rate: 0.1,
                latency: ms(2)..ms(10),
                ..Self::none()
            },
            "flaky" => Self {
                error_rate: 0.08,
                throttle_rate: 0.05,
                latency_rate: 0.2,
                latency: ms(5)..ms(40),
                source_outage: Some(ms(300)..ms(1800)),
                sink_outage: Some(ms(2000)..ms(2600)),
                ..Self::none()
            },
            "harsh" => Self {
                error_rate: 0.2,
                throttle_rate: 0.1,
                latency_rate: 0.3,
                latency: ms(10)..ms(80),
                source_outage: Some(ms(300)..ms(2300)),
                sink_outage: Some(ms(1000)..ms(3000)),
                ..Self::none()
            },
            other => {
                return Err(format!(
                    "unknown chaos scenario {other:?}; known: {}",
                    Self::NAMES.join(", ")
                )
                .into());
            }
        };
        Ok(scenario)
    }
}

// ===== SinkTarget =====

/// Which sink a `sink` string names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTarget {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl SinkTarget {
    /// `postgres://…`/`postgresql://…` is PostgreSQL; anything else a SQLite path
    /// (an optional `sqlite:` or `sqlite://` prefix is removed).
    pub fn parse(sink: &str) -> Self {
        if sink.starts_with("postgres://") || sink.starts_with("postgresql://") {
            return SinkTarget::Postgres(sink.to_owned());
        }
        let path = sink
            .strip_prefix("sqlite://")
            .or_else(|| sink.strip_prefix("sqlite:"))
            .unwrap_or(sink);
        SinkTarget::Sqlite(PathBuf::from(path))
    }
}

// ===== Cli =====

/// The `etl` binary's flags; each also reads an `ETL_*` environment variable and
/// overrides the config file.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "etl",
    about = "Extract pages from a flaky HTTP API, validate and de-duplicate, load idempotently; hardened by palisade."
)]
pub struct Cli {
    /// A TOML config file (keys as in `EtlConfig`).
    #[arg(long, env = "ETL_CONFIG")]
    pub config: Option<PathBuf>,
    /// The source API's base URL; default: start the built-in flaky API.
    #[arg(long, env = "ETL_SOURCE_URL")]
    pub source_url: Option<String>,
    /// SQLite path or postgres:// URL.
    #[arg(long, env = "ETL_SINK")]
    pub sink: Option<String>,
    /// The spill journal's path.
    #[arg(long, env = "ETL_JOURNAL")]
    pub journal: Option<PathBuf>,
    /// Chaos scenario: none, calm, flaky, harsh.
    #[arg(long, env = "ETL_SCENARIO")]
    pub scenario: Option<String>,
    /// Seed of the injected faults.
    #[arg(long, env = "ETL_CHAOS_SEED")]
    pub chaos_seed: Option<u64>,
    /// Seed of the built-in API's data.
    #[arg(long, env = "ETL_DATA_SEED")]
    pub data_seed: Option<u64>,
    /// Rows the built-in API serves.
    #[arg(long, env = "ETL_ROWS")]
    pub rows: Option<usize>,
    /// Client-side rate limit, requests per second.
    #[arg(long, env = "ETL_RATE")]
    pub rate: Option<u32>,
    /// Records per load batch.
    #[arg(long, env = "ETL_BATCH_SIZE")]
    pub batch_size: Option<usize>,
    /// Prometheus listener address (loopback; port 0 picks one).
    #[arg(long, env = "ETL_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Do not serve Prometheus metrics.
    #[arg(long, env = "ETL_NO_METRICS")]
    pub no_metrics: bool,
    /// Log JSON lines.
    #[arg(long, env = "ETL_JSON_LOGS")]
    pub json_logs: bool,
    /// Hide the progress bar.
    #[arg(long, env = "ETL_NO_PROGRESS")]
    pub no_progress: bool,
    /// The run's deadline, e.g. `50s`.
    #[arg(long, env = "ETL_MAX_RUN_TIME", value_parser = duration::parse)]
    pub max_run_time: Option<Duration>,
}

impl Cli {
    fn apply(self, config: &mut EtlConfig) {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *slot = value;
            }
        }
        if self.source_url.is_some() {
            config.source_url = self.source_url;
        }
        if self.journal.is_some() {
            config.journal = self.journal;
        }
        if let Some(scenario) = self.scenario {
            // A named scenario on the command line wins over a `[chaos]` table.
            config.scenario = scenario;
            config.chaos = None;
        }
        set(&mut config.sink, self.sink);
        set(&mut config.chaos_seed, self.chaos_seed);
        set(&mut config.dataset.seed, self.data_seed);
        set(&mut config.dataset.rows, self.rows);
        set(&mut config.rate, self.rate);
        set(&mut config.batch_size, self.batch_size);
        set(&mut config.max_run_time, self.max_run_time);
        if self.metrics_addr.is_some() {
            config.metrics_addr = self.metrics_addr;
        }
        if self.no_metrics {
            config.metrics_addr = None;
        }
        config.json_logs |= self.json_logs;
        config.progress &= !self.no_progress;
    }
}

// ===== serde helpers =====

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationData {
    Millis(u64),
    Text(String),
}

fn to_duration<E: serde::de::Error>(data: DurationData) -> Result<Duration, E> {
    match data {
        DurationData::Millis(ms) => Ok(Duration::from_millis(ms)),
        DurationData::Text(text) => duration::parse(&text).map_err(E::custom),
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    to_duration(DurationData::deserialize(d)?)
}

fn de_range<'de, D: Deserializer<'de>>(d: D) -> Result<Range<Duration>, D::Error> {
    let [from, until] = <[DurationData; 2]>::deserialize(d)?;
    Ok(to_duration(from)?..to_duration(until)?)
}

fn de_opt_range<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Range<Duration>>, D::Error> {
    de_range(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overlays_the_defaults() {
        let config = EtlConfig::from_toml(
            r#"
            sink = "sqlite:data/x.db"
            rate = 7
            max_run_time = "20s"
            [dataset]
            rows = 10
            [chaos]
            error_rate = 0.5
            latency = ["1ms", "2ms"]
            sink_outage = [100, 200]
            "#,
        )
        .unwrap();
        assert_eq!(config.rate, 7);
        assert_eq!(config.dataset.rows, 10);
        assert_eq!(config.dataset.page_size, 50);
        assert_eq!(config.max_run_time, Duration::from_secs(20));
        let chaos = config.chaos_scenario().unwrap();
        assert_eq!(chaos.error_rate, 0.5);
        assert_eq!(
            chaos.sink_outage,
            Some(Duration::from_millis(100)..Duration::from_millis(200))
        );
        assert_eq!(chaos.source_outage, None);
        assert_eq!(
            SinkTarget::parse(&config.sink),
            SinkTarget::Sqlite("data/x.db".into())
        );
        assert_eq!(
            config.journal_path(),
            PathBuf::from("data/x.db.journal.jsonl")
        );
    }

    #[test]
    fn the_example_config_file_is_the_default_flaky_run() {
        let config = EtlConfig::from_toml(include_str!("../../etl.toml")).unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.chaos_scenario().unwrap(),
            ChaosScenario::named("flaky").unwrap()
        );
        assert_eq!(config.resilience, ResilienceConfig::default());
        assert_eq!(config.dataset, DatasetConfig::default());
        assert_eq!(config.rate, EtlConfig::default().rate);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(EtlConfig::from_toml("rte = 3").is_err());
        let mut config = EtlConfig {
            rate: 0,
            ..EtlConfig::default()
        };
        assert!(config.validate().is_err());
        config.rate = 1;
        config.scenario = "apocalypse".into();
        assert!(config.validate().is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let cli = Cli::try_parse_from([
            "etl",
            "--sink",
            "postgres://u@127.0.0.1/db",
            "--rate",
            "9",
            "--no-metrics",
            "--scenario",
            "calm",
            "--max-run-time",
            "3s",
        ])
        .unwrap();
        let config = EtlConfig::from_cli(cli).unwrap();
        assert_eq!(config.rate, 9);
        assert_eq!(config.metrics_addr, None);
        assert_eq!(config.max_run_time, Duration::from_secs(3));
        assert!(matches!(
            SinkTarget::parse(&config.sink),
            SinkTarget::Postgres(_)
        ));
        assert_eq!(
            config.chaos_scenario().unwrap(),
            ChaosScenario::named("calm").unwrap()
        );
    }
}
