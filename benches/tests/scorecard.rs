//! The scorecard's incidents as tests: palisade's default stack (exactly the README's
//! recommended stack with default configs) must hold the bar in every incident, with each
//! threshold derived (in a comment) from the incident's arithmetic and the numbers the
//! scorecard reports (`cargo run --release -p palisade-benches --bin scorecard`; the runs
//! are deterministic, so the table and these tests see the same runs). A change of defaults
//! that loses an incident fails here.

use std::time::Duration;

use palisade_benches::scorecard::{self, Row, StackKind};

const CANDIDATE: StackKind = StackKind::PalisadeDefault;

/// Every stack through one incident.
struct Card {
    rows: Vec<Row>,
}

impl Card {
    fn run(name: &str) -> Self {
        let rows = scorecard::run_all_stacks(name).expect("a known incident");
        #[allow(
            clippy::print_stdout,
            reason = "the table helps when a threshold fails"
        )]
        {
            println!("{}", scorecard::markdown(&rows));
        }
        Self { rows }
    }

    fn get(&self, stack: StackKind) -> &Row {
        self.rows
            .iter()
            .find(|r| r.stack == stack)
            .expect("every stack ran")
    }

    fn candidate(&self) -> &Row {
        self.get(CANDIDATE)
    }

    fn none(&self) -> &Row {
        self.get(StackKind::None)
    }

    /// The best goodput of the stacks that are not palisade's.
    fn best_other(&self) -> f64 {
        self.rows
            .iter()
            .filter(|r| {
                !matches!(
                    r.stack,
                    StackKind::PalisadeDefault
                        | StackKind::PalisadeTuned
                        | StackKind::PalisadeThrottle
                )
            })
            .map(|r| r.goodput)
            .fold(0.0, f64::max)
    }

    /// The bar every incident shares, with the incident's own goodput tolerances:
    /// - goodput ≥ no resilience − `vs_none` and ≥ the best other stack − `vs_best`;
    /// - amplification ≤ 1.2 over the run (the budget's 20%) and ≤ 1.3 in the fault's
    ///   first second: the budget (1 s of deposits, 20%, a floor of 3/s) can lend at most
    ///   (100 + 20 + 3) / 100 = 1.23 there, plus Poisson noise between the second that
    ///   deposits and the second that withdraws (the heavy-errors incident, where the
    ///   breaker rightly stays closed and the budget alone bounds retries, reports 1.27);
    /// - never metastable, and recovered at most 1 s after no resilience recovered (one
    ///   100 ms open interval plus a probe that may hang for the 300 ms attempt timeout, at
    ///   the report's 1 s resolution).
    fn holds_the_bar(&self, vs_none: f64, vs_best: f64) {
        let c = self.candidate();
        let table = scorecard::markdown(&self.rows);
        assert!(
            c.goodput >= self.none().goodput - vs_none,
            "below no resilience:\n{table}"
        );
        assert!(
            c.goodput >= self.best_other() - vs_best,
            "below the best other stack:\n{table}"
        );
        assert!(c.amplification <= 1.2, "amplification:\n{table}");
        assert!(
            c.first_second_amplification <= 1.3,
            "first-second amplification:\n{table}"
        );
        assert!(!c.metastable, "metastable:\n{table}");
        let none_ttr = self.none().time_to_recover.expect("no resilience recovers");
        let ttr = c.time_to_recover.expect("the candidate recovers");
        assert!(
            ttr <= none_ttr + Duration::from_secs(1),
            "recovery:\n{table}"
        );
        // The tuned stack (HTTP-aware classifiers) never amplifies past its budget either.
        assert!(
            self.get(StackKind::PalisadeTuned).amplification <= 1.2,
            "tuned amplification:\n{table}"
        );
    }
}

#[test]
fn random_errors() {
    let card = Card::run("random-errors");
    // 10% of calls fail for 15 s: no resilience loses 10% × 1500 = 150 requests, 3.3 req/s
    // (reported 96.2). Retrying within a 20% budget hides nearly all of them (1 + 0.1 + 0.01
    // attempts per request): every retrying stack reports 99.7-99.8. Tolerances: 0.1 req/s
    // (five requests in 45 s).
    card.holds_the_bar(-3.0, 0.1);
}

#[test]
fn heavy_errors() {
    let card = Card::run("heavy-errors");
    // 60% of calls fail for 15 s: no resilience serves 40% of them, 30 × 100 + 15 × 40 =
    // 3600 requests, 80 req/s (reported 80.0). The breaker stays closed (60% is under its
    // 80% threshold: the backend still answers), and the budget lends about 23 retries a
    // second, each succeeding 40% of the time: about +9 req/s during the fault, +3 over
    // the run (reported 82.5). Demand +1.5. At the old 50% threshold the breaker opened on
    // this backend and served 72 (8 below no resilience). Stacks without a budget (tower:
    // 3 attempts, 1.31 backend calls per request) succeed 1 - 0.6³ = 78% of the time during
    // the fault against the candidate's ≈ 50%: (78 - 50) × 15 / 45 ≈ 9.5 req/s, the price
    // of the 20% budget (reported 9.9): tolerance 11.
    card.holds_the_bar(-1.5, 11.0);
}

#[test]
fn outage() {
    let card = Card::run("outage");
    // Nothing can succeed in the 15 s outage: at most 30 s × 100 = 3000 of 4500 requests,
    // 66.7 req/s plus Poisson luck (no resilience reports 67.7). A breaker refuses calls
    // for up to one open interval after the backend is back, plus a probe's round trip:
    // about 120 ms × 100 req/s = 12 requests = 0.27 req/s (reported 67.6 when refused
    // calls failed at once); retrying stacks win back the requests of the outage's last
    // ~150 ms (tower's 50 + 100 ms backoff), 15 requests = 0.33 req/s (tower reports 68.0).
    // The default retries until the caller's 2 s deadline, and a call the open breaker
    // refused is retried when its next probe may go, free of the budget (it never reached
    // the backend): a request of the outage's last 2 s waits for the backend and is
    // served when the probe closes the breaker, up to 200 requests = 4.4 req/s (reported
    // 69.9, 2.2 above; 67.9 with 4 attempts, 67.6 when refused calls failed at once).
    // Demand 1.5 above no resilience and no loss against the best other stack.
    card.holds_the_bar(-1.5, 0.0);
    // The breaker keeps the dead backend's load low: probes only (one per 100 ms at most),
    // where naive retry triples the load in the first second (3 attempts, reported 3.00).
    assert!(card.candidate().amplification < 0.8);
    assert!(card.get(StackKind::NaiveRetry).first_second_amplification > 2.9);
}

#[test]
fn latency_spike() {
    let card = Card::run("latency-spike");
    // Every call takes 3 s more for 15 s, longer than the client's 2 s deadline: as in the
    // outage nothing succeeds during it, and the breaker (opened on timed-out attempts)
    // costs at most one 100 ms open interval after it, plus a probe's round trip: a probe
    // sent during the spike hangs for the 300 ms attempt timeout, but while it is out
    // another goes each open interval, and the first to answer decides; callers refused
    // meanwhile retry when the next probe may go (free of the budget), until their
    // deadline, so those of the spike's last 2 s that have not timed out an attempt are
    // served after it. The adaptive limit (timed-out attempts with no fast answer around
    // them decrease it) stays at or above its floor of 4, so a paced probe is not queued
    // behind the hung one. Reported 69.4 against 67.7 (tower 68.0): demand 1.5 above no
    // resilience and no loss against the best other stack.
    card.holds_the_bar(-1.5, 0.0);
    // The incident bites: unbudgeted retries of timed-out attempts (tower-resilience: 3
    // attempts, no budget) keep the queue full after the spike, a metastable failure.
    assert!(card.get(StackKind::TowerResilience).metastable);
}

#[test]
fn brown_out() {
    let card = Card::run("brown-out");
    // 30% of calls take 3 s more for 15 s. No resilience waits for them past the 2 s
    // deadline: 30% × 1500 = 450 requests lost, 10 req/s (reported 90.0). The candidate
    // retries timed-out attempts within its 20% budget: 20 of the 30 slow requests per
    // second get a second attempt, 70% of those succeed: +14 req/s for 15 s = +4.7 req/s
    // (reported 95.1). Demand ≥ +3. Stacks without a budget retry all 30 (1.4x load
    // during the fault) and succeed ≈ 99% of the time during it (reported 99.0): the
    // candidate's in-fault success is ≈ 70% + 21 × 0.7 ≈ 85%, so it may trail them by
    // (99 - 85) × 15 / 45 ≈ 4.8 req/s, the price of the 20% budget (4.4-5.5 on three
    // seeds): tolerance 6.
    card.holds_the_bar(-3.0, 6.0);
}

#[test]
fn flapping() {
    let card = Card::run("flapping");
    // Down 2 s, up 3 s, three times. Each return costs the breaker at most one 100 ms open
    // interval plus a probe's round trip (failures are fast here): about 12 requests; three
    // returns = 36 requests = 0.8 req/s (0.4 below no resilience's 87.0 when refused calls
    // failed at once). Retrying stacks win back the end of each down phase, 3 × 15
    // requests = 1 req/s (tower reports 87.9). The default retries the breaker's refusals
    // when the next probe may go, free of the budget, until the caller's 2 s deadline: a
    // request of a 2 s down phase waits for the next up phase, so nearly every request is
    // served (three down phases of 200 requests, at most 600 = 13 req/s; reported 93.0,
    // 6.0 above). Demand 5 above no resilience and no loss against the best other stack.
    card.holds_the_bar(-5.0, 0.0);
}

#[test]
fn gradual_recovery() {
    let card = Card::run("gradual-recovery");
    // Down 10-15 s, then capacity ramps from 0 to 150/s until 35 s; it passes the 100 req/s
    // load at 15 + 20 × 100/150 ≈ 28.3 s. No resilience lets the backend's own queue shed
    // what the ramp cannot serve yet (reported 74.6). The default's breaker costs at most
    // one 100 ms open interval when the backend starts answering again (0.27 req/s), and
    // its adaptive limit (AIMD, decreasing at most once per round trip when answers take
    // over 150 ms) backs off below what the ramp could just have served: 73.0, 1.6 below,
    // when calls over the limit were refused. The default's limit now queues them (up to
    // 1 s, within the deadline) as no resilience's backend does, and a timed-out attempt
    // with no fast answer around it is a decrease, so the limit follows the ramp without
    // filling the backend with abandoned attempts: reported 75.0, the best. Demand no loss
    // against no resilience (the best other stack here).
    card.holds_the_bar(0.0, 0.0);
    // The incident bites: unbudgeted retries over the ramp (tower built-ins) keep the
    // recovering backend saturated and never recover.
    assert!(card.get(StackKind::Tower).metastable);
    assert!(card.get(StackKind::Tower).time_to_recover.is_none());
}

#[test]
fn overload_2x() {
    let card = Card::run("overload-2x");
    // Capacity falls to 50/s under 100 req/s for 15 s: about (30 × 100 + 15 × 50) / 45 =
    // 83.3 req/s. No resilience gets 85.5 because its calls may queue up to 1 s (within
    // the 2 s deadline), so its backend never idles and the calls queued at the fault's
    // end are served at full speed: up to 2 s of the faulted 50/s, 100 requests = 2.2
    // req/s. When the candidate's adaptive limit refused calls over it, it lost that
    // margin (84.4, 1.1 below, p99 300 ms) and, on some seeds, a second at the overload's
    // onset, where every attempt timed out in the backend's queue and the limit, fed by
    // answers only, stayed up. Now calls over the limit wait (up to 1 s, within the
    // deadline: a client-side queue in place of the backend's, drained when capacity
    // returns), and timed-out attempts with no fast answer around them decrease the limit:
    // reported 86.3 (p99 2 s: the waits the caller's deadline allows). Demand no loss
    // against no resilience (the best other stack here), and ≥ 98% of 83.3.
    card.holds_the_bar(0.0, 0.0);
    assert!(card.candidate().goodput >= 0.98 * 83.3);
    // The incident bites: retries without a budget over an overloaded backend collapse.
    assert!(card.get(StackKind::Tower).metastable);
}

#[test]
fn retry_storm() {
    let card = Card::run("retry-storm");
    // A 3 s blackhole (calls take 10 s more): its 300 requests fail for everyone, at most
    // (4500 - 300) / 45 = 93.3 req/s (reported 93.4 for no resilience, 93.7 for tower,
    // whose 150 ms of backoff outlives the blackhole for its last requests: 15 requests =
    // 0.33 req/s). The breaker opened in the blackhole closes after it within one 100 ms
    // open interval and a probe's round trip (a probe sent into the blackhole hangs for
    // the 300 ms attempt timeout, but another goes each open interval while it is out);
    // at worst 40 requests = 0.9 req/s (93.4, level, when refused calls failed at once).
    // Now refusals by the open breaker and the limit retry free of the budget until the
    // caller's deadline and calls over the limit wait, so requests of the blackhole's last
    // seconds are served when it clears: reported 96.0, the best (16 seeds: +2.65 against
    // no resilience). It was 94.6 (+1.65) while a refused request left the limit's slot,
    // readied under the open breaker, in its caller's service as its retries took another;
    // `retry/tests/refusals.rs` holds that fix. Demand 2 above no resilience and no loss
    // against the best other stack.
    card.holds_the_bar(-2.0, 0.0);
}

#[test]
fn rate_limited() {
    let card = Card::run("rate-limited");
    // A 60/s quota under 100 req/s for 15 s: 40 requests a second get a 429 whose
    // Retry-After points at the next second. No resilience serves 60/s (reported 87.7).
    // Retries can only take quota that new requests would also have used, so no stack can
    // beat the quota by much (tower: 88.0). The default stack cannot tell a 429 in a
    // `BoxError` from a failure, so its breaker opens briefly on them and its retries
    // ignore the Retry-After: reported 87.7, level with no resilience (0.1 below with the
    // old 50% threshold): no loss (and 0.5 below the best). With the HTTP classifiers (`palisade-http`:
    // a 429 is not a failure, its Retry-After is honoured) the tuned stack serves 88.2,
    // the best: asserted below.
    card.holds_the_bar(0.0, 0.5);
    let tuned = card.get(StackKind::PalisadeTuned);
    assert!(
        tuned.goodput >= card.best_other() && tuned.amplification <= 1.2,
        "tuned:\n{}",
        scorecard::markdown(&card.rows)
    );

    // The throttle gate (an opt-in stack, not the candidate) trades a little goodput for a
    // lighter upstream: after a 429 it holds every caller until the next second, then
    // probes and ramps back up, so the upstream receives fewer calls over quota. Reported:
    // amplification 0.86 against the tuned stack's 1.06 (0.64 in the fault's first second,
    // against 1.00), goodput 86.0 against 88.2 (no resilience 87.7), since its ramp
    // reopens below the quota at each second.
    let gate = card.get(StackKind::PalisadeThrottle);
    let c = card.get(StackKind::PalisadeTuned);
    let table = scorecard::markdown(&card.rows);
    assert!(
        gate.amplification < 0.9 && gate.amplification < c.amplification - 0.15,
        "the gate spares the upstream:\n{table}"
    );
    assert!(
        gate.first_second_amplification < 0.75,
        "the gate holds callers back in the fault's first second:\n{table}"
    );
    assert!(
        gate.goodput >= card.none().goodput - 2.0,
        "the gate costs at most 2 req/s of goodput:\n{table}"
    );
    assert!(!gate.metastable, "{table}");
}

#[test]
fn hangs() {
    let card = Card::run("hangs");
    // 5% of calls never answer for 15 s: no resilience loses 75 requests = 1.7 req/s (they
    // wait for the 2 s deadline, reported 98.2). The attempt timeout (300 ms) and one retry
    // win them back: reported 99.8. Demand +1.
    card.holds_the_bar(-1.0, 0.1);
}

/// The default stack's promises are not one seed's luck: on three other seeds (arrivals,
/// latencies, faults and jitter all redrawn), in every incident it is never metastable,
/// never amplifies past its budget over a run, and never trails no resilience. Reported:
/// level in the rate-limited incident (a 429 in a `BoxError` is a failure to the default
/// classifiers), ahead by 0.2 to 0.8 in the capacity incidents (gradual recovery,
/// overload), by 1.8 to 6.5 where waiting for the backend within the deadline wins
/// (outage, latency spike, flapping, retry storm) and by 1.6 to 5.4 where retries win
/// (random and heavy errors, brown-out, hangs). Tolerance 0.1 (5 requests in 45 s). Before calls over the adaptive limit waited and timed-out attempts
/// could decrease it, the 2× overload on seed 3 trailed by 3.2 (an onset collapse: a
/// second of attempts timing out in the backend's queue while the limit stayed up).
#[test]
fn the_defaults_hold_on_other_seeds() {
    for incident in scorecard::incidents() {
        for seed in 1..=3 {
            let none = scorecard::run_incident_seeded(&incident, StackKind::None, seed);
            let default =
                scorecard::run_incident_seeded(&incident, StackKind::PalisadeDefault, seed);
            let what = format!(
                "{} seed {seed}: default {:.1} req/s (amp {:.2}, metastable {}), none {:.1}",
                incident.name,
                default.goodput,
                default.amplification,
                default.metastable,
                none.goodput
            );
            assert!(!default.metastable, "{what}");
            assert!(default.amplification <= 1.2, "{what}");
            assert!(default.goodput >= none.goodput - 0.1, "{what}");
        }
    }
}
