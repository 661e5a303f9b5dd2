//! The ETL end to end into a real PostgreSQL: the test starts a throw-away cluster itself
//! (`initdb` + `pg_ctl` on a free loopback port, in a temporary directory) and removes it at
//! the end, also when an assertion fails (a `Drop` guard). Without PostgreSQL binaries
//! (Debian's `postgresql` package) it says why and returns.

mod etl_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use etl_common::{config, expected, flaky_source, ms};
use palisade_examples::etl::record::Record;
use palisade_examples::etl::{self};

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
    fn start() -> Result<Cluster, String> {
        let bin = find_bin_dir().ok_or("no PostgreSQL binaries under /usr/lib/postgresql/*/bin")?;
        let user = if is_root() { Some("postgres") } else { None };
        if user.is_some() && !run(Command::new("id").arg("postgres")).status.success() {
            return Err("running as root and there is no `postgres` user to run the server".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("palisade-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        if let Some(user) = user {
            let status = run(Command::new("chown").args(["-R", user]).arg(dir.path())).status;
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
        });
        if !init.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&init.stderr)
            ));
        }
        let socket_dir = cluster
            .data
            .parent()
            .unwrap_or(Path::new("/tmp"))
            .to_path_buf();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            cluster.port,
            socket_dir.display()
        );
        let log = socket_dir.join("server.log");
        let started = cluster.pg("pg_ctl", |c| {
            c.arg("-D")
                .arg(&cluster.data)
                .args(["-o", &options, "-l"])
                .arg(&log)
                .args(["-w", "-t", "30", "start"]);
        });
        if !started.status.success() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "pg_ctl start failed: {}{log}",
                String::from_utf8_lossy(&started.stderr)
            ));
        }
        Ok(cluster)
    }

    fn url(&self) -> String {
        format!("postgres://etl@127.0.0.1:{}/postgres", self.port)
    }

    fn pg(&self, program: &str, args: impl FnOnce(&mut Command)) -> Output {
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

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| Output {
        status: std::process::ExitStatus::default(),
        stdout: Vec::new(),
        stderr: e.to_string().into_bytes(),
    })
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

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
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
    let cluster = match Cluster::start() {
        Ok(cluster) => cluster,
        Err(why) => {
            println!("skipping the PostgreSQL test: {why}");
            return;
        }
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
