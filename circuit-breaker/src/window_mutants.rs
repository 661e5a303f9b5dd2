//! Unit tests of the windows where mutation testing found them loose: the rates in percent,
//! the aggregate's bias under negative transients, and outcomes that arrive too late.

use super::*;

#[test]
fn rates_are_percentages() {
    assert_eq!(percent(0, 0), 0.0);
    assert_eq!(percent(1, 4), 25.0);
    assert_eq!(percent(3, 3), 100.0);
    let c = Counts {
        calls: 8,
        failures: 2,
        slow: 6,
    };
    assert_eq!((c.failure_rate(), c.slow_rate()), (25.0, 75.0));
    assert_eq!(Counts::default().failure_rate(), 0.0);
    assert_eq!(Counts::default().slow_rate(), 0.0);
}

/// A total read while it is transiently negative (a bucket's old counts subtracted before
/// its writer added them) reads as zero, and no field borrows from its neighbour.
#[test]
fn negative_transients_read_as_zero() {
    let a = Aggregate::new();
    assert_eq!(a.add(-1, -1, -1), Counts::default());
    assert_eq!(a.load(), Counts::default());
    assert_eq!(
        a.add(3, 2, 1),
        Counts {
            calls: 2,
            failures: 1,
            slow: 0
        }
    );
    // A part never reads above its whole.
    assert_eq!(
        a.add(0, 0, 3),
        Counts {
            calls: 2,
            failures: 1,
            slow: 2
        }
    );
    assert_eq!(a.add(1, 0, 0).slow, 3);
}

/// An outcome older than the window is not counted; the caller still gets the window's
/// totals.
#[test]
fn a_late_outcome_returns_the_current_totals() {
    // 4 buckets of 10 ns.
    let w = Window::Time(TimeWindow::new(10, 4));
    w.record(|| 100, true, false);
    w.record(|| 105, false, true);
    let c = w.record(|| 5, true, true);
    assert_eq!(
        c,
        Counts {
            calls: 2,
            failures: 1,
            slow: 1
        }
    );
    assert_eq!(w.counts(|| 105), c);
}
