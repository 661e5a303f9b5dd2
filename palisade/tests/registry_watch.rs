//! The file watcher reloads a registry when its policies file changes, and reports a file
//! that does not load without changing anything. Real files and a real watcher: bounded
//! waits only.
#![cfg(feature = "watch")]
#![allow(clippy::unwrap_used)]

use std::sync::mpsc;
use std::time::Duration;

use palisade::policy::Policies;
use palisade::registry::Registry;

const WAIT: Duration = Duration::from_secs(10);
const TRIES: usize = 20;

type Outcome = Result<palisade::registry::ReloadReport, palisade::policy::PolicyErrors>;

fn first_error(rx: &mpsc::Receiver<Outcome>) -> palisade::policy::PolicyErrors {
    for _ in 0..TRIES {
        if let Err(errors) = rx.recv_timeout(WAIT).expect("the watcher saw the change") {
            return errors;
        }
    }
    panic!("no error reported in time");
}

fn retry(attempts: u32) -> String {
    format!("[policies.payments.retry]\nmax_attempts = {attempts}\n")
}

#[test]
fn a_changed_file_is_reloaded_and_a_broken_one_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("palisade-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policies.toml");
    std::fs::write(&path, retry(3)).unwrap();
    let none = std::iter::empty::<(String, String)>;
    let registry = Registry::from_policies(Policies::from_path(&path, none()).unwrap());

    let (tx, rx) = mpsc::channel();
    let watcher = registry
        .watch(
            &path,
            [("PALISADE__PAYMENTS__RETRY__SEED", "7")],
            move |outcome| {
                let _ = tx.send(outcome);
            },
        )
        .unwrap();
    assert_eq!(watcher.path(), path);

    // A valid change: applied in place, with the override.
    std::fs::write(&path, retry(5)).unwrap();
    let mut reloaded = false;
    for _ in 0..TRIES {
        let outcome = rx.recv_timeout(WAIT).expect("the watcher saw the change");
        if registry
            .policy("payments")
            .unwrap()
            .retry()
            .unwrap()
            .max_attempts()
            == 5
        {
            assert!(outcome.is_ok());
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "not reloaded in time");
    let handles = registry.handles("payments").unwrap();
    assert_eq!(handles.retry().unwrap().config().max_attempts(), 5);
    assert_eq!(handles.retry().unwrap().config().seed(), Some(7));

    // A broken file: reported, nothing changes.
    std::fs::write(&path, retry(0)).unwrap();
    let errors = first_error(&rx);
    assert_eq!(errors.paths(), ["policies.payments.retry.max_attempts"]);
    assert_eq!(handles.retry().unwrap().config().max_attempts(), 5);

    // An empty file (say, caught mid-write) does not remove every policy.
    std::fs::write(&path, "").unwrap();
    let errors = first_error(&rx);
    assert!(errors.to_string().contains("empty"), "{errors}");
    assert_eq!(registry.names(), ["payments"]);

    drop(watcher);
    std::fs::remove_dir_all(&dir).unwrap();
}
