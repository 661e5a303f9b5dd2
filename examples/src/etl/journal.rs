//! The local journal: where batches spill while the sink is down, one JSON line each,
//! replayed in order when the sink is back.
//!
//! No loss: a batch is acknowledged as spilled only after its line is written and synced.
//! No duplicates: replay goes through the sink's idempotent upserts, and a batch leaves the
//! journal only after the sink committed it (the rest is rewritten atomically: temp file,
//! sync, rename). A torn last line (a crash mid-append) is skipped with a warning: its
//! batch was never acknowledged, so the pipeline had not counted it as spilled.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade::BoxError;
use tokio::sync::Mutex;

use super::sink::Batch;

/// A journal file; clones share it (and its lock).
#[derive(Debug, Clone)]
pub struct Journal {
    path: Arc<PathBuf>,
    lock: Arc<Mutex<()>>,
}

impl Journal {
    /// The journal at `path` (created on first append; its directory now).
    pub fn open(path: &Path) -> Result<Self, BoxError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self {
            path: Arc::new(path.to_path_buf()),
            lock: Arc::new(Mutex::new(())),
        })
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `batch` and sync it to disk.
    pub async fn append(&self, batch: &Batch) -> Result<(), BoxError> {
        let mut line = serde_json::to_vec(batch)?;
        line.push(b'\n');
        let _guard = self.lock.lock().await;
        let path = Arc::clone(&self.path);
        tokio::task::spawn_blocking(move || -> Result<(), BoxError> {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&*path)?;
            file.write_all(&line)?;
            file.sync_data()?;
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
        let text = match tokio::fs::read_to_string(&*self.path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut batches = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(batch) => batches.push(batch),
                Err(err) => tracing::warn!(
                    journal = %self.path.display(), line = n + 1, error = %err,
                    "skipping a torn journal line (a crash mid-append; never acknowledged)"
                ),
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

    async fn rewrite(&self, keep: Vec<Batch>) -> Result<(), BoxError> {
        let path = Arc::clone(&self.path);
        tokio::task::spawn_blocking(move || -> Result<(), BoxError> {
            if keep.is_empty() {
                return match std::fs::remove_file(&*path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                    _ => Ok(()),
                };
            }
            let tmp = path.with_extension("jsonl.tmp");
            let mut file = std::fs::File::create(&tmp)?;
            for batch in &keep {
                serde_json::to_writer(&mut file, batch)?;
                file.write_all(b"\n")?;
            }
            file.sync_all()?;
            std::fs::rename(&tmp, &*path)?;
            Ok(())
        })
        .await?
    }
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

    #[tokio::test]
    async fn replay_keeps_what_failed_and_drains_later() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j.jsonl")).unwrap();
        for seq in 0..4 {
            journal.append(&batch(seq)).await.unwrap();
        }
        // A crash mid-append leaves a torn line: skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(journal.path())
            .unwrap()
            .write_all(b"{\"seq\": 9, \"sour")
            .unwrap();

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
        let left: Vec<u64> = journal
            .pending()
            .await
            .unwrap()
            .iter()
            .map(|b| b.seq)
            .collect();
        assert_eq!(left, vec![2, 3]);

        let r = journal
            .replay(|b| async move { Ok::<_, BoxError>(b.seq) })
            .await
            .unwrap();
        assert_eq!(r.loaded, vec![2, 3]);
        assert!(journal.pending().await.unwrap().is_empty());
        assert!(!journal.path().exists());
    }
}
