//! The Redis rate limit against a real `redis-server`, started by each test on a free
//! loopback port and killed when the test ends.
//!
//! Without `redis-server` on the `PATH` (Debian package `redis-server`) each test says why
//! and passes; with the environment variable `CI` set, a missing server fails the test.
//! These tests run on real time (a real server), each for a few seconds at most.
#![allow(clippy::print_stderr, clippy::unwrap_used)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{BoxError, Deadline, RateLimited};
use palisade_rate_limit::RateLimitConfig;
use palisade_rate_limit::redis::{
    Decider, FailurePolicy, Mode, RedisLimitEvent, RedisLimiter, RedisRateLimitConfig,
    RedisRateLimitLayer,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestRunner};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

// ===== the server =====

/// A `redis-server` on a loopback port, killed on drop.
struct Server {
    child: Option<Child>,
    port: u16,
}

impl Server {
    /// Start one, or explain why not (and skip, unless under CI).
    fn start() -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            let why = "redis-server is not installed (Debian package `redis-server`)";
            assert!(
                std::env::var_os("CI").is_none(),
                "{why}; CI must install it"
            );
            eprintln!("skipping: {why}");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self { child: None, port };
        server.spawn();
        Some(server)
    }

    // Blocks for at most 5s while the server starts, before the test's tasks need it.
    #[allow(clippy::disallowed_methods)]
    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Bounded wait for the port to accept connections.
        for _ in 0..250 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server did not listen on port {} within 5s",
            self.port
        );
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn multiplexed(&self) -> MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// A connection manager with short timeouts of its own.
    async fn manager(&self) -> ConnectionManager {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(100)))
            .set_response_timeout(Some(Duration::from_millis(200)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10));
        ConnectionManager::new_with_config(redis::Client::open(self.url()).unwrap(), config)
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped server still dies of SIGKILL; continue it anyway for a clean exit.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

fn events() -> (
    Arc<Mutex<Vec<RedisLimitEvent>>>,
    impl Fn(&RedisLimitEvent) + Send + Sync + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    (seen, move |e: &RedisLimitEvent| {
        sink.lock().unwrap().push(e.clone());
    })
}

fn mode_changes(seen: &Mutex<Vec<RedisLimitEvent>>) -> Vec<(Mode, Mode)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            RedisLimitEvent::ModeChanged { from, to } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

// ===== the API of the local limiter, fleet-wide =====

#[tokio::test]
async fn same_api_as_the_local_limiter() -> Result<(), BoxError> {
    let Some(server) = Server::start() else {
        return Ok(());
    };
    // A local config becomes a fleet-wide one.
    let local = RateLimitConfig::builder(2, Duration::from_secs(1))
        .name("api")
        .build()?;
    let layer = RedisRateLimitLayer::new(
        RedisRateLimitConfig::from(local),
        server.multiplexed().await,
    )?;
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(
            |req: u32| async move { Ok::<_, BoxError>(req * 2) },
        ));
    assert_eq!(svc.ready().await?.call(1).await?, 2);
    assert_eq!(svc.ready().await?.call(2).await?, 4);
    let err = svc.ready().await?.call(3).await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().expect("rate limited");
    assert_eq!(limited.name().as_str(), "api");
    // The exact wait, as Redis computed it (less the time the calls took).
    let wait = limited.retry_after();
    assert!(
        wait <= Duration::from_millis(500) && wait > Duration::from_millis(400),
        "{wait:?}"
    );

    // Keyed, with a cost and wait mode: 1000 rows per second per tenant.
    struct Batch {
        tenant: &'static str,
        rows: u32,
    }
    let layer = RedisRateLimitConfig::builder(1000, Duration::from_secs(1))
        .name("ingest")
        .max_wait(Duration::from_secs(2))
        .build(server.multiplexed().await)?
        .key_by(|b: &Batch| b.tenant)
        .cost(|b: &Batch| b.rows);
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(
            |b: Batch| async move { Ok::<_, BoxError>(b.rows) },
        ));
    let start = Instant::now();
    svc.clone()
        .oneshot(Batch {
            tenant: "a",
            rows: 1000,
        })
        .await?;
    svc.clone()
        .oneshot(Batch {
            tenant: "b",
            rows: 1000,
        })
        .await?;
    assert!(start.elapsed() < Duration::from_millis(200));
    // Tenant a's quota is spent: its next 300 rows wait about 300ms.
    svc.clone()
        .oneshot(Batch {
            tenant: "a",
            rows: 300,
        })
        .await?;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_millis(800),
        "{waited:?}"
    );
    // More than the burst is refused for good.
    let err = svc
        .clone()
        .oneshot(Batch {
            tenant: "a",
            rows: 1001,
        })
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<RateLimited>().unwrap().is_permanent());
    // A free request costs nothing and never asks Redis.
    svc.clone()
        .oneshot(Batch {
            tenant: "a",
            rows: 0,
        })
        .await?;
    Ok(())
}

// ===== 4 replicas, one quota =====

#[tokio::test]
async fn fleet_never_exceeds_quota_plus_lease_slack() {
    let Some(server) = Server::start() else {
        return;
    };
    const REPLICAS: usize = 4;
    const CALLERS: usize = 4;
    let period = Duration::from_secs(1);
    let config = RedisRateLimitConfig::builder(200, period)
        .name("fleet")
        .burst(20)
        .lease_cells(8)
        .lease_ttl(Duration::from_millis(50))
        .expected_replicas(REPLICAS as u32)
        .call_timeout(Duration::from_millis(500));
    let slack = config.config().lease_slack();
    assert_eq!(slack, 4 * 7);
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        // Separate connections, separate limiters: separate replicas.
        let conn = server.multiplexed().await;
        let builder = RedisRateLimitConfig::builder(200, period)
            .name("fleet")
            .burst(20)
            .lease_cells(8)
            .lease_ttl(Duration::from_millis(50))
            .expected_replicas(REPLICAS as u32)
            .call_timeout(Duration::from_millis(500));
        replicas.push(builder.limiter(conn).unwrap());
    }
    let run = Duration::from_millis(2500);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for limiter in &replicas {
        for _ in 0..CALLERS {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                let mut admitted = Vec::new();
                let mut local = 0u32;
                let mut slowest = Duration::ZERO;
                while start.elapsed() < run {
                    let before = Instant::now();
                    let result = limiter.check_key("shared", 1).await;
                    slowest = slowest.max(before.elapsed());
                    match result {
                        Ok(a) => {
                            assert_ne!(a.by, Decider::Fallback);
                            local += u32::from(a.by == Decider::Local);
                            admitted.push(before);
                        }
                        Err(e) => assert!(!e.is_permanent()),
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                (admitted, local, slowest)
            }));
        }
    }
    let mut all = Vec::new();
    let mut local = 0;
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (admitted, l, s) = task.await.unwrap();
        all.extend(admitted);
        local += l;
        slowest = slowest.max(s);
    }
    all.sort();
    // The most admissions in any window of one period.
    let mut most = 0;
    let mut j = 0;
    for i in 0..all.len() {
        while all[i].duration_since(all[j]) >= period {
            j += 1;
        }
        most = most.max(i - j + 1);
    }
    // Admissions are stamped before their round trip; one decided at most `slowest` later
    // may fall in the next window: allow the cells of that much time.
    let interval = period / 200;
    let jitter = (slowest.as_nanos() / interval.as_nanos()) as u64 + 1;
    let bound = 20 + 200 + slack + jitter;
    eprintln!(
        "fleet: {} admitted in {run:?}, at most {most} in one period (bound {bound}: burst 20 \
         + cells 200 + lease slack {slack} + jitter {jitter}), {local} from leases, slowest \
         decision {slowest:?}",
        all.len()
    );
    assert!(most as u64 <= bound, "{most} > {bound}");
    // The quota is used, not starved: at least the cells of the run, less one lease each.
    let expected = (200.0 * run.as_secs_f64()) as usize + 20;
    assert!(
        all.len() + REPLICAS * 8 >= expected * 9 / 10,
        "{} admitted, expected about {expected}",
        all.len()
    );
    assert!(local > 0, "leases were never used");
}

// ===== failures =====

#[tokio::test]
async fn killing_redis_switches_to_the_policy_within_the_timeout_and_back() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let call_timeout = Duration::from_millis(100);
    let (seen, listener) = events();
    let limiter = RedisRateLimitConfig::builder(1000, Duration::from_secs(1))
        .name("kill")
        .expected_replicas(10)
        .call_timeout(call_timeout)
        .breaker_failures(2)
        .breaker_cooldown(Duration::from_millis(200))
        .failure(FailurePolicy::FailOpen)
        .on_event(listener)
        .limiter(server.manager().await)
        .unwrap();
    // Under a tenth of the quota per replica, so the fallback admits too.
    let margin = Duration::from_millis(60);
    let check = || async {
        let before = Instant::now();
        let result = limiter.check(1).await;
        let took = before.elapsed();
        assert!(took <= call_timeout + margin, "a caller waited {took:?}");
        result
    };
    assert_eq!(check().await.unwrap().by, Decider::Redis);
    assert_eq!(limiter.mode(), Mode::Redis);

    server.kill();
    let killed = Instant::now();
    // The first call after the kill is decided by the policy, within the call timeout.
    assert_eq!(check().await.unwrap().by, Decider::Fallback);
    let mut calls = 1;
    while limiter.mode() != Mode::FailOpen {
        assert_eq!(check().await.unwrap().by, Decider::Fallback);
        calls += 1;
        assert!(calls <= 2, "the breaker opens after 2 failures");
    }
    assert!(killed.elapsed() <= (call_timeout + margin) * 2);
    assert_eq!(mode_changes(&seen), vec![(Mode::Redis, Mode::FailOpen)]);
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, RedisLimitEvent::RedisFailed { .. }))
    );
    // The breaker is open: no round trip, the fallback decides at once.
    let before = Instant::now();
    assert_eq!(limiter.check(1).await.unwrap().by, Decider::Fallback);
    assert!(before.elapsed() < Duration::from_millis(20));

    server.spawn();
    let back = Instant::now();
    loop {
        let admitted = check().await.unwrap();
        if admitted.by == Decider::Redis {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "never went back to Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(limiter.mode(), Mode::Redis);
    assert_eq!(
        mode_changes(&seen),
        vec![(Mode::Redis, Mode::FailOpen), (Mode::FailOpen, Mode::Redis)]
    );
    eprintln!("back on Redis {:?} after the restart", back.elapsed());
}

#[tokio::test]
async fn a_hung_redis_fails_closed_and_no_caller_waits_past_its_deadline() {
    let Some(server) = Server::start() else {
        return;
    };
    let call_timeout = Duration::from_millis(150);
    let (seen, listener) = events();
    let limiter: RedisLimiter = RedisRateLimitConfig::builder(1000, Duration::from_secs(1))
        .name("hung")
        .call_timeout(call_timeout)
        .breaker_failures(3)
        .breaker_cooldown(Duration::from_millis(300))
        .failure(FailurePolicy::FailClosed)
        .on_event(listener)
        .limiter(server.multiplexed().await)
        .unwrap();
    assert_eq!(limiter.check(1).await.unwrap().by, Decider::Redis);

    // SIGSTOP: the server accepts nothing and answers nothing, the worst case.
    server.signal("-STOP");
    let margin = Duration::from_millis(60);
    // A caller with a 30ms deadline gets its answer by then, not at the call timeout.
    let before = Instant::now();
    let deadline = Deadline::after(Duration::from_millis(30));
    let err = deadline.scope(|| limiter.check(1)).await.unwrap_err();
    let took = before.elapsed();
    assert!(
        took >= Duration::from_millis(25) && took <= Duration::from_millis(30) + margin,
        "{took:?}"
    );
    assert!(!err.is_permanent());
    // A deadline cut is not Redis's failure: the breaker did not count it.
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, RedisLimitEvent::RedisFailed { .. }))
    );
    // Concurrent callers without deadlines: each refused within the call timeout.
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let before = Instant::now();
                let result = limiter.check(1).await;
                (result, before.elapsed())
            })
        })
        .collect();
    for caller in callers {
        let (result, took) = caller.await.unwrap();
        assert!(result.is_err(), "fail-closed admitted a call");
        assert!(took <= call_timeout + margin, "a caller waited {took:?}");
    }
    assert_eq!(limiter.mode(), Mode::FailClosed);
    // Open: refused at once, told to come back at the next probe.
    let err = limiter.check(1).await.unwrap_err();
    assert!(err.retry_after() <= Duration::from_millis(300), "{err}");

    server.signal("-CONT");
    let back = Instant::now();
    loop {
        if let Ok(admitted) = limiter.check(1).await {
            assert_eq!(admitted.by, Decider::Redis);
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "never went back to Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(limiter.mode(), Mode::Redis);
    assert_eq!(
        mode_changes(&seen),
        vec![
            (Mode::Redis, Mode::FailClosed),
            (Mode::FailClosed, Mode::Redis)
        ]
    );
}

// ===== memory =====

#[tokio::test]
async fn keys_are_namespaced_and_expire() {
    let Some(server) = Server::start() else {
        return;
    };
    let mut conn = server.multiplexed().await;
    // 10 cells per 200ms: one cell is 20ms.
    let limiter = RedisRateLimitConfig::builder(10, Duration::from_millis(200))
        .name("ttl")
        .limiter(conn.clone())
        .unwrap();
    assert_eq!(limiter.redis_key(Some("k")), "palisade:rl:{ttl}:k");
    assert_eq!(limiter.redis_key(None), "palisade:rl:{ttl}");
    limiter.check_key("k", 5).await.unwrap();
    limiter.check(1).await.unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg("palisade:rl:{ttl}:k")
        .query_async(&mut conn)
        .await
        .unwrap();
    // The key lives until it would be fresh again: 5 cells × 20ms.
    assert!((50..=100).contains(&pttl), "{pttl}");
    let pttl: i64 = redis::cmd("PTTL")
        .arg("palisade:rl:{ttl}")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=20).contains(&pttl), "{pttl}");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("palisade:rl:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    // And the replica's own map forgets idle keys too (swept every 1024 decisions).
    for i in 0..1100 {
        let _ = limiter.check_key(i % 3, 1).await;
    }
    assert!(limiter.local_keys() <= 3, "{}", limiter.local_keys());
}

// ===== against a model =====

/// GCRA as the docs state it, on the caller's clock.
struct Model {
    tat: f64,
    interval: f64,
    burst: f64,
}

impl Model {
    /// `Ok` or the wait, and how far from the boundary the decision was (seconds).
    fn check(&mut self, now: f64, n: u32) -> (Result<(), f64>, f64) {
        let tat = self.tat.max(now);
        let new_tat = tat + f64::from(n) * self.interval;
        let tau = self.burst * self.interval;
        let over = new_tat - now - tau;
        if over <= 0.0 {
            self.tat = new_tat;
            (Ok(()), -over)
        } else {
            (Err(over), over)
        }
    }
}

#[test]
fn matches_a_local_gcra_model_on_the_same_arrivals() {
    let Some(server) = Server::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conn = runtime.block_on(server.multiplexed());
    // Every arrival comes from a new replica, which knows nothing locally: each decision is
    // the script's own.
    let replica = || {
        RedisRateLimitConfig::builder(50, Duration::from_secs(1))
            .name("model")
            .burst(5)
            .limiter(conn.clone())
            .unwrap()
    };
    // 50/s, burst 5: one cell per 20ms. Arrivals 0-40ms apart, 0-3 cells.
    let arrivals = prop::collection::vec((0u64..40, 0u32..=3), 4..12);
    let mut runner = TestRunner::new(PropConfig {
        cases: 6,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&arrivals, |arrivals| {
            let key = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            runtime.block_on(async {
                let mut model = Model {
                    tat: 0.0,
                    interval: 0.02,
                    burst: 5.0,
                };
                let origin = Instant::now();
                let mut slowest = 0.0f64;
                for (gap, cost) in arrivals {
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                    let replica = replica();
                    let now = origin.elapsed().as_secs_f64();
                    let got = replica.check_key(key, cost).await;
                    // Redis decided somewhere between `now` and now, and decided earlier
                    // arrivals as late after theirs: where the model is closer to its
                    // boundary than twice the slowest call (plus 1ms), Redis's decision
                    // stands for both.
                    slowest = slowest.max(origin.elapsed().as_secs_f64() - now);
                    let tolerance = 2.0 * slowest + 0.001;
                    let (want, margin) = model.check(now, cost);
                    if margin < tolerance {
                        if got.is_ok() && want.is_err() {
                            model.tat = model.tat.max(now) + f64::from(cost) * 0.02;
                        } else if got.is_err() && want.is_ok() {
                            model.tat -= f64::from(cost) * 0.02;
                        }
                        continue;
                    }
                    match (&got, want) {
                        (Ok(_), Ok(())) => {}
                        (Err(e), Err(wait)) => {
                            let diff = (e.retry_after().as_secs_f64() - wait).abs();
                            prop_assert!(diff < tolerance, "retry_after {e} vs model {wait}s");
                        }
                        _ => prop_assert!(false, "redis {got:?} vs model {want:?} at {now}s"),
                    }
                }
                Ok(())
            })
        })
        .unwrap();
}

// ===== tower's readiness contract (no server needed: Redis unreachable) =====

/// Fails if `call` comes before `poll_ready`; a clone of a ready service is not ready.
struct MustBeReady {
    ready: bool,
}

impl Clone for MustBeReady {
    fn clone(&self) -> Self {
        Self { ready: false }
    }
}

impl Service<u32> for MustBeReady {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.ready = true;
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u32) -> Self::Future {
        assert!(self.ready, "call before poll_ready");
        self.ready = false;
        std::future::ready(Ok(req))
    }
}

#[tokio::test]
async fn calls_only_the_readied_service_while_redis_is_unreachable() -> Result<(), BoxError> {
    // A free port nobody listens on: every round trip is refused at once.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let conn = ConnectionManager::new_lazy_with_config(
        client,
        ConnectionManagerConfig::new().set_number_of_retries(0),
    )?;
    let (seen, listener) = events();
    let layer = RedisRateLimitConfig::builder(4, Duration::from_secs(60))
        .name("contract")
        .expected_replicas(2)
        .breaker_failures(1)
        .on_event(listener)
        .build(conn)?;
    let limiter = layer.limiter().clone();
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(MustBeReady { ready: false });
    // Fail-open at 4 / 2 replicas: two calls admitted by the fallback, then refused.
    assert_eq!(svc.ready().await?.call(1).await?, 1);
    assert_eq!(limiter.mode(), Mode::FailOpen);
    assert_eq!(svc.ready().await?.call(2).await?, 2);
    let err = svc.ready().await?.call(3).await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().expect("rate limited");
    assert!(limited.retry_after() > Duration::from_secs(20), "{limited}");
    assert!(seen.lock().unwrap().iter().any(|e| matches!(
        e,
        RedisLimitEvent::RateLimited {
            by: Decider::Fallback,
            ..
        }
    )));
    Ok(())
}

// ===== the local fast path =====

#[tokio::test]
async fn certain_refusals_and_leases_skip_the_round_trip() {
    let Some(server) = Server::start() else {
        return;
    };
    let (seen, listener) = events();
    let limiter = RedisRateLimitConfig::builder(2, Duration::from_secs(10))
        .name("fast")
        .on_event(listener)
        .limiter(server.multiplexed().await)
        .unwrap();
    assert_eq!(limiter.check(1).await.unwrap().by, Decider::Redis);
    assert_eq!(limiter.check(1).await.unwrap().by, Decider::Redis);
    // Redis said the quota is spent until 5s from now: no need to ask again.
    for _ in 0..3 {
        let err = limiter.check(1).await.unwrap_err();
        assert!(err.retry_after() > Duration::from_millis(4_900), "{err}");
    }
    let refusals: Vec<Decider> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            RedisLimitEvent::RateLimited { by, .. } => Some(*by),
            _ => None,
        })
        .collect();
    assert_eq!(refusals, vec![Decider::Local; 3]);

    // Leases: a replica asks for the cells it used lately, then admits from the lease.
    let limiter = RedisRateLimitConfig::builder(1000, Duration::from_secs(1))
        .name("lease")
        .lease_cells(10)
        .limiter(server.multiplexed().await)
        .unwrap();
    let mut by = Vec::new();
    for _ in 0..40 {
        by.push(limiter.check(1).await.unwrap().by);
    }
    let trips = by.iter().filter(|b| **b == Decider::Redis).count();
    assert!(trips < 15, "{trips} round trips for 40 calls: {by:?}");
    // The leased cells were taken in Redis: 40 calls used at most 40 + 9 cells.
    let mut conn = server.multiplexed().await;
    let tat: f64 = redis::cmd("GET")
        .arg(limiter.redis_key(None))
        .query_async::<String>(&mut conn)
        .await
        .unwrap()
        .parse()
        .unwrap();
    let time: (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let now = (time.0 - 1_700_000_000) as f64 * 1e6 + time.1 as f64;
    let used = (tat - now) / 1000.0; // cells of 1ms still ahead
    assert!(used <= 49.0, "{used} cells ahead");
}
