//! A stream consumer that loses nothing and duplicates nothing, hardened by palisade.
//!
//! Events come from a durable local log (an append-only file of JSON lines; an event's
//! offset is its line number), are processed per key under a rate limit, and are written
//! through a circuit breaker to a sink that fails under chaos. The consumer commits its
//! offset only after the sink has durably and idempotently applied every event before it,
//! so a crash or a sink outage loses nothing and duplicates nothing: after a restart,
//! already-applied events are re-delivered and recognised by the sink (per key, it keeps
//! the offset of the last event it applied). Replaying from offset 0 rebuilds the output
//! exactly (Kappa-style reprocessing).
//!
//! Layers: each event passes a per-key rate limit (palisade-rate-limit, keyed, waiting for
//! quota); each batch is written through a circuit breaker (palisade-circuit-breaker) to a
//! sink whose failures are injected by palisade-chaos.
//!
//! Run: `cargo run -p palisade-examples --bin stream -- --events 2000 --fail-rate 0.2`
//! Replay: add `--replay`. Options: `--dir`, `--events`, `--keys`, `--seed`, `--fail-rate`,
//! `--batch`, `--rate` (events per second per key).

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade::chaos::{ChaosConfig, ChaosLayer};
use palisade::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle};
use palisade::rate_limit::RateLimitConfig;
use palisade::{BoxError, CircuitOpen};
use serde::{Deserialize, Serialize};
use tower::{Service, ServiceBuilder, ServiceExt};

// ===== the durable log =====

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Event {
    offset: u64,
    key: String,
    amount: i64,
}

/// An append-only file of JSON lines; the offset of an event is its line number.
struct Log {
    path: PathBuf,
}

impl Log {
    fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Write `count` deterministic events for `keys` keys (only if the log does not exist:
    /// a log is never rewritten).
    fn produce_if_missing(&self, count: u64, keys: u64, seed: u64) -> Result<(), BoxError> {
        if self.path.exists() {
            return Ok(());
        }
        let mut rng = fastrand::Rng::with_seed(seed);
        let tmp = self.path.with_extension("tmp");
        let mut out = std::io::BufWriter::new(fs::File::create(&tmp)?);
        for offset in 0..count {
            let event = Event {
                offset,
                key: format!("account-{}", rng.u64(0..keys)),
                amount: rng.i64(-500..=1000),
            };
            serde_json::to_writer(&mut out, &event)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        out.get_ref().sync_all()?;
        drop(out);
        fs::rename(tmp, &self.path)?;
        Ok(())
    }

    /// The events from `offset` on, at most `max`.
    fn read_from(&self, offset: u64, max: usize) -> Result<Vec<Event>, BoxError> {
        let file = BufReader::new(fs::File::open(&self.path)?);
        let mut events = Vec::with_capacity(max);
        for line in file.lines().skip(usize::try_from(offset)?).take(max) {
            events.push(serde_json::from_str(&line?)?);
        }
        Ok(events)
    }
}

// ===== files written atomically =====

/// Write `bytes` to `path` so that a crash leaves either the old or the new content.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BoxError> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(tmp, path)?;
    Ok(())
}

/// The consumer's committed offset: the next event to process.
struct Offsets {
    path: PathBuf,
}

impl Offsets {
    fn load(&self) -> Result<u64, BoxError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => Ok(text.trim().parse()?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    fn commit(&self, next: u64) -> Result<(), BoxError> {
        write_atomically(&self.path, next.to_string().as_bytes())
    }
}

// ===== the sink =====

/// What the sink keeps per key: a running balance, and the offset of the last event it
/// applied, which makes re-delivered events no-ops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Account {
    balance: i64,
    events: u64,
    last_offset: Option<u64>,
}

/// The output store: a file of accounts, rewritten atomically per batch.
#[derive(Clone)]
struct Sink {
    path: PathBuf,
    applied: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
}

impl Sink {
    fn load(&self) -> Result<BTreeMap<String, Account>, BoxError> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Apply a batch idempotently: an event at or below a key's last applied offset was
    /// applied before (a re-delivery after a crash) and changes nothing.
    fn apply(&self, batch: &[Event]) -> Result<(), BoxError> {
        let mut accounts = self.load()?;
        for event in batch {
            let account = accounts.entry(event.key.clone()).or_default();
            if account.last_offset.is_some_and(|last| event.offset <= last) {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            account.balance += event.amount;
            account.events += 1;
            account.last_offset = Some(event.offset);
            self.applied.fetch_add(1, Ordering::Relaxed);
        }
        write_atomically(&self.path, &serde_json::to_vec_pretty(&accounts)?)
    }
}

/// The sink as a tower service: each write takes `latency` (a round trip to a database).
/// Failures are injected around it by palisade-chaos, like a database refusing connections.
#[derive(Clone)]
struct SinkService {
    sink: Sink,
    latency: Duration,
}

impl Service<Batch> for SinkService {
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
        let (sink, latency) = (self.sink.clone(), self.latency);
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            sink.apply(&batch)
        })
    }
}

/// A batch of events on its way to the sink (shared, so a retried write does not copy it).
type Batch = Arc<Vec<Event>>;

/// The write path: chaos (the sink's failures) under a circuit breaker, so a sink that keeps
/// failing is given room to recover instead of being hammered by the consumer.
fn write_path(
    sink: Sink,
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
    let breaker = CircuitBreakerConfig::builder()
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
        .service(SinkService {
            sink,
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

// ===== the consumer =====

/// Settings of one consumer run.
#[derive(Debug, Clone)]
struct Settings {
    dir: PathBuf,
    events: u64,
    keys: u64,
    seed: u64,
    fail_rate: f64,
    batch: usize,
    rate: u32,
    replay: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            dir: std::env::temp_dir().join("palisade-stream"),
            events: 2_000,
            keys: 16,
            seed: 7,
            fail_rate: 0.2,
            batch: 50,
            rate: 1_000,
            replay: false,
        }
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct RunReport {
    committed: u64,
    batches: u64,
    sink_failures: u64,
    breaker_rejections: u64,
    applied: u64,
    skipped_redelivered: u64,
}

struct Consumer {
    log: Log,
    offsets: Offsets,
    sink: Sink,
    settings: Settings,
}

impl Consumer {
    fn new(settings: Settings) -> Result<Self, BoxError> {
        fs::create_dir_all(&settings.dir)?;
        let dir = &settings.dir;
        Ok(Self {
            log: Log::new(dir.join("events.log")),
            offsets: Offsets {
                path: dir.join("consumer.offset"),
            },
            sink: Sink {
                path: dir.join("accounts.json"),
                applied: Arc::default(),
                skipped: Arc::default(),
            },
            settings,
        })
    }

    /// Consume from the committed offset to the end of the log.
    async fn run(&self) -> Result<RunReport, BoxError> {
        let s = &self.settings;
        self.log.produce_if_missing(s.events, s.keys, s.seed)?;
        if s.replay {
            // Kappa reprocessing: the output is a function of the log, so rebuild it.
            let _ = fs::remove_file(&self.sink.path);
            self.offsets.commit(0)?;
        }
        let (mut sink, breaker) = write_path(self.sink.clone(), s)?;
        let mut process = process_stage(s)?;
        let mut report = RunReport::default();
        let mut next = self.offsets.load()?;
        loop {
            let events = self.log.read_from(next, s.batch)?;
            let Some(last) = events.last().map(|e| e.offset) else {
                break;
            };
            let mut batch = Vec::with_capacity(events.len());
            for event in events {
                batch.push(process.ready().await?.call(event).await?);
            }
            let batch = Arc::new(batch);
            // Never skip a batch: wait out sink failures (and an open breaker, as long as it
            // says), then write the same batch again. The offset moves only after the sink
            // applied it.
            let mut delay = Duration::from_millis(10);
            loop {
                match sink.ready().await?.call(Arc::clone(&batch)).await {
                    Ok(()) => break,
                    Err(err) => {
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
                        tracing::warn!(error = %err, offset = next, state = ?breaker.state(), "sink write failed; waiting {wait:?}");
                        tokio::time::sleep(wait).await;
                        delay = (delay * 2).min(Duration::from_secs(1));
                    }
                }
            }
            next = last + 1;
            self.offsets.commit(next)?;
            report.batches += 1;
        }
        report.committed = next;
        report.applied = self.sink.applied.load(Ordering::Relaxed);
        report.skipped_redelivered = self.sink.skipped.load(Ordering::Relaxed);
        Ok(report)
    }
}

// ===== main =====

fn parse_args() -> Result<Settings, BoxError> {
    let mut s = Settings::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => s.dir = PathBuf::from(value()?),
            "--events" => s.events = value()?.parse()?,
            "--keys" => s.keys = value()?.parse()?,
            "--seed" => s.seed = value()?.parse()?,
            "--fail-rate" => s.fail_rate = value()?.parse()?,
            "--batch" => s.batch = value()?.parse()?,
            "--rate" => s.rate = value()?.parse()?,
            "--replay" => s.replay = true,
            other => return Err(format!("unknown flag {other}; see the file's docs").into()),
        }
    }
    if !(0.0..1.0).contains(&s.fail_rate) {
        return Err(format!("--fail-rate {} must be in [0, 1)", s.fail_rate).into());
    }
    if s.batch == 0 || s.keys == 0 || s.rate == 0 {
        return Err("--batch, --keys and --rate must be above zero".into());
    }
    Ok(s)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let settings = parse_args()?;
    let consumer = Consumer::new(settings.clone())?;
    let report = consumer.run().await?;
    let accounts = consumer.sink.load()?;
    let total: i64 = accounts.values().map(|a| a.balance).sum();
    let events: u64 = accounts.values().map(|a| a.events).sum();
    let mut out = std::io::stdout().lock();
    writeln!(out, "stream consumer: {}", settings.dir.display())?;
    writeln!(out, "  committed offset     {}", report.committed)?;
    writeln!(out, "  batches written      {}", report.batches)?;
    writeln!(
        out,
        "  sink failures        {} (retried, nothing lost)",
        report.sink_failures
    )?;
    writeln!(
        out,
        "  breaker rejections   {} (waited out as the breaker asked)",
        report.breaker_rejections
    )?;
    writeln!(out, "  events applied       {}", report.applied)?;
    writeln!(out, "  redeliveries skipped {}", report.skipped_redelivered)?;
    writeln!(
        out,
        "  accounts             {} (events {events}, balance {total})",
        accounts.len()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, fail_rate: f64) -> Settings {
        Settings {
            dir: dir.to_path_buf(),
            events: 600,
            keys: 8,
            seed: 42,
            fail_rate,
            batch: 25,
            rate: 200,
            replay: false,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "palisade-stream-test-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test(start_paused = true)]
    async fn every_event_is_applied_exactly_once_despite_sink_failures() {
        let dir = temp_dir("once");
        let consumer = Consumer::new(settings(&dir, 0.3)).unwrap();
        let report = consumer.run().await.unwrap();
        assert_eq!(report.committed, 600);
        assert!(report.sink_failures > 0, "the chaos must have bitten");
        let accounts = consumer.sink.load().unwrap();
        let events: u64 = accounts.values().map(|a| a.events).sum();
        assert_eq!(events, 600);
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_mid_run_and_a_restart_give_the_no_crash_output() {
        // The reference: one run without a crash.
        let clean_dir = temp_dir("clean");
        let clean = Consumer::new(settings(&clean_dir, 0.2)).unwrap();
        clean.run().await.unwrap();
        let expected = clean.sink.load().unwrap();

        // The same log, consumed by a task aborted part-way, then by a fresh consumer.
        let dir = temp_dir("crash");
        let s = settings(&dir, 0.2);
        let first = Consumer::new(s.clone()).unwrap();
        let offsets = Offsets {
            path: dir.join("consumer.offset"),
        };
        let task = tokio::spawn(async move { first.run().await.map(|_| ()) });
        // Kill it once it is well into the log (it yields while a sink write is in flight).
        for _ in 0..10_000 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if offsets.load().unwrap_or(0) >= 200 {
                break;
            }
        }
        task.abort();
        assert!(
            task.await.unwrap_err().is_cancelled(),
            "the run ended before the crash"
        );
        let restarted = Consumer::new(s).unwrap();
        let mid = restarted.offsets.load().unwrap();
        assert!((200..600).contains(&mid), "crashed at offset {mid}");
        restarted.run().await.unwrap();
        assert_eq!(restarted.sink.load().unwrap(), expected);
        let _ = fs::remove_dir_all(&dir);
        let _ = fs::remove_dir_all(&clean_dir);
    }

    #[tokio::test(start_paused = true)]
    async fn a_mostly_down_sink_opens_the_breaker_and_still_loses_nothing() {
        let dir = temp_dir("outage");
        let consumer = Consumer::new(settings(&dir, 0.9)).unwrap();
        let report = consumer.run().await.unwrap();
        assert!(
            report.breaker_rejections > 0,
            "the breaker never opened: {report:?}"
        );
        assert_eq!(report.committed, 600);
        let events: u64 = consumer
            .sink
            .load()
            .unwrap()
            .values()
            .map(|a| a.events)
            .sum();
        assert_eq!(events, 600);
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn replay_from_zero_rebuilds_the_same_output() {
        let dir = temp_dir("replay");
        let mut s = settings(&dir, 0.1);
        let consumer = Consumer::new(s.clone()).unwrap();
        consumer.run().await.unwrap();
        let first = consumer.sink.load().unwrap();
        s.replay = true;
        let replayed = Consumer::new(s).unwrap();
        let report = replayed.run().await.unwrap();
        assert_eq!(report.committed, 600);
        assert_eq!(replayed.sink.load().unwrap(), first);
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn redelivered_events_change_nothing() {
        let dir = temp_dir("redeliver");
        let consumer = Consumer::new(settings(&dir, 0.0)).unwrap();
        consumer.run().await.unwrap();
        let before = consumer.sink.load().unwrap();
        // Simulate a crash after the sink write but before the offset commit.
        consumer.offsets.commit(100).unwrap();
        let report = Consumer::new(settings(&dir, 0.0))
            .unwrap()
            .run()
            .await
            .unwrap();
        assert_eq!(report.skipped_redelivered, 500);
        assert_eq!(report.applied, 0);
        assert_eq!(consumer.sink.load().unwrap(), before);
        let _ = fs::remove_dir_all(&dir);
    }
}
