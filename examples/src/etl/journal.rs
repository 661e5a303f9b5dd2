//! The local journal: where batches spill while the sink is down, one JSON line each,
//! replayed in order when the sink is back.
//!
//! - **One sink.** The first line names the sink the journal belongs to (its identity,
//!   never a password); opening it for another sink is refused, so batches spilled for one
//!   database are never replayed into another.
//! - **One process.** A run holds an exclusive lock on `<journal>.lock` (an OS file lock,
//!   released when the process exits, even by `kill -9`); a second run on the same journal
//!   is refused with a message saying who holds it.
//! - **No loss.** A batch is acknowledged as spilled only after its line is written and
//!   synced. A torn tail (a crash mid-append) was never acknowledged: before anything is
//!   appended it is moved to `<journal>.torn-<time>` and cut off, so the next line starts on
//!   a line of its own. A damaged line *before* a good one is not a torn tail: the journal is
//!   refused rather than a batch skipped.
//! - **No duplicates.** Replay goes through the sink's idempotent upserts, and a batch
//!   leaves the journal only after the sink committed it (the rest is rewritten atomically:
//!   temp file, sync, rename).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade::BoxError;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::sink::Batch;

/// The journal's first line.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    /// Format version.
    journal: u32,
    /// The identity of the sink the batches belong to.
    sink: String,
}

/// A journal file; clones share it (and its locks).
#[derive(Debug, Clone)]
pub struct Journal {
    path: Arc<PathBuf>,
    sink: Arc<String>,
    lock: Arc<Mutex<()>>,
    /// Held for the journal's life: the OS lock on `<journal>.lock`.
    _process_lock: Arc<File>,
}

impl Journal {
    /// Open the journal at `path` for the sink `sink` (an identity such as
    /// [`SinkTarget::identity`](super::SinkTarget::identity)): lock it against other
    /// processes, check that it belongs to `sink`, and cut off a torn tail. The file is
    /// created on first append, its directory now. Blocking: call it off the runtime or
    /// before it matters.
    pub fn open(path: &Path, sink: &str) -> Result<Self, BoxError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!(
                    "cannot create the journal's directory {}: {e}",
                    dir.display()
                )
            })?;
        }
        let process_lock = lock_process(path)?;
        let journal = Self {
            path: Arc::new(path.to_path_buf()),
            sink: Arc::new(sink.to_owned()),
            lock: Arc::new(Mutex::new(())),
            _process_lock: Arc::new(process_lock),
        };
        let text = read_text(path)?;
        journal.parse(&text)?;
        repair_torn_tail(path, true)?;
        Ok(journal)
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `batch` and sync it to disk; only then is the batch acknowledged.
    pub async fn append(&self, batch: &Batch) -> Result<(), BoxError> {
        let mut line = serde_json::to_vec(batch)?;
        line.push(b'\n');
        let header = self.header_line()?;
        let _guard = self.lock.lock().await;
        let path = Arc::clone(&self.path);
        tokio::task::spawn_blocking(move || -> Result<(), BoxError> {
            // A failed write earlier in this run may have left a partial line.
            repair_torn_tail(&path, false)?;
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&*path)
                .map_err(|e| format!("cannot open the journal {}: {e}", path.display()))?;
            if file.metadata()?.len() == 0 {
                file.write_all(&header)?;
            }
            file.write_all(&line)
                .and_then(|()| file.sync_data())
                .map_err(|e| format!("cannot write the journal {}: {e}", path.display()))?;
            Ok(())
        })
        .await?
    }

    /// The batches waiting for replay, oldest first.
    pub async fn pending(&self) -> Result<Vec<Batch>, BoxError> {
        let _guard = self.lock.lock().await;
        self.read().await
    }

    async fn read(&self) -> Result<Vec<Batch>, BoxError> {
        let path = Arc::clone(&self.path);
        let text = tokio::task::spawn_blocking(move || read_text(&path)).await??;
        self.parse(&text)
    }

    /// The batches of a journal's text, after checking its header. A last line without
    /// its newline, or damaged lines at the very end, are a torn tail: never acknowledged,
    /// left out. A damaged line followed by a good one is an error.
    fn parse(&self, text: &str) -> Result<Vec<Batch>, BoxError> {
        let path = self.path.display();
        let complete = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        let mut lines = complete
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, first)) = lines.next() else {
            return Ok(Vec::new());
        };
        match serde_json::from_str::<Header>(first) {
            Ok(header) if header.sink == *self.sink => {}
            Ok(header) => {
                return Err(format!(
                    "the journal {path} belongs to the sink {}, not to {}: its batches must \
                     not be loaded here. Run against that sink to replay it, or give this sink \
                     its own journal (--journal)",
                    header.sink, self.sink
                )
                .into());
            }
            Err(_) => {
                return Err(format!(
                    "the journal {path} does not start with a sink header (an older or foreign \
                     file); it cannot be told which sink its batches belong to. Move it away \
                     and replay it by hand, or give this run another --journal"
                )
                .into());
            }
        }
        let mut batches = Vec::new();
        let mut damaged: Option<usize> = None;
        for (n, line) in lines {
            match serde_json::from_str(line) {
                Ok(batch) => {
                    if let Some(bad) = damaged {
                        return Err(format!(
                            "the journal {path} has a damaged line {} before good ones; \
                             refusing to skip a batch that may have been acknowledged. \
                             Repair or move the file",
                            bad + 1
                        )
                        .into());
                    }
                    batches.push(batch);
                }
                Err(_) => {
                    damaged.get_or_insert(n);
                }
            }
        }
        Ok(batches)
    }

    /// Replay every pending batch through `load`, in order, stopping at the first
    /// failure; the batches loaded leave the journal. Returns the loaded batches' results
    /// and the first error, if any.
    pub async fn replay<F, Fut, T>(&self, mut load: F) -> Result<Replayed<T>, BoxError>
    where
        F: FnMut(Batch) -> Fut,
        Fut: Future<Output = Result<T, BoxError>>,
    {
        let _guard = self.lock.lock().await;
        let pending = self.read().await?;
        let mut replayed = Replayed {
            loaded: Vec::new(),
            remaining: 0,
            error: None,
        };
        let total = pending.len();
        let mut rest = pending.into_iter();
        for batch in rest.by_ref() {
            match load(batch.clone()).await {
                Ok(out) => replayed.loaded.push(out),
                Err(err) => {
                    replayed.error = Some(err);
                    // Keep the failed batch and everything after it.
                    let keep: Vec<Batch> = std::iter::once(batch).chain(rest).collect();
                    replayed.remaining = keep.len();
                    if replayed.loaded.is_empty() {
                        // Nothing left the journal: leave the file as it is.
                        return Ok(replayed);
                    }
                    self.rewrite(keep).await?;
                    return Ok(replayed);
                }
            }
        }
        if total > 0 {
            self.rewrite(Vec::new()).await?;
        }
        Ok(replayed)
    }

    fn header_line(&self) -> Result<Vec<u8>, BoxError> {
        let mut line = serde_json::to_vec(&Header {
            journal: 1,
            sink: self.sink.to_string(),
        })?;
        line.push(b'\n');
        Ok(line)
    }

    async fn rewrite(&self, keep: Vec<Batch>) -> Result<(), BoxError> {
        let path = Arc::clone(&self.path);
        let header = self.header_line()?;
        tokio::task::spawn_blocking(move || -> Result<(), BoxError> {
            if keep.is_empty() {
                return match std::fs::remove_file(&*path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!(
                        "cannot remove the drained journal {}: {e}",
                        path.display()
                    )
                    .into()),
                    _ => Ok(()),
                };
            }
            let tmp = sibling(&path, ".tmp");
            let mut file =
                File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
            file.write_all(&header)?;
            for batch in &keep {
                serde_json::to_writer(&mut file, batch)?;
                file.write_all(b"\n")?;
            }
            file.sync_all()?;
            std::fs::rename(&tmp, &*path)
                .map_err(|e| format!("cannot replace the journal {}: {e}", path.display()))?;
            Ok(())
        })
        .await?
    }
}

/// `path` with `suffix` added to its file name (`j.jsonl` → `j.jsonl.lock`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Take the exclusive OS lock on `<journal>.lock`, or say who holds it.
fn lock_process(journal: &Path) -> Result<File, BoxError> {
    let path = sibling(journal, ".lock");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open the journal lock {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                "another process".to_owned()
            } else {
                format!("process {holder}")
            };
            return Err(format!(
                "the journal {} is in use by another etl run ({holder} holds {}); \
                 wait for it to finish, or give this run another sink",
                journal.display(),
                path.display()
            )
            .into());
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(format!("cannot lock {}: {e}", path.display()).into());
        }
    }
    // Who holds it, for the message above; the lock, not the text, is what counts.
    file.set_len(0)?;
    file.write_all(std::process::id().to_string().as_bytes())?;
    Ok(file)
}

fn read_text(path: &Path) -> Result<String, BoxError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!("cannot read the journal {}: {e}", path.display()).into()),
    }
}

/// Cut a torn tail off the journal: everything after the last line that is complete and
/// parses (`whole`: check the last lines even when the file ends with a newline). The cut bytes are saved to `<journal>.torn-<unix ms>` first, so a wrong guess
/// loses nothing.
fn repair_torn_tail(path: &Path, whole: bool) -> Result<(), BoxError> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot open the journal {}: {e}", path.display()).into()),
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    // The common case, a clean end, costs one byte of reading. (A complete line that does
    // not parse only comes from a crash at open time, or from outside: `open` checks the
    // whole file.)
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    if last[0] == b'\n' && !whole {
        return Ok(());
    }
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut bytes)?;
    let keep = good_prefix(&bytes);
    if last[0] == b'\n' && keep == bytes.len() {
        return Ok(());
    }
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let torn = sibling(path, &format!(".torn-{millis}"));
    std::fs::write(&torn, &bytes[keep..]).map_err(|e| {
        format!(
            "cannot save the journal's torn tail to {}: {e}",
            torn.display()
        )
    })?;
    file.set_len(keep as u64)?;
    file.sync_all()?;
    tracing::warn!(
        journal = %path.display(),
        saved_to = %torn.display(),
        bytes = bytes.len() - keep,
        "cut a torn tail off the journal (a crash mid-append; never acknowledged)"
    );
    Ok(())
}

/// The length of `bytes` up to the end of its last complete line that is valid JSON
/// (blank lines count as good).
fn good_prefix(bytes: &[u8]) -> usize {
    let mut end = bytes.len();
    while end > 0 {
        // The last line ends at `end` (exclusive); find where it starts.
        let complete = bytes[end - 1] == b'\n';
        let body_end = if complete { end - 1 } else { end };
        let start = bytes[..body_end]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let line = &bytes[start..body_end];
        let good = complete
            && (line.iter().all(u8::is_ascii_whitespace)
                || serde_json::from_slice::<serde_json::Value>(line).is_ok());
        if good {
            return end;
        }
        end = start;
    }
    0
}

/// What a [`Journal::replay`] did.
#[derive(Debug)]
pub struct Replayed<T> {
    /// The results of the batches loaded (and removed from the journal).
    pub loaded: Vec<T>,
    /// Batches still in the journal.
    pub remaining: usize,
    /// Why replay stopped early.
    pub error: Option<BoxError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64) -> Batch {
        Batch {
            seq,
            source: "s".into(),
            records: Vec::new(),
            rejected: Vec::new(),
        }
    }

    fn seqs(batches: &[Batch]) -> Vec<u64> {
        batches.iter().map(|b| b.seq).collect()
    }

    fn tear(path: &Path, bytes: &[u8]) {
        OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    #[tokio::test]
    async fn replay_keeps_what_failed_and_drains_later() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j.jsonl"), "sink-a").unwrap();
        for seq in 0..4 {
            journal.append(&batch(seq)).await.unwrap();
        }
        let r = journal
            .replay(|b| async move {
                if b.seq == 2 {
                    Err::<u64, BoxError>("down".into())
                } else {
                    Ok(b.seq)
                }
            })
            .await
            .unwrap();
        assert_eq!(r.loaded, vec![0, 1]);
        assert_eq!(r.remaining, 2);
        assert!(r.error.is_some());
        assert_eq!(seqs(&journal.pending().await.unwrap()), vec![2, 3]);

        let r = journal
            .replay(|b| async move { Ok::<_, BoxError>(b.seq) })
            .await
            .unwrap();
        assert_eq!(r.loaded, vec![2, 3]);
        assert!(journal.pending().await.unwrap().is_empty());
        assert!(!journal.path().exists());
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_before_the_next_append_and_no_acknowledged_batch_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let journal = Journal::open(&path, "sink-a").unwrap();
        journal.append(&batch(0)).await.unwrap();
        journal.append(&batch(1)).await.unwrap();
        // A crash mid-append leaves a torn line (no newline).
        tear(&path, b"{\"seq\": 9, \"sour");
        // Appended after the torn line, this batch must not vanish.
        journal.append(&batch(2)).await.unwrap();
        assert_eq!(seqs(&journal.pending().await.unwrap()), vec![0, 1, 2]);
        let saved: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("j.jsonl.torn-"))
            .collect();
        assert_eq!(saved.len(), 1, "the torn bytes are kept aside");
        let torn = std::fs::read(dir.path().join(&saved[0])).unwrap();
        assert_eq!(torn, b"{\"seq\": 9, \"sour");

        // The same after a restart: a new process opens a journal with a torn tail.
        tear(&path, b"{\"seq\": 10, ");
        drop(journal);
        let journal = Journal::open(&path, "sink-a").unwrap();
        journal.append(&batch(3)).await.unwrap();
        assert_eq!(seqs(&journal.pending().await.unwrap()), vec![0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_damaged_line_before_good_ones_is_refused_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let journal = Journal::open(&path, "sink-a").unwrap();
        journal.append(&batch(0)).await.unwrap();
        tear(&path, b"garbage\n");
        // `garbage\n` is a complete line that does not parse: a new process cuts it as a
        // tail when it opens the journal, so the journal stays readable.
        drop(journal);
        let journal = Journal::open(&path, "sink-a").unwrap();
        journal.append(&batch(1)).await.unwrap();
        assert_eq!(seqs(&journal.pending().await.unwrap()), vec![0, 1]);
        // A damaged line in the middle (written behind the journal's back) is an error.
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.insert(2, "{\"seq\": 1, \"sou");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let err = journal.pending().await.unwrap_err().to_string();
        assert!(err.contains("damaged line 3"), "{err}");
    }

    #[tokio::test]
    async fn a_journal_belongs_to_one_sink() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let journal = Journal::open(&path, "postgres://etl@db-a:5432/etl").unwrap();
        journal.append(&batch(0)).await.unwrap();
        drop(journal);
        let err = Journal::open(&path, "postgres://etl@db-b:5432/etl").unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("belongs to the sink postgres://etl@db-a"),
            "{err}"
        );
        // A headerless (foreign or older) file is refused too.
        let foreign = dir.path().join("old.jsonl");
        std::fs::write(&foreign, serde_json::to_string(&batch(0)).unwrap() + "\n").unwrap();
        assert!(Journal::open(&foreign, "sink-a").is_err());
        // The right sink opens it and finds its batch.
        let journal = Journal::open(&path, "postgres://etl@db-a:5432/etl").unwrap();
        assert_eq!(seqs(&journal.pending().await.unwrap()), vec![0]);
    }

    #[test]
    fn a_locked_journal_is_refused_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let first = Journal::open(&path, "s").unwrap();
        let err = Journal::open(&path, "s").unwrap_err().to_string();
        assert!(err.contains("in use by another etl run"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        Journal::open(&path, "s").expect("the lock is released with the journal");
    }

    #[test]
    fn the_good_prefix_ends_at_the_last_complete_valid_line() {
        assert_eq!(good_prefix(b""), 0);
        assert_eq!(good_prefix(b"{}\n{}\n"), 6);
        assert_eq!(good_prefix(b"{}\n{}"), 3);
        assert_eq!(good_prefix(b"{}\n{\"a\n"), 3);
        assert_eq!(good_prefix(b"{\"a"), 0);
        assert_eq!(good_prefix(b"{}\n\n"), 4);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Crashes mid-append at any byte, between acknowledged appends: every acknowledged
        /// batch is pending, once, in order, and nothing else.
        #[test]
        fn acknowledged_batches_survive_torn_appends(
            plan in proptest::collection::vec((proptest::bool::ANY, 0usize..200), 1..12),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("j.jsonl");
            let mut acknowledged = Vec::new();
            for (seq, (reopen, cut)) in plan.into_iter().enumerate() {
                let seq = seq as u64;
                let journal = Journal::open(&path, "sink").unwrap();
                rt.block_on(journal.append(&batch(seq))).unwrap();
                acknowledged.push(seq);
                // A crash in the middle of the next append: a prefix of its line.
                let mut line = serde_json::to_vec(&batch(seq + 1000)).unwrap();
                line.push(b'\n');
                let cut = cut.min(line.len() - 1);
                tear(&path, &line[..cut]);
                if !reopen {
                    // The same process appends again after a failed write.
                    rt.block_on(journal.append(&batch(seq + 500))).unwrap();
                    acknowledged.push(seq + 500);
                }
            }
            let journal = Journal::open(&path, "sink").unwrap();
            let pending = rt.block_on(journal.pending()).unwrap();
            proptest::prop_assert_eq!(seqs(&pending), acknowledged);
        }
    }
}
