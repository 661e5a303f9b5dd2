//! The incident scorecard: every stack through every incident, on virtual time.
//!
//! `cargo run --release -p palisade-benches --bin scorecard [OUT_DIR]` prints the markdown
//! table, writes it to `OUT_DIR/scorecard.md` and draws `OUT_DIR/<incident>.png` (default
//! `OUT_DIR`: the crate's `scorecard/` folder).
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: the table on stdout, progress and errors on stderr"
)]

use std::path::PathBuf;
use std::process::ExitCode;

use palisade_benches::scorecard::{self, StackKind};

fn main() -> ExitCode {
    let out = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scorecard"),
        PathBuf::from,
    );
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    let mut rows = Vec::new();
    for incident in scorecard::incidents() {
        let these: Vec<_> = StackKind::ALL
            .iter()
            .map(|s| scorecard::run_incident(&incident, *s))
            .collect();
        let png = out.join(format!("{}.png", incident.name));
        if let Err(e) = scorecard::draw(&these, &png) {
            eprintln!("cannot draw {}: {e}", png.display());
            return ExitCode::FAILURE;
        }
        eprintln!("{}: done", incident.name);
        rows.extend(these);
    }
    let table = scorecard::markdown(&rows);
    let md = out.join("scorecard.md");
    if let Err(e) = std::fs::write(&md, &table) {
        eprintln!("cannot write {}: {e}", md.display());
        return ExitCode::FAILURE;
    }
    println!("{table}");
    eprintln!("wrote {} and one PNG per incident", md.display());
    ExitCode::SUCCESS
}
