//! The `etl` pipeline: extract pages of JSON records from a flaky HTTP API, validate and
//! de-duplicate them, load them idempotently in batches into SQLite or PostgreSQL, and
//! reconcile; every stage hardened by palisade and observable.
//!
//! The stages are tower services with clean seams, so tests drive them one by one or
//! through [`run`]:
//!
//! | module | what |
//! |---|---|
//! | [`source`] | the built-in paginated API (axum), made flaky by palisade-chaos |
//! | [`client`] | the HTTP client (hyper-util), a `Service<u64>` answering pages |
//! | [`transform`] | schema validation ([`record`]) and de-duplication by key |
//! | [`sink`] | idempotent batched upserts: SQLite (default) or PostgreSQL |
//! | [`journal`] | where batches spill while the sink is down; replayed when it is back; one sink, one process |
//! | [`redact`] | passwords out of logs, errors and the summary |
//! | [`stack`] | the palisade stacks around the client and the sink |
//! | [`stats`] | counters, latencies, reconciliation and the summary table |
//! | [`config`] | defaults, TOML file, flags and env vars |
//! | [`telemetry`] | logs (text or JSON) and the Prometheus endpoint |
//!
//! # Pointing it at a real API
//!
//! `--source-url http://host:port` replaces the built-in API. The source must answer
//! `GET {url}/records?page=N` (pages from 0) with
//! `{"page": N, "next": N+1 or null, "total_rows": T, "rows": [{...}, ...]}`, where a valid
//! row is `{"id": string, "name": string, "amount": number (2 decimals, >= 0),
//! "currency": "ABC", "updated_at": integer}`; `429` with `Retry-After` (seconds) and `5xx`
//! are retried. Rows are stored under the source URL, so reconciliation counts per source.
//! A malformed URL (or `https`, which this example client does not speak) is refused
//! before the run starts, not retried.
//!
//! # Guarantees, and how they are checked
//!
//! - **No valid record lost, none loaded twice.** Pages are fetched in order and a page
//!   the client stack gives up on is fetched again (after the breaker's `retry_after`)
//!   until the run's deadline; sink writes are upserts keyed by `(source, id)` in one
//!   transaction per batch; a batch the sink refuses is synced to the journal before it
//!   counts as handled, and leaves the journal only after the sink committed it.
//! - **One journal per sink, one run per journal.** The journal records the sink it
//!   belongs to and refuses another; a run holds an OS lock on it, so a second run on the
//!   same sink is refused with the holder's pid. A torn last line (a crash mid-append) is
//!   moved aside before anything is appended.
//! - **The sink comes back.** A PostgreSQL connection lost to a server restart is opened
//!   again on the next write, behind the load stack's retry and breaker; meanwhile batches
//!   spill to the journal.
//! - **A summary, always.** Once loading started, a run ends with a summary, also when it
//!   failed (the reasons are listed in it and fail reconciliation).
//! - **No secret printed.** Passwords in the sink (URL or `key=value` form) are redacted in
//!   logs, errors and the summary ([`redact`]).
//! - **A re-run changes nothing**: the summary shows `inserted 0, updated 0`.
//! - **Reconciliation** (the summary's last block): the last page was reached, extracted =
//!   the source's declared count = valid + rejected + duplicates, the sink holds exactly
//!   the valid records and the rejected rows of this source, and the journal is empty.
//!
//! ```no_run
//! use palisade_examples::etl::{self, EtlConfig};
//!
//! # #[tokio::main] async fn main() -> Result<(), palisade::BoxError> {
//! let config = EtlConfig { sink: "demo/etl.sqlite".into(), ..EtlConfig::default() };
//! let summary = etl::run(&config).await?;
//! assert!(summary.ok(), "{summary}");
//! # Ok(()) }
//! ```

pub mod client;
pub mod config;
pub mod journal;
mod pipeline;
pub mod record;
pub mod redact;
pub mod sink;
pub mod source;
pub mod stack;
pub mod stats;
pub mod telemetry;
pub mod transform;

pub use config::{ChaosScenario, Cli, DatasetConfig, EtlConfig, ResilienceConfig, SinkTarget};
pub use pipeline::{progress_bar, run, run_with_progress};
pub use stats::Summary;
