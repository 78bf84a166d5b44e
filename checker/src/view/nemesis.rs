//! Nemesis events as annotations: markers for faults and heals, and fault intervals.
//!
//! Jepsen's nemesis logs an operation as an invoke and an `info` of the same `f`, so runs of
//! consecutive events with one `f` collapse into one [`Marker`]. A fault is paired with the
//! first later heal that undoes it (`start-X`/`stop-X`, `start`/`stop`, `kill`/`restart`,
//! `pause`/`resume`, `isolate`/`heal`); a fault never healed lasts to the end of the axis.

use crate::models::show;
use crate::ops::NemesisEvent;

/// One nemesis operation: the events of a run with the same `f`, at positions on the axis.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Marker {
    /// `start-partition`, `kill`, ...
    pub f: String,
    /// The position of its first event (a time or an event index, see [`super::Axis`]).
    pub at: u64,
    /// The position of its last event.
    pub last: u64,
    /// Its targets, in words (the value of its last event that had one).
    pub value: String,
}

/// A fault and the heal that ended it, if any.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FaultInterval {
    /// The fault's `f`.
    pub fault: String,
    /// Its targets, in words.
    pub value: String,
    /// Where the fault started.
    pub start: u64,
    /// Where the heal completed; `None` when it was never healed.
    pub end: Option<u64>,
    /// The heal's `f`.
    pub heal: Option<String>,
}

/// Collapses `events` into markers; `position` places an event on the axis (events it cannot
/// place are left out).
pub(crate) fn markers(
    events: &[NemesisEvent],
    position: impl Fn(&NemesisEvent) -> Option<u64>,
) -> Vec<Marker> {
    let mut markers: Vec<Marker> = Vec::new();
    for event in events {
        let Some(at) = position(event) else { continue };
        let value = if event.value.is_null() {
            String::new()
        } else {
            show(&event.value)
        };
        match markers.last_mut() {
            Some(last) if last.f == event.f => {
                last.last = last.last.max(at);
                if !value.is_empty() {
                    last.value = value;
                }
            }
            _ => markers.push(Marker {
                f: event.f.clone(),
                at,
                last: at,
                value,
            }),
        }
    }
    markers
}

/// The names that heal `fault`, or `None` when `fault` is not a fault this view can pair.
fn heals_of(fault: &str) -> Option<Vec<String>> {
    if let Some(what) = fault.strip_prefix("start-") {
        return Some(vec![format!("stop-{what}")]);
    }
    let names: &[&str] = match fault {
        "start" => &["stop"],
        // jepsen.nemesis.combined restarts a killed process with `start`.
        "kill" | "crash" => &["restart", "recover", "start"],
        "pause" => &["resume"],
        "isolate" | "partition" => &["heal", "recover"],
        _ => return None,
    };
    Some(names.iter().map(|name| name.to_string()).collect())
}

/// Pairs faults with their heals, in history order.
pub(crate) fn intervals(markers: &[Marker]) -> Vec<FaultInterval> {
    let mut done = Vec::new();
    let mut open: Vec<(FaultInterval, Vec<String>)> = Vec::new();
    for marker in markers {
        // A heal closes the most recent open fault it undoes.
        if let Some(at) = open
            .iter()
            .rposition(|(_, heals)| heals.contains(&marker.f))
        {
            let (mut interval, _) = open.remove(at);
            interval.end = Some(marker.last);
            interval.heal = Some(marker.f.clone());
            done.push(interval);
            continue;
        }
        let Some(heals) = heals_of(&marker.f) else {
            continue;
        };
        if open.iter().any(|(interval, _)| interval.fault == marker.f) {
            continue; // The same fault again while it is on: the earlier start stands.
        }
        let interval = FaultInterval {
            fault: marker.f.clone(),
            value: marker.value.clone(),
            start: marker.at,
            end: None,
            heal: None,
        };
        open.push((interval, heals));
    }
    done.extend(open.into_iter().map(|(interval, _)| interval));
    done.sort_by_key(|interval| interval.start);
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::EventType;
    use serde_json::{json, Value};

    fn event(index: u64, f: &str, value: Value) -> NemesisEvent {
        NemesisEvent {
            index,
            time: None,
            kind: EventType::Info,
            f: f.to_string(),
            value,
        }
    }

    fn by_index(event: &NemesisEvent) -> Option<u64> {
        Some(event.index)
    }

    #[test]
    fn an_invoke_and_info_pair_is_one_marker_with_the_last_value() {
        let events = [
            event(3, "start-partition", Value::Null),
            event(4, "start-partition", json!({"groups": [["n1"], ["n2"]]})),
            event(9, "stop-partition", Value::Null),
        ];
        let markers = markers(&events, by_index);
        assert_eq!(markers.len(), 2);
        assert_eq!((markers[0].at, markers[0].last), (3, 4));
        assert_eq!(markers[0].value, "{\"groups\":[[\"n1\"],[\"n2\"]]}");
    }

    #[test]
    fn faults_pair_with_their_heals_and_an_unhealed_fault_stays_open() {
        let events = [
            event(1, "start-partition", Value::Null),
            event(2, "kill", json!("n3")),
            event(5, "stop-partition", Value::Null),
            event(7, "restart", json!("n3")),
            event(8, "pause", json!("n1")),
            event(9, "add-node", json!("n6")),
        ];
        let intervals = intervals(&markers(&events, by_index));
        let spans: Vec<(&str, u64, Option<u64>, Option<&str>)> = intervals
            .iter()
            .map(|i| (i.fault.as_str(), i.start, i.end, i.heal.as_deref()))
            .collect();
        assert_eq!(
            spans,
            vec![
                ("start-partition", 1, Some(5), Some("stop-partition")),
                ("kill", 2, Some(7), Some("restart")),
                ("pause", 8, None, None),
            ]
        );
    }

    #[test]
    fn events_that_cannot_be_placed_are_left_out() {
        let events = [event(1, "kill", Value::Null)];
        assert!(markers(&events, |_| None).is_empty());
    }
}
