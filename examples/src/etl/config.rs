//! The pipeline's configuration: embedded defaults, overlaid by a TOML file, then by flags
//! and environment variables (`ETL_*`). Nothing is hard-coded in the pipeline itself.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use palisade::BoxError;
use palisade::core::ConfigError;
use palisade::core::config::{duration, ensure};
use serde::{Deserialize, Deserializer};

use super::redact::{looks_like_key_value, redact};

// ===== limits =====

/// The most rows the built-in API serves: rows are generated page by page, but the
/// transform keeps every key it has seen (to drop duplicates), so a run's memory grows
/// with the row count (about 60 MB at this bound; a run takes minutes at the default rate).
pub const MAX_ROWS: usize = 1_000_000;
/// The most records per load batch (one transaction, one journal line).
pub const MAX_BATCH_SIZE: usize = 100_000;
/// The most rows per page of the built-in API.
pub const MAX_PAGE_SIZE: usize = 10_000;
/// The highest client-side rate limit, requests per second.
pub const MAX_RATE: u32 = 100_000;
/// The longest duration any setting takes (a day): longer is a typo, not a plan.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The most attempts per page fetch.
pub const MAX_ATTEMPTS: u32 = 100;

// ===== EtlConfig =====

/// Everything a run needs. `Default` is the embedded configuration a fresh clone runs with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtlConfig {
    /// The source API's base URL (it serves `GET {url}/records?page=N`). `None`: start the
    /// built-in flaky API on a loopback port.
    pub source_url: Option<String>,
    /// Where to load: a SQLite file path (optionally `sqlite:` prefixed), a
    /// `postgres://` / `postgresql://` connection URL, or a libpq `key=value` connection
    /// string (`host=… user=… dbname=…`). Passwords are redacted wherever the sink is
    /// printed. Default: `etl.sqlite` in the system's temporary directory under
    /// `palisade-etl/`, so a run needs no setup and a second run finds the first one's rows
    /// (and changes nothing).
    pub sink: String,
    /// The local journal batches spill to while the sink is down. A journal belongs to one
    /// sink (it records which) and refuses any other. Default: next to a SQLite sink
    /// (`<file>.journal.jsonl`), or in the temporary directory for PostgreSQL, named after
    /// the database (`postgres-<hash of user, host, port, database>.journal.jsonl`).
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
    /// Client-side rate limit on source requests, per second (1 to 100,000). Default 40:
    /// well under the built-in API's capacity, and a full default run still takes only a
    /// few seconds.
    pub rate: u32,
    /// Requests the rate limit lets through at once after a quiet spell (1 to `rate`).
    /// Default (`None`): a tenth of the rate, at least 1 (4 at the default rate): a little
    /// slack for a page re-fetched right after another, without bursts that defeat the
    /// limit.
    pub burst: Option<u32>,
    /// Valid records per load batch (one sink transaction; the rejected rows seen since the
    /// last batch ride along), 1 to 100,000. Default 100: big enough to amortize a
    /// transaction, small enough that a spilled batch is a small journal entry.
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
    /// (reconciliation FAILED) instead of hanging. Default 50 s; 1 ms to 24 h.
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
            burst: None,
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
    /// Read a TOML file over the defaults; errors name the file.
    pub fn from_file(path: &Path) -> Result<Self, BoxError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("config file {}: {e}", path.display()).into())
    }

    /// Parse TOML over the defaults.
    pub fn from_toml(text: &str) -> Result<Self, BoxError> {
        Ok(toml::from_str(text)?)
    }

    /// The defaults, overlaid by the `--config` file if given, then by flags and env vars;
    /// validated, so a bad setting is refused before anything starts.
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

    /// The rate limit's burst in effect: `burst`, or a tenth of `rate` (at least 1).
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or((self.rate / 10).max(1))
    }

    /// The sink `sink` names, or why it names none.
    pub fn sink_target(&self) -> Result<SinkTarget, BoxError> {
        Ok(SinkTarget::parse(&self.sink)?)
    }

    /// The sink, password redacted: what logs and the summary show.
    pub fn sink_display(&self) -> String {
        redact(&self.sink)
    }

    /// The journal path in effect (an error when `sink` names no sink).
    pub fn journal_path(&self) -> Result<PathBuf, BoxError> {
        if let Some(path) = &self.journal {
            return Ok(path.clone());
        }
        Ok(match self.sink_target()? {
            SinkTarget::Sqlite(path) => {
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push(".journal.jsonl");
                path.with_file_name(name)
            }
            SinkTarget::Postgres(conn) => std::env::temp_dir().join("palisade-etl").join(format!(
                "postgres-{:016x}.journal.jsonl",
                fnv1a(&postgres_identity(&conn)?)
            )),
        })
    }

    /// Check every setting; the first one out of range is refused with its name, its value
    /// and the range allowed.
    pub fn validate(&self) -> Result<(), BoxError> {
        let etl =
            |ok: bool, field: &'static str, value: &dyn fmt::Debug, expected: &'static str| {
                ensure(ok, "etl", field, value, expected)
            };
        etl(
            (1..=MAX_RATE).contains(&self.rate),
            "rate",
            &self.rate,
            "1 to 100000 requests per second",
        )?;
        let burst = self.burst();
        if !(1..=self.rate).contains(&burst) {
            return Err(ConfigError::new(
                "etl",
                "burst",
                burst,
                format!("1 to rate ({})", self.rate),
            )
            .into());
        }
        etl(
            (1..=MAX_BATCH_SIZE).contains(&self.batch_size),
            "batch_size",
            &self.batch_size,
            "1 to 100000 records",
        )?;
        ensure_duration("max_run_time", self.max_run_time)?;
        if self
            .journal
            .as_ref()
            .is_some_and(|j| j.as_os_str().is_empty())
        {
            return Err(ConfigError::new("etl", "journal", "", "a file path").into());
        }
        if let Some(addr) = self.metrics_addr {
            etl(
                addr.ip().is_loopback(),
                "metrics_addr",
                &addr,
                "a loopback address (127.0.0.1 or ::1)",
            )?;
        }
        if let Some(url) = &self.source_url {
            super::client::parse_base_url(url)?;
        }
        self.sink_target()?;
        self.dataset.validate()?;
        self.resilience.validate()?;
        self.chaos_scenario()?.validate()?;
        Ok(())
    }
}

/// Refuse a zero or absurd duration, naming the setting.
fn ensure_duration(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    ensure(
        !value.is_zero() && value <= MAX_DURATION,
        "etl",
        field,
        value,
        "1ns to 24h",
    )
}

/// Refuse a share outside 0 to 1 (NaN included), naming the setting.
fn ensure_share(field: &'static str, value: f64) -> Result<(), ConfigError> {
    ensure(
        (0.0..=1.0).contains(&value),
        "etl",
        field,
        value,
        "a share from 0.0 to 1.0",
    )
}

/// FNV-1a: a stable short name for a sink (std's hasher may change between releases).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A PostgreSQL connection string's identity, without its password:
/// `postgres://user@host:port/dbname`.
pub fn postgres_identity(conn: &str) -> Result<String, BoxError> {
    let config: tokio_postgres::Config = conn
        .parse()
        .map_err(|e| format!("invalid PostgreSQL connection string {}: {e}", redact(conn)))?;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let user = config.get_user().unwrap_or("");
    let dbname = config.get_dbname().unwrap_or(user);
    Ok(format!(
        "postgres://{user}@{}:{}/{dbname}",
        hosts.join(","),
        if ports.is_empty() {
            "5432".to_owned()
        } else {
            ports.join(",")
        }
    ))
}

// ===== DatasetConfig =====

/// The built-in API's data: deterministic for a seed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetConfig {
    /// Rows served in total, invalid rows and duplicates included (0 to 1,000,000;
    /// generated page by page, never all at once). Default 2000: enough pages (40) for the
    /// chaos to bite, a run of a few seconds.
    pub rows: usize,
    /// Rows per page (1 to 10,000). Default 50.
    pub page_size: usize,
    /// Seed of the generated rows.
    pub seed: u64,
    /// Share of rows that break the schema. Default 4%.
    pub invalid_rate: f64,
    /// Share of rows that repeat an earlier row's key. Default 5%.
    pub duplicate_rate: f64,
}

impl DatasetConfig {
    /// Check the dataset's settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            self.rows <= MAX_ROWS,
            "etl",
            "dataset.rows",
            self.rows,
            "0 to 1000000",
        )?;
        ensure(
            (1..=MAX_PAGE_SIZE).contains(&self.page_size),
            "etl",
            "dataset.page_size",
            self.page_size,
            "1 to 10000",
        )?;
        ensure_share("dataset.invalid_rate", self.invalid_rate)?;
        ensure_share("dataset.duplicate_rate", self.duplicate_rate)?;
        ensure(
            self.invalid_rate + self.duplicate_rate <= 1.0,
            "etl",
            "dataset.invalid_rate + dataset.duplicate_rate",
            self.invalid_rate + self.duplicate_rate,
            "at most 1.0",
        )
    }
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
    /// Attempts per page fetch, the first included (1 to 100). Default 4.
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

impl ResilienceConfig {
    /// Check the stacks' settings; each error names the setting as written in the file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure_duration("resilience.attempt_timeout", self.attempt_timeout)?;
        ensure_duration("resilience.request_timeout", self.request_timeout)?;
        ensure(
            (1..=MAX_ATTEMPTS).contains(&self.max_attempts),
            "etl",
            "resilience.max_attempts",
            self.max_attempts,
            "1 to 100",
        )?;
        ensure_duration("resilience.backoff_base", self.backoff_base)?;
        ensure_duration("resilience.backoff_max", self.backoff_max)?;
        if self.backoff_max < self.backoff_base {
            return Err(ConfigError::new(
                "etl",
                "resilience.backoff_max",
                self.backoff_max,
                format!("at least resilience.backoff_base ({:?})", self.backoff_base),
            ));
        }
        ensure(
            (1..=10_000).contains(&self.breaker_failures),
            "etl",
            "resilience.breaker_failures",
            self.breaker_failures,
            "1 to 10000",
        )?;
        ensure_duration("resilience.breaker_open", self.breaker_open)?;
        ensure_duration("resilience.sink_timeout", self.sink_timeout)
    }
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
    /// The `Retry-After` a `429` carries, in whole seconds (the header's unit; 0 to 3600;
    /// the client waits at most `resilience.backoff_max` per retry).
    pub retry_after_secs: u64,
    /// Share of source requests delayed.
    pub latency_rate: f64,
    /// Delay range of a slowed request.
    #[serde(deserialize_with = "de_range")]
    pub latency: Range<Duration>,
    /// A source outage (every request `503`), from..until the API's start.
    #[serde(deserialize_with = "de_opt_range")]
    pub source_outage: Option<Range<Duration>>,
    /// A sink outage (every write fails), from..until the first batch's load (so the
    /// outage hits batches whatever the source's pace).
    #[serde(deserialize_with = "de_opt_range")]
    pub sink_outage: Option<Range<Duration>>,
}

impl Default for ChaosScenario {
    fn default() -> Self {
        Self::none()
    }
}

impl ChaosScenario {
    /// Check the scenario: shares from 0 to 1 (errors and throttles together at most 1),
    /// ranges that do not end before they start.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure_share("chaos.error_rate", self.error_rate)?;
        ensure_share("chaos.throttle_rate", self.throttle_rate)?;
        ensure_share("chaos.latency_rate", self.latency_rate)?;
        ensure(
            self.error_rate + self.throttle_rate <= 1.0,
            "etl",
            "chaos.error_rate + chaos.throttle_rate",
            self.error_rate + self.throttle_rate,
            "at most 1.0",
        )?;
        ensure(
            self.retry_after_secs <= 3600,
            "etl",
            "chaos.retry_after_secs",
            self.retry_after_secs,
            "0 to 3600",
        )?;
        let ranges = [
            ("chaos.latency", Some(&self.latency)),
            ("chaos.source_outage", self.source_outage.as_ref()),
            ("chaos.sink_outage", self.sink_outage.as_ref()),
        ];
        for (field, range) in ranges {
            if let Some(range) = range {
                ensure(
                    range.start <= range.end && range.end <= MAX_DURATION,
                    "etl",
                    field,
                    range,
                    "[from, until] with from <= until <= 24h",
                )?;
            }
        }
        Ok(())
    }

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
    /// `harsh` (20% errors, 10% throttling, a 2 s source outage, then a 2 s sink outage).
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
                // Timed from the first load, after the source outage (no batch is loaded
                // while the source is down, so an overlapping sink outage hits nothing).
                sink_outage: Some(ms(3000)..ms(5000)),
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
#[derive(Clone, PartialEq, Eq)]
pub enum SinkTarget {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string: a `postgres://` URL or libpq `key=value` pairs.
    Postgres(String),
}

impl fmt::Debug for SinkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkTarget::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            SinkTarget::Postgres(conn) => f.debug_tuple("Postgres").field(&redact(conn)).finish(),
        }
    }
}

impl SinkTarget {
    /// `postgres://…`/`postgresql://…` and libpq `key=value` strings (`host=… dbname=…`)
    /// are PostgreSQL; anything else a SQLite path (an optional `sqlite:` or `sqlite://`
    /// prefix is removed). Refused: an empty path, and an in-memory SQLite database
    /// (`:memory:`), whose rows would vanish when the run ends.
    pub fn parse(sink: &str) -> Result<Self, ConfigError> {
        let trimmed = sink.trim();
        if trimmed.starts_with("postgres://")
            || trimmed.starts_with("postgresql://")
            || looks_like_key_value(trimmed)
        {
            postgres_identity(trimmed).map_err(|e| {
                ConfigError::new(
                    "etl",
                    "sink",
                    redact(sink),
                    format!("a valid connection string ({e})"),
                )
            })?;
            return Ok(SinkTarget::Postgres(trimmed.to_owned()));
        }
        let path = trimmed
            .strip_prefix("sqlite://")
            .or_else(|| trimmed.strip_prefix("sqlite:"))
            .unwrap_or(trimmed);
        if path.is_empty() {
            return Err(ConfigError::new(
                "etl",
                "sink",
                sink,
                "a SQLite file path (e.g. sqlite:data/etl.sqlite) or a PostgreSQL connection string",
            ));
        }
        if path == ":memory:" || path.starts_with("file::memory:") || path.contains("mode=memory") {
            return Err(ConfigError::new(
                "etl",
                "sink",
                sink,
                "a SQLite file path: an in-memory database vanishes when the run ends, and the \
                 summary could not be checked against it",
            ));
        }
        Ok(SinkTarget::Sqlite(PathBuf::from(path)))
    }

    /// Who the sink is, without a password: the SQLite path, or
    /// `postgres://user@host:port/db`. A journal records it and refuses another sink.
    pub fn identity(&self) -> String {
        match self {
            SinkTarget::Sqlite(path) => {
                // The absolute path, so `a.db` and `./a.db` are one sink; the file may not
                // exist yet, so its directory is what gets resolved.
                let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                let resolved = match (absolute.parent(), absolute.file_name()) {
                    (Some(dir), Some(name)) => std::fs::canonicalize(dir)
                        .map(|d| d.join(name))
                        .unwrap_or(absolute.clone()),
                    _ => absolute,
                };
                format!("sqlite:{}", resolved.display())
            }
            SinkTarget::Postgres(conn) => {
                postgres_identity(conn).unwrap_or_else(|_| "postgres:(unparsable)".into())
            }
        }
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
    /// The source API's base URL (http://host:port); default: start the built-in flaky API.
    #[arg(long, env = "ETL_SOURCE_URL")]
    pub source_url: Option<String>,
    /// SQLite path, postgres:// URL or libpq "host=… user=… dbname=…" string.
    #[arg(long, env = "ETL_SINK", hide_env_values = true)]
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
    /// Rows the built-in API serves (0 to 1000000).
    #[arg(long, env = "ETL_ROWS")]
    pub rows: Option<usize>,
    /// Client-side rate limit, requests per second (1 to 100000).
    #[arg(long, env = "ETL_RATE")]
    pub rate: Option<u32>,
    /// Requests let through at once (1 to rate; default a tenth of the rate, at least 1).
    #[arg(long, env = "ETL_BURST")]
    pub burst: Option<u32>,
    /// Records per load batch (1 to 100000).
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
    /// The run's deadline with its unit, e.g. `50s` or `2m` (a bare number is refused).
    #[arg(long, env = "ETL_MAX_RUN_TIME", value_parser = parse_duration)]
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
        if let Some(rate) = self.rate {
            config.rate = rate;
            // A burst from the file was sized for the file's rate: derive it anew.
            config.burst = None;
        }
        if self.burst.is_some() {
            config.burst = self.burst;
        }
        set(&mut config.sink, self.sink);
        set(&mut config.chaos_seed, self.chaos_seed);
        set(&mut config.dataset.seed, self.data_seed);
        set(&mut config.dataset.rows, self.rows);
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

// ===== durations =====

/// Parse a duration with its unit (`250ms`, `2s`, `1.5m`, `1h`). A bare number is refused:
/// `100` could mean milliseconds or seconds, and guessing wrong is a 1000x mistake.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "`{trimmed}` has no unit; write e.g. \"{trimmed}ms\" or \"{trimmed}s\""
        ));
    }
    duration::parse(trimmed)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationData {
    Number(f64),
    Text(String),
}

fn to_duration<E: serde::de::Error>(data: DurationData) -> Result<Duration, E> {
    match data {
        DurationData::Number(n) => Err(E::custom(format!(
            "a bare number ({n}) is not a duration; write it with its unit, e.g. \"{n}ms\" or \"{n}s\""
        ))),
        DurationData::Text(text) => parse_duration(&text).map_err(E::custom),
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
            sink_outage = ["100ms", "0.2s"]
            "#,
        )
        .unwrap();
        assert_eq!(config.rate, 7);
        assert_eq!(config.burst(), 1, "a tenth of the rate, at least 1");
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
            config.sink_target().unwrap(),
            SinkTarget::Sqlite("data/x.db".into())
        );
        assert_eq!(
            config.journal_path().unwrap(),
            PathBuf::from("data/x.db.journal.jsonl")
        );
        config.validate().unwrap();
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
        assert_eq!(config.burst(), EtlConfig::default().burst());
    }

    fn refused_field(config: &EtlConfig) -> String {
        let err = config.validate().expect_err("must be refused");
        err.downcast_ref::<ConfigError>()
            .unwrap_or_else(|| panic!("not a ConfigError: {err}"))
            .field()
            .to_owned()
    }

    #[test]
    fn every_out_of_range_setting_is_refused_by_its_name() {
        type Edit = fn(&mut EtlConfig);
        let cases: &[(&str, Edit)] = &[
            ("rate", |c| c.rate = 0),
            ("rate", |c| c.rate = u32::MAX),
            ("burst", |c| c.burst = Some(0)),
            ("burst", |c| c.burst = Some(41)),
            ("batch_size", |c| c.batch_size = 0),
            ("batch_size", |c| c.batch_size = usize::MAX),
            ("max_run_time", |c| c.max_run_time = Duration::ZERO),
            ("max_run_time", |c| c.max_run_time = Duration::MAX),
            ("dataset.rows", |c| c.dataset.rows = usize::MAX),
            ("dataset.page_size", |c| c.dataset.page_size = 0),
            ("dataset.invalid_rate", |c| {
                c.dataset.invalid_rate = f64::NAN;
            }),
            ("dataset.duplicate_rate", |c| {
                c.dataset.duplicate_rate = -0.1;
            }),
            ("resilience.attempt_timeout", |c| {
                c.resilience.attempt_timeout = Duration::ZERO;
            }),
            ("resilience.request_timeout", |c| {
                c.resilience.request_timeout = Duration::MAX;
            }),
            ("resilience.max_attempts", |c| c.resilience.max_attempts = 0),
            ("resilience.max_attempts", |c| {
                c.resilience.max_attempts = 101;
            }),
            ("resilience.backoff_max", |c| {
                c.resilience.backoff_max = Duration::from_millis(1);
            }),
            ("resilience.breaker_failures", |c| {
                c.resilience.breaker_failures = 0;
            }),
            ("resilience.breaker_open", |c| {
                c.resilience.breaker_open = Duration::ZERO;
            }),
            ("resilience.sink_timeout", |c| {
                c.resilience.sink_timeout = Duration::ZERO;
            }),
            ("chaos.error_rate", |c| {
                c.chaos = Some(ChaosScenario {
                    error_rate: 1.5,
                    ..ChaosScenario::none()
                });
            }),
            ("chaos.error_rate + chaos.throttle_rate", |c| {
                c.chaos = Some(ChaosScenario {
                    error_rate: 0.6,
                    throttle_rate: 0.6,
                    ..ChaosScenario::none()
                });
            }),
            ("chaos.retry_after_secs", |c| {
                c.chaos = Some(ChaosScenario {
                    retry_after_secs: u64::MAX,
                    ..ChaosScenario::none()
                });
            }),
            ("chaos.sink_outage", |c| {
                c.chaos = Some(ChaosScenario {
                    sink_outage: Some(Duration::from_secs(2)..Duration::from_secs(1)),
                    ..ChaosScenario::none()
                });
            }),
            ("metrics_addr", |c| {
                c.metrics_addr = Some(SocketAddr::from(([0, 0, 0, 0], 9000)));
            }),
            ("sink", |c| c.sink = "sqlite:".into()),
            ("sink", |c| c.sink = ":memory:".into()),
            ("sink", |c| c.sink = "sqlite::memory:".into()),
            ("sink", |c| c.sink = "  ".into()),
            ("source_url", |c| c.source_url = Some("htp:/nowhere".into())),
            ("source_url", |c| c.source_url = Some("not a url".into())),
        ];
        for (field, edit) in cases {
            let mut config = EtlConfig::default();
            edit(&mut config);
            assert_eq!(refused_field(&config), *field, "{config:?}");
        }
        let unknown = EtlConfig {
            scenario: "apocalypse".into(),
            ..EtlConfig::default()
        };
        assert!(unknown.validate().is_err());
        assert!(EtlConfig::from_toml("rte = 3").is_err());
    }

    #[test]
    fn preset_sink_outages_come_after_the_source_outage() {
        // No batch is loaded while the source is down: a sink outage inside the source
        // outage would hit nothing (the `harsh` scenario's did, once).
        for name in ["flaky", "harsh"] {
            let s = ChaosScenario::named(name).unwrap();
            s.validate().unwrap();
            let (source, sink) = (s.source_outage.unwrap(), s.sink_outage.unwrap());
            assert!(sink.start > source.end, "{name}: {source:?} then {sink:?}");
        }
    }

    #[test]
    fn bare_numbers_are_not_durations() {
        let err = EtlConfig::from_toml("max_run_time = 100").unwrap_err();
        assert!(err.to_string().contains("unit"), "{err}");
        let err = EtlConfig::from_toml("[resilience]\nattempt_timeout = 2.5").unwrap_err();
        assert!(err.to_string().contains("attempt_timeout"), "{err}");
        assert!(parse_duration("100").is_err());
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        let cli = Cli::try_parse_from(["etl", "--max-run-time", "30"]);
        assert!(cli.is_err(), "a bare number flag is refused");
    }

    #[test]
    fn the_burst_follows_the_rate_unless_given() {
        for (rate, burst) in [(1, 1), (2, 1), (3, 1), (40, 4), (1000, 100)] {
            let cli = Cli::try_parse_from(["etl", "--rate", &rate.to_string()]).unwrap();
            let config = EtlConfig::from_cli(cli).unwrap();
            assert_eq!(config.burst(), burst, "rate {rate}");
        }
        let cli = Cli::try_parse_from(["etl", "--rate", "10", "--burst", "10"]).unwrap();
        assert_eq!(EtlConfig::from_cli(cli).unwrap().burst(), 10);
        let cli = Cli::try_parse_from(["etl", "--rate", "10", "--burst", "11"]).unwrap();
        assert!(EtlConfig::from_cli(cli).is_err());
    }

    #[test]
    fn both_postgres_forms_are_postgres_and_name_one_database() {
        let url = SinkTarget::parse("postgres://etl:pw@127.0.0.1:5433/db").unwrap();
        let kv =
            SinkTarget::parse("host=127.0.0.1 port=5433 user=etl password=pw dbname=db").unwrap();
        assert!(matches!(kv, SinkTarget::Postgres(_)), "{kv:?}");
        assert_eq!(url.identity(), kv.identity());
        assert_eq!(url.identity(), "postgres://etl@127.0.0.1:5433/db");
        assert!(!format!("{kv:?}").contains("pw"));
        let other = SinkTarget::parse("postgres://etl@127.0.0.1:5433/other").unwrap();
        assert_ne!(url.identity(), other.identity());
        let journal = |sink: &str| {
            EtlConfig {
                sink: sink.into(),
                ..EtlConfig::default()
            }
            .journal_path()
            .unwrap()
        };
        assert_ne!(
            journal("postgres://etl@127.0.0.1:5433/db"),
            journal("postgres://etl@127.0.0.1:5433/other"),
            "each database has its own journal"
        );
        assert_eq!(
            journal("postgres://etl:a@127.0.0.1:5433/db"),
            journal("host=127.0.0.1 port=5433 user=etl dbname=db password=b"),
        );
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
            config.sink_target().unwrap(),
            SinkTarget::Postgres(_)
        ));
        assert_eq!(
            config.chaos_scenario().unwrap(),
            ChaosScenario::named("calm").unwrap()
        );
    }
}
