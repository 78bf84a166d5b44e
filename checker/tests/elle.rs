//! The Elle-style isolation checker: handmade histories (one per anomaly), the reference
//! history from Elle's own corpus, bad input, budgets, and serial histories as properties.

use helios_checker::elle::{self, Consistency, ElleOptions, ElleReport, TxnWorkload};
use helios_checker::format;
use helios_checker::ops::{self, Operations};
use helios_checker::Verdict;
use proptest::prelude::*;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn histories() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../histories")
}

fn operations(text: &str) -> Operations {
    let source = format::from_reader(Box::new(Cursor::new(text.to_string())), "h", None)
        .expect("a readable history");
    ops::pair(source.events, "h").expect("a well-formed history")
}

fn options(consistency: Consistency) -> ElleOptions {
    ElleOptions {
        consistency,
        ..ElleOptions::default()
    }
}

/// What one check must show.
struct Expected<'a> {
    consistency: Consistency,
    verdict: Verdict,
    /// Every anomaly found, and no other.
    anomalies: &'a [&'a str],
}

/// Checks `history_text` and compares the verdict and the anomalies found with `expected`.
fn check(history_text: &str, expected: Expected) -> ElleReport {
    check_with(history_text, options(expected.consistency), expected)
}

fn check_with(history_text: &str, options: ElleOptions, expected: Expected) -> ElleReport {
    let report = elle::check(&operations(history_text), &options).expect("a checkable history");
    let found: Vec<&str> = report.anomalies.keys().map(String::as_str).collect();
    let mut wanted: Vec<&str> = expected.anomalies.to_vec();
    wanted.sort_unstable();
    assert_eq!(found, wanted, "anomalies found; report: {report:#?}");
    assert_eq!(
        report.verdict, expected.verdict,
        "verdict; report: {report:#?}"
    );
    for (name, instances) in &report.anomalies {
        assert!(!instances.is_empty(), "{name} has no witness");
        for anomaly in instances {
            assert_eq!(&anomaly.name, name);
            assert!(!anomaly.explanation.is_empty(), "{name} is not explained");
            if let Some(cycle) = &anomaly.cycle {
                assert!(cycle.len() >= 2, "{name}: a cycle of one edge");
                for (step, next) in cycle.iter().zip(cycle.iter().cycle().skip(1)) {
                    assert_eq!(step.to, next.from, "{name}: the cycle does not close");
                    assert!(
                        step.why.contains(&format!("({})", step.kind.name())),
                        "{name}: the edge is not named: {}",
                        step.why
                    );
                }
            }
        }
    }
    for name in &report.failing {
        assert!(expected.consistency.forbids(name));
    }
    report
}

#[test]
fn every_handmade_history_gets_its_verdict_and_exactly_its_anomalies() {
    let folder = histories().join("elle-handmade");
    let manifest = std::fs::read_to_string(folder.join("manifest.tsv")).unwrap();
    let mut checked = 0;
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let columns: Vec<&str> = line.split('\t').collect();
        let [path, consistency, flags, verdict, anomalies] = columns[..] else {
            panic!("manifest line has {} columns: {line}", columns.len());
        };
        let text = std::fs::read_to_string(folder.join(path)).unwrap();
        assert!(
            text.lines().next().unwrap().contains("\"why\""),
            "{path} has no why"
        );
        let mut options = options(Consistency::parse(consistency).unwrap());
        options.infer_writes_follow_reads = flags.contains("writes-follow-reads");
        let verdict = match verdict {
            "valid" => Verdict::Valid,
            "invalid" => Verdict::Invalid,
            "unknown" => Verdict::Unknown,
            other => panic!("unknown verdict {other} in {line}"),
        };
        let anomalies: Vec<&str> = anomalies.split(',').filter(|a| *a != "-").collect();
        eprintln!("checking {path} for {consistency}");
        check_with(
            &text,
            options,
            Expected {
                consistency: Consistency::parse(consistency).unwrap(),
                verdict,
                anomalies: &anomalies,
            },
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} manifest lines");
}

#[test]
fn elle_reference_history_is_read_committed_and_holds_only_g2_item() {
    let text = std::fs::read_to_string(histories().join("elle/si-without-g-single.edn")).unwrap();
    let report = check(
        &text,
        Expected {
            consistency: Consistency::ReadCommitted,
            verdict: Verdict::Valid,
            anomalies: &["G2-item"],
        },
    );
    assert_eq!(report.workload, TxnWorkload::ListAppend);
    assert_eq!(report.n_txns, 4);
    assert_eq!(report.informational, vec!["G2-item".to_string()]);
    let report = check(
        &text,
        Expected {
            consistency: Consistency::RepeatableRead,
            verdict: Verdict::Invalid,
            anomalies: &["G2-item"],
        },
    );
    assert_eq!(report.failing, vec!["G2-item".to_string()]);
    // Snapshot isolation allows G2-item: that is the point of this history.
    check(
        &text,
        Expected {
            consistency: Consistency::SnapshotIsolation,
            verdict: Verdict::Valid,
            anomalies: &["G2-item"],
        },
    );
}

const G1C: &str = concat!(
    "{\"index\":0,\"type\":\"invoke\",\"process\":0,\"f\":\"txn\",\"value\":[[\"append\",\"x\",1],[\"r\",\"y\",null]]}\n",
    "{\"index\":1,\"type\":\"invoke\",\"process\":1,\"f\":\"txn\",\"value\":[[\"append\",\"y\",1],[\"r\",\"x\",null]]}\n",
    "{\"index\":2,\"type\":\"ok\",\"process\":0,\"f\":\"txn\",\"value\":[[\"append\",\"x\",1],[\"r\",\"y\",[1]]]}\n",
    "{\"index\":3,\"type\":\"ok\",\"process\":1,\"f\":\"txn\",\"value\":[[\"append\",\"y\",1],[\"r\",\"x\",[1]]]}\n",
);

#[test]
fn a_cycle_is_explained_one_edge_per_line_naming_txns_and_processes() {
    let report = check(
        G1C,
        Expected {
            consistency: Consistency::ReadCommitted,
            verdict: Verdict::Invalid,
            anomalies: &["G1c"],
        },
    );
    let mut lines = report.anomalies["G1c"][0].explanation.clone();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "T0 (process 0) < T1 (process 1) because T1 read T0's append of 1 to key x (wr)",
            "T1 (process 1) < T0 (process 0) because T0 read T1's append of 1 to key y (wr)",
        ]
    );
}

#[test]
fn rw_and_ww_edges_are_explained_with_keys_and_values() {
    let text = std::fs::read_to_string(histories().join("elle/si-without-g-single.edn")).unwrap();
    let report = check(
        &text,
        Expected {
            consistency: Consistency::Serializable,
            verdict: Verdict::Invalid,
            anomalies: &["G2-item"],
        },
    );
    // The ww edge T0 -> T2 on key 9 is inferred from T2's append that no read observed: it
    // must come after the longest read of key 9, [2].
    assert_eq!(
        report.anomalies["G2-item"][0].explanation,
        vec![
            "T1 (process 4) < T0 (process 2) because T1 read key 9 in its initial state, \
             before T0's append of 2 (rw)",
            "T0 (process 2) < T2 (process 7) because T2's append of 5 to key 9 follows T0's \
             append of 2 (ww)",
            "T2 (process 7) < T1 (process 4) because T2 read key 8 in its initial state, \
             before T1's append of 1 (rw)",
        ]
    );
}

#[test]
fn strict_serializable_catches_a_stale_read_that_serializable_allows() {
    let text = concat!(
        "{\"index\":0,\"type\":\"invoke\",\"process\":0,\"f\":\"txn\",\"value\":[[\"append\",\"x\",1]]}\n",
        "{\"index\":1,\"type\":\"ok\",\"process\":0,\"f\":\"txn\",\"value\":[[\"append\",\"x\",1]]}\n",
        "{\"index\":2,\"type\":\"invoke\",\"process\":1,\"f\":\"txn\",\"value\":[[\"r\",\"x\",null]]}\n",
        "{\"index\":3,\"type\":\"ok\",\"process\":1,\"f\":\"txn\",\"value\":[[\"r\",\"x\",[]]]}\n",
    );
    check(
        text,
        Expected {
            consistency: Consistency::Serializable,
            verdict: Verdict::Valid,
            anomalies: &[],
        },
    );
    let report = check(
        text,
        Expected {
            consistency: Consistency::StrictSerializable,
            verdict: Verdict::Invalid,
            anomalies: &["G-single-realtime"],
        },
    );
    let lines = &report.anomalies["G-single-realtime"][0].explanation;
    assert!(lines.iter().any(|l| l.ends_with("(realtime)")), "{lines:?}");
}

#[test]
fn an_info_txn_whose_append_was_read_committed_and_one_never_read_constrains_nothing() {
    // T0's outcome is unknown, but T1 read its append to x, so it committed; and T2 saw its
    // append to z after T1's: a cycle T0 -wr-> T1 -ww-> T0.
    let read = concat!(
        "{\"index\":0,\"type\":\"invoke\",\"process\":0,\"f\":\"txn\",\"value\":[[\"append\",\"x\",1],[\"append\",\"z\",2]]}\n",
        "{\"index\":1,\"type\":\"info\",\"process\":0,\"f\":\"txn\",\"value\":[[\"append\",\"x\",1],[\"append\",\"z\",2]]}\n",
        "{\"index\":2,\"type\":\"invoke\",\"process\":1,\"f\":\"txn\",\"value\":[[\"r\",\"x\",null],[\"append\",\"z\",1]]}\n",
        "{\"index\":3,\"type\":\"ok\",\"process\":1,\"f\":\"txn\",\"value\":[[\"r\",\"x\",[1]],[\"append\",\"z\",1]]}\n",
        "{\"index\":4,\"type\":\"invoke\",\"process\":2,\"f\":\"txn\",\"value\":[[\"r\",\"z\",null]]}\n",
        "{\"index\":5,\"type\":\"ok\",\"process\":2,\"f\":\"txn\",\"value\":[[\"r\",\"z\",[1,2]]]}\n",
    );
    check(
        read,
        Expected {
            consistency: Consistency::ReadCommitted,
            verdict: Verdict::Invalid,
            anomalies: &["G1c"],
        },
    );
    // An info append nobody read may never have happened: reading x empty afterwards is fine.
    let unread = concat!(
        "{\"index\":0,\"type\":\"invoke\",\"process\":0,\"f\":\"txn\",\"value\":[[\"append\",\"x\",1]]}\n",
        "{\"index\":1,\"type\":\"info\",\"process\":0,\"f\":\"txn\",\"value\":[[\"append\",\"x\",1]]}\n",
        "{\"index\":2,\"type\":\"invoke\",\"process\":1,\"f\":\"txn\",\"value\":[[\"r\",\"x\",null]]}\n",
        "{\"index\":3,\"type\":\"ok\",\"process\":1,\"f\":\"txn\",\"value\":[[\"r\",\"x\",[]]]}\n",
    );
    check(
        unread,
        Expected {
            consistency: Consistency::StrictSerializable,
            verdict: Verdict::Valid,
            anomalies: &[],
        },
    );
}

#[test]
fn an_unknown_micro_op_is_a_shape_error_naming_line_and_field() {
    let text = concat!(
        "{\"index\":0,\"type\":\"invoke\",\"process\":0,\"f\":\"txn\",\"value\":[[\"append\",\"x\",1]]}\n",
        "{\"index\":1,\"type\":\"ok\",\"process\":0,\"f\":\"txn\",\"value\":[[\"append\",\"x\",1]]}\n",
        "{\"index\":2,\"type\":\"invoke\",\"process\":0,\"f\":\"txn\",\"value\":[[\"incr\",\"x\",1]]}\n",
        "{\"index\":3,\"type\":\"ok\",\"process\":0,\"f\":\"txn\",\"value\":[[\"incr\",\"x\",1]]}\n",
    );
    let error = elle::check(&operations(text), &ElleOptions::default()).unwrap_err();
    assert_eq!(error.line, 4);
    assert_eq!(error.field, "value");
    assert!(error.message.contains("\"incr\""), "{}", error.message);
}

#[test]
fn malformed_values_are_shape_errors_never_verdicts() {
    let bad_values = [
        "3",
        "[[\"append\",\"x\"]]",
        "[[\"append\",[1],1]]",
        "[[\"append\",\"x\",null]]",
        "[[\"r\",\"x\",{\"a\":1}]]",
        "[[\"r\",\"x\",[[1]]]]",
    ];
    for value in bad_values {
        let text = format!(
            "{{\"index\":0,\"type\":\"invoke\",\"process\":0,\"f\":\"txn\",\"value\":{value}}}\n\
             {{\"index\":1,\"type\":\"ok\",\"process\":0,\"f\":\"txn\",\"value\":{value}}}\n"
        );
        let result = elle::check(&operations(&text), &ElleOptions::default());
        let error = result.expect_err(value);
        assert_eq!((error.line, error.field), (2, "value"), "{value}");
    }
}

#[test]
fn a_non_unique_append_makes_the_verdict_unknown_never_valid() {
    let text = concat!(
        "{\"index\":0,\"type\":\"invoke\",\"process\":0,\"f\":\"txn\",\"value\":[[\"append\",\"x\",1]]}\n",
        "{\"index\":1,\"type\":\"ok\",\"process\":0,\"f\":\"txn\",\"value\":[[\"append\",\"x\",1]]}\n",
        "{\"index\":2,\"type\":\"invoke\",\"process\":1,\"f\":\"txn\",\"value\":[[\"append\",\"x\",1]]}\n",
        "{\"index\":3,\"type\":\"ok\",\"process\":1,\"f\":\"txn\",\"value\":[[\"append\",\"x\",1]]}\n",
    );
    let report = elle::check(&operations(text), &ElleOptions::default()).unwrap();
    assert_eq!(report.verdict, Verdict::Unknown);
    let reason = report.unknown_reason.unwrap();
    assert!(reason.contains("more than once"), "{reason}");
    assert!(
        reason.contains("T0 (process 0)") && reason.contains("T1 (process 1)"),
        "{reason}"
    );
}

#[test]
fn a_cycle_search_out_of_budget_says_unknown_not_valid() {
    let text = std::fs::read_to_string(histories().join("elle-handmade/g2-item-write-skew.jsonl"))
        .unwrap();
    let options = ElleOptions {
        consistency: Consistency::RepeatableRead,
        cycle_search_budget_per_component: Duration::ZERO,
        ..ElleOptions::default()
    };
    let report = elle::check(&operations(&text), &options).unwrap();
    assert_eq!(report.verdict, Verdict::Unknown, "{report:#?}");
    assert!(report.unknown_reason.unwrap().contains("G2-item"));
}

#[test]
fn a_history_without_txns_is_unknown_and_workloads_are_detected() {
    let no_txns = "{\"index\":0,\"type\":\"invoke\",\"process\":0,\"f\":\"read\",\"value\":null}\n";
    assert_eq!(elle::detect(&operations(no_txns)), None);
    let report = elle::check(&operations(no_txns), &ElleOptions::default()).unwrap();
    assert_eq!(report.verdict, Verdict::Unknown);
    assert_eq!(
        elle::detect(&operations(G1C)),
        Some(TxnWorkload::ListAppend)
    );
    let register =
        std::fs::read_to_string(histories().join("elle-handmade/valid-rw-register.jsonl")).unwrap();
    assert_eq!(
        elle::detect(&operations(&register)),
        Some(TxnWorkload::RwRegister)
    );
}

/// A serial list-append history, made by running each txn against a real (simulated)
/// database one after another, with a final read of every key.
fn serial_history(txns: &[Vec<(bool, u8)>]) -> (String, usize) {
    let mut lists: Vec<Vec<u64>> = vec![Vec::new(); 4];
    let mut next = 1u64;
    let mut lines = Vec::new();
    let mut index = 0;
    let mut emit = |process: usize, invoke: &serde_json::Value, done: &serde_json::Value| {
        for (kind, value) in [("invoke", invoke), ("ok", done)] {
            lines.push(
                serde_json::json!({"index": index, "type": kind, "process": process, "f": "txn", "value": value})
                    .to_string(),
            );
            index += 1;
        }
    };
    for (n, txn) in txns.iter().enumerate() {
        let mut invoke = Vec::new();
        let mut done = Vec::new();
        for &(append, key) in txn {
            let key = usize::from(key % 4);
            if append {
                invoke.push(serde_json::json!(["append", key, next]));
                done.push(serde_json::json!(["append", key, next]));
                lists[key].push(next);
                next += 1;
            } else {
                invoke.push(serde_json::json!(["r", key, null]));
                done.push(serde_json::json!(["r", key, lists[key].clone()]));
            }
        }
        emit(n % 3, &serde_json::json!(invoke), &serde_json::json!(done));
    }
    let finals: Vec<serde_json::Value> = (0..4)
        .map(|key| serde_json::json!(["r", key, lists[key].clone()]))
        .collect();
    let invoke: Vec<serde_json::Value> = (0..4)
        .map(|key| serde_json::json!(["r", key, null]))
        .collect();
    emit(3, &serde_json::json!(invoke), &serde_json::json!(finals));
    (lines.join("\n") + "\n", index)
}

/// Drops the middle element of the first non-final read of three or more elements.
fn corrupt_one_read(history: &str) -> Option<String> {
    let mut lines: Vec<String> = history.lines().map(str::to_string).collect();
    let last_txn = lines.len() - 2;
    for line in lines.iter_mut().take(last_txn) {
        let mut event: serde_json::Value = serde_json::from_str(line).unwrap();
        if event["type"] != "ok" {
            continue;
        }
        for mop in event["value"].as_array_mut().unwrap() {
            if mop[0] == "r" && mop[2].as_array().is_some_and(|l| l.len() >= 3) {
                let list = mop[2].as_array_mut().unwrap();
                list.remove(list.len() / 2);
                *line = event.to_string();
                return Some(lines.join("\n") + "\n");
            }
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn serial_histories_are_serializable_and_a_corrupted_read_is_caught(
        txns in prop::collection::vec(prop::collection::vec((any::<bool>(), 0u8..4), 1..5), 1..40)
    ) {
        // A fixed first txn appends three elements to key 0 and reads them back, so every
        // case has a read to corrupt.
        let mut txns = txns;
        txns.insert(0, vec![(true, 0), (true, 0), (true, 0), (false, 0)]);
        let (history, _) = serial_history(&txns);
        let ops = operations(&history);
        for consistency in [Consistency::Serializable, Consistency::StrictSerializable] {
            let report = elle::check(&ops, &options(consistency)).unwrap();
            prop_assert_eq!(report.verdict, Verdict::Valid, "{:#?}\n{}", report, history);
            prop_assert!(report.anomalies.is_empty(), "{:#?}", report);
        }
        let corrupted = corrupt_one_read(&history).expect("the first txn's read can be corrupted");
        let report = elle::check(&operations(&corrupted), &options(Consistency::Serializable)).unwrap();
        prop_assert_eq!(report.verdict, Verdict::Invalid, "{:#?}\n{}", report, corrupted);
        prop_assert!(report.failing.contains(&"incompatible-order".to_string()), "{:#?}", report);

    }
}

fn txn_line(index: u64, kind: &str, process: u64, value: &str) -> String {
    format!(
        "{{\"index\":{index},\"type\":\"{kind}\",\"process\":{process},\"f\":\"txn\",\"value\":{value}}}\n"
    )
}

/// A history of sequential txns: (process, outcome, invoke value, completion value).
fn sequential(txns: &[(u64, &str, &str, &str)]) -> String {
    let mut text = String::new();
    for (n, &(process, outcome, invoke, done)) in txns.iter().enumerate() {
        text.push_str(&txn_line(2 * n as u64, "invoke", process, invoke));
        text.push_str(&txn_line(2 * n as u64 + 1, outcome, process, done));
    }
    text
}

#[test]
fn rw_register_stale_read_on_a_linearizable_key_makes_versions_cyclic() {
    let text = sequential(&[
        (0, "ok", "[[\"w\",\"x\",1]]", "[[\"w\",\"x\",1]]"),
        (1, "ok", "[[\"w\",\"x\",2]]", "[[\"w\",\"x\",2]]"),
        (2, "ok", "[[\"r\",\"x\",null]]", "[[\"r\",\"x\",1]]"),
    ]);
    // Without realtime inference nothing orders the writes, so the stale read is fine.
    check(
        &text,
        Expected {
            consistency: Consistency::Serializable,
            verdict: Verdict::Valid,
            anomalies: &[],
        },
    );
    let options = ElleOptions {
        infer_linearizable_keys: true,
        ..ElleOptions::default()
    };
    let report = check_with(
        &text,
        options,
        Expected {
            consistency: Consistency::ReadCommitted,
            verdict: Verdict::Invalid,
            anomalies: &["G-single", "G0", "cyclic-versions"],
        },
    );
    let lines = &report.anomalies["cyclic-versions"][0].explanation;
    assert!(lines[0].contains("1, 2 of key x"), "{lines:?}");
}

#[test]
fn rw_register_intermediate_and_internal_reads_are_caught() {
    let intermediate = sequential(&[
        (
            0,
            "ok",
            "[[\"w\",\"x\",1],[\"w\",\"x\",2]]",
            "[[\"w\",\"x\",1],[\"w\",\"x\",2]]",
        ),
        (1, "ok", "[[\"r\",\"x\",null]]", "[[\"r\",\"x\",1]]"),
    ]);
    check(
        &intermediate,
        Expected {
            consistency: Consistency::ReadCommitted,
            verdict: Verdict::Invalid,
            anomalies: &["G1b"],
        },
    );
    let internal = sequential(&[
        (0, "ok", "[[\"w\",\"x\",1]]", "[[\"w\",\"x\",1]]"),
        (
            1,
            "ok",
            "[[\"w\",\"x\",2],[\"r\",\"x\",null]]",
            "[[\"w\",\"x\",2],[\"r\",\"x\",1]]",
        ),
    ]);
    let report = check(
        &internal,
        Expected {
            consistency: Consistency::SnapshotIsolation,
            verdict: Verdict::Invalid,
            anomalies: &["internal"],
        },
    );
    assert_eq!(
        report.anomalies["internal"][0].explanation,
        vec![
            "T1 (process 1) read 1 from key x",
            "but its own earlier micro-ops mean it should have read 2",
        ]
    );
}

#[test]
fn a_process_that_misses_its_own_write_is_g_single_process() {
    let text = sequential(&[
        (0, "ok", "[[\"append\",\"x\",1]]", "[[\"append\",\"x\",1]]"),
        (0, "ok", "[[\"r\",\"x\",null]]", "[[\"r\",\"x\",[]]]"),
    ]);
    let options = ElleOptions {
        consistency: Consistency::Serializable,
        process_edges: true,
        ..ElleOptions::default()
    };
    let report = check_with(
        &text,
        options,
        Expected {
            consistency: Consistency::Serializable,
            verdict: Verdict::Valid,
            anomalies: &["G-single-process"],
        },
    );
    assert_eq!(report.informational, vec!["G-single-process".to_string()]);
    check(
        &text,
        Expected {
            consistency: Consistency::StrictSerializable,
            verdict: Verdict::Invalid,
            anomalies: &["G-single-process", "G-single-realtime"],
        },
    );
}
