//! The ETL end to end against its built-in flaky API, into SQLite: under several chaos
//! seeds every valid record is loaded exactly once, rejects are counted, reconciliation
//! holds, a re-run changes nothing, and a sink outage mid-run is survived by spill and
//! replay. Real sockets on 127.0.0.1, small datasets, short timings.

mod etl_common;

use etl_common::{config, expected, flaky_source, ms, sqlite_records};
use palisade_examples::etl::journal::Journal;
use palisade_examples::etl::record::validate;
use palisade_examples::etl::sink::Batch;
use palisade_examples::etl::source::{SourceServer, generate_rows};
use palisade_examples::etl::{self, ChaosScenario};
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
    // The crashed run's process is gone: so is its lock.
    drop(journal);

    let summary = etl::run(&config).await.unwrap();
    assert!(summary.ok(), "{summary}");
    assert_eq!(summary.replayed_batches, 1);
    assert_eq!(summary.load.inserted, want.records.len() as u64);
    assert_eq!(
        summary.load.unchanged, 30,
        "the live rows found the replayed ones"
    );
    assert_eq!(sqlite_records(&db, &summary.source), want.records);
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
