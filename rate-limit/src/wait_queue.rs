//! The bounded wait queue both concurrency limits share in wait mode: how many calls wait
//! for a permit or slot, and how many may.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Waiting calls and their bound. The bound is the config's `max_queue`, or, when that is
/// `None`, the limit itself (as many waiting calls as running ones); a separate flag says
/// which, so that every `usize` (`usize::MAX` included) is a bound that reads back exactly.
#[derive(Debug)]
pub(crate) struct WaitQueue {
    waiting: AtomicUsize,
    max_queue: AtomicUsize,
    follows_limit: AtomicBool,
}

impl WaitQueue {
    pub(crate) fn new(max_queue: Option<usize>) -> Self {
        let queue = Self {
            waiting: AtomicUsize::new(0),
            max_queue: AtomicUsize::new(0),
            follows_limit: AtomicBool::new(true),
        };
        queue.set(max_queue);
        queue
    }

    /// A new bound, for the calls that join from now on.
    pub(crate) fn set(&self, max_queue: Option<usize>) {
        self.max_queue
            .store(max_queue.unwrap_or(0), Ordering::Relaxed);
        self.follows_limit
            .store(max_queue.is_none(), Ordering::Relaxed);
    }

    /// The bound as configured (`None`: the limit).
    pub(crate) fn configured(&self) -> Option<usize> {
        (!self.follows_limit.load(Ordering::Relaxed))
            .then(|| self.max_queue.load(Ordering::Relaxed))
    }

    /// Calls waiting now.
    ///
    /// Sequentially consistent, as [`try_join`](Self::try_join) and [`leave`](Self::leave):
    /// a limit that frees a slot and then reads this either sees a call that joined or that
    /// call sees the slot (the adaptive limit's wake-up relies on it).
    #[inline]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Join the queue if fewer than its bound (`limit` when it follows the limit) wait.
    pub(crate) fn try_join(&self, limit: usize) -> bool {
        let bound = if self.follows_limit.load(Ordering::Relaxed) {
            limit
        } else {
            self.max_queue.load(Ordering::Relaxed)
        };
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        if queued >= bound {
            // The queue is full: leave again.
            self.leave();
            return false;
        }
        true
    }

    /// A call that joined leaves (admitted, refused or dropped).
    pub(crate) fn leave(&self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_the_limit_or_the_configured_value_and_reads_back() {
        let q = WaitQueue::new(None);
        assert_eq!(q.configured(), None);
        assert!(q.try_join(1));
        assert!(!q.try_join(1), "following a limit of 1");
        assert_eq!(q.waiting(), 1);
        q.leave();
        q.set(Some(usize::MAX));
        assert_eq!(q.configured(), Some(usize::MAX));
        assert!(
            (0..5).all(|_| q.try_join(1)),
            "unbounded whatever the limit"
        );
        assert_eq!(q.waiting(), 5);
        q.set(Some(0));
        assert!(!q.try_join(100));
        assert_eq!(q.waiting(), 5, "a refused join leaves no trace");
    }
}
