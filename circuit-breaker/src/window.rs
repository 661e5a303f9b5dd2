//! The sliding windows: the last N outcomes (count window) or the last T seconds of
//! outcomes in B buckets (time window).
//!
//! Both keep a running aggregate next to their slots, so recording an outcome and reading
//! the window's totals are O(1) atomic operations whatever the window size or the traffic.
//! Every change to a slot or a bucket applies the exact difference (new - old) to the
//! aggregate, so the aggregate always converges to the sum of the slots, even under races.

use crate::sync::{AtomicU64, Ordering, Padded};

/// Totals of one window: how many calls it holds and how many of them failed or were slow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Counts {
    /// Failure rate in percent (0 when empty).
    pub(crate) fn failure_rate(self) -> f64 {
        percent(self.failures, self.calls)
    }

    /// Slow-call rate in percent (0 when empty).
    pub(crate) fn slow_rate(self) -> f64 {
        percent(self.slow, self.calls)
    }
}

/// `part` of `whole` in percent; 0 when `whole` is 0.
pub(crate) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

// ===== Aggregate =====

/// Offset stored in each field so a transiently negative total (a bucket's old counts
/// subtracted by the thread that reset it before their writer added them) never borrows
/// from the neighbouring field.
const BIAS: u64 = 1 << 31;
const LOW32: u64 = u32::MAX as u64;

/// Running totals: `calls` and `failures` packed in one word (one `fetch_add` per call),
/// `slow` in a second word touched only when a slow count changes.
#[derive(Debug)]
struct Aggregate {
    calls_failures: AtomicU64,
    slow: AtomicU64,
}

impl Aggregate {
    fn new() -> Self {
        Self {
            calls_failures: AtomicU64::new(BIAS | (BIAS << 32)),
            slow: AtomicU64::new(BIAS),
        }
    }

    /// Apply a signed change and return the totals after it.
    fn add(&self, calls: i64, failures: i64, slow: i64) -> Counts {
        // Linear in both fields, so the wrapping sum is exact as long as each field's true
        // value stays within +-2^31, which the window sizes guarantee.
        let delta = (calls as u64).wrapping_add((failures as u64).wrapping_shl(32));
        let cf = if delta == 0 {
            self.calls_failures.load(Ordering::Acquire)
        } else {
            self.calls_failures
                .fetch_add(delta, Ordering::AcqRel)
                .wrapping_add(delta)
        };
        let s = if slow == 0 {
            self.slow.load(Ordering::Acquire)
        } else {
            self.slow
                .fetch_add(slow as u64, Ordering::AcqRel)
                .wrapping_add(slow as u64)
        };
        decode(cf, s)
    }

    fn load(&self) -> Counts {
        decode(
            self.calls_failures.load(Ordering::Acquire),
            self.slow.load(Ordering::Acquire),
        )
    }
}

fn decode(calls_failures: u64, slow: u64) -> Counts {
    let field = |v: u64| (v & LOW32).saturating_sub(BIAS);
    let calls = field(calls_failures);
    // Clamp: under a race a part may briefly read above its whole.
    Counts {
        calls,
        failures: field(calls_failures >> 32).min(calls),
        slow: field(slow).min(calls),
    }
}

// ===== Window =====

/// A count or a time window.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    /// Record one counted outcome at `now` (nanoseconds since the breaker's origin; only
    /// the time window reads it) and return the window's totals after it.
    #[inline]
    pub(crate) fn record(&self, now: impl FnOnce() -> u64, failure: bool, slow: bool) -> Counts {
        match self {
            Window::Count(w) => w.record(failure, slow),
            Window::Time(w) => w.record(now(), failure, slow),
        }
    }

    /// The totals as of `now` (exact for the time window: stale buckets are skipped).
    pub(crate) fn counts(&self, now: impl FnOnce() -> u64) -> Counts {
        match self {
            Window::Count(w) => w.counts(),
            Window::Time(w) => w.counts(now()),
        }
    }

    /// Forget every outcome.
    pub(crate) fn clear(&self) {
        match self {
            Window::Count(w) => w.clear(),
            Window::Time(w) => w.clear(),
        }
    }
}

// ===== CountWindow =====

/// A signed running total (wrapping, read clamped at 0) touched only when it changes.
#[derive(Debug)]
struct Tally(AtomicU64);

impl Tally {
    fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Add `delta` and return the total after it.
    #[inline]
    fn add(&self, delta: i64) -> u64 {
        let total = if delta == 0 {
            self.0.load(Ordering::Acquire)
        } else {
            self.0
                .fetch_add(delta as u64, Ordering::AcqRel)
                .wrapping_add(delta as u64)
        };
        // Under a ring wrap-around race a slot's old value can be subtracted before its
        // writer added it: the total is briefly negative, never wrong once both are done.
        (total as i64).max(0) as u64
    }
}

/// `a % d` for a fixed `d < 2^32` with multiplications instead of a division (Lemire's
/// "fastmod", with a 128-bit magic number so it is exact for every 64-bit `a`).
#[derive(Debug, Clone, Copy)]
struct FastMod {
    d: u64,
    magic: u128,
}

impl FastMod {
    fn new(d: u32) -> Self {
        let d = u64::from(d.max(1));
        Self {
            d,
            magic: (u128::MAX / u128::from(d)).wrapping_add(1),
        }
    }

    #[inline]
    fn rem(self, a: u64) -> u64 {
        let low = self.magic.wrapping_mul(u128::from(a));
        // The high 128 bits of the 160-bit product `low * d`.
        let high = (low >> 64) * u128::from(self.d);
        let carry = (u128::from(low as u64) * u128::from(self.d)) >> 64;
        ((high + carry) >> 64) as u64
    }
}

/// A ring of the last `N` outcomes as two bitsets (failed, slow). Each record overwrites
/// the oldest slot, so the window truly slides: after 1,000 successes, the failures that
/// push the rate of the last `N` calls over the threshold are enough.
///
/// The call count comes from the ring's cursor, and a slot's bit is written (with an
/// atomic read-modify-write that also adjusts the running total) only when it changes, so a
/// steady state with failures in the window costs one atomic read-modify-write per call,
/// the cursor, and a full window of fast successes none (a success then changes nothing).
#[derive(Debug)]
pub(crate) struct CountWindow {
    failed: Box<[AtomicU64]>,
    slow: Box<[AtomicU64]>,
    len: FastMod,
    /// Written by every call: kept off the lines the other fields are read from.
    cursor: Padded<AtomicU64>,
    /// The cursor when the window was last cleared.
    base: AtomicU64,
    failures: Tally,
    slows: Tally,
}

fn bitset(bits: u32) -> Box<[AtomicU64]> {
    (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect()
}

/// Set bit `i` of `words` to `value`; returns the change in the number of set bits.
#[inline]
fn set_bit(words: &[AtomicU64], i: u64, value: bool) -> i64 {
    let word = &words[(i / 64) as usize];
    let mask = 1u64 << (i % 64);
    if (word.load(Ordering::Acquire) & mask != 0) == value {
        return 0;
    }
    let old = if value {
        word.fetch_or(mask, Ordering::AcqRel)
    } else {
        word.fetch_and(!mask, Ordering::AcqRel)
    };
    i64::from(value) - i64::from(old & mask != 0)
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        let size = size.max(1);
        Self {
            failed: bitset(size),
            slow: bitset(size),
            len: FastMod::new(size),
            cursor: Padded(AtomicU64::new(0)),
            base: AtomicU64::new(0),
            failures: Tally::new(),
            slows: Tally::new(),
        }
    }

    #[inline]
    fn calls(&self, cursor: u64) -> u64 {
        cursor
            .saturating_sub(self.base.load(Ordering::Acquire))
            .min(self.len.d)
    }

    #[inline]
    fn record(&self, failure: bool, slow: bool) -> Counts {
        if !failure && !slow {
            // A healthy steady state: the window is full and every slot holds a fast
            // success. One more leaves the last N outcomes as they were, so nothing is
            // written, not even the cursor (while the slots are all alike, which one the next
            // outcome overwrites does not matter): a read-only call, and under contention no
            // cache line moves between cores.
            let calls = self.calls(self.cursor.load(Ordering::Acquire));
            if calls == self.len.d && self.failures.add(0) == 0 && self.slows.add(0) == 0 {
                return Counts {
                    calls,
                    failures: 0,
                    slow: 0,
                };
            }
        }
        let seq = self.cursor.fetch_add(1, Ordering::AcqRel);
        let i = self.len.rem(seq);
        let failures = self.failures.add(set_bit(&self.failed, i, failure));
        let slows = self.slows.add(set_bit(&self.slow, i, slow));
        // The calls as of now, read after this call's tallies, not as of its own place: of
        // racing calls, whichever adds its failure last then sees every call that added one
        // before it (each took its place first), so racing failures that reach the
        // threshold together always trip it (with its own place, a thread that took its
        // place first but tallied last saw too few calls, the other too few failures).
        let calls = self.calls(self.cursor.load(Ordering::Acquire).max(seq + 1));
        Counts {
            calls,
            failures: failures.min(calls),
            slow: slows.min(calls),
        }
    }

    fn counts(&self) -> Counts {
        let calls = self.calls(self.cursor.load(Ordering::Acquire));
        Counts {
            calls,
            failures: self.failures.add(0).min(calls),
            slow: self.slows.add(0).min(calls),
        }
    }

    fn clear(&self) {
        self.base
            .store(self.cursor.load(Ordering::Acquire), Ordering::Release);
        for (bits, tally) in [(&self.failed, &self.failures), (&self.slow, &self.slows)] {
            for word in bits.iter() {
                let old = word.swap(0, Ordering::AcqRel);
                tally.add(-i64::from(old.count_ones()));
            }
        }
    }
}

// ===== TimeWindow =====

/// Bucket word: `lap` (which pass of the ring wrote it, 4 bits) then three 20-bit counts.
const FIELD_BITS: u32 = 20;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;
const LAP_SHIFT: u32 = 60;
const LAP_MASK: u64 = 0xF;
/// At most this many calls are counted per bucket; later calls in the same bucket are not
/// (the bucket's rate stands for them). About a million per bucket.
pub(crate) const BUCKET_CAP: u64 = FIELD_MASK;

fn bucket_counts(w: u64) -> (u64, u64, u64) {
    (
        w & FIELD_MASK,
        (w >> FIELD_BITS) & FIELD_MASK,
        (w >> (2 * FIELD_BITS)) & FIELD_MASK,
    )
}

fn bucket_lap(w: u64) -> u64 {
    w >> LAP_SHIFT
}

/// `a` is a later lap than `b` (modulo 16; see `TimeWindow::advance` for why laps in use
/// are never far apart).
fn lap_is_newer(a: u64, b: u64) -> bool {
    let d = a.wrapping_sub(b) & LAP_MASK;
    (1..8).contains(&d)
}

/// The last `T` seconds in `B` buckets of `T/B` each ("ticks"). A bucket is reset lazily
/// when a later tick reuses it; when the clock jumps over ticks without calls, the first
/// call of the new tick clears the skipped buckets, so every bucket always holds one of the
/// last `B` ticks and the aggregate is exact for the window ending now.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[AtomicU64]>,
    width: u64,
    latest: AtomicU64,
    /// Written by every call: kept off the lines the other fields are read from.
    agg: Padded<Aggregate>,
}

impl TimeWindow {
    /// A window of `buckets` buckets of `width` nanoseconds each.
    pub(crate) fn new(width: u64, buckets: u32) -> Self {
        Self {
            buckets: (0..buckets.max(1)).map(|_| AtomicU64::new(0)).collect(),
            width: width.max(1),
            latest: AtomicU64::new(0),
            agg: Padded(Aggregate::new()),
        }
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    fn lap(&self, tick: u64) -> u64 {
        (tick / self.len()) & LAP_MASK
    }

    fn bucket(&self, tick: u64) -> &AtomicU64 {
        &self.buckets[(tick % self.len()) as usize]
    }

    fn record(&self, now: u64, failure: bool, slow: bool) -> Counts {
        let tick = now / self.width;
        self.advance(tick);
        let bucket = self.bucket(tick);
        let lap = self.lap(tick);
        let unit = 1 | (u64::from(failure) << FIELD_BITS) | (u64::from(slow) << (2 * FIELD_BITS));
        let mut w = bucket.load(Ordering::Acquire);
        loop {
            let (calls, failures, slows) = bucket_counts(w);
            let (new, delta) = if bucket_lap(w) == lap {
                if calls >= BUCKET_CAP {
                    return self.agg.load();
                }
                (w + unit, (1, i64::from(failure), i64::from(slow)))
            } else if lap_is_newer(lap, bucket_lap(w)) {
                let delta = (
                    1 - calls as i64,
                    i64::from(failure) - failures as i64,
                    i64::from(slow) - slows as i64,
                );
                ((lap << LAP_SHIFT) | unit, delta)
            } else {
                // A later tick already owns the bucket: this outcome is older than the window.
                return self.agg.load();
            };
            match bucket.compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return self.agg.add(delta.0, delta.1, delta.2),
                Err(actual) => w = actual,
            }
        }
    }

    /// Move the window's end to `tick`, clearing the buckets of the ticks skipped since the
    /// last call. Runs its loop once per tick, not once per call.
    ///
    /// Invariant: after an advance to `latest`, every bucket holds one of the ticks
    /// `(latest - B, latest]` (or a later one written concurrently), so a bucket's lap is
    /// never more than one behind the lap asked for and the 4-bit lap is unambiguous.
    fn advance(&self, tick: u64) {
        let latest = self.latest.load(Ordering::Acquire);
        if tick <= latest {
            return;
        }
        let prev = self.latest.fetch_max(tick, Ordering::AcqRel);
        if prev >= tick {
            return;
        }
        let first = (tick + 1).saturating_sub(self.len());
        if tick - prev >= self.len() {
            // Silence longer than the window: every bucket is stale, however old (its lap
            // may have wrapped), so all are cleared unconditionally.
            for t in first..=tick {
                let old = self
                    .bucket(t)
                    .swap(self.lap(t) << LAP_SHIFT, Ordering::AcqRel);
                self.subtract(old);
            }
        } else {
            for skipped in (prev + 1).max(first)..tick {
                self.reset_bucket(skipped);
            }
        }
    }

    fn subtract(&self, old: u64) {
        let (c, f, s) = bucket_counts(old);
        if c | f | s != 0 {
            self.agg.add(-(c as i64), -(f as i64), -(s as i64));
        }
    }

    /// Give the bucket of `tick` to `tick` with no calls, unless it already holds `tick` or
    /// a later one.
    fn reset_bucket(&self, tick: u64) {
        let bucket = self.bucket(tick);
        let lap = self.lap(tick);
        let mut w = bucket.load(Ordering::Acquire);
        while lap_is_newer(lap, bucket_lap(w)) {
            match bucket.compare_exchange_weak(
                w,
                lap << LAP_SHIFT,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return self.subtract(w),
                Err(actual) => w = actual,
            }
        }
    }

    /// The exact totals of the window ending at `now`, summing only buckets that hold one
    /// of its ticks (O(B); for snapshots, not for the per-call path).
    fn counts(&self, now: u64) -> Counts {
        let tick = now / self.width;
        let latest = self.latest.load(Ordering::Acquire);
        let mut total = Counts::default();
        if tick.saturating_sub(latest) >= self.len() {
            return total;
        }
        let first = (tick + 1).saturating_sub(self.len());
        for t in first..=tick {
            let w = self.bucket(t).load(Ordering::Acquire);
            if bucket_lap(w) == self.lap(t) {
                let (c, f, s) = bucket_counts(w);
                total.calls += c;
                total.failures += f;
                total.slow += s;
            }
        }
        total
    }

    fn clear(&self) {
        for bucket in self.buckets.iter() {
            let mut w = bucket.load(Ordering::Acquire);
            while w & !(LAP_MASK << LAP_SHIFT) != 0 {
                let cleared = w & (LAP_MASK << LAP_SHIFT);
                match bucket.compare_exchange_weak(w, cleared, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        self.subtract(w);
                        break;
                    }
                    Err(actual) => w = actual,
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fastmod_is_exact() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for d in [1u32, 2, 3, 7, 64, 100, 1000, 65_536, 500_000, u32::MAX] {
            let m = FastMod::new(d);
            for a in [
                0,
                1,
                u64::from(d) - 1,
                u64::from(d),
                u64::MAX,
                u64::MAX - 1,
                1 << 63,
            ] {
                assert_eq!(m.rem(a), a % u64::from(d), "{a} % {d}");
            }
            for _ in 0..10_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                assert_eq!(m.rem(x), x % u64::from(d), "{x} % {d}");
            }
        }
    }

    #[test]
    fn count_window_slides() {
        let w = Window::Count(CountWindow::new(4));
        for _ in 0..10 {
            w.record(|| 0, false, false);
        }
        assert_eq!(w.counts(|| 0).failures, 0);
        let c = w.record(|| 0, true, false);
        assert_eq!((c.calls, c.failures), (4, 1));
        w.record(|| 0, true, true);
        w.record(|| 0, true, false);
        let c = w.record(|| 0, true, false);
        assert_eq!((c.calls, c.failures, c.slow), (4, 4, 1));
        let c = w.record(|| 0, false, false);
        assert_eq!((c.calls, c.failures, c.slow), (4, 3, 1));
        w.clear();
        assert_eq!(w.counts(|| 0), Counts::default());
    }

    /// A full window of fast successes is left as it is by one more: not even the cursor
    /// moves. A failure in the window, a slow call or a window not yet full and every call
    /// writes again.
    #[test]
    fn a_full_window_of_successes_writes_nothing() {
        let w = CountWindow::new(3);
        let cursor = || w.cursor.load(Ordering::Acquire);
        let counts = |calls, failures, slow| Counts {
            calls,
            failures,
            slow,
        };
        for expected in 1..=3 {
            assert_eq!(w.record(false, false).calls, expected);
            assert_eq!(cursor(), expected, "not full yet: every call counts");
        }
        for _ in 0..5 {
            assert_eq!(w.record(false, false), counts(3, 0, 0));
        }
        assert_eq!(cursor(), 3, "full of successes: nothing written");
        assert_eq!(w.record(false, true).slow, 1);
        assert_eq!(w.record(true, false).failures, 1);
        assert_eq!(cursor(), 5);
        // The failure and the slow call stay in the window for exactly N - 1 more calls.
        assert_eq!(w.record(false, false), counts(3, 1, 1));
        assert_eq!(w.record(false, false), counts(3, 1, 0));
        assert_eq!(w.record(false, false), counts(3, 0, 0));
        assert_eq!(cursor(), 8);
        w.record(false, false);
        assert_eq!(cursor(), 8, "clean again");
        w.clear();
        w.record(false, false);
        assert_eq!(cursor(), 9, "cleared: the window fills again");
    }

    proptest::proptest! {
        /// The count window's totals are those of the last N outcomes, over runs of equal
        /// outcomes long enough to fill it with successes (where it writes nothing) and to
        /// slide failures and slow calls through it, with clears in between.
        #[test]
        fn count_window_is_the_last_n_outcomes(
            size in 1u32..70,
            runs in proptest::collection::vec(
                (0u8..5, 1usize..150),
                0..30,
            ),
        ) {
            let w = CountWindow::new(size);
            let mut last = std::collections::VecDeque::new();
            for (kind, len) in runs {
                if kind == 4 {
                    w.clear();
                    last.clear();
                    continue;
                }
                let (failure, slow) = (kind & 1 != 0, kind & 2 != 0);
                for _ in 0..len {
                    let got = w.record(failure, slow);
                    last.push_back((failure, slow));
                    if last.len() > size as usize {
                        last.pop_front();
                    }
                    let want = Counts {
                        calls: last.len() as u64,
                        failures: last.iter().filter(|o| o.0).count() as u64,
                        slow: last.iter().filter(|o| o.1).count() as u64,
                    };
                    proptest::prop_assert_eq!(got, want);
                    proptest::prop_assert_eq!(w.counts(), want);
                }
            }
        }
    }

    #[test]
    fn time_window_drops_old_buckets() {
        // 4 buckets of 10ns: a window of 40ns.
        let w = Window::Time(TimeWindow::new(10, 4));
        w.record(|| 0, true, false);
        w.record(|| 15, false, false);
        assert_eq!(w.counts(|| 39).calls, 2);
        // Tick 4 evicts tick 0.
        assert_eq!(w.counts(|| 40).calls, 1);
        let c = w.record(|| 45, false, true);
        assert_eq!((c.calls, c.failures, c.slow), (2, 0, 1));
        // A long silence empties the window, whatever the laps.
        let c = w.record(|| 10_000, true, false);
        assert_eq!((c.calls, c.failures, c.slow), (1, 1, 0));
        assert_eq!(w.counts(|| 10_000 + 40).calls, 0);
    }

    #[test]
    fn time_window_survives_lap_wraparound() {
        let w = Window::Time(TimeWindow::new(1, 3));
        for t in 0..200 {
            let c = w.record(|| t * 2, t % 2 == 0, false);
            // Ticks 2 apart in a window of 3 ticks: this call and the previous one.
            assert_eq!(c.calls, if t == 0 { 1 } else { 2 }, "at {t}");
            assert_eq!(w.counts(|| t * 2), c);
        }
    }

    #[test]
    fn time_window_is_exact_when_silence_aliases_the_lap() {
        // 16 laps of 4 ticks later the 4-bit lap repeats: the old failure must not count.
        let w = Window::Time(TimeWindow::new(10, 4));
        w.record(|| 10, true, false);
        let c = w.record(|| 10 + 16 * 40, false, false);
        assert_eq!((c.calls, c.failures), (1, 0));
        assert_eq!(w.counts(|| 10 + 16 * 40).failures, 0);
    }

    #[test]
    fn aggregate_is_exact_with_negative_transients() {
        let a = Aggregate::new();
        a.add(0, 0, -1);
        a.add(-1, -1, 0);
        let c = a.add(2, 2, 2);
        assert_eq!((c.calls, c.failures, c.slow), (1, 1, 1));
    }
}
#[cfg(all(test, not(loom)))]
#[path = "window_mutants.rs"]
mod mutant_tests;
