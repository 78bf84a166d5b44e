//! How the linearizability check schedules partitions: one cheap invalid partition ends the
//! check however hard the others are, the witness does not depend on the number of threads,
//! and the memory cap gives `unknown` naming the partition that reached it.

use helios_checker::format;
use helios_checker::history::{Event, History};
use helios_checker::linear::search::UnknownReason;
use helios_checker::linear::{self, LinearOptions, LinearReport};
use helios_checker::models::ModelSpec;
use helios_checker::ops::{self, Operations};
use helios_checker::synth::hard::{kv_history, KvHistoryConfig};
use helios_checker::Verdict;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

fn corpus(path: &str) -> Operations {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../histories")
        .join(path);
    let source = format::open(&path, None).unwrap();
    ops::pair(source.events, "corpus").unwrap()
}

fn check_on_threads(operations: &Operations, model: &str, threads: usize) -> LinearReport {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let spec = ModelSpec::parse(model).unwrap();
    pool.install(|| linear::check(operations, &spec, &LinearOptions::default()).unwrap())
}

/// A kv key that no search decides in reasonable time (50 operations in flight on one key,
/// with puts), followed by a key whose first get reads what nobody wrote.
fn hard_key_then_cheap_invalid_key() -> Operations {
    let mut history = kv_history(&KvHistoryConfig {
        n_ops: 600,
        n_keys: 1,
        clients: 50,
        seed: 0,
        ..KvHistoryConfig::default()
    });
    let mut next = history.events.len() as u64;
    let mut event = |kind, f: &str, value| {
        let mut event = Event::new(next, kind, helios_checker::Process::Client(999), f);
        event.key = Some(json!("cheap"));
        event.value = Some(value);
        next += 1;
        event
    };
    use helios_checker::EventType::{Invoke, Ok};
    let cheap = vec![
        event(Invoke, "append", json!("a")),
        event(Ok, "append", json!("a")),
        event(Invoke, "get", json!(null)),
        event(Ok, "get", json!("b")),
    ];
    history.events.extend(cheap);
    operations(&history)
}

fn operations(history: &History) -> Operations {
    ops::pair(history.events.iter().cloned().map(Ok), "generated").unwrap()
}

#[test]
fn a_cheap_invalid_partition_ends_the_check_even_on_one_thread() {
    // On one thread, checking the largest partition first would spend the whole time budget
    // on the hard key; in rounds, the cheap key is found invalid in the first one.
    let operations = hard_key_then_cheap_invalid_key();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let options = LinearOptions {
        timeout: Some(Duration::from_secs(60)),
        ..LinearOptions::default()
    };
    let spec = ModelSpec::parse("kv").unwrap();
    let report = pool.install(|| linear::check(&operations, &spec, &options).unwrap());
    assert_eq!(report.verdict, Verdict::Invalid);
    let witness = report.witness.as_ref().unwrap();
    assert_eq!(witness.key.as_deref(), Some("cheap"));
    let hard = report
        .partitions
        .iter()
        .find(|partition| partition.key.as_deref() == Some("\"0\""))
        .expect("the hard key is reported, not valid");
    assert_eq!(hard.verdict, Verdict::Unknown);
    assert_eq!(hard.unknown_reason, Some(UnknownReason::Cancelled));
}

#[test]
fn the_witness_is_the_same_on_one_two_and_four_threads() {
    for (file, model) in [
        ("porcupine-kv/c50-bad.txt", "kv"),
        ("generated/kv-c50-bad.txt", "kv"),
        ("generated/register-many-info-bad.jsonl", "register(nil)"),
        ("porcupine-etcd/etcd_000.log", "cas-register(nil)"),
    ] {
        let operations = corpus(file);
        let reports: Vec<LinearReport> = [1, 2, 4]
            .into_iter()
            .map(|threads| check_on_threads(&operations, model, threads))
            .collect();
        let witnesses: Vec<_> = reports
            .iter()
            .map(|report| {
                let witness = report.witness.as_ref().expect("invalid with a witness");
                (witness.key.clone(), witness.op, witness.prefix.clone())
            })
            .collect();
        assert!(
            witnesses.windows(2).all(|pair| pair[0] == pair[1]),
            "{file}: {witnesses:?}"
        );
        let verdicts: Vec<Vec<(Option<String>, Verdict)>> = reports
            .iter()
            .map(|report| {
                report
                    .partitions
                    .iter()
                    .map(|partition| (partition.key.clone(), partition.verdict))
                    .collect()
            })
            .collect();
        assert!(
            verdicts.windows(2).all(|pair| pair[0] == pair[1]),
            "{file}: the partitions decided differ: {verdicts:?}"
        );
    }
}

#[test]
fn the_memory_cap_gives_unknown_naming_the_partition() {
    let operations = hard_key_then_cheap_invalid_key();
    // Without the cheap key, only the hard one: it must stop at the cap, not decide.
    let hard: Operations = Operations {
        ops: operations
            .ops
            .iter()
            .filter(|op| op.key != Some(json!("cheap")))
            .cloned()
            .collect(),
        ..operations
    };
    let options = LinearOptions {
        max_memory_bytes: 64 << 20,
        ..LinearOptions::default()
    };
    let report = linear::check(&hard, &ModelSpec::parse("kv").unwrap(), &options).unwrap();
    assert_eq!(report.verdict, Verdict::Unknown);
    assert_eq!(report.unknown_reason, Some(UnknownReason::MemoryCap));
    assert_eq!(report.partitions.len(), 1);
    assert_eq!(report.partitions[0].key.as_deref(), Some("\"0\""));
    assert_eq!(
        report.partitions[0].unknown_reason,
        Some(UnknownReason::MemoryCap)
    );
}
