//! The stream consumer on a Redis stream, against a real `redis-server` started by each
//! test on a free loopback port (append-only file on, so a restarted server keeps the
//! stream) and killed when the test ends:
//! - three consumers (tasks with separate connections) over one group, one killed mid-run:
//!   the dead consumer's pending entries are claimed, and every account's balance, event
//!   count and order digest equal an independent fold of the produced events;
//! - poison entries land in the dead-letter stream after `max_deliveries` deliveries with
//!   the error and the delivery count, without holding up the rest; re-driven after a fix,
//!   they are applied;
//! - Redis killed and restarted mid-run: consumption pauses, resumes, and the result is
//!   exact;
//! - the binary: `produce`, two consumer processes, the summary.
//!
//! Without `redis-server` on the `PATH` (Debian package `redis-server`) each test says why
//! and passes; with the environment variable `CI` set, a missing server fails the test.
//! These tests run on real time (a real server); every wait is bounded.
#![allow(clippy::print_stderr, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use palisade_examples::stream::redis::{self, RedisClient};
use palisade_examples::stream::{
    Accounts, Event, RedisConsumer, RedisReport, RedisSpec, Settings, Store, generate,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

// ===== the server =====

/// A `redis-server` on a loopback port with its data in a temporary directory, killed on
/// drop.
struct Server {
    child: Option<Child>,
    port: u16,
    data: tempfile::TempDir,
}

impl Server {
    /// Start one, or explain why not (and skip, unless under CI).
    fn start() -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            let why = "redis-server is not installed (Debian package `redis-server`)";
            assert!(
                std::env::var_os("CI").is_none(),
                "{why}; CI must install it"
            );
            eprintln!("skipping: {why}");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            child: None,
            port,
            data: tempfile::tempdir().unwrap(),
        };
        server.spawn();
        Some(server)
    }

    /// Start the server (again, on the same port and data directory). Blocks for at most
    /// 5 s until it accepts connections (in async tests, inside `block_in_place`).
    #[allow(clippy::disallowed_methods)]
    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", ""])
            // Every write is on disk before Redis answers: a kill -9 loses nothing.
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(self.data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..250 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server did not listen on port {} within 5s",
            self.port
        );
    }

    /// kill -9.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn source(&self, stream: &str) -> String {
        format!("redis://127.0.0.1:{}/{stream}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

// ===== helpers =====

const KEYS: u64 = 12;
const SEED: u64 = 99;

fn settings(dir: &Path, source: &str, consumer: &str) -> Settings {
    Settings {
        dir: dir.to_path_buf(),
        events: 0,
        keys: KEYS,
        seed: SEED,
        fail_rate: 0.1,
        batch: 20,
        rate: 1_000_000,
        source: source.to_owned(),
        group: "ledger".into(),
        consumer: consumer.to_owned(),
        claim_idle: Duration::from_millis(300),
        max_deliveries: 3,
        ..Settings::default()
    }
}

fn spec(source: &str) -> RedisSpec {
    RedisSpec::parse(source).unwrap()
}

fn client(source: &str) -> RedisClient {
    RedisClient::new(&spec(source).url, "test", Duration::from_secs(2)).unwrap()
}

async fn add(client: &RedisClient, spec: &RedisSpec, events: &[Event]) {
    for event in events {
        client
            .query::<::redis::Value>(redis::xadd(spec, event))
            .await
            .unwrap();
    }
}

/// Balance, event count and order digest per account, folded from `events` in their
/// order, without the consumer's code.
fn fold(events: &[Event]) -> BTreeMap<String, (i64, u64, u64)> {
    let mut out = BTreeMap::new();
    for e in events {
        let entry = out.entry(e.key.clone()).or_insert((0i64, 0u64, 0u64));
        entry.0 += e.amount;
        entry.1 += 1;
        entry.2 = (entry.2 ^ e.amount as u64).wrapping_mul(0x0100_0000_01b3);
    }
    out
}

fn state(accounts: &Accounts) -> BTreeMap<String, (i64, u64, u64)> {
    accounts
        .iter()
        .map(|(k, a)| (k.clone(), (a.balance, a.events, a.digest)))
        .collect()
}

fn without_digest(m: &BTreeMap<String, (i64, u64, u64)>) -> BTreeMap<String, (i64, u64)> {
    m.iter().map(|(k, v)| (k.clone(), (v.0, v.1))).collect()
}

fn accounts(dir: &Path) -> Accounts {
    Store::new(dir.join("accounts.json")).load().unwrap()
}

fn applied(dir: &Path) -> u64 {
    // The store is rewritten atomically: a read sees a whole file.
    Store::new(dir.join("accounts.json"))
        .load()
        .map_or(0, |a| a.values().map(|a| a.events).sum())
}

fn spawn(s: &Settings) -> (JoinHandle<RedisReport>, redis::StopHandle) {
    let consumer = RedisConsumer::from_settings(s).unwrap();
    let stop = consumer.stop_handle();
    (
        tokio::spawn(async move { consumer.run().await.unwrap() }),
        stop,
    )
}

/// Entries pending with `consumer`.
async fn pending_of(client: &RedisClient, spec: &RedisSpec, consumer: &str) -> u64 {
    let mut cmd = ::redis::cmd("XPENDING");
    cmd.arg(&spec.stream)
        .arg("ledger")
        .arg("-")
        .arg("+")
        .arg(10_000)
        .arg(consumer);
    let reply: ::redis::streams::StreamPendingCountReply = client.query(cmd).await.unwrap();
    reply.ids.len() as u64
}

/// Wait (at most `limit`) until the group has delivered and acknowledged everything.
async fn settled(client: &RedisClient, spec: &RedisSpec, limit: Duration) {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Ok(Some((0, Some(0)))) = redis::group_info(client, spec, "ledger").await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = redis::group_info(client, spec, "ledger").await;
    panic!("the group did not settle within {limit:?}: (pending, lag) = {info:?}");
}

async fn stop_all(tasks: Vec<(JoinHandle<RedisReport>, redis::StopHandle)>) -> Vec<RedisReport> {
    let mut reports = Vec::new();
    for (task, stop) in tasks {
        stop.stop();
        reports.push(
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("a stopped consumer ends")
                .unwrap(),
        );
    }
    reports
}

// ===== scale-out =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_consumers_one_killed_apply_every_event_exactly_once_in_key_order() {
    let Some(server) = Server::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = server.source("ledger-events");
    let (client, spec) = (client(&source), spec(&source));
    let events: Vec<Event> = generate(1_500, KEYS, SEED).collect();
    add(&client, &spec, &events).await;
    let metrics = palisade_examples::telemetry::install_recorder().unwrap();

    let mut tasks: Vec<_> = ["c1", "c2"]
        .iter()
        .map(|c| spawn(&settings(dir.path(), &source, c)))
        .collect();
    // The third consumer is killed while it holds entries, once the run is under way.
    let victim = settings(dir.path(), &source, "c3");
    let mut orphaned = 0;
    for _ in 0..20 {
        let (task, _stop) = spawn(&victim);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until
            && (applied(dir.path()) < 200 || pending_of(&client, &spec, "c3").await == 0)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled(), "c3 ended by itself");
        orphaned = pending_of(&client, &spec, "c3").await;
        if orphaned > 0 {
            break;
        }
    }
    assert!(orphaned > 0, "c3 never died holding entries");
    assert!(applied(dir.path()) < 1_500, "killed after the run ended");

    settled(&client, &spec, Duration::from_secs(60)).await;
    assert_eq!(
        pending_of(&client, &spec, "c3").await,
        0,
        "the dead consumer's entries were claimed"
    );
    let reports = stop_all(std::mem::take(&mut tasks)).await;
    let claimed: u64 = reports.iter().map(|r| r.claimed).sum();
    assert!(
        claimed >= orphaned,
        "claimed {claimed} of {orphaned}: {reports:?}"
    );
    assert!(
        reports.iter().all(|r| r.applied > 0),
        "both survivors worked: {reports:?}"
    );
    assert!(
        reports.iter().any(|r| r.sink_failures > 0),
        "the chaos bit: {reports:?}"
    );
    assert_eq!(reports.iter().map(|r| r.dead_lettered).sum::<u64>(), 0);

    // Exactly once and in each key's order: balance, count and order digest per account.
    let got = state(&accounts(dir.path()));
    assert_eq!(got, fold(&events));
    let total: u64 = got.values().map(|v| v.1).sum();
    assert_eq!(total, 1_500, "no entry applied twice or lost");
    assert!(
        accounts(dir.path()).values().all(|a| a.parked.is_empty()),
        "nothing parked"
    );

    // The claims show on the metrics endpoint, with help text.
    let text = metrics.render();
    let redeliveries = text
        .lines()
        .find(|l| l.starts_with("stream_redeliveries_total{name=\"ledger-events/ledger\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no redeliveries metric in:\n{text}"));
    assert!(
        redeliveries >= orphaned as f64,
        "{redeliveries} < {orphaned}"
    );
    for name in [
        "stream_pending_entries",
        "stream_lag_entries",
        "stream_events_total",
    ] {
        assert!(
            text.contains(&format!("# HELP {name}")),
            "{name} in:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_is_not_a_stream_is_an_error_not_an_outage() {
    let Some(server) = Server::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = server.source("not-a-stream");
    let client = client(&source);
    let mut set = ::redis::cmd("SET");
    set.arg("not-a-stream").arg("x");
    client.query::<String>(set).await.unwrap();
    let consumer = RedisConsumer::from_settings(&settings(dir.path(), &source, "w")).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), consumer.run())
        .await
        .expect("no endless pause")
        .unwrap_err();
    assert!(redis::is_permanent(&err), "{err}");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
}

// ===== poison =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entries_go_to_the_dead_letter_stream_and_come_back_after_a_fix() {
    let Some(server) = Server::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = server.source("ledger-events");
    let (client, spec) = (client(&source), spec(&source));
    let mut events: Vec<Event> = generate(400, KEYS, SEED).collect();
    // Event 50 moves more than the consumers accept (--max-amount 1000000 by default).
    events[50].amount = 5_000_000;
    let poison = events[50].clone();
    add(&client, &spec, &events[..100]).await;
    // An entry that is no event at all.
    let mut garbage = ::redis::cmd("XADD");
    garbage.arg(&spec.stream).arg("*").arg("junk").arg("1");
    client.query::<String>(garbage).await.unwrap();
    add(&client, &spec, &events[100..120]).await;
    // Event 120's amount does not parse: its key and seq do, so its key passes over it.
    let unreadable = events[120].clone();
    let mut bad = ::redis::cmd("XADD");
    bad.arg(&spec.stream)
        .arg("*")
        .arg("key")
        .arg(&unreadable.key)
        .arg("amount")
        .arg("12x")
        .arg("seq")
        .arg(unreadable.seq.unwrap());
    client.query::<String>(bad).await.unwrap();
    add(&client, &spec, &events[121..]).await;

    let tasks: Vec<_> = ["p1", "p2"]
        .iter()
        .map(|c| spawn(&settings(dir.path(), &source, c)))
        .collect();
    settled(&client, &spec, Duration::from_secs(60)).await;
    let reports = stop_all(tasks).await;
    let dead: u64 = reports.iter().map(|r| r.dead_lettered).sum();
    assert_eq!(dead, 3, "{reports:?}");

    let letters = redis::dead_letters(&client, &spec, 100).await.unwrap();
    assert_eq!(letters.len(), 3, "{letters:?}");
    let poisoned = letters
        .iter()
        .find(|l| l.error.contains("--max-amount"))
        .expect("the oversized event is a dead letter");
    assert_eq!(poisoned.deliveries, 3, "after max_deliveries: {poisoned:?}");
    assert!(poisoned.error.contains("5000000"), "{poisoned:?}");
    let junk = letters
        .iter()
        .find(|l| l.error.contains("has no key"))
        .expect("the junk entry is a dead letter");
    assert_eq!(junk.deliveries, 3);
    assert!(
        letters
            .iter()
            .any(|l| l.error.contains("amount is not an integer")),
        "{letters:?}"
    );

    // The rest went through, in order: the keys passed over their dead letters.
    let rest: Vec<Event> = events
        .iter()
        .filter(|e| **e != poison && **e != unreadable)
        .cloned()
        .collect();
    assert_eq!(state(&accounts(dir.path())), fold(&rest));
    let parked = &accounts(dir.path())[&poison.key].parked;
    assert!(parked.contains(&poison.seq.unwrap()), "{parked:?}");

    // The fix: a higher limit. Re-drive, and a consumer applies the event after all.
    let moved = redis::redrive_dead_letters(&client, &spec).await.unwrap();
    assert_eq!(moved, 3);
    let mut fixed = settings(dir.path(), &source, "p3");
    fixed.max_amount = 10_000_000;
    let task = spawn(&fixed);
    settled(&client, &spec, Duration::from_secs(60)).await;
    let report = stop_all(vec![task]).await.remove(0);
    assert_eq!(report.applied, 1, "{report:?}");
    assert_eq!(report.dead_lettered, 2, "junk is still junk: {report:?}");
    let after = redis::dead_letters(&client, &spec, 100).await.unwrap();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.iter().all(|l| !l.error.contains("--max-amount")));
    // Every event applied once; the re-driven one after its key's later events.
    let fixed: Vec<Event> = events
        .iter()
        .filter(|e| **e != unreadable)
        .cloned()
        .collect();
    assert_eq!(
        without_digest(&state(&accounts(dir.path()))),
        without_digest(&fold(&fixed))
    );
    assert!(accounts(dir.path())[&poison.key].parked.is_empty());
}

// ===== Redis restarted =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_run_pauses_consumption_and_the_result_is_exact() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = server.source("ledger-events");
    let (client, spec) = (client(&source), spec(&source));
    let events: Vec<Event> = generate(1_200, KEYS, SEED).collect();
    add(&client, &spec, &events).await;

    let tasks: Vec<_> = ["r1", "r2"]
        .iter()
        .map(|c| {
            let mut s = settings(dir.path(), &source, c);
            s.fail_rate = 0.0;
            spawn(&s)
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(20);
    while applied(dir.path()) < 200 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let before = applied(dir.path());
    assert!((200..1_200).contains(&before), "restarted at {before}");
    server.kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let during = applied(dir.path());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        applied(dir.path()),
        during,
        "consumption paused while Redis was down"
    );
    assert!(during < 1_200, "nothing left to consume after the restart");
    tokio::task::block_in_place(|| server.spawn());

    settled(&client, &spec, Duration::from_secs(60)).await;
    let reports = stop_all(tasks).await;
    assert!(
        reports.iter().all(|r| r.redis_pauses > 0),
        "both consumers paused: {reports:?}"
    );
    assert_eq!(state(&accounts(dir.path())), fold(&events));
}

// ===== the binary =====

#[test]
fn the_binary_produces_consumes_in_two_processes_and_redrives() {
    let Some(server) = Server::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = server.source("demo");
    let bin = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stream"));
        cmd.env_remove("RUST_LOG")
            .arg("--dir")
            .arg(dir.path())
            .args(["--source", &source, "--events", "600", "--keys", "8"]);
        cmd
    };
    let produced = bin().arg("produce").output().unwrap();
    assert!(produced.status.success(), "{produced:?}");
    assert!(
        String::from_utf8_lossy(&produced.stdout).contains("produced 600 events"),
        "{produced:?}"
    );
    let again = bin().arg("produce").output().unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing produced"));

    let consumers: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            bin()
                .args([
                    "--consumer",
                    name,
                    "--idle-exit",
                    "1500ms",
                    "--rate",
                    "100000",
                ])
                .args(["--claim-idle", "500ms"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied_total = 0;
    for child in consumers {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("events applied"))
            .expect("a summary line");
        applied_total += line
            .split_whitespace()
            .last()
            .unwrap()
            .parse::<u64>()
            .unwrap();
    }
    assert_eq!(
        applied_total, 600,
        "two processes shared the work exactly once"
    );
    let events: Vec<Event> = generate(600, 8, 7).collect();
    assert_eq!(state(&accounts(dir.path())), fold(&events));

    let redrive = bin().arg("redrive-dead-letters").output().unwrap();
    assert!(String::from_utf8_lossy(&redrive.stdout).contains("re-drove 0 dead letters"));
}
