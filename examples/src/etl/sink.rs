//! The load stage's sinks: idempotent, batched upserts into SQLite (embedded, the default)
//! or PostgreSQL (by URL).
//!
//! Every batch is one transaction. Records are keyed by `(source, id)` and rejected rows by
//! `(source, position)`; an upsert rewrites a row only when its content changed, so loading
//! a batch twice (a retry after a timeout that had in fact committed, a journal replay)
//! changes nothing and reports the rows as unchanged.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use palisade::BoxError;
use palisade::degrade::Marked;
use serde::{Deserialize, Serialize};
use tower::Service;

use super::config::SinkTarget;
use super::record::{Record, RejectedRow};

/// One unit of loading: one transaction in the sink, one line in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Sequence number within the run (for logs).
    pub seq: u64,
    /// The source the rows came from (part of every key).
    pub source: String,
    /// Valid, de-duplicated records.
    pub records: Vec<Record>,
    /// Rows that failed validation.
    pub rejected: Vec<RejectedRow>,
}

impl Batch {
    /// Rows in the batch, valid and rejected.
    pub fn len(&self) -> usize {
        self.records.len() + self.rejected.len()
    }

    /// Whether the batch holds no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What loading one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Records that were not in the sink.
    pub inserted: u64,
    /// Records that were, with other content.
    pub updated: u64,
    /// Records already in the sink as they are.
    pub unchanged: u64,
    /// Rejected rows newly recorded.
    pub rejected_inserted: u64,
    /// Records written to the journal instead of the sink (the batch spilled).
    pub spilled: u64,
}

impl LoadReport {
    /// Add another report's counts.
    pub fn add(&mut self, other: &LoadReport) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.rejected_inserted += other.rejected_inserted;
        self.spilled += other.spilled;
    }
}

/// Row counts of one source in the sink, for reconciliation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkCounts {
    /// Rows in the records table.
    pub records: u64,
    /// Rows in the rejected table.
    pub rejected: u64,
}

// ===== Sink =====

/// A sink: a tower service loading [`Batch`]es; clones share one connection.
///
/// Answers are [`Marked`] so palisade-degrade's fallback can mark the spilled ones.
#[derive(Clone)]
pub enum Sink {
    /// SQLite, driven on the blocking pool.
    Sqlite(SqliteSink),
    /// PostgreSQL through tokio-postgres.
    Postgres(PgSink),
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sink::Sqlite(s) => f.debug_tuple("Sqlite").field(&s.path).finish(),
            Sink::Postgres(_) => f.debug_tuple("Postgres").finish_non_exhaustive(),
        }
    }
}

impl Sink {
    /// Open (and create the tables of) the sink `target` names.
    pub async fn open(target: &SinkTarget) -> Result<Self, BoxError> {
        match target {
            SinkTarget::Sqlite(path) => Ok(Sink::Sqlite(SqliteSink::open(path).await?)),
            SinkTarget::Postgres(conn) => Ok(Sink::Postgres(PgSink::connect(conn).await?)),
        }
    }

    /// Load one batch in one transaction.
    pub async fn load(&self, batch: Batch) -> Result<LoadReport, BoxError> {
        match self {
            Sink::Sqlite(s) => s.load(batch).await,
            Sink::Postgres(s) => s.load(&batch).await,
        }
    }

    /// How many rows of `source` the sink holds.
    pub async fn counts(&self, source: &str) -> Result<SinkCounts, BoxError> {
        match self {
            Sink::Sqlite(s) => s.counts(source).await,
            Sink::Postgres(s) => s.counts(source).await,
        }
    }
}

impl Service<Batch> for Sink {
    type Response = Marked<LoadReport>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Marked<LoadReport>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Batch) -> Self::Future {
        let sink = self.clone();
        Box::pin(async move { sink.load(batch).await.map(Marked::new) })
    }
}

// ===== SQLite =====

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    source TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
    amount_cents INTEGER NOT NULL, currency TEXT NOT NULL, updated_at INTEGER NOT NULL,
    PRIMARY KEY (source, id));
CREATE TABLE IF NOT EXISTS rejected (
    source TEXT NOT NULL, position TEXT NOT NULL, reason TEXT NOT NULL, raw TEXT NOT NULL,
    PRIMARY KEY (source, position));
";

/// A SQLite database file; one connection behind a mutex, used from the blocking pool.
#[derive(Clone)]
pub struct SqliteSink {
    path: PathBuf,
    conn: Arc<Mutex<rusqlite::Connection>>,
}

impl SqliteSink {
    /// Open or create the database at `path` (and its parent directory).
    pub async fn open(path: &Path) -> Result<Self, BoxError> {
        let path = path.to_path_buf();
        let opened = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<_, BoxError> {
            if let Some(dir) = opened.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    format!("cannot create the sink's directory {}: {e}", dir.display())
                })?;
            }
            let setup = || -> Result<rusqlite::Connection, rusqlite::Error> {
                let conn = rusqlite::Connection::open(&opened)?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
                conn.execute_batch(SQLITE_SCHEMA)?;
                Ok(conn)
            };
            setup().map_err(|e| {
                format!("cannot open the SQLite sink {}: {e}", opened.display()).into()
            })
        })
        .await??;
        Ok(Self {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn load(&self, batch: Batch) -> Result<LoadReport, BoxError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().map_err(|_| "sqlite connection poisoned")?;
            sqlite_load(&mut conn, &batch)
        })
        .await?
    }

    async fn counts(&self, source: &str) -> Result<SinkCounts, BoxError> {
        let conn = Arc::clone(&self.conn);
        let source = source.to_owned();
        tokio::task::spawn_blocking(move || -> Result<SinkCounts, BoxError> {
            let conn = conn.lock().map_err(|_| "sqlite connection poisoned")?;
            let count = |table: &str| -> Result<u64, BoxError> {
                let sql = format!("SELECT COUNT(*) FROM {table} WHERE source = ?1");
                let n: i64 = conn.query_row(&sql, [&source], |r| r.get(0))?;
                Ok(u64::try_from(n)?)
            };
            Ok(SinkCounts {
                records: count("records")?,
                rejected: count("rejected")?,
            })
        })
        .await?
    }
}

fn sqlite_load(conn: &mut rusqlite::Connection, batch: &Batch) -> Result<LoadReport, BoxError> {
    let tx = conn.transaction()?;
    let mut report = LoadReport::default();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO records (source, id, name, amount_cents, currency, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (source, id) DO NOTHING",
        )?;
        let mut update = tx.prepare_cached(
            "UPDATE records SET name = ?3, amount_cents = ?4, currency = ?5, updated_at = ?6
             WHERE source = ?1 AND id = ?2
               AND (name, amount_cents, currency, updated_at) IS NOT (?3, ?4, ?5, ?6)",
        )?;
        for r in &batch.records {
            let params = rusqlite::params![
                batch.source,
                r.id,
                r.name,
                r.amount_cents,
                r.currency,
                r.updated_at
            ];
            if insert.execute(params)? == 1 {
                report.inserted += 1;
            } else if update.execute(params)? == 1 {
                report.updated += 1;
            } else {
                report.unchanged += 1;
            }
        }
        let mut reject = tx.prepare_cached(
            "INSERT INTO rejected (source, position, reason, raw) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (source, position) DO NOTHING",
        )?;
        for r in &batch.rejected {
            let n = reject.execute(rusqlite::params![batch.source, r.position, r.reason, r.raw])?;
            report.rejected_inserted += n as u64;
        }
    }
    tx.commit()?;
    Ok(report)
}

// ===== PostgreSQL =====

const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    source TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
    amount_cents BIGINT NOT NULL, currency TEXT NOT NULL, updated_at BIGINT NOT NULL,
    PRIMARY KEY (source, id));
CREATE TABLE IF NOT EXISTS rejected (
    source TEXT NOT NULL, position TEXT NOT NULL, reason TEXT NOT NULL, raw TEXT NOT NULL,
    PRIMARY KEY (source, position));
";

// Inserted or changed rows come back; `xmax = 0` tells an insert from an update.
const PG_UPSERT: &str = "
INSERT INTO records AS r (source, id, name, amount_cents, currency, updated_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (source, id) DO UPDATE
   SET name = EXCLUDED.name, amount_cents = EXCLUDED.amount_cents,
       currency = EXCLUDED.currency, updated_at = EXCLUDED.updated_at
 WHERE (r.name, r.amount_cents, r.currency, r.updated_at)
       IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.amount_cents, EXCLUDED.currency, EXCLUDED.updated_at)
RETURNING (xmax = 0) AS inserted";

const PG_REJECT: &str = "
INSERT INTO rejected (source, position, reason, raw) VALUES ($1, $2, $3, $4)
ON CONFLICT (source, position) DO NOTHING";

/// A PostgreSQL database; one connection (its driver task runs on the runtime), opened
/// again when it was lost (a server restart, a network cut): the next load after a lost
/// connection reconnects, behind the load stack's breaker and retry.
#[derive(Clone)]
pub struct PgSink {
    conn: Arc<String>,
    client: Arc<tokio::sync::Mutex<Option<tokio_postgres::Client>>>,
}

impl PgSink {
    /// Connect to `conn` (a `postgres://` URL or libpq `key=value` pairs; no TLS: meant
    /// for a local or tunnelled database) and create the tables.
    pub async fn connect(conn: &str) -> Result<Self, BoxError> {
        let client = Self::open(conn).await?;
        client.batch_execute(PG_SCHEMA).await?;
        Ok(Self {
            conn: Arc::new(conn.to_owned()),
            client: Arc::new(tokio::sync::Mutex::new(Some(client))),
        })
    }

    async fn open(conn: &str) -> Result<tokio_postgres::Client, BoxError> {
        // tokio-postgres's errors name the host, never the password.
        let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("cannot connect to PostgreSQL: {}", with_sources(&e)))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(error = %with_sources(&err), "postgres connection lost");
            }
        });
        Ok(client)
    }

    /// The open connection, or a new one if there is none or it was lost.
    async fn connected(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<tokio_postgres::Client>>, BoxError> {
        let mut client = self.client.lock().await;
        if client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            *client = None;
            let fresh = Self::open(&self.conn).await?;
            tracing::info!("reconnected to PostgreSQL");
            *client = Some(fresh);
        }
        Ok(client)
    }

    async fn load(&self, batch: &Batch) -> Result<LoadReport, BoxError> {
        let mut guard = self.connected().await?;
        let client = guard.as_mut().ok_or("no PostgreSQL connection")?;
        let result = pg_load(client, batch)
            .await
            .map_err(|e| BoxError::from(with_sources(&*e)));
        if result.is_err() && client.is_closed() {
            // Reconnect on the next call rather than fail every call on a dead connection.
            *guard = None;
        }
        result
    }

    async fn counts(&self, source: &str) -> Result<SinkCounts, BoxError> {
        let guard = self.connected().await?;
        let client = guard.as_ref().ok_or("no PostgreSQL connection")?;
        let count = |sql: &'static str| async {
            let n: i64 = client.query_one(sql, &[&source]).await?.get(0);
            Ok::<_, BoxError>(u64::try_from(n)?)
        };
        Ok(SinkCounts {
            records: count("SELECT COUNT(*) FROM records WHERE source = $1").await?,
            rejected: count("SELECT COUNT(*) FROM rejected WHERE source = $1").await?,
        })
    }
}

async fn pg_load(
    client: &mut tokio_postgres::Client,
    batch: &Batch,
) -> Result<LoadReport, BoxError> {
    let tx = client.transaction().await?;
    let upsert = tx.prepare(PG_UPSERT).await?;
    let reject = tx.prepare(PG_REJECT).await?;
    let mut report = LoadReport::default();
    for r in &batch.records {
        let row = tx
            .query_opt(
                &upsert,
                &[
                    &batch.source,
                    &r.id,
                    &r.name,
                    &r.amount_cents,
                    &r.currency,
                    &r.updated_at,
                ],
            )
            .await?;
        match row {
            Some(row) if row.get::<_, bool>(0) => report.inserted += 1,
            Some(_) => report.updated += 1,
            None => report.unchanged += 1,
        }
    }
    for r in &batch.rejected {
        report.rejected_inserted += tx
            .execute(&reject, &[&batch.source, &r.position, &r.reason, &r.raw])
            .await?;
    }
    tx.commit().await?;
    Ok(report)
}

/// An error and its `source()` chain on one line (tokio-postgres puts the cause there).
fn with_sources(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, amount: i64) -> Record {
        Record {
            id: id.into(),
            name: "n".into(),
            amount_cents: amount,
            currency: "EUR".into(),
            updated_at: 1,
        }
    }

    #[tokio::test]
    async fn sqlite_upserts_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::open(&SinkTarget::Sqlite(dir.path().join("t.db")))
            .await
            .unwrap();
        let batch = Batch {
            seq: 0,
            source: "s".into(),
            records: vec![record("a", 1), record("b", 2)],
            rejected: vec![RejectedRow {
                position: "p0-r2".into(),
                reason: "bad".into(),
                raw: "{}".into(),
            }],
        };
        let first = sink.load(batch.clone()).await.unwrap();
        assert_eq!((first.inserted, first.rejected_inserted), (2, 1));
        let again = sink.load(batch.clone()).await.unwrap();
        assert_eq!(
            (again.inserted, again.unchanged, again.rejected_inserted),
            (0, 2, 0)
        );
        let mut changed = batch;
        changed.records[0].amount_cents = 99;
        let third = sink.load(changed).await.unwrap();
        assert_eq!((third.updated, third.unchanged), (1, 1));
        let counts = sink.counts("s").await.unwrap();
        assert_eq!(
            counts,
            SinkCounts {
                records: 2,
                rejected: 1
            }
        );
        assert_eq!(sink.counts("other").await.unwrap(), SinkCounts::default());
    }
}
