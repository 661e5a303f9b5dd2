//! Runnable example pipelines hardened by [palisade](https://docs.rs/palisade).
//!
//! The binaries in `src/bin/` are thin: the pipelines live in this library so their
//! tests can drive every stage. The main one is [`etl`]:
//!
//! ```text
//! cargo run --release -p palisade-examples --bin etl
//! ```
#![forbid(unsafe_code)]

pub mod etl;
