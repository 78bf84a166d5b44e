//! Conformance: the checker agrees with every verdict of the reference corpus (`histories/manifest.tsv`).

use helios_checker::check::{check_file, CheckOptions};
use helios_checker::format::Format;
use helios_checker::Verdict;
use std::path::{Path, PathBuf};

fn histories() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../histories")
}

/// The manifest's model column, in the checker's model names.
fn model_name(manifest_model: &str) -> Option<&'static str> {
    match manifest_model {
        "cas-register(nil)" => Some("cas-register(nil)"),
        "cas-register(0)" => Some("cas-register(0)"),
        "kv(get/put/append, per key)" => Some("kv"),
        "multi-register({x 0, y 0})" => Some("multi-register(0)"),
        _ => None,
    }
}

#[test]
fn every_linearizability_entry_of_the_manifest_gets_its_expected_verdict() {
    let manifest = std::fs::read_to_string(histories().join("manifest.tsv")).unwrap();
    let mut checked = 0;
    let mut disagreements = Vec::new();
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let columns: Vec<&str> = line.split('\t').collect();
        let [path, format, model, expected] = columns[..] else {
            panic!("manifest line has {} columns: {line}", columns.len());
        };
        let Some(model) = model_name(model) else {
            // list-append entries are judged by the isolation checker, not by linearizability.
            assert_eq!(
                model, "list-append",
                "unmapped model in manifest line: {line}"
            );
            continue;
        };
        let expected = match expected {
            "linearizable" => Verdict::Valid,
            "not-linearizable" => Verdict::Invalid,
            other => panic!("unexpected verdict {other:?}"),
        };
        let options = CheckOptions {
            model: Some(model.to_string()),
            format: Format::parse(format),
            ..CheckOptions::default()
        };
        let report = check_file(&histories().join(path), &options)
            .unwrap_or_else(|error| panic!("{path}: {error}"));
        if report.verdict != expected {
            disagreements.push(format!(
                "{path}: expected {expected}, got {}",
                report.verdict
            ));
        }
        if expected == Verdict::Invalid {
            let witness = report
                .linearizability
                .as_ref()
                .and_then(|l| l.witness.as_ref());
            assert!(witness.is_some(), "{path}: invalid without a witness");
        }
        checked += 1;
    }
    assert!(
        disagreements.is_empty(),
        "disagreements:\n{}",
        disagreements.join("\n")
    );
    assert_eq!(checked, 138, "every linearizability entry is checked");
}

#[test]
fn detection_picks_a_model_that_agrees_with_the_manifest_for_logs_and_kv() {
    for (path, expected) in [
        ("porcupine-etcd/etcd_000.log", Verdict::Invalid),
        ("porcupine-etcd/etcd_002.log", Verdict::Valid),
        ("porcupine-kv/c10-ok.txt", Verdict::Valid),
        ("porcupine-kv/c01-bad.txt", Verdict::Invalid),
        ("knossos/cas-register/bad/cas-failure.edn", Verdict::Invalid),
        (
            "knossos/multi-register/good/multi-register.edn",
            Verdict::Valid,
        ),
    ] {
        let report = check_file(&histories().join(path), &CheckOptions::default()).unwrap();
        assert_eq!(report.verdict, expected, "{path}: {}", report.summary());
    }
}

#[test]
fn every_handmade_history_gets_the_verdict_its_header_explains() {
    let manifest = std::fs::read_to_string(histories().join("handmade/manifest.tsv")).unwrap();
    let mut checked = 0;
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let columns: Vec<&str> = line.split('\t').collect();
        let [path, _format, _model, expected, why] = columns[..] else {
            panic!(
                "handmade manifest line has {} columns: {line}",
                columns.len()
            );
        };
        let expected = if expected == "linearizable" {
            Verdict::Valid
        } else {
            Verdict::Invalid
        };
        // No --model: the header names the model, as `helios run` histories do.
        let report = check_file(&histories().join(path), &CheckOptions::default())
            .unwrap_or_else(|error| panic!("{path}: {error}"));
        assert_eq!(
            report.verdict,
            expected,
            "{path} ({why}):\n{}",
            report.summary()
        );
        checked += 1;
    }
    assert!(
        checked >= 12,
        "a dozen hand-made histories at least, found {checked}"
    );
}

#[test]
fn the_witness_names_the_stale_read_and_the_state_it_should_have_seen() {
    let report = check_file(
        &histories().join("handmade/stale-read.jsonl"),
        &CheckOptions::default(),
    )
    .unwrap();
    let witness = report.linearizability.unwrap().witness.unwrap();
    assert_eq!(witness.description, "process 1: read → 1 (lines 6-7)");
    assert_eq!(
        witness.prefix.len(),
        2,
        "both writes linearize before the read"
    );
    assert_eq!(witness.state, "2");
}

#[test]
fn the_witness_of_a_keyed_history_is_in_the_bad_key() {
    let report = check_file(
        &histories().join("handmade/one-bad-key-among-good-ones.jsonl"),
        &CheckOptions::default(),
    )
    .unwrap();
    let linear = report.linearizability.unwrap();
    assert_eq!(linear.n_partitions, 2);
    let witness = linear.witness.unwrap();
    assert_eq!(witness.key.as_deref(), Some("b"));
    assert!(
        witness.description.contains("read b → 1"),
        "{}",
        witness.description
    );
}

#[test]
fn archived_helios_runs_keep_their_verdicts() {
    let manifest = std::fs::read_to_string(histories().join("runs/manifest.tsv")).unwrap();
    let mut checked = 0;
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let columns: Vec<&str> = line.split('\t').collect();
        let [path, _format, _checkers, expected, why] = columns[..] else {
            panic!("runs manifest line has {} columns: {line}", columns.len());
        };
        let expected = if expected == "valid" {
            Verdict::Valid
        } else {
            Verdict::Invalid
        };
        let report = check_file(&histories().join(path), &CheckOptions::default())
            .unwrap_or_else(|error| panic!("{path}: {error}"));
        assert_eq!(
            report.verdict,
            expected,
            "{path} ({why}):\n{}",
            report.summary()
        );
        assert!(
            report.timing.is_some(),
            "{path}: a timed run gets the timing analysis"
        );
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} archived runs");
}
