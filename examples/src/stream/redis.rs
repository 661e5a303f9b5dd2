//! The Redis Streams source: a consumer group over a stream that several consumer
//! processes share.
//!
//! - **Scale-out.** Every consumer of a group reads new entries (`XREADGROUP ... >`); an
//!   entry stays pending until the consumer that holds it acknowledges it (`XACK`), which it
//!   does only after the store applied it idempotently. A consumer that dies leaves its
//!   entries pending; after `claim_idle` any other consumer claims them (`XAUTOCLAIM`) and
//!   applies them, so the effect is exactly once.
//! - **Per-key order.** The producer numbers each key's events (`seq`); the store applies
//!   a key's events only in that order ([`Store::apply_in_order`]). An entry that arrives
//!   before its predecessor (held by another consumer, or by one that died) waits in the
//!   consumer that holds it, which keeps it from being claimed (`XCLAIM ... JUSTID` resets
//!   its idle time without counting a delivery) and applies it once the gap closes.
//! - **Poison entries.** An entry that fails (it does not parse, or the processing stage
//!   refuses it) is left pending and comes back after `claim_idle`; once delivered
//!   `max_deliveries` times it goes to the dead-letter stream `<stream>:dead-letters` with
//!   the error, the delivery count and the consumer's name, and is acknowledged, in one
//!   atomic script. Its key's sequence passes over it ([`Store::park`]) so the key's later
//!   events are not held up. [`redrive_dead_letters`] puts dead letters back on the stream
//!   after a fix; the store then applies them (after the events that followed them).
//! - **Redis itself.** Every Redis call goes through a palisade stack: overall timeout →
//!   retry (exponential backoff, retry budget) → circuit breaker → per-attempt timeout.
//!   While Redis is down the consumer pauses (waiting as long as the open breaker says)
//!   and resumes where it was: acknowledgements it owes are kept and sent when Redis is
//!   back, and entries applied but not acknowledged are recognised as re-deliveries.
//!
//! Metrics (labelled `name="<stream>/<group>"`, see [`STREAM_METRICS`]): entries pending
//! and not yet delivered (lag), redeliveries, dead letters.
//!
//! Three consumers of one group in one process (each with its own connection; separate
//! processes work the same way), against a Redis at `127.0.0.1:6379`:
//!
//! ```no_run
//! use palisade_examples::stream::{RedisConsumer, Settings};
//! use std::time::Duration;
//!
//! # #[tokio::main] async fn main() -> Result<(), palisade::BoxError> {
//! let base = Settings {
//!     source: "redis://127.0.0.1:6379/ledger".into(),
//!     group: "ledger-writers".into(),
//!     claim_idle: Duration::from_secs(5),
//!     idle_exit: Some(Duration::from_secs(3)),
//!     ..Settings::default()
//! };
//! let mut tasks = Vec::new();
//! for name in ["a", "b", "c"] {
//!     let consumer = RedisConsumer::from_settings(&Settings { consumer: name.into(), ..base.clone() })?;
//!     tasks.push(tokio::spawn(async move { consumer.run().await }));
//! }
//! for task in tasks {
//!     let report = task.await??;
//!     println!("applied {}, claimed {}", report.applied, report.claimed);
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade::circuit_breaker::{CircuitBreakerHandle, CircuitBreakerLayer};
use palisade::core::metrics::MetricKind;
use palisade::retry::RejectionAware;
use palisade::retry::{Backoff, RetryLayer};
use palisade::timeout::TimeoutLayer;
use palisade::{BoxError, Classify, Outcome, Stack};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{
    StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamPendingCountReply, StreamReadReply,
};
use redis::{Cmd, FromRedisValue, RedisError, Value};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use super::log::Event;
use super::store::{Applied, Parked, Store};

/// The stream consumer's metrics, with their kind and help text (labelled
/// `name="<stream>/<group>"`).
pub const STREAM_METRICS: &[(&str, MetricKind, &str)] = &[
    (
        "stream_lag_entries",
        MetricKind::Gauge,
        "entries of the stream not yet delivered to the consumer group",
    ),
    (
        "stream_pending_entries",
        MetricKind::Gauge,
        "entries delivered to the consumer group and not yet acknowledged",
    ),
    (
        "stream_redeliveries_total",
        MetricKind::Counter,
        "entries claimed from a consumer that held them too long (a dead consumer, a failed entry)",
    ),
    (
        "stream_dead_letters_total",
        MetricKind::Counter,
        "entries moved to the dead-letter stream after failing max_deliveries deliveries",
    ),
    (
        "stream_events_total",
        MetricKind::Counter,
        "entries the store applied (outcome=applied) or recognised as re-delivered (outcome=duplicate)",
    ),
];

// ===== where =====

/// A Redis stream to consume: `redis://HOST:PORT/STREAM` (a password as
/// `redis://:PASSWORD@HOST:PORT/STREAM`; a database as `redis://HOST:PORT/DB/STREAM`).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSpec {
    /// The server's URL, without the stream.
    pub url: String,
    /// The stream's key.
    pub stream: String,
}

impl RedisSpec {
    /// Parse `redis://HOST:PORT/STREAM`; the error says what is wrong.
    pub fn parse(source: &str) -> Result<Self, String> {
        let rest = source
            .strip_prefix("redis://")
            .ok_or_else(|| "not a redis:// URL".to_owned())?;
        let (server, stream) = rest
            .rsplit_once('/')
            .ok_or_else(|| "no stream name".to_owned())?;
        if stream.is_empty() || server.is_empty() {
            return Err("empty host or stream name".into());
        }
        let url = format!("redis://{server}");
        redis::Client::open(url.as_str())
            .map_err(|e| format!("not a Redis URL: {}", redact_url(&e.to_string())))?;
        Ok(Self {
            url,
            stream: stream.to_owned(),
        })
    }

    /// The dead-letter stream: `<stream>:dead-letters`.
    pub fn dead_letters(&self) -> String {
        format!("{}:dead-letters", self.stream)
    }

    fn dead_letter_ids(&self) -> String {
        format!("{}:dead-letters:ids", self.stream)
    }
}

impl fmt::Display for RedisSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", redact_url(&self.url), self.stream)
    }
}

impl fmt::Debug for RedisSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`.
fn redact_url(text: &str) -> String {
    crate::etl::redact::redact(text)
}

// ===== the guarded client =====

/// A Redis connection behind a palisade stack (overall timeout → retry with budget →
/// circuit breaker → per-attempt timeout). Clones share the connection and the stack.
#[derive(Clone)]
pub struct RedisClient {
    svc: BoxCloneSyncService<Cmd, Value, BoxError>,
    breaker: CircuitBreakerHandle,
}

impl fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisClient")
            .field("breaker", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

/// Redis error replies that say "try again" (the server is loading its data after a
/// restart, busy with a script, failing over); other error replies are permanent.
const TRANSIENT_CODES: &[&str] = &["LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN"];

/// Whether `err` is a Redis error reply that retrying cannot fix (`WRONGTYPE`, `NOGROUP`,
/// a script error): the command is wrong, not Redis down.
pub fn is_permanent(err: &BoxError) -> bool {
    err.downcast_ref::<RedisError>()
        .and_then(RedisError::code)
        .is_some_and(|code| !TRANSIENT_CODES.contains(&code))
}

/// Redis down (connection refused or dropped, a timeout, a transient error reply) is a
/// failure: retried, and counted by the breaker. A permanent error reply is neither.
fn classify(result: &Result<Value, BoxError>) -> Outcome {
    match result {
        Err(err) if is_permanent(err) => Outcome::Ignore,
        _ => RejectionAware.classify(result),
    }
}

#[derive(Clone)]
struct Connection(ConnectionManager);

impl Service<Cmd> for Connection {
    type Response = Value;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Value, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, cmd: Cmd) -> Self::Future {
        let mut conn = self.0.clone();
        Box::pin(async move {
            match cmd.query_async::<Value>(&mut conn).await {
                Ok(value) => Ok(value),
                // Creating a group that exists: what we wanted.
                Err(e) if e.code() == Some("BUSYGROUP") => Ok(Value::Okay),
                Err(e) => Err(e.into()),
            }
        })
    }
}

impl RedisClient {
    /// A client for `url` (connecting lazily: Redis may be down now), its layers named
    /// `name` (`<name>-request`, `<name>`, `<name>-attempt`). `attempt_timeout` must exceed
    /// the longest `BLOCK` the caller uses.
    pub fn new(url: &str, name: &str, attempt_timeout: Duration) -> Result<Self, BoxError> {
        let client = redis::Client::open(url)
            .map_err(|e| format!("not a Redis URL: {}", redact_url(&e.to_string())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        let retry = RetryLayer::builder()
            .name(name.to_owned())
            .max_attempts(4)
            .backoff(
                Backoff::exponential(Duration::from_millis(50)).max_delay(Duration::from_secs(1)),
            )
            .classifier(classify)
            .build()?;
        let breaker = CircuitBreakerLayer::builder()
            .name(name.to_owned())
            .consecutive_failures(3)
            .open_duration(Duration::from_millis(500))
            .build()?
            .classifier(classify);
        let handle = breaker.handle();
        let stack = Stack::new()
            .timeout(
                TimeoutLayer::builder()
                    .name(format!("{name}-request"))
                    .timeout(attempt_timeout * 4)
                    .build()?,
            )
            .retry(retry)
            .circuit_breaker(breaker)
            .attempt_timeout(
                TimeoutLayer::builder()
                    .name(format!("{name}-attempt"))
                    .timeout(attempt_timeout)
                    .build()?,
            );
        Ok(Self {
            svc: BoxCloneSyncService::new(stack.layer(Connection(conn))),
            breaker: handle,
        })
    }

    /// The breaker's handle.
    pub fn breaker(&self) -> &CircuitBreakerHandle {
        &self.breaker
    }

    /// Run `cmd` through the stack and parse its reply.
    pub async fn query<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, BoxError> {
        let value = self.svc.clone().oneshot(cmd).await?;
        redis::from_redis_value(value)
            .map_err(|e| format!("unexpected reply from Redis: {e}").into())
    }

    /// How long to pause after Redis failed: what the open breaker asks, else a moment.
    fn pause(&self) -> Duration {
        self.breaker
            .retry_after()
            .unwrap_or(Duration::from_millis(100))
            .clamp(Duration::from_millis(20), Duration::from_secs(2))
    }
}

// ===== the consumer =====

/// How a Redis consumer behaves.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// The consumer group.
    pub group: String,
    /// This consumer's name in the group (unique per live consumer).
    pub consumer: String,
    /// Entries per read, and per store write.
    pub batch: usize,
    /// How long an entry stays pending with a consumer before another may claim it.
    pub claim_idle: Duration,
    /// Deliveries after which a failing entry goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// How long a read waits for new entries.
    pub block: Duration,
    /// Stop once nothing was delivered to this consumer for this long and the group has
    /// nothing pending (`None`: run until stopped).
    pub idle_exit: Option<Duration>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            group: "stream-consumers".into(),
            consumer: format!("consumer-{}", std::process::id()),
            batch: 50,
            claim_idle: Duration::from_secs(30),
            max_deliveries: 5,
            block: Duration::from_millis(200),
            idle_exit: None,
        }
    }
}

/// What a Redis consumer did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RedisReport {
    /// Entries read (new and claimed).
    pub delivered: u64,
    /// Entries claimed from a consumer that held them longer than `claim_idle`.
    pub claimed: u64,
    /// Entries the store applied.
    pub applied: u64,
    /// Re-delivered entries the store recognised and skipped.
    pub duplicates: u64,
    /// Entries acknowledged.
    pub acked: u64,
    /// Entries that failed and were left for redelivery.
    pub failed: u64,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Times an entry waited for an earlier event of its key.
    pub gaps: u64,
    /// Times consumption paused because Redis was unavailable.
    pub redis_pauses: u64,
    /// Store writes that failed (and were written again).
    pub sink_failures: u64,
    /// Writes the store's open breaker refused (waited out as it asked).
    pub breaker_rejections: u64,
}

/// One delivered entry.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    /// The event, or why the entry is not one.
    event: Result<Event, String>,
    deliveries: u64,
    fields: Vec<(String, String)>,
    /// Its key and sequence number, when they can be read (even if the rest cannot).
    key_seq: Option<(String, u64)>,
}

/// Stops a running [`RedisConsumer`] between two steps (clones share the flag).
#[derive(Debug, Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Ask the consumer to stop after its current step.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The write path a consumer hands batches to: the store, behind its own stack.
pub(super) type Sink = BoxCloneSyncService<super::Batch, Vec<Applied>, BoxError>;
/// The processing stage.
pub(super) type Process = BoxCloneSyncService<Event, Event, BoxError>;

/// A consumer in a group over a Redis stream, applying to a [`Store`].
pub struct RedisConsumer {
    spec: RedisSpec,
    options: RedisOptions,
    client: RedisClient,
    store: Store,
    sink: Sink,
    process: Process,
    counters: Arc<super::SinkCounters>,
    stop: StopHandle,
    label: String,
}

impl fmt::Debug for RedisConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConsumer")
            .field("spec", &self.spec)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A consumer's working state between steps.
#[derive(Default)]
struct State {
    /// Entries applied (or recognised) and not yet acknowledged.
    owed_acks: Vec<String>,
    /// Entries waiting for an earlier event of their key.
    waiting: Vec<Delivery>,
    /// When the waiting entries' idle time was last reset.
    refreshed: Option<Instant>,
    /// Where the next `XAUTOCLAIM` scan starts.
    cursor: String,
    /// When the lag gauges were last updated.
    measured: Option<Instant>,
    report: RedisReport,
}

impl RedisConsumer {
    pub(super) fn new(
        spec: RedisSpec,
        options: RedisOptions,
        store: Store,
        sink: Sink,
        process: Process,
        counters: Arc<super::SinkCounters>,
    ) -> Result<Self, BoxError> {
        let attempt = options.block + Duration::from_secs(1);
        let client = RedisClient::new(&spec.url, "redis", attempt)?;
        let label = format!("{}/{}", spec.stream, options.group);
        Ok(Self {
            spec,
            options,
            client,
            store,
            sink,
            process,
            counters,
            stop: StopHandle::default(),
            label,
        })
    }

    /// The handle that stops this consumer.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// The guarded Redis client.
    pub fn client(&self) -> &RedisClient {
        &self.client
    }

    /// Consume until stopped (or idle for `idle_exit` with the group settled). Redis being
    /// down pauses
    /// consumption; an error is returned only for what retrying cannot fix (the key is not
    /// a stream, a state file is unreadable).
    pub async fn run(&self) -> Result<RedisReport, BoxError> {
        let mut state = State {
            cursor: "0-0".into(),
            ..State::default()
        };
        let mut last_work = Instant::now();
        let mut group_ready = false;
        let mut paused = false;
        while !self.stop.stopped() {
            let step = async {
                if !group_ready {
                    self.ensure_group().await?;
                    group_ready = true;
                }
                self.step(&mut state).await
            };
            match step.await {
                Ok(worked) => {
                    if paused {
                        tracing::warn!(stream = %self.spec, "redis is back; consumption resumed");
                        paused = false;
                    }
                    if worked || !state.waiting.is_empty() || !state.owed_acks.is_empty() {
                        last_work = Instant::now();
                    } else if self
                        .options
                        .idle_exit
                        .is_some_and(|idle| last_work.elapsed() >= idle)
                        && self.group_settled().await
                    {
                        break;
                    }
                }
                Err(err)
                    if err.downcast_ref::<RedisError>().and_then(RedisError::code)
                        == Some("NOGROUP") =>
                {
                    // The group is gone (a server restarted without its data): create it
                    // again from the stream's start; the store recognises what it applied.
                    tracing::warn!(stream = %self.spec, group = %self.options.group, "consumer group missing; creating it again");
                    group_ready = false;
                }
                Err(err) if is_permanent(&err) || err.is::<super::StateError>() => return Err(err),
                Err(err) => {
                    state.report.redis_pauses += 1;
                    let pause = self.client.pause();
                    if !paused {
                        tracing::warn!(
                            stream = %self.spec,
                            error = %redact_url(&err.to_string()),
                            breaker = %self.client.breaker.state(),
                            "redis unavailable; consumption paused"
                        );
                        paused = true;
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
        let mut report = state.report;
        report.sink_failures = self.counters.failures.load(Ordering::Relaxed);
        report.breaker_rejections = self.counters.rejections.load(Ordering::Relaxed);
        Ok(report)
    }

    /// Whether the group has nothing pending and nothing left to deliver (no entry another
    /// consumer still holds, or that failed and will come back).
    async fn group_settled(&self) -> bool {
        matches!(
            group_info(&self.client, &self.spec, &self.options.group).await,
            Ok(Some((0, Some(0) | None)))
        )
    }

    async fn ensure_group(&self) -> Result<(), BoxError> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&self.spec.stream)
            .arg(&self.options.group)
            .arg("0")
            .arg("MKSTREAM");
        self.client.query::<Value>(cmd).await.map(drop)
    }

    /// One round: acknowledge what is owed, claim stale entries, read new ones, apply them.
    /// Whether there was anything to do.
    async fn step(&self, state: &mut State) -> Result<bool, BoxError> {
        self.ack_owed(state).await?;
        self.measure(state).await;
        self.refresh_waiting(state).await?;
        let mut batch = self.claim(state).await?;
        let room = self.options.batch.saturating_sub(batch.len());
        if room > 0 && state.waiting.len() < 4 * self.options.batch {
            let block = batch.is_empty() && state.waiting.is_empty();
            batch.extend(self.read_new(room, block).await?);
        }
        let worked = !batch.is_empty();
        state.report.delivered += batch.len() as u64;

        let mut events = std::mem::take(&mut state.waiting);
        for delivery in batch {
            match self.check(&delivery).await {
                Ok(event) => events.push(Delivery {
                    event: Ok(event),
                    ..delivery
                }),
                Err(error) => self.failed(state, delivery, error).await?,
            }
        }
        if !events.is_empty() {
            let batch: super::Batch =
                Arc::new(events.iter().filter_map(|d| d.event.clone().ok()).collect());
            let outcomes = self.sink.clone().oneshot(batch).await?;
            for (delivery, outcome) in events.into_iter().zip(outcomes) {
                match outcome {
                    Applied::Applied => {
                        state.report.applied += 1;
                        metrics::counter!("stream_events_total", "name" => self.label.clone(), "outcome" => "applied").increment(1);
                        state.owed_acks.push(delivery.id);
                    }
                    Applied::Duplicate => {
                        state.report.duplicates += 1;
                        metrics::counter!("stream_events_total", "name" => self.label.clone(), "outcome" => "duplicate").increment(1);
                        state.owed_acks.push(delivery.id);
                    }
                    Applied::Gap { waiting_for } => {
                        state.report.gaps += 1;
                        tracing::debug!(id = %delivery.id, waiting_for, "entry waits for an earlier event of its key");
                        state.waiting.push(delivery);
                    }
                }
            }
        }
        self.ack_owed(state).await?;
        Ok(worked)
    }

    /// Parse and process one entry.
    async fn check(&self, delivery: &Delivery) -> Result<Event, String> {
        let event = delivery.event.clone()?;
        let mut process = self.process.clone();
        let ready = process.ready().await.map_err(|e| e.to_string())?;
        ready.call(event).await.map_err(|e| e.to_string())
    }

    /// An entry failed: leave it for redelivery, or dead-letter it after `max_deliveries`.
    async fn failed(
        &self,
        state: &mut State,
        delivery: Delivery,
        error: String,
    ) -> Result<(), BoxError> {
        if delivery.deliveries < self.options.max_deliveries {
            state.report.failed += 1;
            tracing::warn!(
                id = %delivery.id,
                deliveries = delivery.deliveries,
                error = %error,
                "entry failed; left for redelivery"
            );
            return Ok(());
        }
        // Its key's later events must not wait for it: pass over it in the store first
        // (also when only its key and seq could be read).
        if let Some((key, seq)) = delivery.key_seq.clone() {
            let store = self.store.clone();
            match super::blocking(move || store.park(&key, seq)).await? {
                Parked::Parked => {}
                Parked::AlreadyApplied => {
                    // An earlier delivery was applied: not a dead letter after all.
                    state.owed_acks.push(delivery.id);
                    return Ok(());
                }
                Parked::NotYet { waiting_for } => {
                    tracing::debug!(id = %delivery.id, waiting_for, "poison entry waits for its key's earlier events");
                    return Ok(());
                }
            }
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(DEAD_LETTER_SCRIPT)
            .arg(3)
            .arg(&self.spec.stream)
            .arg(self.spec.dead_letters())
            .arg(self.spec.dead_letter_ids())
            .arg(&self.options.group)
            .arg(&delivery.id)
            .arg(&error)
            .arg(delivery.deliveries)
            .arg(&self.options.consumer);
        for (field, value) in &delivery.fields {
            cmd.arg(field).arg(value);
        }
        self.client.query::<Value>(cmd).await?;
        state.report.dead_lettered += 1;
        metrics::counter!("stream_dead_letters_total", "name" => self.label.clone()).increment(1);
        tracing::error!(
            id = %delivery.id,
            deliveries = delivery.deliveries,
            error = %error,
            dead_letters = %self.spec.dead_letters(),
            "entry moved to the dead-letter stream"
        );
        Ok(())
    }

    async fn ack_owed(&self, state: &mut State) -> Result<(), BoxError> {
        if state.owed_acks.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.spec.stream)
            .arg(&self.options.group)
            .arg(&state.owed_acks);
        self.client.query::<u64>(cmd).await?;
        state.report.acked += state.owed_acks.len() as u64;
        state.owed_acks.clear();
        Ok(())
    }

    /// Keep the entries waiting here from being claimed by another consumer: reset their
    /// idle time without counting a delivery (`XCLAIM ... JUSTID`).
    async fn refresh_waiting(&self, state: &mut State) -> Result<(), BoxError> {
        if state.waiting.is_empty()
            || state
                .refreshed
                .is_some_and(|t| t.elapsed() < self.options.claim_idle / 3)
        {
            return Ok(());
        }
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&self.spec.stream)
            .arg(&self.options.group)
            .arg(&self.options.consumer)
            .arg(0);
        for d in &state.waiting {
            cmd.arg(&d.id);
        }
        cmd.arg("JUSTID");
        let kept: Vec<String> = self.client.query(cmd).await?;
        // An entry no longer ours (trimmed from the stream) is dropped from the wait.
        state.waiting.retain(|d| kept.contains(&d.id));
        state.refreshed = Some(Instant::now());
        Ok(())
    }

    /// Claim entries pending longer than `claim_idle` (a dead consumer's, or failed ones).
    async fn claim(&self, state: &mut State) -> Result<Vec<Delivery>, BoxError> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&self.spec.stream)
            .arg(&self.options.group)
            .arg(&self.options.consumer)
            .arg(self.options.claim_idle.as_millis() as u64)
            .arg(&state.cursor)
            .arg("COUNT")
            .arg(self.options.batch);
        let reply: StreamAutoClaimReply = self.client.query(cmd).await?;
        state.cursor = reply.next_stream_id;
        if reply.claimed.is_empty() {
            return Ok(Vec::new());
        }
        // How often each was delivered (this claim included).
        let first = &reply.claimed[0].id;
        let last = &reply.claimed[reply.claimed.len() - 1].id;
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&self.spec.stream)
            .arg(&self.options.group)
            .arg(first)
            .arg(last)
            // Entries of ours between them (waiting ones) are listed too.
            .arg(reply.claimed.len() + state.waiting.len() + self.options.batch)
            .arg(&self.options.consumer);
        let pending: StreamPendingCountReply = self.client.query(cmd).await?;
        let counts: HashMap<&str, u64> = pending
            .ids
            .iter()
            .map(|p| (p.id.as_str(), p.times_delivered as u64))
            .collect();
        let n = reply.claimed.len() as u64;
        state.report.claimed += n;
        metrics::counter!("stream_redeliveries_total", "name" => self.label.clone()).increment(n);
        tracing::info!(claimed = n, consumer = %self.options.consumer, "claimed entries idle for too long");
        Ok(reply
            .claimed
            .iter()
            .map(|entry| {
                let deliveries = counts.get(entry.id.as_str()).copied().unwrap_or(2);
                delivery(entry, deliveries)
            })
            .collect())
    }

    async fn read_new(&self, count: usize, block: bool) -> Result<Vec<Delivery>, BoxError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.options.group)
            .arg(&self.options.consumer)
            .arg("COUNT")
            .arg(count);
        if block {
            cmd.arg("BLOCK").arg(self.options.block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.spec.stream).arg(">");
        let reply: Option<StreamReadReply> = self.client.query(cmd).await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|entry| delivery(&entry, 1))
            .collect())
    }

    /// Update the lag and pending gauges (about once a second; best effort).
    async fn measure(&self, state: &mut State) {
        if state
            .measured
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        state.measured = Some(Instant::now());
        if let Ok(Some((pending, lag))) =
            group_info(&self.client, &self.spec, &self.options.group).await
        {
            metrics::gauge!("stream_pending_entries", "name" => self.label.clone())
                .set(pending as f64);
            if let Some(lag) = lag {
                metrics::gauge!("stream_lag_entries", "name" => self.label.clone()).set(lag as f64);
            }
        }
    }
}

/// `(pending, lag)` of `group` on the stream (`None` if the group does not exist); lag is
/// `None` when Redis cannot tell (after entries were deleted).
pub async fn group_info(
    client: &RedisClient,
    spec: &RedisSpec,
    group: &str,
) -> Result<Option<(u64, Option<u64>)>, BoxError> {
    let mut cmd = redis::cmd("XINFO");
    cmd.arg("GROUPS").arg(&spec.stream);
    let info: StreamInfoGroupsReply = client.query(cmd).await?;
    Ok(info
        .groups
        .into_iter()
        .find(|g| g.name == group)
        .map(|g| (g.pending as u64, g.lag.map(|l| l as u64))))
}

fn field(entry: &StreamId, name: &str) -> Option<String> {
    entry.get::<String>(name)
}

fn delivery(entry: &StreamId, deliveries: u64) -> Delivery {
    let mut fields: Vec<(String, String)> = entry
        .map
        .iter()
        .map(|(k, v)| {
            let text = String::from_redis_value(v.clone()).unwrap_or_else(|_| format!("{v:?}"));
            (k.clone(), text)
        })
        .collect();
    fields.sort();
    let key_seq = field(entry, "key")
        .filter(|k| !k.is_empty())
        .zip(field(entry, "seq").and_then(|s| s.parse::<u64>().ok()));
    Delivery {
        id: entry.id.clone(),
        event: parse_event(entry),
        deliveries,
        fields,
        key_seq,
    }
}

/// An entry as an event: fields `key`, `amount`, `seq` and (optional) `offset`.
fn parse_event(entry: &StreamId) -> Result<Event, String> {
    let id = &entry.id;
    let key = field(entry, "key").ok_or_else(|| format!("entry {id} has no key"))?;
    let amount = field(entry, "amount")
        .ok_or_else(|| format!("entry {id} has no amount"))?
        .parse::<i64>()
        .map_err(|e| format!("entry {id}: amount is not an integer: {e}"))?;
    let seq = field(entry, "seq")
        .ok_or_else(|| format!("entry {id} has no seq"))?
        .parse::<u64>()
        .map_err(|e| format!("entry {id}: seq is not a number: {e}"))?;
    let offset = match field(entry, "offset") {
        Some(text) => text
            .parse::<u64>()
            .map_err(|e| format!("entry {id}: offset is not a number: {e}"))?,
        None => 0,
    };
    Ok(Event {
        offset,
        key,
        amount,
        seq: Some(seq),
    })
}

/// Move an entry to the dead-letter stream and acknowledge it, atomically and once (a
/// retried call finds the entry's id in the ids hash and adds nothing).
/// KEYS: stream, dead-letter stream, ids hash. ARGV: group, id, error, deliveries,
/// consumer, then the entry's fields and values.
const DEAD_LETTER_SCRIPT: &str = r"
if redis.call('HSETNX', KEYS[3], ARGV[2], 1) == 1 then
  local args = {'XADD', KEYS[2], '*', 'dl_id', ARGV[2], 'dl_error', ARGV[3],
                'dl_deliveries', ARGV[4], 'dl_consumer', ARGV[5]}
  for i = 6, #ARGV do args[#args + 1] = ARGV[i] end
  redis.call(unpack(args))
end
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
";

/// Put one dead letter back on the stream (its own fields, without the `dl_` ones) and
/// delete it from the dead-letter stream, atomically. KEYS: stream, dead-letter stream,
/// ids hash. ARGV: the dead letter's id. Returns 1 if it was re-driven, 0 if it was gone.
const REDRIVE_SCRIPT: &str = r"
local e = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
if #e == 0 then return 0 end
local fields = e[1][2]
local args = {'XADD', KEYS[1], '*'}
local original
for i = 1, #fields, 2 do
  local f = fields[i]
  if f == 'dl_id' then original = fields[i + 1] end
  if string.sub(f, 1, 3) ~= 'dl_' then
    args[#args + 1] = f
    args[#args + 1] = fields[i + 1]
  end
end
if #args == 3 then
  args[4] = 'redriven'
  args[5] = '1'
end
redis.call(unpack(args))
redis.call('XDEL', KEYS[2], ARGV[1])
if original then redis.call('HDEL', KEYS[3], original) end
return 1
";

/// A dead letter, as stored in `<stream>:dead-letters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream.
    pub id: String,
    /// The entry's id in the stream it came from.
    pub original_id: String,
    /// Why its last delivery failed.
    pub error: String,
    /// How often it was delivered.
    pub deliveries: u64,
    /// The consumer that moved it.
    pub consumer: String,
}

/// Every dead letter of the stream, oldest first (at most `max`).
pub async fn dead_letters(
    client: &RedisClient,
    spec: &RedisSpec,
    max: usize,
) -> Result<Vec<DeadLetter>, BoxError> {
    let mut cmd = redis::cmd("XRANGE");
    cmd.arg(spec.dead_letters())
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(max);
    let reply: redis::streams::StreamRangeReply = client.query(cmd).await?;
    Ok(reply
        .ids
        .iter()
        .map(|e| DeadLetter {
            id: e.id.clone(),
            original_id: field(e, "dl_id").unwrap_or_default(),
            error: field(e, "dl_error").unwrap_or_default(),
            deliveries: field(e, "dl_deliveries")
                .and_then(|d| d.parse().ok())
                .unwrap_or(0),
            consumer: field(e, "dl_consumer").unwrap_or_default(),
        })
        .collect())
}

/// Put every dead letter back on the stream (after the cause was fixed); returns how many.
/// Each move is atomic, so an interrupted re-drive loses and duplicates nothing: run it
/// again to finish.
pub async fn redrive_dead_letters(client: &RedisClient, spec: &RedisSpec) -> Result<u64, BoxError> {
    let mut moved = 0;
    loop {
        let letters = dead_letters(client, spec, 100).await?;
        if letters.is_empty() {
            return Ok(moved);
        }
        for letter in letters {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(REDRIVE_SCRIPT)
                .arg(3)
                .arg(&spec.stream)
                .arg(spec.dead_letters())
                .arg(spec.dead_letter_ids())
                .arg(&letter.id);
            moved += client.query::<u64>(cmd).await?;
        }
    }
}

/// Append `count` deterministic events ([`generate`](super::log::generate)) to the stream,
/// unless it already holds entries (a stream is produced once). Returns how many were
/// added.
pub async fn produce(
    client: &RedisClient,
    spec: &RedisSpec,
    count: u64,
    keys: u64,
    seed: u64,
) -> Result<u64, BoxError> {
    let mut cmd = redis::cmd("XLEN");
    cmd.arg(&spec.stream);
    if client.query::<u64>(cmd).await? > 0 {
        return Ok(0);
    }
    let mut added = 0;
    for event in super::log::generate(count, keys, seed) {
        client.query::<Value>(xadd(spec, &event)).await?;
        added += 1;
    }
    Ok(added)
}

/// The `XADD` that appends `event` to the stream.
pub fn xadd(spec: &RedisSpec, event: &Event) -> Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&spec.stream)
        .arg("*")
        .arg("key")
        .arg(&event.key)
        .arg("amount")
        .arg(event.amount)
        .arg("offset")
        .arg(event.offset);
    if let Some(seq) = event.seq {
        cmd.arg("seq").arg(seq);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_url_names_server_and_stream() {
        let spec = RedisSpec::parse("redis://127.0.0.1:6380/accounts").unwrap();
        assert_eq!(spec.url, "redis://127.0.0.1:6380");
        assert_eq!(spec.stream, "accounts");
        assert_eq!(spec.dead_letters(), "accounts:dead-letters");
        let db = RedisSpec::parse("redis://127.0.0.1:6380/2/accounts").unwrap();
        assert_eq!(db.url, "redis://127.0.0.1:6380/2");
        for bad in [
            "127.0.0.1:6379/x",
            "redis://127.0.0.1:6379",
            "redis://127.0.0.1:6379/",
            "redis:///x",
        ] {
            assert!(RedisSpec::parse(bad).is_err(), "{bad}");
        }
        let secret = RedisSpec::parse("redis://:hunter2@127.0.0.1:6379/s").unwrap();
        assert!(!secret.to_string().contains("hunter2"), "{secret}");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn only_error_replies_that_retrying_cannot_fix_are_permanent() {
        let io: BoxError =
            RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)).into();
        assert!(!is_permanent(&io));
        assert_eq!(classify(&Err(io)), Outcome::Failure);
    }
}
