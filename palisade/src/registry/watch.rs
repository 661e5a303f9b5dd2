//! Reloading a registry when its policies file changes (feature `watch`, on `notify`).

use std::fmt;
use std::path::{Path, PathBuf};

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::{Registry, ReloadReport};
use crate::policy::{Policies, PolicyError, PolicyErrors};

/// How long a policies file must stay quiet after a change before it is read.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// Read the file; an empty one is refused (it may be mid-write, and it would remove every
/// policy).
fn read(path: &Path, env: &[(String, String)]) -> Result<Policies, PolicyErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        PolicyErrors::one(PolicyError::new(
            "",
            format!("cannot read {}: {e}", path.display()),
        ))
    })?;
    if text.trim().is_empty() {
        return Err(PolicyErrors::one(PolicyError::new(
            "",
            format!(
                "{} is empty; the watcher does not apply an empty file (remove policies by \
                 writing the ones to keep)",
                path.display()
            ),
        )));
    }
    let format = crate::policy::Format::from_path(path)?;
    Policies::load(format, &text, env.iter().map(|(k, v)| (k, v)))
}

/// Watches a policies file and reloads a [`Registry`] when it changes; from
/// [`Registry::watch`]. Dropping it stops watching.
pub struct PolicyWatcher {
    path: PathBuf,
    _watcher: RecommendedWatcher,
}

impl PolicyWatcher {
    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for PolicyWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyWatcher")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Reload the registry from the policies file at `path` whenever it changes (written in
    /// place or replaced, as editors and config managers do), with the `PALISADE__…`
    /// overrides among `env` (read once, now). Each attempt's outcome goes to `on_reload`
    /// (and to `tracing` on the target `palisade::policy`): a file that does not load, or
    /// does not apply, changes nothing and reports every error.
    ///
    /// The directory of the file is watched, not only the file, so that a replaced file is
    /// still seen; the file is read once it has been quiet for 100ms, and an empty file is
    /// refused (it may be mid-write). Writing a new file and renaming it over the old one
    /// is the safest way to change it. Returns an error when the directory cannot be
    /// watched.
    pub fn watch<K, V>(
        &self,
        path: impl Into<PathBuf>,
        env: impl IntoIterator<Item = (K, V)>,
        on_reload: impl Fn(Result<ReloadReport, PolicyErrors>) + Send + 'static,
    ) -> Result<PolicyWatcher, PolicyErrors>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let path: PathBuf = path.into();
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        let file_name = path.file_name().map(ToOwned::to_owned);
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let registry = self.clone();
        let watched = path.clone();
        // Events go to a thread that waits for the file to settle (a write is often several
        // events, the first on an emptied file) before reading it once.
        let (events, settle) = std::sync::mpsc::channel::<()>();
        let handler = move |event: notify::Result<Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            if event
                .paths
                .iter()
                .any(|p| p.file_name() == file_name.as_deref())
            {
                let _ = events.send(());
            }
        };
        std::thread::Builder::new()
            .name("palisade-policy-watch".to_owned())
            .spawn(move || {
                // Ends when the watcher (and so the sender) is dropped.
                while settle.recv().is_ok() {
                    while settle.recv_timeout(SETTLE).is_ok() {}
                    if !watched.exists() {
                        continue;
                    }
                    let outcome = read(&watched, &env).and_then(|p| registry.reload(p));
                    if let Err(errors) = &outcome {
                        tracing::warn!(target: "palisade::policy", file = %watched.display(), %errors, "policies file not applied");
                    }
                    on_reload(outcome);
                }
            })
            .map_err(|e| {
                PolicyErrors::one(PolicyError::new("", format!("cannot start the watcher: {e}")))
            })?;
        let fail = |e: notify::Error| {
            PolicyErrors::one(PolicyError::new(
                "",
                format!("cannot watch {}: {e}", dir.display()),
            ))
        };
        let mut watcher = notify::recommended_watcher(handler).map_err(fail)?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(fail)?;
        Ok(PolicyWatcher {
            path,
            _watcher: watcher,
        })
    }
}
