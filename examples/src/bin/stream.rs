//! A stream consumer that loses nothing and duplicates nothing, hardened by palisade (the
//! logic is in `palisade_examples::stream`).
//!
//! Run: `cargo run -p palisade-examples --bin stream -- --events 2000 --fail-rate 0.2`;
//! replay from offset 0 with `--replay`; see `--help`. On a Redis stream shared by a
//! consumer group: `--source redis://HOST:PORT/STREAM produce` once, then any number of
//! `--source redis://HOST:PORT/STREAM --consumer NAME` processes;
//! `redrive-dead-letters` puts dead letters back. The summary goes to stdout, logs
//! (`RUST_LOG`, default `warn`) to stderr. Exit code 0 on success, 1 on an error (a bad
//! flag, an unreadable state file, a Redis key that is not a stream), with the error's
//! message on stderr.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use palisade_examples::stream::{self, Settings};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    match stream::run(settings).await {
        Ok(summary) => {
            // The summary is the program's output: stdout, so it can be piped.
            let _ = writeln!(std::io::stdout(), "{summary}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "stream: {err}");
            ExitCode::FAILURE
        }
    }
}
