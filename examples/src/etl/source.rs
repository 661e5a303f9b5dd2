//! The built-in source: a paginated JSON API on a loopback port (axum), made flaky with
//! palisade-chaos.
//!
//! `GET /records?page=N` answers
//! `{"page": N, "next": N+1 | null, "total_rows": T, "rows": [...]}`. The rows are generated
//! from a seed, so every run over the same seed sees the same data: mostly valid records,
//! some rows that break the schema, and some that repeat an earlier row's key (a source
//! that re-sends what it already sent).
//!
//! A [`ChaosLayer`] over the router answers some requests with `429` + `Retry-After` or a
//! `500`/`503` instead of the handler, slows others down, and answers every request with
//! `503` during the scenario's outage window.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use palisade::BoxError;
use palisade::chaos::{ChaosConfig, ChaosHandle, ChaosLayer, Fault, Latency, Window};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::config::{ChaosScenario, DatasetConfig};

// ===== the dataset =====

/// One page as the API serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// This page's number (from 0).
    pub page: u64,
    /// The next page's number; `null` on the last page.
    pub next: Option<u64>,
    /// How many rows the source holds in all pages: the reconciliation's source count.
    pub total_rows: u64,
    /// The raw rows, unvalidated.
    pub rows: Vec<Value>,
}

/// Row `index` of the dataset, deterministically for `config.seed`, computed on its own:
/// pages are generated when asked for, so the API never holds the dataset.
///
/// Most rows are valid records; `invalid_rate` of them break the schema; `duplicate_rate`
/// of them re-send an earlier row's key and content (a source that repeats itself).
pub fn row_at(config: &DatasetConfig, index: usize) -> Value {
    let (kind, mut rng) = kind_at(config, index);
    match kind {
        RowKind::Valid => fresh_row(index, &mut rng),
        RowKind::Invalid => {
            let mut row = fresh_row(index, &mut rng);
            corrupt(&mut row, &mut rng);
            row
        }
        RowKind::Duplicate => {
            // An earlier valid row (a few tries; else this row is simply a valid one).
            for _ in 0..8 {
                let earlier = rng.usize(..index);
                if kind_at(config, earlier).0 == RowKind::Valid {
                    return row_at(config, earlier);
                }
            }
            fresh_row(index, &mut kind_at(config, index).1)
        }
    }
}

/// Every row of the dataset, in order, generated one at a time.
pub fn rows(config: &DatasetConfig) -> impl Iterator<Item = Value> + '_ {
    (0..config.rows).map(|i| row_at(config, i))
}

/// Every row of the dataset in memory (for tests and small datasets; the API itself uses
/// [`row_at`] page by page).
pub fn generate_rows(config: &DatasetConfig) -> Vec<Value> {
    rows(config).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowKind {
    Valid,
    Invalid,
    Duplicate,
}

/// Row `index`'s kind and the RNG that generates its content (seeded by seed and index).
fn kind_at(config: &DatasetConfig, index: usize) -> (RowKind, fastrand::Rng) {
    let mut rng =
        fastrand::Rng::with_seed(config.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let roll = rng.f64();
    let kind = if roll < config.duplicate_rate && index > 0 {
        RowKind::Duplicate
    } else if roll < config.duplicate_rate + config.invalid_rate {
        RowKind::Invalid
    } else {
        RowKind::Valid
    };
    (kind, rng)
}

fn fresh_row(index: usize, rng: &mut fastrand::Rng) -> Value {
    let currencies = ["EUR", "USD", "GBP", "JPY", "CHF"];
    json!({
        "id": format!("rec-{index:06}"),
        "name": format!("customer {}", rng.u32(1..100_000)),
        "amount": f64::from(rng.u32(0..1_000_000)) / 100.0,
        "currency": currencies[rng.usize(..currencies.len())],
        "updated_at": 1_700_000_000 + i64::from(rng.u32(0..10_000_000)),
    })
}

fn corrupt(row: &mut Value, rng: &mut fastrand::Rng) {
    match rng.u8(0..5) {
        0 => row["amount"] = json!(-12.5),
        1 => row["currency"] = json!("euro"),
        2 => {
            if let Some(obj) = row.as_object_mut() {
                obj.remove("id");
            }
        }
        3 => row["updated_at"] = json!("yesterday"),
        _ => row["name"] = json!(""),
    }
}

/// Page `page` of the dataset (`page_size` rows), generated on demand; `None` past the
/// last page. An empty dataset has one empty page.
pub fn page_of(config: &DatasetConfig, page: u64) -> Option<Page> {
    let total = config.rows;
    let size = config.page_size.max(1);
    let start = usize::try_from(page).ok()?.checked_mul(size)?;
    if start >= total && !(total == 0 && page == 0) {
        return None;
    }
    let end = start.saturating_add(size).min(total);
    Some(Page {
        page,
        next: (end < total).then_some(page + 1),
        total_rows: total as u64,
        rows: (start..end).map(|i| row_at(config, i)).collect(),
    })
}

// ===== the server =====

#[derive(Clone)]
struct AppState {
    dataset: Arc<DatasetConfig>,
}

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    page: u64,
}

async fn records(State(state): State<AppState>, Query(q): Query<PageQuery>) -> Response {
    match page_of(&state.dataset, q.page) {
        Some(page) => axum::Json(page).into_response(),
        None => (StatusCode::NOT_FOUND, "no such page").into_response(),
    }
}

/// The running built-in API; dropping it shuts the server down.
#[derive(Debug)]
pub struct SourceServer {
    addr: SocketAddr,
    chaos: ChaosHandle,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SourceServer {
    /// Start the API on `127.0.0.1:0` with `dataset`'s rows and `scenario`'s faults
    /// (seeded with `seed`). Its outage window is measured from now.
    pub async fn start(
        dataset: &DatasetConfig,
        scenario: &ChaosScenario,
        seed: u64,
    ) -> Result<Self, BoxError> {
        let state = AppState {
            dataset: Arc::new(dataset.clone()),
        };
        let chaos = chaos_layer(scenario, seed)?;
        let handle = chaos.handle();
        let app = Router::new()
            .route("/records", get(records))
            .route("/health", get(|| async { "ok" }))
            .with_state(state)
            .layer(chaos);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = rx.await;
            });
            if let Err(err) = serve.await {
                tracing::error!(error = %err, "source API stopped");
            }
        });
        tracing::info!(%addr, rows = dataset.rows, "built-in source API listening");
        Ok(Self {
            addr,
            chaos: handle,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// The API's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The chaos layer's handle: faults injected so far, on/off.
    pub fn chaos(&self) -> &ChaosHandle {
        &self.chaos
    }

    /// Stop serving and wait for the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SourceServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The faults of `scenario` as a chaos layer over the router: `Replace` answers with a
/// `503` inside the outage window, else a seeded mix of `429` (+ `Retry-After`) and
/// `500`/`503`.
fn chaos_layer(
    scenario: &ChaosScenario,
    seed: u64,
) -> Result<ChaosLayer<Request, Response, std::convert::Infallible>, BoxError> {
    let origin = Instant::now();
    let outage = scenario.source_outage.clone();
    let error_share = share(scenario.error_rate, scenario.throttle_rate);
    let retry_after = scenario.retry_after_secs;
    let rng = Mutex::new(fastrand::Rng::with_seed(seed ^ 0xA11CE));
    let replace = move |_req: &Request| -> Response {
        if outage
            .as_ref()
            .is_some_and(|o| o.contains(&origin.elapsed()))
        {
            return fault_response(StatusCode::SERVICE_UNAVAILABLE, "outage", None);
        }
        let roll = rng.lock().map_or(0.0, |mut r| r.f64());
        if roll < error_share {
            let status = if roll < error_share / 2.0 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            fault_response(status, "injected error", None)
        } else {
            fault_response(
                StatusCode::TOO_MANY_REQUESTS,
                "slow down",
                Some(retry_after),
            )
        }
    };
    let mut builder = ChaosConfig::builder()
        .name("source-api")
        .seed(seed)
        .replace(
            (scenario.error_rate + scenario.throttle_rate).min(1.0),
            replace,
        );
    if scenario.latency_rate > 0.0 && !scenario.latency.is_empty() {
        builder = builder.latency(
            scenario.latency_rate,
            Latency::uniform(scenario.latency.start, scenario.latency.end),
        );
    }
    if let Some(outage) = &scenario.source_outage {
        builder = builder.window(Window::new(Fault::Replace, outage.clone()));
    }
    Ok(ChaosLayer::new(builder.build()?))
}

/// The share of replaced answers that are errors (the rest are throttles).
fn share(error_rate: f64, throttle_rate: f64) -> f64 {
    let total = error_rate + throttle_rate;
    if total <= 0.0 {
        1.0
    } else {
        error_rate / total
    }
}

fn fault_response(status: StatusCode, body: &'static str, retry_after: Option<u64>) -> Response {
    let mut response = (status, body).into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etl::record::validate;
    use std::collections::HashSet;

    #[test]
    fn the_dataset_is_deterministic_and_mixed() {
        let config = DatasetConfig {
            rows: 1000,
            ..DatasetConfig::default()
        };
        let rows = generate_rows(&config);
        assert_eq!(rows, generate_rows(&config));
        assert_eq!(rows.len(), 1000);
        let invalid = rows.iter().filter(|r| validate(r).is_err()).count();
        let ids: HashSet<_> = rows
            .iter()
            .filter_map(|r| validate(r).ok())
            .map(|r| r.id)
            .collect();
        let duplicates = 1000 - invalid - ids.len();
        assert!((10..100).contains(&invalid), "{invalid} invalid rows");
        assert!((10..100).contains(&duplicates), "{duplicates} duplicates");
    }

    #[test]
    fn pages_cover_every_row_once() {
        let config = DatasetConfig {
            rows: 105,
            page_size: 10,
            ..DatasetConfig::default()
        };
        let mut seen = Vec::new();
        let mut next = Some(0);
        while let Some(n) = next {
            let page = page_of(&config, n).unwrap();
            assert_eq!(page.total_rows, 105);
            seen.extend(page.rows);
            next = page.next;
        }
        assert_eq!(seen, generate_rows(&config));
        assert!(page_of(&config, 11).is_none());
        assert!(page_of(&config, u64::MAX).is_none());
        let empty = DatasetConfig {
            rows: 0,
            ..DatasetConfig::default()
        };
        assert_eq!(page_of(&empty, 0).unwrap().next, None);
    }

    #[test]
    fn a_page_deep_in_a_huge_dataset_is_generated_alone() {
        // Rows are computed by index, so the last page of the largest dataset is cheap.
        let config = DatasetConfig {
            rows: crate::etl::config::MAX_ROWS,
            page_size: 100,
            ..DatasetConfig::default()
        };
        let last = (crate::etl::config::MAX_ROWS / 100 - 1) as u64;
        let page = page_of(&config, last).unwrap();
        assert_eq!(page.rows.len(), 100);
        assert_eq!(page.next, None);
    }
}
