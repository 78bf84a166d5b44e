//! Property tests of the linearizability search: it agrees with a brute-force oracle on small
//! random histories, accepts histories that are linearizable by construction, and rejects them
//! once a read is corrupted.

use helios_checker::history::{Event, EventType, History, Process};
use helios_checker::linear::{self, LinearOptions};
use helios_checker::models::ModelSpec;
use helios_checker::ops::{self, Operation, Operations, Outcome};
use helios_checker::synth::{register_history, RegisterHistoryConfig};
use helios_checker::Verdict;
use proptest::prelude::*;
use serde_json::{json, Value};

fn operations(history: &History) -> Operations {
    ops::pair(history.events.iter().cloned().map(Ok), "generated").expect("well formed")
}

fn verdict(operations: &Operations) -> Verdict {
    let spec = ModelSpec::parse("cas-register(nil)").unwrap();
    linear::check(operations, &spec, &LinearOptions::default())
        .unwrap()
        .verdict
}

/// The brute-force oracle: tries every order that respects real time. An operation can go
/// next if no unplaced `ok` operation returned before it was invoked. Operations of unknown
/// outcome may also be left out. Exponential, so only for a handful of operations.
fn oracle(ops: &[&Operation], placed: &mut Vec<bool>, state: &Value) -> bool {
    let unplaced_ok = |i: usize| !placed[i] && ops[i].outcome == Outcome::Ok;
    if (0..ops.len()).all(|i| !unplaced_ok(i)) {
        return true;
    }
    let earliest_return = (0..ops.len())
        .filter(|&i| unplaced_ok(i))
        .map(|i| ops[i].complete_index.unwrap())
        .min()
        .unwrap();
    for i in 0..ops.len() {
        if placed[i] || ops[i].invoke_index > earliest_return {
            continue;
        }
        let op = ops[i];
        let next = match op.f.as_str() {
            "read" => match &op.output {
                Some(value) if value == state => Some(state.clone()),
                Some(_) => None,
                None => Some(state.clone()),
            },
            "write" => Some(op.input.clone()),
            "cas" => {
                let pair = op.input.as_array().unwrap();
                (pair[0] == *state).then(|| pair[1].clone())
            }
            other => panic!("unexpected f {other}"),
        };
        if let Some(next) = next {
            placed[i] = true;
            if oracle(ops, placed, &next) {
                return true;
            }
            placed[i] = false;
        }
    }
    false
}

fn oracle_verdict(operations: &Operations) -> Verdict {
    let ops: Vec<&Operation> = operations
        .ops
        .iter()
        .filter(|op| op.outcome != Outcome::Fail)
        .collect();
    let mut placed = vec![false; ops.len()];
    if oracle(&ops, &mut placed, &Value::Null) {
        Verdict::Valid
    } else {
        Verdict::Invalid
    }
}

/// A step of a random history: which process acts, and what it does if it invokes.
#[derive(Clone, Debug)]
struct Step {
    process: u64,
    f: u8,
    a: i64,
    b: i64,
    outcome: u8,
    read: Option<i64>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..3u64,
        0..3u8,
        0..3i64,
        0..3i64,
        0..10u8,
        proptest::option::of(0..3i64),
    )
        .prop_map(|(process, f, a, b, outcome, read)| Step {
            process,
            f,
            a,
            b,
            outcome,
            read,
        })
}

/// Builds a well-formed history: a step either invokes on an idle process or completes its
/// outstanding operation. Processes that got `info` retire and a fresh id takes over.
fn history_from(steps: &[Step]) -> History {
    let mut history = History::default();
    let mut open: [Option<(String, Value)>; 3] = [None, None, None];
    let mut ids = [0u64, 1, 2];
    for step in steps {
        let slot = step.process as usize;
        let index = history.events.len() as u64;
        match open[slot].take() {
            None => {
                let (f, value) = match step.f {
                    0 => ("read", Value::Null),
                    1 => ("write", json!(step.a)),
                    _ => ("cas", json!([step.a, step.b])),
                };
                let mut event = Event::new(index, EventType::Invoke, Process::Client(ids[slot]), f);
                event.value = Some(value.clone());
                history.events.push(event);
                open[slot] = Some((f.to_string(), value));
            }
            Some((f, value)) => {
                let kind = match step.outcome {
                    0 => EventType::Info,
                    1 => EventType::Fail,
                    _ => EventType::Ok,
                };
                let mut event = Event::new(index, kind, Process::Client(ids[slot]), f.clone());
                event.value = Some(if f == "read" && kind == EventType::Ok {
                    step.read.map_or(Value::Null, |v| json!(v))
                } else {
                    value
                });
                history.events.push(event);
                if kind == EventType::Info {
                    ids[slot] += 3;
                }
            }
        }
    }
    history
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_search_agrees_with_brute_force_on_small_histories(steps in prop::collection::vec(step(), 1..16)) {
        let history = history_from(&steps);
        let operations = operations(&history);
        prop_assert_eq!(verdict(&operations), oracle_verdict(&operations), "history: {:#?}", history.events);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn histories_linearizable_by_construction_are_valid(seed in any::<u64>(), keys in 1usize..4, info in 0.0f64..0.2) {
        let config = RegisterHistoryConfig { n_ops: 300, n_keys: keys, concurrency: 6, info_rate: info, seed, ..Default::default() };
        prop_assert_eq!(verdict(&operations(&register_history(&config))), Verdict::Valid);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught(seed in any::<u64>(), pick in any::<prop::sample::Index>()) {
        let config = RegisterHistoryConfig { n_ops: 300, n_keys: 2, concurrency: 6, seed, ..Default::default() };
        let mut history = register_history(&config);
        let reads: Vec<usize> = history.events.iter().enumerate()
            .filter(|(_, e)| e.kind == EventType::Ok && e.f == "read")
            .map(|(i, _)| i)
            .collect();
        prop_assume!(!reads.is_empty());
        let at = reads[pick.index(reads.len())];
        history.events[at].value = Some(json!(999));
        let operations = operations(&history);
        let spec = ModelSpec::parse("cas-register(nil)").unwrap();
        let report = linear::check(&operations, &spec, &LinearOptions::default()).unwrap();
        prop_assert_eq!(report.verdict, Verdict::Invalid);
        let witness = report.witness.unwrap();
        prop_assert!(witness.description.contains("999"), "witness: {}", witness.description);
    }
}

#[test]
fn a_budget_that_runs_out_gives_unknown_never_valid() {
    let config = RegisterHistoryConfig {
        n_ops: 2000,
        n_keys: 1,
        concurrency: 10,
        info_rate: 0.05,
        seed: 3,
        ..Default::default()
    };
    let operations = operations(&register_history(&config));
    let spec = ModelSpec::parse("cas-register(nil)").unwrap();
    let tiny = LinearOptions {
        max_states: 10,
        ..LinearOptions::default()
    };
    let report = linear::check(&operations, &spec, &tiny).unwrap();
    assert_eq!(report.verdict, Verdict::Unknown);
    assert_eq!(
        report.unknown_reason,
        Some(linear::search::UnknownReason::StateBudget)
    );
    let no_time = LinearOptions {
        timeout: Some(std::time::Duration::ZERO),
        ..LinearOptions::default()
    };
    assert_eq!(
        linear::check(&operations, &spec, &no_time).unwrap().verdict,
        Verdict::Unknown
    );
    let no_memory = LinearOptions {
        max_memory_bytes: 1,
        ..LinearOptions::default()
    };
    let report = linear::check(&operations, &spec, &no_memory).unwrap();
    assert_eq!(report.verdict, Verdict::Unknown);
    assert_eq!(
        report.unknown_reason,
        Some(linear::search::UnknownReason::MemoryCap)
    );
}
