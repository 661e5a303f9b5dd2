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
//! quota); each batch is written through a retry bounded by time, not attempts
//! (palisade-retry's `until_deadline`: a batch is never skipped), over a circuit breaker
//! (palisade-circuit-breaker), to a store whose failures are injected by palisade-chaos.
//! File I/O and fsync run on tokio's blocking pool, never on the async workers.
//!
//! # Sources
//!
//! The events come from one of two sources; the rest of the pipeline is the same:
//! - the embedded file log (the default, zero setup): one consumer per directory;
//! - a Redis stream (`--source redis://HOST:PORT/STREAM`), consumed by a consumer group
//!   that several processes share ([`redis`]): dead consumers' entries are claimed, poison
//!   entries go to a dead-letter stream, each key's events are applied in order.
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
pub mod redis;
pub mod store;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use palisade::chaos::{ChaosConfig, ChaosLayer};
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::core::ConfigError;
use palisade::core::config::{duration, ensure};
use palisade::rate_limit::RateLimitLayer;
use palisade::retry::RejectionAware;
use palisade::retry::{Backoff, RetryEvent, RetryLayer};
use palisade::{BoxError, CircuitOpen, Classify, Outcome};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt};

pub use self::log::{Event, Log, LogReader, Position, generate};
pub use self::redis::{RedisConsumer, RedisOptions, RedisReport, RedisSpec};
pub use self::store::{Account, Accounts, Applied, Offsets, Parked, StateError, Store};

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
    /// output, and a crash at any point leaves a state a rerun completes). File log only.
    #[arg(long)]
    pub replay: bool,
    /// Where events come from: `file` (the log in --dir) or `redis://HOST:PORT/STREAM` (a
    /// Redis stream shared by a consumer group; the output still goes to --dir).
    #[arg(long, default_value = "file")]
    pub source: String,
    /// The consumer group (Redis source).
    #[arg(long, default_value = "stream-consumers")]
    pub group: String,
    /// This consumer's name in the group, unique per running consumer (Redis source).
    #[arg(long, default_value_t = format!("consumer-{}", std::process::id()))]
    pub consumer: String,
    /// How long an entry may stay pending with a consumer before another claims it, e.g.
    /// `30s` (Redis source; 10ms to 24h).
    #[arg(long, default_value = "30s", value_parser = duration::parse)]
    pub claim_idle: Duration,
    /// Deliveries after which a failing entry goes to the dead-letter stream (Redis
    /// source; 1 to 1000).
    #[arg(long, default_value_t = 5)]
    pub max_deliveries: u64,
    /// The largest amount (either sign) an event may move; larger ones are refused as
    /// invalid (0 to 1000000000000).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_amount: u64,
    /// Stop once nothing came for this long and the group has nothing pending, e.g. `5s`
    /// (Redis source; default: run until interrupted).
    #[arg(long, value_parser = duration::parse)]
    pub idle_exit: Option<Duration>,
    /// Serve Prometheus metrics at http://ADDR/metrics (a loopback address).
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// What to do (default: consume).
    #[command(subcommand)]
    pub command: Option<StreamCommand>,
}

/// The `stream` binary's commands besides consuming.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum StreamCommand {
    /// Append the deterministic events (--events, --keys, --seed) to the Redis stream,
    /// unless it already holds entries.
    Produce,
    /// Put every entry of the dead-letter stream (`<stream>:dead-letters`) back on the
    /// Redis stream, after the cause was fixed.
    RedriveDeadLetters,
}

/// Where a consumer's events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The embedded file log in the consumer's directory.
    File,
    /// A Redis stream.
    Redis(RedisSpec),
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
        )?;
        self.source_spec()?;
        ensure(
            !self.group.is_empty(),
            "stream",
            "group",
            &self.group,
            "a non-empty name",
        )?;
        ensure(
            !self.consumer.is_empty(),
            "stream",
            "consumer",
            &self.consumer,
            "a non-empty name",
        )?;
        ensure(
            (Duration::from_millis(10)..=Duration::from_secs(86_400)).contains(&self.claim_idle),
            "stream",
            "claim_idle",
            duration::format(self.claim_idle),
            "10ms to 24h",
        )?;
        ensure(
            (1..=1000).contains(&self.max_deliveries),
            "stream",
            "max_deliveries",
            self.max_deliveries,
            "1 to 1000",
        )?;
        ensure(
            self.max_amount <= 1_000_000_000_000,
            "stream",
            "max_amount",
            self.max_amount,
            "0 to 1000000000000",
        )?;
        if let Some(idle) = self.idle_exit {
            ensure(
                (Duration::from_millis(1)..=Duration::from_secs(86_400 * 365)).contains(&idle),
                "stream",
                "idle_exit",
                duration::format(idle),
                "1ms to 365 days",
            )?;
        }
        if let Some(addr) = self.metrics_addr {
            ensure(
                addr.ip().is_loopback(),
                "stream",
                "metrics_addr",
                addr,
                "a loopback address",
            )?;
        }
        Ok(())
    }

    /// The source named by `--source`.
    pub fn source_spec(&self) -> Result<Source, ConfigError> {
        if self.source == "file" {
            return Ok(Source::File);
        }
        RedisSpec::parse(&self.source)
            .map(Source::Redis)
            .map_err(|why| {
                let shown = crate::etl::redact::redact(&self.source);
                ConfigError::new(
                    "stream",
                    "source",
                    shown,
                    format!("`file` or redis://HOST:PORT/STREAM ({why})"),
                )
            })
    }

    /// The Redis consumer's options from these settings.
    pub fn redis_options(&self) -> RedisOptions {
        RedisOptions {
            group: self.group.clone(),
            consumer: self.consumer.clone(),
            batch: self.batch,
            claim_idle: self.claim_idle,
            max_deliveries: self.max_deliveries,
            idle_exit: self.idle_exit,
            ..RedisOptions::default()
        }
    }
}

// ===== the write path =====

/// The store as a tower service: each write takes `latency` (a round trip to a database)
/// and runs on the blocking pool. Failures are injected around it by palisade-chaos, like
/// a database refusing connections. In order mode (a shared stream) it says what it did
/// with each event; in offset mode (the file log) it answers an empty list.
#[derive(Debug, Clone)]
struct StoreService {
    store: Store,
    latency: Duration,
    in_order: bool,
}

/// A batch of events on its way to the store (shared, so a retried write does not copy it).
pub type Batch = Arc<Vec<Event>>;

impl Service<Batch> for StoreService {
    type Response = Vec<Applied>;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Vec<Applied>, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Batch) -> Self::Future {
        let (store, latency, in_order) = (self.store.clone(), self.latency, self.in_order);
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            tokio::task::spawn_blocking(move || {
                if in_order {
                    store.apply_in_order(&batch)
                } else {
                    store.apply(&batch).map(|()| Vec::new())
                }
            })
            .await?
        })
    }
}

/// What the write path counts: store writes that failed, and writes the open breaker
/// refused. Shared by the path's clones.
#[derive(Debug, Default)]
pub struct SinkCounters {
    failures: AtomicU64,
    rejections: AtomicU64,
}

/// The write path: a retry bounded by time alone (palisade-retry's `until_deadline`, with
/// no deadline: a batch is written until the store takes it, never skipped) over a circuit
/// breaker over chaos (the store's failures). The breaker gives a store that keeps failing
/// room to recover: its refusals are waited out for as long as it asks. A store whose
/// state file is unreadable ([`StateError`]) is not retried: the error stops the run.
fn write_path(
    store: Store,
    s: &Settings,
    in_order: bool,
    seed: u64,
) -> Result<(redis::Sink, Arc<SinkCounters>), BoxError> {
    let chaos = ChaosConfig::builder()
        .name("sink-chaos")
        .seed(seed ^ 0x5eed)
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
    let counters = Arc::new(SinkCounters::default());
    let counted = Arc::clone(&counters);
    let logged = handle;
    let retry = RetryLayer::builder()
        .name("sink-write")
        .until_deadline()
        .no_budget()
        .backoff(Backoff::exponential(Duration::from_millis(10)).max_delay(Duration::from_secs(1)))
        .seed(seed)
        .classifier(move |result: &Result<Vec<Applied>, BoxError>| {
            let Err(err) = result else {
                return Outcome::Success;
            };
            if err.is::<StateError>() {
                // Not an outage: an operator must look. Returned at once (no hint).
                return Outcome::Ignore;
            }
            if err.is::<CircuitOpen>() {
                counted.rejections.fetch_add(1, Ordering::Relaxed);
            } else {
                counted.failures.fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!(
                error = %err,
                breaker = %logged.state(),
                "sink write failed; writing the batch again"
            );
            RejectionAware.classify(result)
        })
        .retry_after(
            |result: &Result<Vec<Applied>, BoxError>| -> Option<Duration> {
                // An open breaker says when to come back; wait that long, then write again.
                let open = result.as_ref().err()?.downcast_ref::<CircuitOpen>()?;
                Some(open.retry_after().unwrap_or(Duration::from_secs(1)))
            },
        )
        .on_event(|event: &RetryEvent| {
            if let RetryEvent::Retrying { attempt, delay } = event {
                tracing::debug!(
                    attempt,
                    delay_ms = delay.as_millis() as u64,
                    "store write retried"
                );
            }
        })
        .build()?;
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(breaker)
        .layer(ChaosLayer::new(chaos))
        .service(StoreService {
            store,
            latency: Duration::from_millis(2),
            in_order,
        });
    Ok((BoxCloneSyncService::new(svc), counters))
}

/// The processing stage: validates an event (a key, an amount within `max_amount`), at
/// most `rate` events per second per key (a noisy account cannot starve the others),
/// waiting for its key's quota.
fn process_stage(s: &Settings) -> Result<redis::Process, BoxError> {
    let per_key = RateLimitLayer::builder(s.rate, Duration::from_secs(1))
        .name("per-account")
        .max_wait(Duration::from_secs(60))
        .build()?
        .key_by(|e: &Event| e.key.clone());
    let max_amount = s.max_amount;
    let svc = ServiceBuilder::new()
        .layer(per_key)
        .service_fn(move |event: Event| async move {
            if event.key.is_empty() {
                return Err::<Event, BoxError>(format!("event {} has no key", event.offset).into());
            }
            if event.amount.unsigned_abs() > max_amount {
                return Err(format!(
                    "event {} of {} moves {}, more than the limit of {max_amount} (--max-amount)",
                    event.offset, event.key, event.amount
                )
                .into());
            }
            Ok(event)
        });
    Ok(BoxCloneSyncService::new(svc))
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
        let (mut sink, counters) = write_path(self.store.clone(), s, false, s.seed)?;
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
            // Never skip a batch: the write path writes it until the store takes it
            // (waiting out store failures and an open breaker). The offset moves only
            // after the store applied it.
            sink.ready().await?.call(Arc::new(batch)).await?;
            let at = reader.position();
            let offsets = self.offsets.clone();
            blocking(move || offsets.commit(at)).await?;
            report.batches += 1;
        }
        report.committed = reader.position().offset;
        report.sink_failures = counters.failures.load(Ordering::Relaxed);
        report.breaker_rejections = counters.rejections.load(Ordering::Relaxed);
        report.applied = self.store.applied();
        report.skipped_redelivered = self.store.skipped();
        Ok(report)
    }
}

// ===== the Redis consumer =====

impl RedisConsumer {
    /// A consumer of the Redis stream `settings.source` names, in `settings.group` as
    /// `settings.consumer`, applying to the store in `settings.dir` (shared by every
    /// consumer of the group; validated; the directory is created).
    pub fn from_settings(settings: &Settings) -> Result<Self, BoxError> {
        settings.validate()?;
        let Source::Redis(spec) = settings.source_spec()? else {
            return Err("the source is the file log, not a Redis stream".into());
        };
        let dir = &settings.dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the directory {}: {e}", dir.display()))?;
        let store = Store::new(dir.join("accounts.json"));
        // Each consumer's injected failures differ (seeded by its name too).
        let seed = settings.consumer.bytes().fold(settings.seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let (sink, counters) = write_path(store.clone(), settings, true, seed)?;
        let process = process_stage(settings)?;
        RedisConsumer::new(
            spec,
            settings.redis_options(),
            store,
            sink,
            process,
            counters,
        )
    }
}

// ===== summary =====

/// What the `stream` binary prints.
#[derive(Debug, Clone)]
pub enum Output {
    /// A consumer ran.
    Consumed(Summary),
    /// `produce`: entries appended to the stream (0 when it already held entries).
    Produced {
        /// The stream.
        stream: String,
        /// Entries appended.
        added: u64,
    },
    /// `redrive-dead-letters`: dead letters put back on the stream.
    Redriven {
        /// The stream.
        stream: String,
        /// Dead letters moved.
        moved: u64,
    },
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Consumed(summary) => summary.fmt(f),
            Output::Produced { stream, added: 0 } => {
                write!(f, "stream {stream} already holds entries; nothing produced")
            }
            Output::Produced { stream, added } => {
                write!(f, "produced {added} events into {stream}")
            }
            Output::Redriven { stream, moved } => {
                write!(f, "re-drove {moved} dead letters back onto {stream}")
            }
        }
    }
}

/// What the `stream` binary prints: the run's report and the accounts it left.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The consumer's directory.
    pub dir: PathBuf,
    /// The run.
    pub report: RunReport,
    /// The output at the end.
    pub accounts: Accounts,
    /// The source (`file`, or the Redis stream without credentials).
    pub source: String,
    /// What the Redis consumer did (Redis source only).
    pub redis: Option<RedisReport>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.report;
        let total: i64 = self.accounts.values().map(|a| a.balance).sum();
        let events: u64 = self.accounts.values().map(|a| a.events).sum();
        writeln!(f, "stream consumer: {}", self.dir.display())?;
        if let Some(x) = &self.redis {
            writeln!(f, "  source               {}", self.source)?;
            writeln!(
                f,
                "  entries delivered    {} ({} claimed from other consumers)",
                x.delivered, x.claimed
            )?;
            writeln!(f, "  entries acknowledged {}", x.acked)?;
            writeln!(f, "  events applied       {}", x.applied)?;
            writeln!(f, "  redeliveries skipped {}", x.duplicates)?;
            writeln!(f, "  failed, left pending {}", x.failed)?;
            writeln!(f, "  dead-lettered        {}", x.dead_lettered)?;
            writeln!(
                f,
                "  redis pauses         {} (redis unavailable, nothing lost)",
                x.redis_pauses
            )?;
            writeln!(
                f,
                "  sink failures        {} (written again, nothing lost)",
                x.sink_failures
            )?;
            return write!(
                f,
                "  accounts             {} (events {events}, balance {total})",
                self.accounts.len()
            );
        }
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

/// Run what `settings` ask (consume from the file log or a Redis stream, produce,
/// re-drive dead letters) and read back the output.
pub async fn run(settings: Settings) -> Result<Output, BoxError> {
    settings.validate()?;
    if let Some(addr) = settings.metrics_addr {
        crate::telemetry::serve_metrics(addr)?;
    }
    let spec = match settings.source_spec()? {
        Source::File if settings.command.is_some() => {
            return Err(
                "produce and redrive-dead-letters need --source redis://HOST:PORT/STREAM".into(),
            );
        }
        Source::File => return run_file(settings).await.map(Output::Consumed),
        Source::Redis(spec) => spec,
    };
    match settings.command {
        Some(StreamCommand::Produce) => {
            let client = redis::RedisClient::new(&spec.url, "redis", Duration::from_secs(2))?;
            let added = redis::produce(
                &client,
                &spec,
                settings.events,
                settings.keys,
                settings.seed,
            )
            .await?;
            Ok(Output::Produced {
                stream: spec.to_string(),
                added,
            })
        }
        Some(StreamCommand::RedriveDeadLetters) => {
            let client = redis::RedisClient::new(&spec.url, "redis", Duration::from_secs(2))?;
            let moved = redis::redrive_dead_letters(&client, &spec).await?;
            Ok(Output::Redriven {
                stream: spec.to_string(),
                moved,
            })
        }
        None => {
            if settings.replay {
                return Err("--replay works on the file log; a Redis stream is replayed by a new consumer group".into());
            }
            let consumer = RedisConsumer::from_settings(&settings)?;
            let report = consumer.run().await?;
            let store = Store::new(settings.dir.join("accounts.json"));
            let accounts = blocking(move || store.load()).await?;
            Ok(Output::Consumed(Summary {
                dir: settings.dir.clone(),
                report: RunReport::default(),
                accounts,
                source: spec.to_string(),
                redis: Some(report),
            }))
        }
    }
}

async fn run_file(settings: Settings) -> Result<Summary, BoxError> {
    let consumer = Consumer::new(settings)?;
    let report = consumer.run().await?;
    let store = consumer.store().clone();
    let accounts = blocking(move || store.load()).await?;
    Ok(Summary {
        dir: consumer.settings.dir.clone(),
        report,
        accounts,
        source: "file".into(),
        redis: None,
    })
}
