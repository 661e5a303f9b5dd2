//! Write Prometheus rules and a Grafana dashboard from an SLO file.
//!
//! Run: `cargo run -p palisade-examples --bin slo-gen` (reads `examples/ops/slo.toml`,
//! writes `slo-rules.yml` and `slo-dashboard.json` next to it). `--check` writes nothing
//! and exits 1 when a file is stale. See `palisade_examples::slo` for the file's format.
//!
//! ```text
//! slo-gen --spec my-slos.toml --out-dir ops/   # your own dependencies
//! slo-gen --check                              # in CI: are the committed files current?
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use palisade_examples::slo::SloSpec;

/// Write Prometheus recording and alert rules and a Grafana dashboard from SLO targets.
#[derive(Debug, Parser)]
#[command(name = "slo-gen", version)]
struct Cli {
    /// The SLO file (TOML).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/ops/slo.toml"))]
    spec: PathBuf,
    /// Where to write `slo-rules.yml` and `slo-dashboard.json` (default: the spec's folder).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Write nothing; exit 1 when a generated file differs from what is on disk.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "slo-gen: {err}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<bool, String> {
    let text = std::fs::read_to_string(&cli.spec)
        .map_err(|e| format!("{}: cannot read: {e}", cli.spec.display()))?;
    let spec = SloSpec::from_toml(&text).map_err(|e| format!("{}: {e}", cli.spec.display()))?;
    let out_dir = cli.out_dir.unwrap_or_else(|| {
        cli.spec
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    let files = [
        ("slo-rules.yml", spec.rules_yaml()),
        ("slo-dashboard.json", spec.dashboard_json()),
    ];
    let mut stdout = std::io::stdout();
    let mut current = true;
    for (name, content) in files {
        let path = out_dir.join(name);
        let on_disk = std::fs::read_to_string(&path).ok();
        if on_disk.as_deref() == Some(content.as_str()) {
            let _ = writeln!(stdout, "{}: up to date", path.display());
            continue;
        }
        if cli.check {
            let _ = writeln!(stdout, "{}: stale", path.display());
            current = false;
        } else {
            std::fs::write(&path, content)
                .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
            let _ = writeln!(stdout, "{}: written", path.display());
        }
    }
    Ok(current)
}
