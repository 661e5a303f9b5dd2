//! The consumer's durable state: its committed position in the log, and the output store
//! (accounts). Both are files written atomically (temp file, sync, rename), so a crash
//! leaves either the old or the new content. A file that cannot be read back is a
//! [`StateError`] naming it: never retried, never silently replaced.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use palisade::BoxError;
use serde::{Deserialize, Serialize};

use super::log::{Event, Position};

/// A state file is unreadable (corrupt, or not ours): retrying cannot help, an operator
/// must look. Says which file, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the state file {} is unreadable ({}); restore it, or rebuild the output from the \
             log with --replay",
            self.path.display(),
            self.reason
        )
    }
}

impl std::error::Error for StateError {}

/// Write `bytes` to `path` so that a crash leaves either the old or the new content.
/// Blocking.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BoxError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut file = File::create(&tmp).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, BoxError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display()).into()),
    }
}

// ===== Offsets =====

/// The consumer's committed position: the next event to process, and where its line
/// starts in the log (`"<offset> <byte>"`; an older file holds the offset alone).
#[derive(Debug, Clone)]
pub struct Offsets {
    path: PathBuf,
}

impl Offsets {
    /// The offset file at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The committed position (the log's start when nothing was committed). Blocking.
    pub fn load(&self) -> Result<Position, BoxError> {
        let Some(bytes) = read_optional(&self.path)? else {
            return Ok(Position::default());
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut parts = text.split_whitespace().map(str::parse::<u64>);
        let corrupt = || StateError {
            path: self.path.clone(),
            reason: format!("expected \"<offset> <byte>\", found {:?}", text.trim()),
        };
        let offset = parts.next().and_then(Result::ok).ok_or_else(corrupt)?;
        let byte = match parts.next() {
            Some(Ok(byte)) => byte,
            Some(Err(_)) => return Err(corrupt().into()),
            None => 0,
        };
        Ok(Position { offset, byte })
    }

    /// Commit `at` atomically. Blocking.
    pub fn commit(&self, at: Position) -> Result<(), BoxError> {
        write_atomically(&self.path, format!("{} {}", at.offset, at.byte).as_bytes())
    }
}

// ===== the accounts store =====

/// What the store keeps per key: a running balance, and the offset of the last event it
/// applied, which makes re-delivered events no-ops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The sum of the amounts applied.
    pub balance: i64,
    /// Events applied.
    pub events: u64,
    /// The offset of the last event applied.
    pub last_offset: Option<u64>,
}

/// Every account, by key.
pub type Accounts = BTreeMap<String, Account>;

/// The output store: a file of accounts, rewritten atomically per batch. Clones share the
/// counters.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
    applied: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
}

impl Store {
    /// The store at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            applied: Arc::default(),
            skipped: Arc::default(),
        }
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Events applied by this store value and its clones.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Re-delivered events recognised and skipped.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Every account (none when the file does not exist yet). A file that does not parse
    /// is a [`StateError`]. Blocking.
    pub fn load(&self) -> Result<Accounts, BoxError> {
        match read_optional(&self.path)? {
            None => Ok(Accounts::new()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                StateError {
                    path: self.path.clone(),
                    reason: e.to_string(),
                }
                .into()
            }),
        }
    }

    /// Replace the accounts with none (the start of a replay). Blocking.
    pub fn clear(&self) -> Result<(), BoxError> {
        write_atomically(&self.path, b"{}")
    }

    /// Apply a batch idempotently: an event at or below a key's last applied offset was
    /// applied before (a re-delivery after a crash) and changes nothing. Blocking.
    pub fn apply(&self, batch: &[Event]) -> Result<(), BoxError> {
        let mut accounts = self.load()?;
        for event in batch {
            let account = accounts.entry(event.key.clone()).or_default();
            if account.last_offset.is_some_and(|last| event.offset <= last) {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            account.balance += event.amount;
            account.events += 1;
            account.last_offset = Some(event.offset);
            self.applied.fetch_add(1, Ordering::Relaxed);
        }
        write_atomically(&self.path, &serde_json::to_vec_pretty(&accounts)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_state_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("accounts.json"));
        assert!(store.load().unwrap().is_empty());
        fs::write(store.path(), b"{\"account-1\": {\"bal").unwrap();
        let err = store.load().unwrap_err();
        let state = err.downcast_ref::<StateError>().expect("a StateError");
        assert_eq!(state.path, store.path());
        assert!(err.to_string().contains("accounts.json"), "{err}");
        assert!(store.apply(&[]).is_err());

        let offsets = Offsets::new(dir.path().join("consumer.offset"));
        assert_eq!(offsets.load().unwrap(), Position::default());
        offsets
            .commit(Position {
                offset: 7,
                byte: 99,
            })
            .unwrap();
        assert_eq!(
            offsets.load().unwrap(),
            Position {
                offset: 7,
                byte: 99
            }
        );
        fs::write(dir.path().join("consumer.offset"), b"12").unwrap();
        assert_eq!(
            offsets.load().unwrap(),
            Position {
                offset: 12,
                byte: 0
            }
        );
        fs::write(dir.path().join("consumer.offset"), b"x 1").unwrap();
        let err = offsets.load().unwrap_err();
        assert!(err.is::<StateError>(), "{err}");
        assert!(err.to_string().contains("consumer.offset"), "{err}");
    }
}
