//! The `stream` consumer: loses nothing and duplicates nothing, hardened by palisade.
//!
//! Events come from a durable local [`log`] (an append-only file of JSON lines; an
//! event's offset is its line number), are processed per key under a rate limit, and are
//! written through a circuit breaker to a [`store`] that fails under chaos. The
//! consumer commits its position only after the store has durably and idempotently applied
//! every event before it, so a crash or a store outage loses nothing and duplicates
//! nothing: after a restart, already-applied events are re-delivered and recognised by the
//! store (per key, it keeps the offset of the last event it applied). Replaying from offset
//! 0 rebuilds the output exactly (Kappa-style reprocessing).
//!
//! Layers: each event passes a per-key rate limit (palisade-rate-limit, keyed, waiting for
//! quota); each batch is written through a circuit breaker (palisade-circuit-breaker) to a
//! store whose failures are injected by palisade-chaos. File I/O and fsync run on tokio's
//! blocking pool, never on the async workers.
//!
//! ```
//! use palisade_examples::stream::{Consumer, Settings};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! let dir = tempfile::tempdir()?;
//! let settings = Settings { dir: dir.path().to_path_buf(), events: 200, ..Settings::default() };
//! let consumer = Consumer::new(settings)?;
//! let report = consumer.run().await?;
//! assert_eq!(report.committed, 200);
//! assert_eq!(consumer.store().applied(), 200);
//! # Ok(()) }
//! ```

pub mod log;
pub mod store;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use palisade::chaos::{ChaosConfig, ChaosLayer};
use palisade::circuit_breaker::{CircuitBreakerHandle, CircuitBreakerLayer};
use palisade::core::ConfigError;
use palisade::core::config::ensure;
use palisade::rate_limit::RateLimitConfig;
use palisade::{BoxError, CircuitOpen};
use tower::{Service, ServiceBuilder, ServiceExt};

pub use self::log::{Event, Log, LogReader, Position};
pub use self::store::{Account, Accounts, Offsets, StateError, Store};

/// The most events a produced log may hold (about 450 MB of log).
pub const MAX_EVENTS: u64 = 10_000_000;
/// The most events per batch (one store write).
pub const MAX_BATCH: usize = 100_000;

// ===== settings =====

/// Settings of one consumer run; also the `stream` binary's flags.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "stream",
    about = "An exactly-once stream consumer that survives crashes and sink outages; hardened by palisade."
)]
pub struct Settings {
    /// The directory of the log, the offset and the output.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("palisade-stream"))]
    pub dir: PathBuf,
    /// Events to produce when the log does not exist yet (0 to 10000000).
    #[arg(long, default_value_t = 2_000)]
    pub events: u64,
    /// Accounts the events are spread over (1 to 1000000).
    #[arg(long, default_value_t = 16)]
    pub keys: u64,
    /// Seed of the produced events and of the injected failures.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Share of store writes that fail (0 to below 1).
    #[arg(long, default_value_t = 0.2)]
    pub fail_rate: f64,
    /// Events per store write (1 to 100000).
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Events per second per account (1 to 1000000).
    #[arg(long, default_value_t = 1_000)]
    pub rate: u32,
    /// Rebuild the output from offset 0 (crash-safe: the offset is reset before the
    /// output, and a crash at any point leaves a state a rerun completes).
    #[arg(long)]
    pub replay: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self::parse_from(["stream"])
    }
}

impl Settings {
    /// Check every setting; an error names it, its value and the range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            self.events <= MAX_EVENTS,
            "stream",
            "events",
            self.events,
            "0 to 10000000",
        )?;
        ensure(
            (1..=1_000_000).contains(&self.keys),
            "stream",
            "keys",
            self.keys,
            "1 to 1000000",
        )?;
        ensure(
            (0.0..1.0).contains(&self.fail_rate),
            "stream",
            "fail_rate",
            self.fail_rate,
            "0.0 to below 1.0",
        )?;
        ensure(
            (1..=MAX_BATCH).contains(&self.batch),
            "stream",
            "batch",
            self.batch,
            "1 to 100000",
        )?;
        ensure(
            (1..=1_000_000).contains(&self.rate),
            "stream",
            "rate",
            self.rate,
            "1 to 1000000",
        )?;
        ensure(
            !self.dir.as_os_str().is_empty(),
            "stream",
            "dir",
            &self.dir,
            "a directory path",
        )
    }
}

// ===== the write path =====

/// The store as a tower service: each write takes `latency` (a round trip to a database)
/// and runs on the blocking pool. Failures are injected around it by palisade-chaos, like
/// a database refusing connections.
#[derive(Debug, Clone)]
struct StoreService {
    store: Store,
    latency: Duration,
}

/// A batch of events on its way to the store (shared, so a retried write does not copy it).
type Batch = Arc<Vec<Event>>;

impl Service<Batch> for StoreService {
    type Response = ();
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Batch) -> Self::Future {
        let (store, latency) = (self.store.clone(), self.latency);
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            tokio::task::spawn_blocking(move || store.apply(&batch)).await?
        })
    }
}

/// The write path: chaos (the store's failures) under a circuit breaker, so a store that
/// keeps failing is given room to recover instead of being hammered by the consumer.
fn write_path(
    store: Store,
    s: &Settings,
) -> Result<
    (
        impl Service<Batch, Response = (), Error = BoxError, Future: Send> + Clone + Send,
        CircuitBreakerHandle,
    ),
    BoxError,
> {
    let chaos = ChaosConfig::builder()
        .name("sink-chaos")
        .seed(s.seed ^ 0x5eed)
        .error(s.fail_rate, |_: &Batch| -> BoxError {
            "sink unavailable (injected)".into()
        })
        .build()?;
    let breaker = CircuitBreakerLayer::builder()
        .name("sink")
        .count_window(20)
        .minimum_calls(10)
        .failure_rate_threshold(60.0)
        .open_duration(Duration::from_millis(200))
        .half_open_probes(1)
        .build()?;
    let handle = breaker.handle();
    let svc = ServiceBuilder::new()
        .layer(breaker)
        .layer(ChaosLayer::new(chaos))
        .service(StoreService {
            store,
            latency: Duration::from_millis(2),
        });
    Ok((svc, handle))
}

/// The processing stage: validates an event, at most `rate` events per second per key (a
/// noisy account cannot starve the others), waiting for its key's quota.
fn process_stage(
    s: &Settings,
) -> Result<
    impl Service<Event, Response = Event, Error = BoxError, Future: Send> + Clone + Send,
    BoxError,
> {
    let per_key = RateLimitConfig::builder(s.rate, Duration::from_secs(1))
        .name("per-account")
        .max_wait(Duration::from_secs(60))
        .keyed(|e: &Event| e.key.clone())?;
    Ok(ServiceBuilder::new()
        .layer(per_key)
        .service_fn(|event: Event| async move {
            if event.key.is_empty() {
                return Err::<Event, BoxError>(format!("event {} has no key", event.offset).into());
            }
            Ok(event)
        }))
}

/// Run blocking file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BoxError> + Send + 'static,
) -> Result<T, BoxError> {
    tokio::task::spawn_blocking(work).await?
}

// ===== the consumer =====

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// The committed offset at the end: the next event to process.
    pub committed: u64,
    /// Batches written.
    pub batches: u64,
    /// Store writes that failed (and were written again).
    pub sink_failures: u64,
    /// Writes the open breaker refused (waited out as it asked).
    pub breaker_rejections: u64,
    /// Events applied by the store.
    pub applied: u64,
    /// Re-delivered events the store recognised and skipped.
    pub skipped_redelivered: u64,
}

/// A consumer over one directory: `events.log`, `consumer.offset`, `accounts.json`.
#[derive(Debug, Clone)]
pub struct Consumer {
    log: Log,
    offsets: Offsets,
    store: Store,
    settings: Settings,
}

impl Consumer {
    /// A consumer with `settings` (validated; the directory is created).
    pub fn new(settings: Settings) -> Result<Self, BoxError> {
        settings.validate()?;
        let dir = &settings.dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the directory {}: {e}", dir.display()))?;
        Ok(Self {
            log: Log::new(dir.join("events.log")),
            offsets: Offsets::new(dir.join("consumer.offset")),
            store: Store::new(dir.join("accounts.json")),
            settings,
        })
    }

    /// The event log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The committed offsets.
    pub fn offsets(&self) -> &Offsets {
        &self.offsets
    }

    /// The output store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Produce the log if missing, reset for a replay if asked, check the state files, and
    /// open a reader at the committed position.
    async fn prepare(&self) -> Result<LogReader, BoxError> {
        let (log, offsets, store) = (self.log.clone(), self.offsets.clone(), self.store.clone());
        let s = self.settings.clone();
        blocking(move || {
            log.produce_if_missing(s.events, s.keys, s.seed)?;
            if s.replay {
                // Kappa reprocessing: the output is a function of the log, so rebuild it.
                // The offset goes back first: a crash right after it leaves the old output
                // with offset 0, and a rerun re-delivers every event, which the old output
                // recognises (each key's last applied offset), ending where a full replay
                // ends. Clearing the output first would lose events 0..offset on a crash.
                offsets.commit(Position::default())?;
                store.clear()?;
            }
            // A corrupt state file is an error now, before any event is processed.
            store.load()?;
            let at = offsets.load()?;
            log.reader_at(at)
        })
        .await
    }

    /// Consume from the committed offset to the end of the log.
    pub async fn run(&self) -> Result<RunReport, BoxError> {
        let s = &self.settings;
        let mut reader = self.prepare().await?;
        let (mut sink, breaker) = write_path(self.store.clone(), s)?;
        let mut process = process_stage(s)?;
        let mut report = RunReport::default();
        let batch_size = s.batch;
        loop {
            let (events, back) = blocking(move || {
                let events = reader.read(batch_size)?;
                Ok((events, reader))
            })
            .await?;
            reader = back;
            if events.is_empty() {
                break;
            }
            let mut batch = Vec::with_capacity(events.len());
            for event in events {
                batch.push(process.ready().await?.call(event).await?);
            }
            let batch = Arc::new(batch);
            // Never skip a batch: wait out store failures (and an open breaker, as long as
            // it says), then write the same batch again. The offset moves only after the
            // store applied it. A corrupt state file is not an outage: it stops the run.
            let mut delay = Duration::from_millis(10);
            loop {
                let err = match sink.ready().await?.call(Arc::clone(&batch)).await {
                    Ok(()) => break,
                    Err(err) if err.is::<StateError>() => return Err(err),
                    Err(err) => err,
                };
                let wait = match err.downcast_ref::<CircuitOpen>() {
                    Some(open) => {
                        report.breaker_rejections += 1;
                        open.retry_after().unwrap_or(Duration::from_secs(1))
                    }
                    None => {
                        report.sink_failures += 1;
                        delay
                    }
                };
                tracing::warn!(
                    error = %err,
                    offset = batch.first().map_or(0, |e| e.offset),
                    breaker = %breaker.state(),
                    wait_ms = wait.as_millis() as u64,
                    "sink write failed; writing the batch again"
                );
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            let at = reader.position();
            let offsets = self.offsets.clone();
            blocking(move || offsets.commit(at)).await?;
            report.batches += 1;
        }
        report.committed = reader.position().offset;
        report.applied = self.store.applied();
        report.skipped_redelivered = self.store.skipped();
        Ok(report)
    }
}

// ===== summary =====

/// What the `stream` binary prints: the run's report and the accounts it left.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The consumer's directory.
    pub dir: PathBuf,
    /// The run.
    pub report: RunReport,
    /// The output at the end.
    pub accounts: Accounts,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.report;
        let total: i64 = self.accounts.values().map(|a| a.balance).sum();
        let events: u64 = self.accounts.values().map(|a| a.events).sum();
        writeln!(f, "stream consumer: {}", self.dir.display())?;
        writeln!(f, "  committed offset     {}", r.committed)?;
        writeln!(f, "  batches written      {}", r.batches)?;
        writeln!(
            f,
            "  sink failures        {} (written again, nothing lost)",
            r.sink_failures
        )?;
        writeln!(
            f,
            "  breaker rejections   {} (waited out as the breaker asked)",
            r.breaker_rejections
        )?;
        writeln!(f, "  events applied       {}", r.applied)?;
        writeln!(f, "  redeliveries skipped {}", r.skipped_redelivered)?;
        write!(
            f,
            "  accounts             {} (events {events}, balance {total})",
            self.accounts.len()
        )
    }
}

/// Run a consumer with `settings` and read back its output.
pub async fn run(settings: Settings) -> Result<Summary, BoxError> {
    let consumer = Consumer::new(settings)?;
    let report = consumer.run().await?;
    let store = consumer.store().clone();
    let accounts = blocking(move || store.load()).await?;
    Ok(Summary {
        dir: consumer.settings.dir.clone(),
        report,
        accounts,
    })
}
