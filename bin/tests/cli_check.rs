//! `helios check` from the command line: exit codes, the table, JSON, the view, and bad input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn helios(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_helios"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("helios runs")
}

fn code(output: &Output) -> i32 {
    output
        .status
        .code()
        .expect("exited normally, not by a signal")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

fn temp_file(name: &str, contents: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(contents)
        .unwrap();
    (folder, path)
}

#[test]
fn a_valid_history_exits_0_and_an_invalid_one_exits_1_with_its_witness() {
    let valid = helios(&["check", "histories/porcupine-etcd/etcd_002.log"]);
    assert_eq!(code(&valid), 0, "{}", text(&valid.stderr));
    assert!(text(&valid.stdout).contains("etcd_002.log: valid"));
    let invalid = helios(&[
        "check",
        "histories/knossos/cas-register/bad/bad-analysis.edn",
        "--model",
        "cas-register(0)",
    ]);
    assert_eq!(code(&invalid), 1);
    let stdout = text(&invalid.stdout);
    assert!(stdout.contains("cannot linearize"), "{stdout}");
    assert!(stdout.contains("longest linearizable prefix"), "{stdout}");
}

#[test]
fn a_search_out_of_budget_exits_2_and_says_why() {
    let output = helios(&[
        "check",
        "histories/porcupine-kv/c50-ok.txt",
        "--model",
        "kv-single",
        "--max-states",
        "1000",
    ]);
    assert_eq!(code(&output), 2, "{}", text(&output.stdout));
    assert!(text(&output.stdout).contains("unknown because: the state budget"));
}

#[test]
fn several_files_print_a_table_and_exit_with_the_worst_code() {
    let output = helios(&[
        "check",
        "histories/porcupine-etcd/etcd_002.log",
        "histories/porcupine-etcd/etcd_000.log",
    ]);
    assert_eq!(code(&output), 1);
    let stdout = text(&output.stdout);
    assert!(
        stdout.lines().next().unwrap().contains("verdict"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    let (_folder, empty) = temp_file("empty.jsonl", b"");
    let with_error = helios(&[
        "check",
        "histories/porcupine-etcd/etcd_000.log",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(
        code(&with_error),
        3,
        "unreadable input is the worst outcome"
    );
}

#[test]
fn a_folder_is_checked_file_by_file() {
    let output = helios(&["check", "histories/porcupine-kv"]);
    assert_eq!(code(&output), 1);
    assert_eq!(text(&output.stdout).lines().count(), 7);
}

#[test]
fn json_output_is_the_full_report() {
    let output = helios(&["check", "histories/handmade/stale-read.jsonl", "--json"]);
    assert_eq!(code(&output), 1);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["verdict"], "invalid");
    assert_eq!(report["linearizability"]["witness"]["state"], "2");
}

#[test]
fn the_view_is_written_as_one_html_file() {
    let folder = tempfile::tempdir().unwrap();
    let page = folder.path().join("view.html");
    let output = helios(&[
        "check",
        "histories/handmade/stale-read.jsonl",
        "--html",
        page.to_str().unwrap(),
    ]);
    assert_eq!(code(&output), 1);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<html") && html.contains("</html>"));
}

/// Bad input exits 3 with one line on stderr that names the file, the line and the field.
fn assert_bad_input(name: &str, contents: &[u8], extra: &[&str], expected: &str) {
    let (_folder, path) = temp_file(name, contents);
    let mut args = vec!["check", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let output = helios(&args);
    let stderr = text(&output.stderr);
    assert_eq!(
        code(&output),
        3,
        "{name}: stdout {} stderr {stderr}",
        text(&output.stdout)
    );
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "{name}: one line expected, got {stderr}"
    );
    assert!(
        stderr.contains(&format!("{name}{expected}")),
        "{name}: expected {expected:?} in {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

const INVOKE: &str = r#"{"index":0,"type":"invoke","process":1,"f":"write","value":1}"#;

#[test]
fn bad_input_exits_3_naming_file_line_and_field() {
    assert_bad_input("empty.jsonl", b"", &[], ": empty history");
    assert_bad_input(
        "truncated.jsonl",
        format!("{INVOKE}\n{{\"index\":1,\"type\":\"ok\",\"proc").as_bytes(),
        &[],
        ":2: truncated JSON",
    );
    assert_bad_input(
        "unknown-type.jsonl",
        format!("{INVOKE}\n{{\"index\":1,\"type\":\"done\",\"process\":1,\"f\":\"write\"}}\n")
            .as_bytes(),
        &[],
        ":2: field \"type\": expected invoke|ok|fail|info, found \"done\"",
    );
    assert_bad_input(
        "busy.jsonl",
        format!("{INVOKE}\n{{\"index\":1,\"type\":\"invoke\",\"process\":1,\"f\":\"read\"}}\n")
            .as_bytes(),
        &[],
        ":2: field \"process\": process 1 invoked read while its write",
    );
    assert_bad_input(
        "orphan.jsonl",
        b"{\"index\":0,\"type\":\"ok\",\"process\":7,\"f\":\"read\",\"value\":1}\n",
        &[],
        ":1: field \"process\": ok completion of read by process 7 with no outstanding invoke",
    );
    assert_bad_input(
        "shape.jsonl",
        b"{\"index\":0,\"type\":\"invoke\",\"process\":1,\"f\":\"cas\",\"value\":5}\n{\"index\":1,\"type\":\"ok\",\"process\":1,\"f\":\"cas\",\"value\":5}\n",
        &["--model", "cas-register"],
        ":1: field \"value\": cas expects [expected new], found 5",
    );
    assert_bad_input(
        "garbage.jsonl",
        b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00\x00garbage",
        &["--format", "jsonl"],
        ":1:",
    );
    assert_bad_input(
        "unknown.bin",
        b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00\x00garbage",
        &[],
        ":",
    );
}

#[test]
fn a_100_mb_single_line_is_refused_without_reading_it_all() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("huge.jsonl");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        file.write_all(
            b"{\"index\":0,\"type\":\"invoke\",\"process\":1,\"f\":\"write\",\"value\":\"",
        )
        .unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..100 {
            file.write_all(&chunk).unwrap();
        }
        file.write_all(b"\"}\n").unwrap();
    }
    let output = helios(&["check", path.to_str().unwrap()]);
    assert_eq!(code(&output), 3);
    assert!(
        text(&output.stderr).contains("huge.jsonl:1: line longer than 16 MiB"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn usage_errors_exit_3() {
    assert_eq!(code(&helios(&["check"])), 3);
    assert_eq!(
        code(&helios(&[
            "check",
            "histories/handmade/stale-read.jsonl",
            "--model",
            "queue"
        ])),
        3
    );
    assert_eq!(
        code(&helios(&[
            "check",
            "histories/handmade/stale-read.jsonl",
            "--format",
            "xml"
        ])),
        3
    );
    assert_eq!(code(&helios(&["check", "/no/such/file.jsonl"])), 3);
    assert_eq!(code(&helios(&["--help"])), 0);
}

#[test]
fn the_cli_agrees_with_every_linearizability_verdict_of_the_corpus_with_detected_models() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../histories");
    let manifest = std::fs::read_to_string(root.join("manifest.tsv")).unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let columns: Vec<&str> = line.split('\t').collect();
        match columns[3] {
            "linearizable" => expected.insert(format!("histories/{}", columns[0]), "valid"),
            "not-linearizable" => expected.insert(format!("histories/{}", columns[0]), "invalid"),
            _ => None,
        };
    }
    let output = helios(&[
        "check",
        "--json",
        "histories/porcupine-etcd",
        "histories/porcupine-kv",
        "histories/knossos",
    ]);
    assert_eq!(code(&output), 1, "{}", text(&output.stderr));
    let reports: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reports.len(), expected.len());
    for report in &reports {
        let file = report["file"].as_str().unwrap();
        assert_eq!(
            report["verdict"].as_str(),
            Some(expected[file]),
            "{file}: {report}"
        );
    }
}

#[test]
fn the_elle_reference_history_is_read_committed_with_only_g2_item() {
    let output = helios(&["check", "--json", "histories/elle/si-without-g-single.edn"]);
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let isolation = &report["isolation"];
    assert_eq!(isolation["verdict"], "valid");
    let found: Vec<&str> = isolation["anomalies"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(found, vec!["G2-item"]);
    let stronger = helios(&[
        "check",
        "histories/elle/si-without-g-single.edn",
        "--consistency",
        "repeatable-read",
    ]);
    assert_eq!(code(&stronger), 1);
    assert!(text(&stronger.stdout).contains("G2-item: 1 found, forbidden"));
}

#[test]
fn checkers_can_be_chosen_by_name() {
    let output = helios(&[
        "check",
        "--json",
        "--checker",
        "lost-writes",
        "histories/handmade/set-loses-an-element.jsonl",
    ]);
    assert_eq!(code(&output), 1);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["checkers"], serde_json::json!(["lost-writes"]));
    // The only read began after both adds were acknowledged and missed 2: lost.
    assert_eq!(report["lost_writes"]["lost_count"], 1, "{report}");
    assert_eq!(report["lost_writes"]["lost"][0]["element"], 2);
    let bad = helios(&[
        "check",
        "--checker",
        "speed",
        "histories/handmade/stale-read.jsonl",
    ]);
    assert_eq!(code(&bad), 3);
    assert!(text(&bad.stderr).contains("unknown checker \"speed\""));
}

#[test]
fn bank_histories_exit_0_when_every_read_sums_to_the_total_and_1_with_the_first_bad_read() {
    let valid = helios(&["check", "histories/bank-handmade/valid.jsonl"]);
    assert_eq!(code(&valid), 0, "{}", text(&valid.stderr));
    let stdout = text(&valid.stdout);
    assert!(stdout.contains("checkers bank"), "{stdout}");
    assert!(
        stdout.contains("bank: valid; 4 reads checked, 0 bad; total 100"),
        "{stdout}"
    );
    let invalid = helios(&[
        "check",
        "histories/bank-handmade/wrong-total-fractured.jsonl",
    ]);
    assert_eq!(code(&invalid), 1);
    let stdout = text(&invalid.stdout);
    assert!(stdout.contains("errors: wrong-total 2"), "{stdout}");
    assert!(
        stdout.contains("first error: wrong-total: read op 3")
            && stdout.contains("sum to 105, not to the total 100"),
        "{stdout}"
    );
    // A Jepsen EDN history, with the checker named and the total inferred.
    let edn = helios(&[
        "check",
        "--json",
        "--checker",
        "bank",
        "histories/bank-handmade/jepsen-invalid.edn",
    ]);
    assert_eq!(code(&edn), 1);
    let report: serde_json::Value = serde_json::from_slice(&edn.stdout).unwrap();
    assert_eq!(report["checkers"], serde_json::json!(["bank"]));
    assert_eq!(report["bank"]["total"], 100);
    assert_eq!(report["bank"]["first_error"]["kind"], "wrong-total");
    assert_eq!(report["bank"]["first_error"]["op"], 4);
    assert_eq!(report["bank"]["first_error"]["sum"], 95);
    assert_eq!(
        report["bank"]["first_error"]["balances"],
        serde_json::json!({"0": 5, "1": 20, "2": 70})
    );
}

#[test]
fn cache_histories_exit_with_their_verdicts_and_the_bound_can_be_given() {
    let late = helios(&["check", "histories/cache-handmade/stale-read.jsonl"]);
    assert_eq!(code(&late), 1);
    let stdout = text(&late.stdout);
    assert!(
        stdout.contains("checkers linearizable, cache, timing"),
        "{stdout}"
    );
    assert!(
        stdout.contains("late: read op 3 of \"1\" on c1 (line 9), invoked 145 ms after"),
        "{stdout}"
    );
    let nothing = helios(&["check", "histories/cache-handmade/one-node.jsonl"]);
    assert_eq!(code(&nothing), 2, "{}", text(&nothing.stdout));
    // The same stale reads are within a bound of 500 ms, and 20 ms is beyond one of 5 ms.
    let lenient = helios(&[
        "check",
        "--checker",
        "cache",
        "--invalidation-bound",
        "500ms",
        "histories/cache-handmade/stale-read.jsonl",
    ]);
    assert_eq!(code(&lenient), 0, "{}", text(&lenient.stdout));
    assert!(text(&lenient.stdout).contains("bound 500 ms (given)"));
    let strict = helios(&[
        "check",
        "--json",
        "--checker",
        "cache",
        "--invalidation-bound",
        "5ms",
        "histories/cache-handmade/stale-within-bound.jsonl",
    ]);
    assert_eq!(code(&strict), 1);
    let report: serde_json::Value = serde_json::from_slice(&strict.stdout).unwrap();
    assert_eq!(report["cache"]["invalidation_bound_ms"], 5.0);
    assert_eq!(report["cache"]["witness"]["read_op"], 2);
    assert_eq!(report["cache"]["witness"]["late_ms"], 20.0);
    let bad = helios(&[
        "check",
        "--invalidation-bound",
        "soon",
        "histories/cache-handmade/stale-read.jsonl",
    ]);
    assert_eq!(code(&bad), 3);
}

#[test]
fn malformed_bank_and_cache_histories_exit_3_naming_file_line_and_field() {
    let header = r#"{"helios_history":1,"workload":"bank","total":10,"accounts":[0,1]}"#;
    let read = r#"{"index":0,"type":"invoke","process":0,"f":"read","value":null}"#;
    assert_bad_input(
        "bank-read.jsonl",
        format!(
            "{header}\n{read}\n{}\n",
            r#"{"index":1,"type":"ok","process":0,"f":"read","value":"ten"}"#
        )
        .as_bytes(),
        &[],
        ":3: field \"value\": an ok read must return a map of account to balance",
    );
    assert_bad_input(
        "bank-amount.jsonl",
        format!(
            "{header}\n{}\n",
            r#"{"index":0,"type":"invoke","process":0,"f":"transfer","value":{"from":0,"to":1,"amount":"5"}}"#
        )
        .as_bytes(),
        &[],
        ":2: field \"value\": transfer amount: expected an integer, found \"5\"",
    );
    let output = helios(&["check", "histories/cache-handmade/read-without-node.jsonl"]);
    assert_eq!(code(&output), 3);
    assert!(
        text(&output.stderr).contains("read-without-node.jsonl:7: field \"node\""),
        "{}",
        text(&output.stderr)
    );
}
