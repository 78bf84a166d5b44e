//! Every history of the reference corpus opens, is detected as its manifest says, and reads whole.

use helios_checker::format::{self, Format};
use helios_checker::{Event, EventType, Process};
use serde_json::json;
use std::path::{Path, PathBuf};

fn histories() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../histories")
}

/// (path, format) of every row of `histories/manifest.tsv`.
fn manifest() -> Vec<(PathBuf, Format)> {
    let text = std::fs::read_to_string(histories().join("manifest.tsv"))
        .expect("histories/manifest.tsv is readable");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let mut fields = line.split('\t');
            let path = fields.next().expect("a path column");
            let name = fields.next().expect("a format column");
            let format = Format::parse(name)
                .unwrap_or_else(|| panic!("unknown format {name} in the manifest"));
            (histories().join(path), format)
        })
        .collect()
}

fn read(path: &Path) -> (Format, Vec<Event>) {
    let source = format::open(path, None).unwrap_or_else(|e| panic!("{e}"));
    let format = source.format;
    let events = source
        .events
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("{e}"));
    (format, events)
}

#[test]
fn every_corpus_history_is_detected_as_its_manifest_says_and_reads_whole() {
    let rows = manifest();
    assert_eq!(rows.len(), 139, "the manifest lists 139 histories");
    for (path, expected) in rows {
        let (format, events) = read(&path);
        let name = path.display();
        assert_eq!(format, expected, "{name}");
        assert!(!events.is_empty(), "{name}");
        for (position, event) in events.iter().enumerate() {
            assert_eq!(event.index, position as u64, "{name}: indices are dense");
            assert!(event.line > 0, "{name}: every event names its line");
            assert!(!event.f.is_empty(), "{name}");
        }
        let lines: Vec<u64> = events.iter().map(|e| e.line).collect();
        assert!(
            lines.windows(2).all(|w| w[0] < w[1]) || expected == Format::JepsenEdn,
            "{name}: one event per line"
        );
        match expected {
            Format::JepsenLog => {
                for event in &events {
                    assert!(
                        matches!(event.process, Process::Client(_)),
                        "{name}: etcd logs have client processes only"
                    );
                    assert!(
                        ["read", "write", "cas"].contains(&event.f.as_str()),
                        "{name}: f {}",
                        event.f
                    );
                }
            }
            Format::PorcupineKv => {
                for event in &events {
                    assert!(
                        matches!(event.key, Some(serde_json::Value::String(_))),
                        "{name}: every kv event has a key"
                    );
                    assert!(
                        matches!(event.kind, EventType::Invoke | EventType::Ok),
                        "{name}"
                    );
                }
            }
            Format::JepsenEdn | Format::Jsonl => {}
        }
    }
}

#[test]
fn bad_analysis_yields_the_reads_with_their_invoke_values_as_given() {
    let (_, events) = read(&histories().join("knossos/cas-register/bad/bad-analysis.edn"));
    assert_eq!(events.len(), 16);
    let reads: Vec<(u64, EventType, serde_json::Value)> = events
        .iter()
        .filter(|e| e.f == "read")
        .map(|e| (e.line, e.kind, e.value_or_null().clone()))
        .collect();
    assert_eq!(
        reads,
        vec![
            (3, EventType::Invoke, json!(null)),
            (6, EventType::Invoke, json!(4)),
            (7, EventType::Ok, json!(4)),
            (11, EventType::Invoke, json!(0)),
            (13, EventType::Ok, json!(0)),
            (16, EventType::Invoke, json!(3)),
            (17, EventType::Invoke, json!(2)),
            (18, EventType::Ok, json!(2)),
            (19, EventType::Ok, json!(3)),
        ]
    );
}

#[test]
fn etcd_logs_read_timeouts_as_errors_and_cas_values_as_pairs() {
    let (_, events) = read(&histories().join("porcupine-etcd/etcd_000.log"));
    let cas = events
        .iter()
        .find(|e| e.f == "cas" && e.kind == EventType::Invoke)
        .expect("a cas");
    assert!(
        matches!(cas.value_or_null().as_array().map(Vec::len), Some(2)),
        "{cas:?}"
    );
    let timed_out = events
        .iter()
        .find(|e| e.kind == EventType::Info)
        .expect("an info");
    assert_eq!(timed_out.error, Some(json!("timed-out")));
    assert_eq!(timed_out.value, Some(json!(null)));
    let first = &events[0];
    assert_eq!(
        (
            first.line,
            first.kind,
            first.process.clone(),
            first.f.as_str()
        ),
        (1, EventType::Invoke, Process::Client(0), "read")
    );
}

#[test]
fn multi_register_and_elle_values_become_arrays_of_micro_operations() {
    let (_, events) = read(&histories().join("knossos/multi-register/good/multi-register.edn"));
    assert_eq!(
        events[1].value,
        Some(json!([["read", "x", null], ["read", "y", null]]))
    );
    assert_eq!(events[0].time, Some(7686455705));
    assert_eq!(events[0].line, 2);
    let (_, events) = read(&histories().join("elle/si-without-g-single.edn"));
    assert_eq!(events.len(), 8);
    assert_eq!(
        events[7].value,
        Some(json!([["append", 6, 2], ["r", 9, [2]]]))
    );
    assert_eq!(events[0].extra.get("source_index"), Some(&json!(10)));
    assert_eq!(events[0].time, Some(0));
}

#[test]
fn nemesis_operations_keep_their_named_process() {
    let (_, events) =
        read(&histories().join("knossos/cas-register/good/mongodb-v0-ack-rollback-.edn"));
    assert!(events
        .iter()
        .all(|e| e.process == Process::nemesis() && e.kind == EventType::Info));
}

#[test]
fn porcupine_kv_histories_read_as_jepsen_edn_give_the_same_events() {
    let path = histories().join("porcupine-kv/c01-ok.txt");
    let (_, as_kv) = read(&path);
    let source = format::open(&path, Some(Format::JepsenEdn)).unwrap();
    let as_edn: Vec<Event> = source.events.map(|e| e.unwrap()).collect();
    assert_eq!(as_kv, as_edn);
}
