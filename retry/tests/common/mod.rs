//! Test backends shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::BoxError;
use tokio::time::Instant;

/// A backend that answers from a script (then repeats its fallback) and records when each
/// call arrived, in milliseconds since it was made.
pub struct Scripted<T, E> {
    script: Arc<Mutex<VecDeque<Result<T, E>>>>,
    fallback: Arc<dyn Fn(usize) -> Result<T, E> + Send + Sync>,
    pub calls: Arc<Mutex<Vec<u64>>>,
    start: Instant,
}

impl<T, E> Clone for Scripted<T, E> {
    fn clone(&self) -> Self {
        Self {
            script: Arc::clone(&self.script),
            fallback: Arc::clone(&self.fallback),
            calls: Arc::clone(&self.calls),
            start: self.start,
        }
    }
}

impl<T: Send + 'static, E: Send + 'static> Scripted<T, E> {
    pub fn new(
        script: impl IntoIterator<Item = Result<T, E>>,
        fallback: impl Fn(usize) -> Result<T, E> + Send + Sync + 'static,
    ) -> Self {
        Self {
            script: Arc::new(Mutex::new(script.into_iter().collect())),
            fallback: Arc::new(fallback),
            calls: Arc::new(Mutex::new(Vec::new())),
            start: Instant::now(),
        }
    }

    pub fn call_times(&self) -> Vec<u64> {
        self.calls.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.calls.lock().expect("lock").len()
    }

    pub fn answer(&self) -> Result<T, E> {
        let n = {
            let mut calls = self.calls.lock().expect("lock");
            calls.push(self.start.elapsed().as_millis() as u64);
            calls.len()
        };
        let next = self.script.lock().expect("lock").pop_front();
        next.unwrap_or_else(|| (self.fallback)(n))
    }
}

impl<Req, T, E> tower::Service<Req> for Scripted<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    type Response = T;
    type Error = E;
    type Future = std::future::Ready<Result<T, E>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), E>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Req) -> Self::Future {
        std::future::ready(self.answer())
    }
}

/// An error that says which call produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailed(pub usize);

impl std::fmt::Display for CallFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "call {} failed", self.0)
    }
}

impl std::error::Error for CallFailed {}

/// A backend that always fails with `CallFailed(n)` as a `BoxError`.
pub fn always_failing() -> Scripted<u32, BoxError> {
    Scripted::new([], |n| Err(Box::new(CallFailed(n)) as BoxError))
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
