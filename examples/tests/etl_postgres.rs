//! The ETL end to end into a real PostgreSQL: the tests start a throw-away cluster
//! themselves (`initdb` + `pg_ctl` on a free loopback port, in a temporary directory) and
//! remove it at the end, also when an assertion fails (a `Drop` guard).
//!
//! Without PostgreSQL binaries (Debian's `postgresql` package) a test says why and returns,
//! unless the `CI` environment variable is set: then a missing binary fails the test, so CI
//! cannot pass without running it. Once the binaries are found, any setup error (initdb,
//! pg_ctl, a command that cannot start) fails the test.

mod etl_common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use etl_common::{config, etl_bin, expected, flaky_source, ms};
use palisade_examples::etl::record::Record;
use palisade_examples::etl::{self};

/// Why there is no cluster.
enum Setup {
    /// No PostgreSQL binaries: a skip, except on CI.
    NoBinaries(String),
    /// The binaries are there but the cluster could not be set up: a failure.
    Failed(String),
}

/// A running cluster, or `None` (after saying why) when the binaries are missing and `CI`
/// is not set. Panics on every other setup failure.
fn cluster_or_skip() -> Option<Cluster> {
    match decide(Cluster::start(), std::env::var_os("CI").is_some()) {
        Ok(Some(cluster)) => Some(cluster),
        Ok(None) => None,
        Err(why) => panic!("{why}"),
    }
}

/// Skip (`Ok(None)`) only for missing binaries off CI; everything else is a failure.
fn decide<T>(setup: Result<T, Setup>, ci: bool) -> Result<Option<T>, String> {
    match setup {
        Ok(cluster) => Ok(Some(cluster)),
        Err(Setup::NoBinaries(why)) if !ci => {
            let _ = writeln!(
                std::io::stderr(),
                "skipping the PostgreSQL test: {why} (set CI=1 to make this a failure)"
            );
            Ok(None)
        }
        Err(Setup::NoBinaries(why)) => Err(format!(
            "CI is set, so the PostgreSQL test must run, but: {why}"
        )),
        Err(Setup::Failed(why)) => Err(format!("PostgreSQL cluster setup failed: {why}")),
    }
}

#[test]
fn only_missing_binaries_off_ci_skip() {
    let missing = || Err::<(), _>(Setup::NoBinaries("no binaries".into()));
    let failed = || Err::<(), _>(Setup::Failed("initdb failed".into()));
    assert_eq!(decide(missing(), false), Ok(None));
    assert!(decide(missing(), true).unwrap_err().contains("CI is set"));
    assert!(decide(failed(), false).is_err());
    assert!(decide(failed(), true).is_err());
    assert_eq!(decide(Ok::<_, Setup>(()), true), Ok(Some(())));
    // A command that cannot start is an error, not a success.
    assert!(run(&mut Command::new("/nonexistent/initdb")).is_err());
}

/// A PostgreSQL cluster in a temporary directory; stopped and deleted on drop.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    /// Run the binaries as this user (PostgreSQL refuses to run as root).
    user: Option<&'static str>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Result<Cluster, Setup> {
        let bin = find_bin_dir().ok_or_else(|| {
            Setup::NoBinaries("no PostgreSQL binaries under /usr/lib/postgresql/*/bin".into())
        })?;
        Self::start_with(bin).map_err(Setup::Failed)
    }

    fn start_with(bin: PathBuf) -> Result<Cluster, String> {
        let user = if is_root()? { Some("postgres") } else { None };
        if user.is_some() && !run(Command::new("id").arg("postgres"))?.status.success() {
            return Err("running as root and there is no `postgres` user to run the server".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("palisade-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        if let Some(user) = user {
            let status = run(Command::new("chown").args(["-R", user]).arg(dir.path()))?.status;
            if !status.success() {
                return Err(format!("cannot chown {} to {user}", dir.path().display()));
            }
        }
        let data = dir.path().join("data");
        let port = free_port();
        let cluster = Cluster {
            bin,
            data,
            user,
            port,
            _dir: dir,
        };
        let init = cluster.pg("initdb", |c| {
            c.arg("-D").arg(&cluster.data).args([
                "-A",
                "trust",
                "-U",
                "etl",
                "--no-sync",
                "-E",
                "UTF8",
            ]);
        })?;
        if !init.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&init.stderr)
            ));
        }
        cluster.ctl("start")?;
        Ok(cluster)
    }

    /// `pg_ctl start`, `stop` or `restart`, waiting for it to finish (30 s at most).
    fn ctl(&self, action: &str) -> Result<(), String> {
        let socket_dir = self
            .data
            .parent()
            .unwrap_or(Path::new("/tmp"))
            .to_path_buf();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            socket_dir.display()
        );
        let log = socket_dir.join("server.log");
        let done = self.pg("pg_ctl", |c| {
            c.arg("-D").arg(&self.data);
            if action != "stop" {
                c.args(["-o", &options, "-l"]).arg(&log);
            }
            c.args(["-m", "fast", "-w", "-t", "30", action]);
        })?;
        if !done.status.success() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "pg_ctl {action} failed: {}{log}",
                String::from_utf8_lossy(&done.stderr)
            ));
        }
        Ok(())
    }

    fn url(&self) -> String {
        format!("postgres://etl@127.0.0.1:{}/postgres", self.port)
    }

    fn pg(&self, program: &str, args: impl FnOnce(&mut Command)) -> Result<Output, String> {
        let path = self.bin.join(program);
        let mut cmd = match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        // A working directory the server's user can read.
        cmd.current_dir(self.data.parent().unwrap_or(Path::new("/")));
        args(&mut cmd);
        run(&mut cmd)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data.clone();
        let _ = self.pg("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"]);
        });
        // The TempDir field removes the directory after this.
    }
}

/// Run `cmd` to its end; a command that cannot start is an error, never a success.
fn run(cmd: &mut Command) -> Result<Output, String> {
    cmd.output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))
}

fn find_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn is_root() -> Result<bool, String> {
    let out = run(Command::new("id").arg("-u"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

async fn pg_records(url: &str, source: &str) -> Vec<Record> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the cluster");
    tokio::spawn(conn);
    client
        .query(
            "SELECT id, name, amount_cents, currency, updated_at FROM records
             WHERE source = $1 ORDER BY id",
            &[&source],
        )
        .await
        .expect("query the records")
        .iter()
        .map(|r| Record {
            id: r.get(0),
            name: r.get(1),
            amount_cents: r.get(2),
            currency: r.get(3),
            updated_at: r.get(4),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sink_loads_exactly_once_through_chaos_and_a_sink_outage() {
    let Some(cluster) = cluster_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut chaos = flaky_source();
    chaos.sink_outage = Some(ms(150)..ms(450));
    let mut config = config(&cluster.url(), &dir.path().join("journal.jsonl"), 21, chaos);
    config.rate = 40;
    config.burst = Some(1);
    config.batch_size = 25;
    let want = expected(&config);

    let first = etl::run(&config).await.unwrap();
    assert!(first.ok(), "{first}");
    assert_eq!(first.load.inserted, want.records.len() as u64);
    assert_eq!(first.rejected, want.rejected);
    assert!(
        first.spilled_batches > 0,
        "the sink outage spilled batches:\n{first}"
    );
    assert_eq!(first.replayed_batches, first.spilled_batches);
    let loaded = pg_records(&cluster.url(), &first.source).await;
    assert_eq!(loaded, want.records.values().cloned().collect::<Vec<_>>());

    let mut calm = config.clone();
    calm.chaos = Some(etl::ChaosScenario::none());
    let again = etl::run(&calm).await.unwrap();
    assert!(again.ok(), "{again}");
    assert_eq!(
        (again.load.inserted, again.load.updated),
        (0, 0),
        "a re-run changes nothing"
    );
    assert_eq!(pg_records(&cluster.url(), &again.source).await, loaded);
    drop(cluster);
}

#[test]
fn the_binary_accepts_both_connection_forms_and_never_prints_the_password() {
    let Some(cluster) = cluster_or_skip() else {
        return;
    };
    // The cluster trusts every local connection, so any password is accepted: enough to
    // see where it would be printed.
    const SECRET: &str = "Pg-S3cret-42";
    let dir = tempfile::tempdir().unwrap();
    let sinks = [
        format!(
            "postgres://etl:{SECRET}@127.0.0.1:{}/postgres",
            cluster.port
        ),
        format!(
            "host=127.0.0.1 port={} user=etl password='{SECRET}' dbname=postgres",
            cluster.port
        ),
    ];
    for (n, sink) in sinks.iter().enumerate() {
        for json in [false, true] {
            let mut cmd = etl_bin();
            cmd.args(["--rows", "300", "--scenario", "calm", "--sink", sink])
                .arg("--journal")
                .arg(dir.path().join(format!("j{n}.jsonl")));
            if json {
                cmd.arg("--json-logs");
            }
            let out = cmd.output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{sink}:\n{stdout}\n{stderr}");
            assert!(stdout.contains("reconciliation OK"), "{stdout}");
            assert!(
                !stdout.contains(SECRET) && !stderr.contains(SECRET),
                "the password leaked:\n{stdout}\n{stderr}"
            );
        }
    }
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_run_is_ridden_out_by_reconnecting() {
    let Some(cluster) = cluster_or_skip() else {
        return;
    };
    let cluster = std::sync::Arc::new(cluster);
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(
        &cluster.url(),
        &dir.path().join("journal.jsonl"),
        23,
        etl::ChaosScenario::none(),
    );
    // 1,200 rows at 20 pages per second: about three seconds, the restart in the middle.
    config.dataset.rows = 1200;
    config.rate = 20;
    config.burst = Some(1);
    config.batch_size = 20;
    config.max_run_time = Duration::from_secs(40);
    let want = expected(&config);

    let run = tokio::spawn({
        let config = config.clone();
        async move { etl::run(&config).await }
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let restarted = std::sync::Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || restarted.ctl("restart"))
        .await
        .unwrap()
        .expect("restart the cluster");
    let summary = run.await.unwrap().expect("a summary, not an error");
    assert!(summary.ok(), "{summary}");
    assert!(
        summary.spilled_batches > 0 || summary.retries[1] > 0,
        "the restart was felt by the sink:\n{summary}"
    );
    assert_eq!(
        summary.load.inserted,
        want.records.len() as u64,
        "{summary}"
    );
    let loaded = pg_records(&cluster.url(), &summary.source).await;
    assert_eq!(loaded, want.records.values().cloned().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stays_down_still_gets_a_summary_and_the_next_run_catches_up() {
    let Some(cluster) = cluster_or_skip() else {
        return;
    };
    let cluster = std::sync::Arc::new(cluster);
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(
        &cluster.url(),
        &dir.path().join("journal.jsonl"),
        29,
        etl::ChaosScenario::none(),
    );
    config.dataset.rows = 1200;
    config.rate = 20;
    config.burst = Some(1);
    config.batch_size = 20;
    config.max_run_time = Duration::from_secs(6);
    let want = expected(&config);

    let run = tokio::spawn({
        let config = config.clone();
        async move { etl::run(&config).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let stopped = std::sync::Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || stopped.ctl("stop"))
        .await
        .unwrap()
        .expect("stop the cluster");
    let summary = run.await.unwrap().expect("a summary, not an error");
    assert!(!summary.ok(), "the sink is gone:\n{summary}");
    assert!(
        summary.journal_pending > 0,
        "batches wait in the journal:\n{summary}"
    );
    assert!(
        summary.errors.iter().any(|e| e.contains("count")),
        "the summary says why: {:?}",
        summary.errors
    );

    let started = std::sync::Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || started.ctl("start"))
        .await
        .unwrap()
        .expect("start the cluster again");
    config.max_run_time = Duration::from_secs(30);
    let again = etl::run(&config).await.unwrap();
    assert!(again.ok(), "{again}");
    assert!(again.replayed_batches > 0, "{again}");
    let loaded = pg_records(&cluster.url(), &again.source).await;
    assert_eq!(loaded, want.records.values().cloned().collect::<Vec<_>>());
}
