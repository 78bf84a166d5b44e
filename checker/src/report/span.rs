//! The run's extent on the time axis, shared by the timeline and the plots.

use crate::check::Report;
use crate::timing::TimeBasis;

/// The run's duration in nanoseconds since it started, when the history has times.
///
/// Invariant: `end_ns > 0`, so that every scale built on it has a non-empty range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Span {
    /// The last moment of the run: the latest completion, invocation, fault start or heal.
    pub end_ns: u64,
}

impl Span {
    /// The span of a timed history; `None` when the timing checker did not run or the history
    /// has no times.
    pub(super) fn of(report: &Report) -> Option<Span> {
        let timing = report.timing.as_ref()?;
        if timing.time_basis != TimeBasis::Nanoseconds {
            return None;
        }
        let mut end_ns = 0u64;
        if let Some(operations) = &report.operations {
            for op in &operations.ops {
                let last = op.complete_time.or(op.invoke_time).unwrap_or(0);
                end_ns = end_ns.max(last);
            }
            for event in &operations.nemesis {
                end_ns = end_ns.max(event.time.unwrap_or(0));
            }
        } else if let Some(last) = timing.throughput.last() {
            end_ns = end_ns.max((last.second + 1).saturating_mul(1_000_000_000));
        }
        for fault in &timing.faults {
            for time in [fault.start_ns, fault.end_ns, fault.recovered_at_ns]
                .into_iter()
                .flatten()
            {
                end_ns = end_ns.max(time);
            }
        }
        Some(Span {
            end_ns: end_ns.max(1),
        })
    }

    /// The run's length in seconds.
    pub(super) fn seconds(self) -> f64 {
        self.end_ns as f64 / 1e9
    }

    /// A bucket width in ns for about `target` buckets over the run: 1, 2 or 5 times a power
    /// of ten, at least 1 µs.
    pub(super) fn bucket_ns(self, target: u64) -> u64 {
        crate::view::text::tick_step(self.end_ns, target).max(1_000)
    }
}
