//! The ETL end to end against its built-in flaky API, into SQLite: under several chaos
//! seeds every valid record is loaded exactly once, rejects are counted, reconciliation
//! holds, a re-run changes nothing, and a sink outage mid-run is survived by spill and
//! replay. Real sockets on 127.0.0.1, small datasets, short timings.

mod etl_common;

use etl_common::{
    builtin_source, config, etl_bin, expected, file_dataset, flaky_source, ms, sqlite_records,
    write_config,
};
use palisade_examples::etl::journal::Journal;
use palisade_examples::etl::record::validate;
use palisade_examples::etl::sink::Batch;
use palisade_examples::etl::source::{SourceServer, generate_rows};
use palisade_examples::etl::{self, ChaosScenario};
use std::io::Write;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_valid_record_is_loaded_exactly_once_under_chaos_and_reruns_change_nothing() {
    for seed in [1, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("etl.sqlite");
        let config = config(
            db.to_str().unwrap(),
            &dir.path().join("journal.jsonl"),
            seed,
            flaky_source(),
        );
        let want = expected(&config);

        let first = etl::run(&config).await.unwrap();
        assert!(first.ok(), "seed {seed}:\n{first}");
        assert_eq!(first.valid, want.records.len() as u64, "seed {seed}");
        assert_eq!(first.rejected, want.rejected, "seed {seed}");
        assert_eq!(first.duplicates, want.duplicates, "seed {seed}");
        assert_eq!(
            first.load.inserted,
            want.records.len() as u64,
            "seed {seed}"
        );
        assert!(first.faults[0] > 0, "seed {seed}: chaos injected faults");
        assert!(first.retries[0] > 0, "seed {seed}: the client retried");
        assert_eq!(
            sqlite_records(&db, &first.source),
            want.records,
            "seed {seed}"
        );

        let again = etl::run(&config).await.unwrap();
        assert!(again.ok(), "seed {seed} re-run:\n{again}");
        assert_eq!(
            (
                again.load.inserted,
                again.load.updated,
                again.load.rejected_inserted
            ),
            (0, 0, 0),
            "seed {seed}: a re-run changes nothing"
        );
        assert_eq!(again.load.unchanged, want.records.len() as u64);
        assert_eq!(sqlite_records(&db, &again.source), want.records);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_outage_mid_run_is_survived_by_spill_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("etl.sqlite");
    let chaos = ChaosScenario {
        sink_outage: Some(ms(100)..ms(450)),
        ..ChaosScenario::none()
    };
    let mut config = config(
        db.to_str().unwrap(),
        &dir.path().join("journal.jsonl"),
        11,
        chaos,
    );
    // 20 pages at 30 per second: the run outlasts the outage, which starts mid-run.
    config.rate = 30;
    config.burst = Some(1);
    config.batch_size = 20;
    let want = expected(&config);

    let summary = etl::run(&config).await.unwrap();
    assert!(summary.ok(), "{summary}");
    assert!(summary.spilled_batches > 0, "batches spilled:\n{summary}");
    assert_eq!(summary.replayed_batches, summary.spilled_batches);
    assert_eq!(summary.journal_pending, 0);
    assert!(summary.faults[1] > 0, "the sink outage was injected");
    assert!(summary.load.spilled > 0);
    assert!(
        summary.degraded[1] > Duration::ZERO,
        "time degraded is reported"
    );
    assert_eq!(summary.load.inserted, want.records.len() as u64);
    assert_eq!(sqlite_records(&db, &summary.source), want.records);
    assert!(
        !dir.path().join("journal.jsonl").exists(),
        "the journal is drained"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_left_by_a_crashed_run_is_replayed_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("etl.sqlite");
    let journal_path = dir.path().join("journal.jsonl");
    let config = config(
        db.to_str().unwrap(),
        &journal_path,
        5,
        ChaosScenario::none(),
    );
    let want = expected(&config);

    // A crashed run spilled the first valid rows and never replayed them.
    let source = format!(
        "builtin:seed={}:rows={}:page={}",
        config.dataset.seed, config.dataset.rows, config.dataset.page_size
    );
    let records = generate_rows(&config.dataset)
        .iter()
        .filter_map(|r| validate(r).ok())
        .take(30)
        .collect();
    let identity = config.sink_target().unwrap().identity();
    let journal = Journal::open(&journal_path, &identity).unwrap();
    let leftover = Batch {
        seq: 0,
        source,
        records,
        rejected: Vec::new(),
    };
    journal.append(&leftover).await.unwrap();
    // The crashed run's process is gone, and so is its lock; it died mid-append, leaving a
    // torn line after the acknowledged batch.
    drop(journal);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&journal_path)
        .unwrap()
        .write_all(b"{\"seq\":1,\"source\":\"builtin:se")
        .unwrap();

    let summary = etl::run(&config).await.unwrap();
    assert!(summary.ok(), "{summary}");
    assert_eq!(summary.replayed_batches, 1);
    assert_eq!(summary.load.inserted, want.records.len() as u64);
    assert_eq!(
        summary.load.unchanged, 30,
        "the live rows found the replayed ones"
    );
    assert_eq!(sqlite_records(&db, &summary.source), want.records);
    let torn: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".torn-"))
        .collect();
    assert_eq!(
        torn.len(),
        1,
        "the torn tail was kept aside, not appended onto"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_never_comes_back_fails_reconciliation_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("etl.sqlite");
    let chaos = ChaosScenario {
        source_outage: Some(ms(0)..Duration::from_secs(600)),
        ..ChaosScenario::none()
    };
    let mut config = config(
        db.to_str().unwrap(),
        &dir.path().join("journal.jsonl"),
        9,
        chaos,
    );
    config.max_run_time = Duration::from_millis(800);

    let started = tokio::time::Instant::now();
    let summary = etl::run(&config).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the deadline"
    );
    assert!(!summary.ok(), "nothing was extracted:\n{summary}");
    assert_eq!(summary.extracted, 0);
    assert!(summary.breaker_trips[0] > 0, "the source breaker opened");
    assert_eq!(summary.journal_pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_and_sink_outages_together_under_heavy_faults() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("etl.sqlite");
    let chaos = ChaosScenario {
        error_rate: 0.25,
        throttle_rate: 0.1,
        retry_after_secs: 1,
        latency_rate: 0.3,
        latency: ms(1)..ms(30),
        source_outage: Some(ms(100)..ms(400)),
        sink_outage: Some(ms(300)..ms(700)),
    };
    let mut config = config(
        db.to_str().unwrap(),
        &dir.path().join("journal.jsonl"),
        13,
        chaos,
    );
    config.rate = 40;
    config.burst = Some(1);
    config.batch_size = 20;
    let want = expected(&config);

    let summary = etl::run(&config).await.unwrap();
    assert!(summary.ok(), "{summary}");
    assert!(
        summary.breaker_trips[0] > 0,
        "the source breaker opened:\n{summary}"
    );
    assert_eq!(summary.replayed_batches, summary.spilled_batches);
    assert_eq!(summary.load.inserted, want.records.len() as u64);
    assert_eq!(sqlite_records(&db, &summary.source), want.records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_given_by_url_is_extracted_and_keyed_by_its_url() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("etl.sqlite");
    let mut config = config(
        db.to_str().unwrap(),
        &dir.path().join("journal.jsonl"),
        17,
        ChaosScenario::none(),
    );
    // An API the pipeline did not start: here another built-in server, with faults.
    let server = SourceServer::start(&config.dataset, &flaky_source(), 17)
        .await
        .unwrap();
    config.source_url = Some(format!("{}/", server.url()));
    let want = expected(&config);

    let summary = etl::run(&config).await.unwrap();
    assert!(summary.ok(), "{summary}");
    assert_eq!(summary.source, format!("{}/", server.url()));
    assert_eq!(
        summary.faults[0], 0,
        "faults of a foreign API are not ours to count"
    );
    assert!(server.chaos().injected_total() > 0);
    assert_eq!(sqlite_records(&db, &summary.source), want.records);
    server.shutdown().await;
}

// ===== the binary, as an operator runs it =====

fn output_text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn passwords_never_reach_any_output_in_either_connection_form() {
    const SECRET: &str = "S3cret-Pa55";
    // A port nobody listens on: the connection fails, and every error path is printed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let sinks = [
        format!("postgres://etl:{SECRET}@127.0.0.1:{port}/etl"),
        format!("postgresql://etl@127.0.0.1:{port}/etl?password={SECRET}"),
        format!("host=127.0.0.1 port={port} user=etl password={SECRET} dbname=etl"),
        format!("host=127.0.0.1 port={port} user=etl password='{SECRET}' dbname=etl"),
    ];
    for sink in &sinks {
        for json in [false, true] {
            let mut cmd = etl_bin();
            cmd.args(["--rows", "40", "--journal"])
                .arg(dir.path().join("j.jsonl"))
                .args(["--sink", sink]);
            if json {
                cmd.arg("--json-logs");
            }
            let out = cmd.output().unwrap();
            let (stdout, stderr) = output_text(&out);
            assert_eq!(out.status.code(), Some(1), "{sink}: {stdout}{stderr}");
            assert!(
                stderr.contains("PostgreSQL"),
                "the error says what failed: {stderr}"
            );
            assert!(
                !stdout.contains(SECRET) && !stderr.contains(SECRET),
                "{sink} leaked:\n{stdout}\n{stderr}"
            );
            assert!(
                stderr.contains("***"),
                "the sink is shown redacted: {stderr}"
            );
        }
        // Given by environment variable, it stays out of --help too.
        let help = etl_bin()
            .arg("--help")
            .env("ETL_SINK", sink)
            .output()
            .unwrap();
        let (stdout, stderr) = output_text(&help);
        assert!(
            !stdout.contains(SECRET) && !stderr.contains(SECRET),
            "{stdout}"
        );
    }
}

#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "a child process runs on the wall clock, not on tokio's"
)]
fn bad_settings_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (&["--sink", "sqlite:"], "sink"),
        (&["--sink", ":memory:"], "in-memory"),
        (&["--source-url", "htp:/nowhere"], "source_url"),
        (&["--rate", "0"], "rate"),
        (&["--rows", "18446744073709551615"], "dataset.rows"),
        (&["--batch-size", "18446744073709551615"], "batch_size"),
        (&["--max-run-time", "30"], "unit"),
    ];
    for (args, says) in cases {
        let started = std::time::Instant::now();
        let out = etl_bin()
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap();
        let (stdout, stderr) = output_text(&out);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?} refused at once, not after retries"
        );
    }
    let missing = etl_bin()
        .args(["--config"])
        .arg(dir.path().join("nope.toml"))
        .output()
        .unwrap();
    assert!(
        output_text(&missing).1.contains("nope.toml"),
        "file errors name the path"
    );
    // Nothing was created by the refused runs.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn spills_log_their_cause_and_piped_logs_have_no_colour() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("etl.sqlite");
    let config = write_config(dir.path(), db.to_str().unwrap(), 600, 60);
    let out = etl_bin().arg("--config").arg(&config).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("reconciliation OK"), "{stdout}");
    let spill = stderr
        .lines()
        .find(|l| l.contains("batch spilled to the journal"))
        .unwrap_or_else(|| panic!("no spill logged:\n{stderr}"));
    assert!(spill.contains("error="), "the spill says why: {spill}");
    assert!(!stderr.contains('\u{1b}'), "no escape codes in a pipe");
    assert!(
        !stdout.contains(" INFO ") && !stdout.contains(" WARN "),
        "logs on stderr only"
    );
    let transitions = stderr
        .lines()
        .filter(|l| l.contains("state changed name=sink ") && l.contains("to=\"open\""))
        .count();
    let trips = stdout
        .lines()
        .find(|l| l.contains("breaker trips"))
        .and_then(|l| l.rsplit('/').next())
        .map(|n| n.trim().parse::<usize>().unwrap())
        .unwrap();
    assert_eq!(transitions, trips, "each transition logged once:\n{stderr}");
}

#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "a child process runs on the wall clock, not on tokio's"
)]
fn a_second_run_on_the_same_sink_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("etl.sqlite");
    // 2,000 rows at 20 pages per second: the first run lasts a few seconds.
    let config = write_config(dir.path(), db.to_str().unwrap(), 2000, 20);
    let log = std::fs::File::create(dir.path().join("first.log")).unwrap();
    let mut first = etl_bin()
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Wait until the first run holds the journal's lock (it writes its pid there).
    let lock = dir.path().join("etl.sqlite.journal.jsonl.lock");
    let pid = first.id().to_string();
    let held = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(25));
        std::fs::read_to_string(&lock).is_ok_and(|t| t.trim() == pid)
    });
    assert!(held, "the first run took the lock");

    let second = etl_bin().arg("--config").arg(&config).output().unwrap();
    let (stdout, stderr) = output_text(&second);
    assert_eq!(second.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("in use by another etl run") && stderr.contains(&pid),
        "{stderr}"
    );

    assert!(first.wait().unwrap().success(), "the first run finishes");
    let third = etl_bin().arg("--config").arg(&config).output().unwrap();
    let (stdout, _) = output_text(&third);
    assert!(third.status.success(), "{stdout}");
    assert!(stdout.contains("reconciliation OK"), "{stdout}");
    let want = expected(&file_dataset(2000));
    assert_eq!(sqlite_records(&db, &builtin_source(2000)), want.records);
}

#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "a child process runs on the wall clock, not on tokio's"
)]
fn kill_9_at_any_moment_then_a_rerun_reconciles() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("etl.sqlite");
    let config = write_config(dir.path(), db.to_str().unwrap(), 1200, 30);
    // Killed at several moments: mid-extraction, mid-outage (batches in the journal),
    // mid-replay.
    for delay in [120, 350, 600, 900, 1300] {
        let mut run = etl_bin()
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        run.kill().unwrap(); // SIGKILL
        run.wait().unwrap();
    }
    let out = etl_bin().arg("--config").arg(&config).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("reconciliation OK"), "{stdout}");
    let want = expected(&file_dataset(1200));
    assert_eq!(sqlite_records(&db, &builtin_source(1200)), want.records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_harsh_scenario_takes_the_sink_down_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("etl.sqlite");
    let config = etl::EtlConfig {
        sink: db.to_string_lossy().into_owned(),
        scenario: "harsh".into(),
        chaos_seed: 3,
        metrics_addr: None,
        progress: false,
        ..etl::EtlConfig::default()
    };
    let want = expected(&config);
    let summary = etl::run(&config).await.unwrap();
    assert!(summary.ok(), "{summary}");
    assert!(
        summary.faults[1] > 0,
        "the sink outage happened:\n{summary}"
    );
    assert!(summary.spilled_batches > 0, "{summary}");
    assert_eq!(sqlite_records(&db, &summary.source), want.records);
}

#[test]
fn a_run_can_be_spawned() {
    fn assert_send<T: Send + 'static>(_: T) {}
    let config = etl::EtlConfig::default();
    assert_send(async move { etl::run(&config).await });
}
