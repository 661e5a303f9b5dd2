//! The `stream` consumer: every event applied exactly once, checked account by account
//! against an independent fold of the event log, through store failures, an open breaker,
//! a crash and a replay (paused tokio time); state files that cannot be read are errors
//! naming them; the binary's flags, output streams and messages.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use palisade_examples::stream::{Accounts, Consumer, Position, Settings, StateError};

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
        ..Settings::default()
    }
}

/// Balance and event count per account, folded straight from the log file, without the
/// consumer's code.
fn fold_log(dir: &Path) -> BTreeMap<String, (i64, u64)> {
    let text = std::fs::read_to_string(dir.join("events.log")).expect("read the log");
    let mut expected = BTreeMap::new();
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line).expect("a JSON event");
        let entry = expected
            .entry(event["key"].as_str().expect("a key").to_owned())
            .or_insert((0i64, 0u64));
        entry.0 += event["amount"].as_i64().expect("an amount");
        entry.1 += 1;
    }
    expected
}

/// Every account holds exactly the log's sum and count for its key: a duplicate on one
/// account cannot hide behind a loss on another.
fn assert_exactly_once(dir: &Path, accounts: &Accounts) {
    let got: BTreeMap<String, (i64, u64)> = accounts
        .iter()
        .map(|(k, a)| (k.clone(), (a.balance, a.events)))
        .collect();
    assert_eq!(got, fold_log(dir), "per-account balance and count");
}

#[tokio::test(start_paused = true)]
async fn every_event_is_applied_exactly_once_despite_sink_failures() {
    let dir = tempfile::tempdir().unwrap();
    let consumer = Consumer::new(settings(dir.path(), 0.3)).unwrap();
    let report = consumer.run().await.unwrap();
    assert_eq!(report.committed, 600);
    assert!(report.sink_failures > 0, "the chaos must have bitten");
    assert_eq!(report.applied, 600);
    assert_exactly_once(dir.path(), &consumer.store().load().unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_mostly_down_sink_opens_the_breaker_and_still_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let consumer = Consumer::new(settings(dir.path(), 0.9)).unwrap();
    let report = consumer.run().await.unwrap();
    assert!(
        report.breaker_rejections > 0,
        "the breaker never opened: {report:?}"
    );
    assert_eq!(report.committed, 600);
    assert_exactly_once(dir.path(), &consumer.store().load().unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_crash_mid_run_and_a_restart_give_the_exact_output() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 0.2);
    let first = Consumer::new(s.clone()).unwrap();
    let offsets = first.offsets().clone();
    let task = tokio::spawn(async move { first.run().await.map(|_| ()) });
    // Kill it once it is well into the log (it yields while a store write is in flight).
    for _ in 0..100_000 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if offsets.load().map_or(0, |p| p.offset) >= 200 {
            break;
        }
    }
    task.abort();
    assert!(
        task.await.unwrap_err().is_cancelled(),
        "the run ended before the crash"
    );
    let restarted = Consumer::new(s).unwrap();
    let mid = restarted.offsets().load().unwrap().offset;
    assert!((200..600).contains(&mid), "crashed at offset {mid}");
    let report = restarted.run().await.unwrap();
    assert_eq!(report.committed, 600);
    assert_exactly_once(dir.path(), &restarted.store().load().unwrap());
}

#[tokio::test(start_paused = true)]
async fn replay_from_zero_rebuilds_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), 0.1);
    let consumer = Consumer::new(s.clone()).unwrap();
    consumer.run().await.unwrap();
    let first = consumer.store().load().unwrap();
    s.replay = true;
    let replayed = Consumer::new(s).unwrap();
    let report = replayed.run().await.unwrap();
    assert_eq!(report.committed, 600);
    assert_eq!(report.applied, 600, "every event applied again");
    assert_eq!(replayed.store().load().unwrap(), first);
    assert_exactly_once(dir.path(), &first);
}

#[tokio::test(start_paused = true)]
async fn a_replay_crashed_at_any_point_is_completed_by_a_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 0.1);
    Consumer::new(s.clone()).unwrap().run().await.unwrap();

    // A crash between the replay's two steps: the offset is back at 0, the old output is
    // still there. A plain rerun ends with the exact output.
    let consumer = Consumer::new(s.clone()).unwrap();
    consumer.offsets().commit(Position::default()).unwrap();
    let report = consumer.run().await.unwrap();
    assert_eq!(report.skipped_redelivered, 600);
    assert_exactly_once(dir.path(), &consumer.store().load().unwrap());

    // A crash in the middle of a replay, then a rerun with or without --replay.
    for replay_again in [false, true] {
        let mut r = s.clone();
        r.replay = true;
        let replaying = Consumer::new(r.clone()).unwrap();
        let offsets = replaying.offsets().clone();
        let task = tokio::spawn(async move { replaying.run().await.map(|_| ()) });
        for _ in 0..100_000 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let at = offsets.load().map_or(0, |p| p.offset);
            if (100..600).contains(&at) {
                break;
            }
        }
        task.abort();
        let _ = task.await;
        r.replay = replay_again;
        let rerun = Consumer::new(r).unwrap();
        assert_eq!(rerun.run().await.unwrap().committed, 600);
        assert_exactly_once(dir.path(), &rerun.store().load().unwrap());
    }
}

#[tokio::test(start_paused = true)]
async fn redelivered_events_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let consumer = Consumer::new(settings(dir.path(), 0.0)).unwrap();
    consumer.run().await.unwrap();
    let before = consumer.store().load().unwrap();
    // A crash after the store write but before the offset commit: an offset without its
    // byte position (as an older version wrote it) is found by reading the log once.
    std::fs::write(dir.path().join("consumer.offset"), b"100").unwrap();
    let again = Consumer::new(settings(dir.path(), 0.0)).unwrap();
    let report = again.run().await.unwrap();
    assert_eq!(report.skipped_redelivered, 500);
    assert_eq!(report.applied, 0);
    assert_eq!(again.store().load().unwrap(), before);
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_accounts_file_is_a_clear_error_not_an_endless_retry() {
    let dir = tempfile::tempdir().unwrap();
    let consumer = Consumer::new(settings(dir.path(), 0.0)).unwrap();
    consumer.run().await.unwrap();
    std::fs::write(dir.path().join("accounts.json"), b"{\"account-1\": {\"bala").unwrap();
    consumer.offsets().commit(Position::default()).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(60), consumer.run())
        .await
        .expect("no retry loop")
        .unwrap_err();
    let state = err.downcast_ref::<StateError>().expect("a StateError");
    assert_eq!(state.path, dir.path().join("accounts.json"));
    // Replay rebuilds it.
    let mut s = settings(dir.path(), 0.0);
    s.replay = true;
    let rebuilt = Consumer::new(s).unwrap();
    rebuilt.run().await.unwrap();
    assert_exactly_once(dir.path(), &rebuilt.store().load().unwrap());
}

#[test]
fn settings_out_of_range_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    type Edit = fn(&mut Settings);
    let edits: [(&str, Edit); 7] = [
        ("events", |s| s.events = u64::MAX),
        ("keys", |s| s.keys = 0),
        ("fail_rate", |s| s.fail_rate = 1.0),
        ("fail_rate", |s| s.fail_rate = f64::NAN),
        ("batch", |s| s.batch = 0),
        ("batch", |s| s.batch = usize::MAX),
        ("rate", |s| s.rate = 0),
    ];
    for (field, edit) in edits {
        let mut s = settings(dir.path(), 0.0);
        edit(&mut s);
        let err = s.validate().unwrap_err();
        assert_eq!(err.field(), field);
        assert!(Consumer::new(s).is_err());
    }
}

#[test]
fn a_bad_source_is_refused_by_name_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    for source in [
        "redis://:hunter2@127.0.0.1:6379",
        "redis://:hunter2@127.0.0.1:6379/",
        "kafka://broker/topic",
    ] {
        let mut s = settings(dir.path(), 0.0);
        s.source = source.into();
        let err = s.validate().unwrap_err();
        assert_eq!(err.field(), "source");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(
            err.to_string().contains("redis://HOST:PORT/STREAM"),
            "{err}"
        );
    }
    let mut s = settings(dir.path(), 0.0);
    s.source = "redis://:hunter2@127.0.0.1:6379/ledger".into();
    s.validate().unwrap();
    type Edit = fn(&mut Settings);
    let edits: [(&str, Edit); 6] = [
        ("claim_idle", |s| s.claim_idle = Duration::ZERO),
        ("claim_idle", |s| s.claim_idle = Duration::MAX),
        ("max_deliveries", |s| s.max_deliveries = 0),
        ("max_amount", |s| s.max_amount = u64::MAX),
        ("group", |s| s.group = String::new()),
        ("idle_exit", |s| s.idle_exit = Some(Duration::MAX)),
    ];
    for (field, edit) in edits {
        let mut s = settings(dir.path(), 0.0);
        edit(&mut s);
        assert_eq!(s.validate().unwrap_err().field(), field);
    }
}

fn stream_bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stream"));
    cmd.env_remove("RUST_LOG");
    cmd
}

#[test]
fn the_binary_has_help_logs_on_stderr_and_prints_messages() {
    let help = stream_bin().arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("--fail-rate") && text.contains("--replay"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let run = stream_bin()
        .args([
            "--events",
            "300",
            "--fail-rate",
            "0.3",
            "--rate",
            "100000",
            "--dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(run.status.success(), "{out}{err}");
    assert!(out.contains("committed offset     300"), "{out}");
    assert!(!out.contains("sink write failed"), "logs stay off stdout");
    assert!(
        err.contains("sink write failed"),
        "logs go to stderr: {err}"
    );
    assert!(!err.contains('\u{1b}'), "no colour codes in a pipe: {err}");

    let bad = stream_bin()
        .args(["--batch", "0", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.starts_with("stream: invalid stream config: batch = 0"),
        "{err}"
    );

    std::fs::write(dir.path().join("accounts.json"), b"not json").unwrap();
    let corrupt = stream_bin().arg("--dir").arg(dir.path()).output().unwrap();
    assert_eq!(corrupt.status.code(), Some(1));
    let err = String::from_utf8_lossy(&corrupt.stderr);
    assert!(
        err.contains("accounts.json") && !err.contains("StateError"),
        "{err}"
    );
}
