//! Histories of the shapes that make linearizability searches slow, linearizable by
//! construction or broken by one violation that is provably one.
//!
//! Two shapes, both with long operations that overlap many others:
//!
//! - **kv with many clients** ([`kv_history`]), the shape of Porcupine's `c50` files: get, put
//!   and append on a few keys, each append a unique piece `x <client> <n> y`, so that a get
//!   pins the order of every append before it, and the appends between two gets can come in
//!   any order. Puts reset a key and shadow the gets after them.
//! - **registers with many writes of unknown outcome** ([`many_info_history`]), the shape of a
//!   run under faults: unique written values, a large fraction of writes ending `info`, some of
//!   which took effect and were read, so that a search must keep them pending to the end.
//!
//! Each operation gets an interval and a linearization point inside it; applying the
//! operations in the order of their points gives each read its value. With `violation`, one
//! read late in the history is changed so that no linearization exists: the kv get loses the
//! piece of an append that completed before the get began (no put could have removed it), and
//! the register read returns the value of a write overwritten by another write that completed
//! before the read began (values are unique, so nothing else could have written it again).

use crate::history::{Event, EventType, History, Process};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// The shape of a kv history of Porcupine's kind.
#[derive(Clone, Debug)]
pub struct KvHistoryConfig {
    /// Operations in all.
    pub n_ops: usize,
    /// Keys, named `"0"`, `"1"`, ...
    pub n_keys: usize,
    /// Concurrent clients; each runs one operation at a time.
    pub clients: usize,
    /// The fraction of gets; the rest are appends and puts.
    pub get_rate: f64,
    /// The fraction of puts.
    pub put_rate: f64,
    /// The mean duration of an operation, in ticks; the pause between two operations of a
    /// client is 1 to 10 ticks.
    pub mean_duration: u64,
    /// Break one get late in the history.
    pub violation: bool,
    /// The seed of every random choice.
    pub seed: u64,
}

impl Default for KvHistoryConfig {
    fn default() -> Self {
        KvHistoryConfig {
            n_ops: 2_000,
            n_keys: 10,
            clients: 50,
            get_rate: 0.45,
            put_rate: 0.05,
            mean_duration: 250,
            violation: false,
            seed: 0,
        }
    }
}

/// The shape of a register history with many writes of unknown outcome.
#[derive(Clone, Debug)]
pub struct ManyInfoConfig {
    /// Operations in all.
    pub n_ops: usize,
    /// Keys (independent registers), named `k0`, `k1`, ...
    pub n_keys: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// The fraction of reads; the rest are writes of unique values.
    pub read_rate: f64,
    /// The fraction of writes that end `info`.
    pub info_rate: f64,
    /// The fraction of `info` writes that took effect.
    pub took_effect_rate: f64,
    /// The mean duration of an operation, in ticks.
    pub mean_duration: u64,
    /// Break one read late in the history.
    pub violation: bool,
    /// The seed of every random choice.
    pub seed: u64,
}

impl Default for ManyInfoConfig {
    fn default() -> Self {
        ManyInfoConfig {
            n_ops: 5_000,
            n_keys: 1,
            clients: 10,
            read_rate: 0.5,
            info_rate: 0.3,
            took_effect_rate: 0.5,
            mean_duration: 40,
            violation: false,
            seed: 0,
        }
    }
}

/// An operation with its interval, linearization point and outcome.
#[derive(Clone, Debug)]
struct Planned {
    process: u64,
    key: usize,
    f: &'static str,
    /// The argument: the piece or value written (`Null` for reads).
    input: Value,
    /// What a read returned.
    output: Value,
    invoke: u64,
    complete: u64,
    point: u64,
    /// Completed `info`.
    unknown: bool,
    /// Took effect at its point.
    took_effect: bool,
}

/// Clients run operations one after another: `(client, invoke, complete, point)`, in the
/// order in which they are invoked.
fn intervals(
    n_ops: usize,
    clients: usize,
    mean_duration: u64,
    rng: &mut ChaCha8Rng,
) -> Vec<(usize, u64, u64, u64)> {
    let mut clocks = vec![0u64; clients];
    (0..n_ops)
        .map(|_| {
            let client = (0..clients)
                .min_by_key(|&client| clocks[client])
                .expect("at least one client");
            let invoke = clocks[client] + rng.gen_range(1..=10);
            let complete = invoke + rng.gen_range(1..=2 * mean_duration.max(1));
            let point = rng.gen_range(invoke..=complete);
            clocks[client] = complete;
            (client, invoke, complete, point)
        })
        .collect()
}

/// Generates a kv history; every operation completes `ok`.
pub fn kv_history(config: &KvHistoryConfig) -> History {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut counters = vec![0u64; config.clients];
    let mut planned: Vec<Planned> =
        intervals(config.n_ops, config.clients, config.mean_duration, &mut rng)
            .into_iter()
            .map(|(client, invoke, complete, point)| {
                let roll: f64 = rng.gen();
                let f = if roll < config.get_rate {
                    "get"
                } else if roll < config.get_rate + config.put_rate {
                    "put"
                } else {
                    "append"
                };
                let input = if f == "get" {
                    Value::Null
                } else {
                    counters[client] += 1;
                    json!(format!("x {client} {} y", counters[client] - 1))
                };
                Planned {
                    process: client as u64,
                    key: rng.gen_range(0..config.n_keys),
                    f,
                    input,
                    output: Value::Null,
                    invoke,
                    complete,
                    point,
                    unknown: false,
                    took_effect: true,
                }
            })
            .collect();
    let mut strings = vec![String::new(); config.n_keys];
    for at in by_point(&planned) {
        let op = &mut planned[at];
        let string = &mut strings[op.key];
        match op.f {
            "get" => op.output = json!(string.clone()),
            "put" => *string = op.input.as_str().expect("a piece").to_string(),
            _ => string.push_str(op.input.as_str().expect("a piece")),
        }
    }
    if config.violation {
        break_a_kv_get(&mut planned);
    }
    let mut history = events(&planned, |key| json!(key.to_string()));
    history.header = None;
    history
}

/// Removes, from a get in the last 40 % of the history, the piece of an append on its key
/// that completed before the get was invoked, when no put on the key overlaps the span from
/// the append's invocation to the get's completion.
fn break_a_kv_get(planned: &mut [Planned]) {
    let start = planned.len() * 3 / 5;
    for at in start..planned.len() {
        let get = &planned[at];
        if get.f != "get" {
            continue;
        }
        let before = planned
            .iter()
            .filter(|op| op.key == get.key && op.f == "append" && op.complete < get.invoke)
            .max_by_key(|op| op.point);
        let Some(append) = before else { continue };
        let shadowed = planned.iter().any(|op| {
            op.key == get.key
                && op.f == "put"
                && op.invoke <= get.complete
                && op.complete >= append.invoke
        });
        let piece = append.input.as_str().expect("a piece").to_string();
        let read = get.output.as_str().expect("a get's string").to_string();
        if shadowed || !read.contains(&piece) {
            continue;
        }
        planned[at].output = json!(read.replacen(&piece, "", 1));
        return;
    }
    panic!("no get could be broken; lengthen the history");
}

/// Generates a register history whose writes have unique values and often end `info`.
pub fn many_info_history(config: &ManyInfoConfig) -> History {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut processes: Vec<u64> = (0..config.clients as u64).collect();
    let mut next_value = 1u64;
    let mut planned: Vec<Planned> = Vec::with_capacity(config.n_ops);
    for (client, invoke, complete, point) in
        intervals(config.n_ops, config.clients, config.mean_duration, &mut rng)
    {
        let read = rng.gen_bool(config.read_rate);
        let unknown = !read && rng.gen_bool(config.info_rate);
        let took_effect = !unknown || rng.gen_bool(config.took_effect_rate);
        let input = if read {
            Value::Null
        } else {
            next_value += 1;
            json!(next_value - 1)
        };
        planned.push(Planned {
            process: processes[client],
            key: rng.gen_range(0..config.n_keys),
            f: if read { "read" } else { "write" },
            input,
            output: Value::Null,
            invoke,
            complete,
            point,
            unknown,
            took_effect,
        });
        if unknown {
            // A process that got info never invokes again; its client goes on as a new one.
            processes[client] += config.clients as u64;
        }
    }
    let mut registers = vec![Value::Null; config.n_keys];
    for at in by_point(&planned) {
        let op = &mut planned[at];
        match op.f {
            "read" => op.output = registers[op.key].clone(),
            _ if op.took_effect => registers[op.key] = op.input.clone(),
            _ => {}
        }
    }
    if config.violation {
        break_a_register_read(&mut planned);
    }
    events(&planned, |key| json!(format!("k{key}")))
}

/// Makes a read in the last 40 % of the history return the value of an `ok` write `old` that
/// completed before another `ok` write `newer` was invoked, which completed before the read
/// was invoked.
fn break_a_register_read(planned: &mut [Planned]) {
    let ok_write = |op: &Planned, key: usize| op.key == key && op.f == "write" && !op.unknown;
    let start = planned.len() * 3 / 5;
    for at in start..planned.len() {
        let read = &planned[at];
        if read.f != "read" {
            continue;
        }
        let newer = planned
            .iter()
            .filter(|op| ok_write(op, read.key) && op.complete < read.invoke)
            .max_by_key(|op| op.complete);
        let Some(newer) = newer else { continue };
        let old = planned
            .iter()
            .filter(|op| ok_write(op, read.key) && op.complete < newer.invoke)
            .max_by_key(|op| op.complete);
        let Some(old) = old else { continue };
        planned[at].output = old.input.clone();
        return;
    }
    panic!("no read could be broken; lengthen the history");
}

/// Indices of the operations that took effect, in the order of their points.
fn by_point(planned: &[Planned]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..planned.len())
        .filter(|&at| planned[at].took_effect)
        .collect();
    order.sort_by_key(|&at| (planned[at].point, at));
    order
}

fn events(planned: &[Planned], key_name: impl Fn(usize) -> Value) -> History {
    // (time, completion?, op): an invoke sorts before a completion at the same instant.
    let mut moments: Vec<(u64, bool, usize)> = Vec::with_capacity(planned.len() * 2);
    for (at, op) in planned.iter().enumerate() {
        moments.push((op.invoke, false, at));
        moments.push((op.complete, true, at));
    }
    moments.sort_unstable();
    let mut history = History::default();
    for (index, &(time, completion, at)) in moments.iter().enumerate() {
        let op = &planned[at];
        let (kind, value) = match (completion, op.unknown) {
            (false, _) => (EventType::Invoke, op.input.clone()),
            (true, true) => (EventType::Info, op.input.clone()),
            (true, false) if op.f == "read" || op.f == "get" => (EventType::Ok, op.output.clone()),
            (true, false) => (EventType::Ok, op.input.clone()),
        };
        let mut event = Event::new(index as u64, kind, Process::Client(op.process), op.f);
        event.time = Some(time * 1000);
        event.key = Some(key_name(op.key));
        event.value = Some(value);
        history.events.push(event);
    }
    history
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_appends_are_unique_pieces_and_a_violation_drops_one() {
        let config = KvHistoryConfig {
            n_ops: 400,
            seed: 3,
            ..KvHistoryConfig::default()
        };
        let good = kv_history(&config);
        let bad = kv_history(&KvHistoryConfig {
            violation: true,
            ..config
        });
        assert_eq!(good.events.len(), 800);
        let changed: Vec<(&Event, &Event)> = good
            .events
            .iter()
            .zip(&bad.events)
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(changed.len(), 1, "exactly one get is broken");
        let (before, after) = changed[0];
        assert_eq!(before.f, "get");
        let before = before.value.as_ref().unwrap().as_str().unwrap();
        let after = after.value.as_ref().unwrap().as_str().unwrap();
        assert!(after.len() < before.len() && before.contains(after.split('y').next().unwrap()));
    }

    #[test]
    fn many_info_writes_end_info_and_a_violation_changes_one_read() {
        let config = ManyInfoConfig {
            n_ops: 600,
            seed: 5,
            ..ManyInfoConfig::default()
        };
        let good = many_info_history(&config);
        let infos = good
            .events
            .iter()
            .filter(|e| e.kind == EventType::Info)
            .count();
        assert!(infos > 40, "{infos} info writes");
        let bad = many_info_history(&ManyInfoConfig {
            violation: true,
            ..config
        });
        let changed = good
            .events
            .iter()
            .zip(&bad.events)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(changed, 1);
    }
}
