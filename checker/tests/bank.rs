//! The bank checker on hand-made histories (`histories/bank-handmade/`, with their manifest) and
//! on random serial histories: transfers applied one after another always give `valid`, and
//! perturbing one read gives `invalid` with that read as the witness.

mod manifest;

use helios_checker::bank::{BankErrorKind, BankReport};
use helios_checker::check::{check_operations, CheckError, CheckOptions, Report};
use helios_checker::format::Format;
use helios_checker::jsonl;
use helios_checker::ops;
use helios_checker::select::CheckerKind;
use helios_checker::Verdict;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::time::Instant;

fn bank_witness(report: &Report) -> Option<String> {
    let first = report.bank.as_ref()?.first_error.as_ref()?;
    Some(format!("{} op={} sum={}", first.kind, first.op, first.sum))
}

fn bank(name: &str) -> BankReport {
    let rows = manifest::rows("bank-handmade");
    let row = rows
        .iter()
        .find(|row| row.path.ends_with(name))
        .unwrap_or_else(|| panic!("{name} is in the manifest"));
    let report = manifest::check(row, None).unwrap_or_else(|error| panic!("{name}: {error}"));
    assert_eq!(report.checkers.first(), Some(&CheckerKind::Bank), "{name}");
    report.bank.expect("the bank checker ran")
}

#[test]
fn every_bank_history_in_the_manifest_gets_its_verdict_and_witness() {
    assert_eq!(
        manifest::check_all("bank-handmade", bank_witness),
        10,
        "rows checked"
    );
}

#[test]
fn a_valid_history_counts_its_reads_and_transfers_by_outcome() {
    let report = bank("valid.jsonl");
    assert_eq!(report.verdict, Verdict::Valid);
    assert_eq!(report.reads_checked, 4);
    assert_eq!(report.bad_reads, 0);
    assert_eq!(
        (
            report.transfers.ok,
            report.transfers.fail,
            report.transfers.info
        ),
        (1, 1, 1)
    );
    assert_eq!(report.total, Some(100));
    assert_eq!(report.total_source, "the history's header");
    assert_eq!(report.accounts, Some(vec![0, 1, 2]));
    assert!(report.note.is_none(), "{:?}", report.note);
}

#[test]
fn fractured_reads_are_wrong_totals_and_the_first_to_complete_is_the_witness() {
    let report = bank("wrong-total-fractured.jsonl");
    assert_eq!(report.verdict, Verdict::Invalid);
    assert_eq!(report.bad_reads, 2);
    assert_eq!(report.error_counts.get("wrong-total"), Some(&2));
    // Op 2 was invoked first but op 3 completed first.
    let ops: Vec<(usize, i128)> = report.errors.iter().map(|bad| (bad.op, bad.sum)).collect();
    assert_eq!(ops, vec![(3, 105), (2, 95)]);
    let first = report.first_error.as_ref().unwrap();
    assert_eq!(first.kind, BankErrorKind::WrongTotal);
    assert_eq!(first.expected_total, Some(100));
    assert_eq!(
        (first.invoke_time, first.complete_time),
        (Some(5_000_000), Some(6_000_000))
    );
    assert_eq!(first.line, 7);
    assert_eq!(
        serde_json::to_value(&first.balances).unwrap(),
        json!({"0": 50, "1": 35, "2": 20})
    );
    assert!(
        first
            .explanation
            .contains("sum to 105, not to the total 100"),
        "{}",
        first.explanation
    );
}

#[test]
fn a_negative_balance_is_an_error_unless_the_header_allows_it() {
    let report = bank("negative-balance.jsonl");
    assert_eq!(report.verdict, Verdict::Invalid);
    let first = report.first_error.unwrap();
    assert_eq!(first.kind, BankErrorKind::NegativeBalance);
    assert_eq!(first.negative_accounts, vec![0]);
    let allowed = bank("negative-allowed.jsonl");
    assert_eq!(allowed.verdict, Verdict::Valid);
    assert!(allowed.negative_balances_allowed);
}

#[test]
fn unexpected_accounts_and_missing_balances_name_the_accounts() {
    let unexpected = bank("unexpected-account.jsonl").first_error.unwrap();
    assert_eq!(unexpected.kind, BankErrorKind::UnexpectedAccount);
    assert_eq!(unexpected.unexpected_accounts, vec![7]);
    let report = bank("missing-balance.jsonl");
    assert_eq!(report.error_counts.get("missing-balance"), Some(&2));
    assert_eq!(report.errors[0].nil_accounts, vec![1]);
    assert_eq!(report.errors[1].missing_accounts, vec![2]);
}

#[test]
fn a_jepsen_edn_history_is_detected_and_its_total_inferred_from_the_first_read() {
    let report = bank("jepsen-invalid.edn");
    assert_eq!(report.total, Some(100));
    assert!(
        report.total_source.starts_with("inferred"),
        "{}",
        report.total_source
    );
    let note = report.note.as_deref().unwrap();
    assert!(note.contains("inferred as 100"), "{note}");
    assert!(note.contains("names no accounts"), "{note}");
    assert_eq!(report.verdict, Verdict::Invalid);
    assert_eq!(report.reads_checked, 4);
    // The last read (75 in account 2) sums to 100 again: only the lost update is bad.
    assert_eq!(report.bad_reads, 1);
    let valid = bank("jepsen-valid.edn");
    assert_eq!(valid.verdict, Verdict::Valid);
    assert_eq!((valid.transfers.ok, valid.transfers.fail), (1, 1));
}

/// Checks a JSON Lines history held in memory, with the checkers its header chooses.
fn check_text(text: &str) -> Result<Report, CheckError> {
    let history = jsonl::read_history(text.as_bytes(), "mem.jsonl")?;
    let operations = ops::pair(history.events.into_iter().map(Ok), "mem.jsonl")?;
    check_operations(
        "mem.jsonl",
        Format::Jsonl,
        history.header,
        operations,
        &CheckOptions::default(),
        Instant::now(),
    )
}

#[test]
fn a_history_without_an_ok_read_is_unknown() {
    let text = concat!(
        r#"{"helios_history":1,"workload":"bank","total":10,"accounts":[0,1]}"#,
        "\n",
        r#"{"index":0,"type":"invoke","process":0,"f":"transfer","value":{"from":0,"to":1,"amount":1}}"#,
        "\n",
        r#"{"index":1,"type":"ok","process":0,"f":"transfer","value":{"from":0,"to":1,"amount":1}}"#,
        "\n",
        r#"{"index":2,"type":"invoke","process":1,"f":"read","value":null}"#,
        "\n",
        r#"{"index":3,"type":"fail","process":1,"f":"read","value":null}"#,
        "\n",
    );
    let report = check_text(text).unwrap();
    assert_eq!(report.verdict, Verdict::Unknown);
    let bank = report.bank.unwrap();
    assert_eq!(bank.reads_checked, 0);
    assert!(bank.note.unwrap().contains("no read completed ok"));
}

#[test]
fn a_header_field_of_the_wrong_type_is_an_input_error_at_line_1() {
    for (header, field) in [
        (
            r#"{"helios_history":1,"workload":"bank","total":"100"}"#,
            "total",
        ),
        (
            r#"{"helios_history":1,"workload":"bank","total":100,"accounts":["a"]}"#,
            "accounts",
        ),
        (
            r#"{"helios_history":1,"workload":"bank","negative_balances":"yes"}"#,
            "negative_balances",
        ),
    ] {
        let text = format!(
            "{header}\n{}\n{}\n",
            r#"{"index":0,"type":"invoke","process":0,"f":"read","value":null}"#,
            r#"{"index":1,"type":"ok","process":0,"f":"read","value":{"0":100}}"#
        );
        let error = check_text(&text).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("mem.jsonl:1: field \"{field}\"")),
            "{error}"
        );
    }
}

/// One step of a random serial bank run.
#[derive(Clone, Debug)]
enum Step {
    /// A transfer of `amount_permille` of the source's balance, and its outcome.
    Transfer {
        from: usize,
        to: usize,
        amount_permille: u32,
        outcome: u8,
    },
    Read,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..8, 0usize..8, 0u32..=1000, 0u8..3).prop_map(
            |(from, to, amount_permille, outcome)| Step::Transfer {
                from,
                to,
                amount_permille,
                outcome,
            }
        ),
        Just(Step::Read),
    ]
}

/// A serial history: each operation completes before the next begins, each in its own
/// process (an `info` ends its process). Transfers that are `ok`, and `info` ones with an odd
/// amount, take effect. Returns the text and the op ids of the reads.
fn serial_history(initial: &[i64], steps: &[Step]) -> (String, Vec<usize>) {
    let total: i64 = initial.iter().sum();
    let accounts: Vec<usize> = (0..initial.len()).collect();
    let mut lines = vec![json!({
        "helios_history": 1, "workload": "bank", "seed": 1, "nodes": ["c0"],
        "total": total, "accounts": accounts,
    })];
    let mut balances = initial.to_vec();
    let mut reads = Vec::new();
    let mut index = 0;
    let mut push = |process: usize, kind: &str, f: &str, value: Value| {
        lines.push(json!({
            "index": index, "time": (index + 1) * 1_000_000, "type": kind,
            "process": process, "f": f, "value": value,
        }));
        index += 1;
    };
    // Every history starts with a read, so each has something to judge.
    let steps = std::iter::once(&Step::Read).chain(steps);
    for (op, step) in steps.enumerate() {
        match step {
            Step::Read => {
                push(op, "invoke", "read", Value::Null);
                let read: serde_json::Map<String, Value> = balances
                    .iter()
                    .enumerate()
                    .map(|(account, balance)| (account.to_string(), json!(balance)))
                    .collect();
                push(op, "ok", "read", Value::Object(read));
                reads.push(op);
            }
            Step::Transfer {
                from,
                to,
                amount_permille,
                outcome,
            } => {
                let (from, to) = (from % initial.len(), to % initial.len());
                let amount = balances[from] * i64::from(*amount_permille) / 1000;
                let value = json!({"from": from, "to": to, "amount": amount});
                push(op, "invoke", "transfer", value.clone());
                let kind = ["ok", "fail", "info"][usize::from(*outcome)];
                push(op, kind, "transfer", value);
                if kind == "ok" || (kind == "info" && amount % 2 == 1) {
                    balances[from] -= amount;
                    balances[to] += amount;
                }
            }
        }
    }
    let text = lines
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    (text, reads)
}

/// Changes one balance of the `nth` read (an `ok` completion line) by `delta`, then moves
/// `shift` from the next account into it: the sum changes by `delta` only.
fn perturb(text: &str, nth: usize, account: usize, delta: i64, shift: i64) -> String {
    let mut seen = 0;
    text.lines()
        .map(|line| {
            let mut event: Value = serde_json::from_str(line).unwrap();
            let is_read = event["f"] == "read" && event["type"] == "ok";
            if is_read {
                if seen == nth {
                    let map = event["value"].as_object_mut().unwrap();
                    let n = map.len();
                    let key = (account % n).to_string();
                    let next = ((account + 1) % n).to_string();
                    let balance = map[&key].as_i64().unwrap();
                    map.insert(key.clone(), json!(balance + delta + shift));
                    if next != key {
                        let other = map[&next].as_i64().unwrap();
                        map.insert(next, json!(other - shift));
                    }
                }
                seen += 1;
            }
            event.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn transfers_applied_serially_give_valid(
        initial in prop::collection::vec(0i64..1_000, 2..6),
        steps in prop::collection::vec(step(), 0..40),
    ) {
        let (text, reads) = serial_history(&initial, &steps);
        let report = check_text(&text).unwrap();
        let bank = report.bank.as_ref().unwrap();
        prop_assert_eq!(report.verdict, Verdict::Valid, "{:?}", bank.first_error);
        prop_assert_eq!(bank.reads_checked, reads.len());
    }

    #[test]
    fn perturbing_one_reads_total_gives_invalid_with_that_read_as_witness(
        initial in prop::collection::vec(0i64..1_000, 2..6),
        steps in prop::collection::vec(step(), 0..40),
        nth_seed in any::<prop::sample::Index>(),
        account in 0usize..8,
        delta in prop_oneof![-50i64..0, 1i64..50],
    ) {
        let (text, reads) = serial_history(&initial, &steps);
        let nth = nth_seed.index(reads.len());
        // Adding a positive delta to an account keeps it non-negative; a negative delta may
        // not, and the wrong total is then judged first, as in Jepsen.
        let report = check_text(&perturb(&text, nth, account, delta, 0)).unwrap();
        let bank = report.bank.as_ref().unwrap();
        prop_assert_eq!(report.verdict, Verdict::Invalid);
        prop_assert_eq!(bank.bad_reads, 1);
        let first = bank.first_error.as_ref().unwrap();
        prop_assert_eq!(first.kind, BankErrorKind::WrongTotal);
        prop_assert_eq!(first.op, reads[nth]);
        prop_assert_eq!(first.sum, i128::from(initial.iter().sum::<i64>() + delta));
    }

    #[test]
    fn a_read_that_keeps_its_total_but_overdraws_an_account_is_a_negative_balance(
        initial in prop::collection::vec(0i64..1_000, 2..6),
        steps in prop::collection::vec(step(), 0..40),
        nth_seed in any::<prop::sample::Index>(),
        account in 0usize..8,
        overdraft in 1i64..100,
    ) {
        let (text, reads) = serial_history(&initial, &steps);
        let nth = nth_seed.index(reads.len());
        // Move enough out of `account` into the next one to leave it at -overdraft.
        let line = text.lines().filter(|line| line.contains(r#""type":"ok""#) && line.contains(r#""f":"read""#)).nth(nth).unwrap();
        let read: Value = serde_json::from_str(line).unwrap();
        let key = (account % initial.len()).to_string();
        let balance = read["value"][&key].as_i64().unwrap();
        let report = check_text(&perturb(&text, nth, account, 0, -(balance + overdraft))).unwrap();
        let bank = report.bank.as_ref().unwrap();
        prop_assert_eq!(report.verdict, Verdict::Invalid);
        let first = bank.first_error.as_ref().unwrap();
        prop_assert_eq!(first.kind, BankErrorKind::NegativeBalance);
        prop_assert_eq!(first.op, reads[nth]);
        prop_assert_eq!(&first.negative_accounts, &vec![account as i64 % initial.len() as i64]);
    }
}
