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

/// Generate the dataset's rows, deterministically for `config.seed`.
pub fn generate_rows(config: &DatasetConfig) -> Vec<Value> {
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let currencies = ["EUR", "USD", "GBP", "JPY", "CHF"];
    let mut rows: Vec<Value> = Vec::with_capacity(config.rows);
    let mut valid_ids: Vec<usize> = Vec::new();
    for i in 0..config.rows {
        let roll = rng.f64();
        if roll < config.duplicate_rate && !valid_ids.is_empty() {
            // A re-sent row: the same key (and content) as an earlier valid row.
            let earlier = valid_ids[rng.usize(..valid_ids.len())];
            rows.push(rows[earlier].clone());
            continue;
        }
        let mut row = json!({
            "id": format!("rec-{:06}", i),
            "name": format!("customer {}", rng.u32(1..100_000)),
            "amount": f64::from(rng.u32(0..1_000_000)) / 100.0,
            "currency": currencies[rng.usize(..currencies.len())],
            "updated_at": 1_700_000_000 + i64::from(rng.u32(0..10_000_000)),
        });
        if roll < config.duplicate_rate + config.invalid_rate {
            corrupt(&mut row, &mut rng);
        } else {
            valid_ids.push(i);
        }
        rows.push(row);
    }
    rows
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

/// Cut `rows` into pages of `page_size`.
pub fn page_of(rows: &[Value], page_size: usize, page: u64) -> Option<Page> {
    let start = usize::try_from(page).ok()?.checked_mul(page_size)?;
    if start >= rows.len() && !(rows.is_empty() && page == 0) {
        return None;
    }
    let end = (start + page_size).min(rows.len());
    Some(Page {
        page,
        next: (end < rows.len()).then_some(page + 1),
        total_rows: rows.len() as u64,
        rows: rows[start..end].to_vec(),
    })
}

// ===== the server =====

#[derive(Clone)]
struct AppState {
    rows: Arc<Vec<Value>>,
    page_size: usize,
}

#[derive(Deserialize)]
struct PageQuery {
    #[serde(default)]
    page: u64,
}

async fn records(State(state): State<AppState>, Query(q): Query<PageQuery>) -> Response {
    match page_of(&state.rows, state.page_size, q.page) {
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
            rows: Arc::new(generate_rows(dataset)),
            page_size: dataset.page_size,
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
        let rows = generate_rows(&DatasetConfig {
            rows: 105,
            page_size: 10,
            ..DatasetConfig::default()
        });
        let mut seen = 0;
        let mut next = Some(0);
        while let Some(n) = next {
            let page = page_of(&rows, 10, n).unwrap();
            assert_eq!(page.total_rows, 105);
            seen += page.rows.len();
            next = page.next;
        }
        assert_eq!(seen, 105);
        assert!(page_of(&rows, 10, 11).is_none());
    }
}
