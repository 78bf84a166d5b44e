//! The lost-writes checker (set-full) on hand-made histories with hand-computed answers.
//!
//! Most cases are Jepsen's own set-full tests (`jepsen/test/jepsen/checker_test.clj`), with
//! one event per millisecond where Jepsen's have one per millisecond too.

use helios_checker::format::{self, Format};
use helios_checker::ops::{self, Operations};
use helios_checker::sets::{self, SetOptions, SetReport};
use helios_checker::timing::TimeBasis;
use helios_checker::Verdict;
use serde_json::json;
use std::path::{Path, PathBuf};

fn histories() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../histories/sets-handmade")
}

/// Reads and pairs one archived history; the header says whether the set is linearizable.
fn load(name: &str) -> (Operations, SetOptions) {
    let path = histories().join(name);
    let source = format::open(&path, Some(Format::Jsonl)).expect("history opens");
    let linearizable = source
        .header
        .as_ref()
        .and_then(|header| header.extra.get("linearizable"))
        .and_then(|value| value.as_bool())
        .unwrap_or(false);
    let operations = ops::pair(source.events, name).expect("history pairs");
    (operations, SetOptions { linearizable })
}

fn check(name: &str) -> SetReport {
    let (operations, options) = load(name);
    sets::check(&operations, &options).expect("well-shaped history")
}

fn elements(list: &[sets::ElementReport]) -> Vec<serde_json::Value> {
    list.iter().map(|element| element.element.clone()).collect()
}

#[test]
fn every_history_in_the_manifest_gets_its_expected_verdict() {
    let manifest = std::fs::read_to_string(histories().join("manifest.tsv")).unwrap();
    let mut checked = 0;
    for line in manifest.lines().filter(|line| !line.starts_with('#')) {
        let columns: Vec<&str> = line.split('\t').collect();
        let [path, "jsonl", _checker, expected, why] = columns[..] else {
            panic!("manifest line has the wrong columns: {line}");
        };
        assert!(!why.is_empty(), "{path} needs a why");
        let name = path.trim_start_matches("sets-handmade/");
        let (operations, options) = load(name);
        let verdict = match sets::check(&operations, &options) {
            Ok(report) => report.verdict.to_string(),
            Err(_) => "shape-error".to_string(),
        };
        assert_eq!(verdict, expected, "{path}: {why}");
        checked += 1;
    }
    assert_eq!(checked, 14);
}

#[test]
fn an_element_read_only_by_a_concurrent_read_that_missed_it_is_never_read() {
    let report = check("never-read.jsonl");
    assert_eq!(report.verdict, Verdict::Unknown);
    assert_eq!(elements(&report.never_read), vec![json!(0)]);
    assert_eq!((report.stable_count, report.lost_count), (0, 0));
    assert_eq!(report.never_read_count, 1);
}

#[test]
fn a_concurrent_read_that_sees_the_element_makes_it_stable_at_once() {
    let report = check("stable-concurrent-read.jsonl");
    assert_eq!(report.verdict, Verdict::Valid);
    assert_eq!(report.stable_count, 1);
    assert_eq!(report.stale_count, 0);
    assert_eq!(report.stable_latency_ms.max, Some(0.0));
    assert_eq!(report.time_basis, TimeBasis::Nanoseconds);
}

#[test]
fn an_acknowledged_add_missing_from_a_later_read_is_lost() {
    let report = check("lost-after-ack.jsonl");
    assert_eq!(report.verdict, Verdict::Invalid);
    assert_eq!(elements(&report.lost), vec![json!(0)]);
    let lost = &report.lost[0];
    assert_eq!(lost.add_op, 0);
    assert_eq!(lost.known_op, Some(0));
    assert_eq!(lost.known_time, Some(1_000_000));
    assert_eq!(lost.last_present, None);
    assert_eq!(lost.last_absent, Some(1));
    assert_eq!(lost.latency_ms, Some(0.0));
    assert!(
        lost.explanation.contains("never returned by any read")
            && lost.explanation.contains("missing from read op 1"),
        "{}",
        lost.explanation
    );
}

#[test]
fn jepsen_write_present_missing_loses_both_with_latencies_of_3_and_4_ms() {
    let report = check("jepsen-write-present-missing.jsonl");
    assert_eq!(report.verdict, Verdict::Invalid);
    assert_eq!(elements(&report.lost), vec![json!(0), json!(1)]);
    assert_eq!(report.lost_count, 2);
    assert_eq!((report.stable_count, report.stale_count), (0, 0));
    // Element 1 is known when the first read completes (3 ms), before its add does.
    let one = &report.lost[1];
    assert_eq!(one.known_time, Some(3_000_000));
    assert_eq!(one.latency_ms, Some(3.0));
    assert_eq!(report.lost[0].latency_ms, Some(4.0));
    // Jepsen: {0 3, 0.5 4, 0.95 4, 0.99 4, 1 4}.
    let quantiles = &report.lost_latency_ms;
    assert_eq!(quantiles.min, Some(3.0));
    assert_eq!(quantiles.p50, Some(4.0));
    assert_eq!(quantiles.p99, Some(4.0));
    assert_eq!(quantiles.max, Some(4.0));
}

#[test]
fn jepsen_flutter_loses_0_and_finds_1_stale_for_3_ms() {
    let report = check("jepsen-flutter.jsonl");
    assert_eq!(report.verdict, Verdict::Invalid);
    assert_eq!(elements(&report.lost), vec![json!(0)]);
    assert_eq!(report.lost[0].latency_ms, Some(5.0));
    assert_eq!(elements(&report.stale), vec![json!(1)]);
    let stale = &report.stale[0];
    assert_eq!(stale.known_time, Some(4_000_000));
    // Missed by the read invoked at 6 ms (op 3), present from the read invoked at 7 ms (op 4).
    assert_eq!(stale.last_absent, Some(3));
    assert_eq!(stale.last_present, Some(4));
    assert_eq!(stale.latency_ms, Some(3.0));
    assert_eq!(report.stable_count, 1);
    assert_eq!(report.stable_latency_ms.max, Some(3.0));
}

#[test]
fn a_stale_element_is_valid_unless_the_set_must_be_linearizable() {
    let relaxed = check("stale-then-stable.jsonl");
    assert_eq!(relaxed.verdict, Verdict::Valid);
    assert_eq!(relaxed.stale_count, 1);
    assert_eq!(relaxed.stale[0].latency_ms, Some(20.0));
    assert_eq!(relaxed.stable_latency_ms.p50, Some(20.0));
    let strict = check("stale-linearizable.jsonl");
    assert_eq!(strict.verdict, Verdict::Invalid);
    assert_eq!(strict.stale_count, 1);
    assert_eq!(strict.lost_count, 0);
}

#[test]
fn duplicates_in_one_read_are_counted_unlike_jepsens_set_full() {
    let report = check("duplicate.jsonl");
    assert_eq!(report.verdict, Verdict::Invalid);
    assert_eq!(report.duplicated_count, 1);
    let duplicate = &report.duplicated[0];
    assert_eq!(duplicate.element, json!(2));
    assert_eq!(duplicate.max_multiplicity, 3);
    assert_eq!(duplicate.read_op, 3);
    assert_eq!(duplicate.n_reads, 2);
    // Both elements are otherwise stable.
    assert_eq!(report.stable_count, 2);
    assert_eq!(report.lost_count, 0);
}

#[test]
fn an_info_add_becomes_known_when_read_and_one_never_read_stays_never_read() {
    let report = check("info-add-read-later.jsonl");
    assert_eq!(report.verdict, Verdict::Valid);
    assert_eq!(report.n_elements, 2);
    assert_eq!(report.stable_count, 1);
    assert_eq!(
        report.stale_count, 0,
        "the read at 20 ms began before 7 was known"
    );
    assert_eq!(elements(&report.never_read), vec![json!(8)]);
    assert_eq!(report.never_read[0].known_index, None);
    assert!(report.never_read[0].explanation.contains("never known"));
}

#[test]
fn reading_a_failed_or_never_added_value_is_unexpected() {
    let report = check("failed-add-is-read.jsonl");
    assert_eq!(report.verdict, Verdict::Invalid);
    assert_eq!(report.unexpected_count, 2);
    let failed: Vec<_> = report
        .unexpected
        .iter()
        .map(|u| (u.element.clone(), u.add_failed))
        .collect();
    assert_eq!(failed, vec![(json!(3), true), (json!(99), false)]);
    assert_eq!(
        report.n_elements, 1,
        "a value whose only add failed is no element"
    );
    assert_eq!(report.stable_count, 1);
}

#[test]
fn each_key_is_its_own_set() {
    let report = check("keyed-lost-in-one-key.jsonl");
    assert_eq!(report.verdict, Verdict::Invalid);
    assert_eq!(report.n_keys, 2);
    assert_eq!(report.n_elements, 2);
    assert_eq!(report.lost.len(), 1);
    assert_eq!(report.lost[0].key.as_deref(), Some("b"));
    assert_eq!(report.stable_count, 1);
}

#[test]
fn sql_inserts_read_back_as_id_lists_are_checked_like_adds() {
    let (operations, options) = load("sql-inserts-valid.jsonl");
    assert!(sets::applies(&operations));
    let report = sets::check(&operations, &options).unwrap();
    assert_eq!(report.verdict, Verdict::Valid);
    assert_eq!(report.stable_count, 2);
    assert_eq!(report.stale_count, 0);
}

#[test]
fn a_read_that_returns_no_list_is_a_shape_error_naming_line_and_field() {
    let (operations, options) = load("read-returns-a-number.jsonl");
    let error = sets::check(&operations, &options).unwrap_err();
    assert_eq!(error.line, 5);
    assert_eq!(error.field, "value");
    assert_eq!(
        error.message,
        "a read returns the whole set as a list, found 3"
    );
}

#[test]
fn an_add_without_a_value_is_a_shape_error_naming_line_and_field() {
    let (operations, options) = load("add-without-value.jsonl");
    let error = sets::check(&operations, &options).unwrap_err();
    assert_eq!(error.line, 2);
    assert_eq!(error.field, "value");
    assert!(error.message.contains("found nil"), "{}", error.message);
}

#[test]
fn register_histories_do_not_apply() {
    let source = format::open(
        &histories().join("../handmade/stale-read.jsonl"),
        Some(Format::Jsonl),
    )
    .unwrap();
    let operations = ops::pair(source.events, "stale-read.jsonl").unwrap();
    assert!(!sets::applies(&operations));
}

#[test]
fn without_times_order_comes_from_indices_and_latencies_are_missing() {
    let (mut operations, options) = load("jepsen-flutter.jsonl");
    for op in &mut operations.ops {
        op.invoke_time = None;
        op.complete_time = None;
    }
    let report = sets::check(&operations, &options).unwrap();
    assert_eq!(report.verdict, Verdict::Invalid);
    assert_eq!(elements(&report.lost), vec![json!(0)]);
    assert_eq!(elements(&report.stale), vec![json!(1)]);
    assert_eq!(report.time_basis, TimeBasis::EventIndex);
    assert!(report.note.is_some());
    assert_eq!(report.stale[0].latency_ms, None);
    assert_eq!(report.lost_latency_ms.count, 0);
    assert!(report.stale[0].explanation.contains("event 6"));
}

#[test]
fn a_history_with_no_adds_is_unknown() {
    let (mut operations, options) = load("lost-after-ack.jsonl");
    operations.ops.retain(|op| op.f == "read");
    let report = sets::check(&operations, &options).unwrap();
    assert_eq!(report.verdict, Verdict::Unknown);
    assert_eq!(report.n_elements, 0);
}

mod against_a_reference {
    //! The one-pass sweep against a direct, reads × elements transcription of the definitions.

    use helios_checker::history::{Event, EventType, Process};
    use helios_checker::ops::{self, Operations, Outcome};
    use helios_checker::sets::{self, SetOptions};
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    /// One step of a random history: which process acts, and a seed for what it does.
    fn history(steps: &[(u8, u8)]) -> Operations {
        let mut events = Vec::new();
        let mut busy: BTreeMap<u8, (String, Value)> = BTreeMap::new();
        let mut added: Vec<i64> = Vec::new();
        for (index, &(process, choice)) in steps.iter().enumerate() {
            let process = process % 3;
            let mut event = |kind, f: &str, value: Value| {
                let mut event = Event::new(
                    events.len() as u64,
                    kind,
                    Process::Client(u64::from(process)),
                    f,
                );
                event.time = Some(index as u64 * 1_000_000);
                event.value = Some(value);
                event.line = events.len() as u64 + 1;
                events.push(Ok(event));
            };
            match busy.remove(&process) {
                None if choice % 2 == 0 => {
                    let element = json!(i64::from(choice / 2 % 6));
                    event(EventType::Invoke, "add", element.clone());
                    busy.insert(process, ("add".to_string(), element));
                }
                None => {
                    event(EventType::Invoke, "read", Value::Null);
                    busy.insert(process, ("read".to_string(), Value::Null));
                }
                Some((f, value)) if f == "add" => {
                    let kind = [
                        EventType::Ok,
                        EventType::Ok,
                        EventType::Info,
                        EventType::Fail,
                    ][usize::from(choice % 4)];
                    if let Some(element) = value.as_i64() {
                        added.push(element);
                    }
                    event(kind, "add", value);
                }
                Some(_) => {
                    // Each element seen so far (or about to be) is returned with some chance,
                    // sometimes twice.
                    let mut returned = Vec::new();
                    for element in 0..6i64 {
                        let bits = u32::from(choice).rotate_left(element as u32 * 3) % 8;
                        let likely = added.contains(&element);
                        if (likely && bits < 6) || bits == 7 {
                            returned.push(json!(element));
                        }
                        if bits == 5 && element == i64::from(choice % 6) {
                            returned.push(json!(element));
                        }
                    }
                    event(EventType::Ok, "read", Value::Array(returned));
                }
            }
        }
        ops::pair(events, "random").expect("generated histories are well formed")
    }

    /// Classification and latency of each element, transcribed from the definitions.
    fn reference(history: &Operations) -> BTreeMap<i64, (&'static str, Option<f64>)> {
        let mut reads: Vec<&ops::Operation> = history
            .ops
            .iter()
            .filter(|op| op.f == "read" && op.outcome == Outcome::Ok)
            .collect();
        reads.sort_by_key(|op| op.invoke_index);
        let contains = |read: &ops::Operation, element: i64| {
            read.output
                .as_ref()
                .and_then(Value::as_array)
                .is_some_and(|items| items.contains(&json!(element)))
        };
        let mut result = BTreeMap::new();
        for element in 0..6i64 {
            let adds: Vec<_> = history
                .ops
                .iter()
                .filter(|op| op.f == "add" && op.input == json!(element))
                .collect();
            if adds.iter().all(|op| op.outcome == Outcome::Fail) {
                continue;
            }
            let mut known: Option<(u64, u64)> = None;
            let candidates = adds
                .iter()
                .filter(|op| op.outcome == Outcome::Ok)
                .chain(reads.iter().filter(|read| contains(read, element)));
            for op in candidates {
                let point = (op.complete_index.unwrap(), op.complete_time.unwrap());
                if known.is_none_or(|known| point.0 < known.0) {
                    known = Some(point);
                }
            }
            let mut last_present = None;
            let mut last_absent = None;
            for (position, read) in reads.iter().enumerate() {
                if contains(read, element) {
                    last_present = Some(position);
                } else if known.is_some_and(|known| read.invoke_index > known.0) {
                    last_absent = Some(position);
                }
            }
            let since_known = |position: usize| {
                let time = reads[position].invoke_time.unwrap();
                Some(time.saturating_sub(known.unwrap().1) as f64 / 1e6)
            };
            let outcome = match (last_present, last_absent) {
                (Some(_), None) => ("stable", Some(0.0)),
                (Some(present), Some(absent)) if present > absent => {
                    ("stale", since_known(absent + 1))
                }
                (Some(present), Some(_)) => ("lost", since_known(present)),
                (None, Some(_)) => ("lost", Some(0.0)),
                (None, None) => ("never-read", None),
            };
            result.insert(element, outcome);
        }
        result
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn the_sweep_agrees_with_the_definitions(steps in prop::collection::vec((0u8..3, any::<u8>()), 1..60)) {
            let history = history(&steps);
            let report = sets::check(&history, &SetOptions::default()).unwrap();
            let mut found = BTreeMap::new();
            for (list, name) in [(&report.lost, "lost"), (&report.stale, "stale"), (&report.never_read, "never-read")] {
                for element in list.iter() {
                    found.insert(element.element.as_i64().unwrap(), (name, element.latency_ms));
                }
            }
            let expected = reference(&history);
            let stable: Vec<i64> = expected.iter().filter(|(_, (name, _))| *name == "stable").map(|(e, _)| *e).collect();
            let expected_listed: BTreeMap<i64, (&str, Option<f64>)> = expected.iter()
                .filter(|(_, (name, _))| *name != "stable")
                .map(|(e, v)| (*e, *v))
                .collect();
            prop_assert_eq!(found, expected_listed);
            prop_assert_eq!(report.stable_count, stable.len() + report.stale_count);
            prop_assert_eq!(report.n_elements, expected.len());
        }
    }
}
