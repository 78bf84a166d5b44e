//! The cache checker on hand-made histories (`histories/cache-handmade/`, with their manifest),
//! with the bound from the header, the default and the options, and against a brute-force
//! oracle on random histories.

mod manifest;

use helios_checker::cache::CacheReport;
use helios_checker::check::{check_file, check_operations, CheckOptions, Report};
use helios_checker::format::Format;
use helios_checker::jsonl;
use helios_checker::ops::{self, Outcome};
use helios_checker::select::CheckerKind;
use helios_checker::Verdict;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const MS: u64 = 1_000_000;

fn cache_witness(report: &Report) -> Option<String> {
    let late = report.cache.as_ref()?.witness.as_ref()?;
    Some(format!(
        "read={} write={} node={} late_ms={}",
        late.read_op, late.write_op, late.node, late.late_ms
    ))
}

/// The cache checker alone on a hand-made history, with `bound` overriding the header.
fn cache(name: &str, bound: Option<Duration>) -> CacheReport {
    let options = CheckOptions {
        checkers: Some(vec![CheckerKind::Cache]),
        invalidation_bound: bound,
        ..CheckOptions::default()
    };
    let path = manifest::histories().join("cache-handmade").join(name);
    let report = check_file(&path, &options).unwrap_or_else(|error| panic!("{name}: {error}"));
    report.cache.expect("the cache checker ran")
}

#[test]
fn every_cache_history_in_the_manifest_gets_its_verdict_and_witness() {
    assert_eq!(
        manifest::check_all("cache-handmade", cache_witness),
        8,
        "rows checked"
    );
}

#[test]
fn a_cache_header_chooses_linearizability_per_key_and_the_cache_checker() {
    let row = &manifest::rows("cache-handmade")[0];
    let report = manifest::check(row, None).unwrap();
    assert_eq!(
        report.checkers,
        vec![
            CheckerKind::Linearizable,
            CheckerKind::Cache,
            CheckerKind::Timing
        ]
    );
    assert_eq!(report.model.as_deref(), Some("register(nil)"));
    assert_eq!(report.linearizability.unwrap().n_partitions, 2);
}

#[test]
fn the_first_late_stale_read_is_the_witness_not_the_first_stale_one() {
    let report = cache("stale-read.jsonl", None);
    assert_eq!(report.verdict, Verdict::Invalid);
    assert_eq!(report.invalidation_bound_ms, 100.0);
    assert_eq!(report.bound_source, "the default, the seed's floor");
    assert_eq!(
        (report.pairs, report.stale_pairs, report.late_pairs),
        (2, 1, 1)
    );
    assert_eq!(report.stale_reads, 3);
    assert_eq!(report.stale_for_ms_max, Some(295.0));
    let late = report.witness.unwrap();
    // The read at 50 ms was stale but within the bound; the one at 150 ms is the first late.
    assert_eq!((late.read_op, late.write_op), (3, 0));
    assert_eq!(late.node, "c1");
    assert_eq!(late.write_node, "c0");
    assert_eq!(
        (late.read_value, late.write_value),
        (json!(null), json!(10))
    );
    assert_eq!(late.read_invoke_time, 150 * MS);
    assert_eq!(late.write_complete_time, 5 * MS);
    assert_eq!((late.late_ms, late.stale_for_ms), (145.0, 295.0));
    assert!(!late.never_converged);
    assert!(
        late.explanation.contains("invoked 145 ms after write op 0"),
        "{}",
        late.explanation
    );
}

#[test]
fn a_node_that_never_catches_up_is_late_and_said_to_have_never_converged() {
    let report = cache("never-converged.jsonl", None);
    assert_eq!(report.verdict, Verdict::Invalid);
    assert_eq!(report.unconverged_pairs, 1);
    let late = report.witness.unwrap();
    assert!(late.never_converged);
    assert_eq!(
        (late.read_op, late.late_ms, late.stale_for_ms),
        (2, 195.0, 595.0)
    );
    assert!(
        late.explanation.contains("c1 never caught up"),
        "{}",
        late.explanation
    );
}

#[test]
fn a_latency_over_the_bound_without_a_late_stale_read_is_undecided() {
    let report = cache("latency-over-bound.jsonl", None);
    assert_eq!(report.verdict, Verdict::Unknown);
    assert_eq!(report.invalidation_bound_ms, 10.0);
    assert_eq!(report.bound_source, "the history's header");
    assert_eq!((report.late_pairs, report.undecided_pairs), (0, 1));
    assert_eq!(report.latency_ms.max, Some(50.0));
    let undecided = &report.undecided[0];
    assert_eq!(
        (undecided.stale_for_ms, undecided.latency_ms),
        (3.0, Some(50.0))
    );
    assert!(report
        .note
        .unwrap()
        .starts_with("undecided: 1 (write, node) pairs"));
}

#[test]
fn the_bound_given_in_the_options_overrides_the_header_and_the_default() {
    // Stale 20 ms after the write: within the default 100 ms, beyond 5 ms.
    assert_eq!(
        cache("stale-within-bound.jsonl", None).verdict,
        Verdict::Valid
    );
    let strict = cache("stale-within-bound.jsonl", Some(Duration::from_millis(5)));
    assert_eq!(strict.verdict, Verdict::Invalid);
    assert_eq!(strict.bound_source, "given");
    let late = strict.witness.unwrap();
    assert_eq!((late.read_op, late.late_ms), (2, 20.0));
    // Stale for 295 ms and caught up by 395 ms: within a bound of 500 ms.
    let lenient = cache("stale-read.jsonl", Some(Duration::from_millis(500)));
    assert_eq!(lenient.verdict, Verdict::Valid);
    assert_eq!(lenient.stale_reads, 3);
    // The header's 10 ms gives way to a given 1 s.
    let header = cache("latency-over-bound.jsonl", Some(Duration::from_secs(1)));
    assert_eq!(header.verdict, Verdict::Valid);
}

#[test]
fn a_bound_of_zero_forbids_every_stale_read() {
    let report = cache("latency-over-bound.jsonl", Some(Duration::ZERO));
    assert_eq!(report.verdict, Verdict::Invalid);
    let late = report.witness.unwrap();
    assert_eq!((late.read_op, late.late_ms), (2, 3.0));
}

#[test]
fn a_history_without_times_is_unknown() {
    let text = concat!(
        r#"{"index":0,"type":"invoke","process":0,"f":"write","key":"k","value":1}"#,
        "\n",
        r#"{"index":1,"type":"ok","process":0,"f":"write","key":"k","value":1,"node":"c0"}"#,
        "\n",
        r#"{"index":2,"type":"invoke","process":1,"f":"read","key":"k","value":null}"#,
        "\n",
        r#"{"index":3,"type":"ok","process":1,"f":"read","key":"k","value":null,"node":"c1"}"#,
        "\n",
    );
    let report = check_cache_text(text, Duration::ZERO);
    assert_eq!(report.verdict, Verdict::Unknown);
    assert!(report.note.unwrap().contains("no time"));
}

fn check_cache_text(text: &str, bound: Duration) -> CacheReport {
    let history = jsonl::read_history(text.as_bytes(), "mem.jsonl").unwrap();
    let operations = ops::pair(history.events.into_iter().map(Ok), "mem.jsonl").unwrap();
    let options = CheckOptions {
        checkers: Some(vec![CheckerKind::Cache]),
        invalidation_bound: Some(bound),
        ..CheckOptions::default()
    };
    let report = check_operations(
        "mem.jsonl",
        Format::Jsonl,
        history.header,
        operations,
        &options,
        Instant::now(),
    )
    .unwrap();
    report.cache.unwrap()
}

/// One random operation: a write of a fresh value or a read of one of the values written so
/// far (or nil), on a key, through a node, over an interval of ms.
#[derive(Clone, Debug)]
struct RandomOp {
    write: bool,
    key: usize,
    node: usize,
    start_ms: u64,
    length_ms: u64,
    pick: usize,
}

fn random_op() -> impl Strategy<Value = RandomOp> {
    (
        any::<bool>(),
        0usize..2,
        0usize..3,
        0u64..200,
        1u64..30,
        any::<usize>(),
    )
        .prop_map(|(write, key, node, start_ms, length_ms, pick)| RandomOp {
            write,
            key,
            node,
            start_ms,
            length_ms,
            pick,
        })
}

/// A history of `ops` (each in its own process), events sorted by time.
fn random_history(ops: &[RandomOp]) -> String {
    let mut written: Vec<Vec<u64>> = vec![Vec::new(), Vec::new()];
    let mut events: Vec<(u64, usize, Value)> = Vec::new();
    let mut ordered: Vec<&RandomOp> = ops.iter().collect();
    ordered.sort_by_key(|op| op.start_ms);
    for (process, op) in ordered.into_iter().enumerate() {
        let key = format!("k{}", op.key);
        let node = format!("c{}", op.node);
        let (f, invoked, returned) = if op.write {
            let value = process as u64 + 1;
            written[op.key].push(value);
            ("write", json!(value), json!(value))
        } else {
            let choices = &written[op.key];
            let returned = match op.pick % (choices.len() + 1) {
                0 => Value::Null,
                n => json!(choices[n - 1]),
            };
            ("read", Value::Null, returned)
        };
        let end = op.start_ms + op.length_ms;
        events.push((op.start_ms * 2, events.len(), json!({"type": "invoke", "process": process, "f": f, "key": key, "value": invoked, "time": op.start_ms * MS})));
        events.push((end * 2 + 1, events.len(), json!({"type": "ok", "process": process, "f": f, "key": key, "value": returned, "node": node, "time": end * MS})));
    }
    // Invocations before completions at the same ms, so a read never ends before it starts.
    events.sort_by_key(|(at, seq, _)| (*at, *seq));
    events
        .into_iter()
        .enumerate()
        .map(|(index, (_, _, mut event))| {
            event["index"] = json!(index);
            event.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The oracle: every (read, write) combination, straight from the definitions. Returns the
/// smallest (read op, write op, late ms) among late combinations.
fn brute_force_first_late(text: &str, bound_ns: u64) -> Option<(usize, usize, f64)> {
    let history = jsonl::read_history(text.as_bytes(), "mem.jsonl").unwrap();
    let operations = ops::pair(history.events.into_iter().map(Ok), "mem.jsonl").unwrap();
    let ok: Vec<_> = operations
        .ops
        .iter()
        .filter(|op| op.outcome == Outcome::Ok)
        .collect();
    // A read's version: the completion index of the write it read, plus one; nil is 0. It is
    // older than a write invoked at index i when its version is at most i.
    let mut writes: Vec<_> = ok.iter().filter(|op| op.f == "write").collect();
    writes.sort_by_key(|op| op.complete_index);
    let mut version: HashMap<(String, String), u64> = HashMap::new();
    for write in &writes {
        let key = write.key.as_ref().unwrap().to_string();
        version.insert(
            (key, write.input.to_string()),
            write.complete_index.unwrap() + 1,
        );
    }
    let mut first: Option<(usize, usize, f64)> = None;
    for read in ok.iter().filter(|op| op.f == "read") {
        let key = read.key.as_ref().unwrap().to_string();
        let output = read.output.clone().unwrap();
        let read_version = if output.is_null() {
            0
        } else {
            version[&(key.clone(), output.to_string())]
        };
        for write in &writes {
            if write.key != read.key
                || write.node == read.node
                || write.complete_index.unwrap() >= read.invoke_index
                || read_version > write.invoke_index
            {
                continue;
            }
            let late = read.invoke_time.unwrap() - write.complete_time.unwrap();
            if late >= bound_ns {
                let found = (read.id, write.id, late as f64 / 1e6);
                if first.is_none_or(|best| (found.0, found.1) < (best.0, best.1)) {
                    first = Some(found);
                }
            }
        }
    }
    first
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_verdict_is_invalid_exactly_when_some_stale_read_is_late_by_the_definitions(
        ops in prop::collection::vec(random_op(), 1..30),
        bound_ms in 0u64..60,
    ) {
        let text = random_history(&ops);
        let report = check_cache_text(&text, Duration::from_millis(bound_ms));
        let expected = brute_force_first_late(&text, bound_ms * MS);
        let found = report
            .witness
            .as_ref()
            .map(|late| (late.read_op, late.write_op, late.late_ms));
        prop_assert_eq!(found, expected, "{}", text);
        prop_assert_eq!(report.verdict == Verdict::Invalid, expected.is_some());
        if report.verdict == Verdict::Valid {
            prop_assert!(report.stale_for_ms_max.is_none_or(|stale_for| stale_for < bound_ms as f64));
            prop_assert!(report.latency_ms.max.unwrap_or(0.0) <= bound_ms as f64);
        }
    }
}
