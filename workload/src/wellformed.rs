//! Structural checks of a recorded history: the recorder's and the clients' invariants, which
//! hold whatever the cluster did.
//!
//! These are not a consistency check (that is the checker's job); a violation here is a bug in
//! the workload, so the runner's tests assert that there is none.

use std::collections::{HashMap, HashSet};

use crate::history::{Event, EventType, Process};

/// Reads a history this crate wrote back from disk: its header and its events. For tests and
/// tools that check the recorder's invariants; the checker has its own, tolerant readers.
pub fn read_history(path: &std::path::Path) -> Result<(serde_json::Value, Vec<Event>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header = lines
        .next()
        .ok_or_else(|| format!("{}: empty history", path.display()))?;
    let header =
        serde_json::from_str(header).map_err(|e| format!("{}:1: header: {e}", path.display()))?;
    let events = lines
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), n + 2))
        })
        .collect::<Result<_, _>>()?;
    Ok((header, events))
}

/// Returns every structural problem of `events`, in history order; empty when well formed.
///
/// Checked: indices are dense from 0; times never decrease; a client process has at most one
/// operation outstanding; every completion matches its invocation's `f` and key; a process that
/// got `info` never invokes again; nemesis events are all `info`; and, when `complete` is set,
/// every invocation has a completion.
pub fn history_problems(events: &[Event], complete: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut previous_time = 0;
    let mut open: HashMap<u64, &Event> = HashMap::new();
    let mut retired: HashSet<u64> = HashSet::new();
    for (position, event) in events.iter().enumerate() {
        let at = format!("event {}", event.index);
        if event.index != position as u64 {
            problems.push(format!("{at}: expected index {position}"));
        }
        if event.time_ns < previous_time {
            problems.push(format!(
                "{at}: time {} before {previous_time}",
                event.time_ns
            ));
        }
        previous_time = event.time_ns;
        let process = match event.process {
            Process::Nemesis => {
                if event.event_type != EventType::Info {
                    problems.push(format!(
                        "{at}: nemesis event of type {:?}",
                        event.event_type
                    ));
                }
                continue;
            }
            Process::Client(process) => process,
        };
        if event.event_type == EventType::Invoke {
            if retired.contains(&process) {
                problems.push(format!("{at}: process {process} invoked after an info"));
            }
            if let Some(previous) = open.insert(process, event) {
                problems.push(format!(
                    "{at}: process {process} invoked while event {} was outstanding",
                    previous.index
                ));
            }
            continue;
        }
        match open.remove(&process) {
            None => problems.push(format!("{at}: completion with no invocation")),
            Some(invoke) if invoke.f != event.f || invoke.key != event.key => {
                problems.push(format!(
                    "{at}: completion does not match invocation {}",
                    invoke.index
                ))
            }
            Some(_) => {}
        }
        if event.event_type == EventType::Info {
            retired.insert(process);
        }
    }
    if complete {
        let mut unfinished: Vec<u64> = open.values().map(|event| event.index).collect();
        unfinished.sort_unstable();
        for index in unfinished {
            problems.push(format!("event {index}: invocation never completed"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Function;

    fn event(index: u64, event_type: EventType, process: u64) -> Event {
        Event {
            index,
            time_ns: index * 10,
            event_type,
            process: Process::Client(process),
            f: Function::Write,
            key: Some("k0".to_owned()),
            value: serde_json::json!(1),
            node: None,
            error: None,
        }
    }

    #[test]
    fn a_paired_history_has_no_problems() {
        let events = vec![
            event(0, EventType::Invoke, 0),
            event(1, EventType::Invoke, 1),
            event(2, EventType::Ok, 1),
            event(3, EventType::Info, 0),
            event(4, EventType::Invoke, 2),
            event(5, EventType::Fail, 2),
        ];
        assert_eq!(history_problems(&events, true), Vec::<String>::new());
    }

    #[test]
    fn an_invoke_after_info_and_an_unfinished_invoke_are_reported() {
        let events = vec![
            event(0, EventType::Invoke, 0),
            event(1, EventType::Info, 0),
            event(2, EventType::Invoke, 0),
        ];
        assert_eq!(
            history_problems(&events, true),
            vec![
                "event 2: process 0 invoked after an info".to_owned(),
                "event 2: invocation never completed".to_owned(),
            ]
        );
        assert_eq!(history_problems(&events, false).len(), 1);
    }

    #[test]
    fn two_outstanding_operations_of_one_process_are_reported() {
        let events = vec![
            event(0, EventType::Invoke, 0),
            event(1, EventType::Invoke, 0),
        ];
        assert_eq!(
            history_problems(&events, false),
            vec!["event 1: process 0 invoked while event 0 was outstanding".to_owned()]
        );
    }
}
