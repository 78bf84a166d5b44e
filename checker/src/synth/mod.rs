//! Synthetic register histories that are linearizable by construction, for benchmarks and
//! property tests; [`hard`] makes the shapes that are hard for a linearizability search.
//!
//! Every operation gets a real-time interval and a linearization point inside it; applying
//! the operations in the order of their points to a register per key gives each read its
//! value and each cas its outcome. Some operations end `info`: half of those took effect
//! (at their point), half never did. The result is a valid history; mutating one read's
//! value to one never written makes it invalid.

pub mod hard;

use crate::history::{Event, EventType, History, Process};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// The shape of a synthetic register history.
#[derive(Clone, Debug)]
pub struct RegisterHistoryConfig {
    /// How many operations in all.
    pub n_ops: usize,
    /// How many keys (independent registers).
    pub n_keys: usize,
    /// How many concurrent client processes.
    pub concurrency: usize,
    /// The fraction of operations whose outcome is unknown (`info`).
    pub info_rate: f64,
    /// The fraction of reads (the rest splits between writes and cas).
    pub read_rate: f64,
    /// Values are drawn from `0..n_values`.
    pub n_values: i64,
    /// The seed of every random choice.
    pub seed: u64,
}

impl Default for RegisterHistoryConfig {
    fn default() -> Self {
        RegisterHistoryConfig {
            n_ops: 1000,
            n_keys: 1,
            concurrency: 5,
            info_rate: 0.01,
            read_rate: 0.5,
            n_values: 5,
            seed: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write(i64),
    Cas(i64, i64),
}

struct Planned {
    process: u64,
    key: usize,
    kind: Kind,
    invoke: u64,
    complete: u64,
    point: u64,
    unknown: bool,
    took_effect: bool,
    read: Option<i64>,
    cas_ok: bool,
}

/// Generates a linearizable history of registers with keys, in the JSON Lines model.
pub fn register_history(config: &RegisterHistoryConfig) -> History {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut planned = plan(config, &mut rng);
    // Apply every operation that took effect in the order of its linearization point.
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by_key(|&i| planned[i].point);
    let mut registers: Vec<Option<i64>> = vec![None; config.n_keys];
    for i in order {
        let op = &mut planned[i];
        if !op.took_effect {
            continue;
        }
        let register = &mut registers[op.key];
        match op.kind {
            Kind::Read => op.read = *register,
            Kind::Write(value) => *register = Some(value),
            Kind::Cas(expected, new) => {
                op.cas_ok = *register == Some(expected);
                if op.cas_ok {
                    *register = Some(new);
                }
            }
        }
    }
    events(&planned)
}

fn plan(config: &RegisterHistoryConfig, rng: &mut ChaCha8Rng) -> Vec<Planned> {
    let mut planned = Vec::with_capacity(config.n_ops);
    let mut clocks = vec![0u64; config.concurrency];
    let mut processes: Vec<u64> = (0..config.concurrency as u64).collect();
    for _ in 0..config.n_ops {
        // The client whose clock is earliest goes next, so clients run concurrently.
        let client = (0..config.concurrency)
            .min_by_key(|&c| clocks[c])
            .expect("concurrency > 0");
        let invoke = clocks[client] + rng.gen_range(1..50);
        let complete = invoke + rng.gen_range(1..200);
        let point = rng.gen_range(invoke..=complete);
        clocks[client] = complete;
        let roll: f64 = rng.gen();
        let kind = if roll < config.read_rate {
            Kind::Read
        } else if roll < config.read_rate + (1.0 - config.read_rate) / 2.0 {
            Kind::Write(rng.gen_range(0..config.n_values))
        } else {
            Kind::Cas(
                rng.gen_range(0..config.n_values),
                rng.gen_range(0..config.n_values),
            )
        };
        let unknown = rng.gen_bool(config.info_rate);
        let took_effect = !unknown || rng.gen_bool(0.5);
        planned.push(Planned {
            process: processes[client],
            key: rng.gen_range(0..config.n_keys),
            kind,
            invoke,
            complete,
            point,
            unknown,
            took_effect,
            read: None,
            cas_ok: false,
        });
        if unknown {
            // A process that got info never invokes again; its client goes on as a new one.
            processes[client] += config.concurrency as u64;
        }
    }
    planned
}

fn events(planned: &[Planned]) -> History {
    // (time, completion?, op): an invoke sorts before a completion at the same instant.
    let mut moments: Vec<(u64, bool, usize)> = Vec::with_capacity(planned.len() * 2);
    for (i, op) in planned.iter().enumerate() {
        moments.push((op.invoke, false, i));
        moments.push((op.complete, true, i));
    }
    moments.sort_unstable();
    let mut history = History::default();
    for (index, &(time, completion, i)) in moments.iter().enumerate() {
        let op = &planned[i];
        let (f, input) = match op.kind {
            Kind::Read => ("read", Value::Null),
            Kind::Write(value) => ("write", json!(value)),
            Kind::Cas(expected, new) => ("cas", json!([expected, new])),
        };
        let (kind, value) = match (completion, op.unknown, op.kind) {
            (false, _, _) => (EventType::Invoke, input),
            (true, true, _) => (EventType::Info, input),
            (true, false, Kind::Read) => (EventType::Ok, json!(op.read)),
            (true, false, Kind::Cas(..)) if !op.cas_ok => (EventType::Fail, input),
            (true, false, _) => (EventType::Ok, input),
        };
        let mut event = Event::new(index as u64, kind, Process::Client(op.process), f);
        event.time = Some(time * 1000);
        event.key = Some(json!(format!("k{}", op.key)));
        event.value = Some(value);
        history.events.push(event);
    }
    history
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_for_a_seed() {
        let config = RegisterHistoryConfig {
            n_ops: 200,
            seed: 7,
            ..Default::default()
        };
        assert_eq!(register_history(&config), register_history(&config));
        let other = RegisterHistoryConfig { seed: 8, ..config };
        assert_ne!(
            register_history(&other),
            register_history(&RegisterHistoryConfig {
                seed: 7,
                ..other.clone()
            })
        );
    }

    #[test]
    fn every_invoke_has_one_completion_and_indices_are_dense() {
        let history = register_history(&RegisterHistoryConfig {
            n_ops: 500,
            info_rate: 0.1,
            ..Default::default()
        });
        assert_eq!(history.events.len(), 1000);
        for (i, event) in history.events.iter().enumerate() {
            assert_eq!(event.index, i as u64);
        }
        let invokes = history
            .events
            .iter()
            .filter(|e| e.kind == EventType::Invoke)
            .count();
        assert_eq!(invokes, 500);
    }
}
