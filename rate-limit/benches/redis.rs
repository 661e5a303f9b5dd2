//! The Redis rate limit against a local `redis-server` (started here on a free loopback
//! port; skipped, saying why, when it is not installed).
//!
//! Prints, before criterion's own runs:
//! - decisions per second and p50/p99 decision latency, one caller and 16 concurrent
//!   callers, with and without leases (a quota no caller exhausts: every decision admits);
//! - the over-admission measured: 4 replicas (separate connections) saturating one quota
//!   for 3 periods, the most admitted in any window of one period against `burst + cells`
//!   and the documented bound `burst + cells + replicas × (lease_cells − 1)`.
//!
//! `cargo bench -p palisade-rate-limit --features redis --bench redis`
#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used
)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use criterion::Criterion;
use palisade_rate_limit::redis::{Decider, RedisLimiter, RedisRateLimitConfig};
use tokio::time::Instant;

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    // Blocks for at most 5s while the server starts, before any runtime exists.
    #[allow(clippy::disallowed_methods)]
    fn start() -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!("skipping the redis bench: redis-server is not installed");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        let server = Self { child, port };
        for _ in 0..250 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("skipping the redis bench: redis-server did not start");
        None
    }

    async fn limiter(&self, config: RedisRateLimitConfig) -> RedisLimiter {
        let conn = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        RedisRateLimitConfig::builder(config.cells, config.period)
            .name(config.name.clone())
            .burst(config.effective_burst())
            .lease_cells(config.lease_cells)
            .lease_ttl(config.lease_ttl)
            .expected_replicas(config.expected_replicas)
            .call_timeout(Duration::from_secs(1))
            .limiter(conn)
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A quota no bench exhausts: every decision admits.
fn roomy(name: &'static str, lease: u32) -> RedisRateLimitConfig {
    let mut c = RedisRateLimitConfig::new(1_000_000, Duration::from_secs(1));
    c.name = name.into();
    c.lease_cells = lease;
    c.lease_ttl = Duration::from_millis(100);
    c
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

async fn latency(limiter: &RedisLimiter, callers: usize, per_caller: usize) -> String {
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let mut took = Vec::with_capacity(per_caller);
                let mut local = 0;
                for _ in 0..per_caller {
                    let before = Instant::now();
                    let a = limiter.check(1).await.unwrap();
                    took.push(before.elapsed());
                    local += usize::from(a.by == Decider::Local);
                }
                (took, local)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut local = 0;
    for t in tasks {
        let (took, l) = t.await.unwrap();
        all.extend(took);
        local += l;
    }
    let elapsed = start.elapsed();
    all.sort();
    format!(
        "{:>9.0} decisions/s  p50 {:>9.1?}  p99 {:>9.1?}  ({:.0}% without a round trip)",
        all.len() as f64 / elapsed.as_secs_f64(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        100.0 * local as f64 / all.len() as f64
    )
}

/// 4 replicas, 4 callers each, calling as fast as they can for `periods` periods.
async fn over_admission(server: &Server, lease: u32) -> String {
    let (cells, burst, replicas, period) = (1000u32, 100u32, 4usize, Duration::from_secs(1));
    let mut limiters = Vec::new();
    for _ in 0..replicas {
        let mut c = RedisRateLimitConfig::new(cells, period);
        c.name = if lease > 1 { "over-lease" } else { "over" }.into();
        c.burst = Some(burst);
        c.lease_cells = lease;
        c.lease_ttl = Duration::from_millis(100);
        c.expected_replicas = replicas as u32;
        limiters.push(server.limiter(c).await);
    }
    let run = period * 3;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for limiter in &limiters {
        for _ in 0..4 {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                let mut admitted = Vec::new();
                let mut calls = 0u64;
                while start.elapsed() < run {
                    calls += 1;
                    let before = Instant::now();
                    if limiter.check(1).await.is_ok() {
                        admitted.push(before);
                    }
                    tokio::task::yield_now().await;
                }
                (admitted, calls)
            }));
        }
    }
    let mut all = Vec::new();
    let mut calls = 0;
    for t in tasks {
        let (a, c) = t.await.unwrap();
        all.extend(a);
        calls += c;
    }
    all.sort();
    let mut most = 0;
    let mut j = 0;
    for i in 0..all.len() {
        while all[i].duration_since(all[j]) >= period {
            j += 1;
        }
        most = most.max(i - j + 1);
    }
    let quota = (burst + cells) as usize;
    let slack = replicas * (lease as usize - 1);
    format!(
        "lease_cells {lease:>2}: {calls} calls, {} admitted in {run:?}; most in one period {most} \
         vs burst+cells {quota} (over by {}), documented bound {}",
        all.len(),
        most.saturating_sub(quota),
        quota + slack
    )
}

fn main() {
    let Some(server) = Server::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let plain = rt.block_on(server.limiter(roomy("plain", 1)));
    let leased = rt.block_on(server.limiter(roomy("leased", 64)));

    rt.block_on(async {
        // Warm up (script load, connections).
        let _ = latency(&plain, 1, 1000).await;
        let _ = latency(&leased, 1, 1000).await;
        println!("redis rate limit, one caller:");
        println!("  no leases       {}", latency(&plain, 1, 20_000).await);
        println!("  lease_cells 64  {}", latency(&leased, 1, 20_000).await);
        println!("redis rate limit, 16 concurrent callers:");
        println!("  no leases       {}", latency(&plain, 16, 2_000).await);
        println!("  lease_cells 64  {}", latency(&leased, 16, 2_000).await);
        println!("over-admission, 4 replicas saturating 1000/s burst 100:");
        println!("  {}", over_admission(&server, 1).await);
        println!("  {}", over_admission(&server, 10).await);
    });

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("redis_rate_limit");
    group.bench_function("decision/no_lease", |b| {
        b.to_async(&rt).iter(|| plain.check(1));
    });
    group.bench_function("decision/lease_64", |b| {
        b.to_async(&rt).iter(|| leased.check(1));
    });
    group.finish();
    c.final_summary();
}
