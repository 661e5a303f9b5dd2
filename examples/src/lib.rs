//! Runnable example pipelines hardened by [palisade](https://docs.rs/palisade).
//!
//! The binaries in `src/bin/` are thin: the pipelines live in this library so their
//! tests can drive every stage: [`etl`] and [`stream`] (an exactly-once consumer). The
//! main one is [`etl`]
//! (`cargo run --release -p palisade-examples --bin etl`): a small run of it, against its
//! built-in flaky API on a loopback port, into a throw-away SQLite file:
//!
//! ```
//! use palisade_examples::etl::{self, ChaosScenario, DatasetConfig, EtlConfig};
//!
//! # #[tokio::main] async fn main() -> Result<(), palisade::BoxError> {
//! let dir = std::env::temp_dir().join(format!("palisade-doc-{}", std::process::id()));
//! let config = EtlConfig {
//!     sink: dir.join("etl.sqlite").to_string_lossy().into_owned(),
//!     dataset: DatasetConfig { rows: 200, page_size: 50, ..DatasetConfig::default() },
//!     chaos: Some(ChaosScenario::none()),
//!     metrics_addr: None,
//!     progress: false,
//!     ..EtlConfig::default()
//! };
//! let summary = etl::run(&config).await?;
//! assert!(summary.ok(), "reconciliation failed:\n{summary}");
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod etl;
pub mod slo;
pub mod stream;
pub mod telemetry;
