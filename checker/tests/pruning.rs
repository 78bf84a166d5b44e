//! The search's pruning rules (`linear::search`) against a brute-force oracle, model by
//! model, on small random histories; and each rule, broken on purpose, is caught by the same
//! comparison, so the comparison is known to have teeth.

use helios_checker::history::{Event, EventType, History, Process};
use helios_checker::linear::search::{Pruning, Sabotage};
use helios_checker::linear::{self, LinearOptions};
use helios_checker::models::ModelSpec;
use helios_checker::ops::{self, Operation, Operations, Outcome};
use helios_checker::Verdict;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use serde_json::{json, Value};

/// The models under test, each with the oracle's idea of its semantics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Register,
    CasRegister,
    Kv,
    KvSingle,
    Set,
}

impl Kind {
    fn spec(self) -> ModelSpec {
        let name = match self {
            Kind::Register => "register(nil)",
            Kind::CasRegister => "cas-register(nil)",
            Kind::Kv => "kv",
            Kind::KvSingle => "kv-single",
            Kind::Set => "set",
        };
        ModelSpec::parse(name).expect("a known model")
    }

    fn initial(self) -> Value {
        match self {
            Kind::Register | Kind::CasRegister => Value::Null,
            Kind::Kv | Kind::KvSingle => json!({}),
            Kind::Set => json!([]),
        }
    }

    /// The sequential specification, on plain JSON values. `None`: illegal in this state.
    /// An operation of unknown outcome has its output unchecked.
    fn step(self, state: &Value, op: &Operation) -> Option<Value> {
        let key = op.key.as_ref().and_then(Value::as_str).unwrap_or("");
        match (self, op.f.as_str()) {
            (Kind::Register | Kind::CasRegister, "read") => match &op.output {
                Some(value) => (value == state).then(|| state.clone()),
                None => Some(state.clone()),
            },
            (Kind::Register | Kind::CasRegister, "write") => Some(op.input.clone()),
            (Kind::CasRegister, "cas") => {
                let pair = op.input.as_array().expect("cas takes a pair");
                (pair[0] == *state).then(|| pair[1].clone())
            }
            (Kind::Kv | Kind::KvSingle, f) => {
                let current = state.get(key).and_then(Value::as_str).unwrap_or("");
                let mut next = state.clone();
                match f {
                    "get" => {
                        return match &op.output {
                            Some(value) => (value.as_str() == Some(current)).then_some(next),
                            None => Some(next),
                        }
                    }
                    "put" => next[key] = op.input.clone(),
                    "append" => {
                        next[key] = json!(format!("{current}{}", op.input.as_str().unwrap()))
                    }
                    other => panic!("unexpected kv f {other}"),
                }
                Some(next)
            }
            (Kind::Set, "add") => {
                let mut items: Vec<i64> = serde_json::from_value(state.clone()).unwrap();
                let item = op.input.as_i64().unwrap();
                if !items.contains(&item) {
                    items.push(item);
                    items.sort_unstable();
                }
                Some(json!(items))
            }
            (Kind::Set, "read") => match &op.output {
                Some(value) => {
                    let mut read: Vec<i64> = serde_json::from_value(value.clone()).unwrap();
                    read.sort_unstable();
                    (json!(read) == *state).then(|| state.clone())
                }
                None => Some(state.clone()),
            },
            (kind, f) => panic!("{kind:?} has no {f}"),
        }
    }

    /// Keys are independent for every model here, so the oracle checks each key alone.
    fn split(self) -> bool {
        self != Kind::KvSingle
    }
}

/// Tries every order that respects real time: an operation can go next if no unplaced `ok`
/// operation returned before it was invoked. Operations of unknown outcome may be left out.
fn oracle(kind: Kind, ops: &[&Operation], placed: &mut Vec<bool>, state: &Value) -> bool {
    let unplaced_ok = |i: usize| !placed[i] && ops[i].outcome == Outcome::Ok;
    let Some(earliest_return) = (0..ops.len())
        .filter(|&i| unplaced_ok(i))
        .map(|i| ops[i].complete_index.unwrap())
        .min()
    else {
        return true;
    };
    for i in 0..ops.len() {
        if placed[i] || ops[i].invoke_index > earliest_return {
            continue;
        }
        if let Some(next) = kind.step(state, ops[i]) {
            placed[i] = true;
            if oracle(kind, ops, placed, &next) {
                return true;
            }
            placed[i] = false;
        }
    }
    false
}

fn oracle_verdict(kind: Kind, operations: &Operations) -> Verdict {
    let ops: Vec<&Operation> = operations
        .ops
        .iter()
        .filter(|op| op.outcome != Outcome::Fail)
        .collect();
    let mut keys: Vec<Option<Value>> = ops.iter().map(|op| op.key.clone()).collect();
    keys.sort_by_key(|key| key.as_ref().map(Value::to_string));
    keys.dedup();
    if !kind.split() {
        keys = vec![None];
    }
    let all_valid = keys.iter().all(|key| {
        let part: Vec<&Operation> = ops
            .iter()
            .copied()
            .filter(|op| !kind.split() || op.key == *key)
            .collect();
        let mut placed = vec![false; part.len()];
        oracle(kind, &part, &mut placed, &kind.initial())
    });
    if all_valid {
        Verdict::Valid
    } else {
        Verdict::Invalid
    }
}

fn helios_verdict(kind: Kind, operations: &Operations, pruning: Pruning) -> Verdict {
    let options = LinearOptions {
        pruning,
        ..LinearOptions::default()
    };
    linear::check(operations, &kind.spec(), &options)
        .expect("well shaped")
        .verdict
}

/// Concurrent client processes in a generated history.
const PROCESSES: usize = 4;
/// Steps (invocations and completions) in a generated history, at most.
const MAX_STEPS: usize = 28;

/// One step of a random history: which process acts, and with what random choices.
#[derive(Clone, Debug)]
struct Step {
    process: usize,
    f: u8,
    a: u8,
    b: u8,
    outcome: u8,
    honest: bool,
    lie: u8,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..PROCESSES,
        0..4u8,
        0..3u8,
        0..3u8,
        0..10u8,
        prop::bool::weighted(0.75),
        0..5u8,
    )
        .prop_map(|(process, f, a, b, outcome, honest, lie)| Step {
            process,
            f,
            a,
            b,
            outcome,
            honest,
            lie,
        })
}

/// What an operation is, before its outcome: `f`, key and input.
fn invocation(kind: Kind, step: &Step) -> (&'static str, Option<Value>, Value) {
    let key = Some(json!(if step.b == 0 { "y" } else { "x" }));
    let pieces = ["a", "b", "ab"];
    match kind {
        Kind::Register => match step.f {
            0 | 1 => ("read", None, Value::Null),
            _ => ("write", None, json!(step.a)),
        },
        Kind::CasRegister => match step.f {
            0 => ("read", None, Value::Null),
            1 | 2 => ("write", None, json!(step.a)),
            _ => ("cas", None, json!([step.a, step.b])),
        },
        Kind::Kv | Kind::KvSingle => match step.f {
            0 | 1 => ("get", key, Value::Null),
            2 => ("put", key, json!(pieces[step.a as usize])),
            _ => ("append", key, json!(pieces[step.a as usize % 2])),
        },
        Kind::Set => match step.f {
            0 => ("read", None, Value::Null),
            _ => ("add", None, json!(step.a)),
        },
    }
}

/// A read that lies: some other plausible value.
fn lie(kind: Kind, step: &Step) -> Value {
    match kind {
        Kind::Register | Kind::CasRegister => json!(step.lie % 3),
        Kind::Kv | Kind::KvSingle => json!(["", "a", "ab", "b", "ba"][step.lie as usize]),
        Kind::Set => json!((0..step.lie.min(3) as i64).collect::<Vec<_>>()),
    }
}

/// Builds a well-formed history. Each operation takes effect (or not) atomically when it
/// completes, on a true state kept beside; reads return the true value unless the step says
/// to lie. An `info` operation takes effect half of the time. Processes that got `info`
/// retire and a fresh id takes over.
fn history_from(kind: Kind, steps: &[Step]) -> History {
    let mut history = History::default();
    let mut open: [Option<Operation>; PROCESSES] = Default::default();
    let mut ids: [u64; PROCESSES] = std::array::from_fn(|i| i as u64);
    let mut truth = kind.initial();
    for step in steps {
        let slot = step.process;
        let index = history.events.len() as u64;
        match open[slot].take() {
            None => {
                let (f, key, input) = invocation(kind, step);
                let mut event = Event::new(index, EventType::Invoke, Process::Client(ids[slot]), f);
                event.key = key.clone();
                event.value = Some(input.clone());
                history.events.push(event);
                open[slot] = Some(Operation {
                    id: 0,
                    process: Process::Client(ids[slot]),
                    f: f.to_string(),
                    key,
                    input,
                    output: None,
                    outcome: Outcome::Pending,
                    invoke_index: index,
                    complete_index: None,
                    invoke_time: None,
                    complete_time: None,
                    invoke_line: 0,
                    complete_line: 0,
                    node: None,
                    error: None,
                });
            }
            Some(mut op) => {
                let is_read = matches!(op.f.as_str(), "read" | "get");
                let mut outcome = match step.outcome {
                    0 => EventType::Info,
                    1 => EventType::Fail,
                    _ => EventType::Ok,
                };
                let mut value = op.input.clone();
                if is_read {
                    let current = match kind {
                        Kind::Kv | Kind::KvSingle => {
                            let key = op.key.as_ref().and_then(Value::as_str).unwrap();
                            json!(truth.get(key).and_then(Value::as_str).unwrap_or(""))
                        }
                        _ => truth.clone(),
                    };
                    value = if step.honest {
                        current
                    } else {
                        lie(kind, step)
                    };
                    if outcome == EventType::Fail {
                        outcome = EventType::Ok;
                    }
                } else {
                    let applies = match outcome {
                        EventType::Ok => true,
                        EventType::Info => step.a == 0,
                        _ => false,
                    };
                    if applies {
                        op.outcome = Outcome::Info;
                        match kind.step(&truth, &op) {
                            Some(next) => truth = next,
                            // A compare-and-set that does not match fails.
                            None if outcome == EventType::Ok => outcome = EventType::Fail,
                            None => {}
                        }
                    }
                }
                let mut event = Event::new(index, outcome, Process::Client(ids[slot]), op.f);
                event.key = op.key;
                event.value = Some(if outcome == EventType::Info && is_read {
                    Value::Null
                } else {
                    value
                });
                history.events.push(event);
                if outcome == EventType::Info {
                    ids[slot] += PROCESSES as u64;
                }
            }
        }
    }
    history
}

fn operations(history: &History) -> Operations {
    ops::pair(history.events.iter().cloned().map(Ok), "generated").expect("well formed")
}

/// Runs `cases` random histories of `kind`; the error names the first disagreement.
fn compare(kind: Kind, pruning: Pruning, cases: u32, seed: u8) -> Result<(), String> {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let result = runner.run(&prop::collection::vec(step(), 1..MAX_STEPS), |steps| {
        let history = history_from(kind, &steps);
        let operations = operations(&history);
        let expected = oracle_verdict(kind, &operations);
        let found = helios_verdict(kind, &operations, pruning);
        prop_assert_eq!(found, expected, "history: {:#?}", history.events);
        Ok(())
    });
    match result {
        Ok(()) => Ok(()),
        Err(TestError::Fail(why, _)) => Err(why.to_string()),
        Err(other) => Err(other.to_string()),
    }
}

const KINDS: [Kind; 5] = [
    Kind::Register,
    Kind::CasRegister,
    Kind::Kv,
    Kind::KvSingle,
    Kind::Set,
];

#[test]
fn every_rule_on_agrees_with_brute_force_for_every_model() {
    for kind in KINDS {
        if let Err(why) = compare(kind, Pruning::default(), cases_from_env(4000), 7) {
            panic!("{kind:?} with every rule on: {why}");
        }
    }
}

#[test]
fn plain_wgl_agrees_with_brute_force_for_every_model() {
    for kind in KINDS {
        if let Err(why) = compare(kind, Pruning::none(), 500, 8) {
            panic!("{kind:?} with no rule: {why}");
        }
    }
}

#[test]
fn the_generated_histories_are_both_valid_and_invalid() {
    // Without both kinds of verdict the comparisons above would prove little.
    for kind in KINDS {
        let mut runner = TestRunner::new_with_rng(
            Config::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &[9; 32]),
        );
        let mut counts = [0usize; 2];
        for _ in 0..400 {
            let steps = prop::collection::vec(step(), 1..MAX_STEPS)
                .new_tree(&mut runner)
                .unwrap()
                .current();
            let operations = operations(&history_from(kind, &steps));
            counts[usize::from(oracle_verdict(kind, &operations) == Verdict::Valid)] += 1;
        }
        assert!(
            counts[0] >= 40 && counts[1] >= 40,
            "{kind:?}: {} invalid and {} valid of 400",
            counts[0],
            counts[1]
        );
    }
}

fn sabotaged(sabotage: Sabotage) -> Pruning {
    Pruning {
        sabotage: Some(sabotage),
        ..Pruning::default()
    }
}

#[test]
fn dropping_observed_unknown_operations_is_caught() {
    for kind in [Kind::Register, Kind::Kv, Kind::Set] {
        let found = compare(kind, sabotaged(Sabotage::DropObservedUnknown), 1500, 11);
        assert!(found.is_err(), "{kind:?}: the broken rule 1 went unnoticed");
    }
}

#[test]
fn taking_updates_eagerly_is_caught() {
    for kind in [Kind::Register, Kind::Kv, Kind::Set] {
        let found = compare(kind, sabotaged(Sabotage::EagerAnyOperation), 1500, 12);
        assert!(found.is_err(), "{kind:?}: the broken rule 2 went unnoticed");
    }
}

#[test]
fn dooming_states_that_a_reset_can_rescue_is_caught() {
    for kind in [Kind::Register, Kind::Kv] {
        let found = compare(kind, sabotaged(Sabotage::DoomIgnoringResets), 1500, 13);
        assert!(found.is_err(), "{kind:?}: the broken rule 3 went unnoticed");
    }
}
/// `HELIOS_PRUNING_CASES` raises the number of cases for a longer soak.
fn cases_from_env(default: u32) -> u32 {
    std::env::var("HELIOS_PRUNING_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

#[test]
fn absorbing_wasted_updates_outside_garbage_is_caught() {
    for kind in [Kind::Register, Kind::Kv] {
        let found = compare(kind, sabotaged(Sabotage::AbsorbAnywhere), 1500, 14);
        assert!(found.is_err(), "{kind:?}: the broken rule 4 went unnoticed");
    }
}
