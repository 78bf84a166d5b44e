//! Fault intervals, paired from nemesis events, and the recovery time (RTO) of each.
//!
//! Pairs (a heal closes the open faults of its family):
//!
//! | starts                                  | healed by                  |
//! |-----------------------------------------|----------------------------|
//! | `start-X` (e.g. `start-partition`)      | `stop-X`                   |
//! | `start` (Jepsen's generic nemesis)      | `stop`                     |
//! | `kill`                                  | `restart`, `recover`, `start` |
//! | `pause`                                 | `resume`                   |
//! | `isolate`, `partition`                  | `heal`                     |
//! | anything else (`add-node`, `promote`)   | never: it runs to the end  |
//!
//! `start` heals an open `kill` when there is one, and otherwise starts a fault. A heal whose
//! value equals an open fault's targets closes that fault; a heal with a `null` or text value
//! (`"network-healed"`) closes every open fault of its family; any other heal closes the oldest.
//! Jepsen records a nemesis operation as an `invoke` and then an `info`: the pair counts once,
//! at the `info` (when the fault is in effect), with the invoke's value if the info has none.
//!
//! RTO, the window and disruptions are defined in the parent module's docs.

use super::ms;
use crate::history::EventType;
use crate::ops::{NemesisEvent, Operations, Outcome};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

/// How long the system must serve, after a fault's heal (or after the last disruption that
/// followed it), with no disruption before the fault's window closes: later disruptions are not
/// the fault's.
pub const SETTLE_NS: u64 = 1_000_000_000;

/// One fault interval and how long the system took to recover from it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultRecovery {
    /// The `f` of the event that started it (`start-partition`, `kill`, ...).
    pub fault: String,
    /// Its event index.
    pub start_index: u64,
    /// Its time (ns), when the history has times.
    pub start_ns: Option<u64>,
    /// The `f` of the event that healed it; `None` if it ran to the end.
    pub healed_by: Option<String>,
    /// The heal's event index.
    pub end_index: Option<u64>,
    /// The heal's time (ns).
    pub end_ns: Option<u64>,
    /// The fault's targets, as the nemesis recorded them.
    pub targets: Value,
    /// Disruptions (info, pending, or fail with an error) in the fault's window.
    pub affected_ops: usize,
    /// Disruptions observed after the system had settled following the heal, before the window
    /// would otherwise have ended: not charged to this fault.
    pub later_disruptions: usize,
    /// The event index of the last of them.
    pub last_disruption_index: Option<u64>,
    /// Its time (ns).
    pub last_disruption_ns: Option<u64>,
    /// False when disruptions happened and no `ok` operation was invoked after the last one.
    pub recovered: bool,
    /// The first `ok` operation invoked after the last disruption (an id into `ops`).
    pub recovery_op: Option<usize>,
    /// The event index at which the system had recovered: that operation's invocation, or the
    /// fault's start when nothing was disrupted.
    pub recovered_at_index: Option<u64>,
    /// The same, in ns.
    pub recovered_at_ns: Option<u64>,
    /// Recovery time in ms: from the start to `recovered_at_ns`. `None` when not recovered or
    /// when the history has no times.
    pub rto_ms: Option<f64>,
    /// In words.
    pub explanation: String,
}

/// A nemesis event after folding Jepsen's invoke/info pairs into one.
#[derive(Clone, Debug)]
struct FaultEvent {
    index: u64,
    time: Option<u64>,
    f: String,
    value: Value,
}

/// What a nemesis event does to the set of open faults.
enum Role {
    /// Starts a fault of this family.
    Start(String),
    /// Heals open faults of these families.
    Heal(Vec<String>),
}

fn role(f: &str, kill_open: bool) -> Role {
    let heal = |families: &[&str]| Role::Heal(families.iter().map(|f| f.to_string()).collect());
    match f {
        "start" if kill_open => heal(&["kill"]),
        "stop" => heal(&["start"]),
        "restart" | "recover" => heal(&["kill"]),
        "resume" => heal(&["pause"]),
        "heal" => heal(&["isolate", "partition"]),
        _ => {
            if let Some(family) = f.strip_prefix("stop-") {
                heal(&[family])
            } else if let Some(family) = f.strip_prefix("start-") {
                Role::Start(family.to_string())
            } else {
                Role::Start(f.to_string())
            }
        }
    }
}

/// Folds each nemesis `invoke` into the completion of the same `f` that follows it.
fn fold_invokes(events: &[NemesisEvent]) -> Vec<FaultEvent> {
    let mut folded: Vec<Option<FaultEvent>> = Vec::with_capacity(events.len());
    let mut pending: HashMap<&str, usize> = HashMap::new();
    for event in events {
        let mut point = FaultEvent {
            index: event.index,
            time: event.time,
            f: event.f.clone(),
            value: event.value.clone(),
        };
        if event.kind == EventType::Invoke {
            pending.insert(event.f.as_str(), folded.len());
        } else if let Some(at) = pending.remove(event.f.as_str()) {
            if let Some(invoke) = folded[at].take() {
                if point.value.is_null() {
                    point.value = invoke.value;
                }
            }
        }
        folded.push(Some(point));
    }
    folded.into_iter().flatten().collect()
}

/// An open or closed fault, before its recovery is measured.
struct Interval {
    family: String,
    start: FaultEvent,
    end: Option<FaultEvent>,
}

/// Pairs starts with heals; returns the intervals in start order and the unmatched heals.
fn intervals(events: &[NemesisEvent]) -> (Vec<Interval>, usize) {
    let mut intervals: Vec<Interval> = Vec::new();
    let mut unmatched = 0;
    for event in fold_invokes(events) {
        let kill_open = intervals
            .iter()
            .any(|interval| interval.end.is_none() && interval.family == "kill");
        match role(&event.f, kill_open) {
            Role::Start(family) => intervals.push(Interval {
                family,
                start: event,
                end: None,
            }),
            Role::Heal(families) => {
                let open: Vec<usize> = (0..intervals.len())
                    .filter(|&at| {
                        intervals[at].end.is_none() && families.contains(&intervals[at].family)
                    })
                    .collect();
                let exact = open
                    .iter()
                    .copied()
                    .find(|&at| intervals[at].start.value == event.value);
                let closing: Vec<usize> = match (exact, &event.value) {
                    (Some(at), _) => vec![at],
                    (None, Value::Null | Value::String(_)) => open,
                    (None, _) => open.into_iter().take(1).collect(),
                };
                if closing.is_empty() {
                    unmatched += 1;
                }
                for at in closing {
                    intervals[at].end = Some(event.clone());
                }
            }
        }
    }
    (intervals, unmatched)
}

/// A point in the history: an event index and its time.
#[derive(Clone, Copy, Debug)]
struct Point {
    index: u64,
    time: Option<u64>,
    op: usize,
}

/// A disrupted operation: when the client learned of it (which decides the fault it belongs
/// to) and when it was invoked (which orders it against the operations that recover).
#[derive(Clone, Copy, Debug)]
struct Disruption {
    observed: Point,
    invoked: u64,
}

/// An `ok` operation: invoked at `invoked`, and served at `served` (its completion).
#[derive(Clone, Copy, Debug)]
struct Served {
    invoked: u64,
    served: Point,
}

/// Every fault interval with its RTO, in start order, and the number of unmatched heals.
pub fn recoveries(history: &Operations) -> (Vec<FaultRecovery>, usize) {
    let (intervals, unmatched) = intervals(&history.nemesis);
    let mut disruptions: Vec<Disruption> = Vec::new();
    let mut oks: Vec<Served> = Vec::new();
    for op in &history.ops {
        // Observed at the completion (when the client learned the outcome was unknown or
        // failed); an operation still pending at the end is observed at its invocation.
        let completion = Point {
            index: op.complete_index.unwrap_or(op.invoke_index),
            time: if op.complete_index.is_some() {
                op.complete_time
            } else {
                op.invoke_time
            },
            op: op.id,
        };
        match op.outcome {
            Outcome::Info | Outcome::Pending => disruptions.push(Disruption {
                observed: completion,
                invoked: op.invoke_index,
            }),
            Outcome::Fail if op.error.is_some() => disruptions.push(Disruption {
                observed: completion,
                invoked: op.invoke_index,
            }),
            Outcome::Fail => {}
            Outcome::Ok => oks.push(Served {
                invoked: op.invoke_index,
                served: completion,
            }),
        }
    }
    disruptions.sort_by_key(|d| d.observed.index);
    let mut served: Vec<u64> = oks.iter().map(|ok| ok.served.index).collect();
    served.sort_unstable();
    oks.sort_by_key(|ok| ok.invoked);
    let mut starts: Vec<u64> = intervals.iter().map(|i| i.start.index).collect();
    starts.sort_unstable();
    let recoveries = intervals
        .into_iter()
        .map(|interval| {
            // The window ends where the first fault that begins after the heal begins; a fault
            // that is never healed (an add-node, a kill with no restart) ends its window where
            // the next fault begins, so it is not charged with every later fault's disruptions.
            let after = interval
                .end
                .as_ref()
                .map_or(interval.start.index, |end| end.index);
            let next = starts.partition_point(|&start| start <= after);
            let window_end = starts.get(next).copied().unwrap_or(u64::MAX);
            let settled_at = interval
                .end
                .as_ref()
                .and_then(|heal| settled(heal, window_end, &disruptions, &served));
            let later = settled_at.map_or(0, |cut| {
                disruptions.partition_point(|d| d.observed.index < window_end)
                    - disruptions.partition_point(|d| d.observed.index < cut)
            });
            let mut recovered = recovery(
                interval,
                settled_at.unwrap_or(window_end),
                &disruptions,
                &oks,
            );
            recovered.later_disruptions = later;
            if later > 0 {
                recovered.explanation.push_str(&format!(
                    "; {later} later disruption(s) came after the system had served for 1 s \
                     without one following the heal, and are not charged to it"
                ));
            }
            recovered
        })
        .collect();
    (recoveries, unmatched)
}

/// Where a healed fault's window closes because the system settled: the event index of the first
/// disruption observed at least [`SETTLE_NS`] after the heal (or after the last disruption
/// since), when an `ok` was served in between; `None` when none does before `window_end`, or
/// when the times needed are missing. `served` holds the completion indices of `ok` operations,
/// sorted.
fn settled(
    heal: &FaultEvent,
    window_end: u64,
    disruptions: &[Disruption],
    served: &[u64],
) -> Option<u64> {
    let mut quiet_since = (heal.index, heal.time?);
    let first = disruptions.partition_point(|d| d.observed.index <= heal.index);
    for disruption in &disruptions[first..] {
        let observed = disruption.observed;
        if observed.index >= window_end {
            return None;
        }
        let time = observed.time?;
        let quiet_for = time.saturating_sub(quiet_since.1);
        let served_between = served.partition_point(|&index| index <= quiet_since.0)
            < served.partition_point(|&index| index < observed.index);
        if quiet_for >= SETTLE_NS && served_between {
            return Some(observed.index);
        }
        quiet_since = (observed.index, time);
    }
    None
}

fn recovery(
    interval: Interval,
    window_end: u64,
    disruptions: &[Disruption],
    oks: &[Served],
) -> FaultRecovery {
    let start = interval.start;
    let low = disruptions.partition_point(|d| d.observed.index < start.index);
    let high = disruptions.partition_point(|d| d.observed.index < window_end);
    let affected = disruptions.get(low..high).unwrap_or_default();
    // The last disruption is the one invoked last: an operation invoked after it and served
    // shows the system serving again.
    let last = affected.iter().max_by_key(|d| d.invoked).copied();
    let recovery = match last {
        None => Some(None),
        Some(last) => {
            let next = oks.partition_point(|ok| ok.invoked <= last.invoked);
            oks[next..]
                .iter()
                .min_by_key(|ok| ok.served.index)
                .map(|ok| Some(ok.served))
        }
    };
    let (recovered_at_index, recovered_at_ns, recovery_op) = match recovery {
        Some(Some(point)) => (Some(point.index), point.time, Some(point.op)),
        Some(None) => (Some(start.index), start.time, None),
        None => (None, None, None),
    };
    let rto_ms = match (start.time, recovered_at_ns) {
        (Some(from), Some(to)) if recovered_at_index.is_some() => Some(ms(to.saturating_sub(from))),
        _ => None,
    };
    let last = last.map(|d| d.observed);
    let explanation = explain(&start.f, affected.len(), last, recovery, rto_ms);
    FaultRecovery {
        fault: start.f,
        start_index: start.index,
        start_ns: start.time,
        healed_by: interval.end.as_ref().map(|end| end.f.clone()),
        end_index: interval.end.as_ref().map(|end| end.index),
        end_ns: interval.end.as_ref().and_then(|end| end.time),
        targets: start.value,
        affected_ops: affected.len(),
        later_disruptions: 0,
        last_disruption_index: last.map(|point| point.index),
        last_disruption_ns: last.and_then(|point| point.time),
        recovered: recovery.is_some(),
        recovery_op,
        recovered_at_index,
        recovered_at_ns,
        rto_ms,
        explanation,
    }
}

fn explain(
    fault: &str,
    affected: usize,
    last: Option<Point>,
    recovery: Option<Option<Point>>,
    rto_ms: Option<f64>,
) -> String {
    let rto = rto_ms.map_or("unmeasured (no times)".to_string(), |rto| {
        format!("{rto:.3} ms")
    });
    match (last, recovery) {
        (None, _) => format!("{fault}: no operation was disrupted in its window; RTO 0"),
        (Some(last), Some(Some(ok))) => format!(
            "{fault}: {affected} operations disrupted, the last invoked one observed at event {} \
             (op {}); op {}, invoked after it, was served at event {}; RTO {rto}",
            last.index, last.op, ok.op, ok.index
        ),
        (Some(last), _) => format!(
            "{fault}: {affected} operations disrupted, the last at event {} (op {}), and no ok \
             operation was invoked after it: not recovered",
            last.index, last.op
        ),
    }
}
