//! Logs (tracing, text or JSON) and the Prometheus endpoint.

use std::net::SocketAddr;

use std::io::{IsTerminal, Write};

use indicatif::ProgressBar;
use palisade::BoxError;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Install the global `tracing` subscriber: human-readable text, or JSON lines with
/// `json`, on stderr; the level from `RUST_LOG` (default `info`). Log lines are written
/// with `progress` suspended, so they do not tear the progress bar. Colour only when
/// stderr is a terminal and `NO_COLOR` is not set, so piped logs carry no escape codes.
pub fn init_logs(json: bool, progress: ProgressBar) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_colour())
        .with_writer(LogWriter { progress });
    // A second call (e.g. from tests) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Whether log lines may be coloured: stderr is a terminal and `NO_COLOR` is unset.
pub fn use_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Serve Prometheus metrics at `http://{addr}/metrics`: see
/// [`crate::telemetry::serve_metrics`], where the exporter's setup lives.
pub fn serve_metrics(addr: SocketAddr) -> Result<SocketAddr, BoxError> {
    crate::telemetry::serve_metrics(addr)
}

/// Makes one [`LogLine`] per log event.
#[derive(Debug, Clone)]
struct LogWriter {
    progress: ProgressBar,
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine {
            progress: self.progress.clone(),
            buf: Vec::with_capacity(256),
        }
    }
}

/// Buffers one event's output and writes it to stderr when dropped, with the progress bar
/// suspended (cleared, then redrawn below the line).
#[derive(Debug)]
struct LogLine {
    progress: ProgressBar,
    buf: Vec<u8>,
}

impl Write for LogLine {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // Nowhere to report a failed log write; dropping the line is all we can do.
        self.progress.suspend(|| {
            let _ = std::io::stderr().write_all(&buf);
        });
    }
}
