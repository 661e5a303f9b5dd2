//! The consumer's durable state: its committed position in the log, and the output store
//! (accounts). Both are files written atomically (temp file, sync, rename), so a crash
//! leaves either the old or the new content. A file that cannot be read back is a
//! [`StateError`] naming it: never retried, never silently replaced.

use std::collections::{BTreeMap, BTreeSet};
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

/// What the store keeps per key: a running balance, and what makes a re-delivered event a
/// no-op: the offset of the last event applied (the file log, one consumer), or the key's
/// next sequence number (a shared stream, several consumers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The sum of the amounts applied.
    pub balance: i64,
    /// Events applied.
    pub events: u64,
    /// The offset of the last event applied.
    pub last_offset: Option<u64>,
    /// The sequence number of the key's next event to apply (events with a `seq`).
    #[serde(default)]
    pub next_seq: u64,
    /// Sequence numbers passed over because their event went to the dead-letter stream;
    /// such an event is applied when it is re-driven, after the events that followed it.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub parked: BTreeSet<u64>,
    /// An order-sensitive digest of the amounts applied, in the order applied
    /// ([`digest`]): two stores that applied the same amounts in another order differ.
    #[serde(default)]
    pub digest: u64,
}

/// The next [`Account::digest`] after applying `amount` to an account whose digest is
/// `digest` (FNV-style: multiply, then mix in the amount).
pub fn digest(digest: u64, amount: i64) -> u64 {
    (digest ^ amount as u64).wrapping_mul(0x0100_0000_01b3)
}

/// What [`Store::apply_in_order`] did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied now.
    Applied,
    /// Applied before (a re-delivery): nothing changed.
    Duplicate,
    /// An earlier event of its key is not applied yet: nothing changed, apply it later.
    Gap {
        /// The sequence number the key waits for.
        waiting_for: u64,
    },
}

/// What [`Store::park`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parked {
    /// The key's sequence now passes over the event (or already did).
    Parked,
    /// The event was applied before: it is no dead letter.
    AlreadyApplied,
    /// An earlier event of its key is not applied yet: park it later.
    NotYet {
        /// The sequence number the key waits for.
        waiting_for: u64,
    },
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
        self.locked(|accounts| {
            for event in batch {
                let account = accounts.entry(event.key.clone()).or_default();
                if account.last_offset.is_some_and(|last| event.offset <= last) {
                    self.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                credit(account, event.amount);
                account.last_offset = Some(event.offset);
                self.applied.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    }

    /// Apply a batch from a stream that several consumers share, idempotently and in each
    /// key's order: an event is applied only when its `seq` is its key's next one (or a
    /// parked one, re-driven from the dead letters); one below is a re-delivery
    /// ([`Applied::Duplicate`]); one above waits for the events before it
    /// ([`Applied::Gap`]). Within the batch a key's events are taken in `seq` order.
    /// Returns what happened to each event, in the batch's order. The read-modify-write
    /// runs under an exclusive file lock, so consumers in several processes can share the
    /// store. Blocking.
    pub fn apply_in_order(&self, batch: &[Event]) -> Result<Vec<Applied>, BoxError> {
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by(|&a, &b| (&batch[a].key, batch[a].seq).cmp(&(&batch[b].key, batch[b].seq)));
        self.locked(|accounts| {
            let mut outcomes = vec![Applied::Duplicate; batch.len()];
            for i in order {
                let event = &batch[i];
                let seq = event.seq.ok_or_else(|| {
                    format!(
                        "event {} of {} has no sequence number",
                        event.offset, event.key
                    )
                })?;
                let account = accounts.entry(event.key.clone()).or_default();
                outcomes[i] = if account.parked.remove(&seq) {
                    Applied::Applied
                } else if seq < account.next_seq {
                    Applied::Duplicate
                } else if seq == account.next_seq {
                    account.next_seq += 1;
                    Applied::Applied
                } else {
                    Applied::Gap {
                        waiting_for: account.next_seq,
                    }
                };
                match outcomes[i] {
                    Applied::Applied => {
                        credit(account, event.amount);
                        account.last_offset = Some(event.offset);
                        self.applied.fetch_add(1, Ordering::Relaxed);
                    }
                    Applied::Duplicate => {
                        self.skipped.fetch_add(1, Ordering::Relaxed);
                    }
                    Applied::Gap { .. } => {}
                }
            }
            Ok(outcomes)
        })
    }

    /// Pass over event `seq` of `key` (it goes to the dead-letter stream), so the key's
    /// later events are not held up behind it; it is applied if it comes back (re-driven).
    /// Idempotent. Blocking.
    pub fn park(&self, key: &str, seq: u64) -> Result<Parked, BoxError> {
        self.locked(|accounts| {
            let account = accounts.entry(key.to_owned()).or_default();
            Ok(if account.parked.contains(&seq) {
                Parked::Parked
            } else if seq < account.next_seq {
                Parked::AlreadyApplied
            } else if seq == account.next_seq {
                account.parked.insert(seq);
                account.next_seq += 1;
                Parked::Parked
            } else {
                Parked::NotYet {
                    waiting_for: account.next_seq,
                }
            })
        })
    }

    /// Load, change and rewrite the accounts under an exclusive lock on `<file>.lock`
    /// (held across processes). Blocking.
    fn locked<T>(
        &self,
        change: impl FnOnce(&mut Accounts) -> Result<T, BoxError>,
    ) -> Result<T, BoxError> {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let lock_path = self.path.with_file_name(name);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open the lock file {}: {e}", lock_path.display()))?;
        lock.lock()
            .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
        let mut accounts = self.load()?;
        let out = change(&mut accounts)?;
        write_atomically(&self.path, &serde_json::to_vec_pretty(&accounts)?)?;
        // The lock is released when `lock` closes.
        Ok(out)
    }
}

fn credit(account: &mut Account, amount: i64) {
    account.balance += amount;
    account.events += 1;
    account.digest = digest(account.digest, amount);
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

    fn in_order_fold(events: &[Event]) -> BTreeMap<String, (i64, u64, u64)> {
        let mut out = BTreeMap::new();
        for e in events {
            let v = out.entry(e.key.clone()).or_insert((0, 0, 0));
            v.0 += e.amount;
            v.1 += 1;
            v.2 = digest(v.2, e.amount);
        }
        out
    }

    #[test]
    fn a_key_waits_for_its_earlier_events_and_passes_over_parked_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("accounts.json"));
        let ev = |seq: u64, amount: i64| Event {
            offset: seq,
            key: "a".into(),
            amount,
            seq: Some(seq),
        };
        assert_eq!(
            store.apply_in_order(&[ev(1, 10)]).unwrap(),
            [Applied::Gap { waiting_for: 0 }]
        );
        assert_eq!(
            store.park("a", 2).unwrap(),
            Parked::NotYet { waiting_for: 0 }
        );
        assert_eq!(
            store
                .apply_in_order(&[ev(1, 10), ev(0, 5), ev(0, 5)])
                .unwrap(),
            [Applied::Applied, Applied::Applied, Applied::Duplicate]
        );
        assert_eq!(store.park("a", 1).unwrap(), Parked::AlreadyApplied);
        assert_eq!(store.park("a", 2).unwrap(), Parked::Parked);
        assert_eq!(store.park("a", 2).unwrap(), Parked::Parked, "idempotent");
        // Event 3 no longer waits for the parked 2; 2 is applied when it comes back, once.
        assert_eq!(
            store.apply_in_order(&[ev(3, 1)]).unwrap(),
            [Applied::Applied]
        );
        assert_eq!(
            store.apply_in_order(&[ev(2, 100), ev(2, 100)]).unwrap(),
            [Applied::Applied, Applied::Duplicate]
        );
        let a = &store.load().unwrap()["a"];
        assert_eq!((a.balance, a.events, a.next_seq), (116, 4, 4));
        assert!(a.parked.is_empty());
        let missing = Event {
            seq: None,
            ..ev(4, 1)
        };
        assert!(store.apply_in_order(&[missing]).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Deliveries in any order, with any re-deliveries, in any batches: once every
        /// event came at least once and the gaps were retried, each key holds exactly its
        /// events' sum and count, applied in its order (the digest), and nothing twice.
        #[test]
        fn any_delivery_order_applies_each_event_once_in_key_order(
            n in 1u64..60,
            keys in 1u64..5,
            seed in proptest::prelude::any::<u64>(),
            order in proptest::collection::vec(proptest::prelude::any::<u16>(), 0..120),
            cuts in proptest::collection::vec(1usize..8, 1..40),
        ) {
            let events: Vec<Event> = crate::stream::log::generate(n, keys, seed).collect();
            // Every event once, then re-deliveries, shuffled by `order`.
            let mut deliveries: Vec<Event> = events.clone();
            deliveries.extend(order.iter().map(|i| events[usize::from(*i) % events.len()].clone()));
            let mut rng = fastrand::Rng::with_seed(seed);
            rng.shuffle(&mut deliveries);
            let dir = tempfile::tempdir().unwrap();
            let store = Store::new(dir.path().join("accounts.json"));
            let mut waiting: Vec<Event> = Vec::new();
            let mut cut = cuts.iter().cycle();
            while !deliveries.is_empty() {
                let take = (*cut.next().unwrap()).min(deliveries.len());
                let mut batch: Vec<Event> = std::mem::take(&mut waiting);
                batch.extend(deliveries.drain(..take));
                let outcomes = store.apply_in_order(&batch).unwrap();
                for (e, o) in batch.into_iter().zip(outcomes) {
                    if matches!(o, Applied::Gap { .. }) {
                        waiting.push(e);
                    }
                }
            }
            for _ in 0..=n {
                if waiting.is_empty() {
                    break;
                }
                let batch = std::mem::take(&mut waiting);
                let outcomes = store.apply_in_order(&batch).unwrap();
                for (e, o) in batch.into_iter().zip(outcomes) {
                    if matches!(o, Applied::Gap { .. }) {
                        waiting.push(e);
                    }
                }
            }
            proptest::prop_assert!(waiting.is_empty(), "gaps left: {waiting:?}");
            let got: BTreeMap<String, (i64, u64, u64)> = store
                .load()
                .unwrap()
                .into_iter()
                .map(|(k, a)| (k, (a.balance, a.events, a.digest)))
                .collect();
            proptest::prop_assert_eq!(got, in_order_fold(&events));
            proptest::prop_assert_eq!(store.applied(), n);
        }
    }
}
