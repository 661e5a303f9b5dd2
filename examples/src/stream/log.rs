//! The durable event log: an append-only file of JSON lines; an event's offset is its
//! line number. A reader seeks to a committed byte position instead of re-reading the log
//! from its first line, so consuming a log is linear, not quadratic.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use palisade::BoxError;
use serde::{Deserialize, Serialize};

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its position in the log (its line number, from 0).
    pub offset: u64,
    /// The account it moves.
    pub key: String,
    /// The amount it adds (negative: takes).
    pub amount: i64,
    /// Its place among its key's events (0, 1, 2, ...), set by a producer that runs beside
    /// several consumers: the store applies a key's events in this order
    /// ([`Store::apply_in_order`](super::Store::apply_in_order)). `None` in the file log,
    /// whose single consumer reads in offset order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Where a reader stands: the next event's offset and the byte where its line starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    /// The next event's offset.
    pub offset: u64,
    /// The byte where the next event's line starts.
    pub byte: u64,
}

/// The deterministic events a producer writes: `count` events over `keys` accounts
/// (`account-0` ...), amounts from -500 to 1000, each with its offset and its key's
/// sequence number. The same `seed` gives the same events, so a test can fold them
/// independently of the consumer.
pub fn generate(count: u64, keys: u64, seed: u64) -> impl Iterator<Item = Event> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut next_seq: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    (0..count).map(move |offset| {
        let k = rng.u64(0..keys.max(1));
        let seq = next_seq.entry(k).or_insert(0);
        let event = Event {
            offset,
            key: format!("account-{k}"),
            amount: rng.i64(-500..=1000),
            seq: Some(*seq),
        };
        *seq += 1;
        event
    })
}

/// The log file.
#[derive(Debug, Clone)]
pub struct Log {
    path: PathBuf,
}

impl Log {
    /// The log at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `count` deterministic events over `keys` keys, streamed to disk (only if the
    /// log does not exist: a log is never rewritten). Written to a temporary file and
    /// renamed, so a crash leaves no half log. Blocking.
    pub fn produce_if_missing(&self, count: u64, keys: u64, seed: u64) -> Result<(), BoxError> {
        if self.path.exists() {
            return Ok(());
        }
        let tmp = self.path.with_extension("log.tmp");
        let err = |e: std::io::Error| format!("cannot write the event log {}: {e}", tmp.display());
        let mut out = BufWriter::new(File::create(&tmp).map_err(err)?);
        for mut event in generate(count, keys, seed) {
            // One consumer reads the file in offset order: no per-key sequence needed.
            event.seq = None;
            serde_json::to_writer(&mut out, &event)?;
            out.write_all(b"\n").map_err(err)?;
        }
        out.flush().map_err(err)?;
        out.get_ref().sync_all().map_err(err)?;
        drop(out);
        fs::rename(&tmp, &self.path)
            .map_err(|e| format!("cannot create the event log {}: {e}", self.path.display()))?;
        Ok(())
    }

    /// A reader at `at`. The position is checked: the line at `at.byte` must hold event
    /// `at.offset` (or be the end of the log). A position that does not match (an older
    /// offset file that had no byte position, a log replaced behind the consumer's back)
    /// is found again by reading from the start, once. Blocking.
    pub fn reader_at(&self, at: Position) -> Result<LogReader, BoxError> {
        let mut reader = LogReader::open(&self.path)?;
        if at.byte > 0 && reader.seek(at)? {
            return Ok(reader);
        }
        let mut reader = LogReader::open(&self.path)?;
        reader.skip_to(at.offset)?;
        Ok(reader)
    }
}

/// Reads a log forward from a position.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    file: BufReader<File>,
    at: Position,
    line: String,
}

impl LogReader {
    fn open(path: &Path) -> Result<Self, BoxError> {
        let file = File::open(path)
            .map_err(|e| format!("cannot open the event log {}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: BufReader::new(file),
            at: Position::default(),
            line: String::new(),
        })
    }

    /// Where the reader stands.
    pub fn position(&self) -> Position {
        self.at
    }

    /// Jump to `at`; whether the log agrees that event `at.offset` starts there.
    fn seek(&mut self, at: Position) -> Result<bool, BoxError> {
        self.file.seek(SeekFrom::Start(at.byte))?;
        self.at = at;
        match self.peek_offset() {
            Ok(Some(offset)) => Ok(offset == at.offset),
            // The end of the log: right only if the byte is the log's length.
            Ok(None) => Ok(at.byte == self.file.get_ref().metadata()?.len()),
            // Not the start of a line: the position is wrong, not the log.
            Err(_) => Ok(false),
        }
    }

    /// The next event's offset without consuming it.
    fn peek_offset(&mut self) -> Result<Option<u64>, BoxError> {
        let start = self.at.byte;
        let event = self.next_line()?;
        self.file.seek(SeekFrom::Start(start))?;
        self.at.byte = start;
        Ok(event.map(|e| e.offset))
    }

    /// Read events until the next is `offset` (from the start of the log).
    fn skip_to(&mut self, offset: u64) -> Result<(), BoxError> {
        while self.at.offset < offset {
            if self.read(1)?.is_empty() {
                return Err(format!(
                    "the event log {} ends at offset {} but the committed offset is {offset}",
                    self.path.display(),
                    self.at.offset
                )
                .into());
            }
        }
        Ok(())
    }

    /// Parse the next line (without checking its offset); `None` at the end.
    fn next_line(&mut self) -> Result<Option<Event>, BoxError> {
        self.line.clear();
        let n = self.file.read_line(&mut self.line)?;
        if n == 0 {
            return Ok(None);
        }
        let event = serde_json::from_str(self.line.trim_end()).map_err(|e| {
            format!(
                "the event log {} is damaged at offset {} (byte {}): {e}",
                self.path.display(),
                self.at.offset,
                self.at.byte
            )
        })?;
        self.at.byte += n as u64;
        Ok(Some(event))
    }

    /// The next events, at most `max`; an empty batch at the end of the log. Blocking.
    pub fn read(&mut self, max: usize) -> Result<Vec<Event>, BoxError> {
        let mut events = Vec::with_capacity(max.min(4096));
        while events.len() < max {
            let Some(event) = self.next_line()? else {
                break;
            };
            if event.offset != self.at.offset {
                return Err(format!(
                    "the event log {} holds offset {} where {} belongs",
                    self.path.display(),
                    event.offset,
                    self.at.offset
                )
                .into());
            }
            self.at.offset += 1;
            events.push(event);
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_resumes_at_a_committed_position_without_rereading() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new(dir.path().join("events.log"));
        log.produce_if_missing(100, 4, 1).unwrap();
        let mut reader = log.reader_at(Position::default()).unwrap();
        let first = reader.read(30).unwrap();
        assert_eq!(first.len(), 30);
        let at = reader.position();
        assert_eq!(at.offset, 30);

        let mut resumed = log.reader_at(at).unwrap();
        let next = resumed.read(1000).unwrap();
        assert_eq!(next.first().map(|e| e.offset), Some(30));
        assert_eq!(next.len(), 70);
        assert!(resumed.read(10).unwrap().is_empty());

        // An offset without a byte position (an older offset file) is found by scanning.
        let mut scanned = log
            .reader_at(Position {
                offset: 30,
                byte: 0,
            })
            .unwrap();
        assert_eq!(scanned.read(1).unwrap()[0].offset, 30);
        // A wrong byte position is detected and corrected.
        let mut wrong = log
            .reader_at(Position {
                offset: 30,
                byte: at.byte + 5,
            })
            .unwrap();
        assert_eq!(wrong.read(1).unwrap()[0].offset, 30);
        // The end of the log is a valid position.
        let end = resumed.position();
        assert!(log.reader_at(end).unwrap().read(5).unwrap().is_empty());
        // Past the end is an error naming the log.
        let err = log
            .reader_at(Position {
                offset: 101,
                byte: 0,
            })
            .unwrap_err();
        assert!(err.to_string().contains("events.log"), "{err}");
    }
}
