//! One bank operation at a time: the shape of transfers and reads, and the judgment of one read.

use super::{BankErrorKind, BankOptions};
use crate::models::ShapeError;
use crate::ops::Operation;
use serde_json::Value;
use std::collections::BTreeMap;

/// The balances one `ok` read returned: account → balance, `None` for a nil balance.
pub(super) type Balances = BTreeMap<i64, Option<i64>>;

/// Checks the shape of a transfer's invocation value: `{"from": 1, "to": 2, "amount": 5}`,
/// three integers. Nothing else about a transfer is judged; only reads are.
pub(super) fn check_transfer(op: &Operation) -> Result<(), ShapeError> {
    let Some(map) = op.input.as_object() else {
        return Err(ShapeError::new(
            op,
            false,
            "value",
            format!(
                "a transfer's value must be a map of from, to and amount, found {}",
                op.input
            ),
        ));
    };
    for name in ["from", "to", "amount"] {
        match map.get(name) {
            Some(value) if value.as_i64().is_some() => {}
            Some(value) => {
                return Err(ShapeError::new(
                    op,
                    false,
                    "value",
                    format!("transfer {name}: expected an integer, found {value}"),
                ))
            }
            None => {
                return Err(ShapeError::new(
                    op,
                    false,
                    "value",
                    format!("transfer {name}: missing; expected an integer"),
                ))
            }
        }
    }
    Ok(())
}

/// Parses an `ok` read's value: a map from account ids (integers, as JSON object keys are
/// strings) to integer balances or `null`.
pub(super) fn parse_balances(op: &Operation) -> Result<Balances, ShapeError> {
    let output = op.output.as_ref().unwrap_or(&Value::Null);
    let Some(map) = output.as_object() else {
        return Err(ShapeError::new(
            op,
            true,
            "value",
            format!("an ok read must return a map of account to balance, found {output}"),
        ));
    };
    let mut balances = Balances::new();
    for (key, value) in map {
        let Ok(account) = key.trim().parse::<i64>() else {
            return Err(ShapeError::new(
                op,
                true,
                "value",
                format!("account {key:?}: expected an integer account id"),
            ));
        };
        let balance = match value {
            Value::Null => None,
            other => Some(other.as_i64().ok_or_else(|| {
                ShapeError::new(
                    op,
                    true,
                    "value",
                    format!(
                        "balance of account {account}: expected an integer or null, found {other}"
                    ),
                )
            })?),
        };
        if balances.insert(account, balance).is_some() {
            return Err(ShapeError::new(
                op,
                true,
                "value",
                format!("account {account} appears twice in one read"),
            ));
        }
    }
    Ok(balances)
}

/// What is wrong with one read, when something is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Findings {
    /// Accounts read that the history does not name.
    pub unexpected: Vec<i64>,
    /// Accounts named by the history but absent from the read.
    pub missing: Vec<i64>,
    /// Accounts read with a nil balance.
    pub nil: Vec<i64>,
    /// Accounts with a negative balance (found whether or not they are allowed).
    pub negative: Vec<i64>,
    /// The sum of the balances present.
    pub sum: i128,
}

impl Findings {
    /// Everything about `balances` measured against `options` and the expected `total`.
    pub fn of(balances: &Balances, options: &BankOptions) -> Findings {
        let mut findings = Findings::default();
        for (&account, &balance) in balances {
            if options
                .accounts
                .as_ref()
                .is_some_and(|accounts| !accounts.contains(&account))
            {
                findings.unexpected.push(account);
            }
            match balance {
                None => findings.nil.push(account),
                Some(balance) => {
                    findings.sum += i128::from(balance);
                    if balance < 0 {
                        findings.negative.push(account);
                    }
                }
            }
        }
        if let Some(accounts) = &options.accounts {
            findings.missing = accounts
                .iter()
                .filter(|account| !balances.contains_key(account))
                .copied()
                .collect();
        }
        findings
    }

    /// The error of this read, in Jepsen's order of precedence (`jepsen.tests.bank/check-op`):
    /// an unexpected account, then a missing or nil balance, then a wrong total, then a
    /// negative balance (unless allowed). `None` when the read is correct.
    pub fn error(&self, total: Option<i64>, negative_balances: bool) -> Option<BankErrorKind> {
        if !self.unexpected.is_empty() {
            Some(BankErrorKind::UnexpectedAccount)
        } else if !self.missing.is_empty() || !self.nil.is_empty() {
            Some(BankErrorKind::MissingBalance)
        } else if total.is_some_and(|total| i128::from(total) != self.sum) {
            Some(BankErrorKind::WrongTotal)
        } else if !negative_balances && !self.negative.is_empty() {
            Some(BankErrorKind::NegativeBalance)
        } else {
            None
        }
    }

    /// Whether this read could give the total: every account is present with a balance.
    pub fn is_complete(&self) -> bool {
        self.unexpected.is_empty() && self.missing.is_empty() && self.nil.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Process;
    use crate::ops::Outcome;
    use serde_json::json;

    fn read(output: Value) -> Operation {
        Operation {
            id: 0,
            process: Process::Client(1),
            f: "read".to_string(),
            key: None,
            input: Value::Null,
            output: Some(output),
            outcome: Outcome::Ok,
            invoke_index: 0,
            complete_index: Some(1),
            invoke_time: None,
            complete_time: None,
            invoke_line: 1,
            complete_line: 2,
            node: None,
            error: None,
        }
    }

    fn options(total: i64, accounts: &[i64], negative_balances: bool) -> BankOptions {
        BankOptions {
            total: Some(total),
            accounts: Some(accounts.iter().copied().collect()),
            negative_balances,
        }
    }

    fn error_of(output: Value, options: &BankOptions) -> Option<BankErrorKind> {
        let balances = parse_balances(&read(output)).unwrap();
        Findings::of(&balances, options).error(options.total, options.negative_balances)
    }

    #[test]
    fn each_error_kind_is_found_in_jepsens_order_of_precedence() {
        let bank = options(10, &[0, 1], false);
        assert_eq!(error_of(json!({"0": 4, "1": 6}), &bank), None);
        assert_eq!(
            error_of(json!({"0": 4, "1": 6, "2": 0}), &bank),
            Some(BankErrorKind::UnexpectedAccount)
        );
        assert_eq!(
            error_of(json!({"0": 4, "1": null}), &bank),
            Some(BankErrorKind::MissingBalance)
        );
        assert_eq!(
            error_of(json!({"0": 10}), &bank),
            Some(BankErrorKind::MissingBalance)
        );
        assert_eq!(
            error_of(json!({"0": 4, "1": 7}), &bank),
            Some(BankErrorKind::WrongTotal)
        );
        assert_eq!(
            error_of(json!({"0": -1, "1": 11}), &bank),
            Some(BankErrorKind::NegativeBalance)
        );
        // A wrong total wins over a negative balance, as in Jepsen.
        assert_eq!(
            error_of(json!({"0": -1, "1": 10}), &bank),
            Some(BankErrorKind::WrongTotal)
        );
        let lenient = options(10, &[0, 1], true);
        assert_eq!(error_of(json!({"0": -1, "1": 11}), &lenient), None);
    }

    #[test]
    fn sums_do_not_overflow() {
        let bank = options(i64::MAX, &[0, 1], false);
        assert_eq!(
            error_of(json!({"0": i64::MAX, "1": i64::MAX}), &bank),
            Some(BankErrorKind::WrongTotal)
        );
    }

    #[test]
    fn malformed_reads_and_transfers_are_shape_errors_naming_the_value() {
        for (output, expected) in [
            (
                json!([1, 2]),
                "an ok read must return a map of account to balance, found [1,2]",
            ),
            (
                json!({"x": 1}),
                "account \"x\": expected an integer account id",
            ),
            (
                json!({"1": "ten"}),
                "balance of account 1: expected an integer or null, found \"ten\"",
            ),
            (
                json!({"1": 2.5}),
                "balance of account 1: expected an integer or null, found 2.5",
            ),
            (
                json!({"1": 2, "01": 3}),
                "account 1 appears twice in one read",
            ),
        ] {
            let error = parse_balances(&read(output.clone())).unwrap_err();
            assert_eq!((error.line, error.field), (2, "value"), "{output}");
            assert_eq!(error.message, expected, "{output}");
        }
        let mut transfer = read(Value::Null);
        transfer.f = "transfer".to_string();
        transfer.input = json!({"from": 1, "to": 2, "amount": "5"});
        let error = check_transfer(&transfer).unwrap_err();
        assert_eq!((error.line, error.field), (1, "value"));
        assert_eq!(
            error.message,
            "transfer amount: expected an integer, found \"5\""
        );
        transfer.input = json!({"from": 1, "amount": 5});
        assert_eq!(
            check_transfer(&transfer).unwrap_err().message,
            "transfer to: missing; expected an integer"
        );
        transfer.input = json!({"from": 1, "to": 2, "amount": 5});
        assert_eq!(check_transfer(&transfer), Ok(()));
    }
}
