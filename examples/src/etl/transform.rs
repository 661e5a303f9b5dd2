//! The transform stage: schema validation (invalid rows are kept with their reason, the run
//! goes on) and de-duplication by key.

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tower::Service;

use super::record::{Record, RejectedRow, validate};
use super::source::Page;

/// What the transform made of one page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transformed {
    /// Valid records whose key was not seen before in this run, in source order.
    pub valid: Vec<Record>,
    /// Rows that failed validation.
    pub rejected: Vec<RejectedRow>,
    /// Valid rows whose key was already seen (dropped; the first one wins).
    pub duplicates: u64,
}

/// Validates and de-duplicates pages; clones share the set of keys seen, so a run has one.
#[derive(Debug, Clone, Default)]
pub struct Transform {
    seen: Arc<Mutex<HashSet<String>>>,
}

impl Transform {
    /// A transform that has seen no key yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validate and de-duplicate one page.
    pub fn apply(&self, page: &Page) -> Transformed {
        let mut out = Transformed::default();
        // A poisoned lock only means another clone panicked mid-insert; the set is intact.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for (index, raw) in page.rows.iter().enumerate() {
            match validate(raw) {
                Ok(record) if seen.contains(&record.id) => out.duplicates += 1,
                Ok(record) => {
                    seen.insert(record.id.clone());
                    out.valid.push(record);
                }
                Err(reason) => out.rejected.push(RejectedRow {
                    position: format!("p{}-r{index}", page.page),
                    reason,
                    raw: raw.to_string(),
                }),
            }
        }
        out
    }
}

impl Service<Page> for Transform {
    type Response = Transformed;
    type Error = Infallible;
    type Future = Ready<Result<Transformed, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, page: Page) -> Self::Future {
        ready(Ok(self.apply(&page)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(id: &str) -> serde_json::Value {
        json!({"id": id, "name": "n", "amount": 1, "currency": "EUR", "updated_at": 1})
    }

    #[test]
    fn rejects_and_duplicates_are_counted_across_pages() {
        let t = Transform::new();
        let page = |n, rows| Page {
            page: n,
            next: None,
            total_rows: 5,
            rows,
        };
        let a = t.apply(&page(0, vec![row("a"), json!({"id": "b"}), row("a")]));
        assert_eq!(a.valid.len(), 1);
        assert_eq!(a.duplicates, 1);
        assert_eq!(a.rejected[0].position, "p0-r1");
        let clone = t.clone();
        let b = clone.apply(&page(1, vec![row("a"), row("c")]));
        assert_eq!(b.valid.len(), 1);
        assert_eq!(b.valid[0].id, "c");
        assert_eq!(b.duplicates, 1);
        // The clone's key set is the original's.
        assert_eq!(t.apply(&page(2, vec![row("c")])).duplicates, 1);
    }
}
