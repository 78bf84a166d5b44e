//! The right-hand side of `UPDATE ... SET column = ...`: a value, or an expression of the
//! column's own value (`c + x`, `c - x`, `c || x`) that the storage node evaluates against the
//! row as the writer sees it, under its write lock, so concurrent increments are never lost.
//!
//! Arithmetic is checked (an overflow is an error, never a wrap or a panic), operands of the
//! wrong type are errors, and NULL follows SQL: NULL op x = x op NULL = NULL.

use std::fmt;

use super::parse::{Operand, SqlError};
use super::value::{Row, SqlValue};
use crate::sharding::{DataType, TableSchema};

/// What `SET column = ...` assigns: `V` is an [`Operand`] in a parsed statement and a
/// [`SqlValue`] once parameters are bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AssignValue<V = Operand> {
    /// `column = x`.
    Set(V),
    /// `column = column + x` (64-bit integers, checked).
    Add(V),
    /// `column = column - x` (64-bit integers, checked).
    Sub(V),
    /// `column = column || x` (text concatenation).
    Concat(V),
}

impl<V> AssignValue<V> {
    /// The value on the right of the operator (or of `=` for [`Self::Set`]).
    pub fn operand(&self) -> &V {
        match self {
            Self::Set(v) | Self::Add(v) | Self::Sub(v) | Self::Concat(v) => v,
        }
    }

    /// The same expression over `f(operand)`.
    pub fn map<W>(&self, f: impl FnOnce(&V) -> W) -> AssignValue<W> {
        match self {
            Self::Set(v) => AssignValue::Set(f(v)),
            Self::Add(v) => AssignValue::Add(f(v)),
            Self::Sub(v) => AssignValue::Sub(f(v)),
            Self::Concat(v) => AssignValue::Concat(f(v)),
        }
    }

    /// The SQL operator, `None` for a plain set.
    fn operator(&self) -> Option<&'static str> {
        match self {
            Self::Set(_) => None,
            Self::Add(_) => Some("+"),
            Self::Sub(_) => Some("-"),
            Self::Concat(_) => Some("||"),
        }
    }
}

impl AssignValue<Operand> {
    /// The expression with parameters bound.
    ///
    /// # Panics
    /// If a parameter index is out of range; [`super::SqlStatement::n_params`] is checked
    /// before binding.
    pub fn bind(&self, params: &[SqlValue]) -> AssignValue<SqlValue> {
        self.map(|operand| operand.bind(params))
    }
}

/// `column = column + 5`, for error messages.
pub struct Described<'a> {
    column: &'a str,
    value: &'a AssignValue<SqlValue>,
}

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let column = self.column;
        match self.value.operator() {
            None => write!(f, "{column} = {}", self.value.operand()),
            Some(op) => write!(f, "{column} = {column} {op} {}", self.value.operand()),
        }
    }
}

impl AssignValue<SqlValue> {
    /// The assignment to `column` as SQL text (`balance = balance - 5`).
    pub fn describe<'a>(&'a self, column: &'a str) -> Described<'a> {
        Described {
            column,
            value: self,
        }
    }

    fn error(&self, column: &str, reason: String) -> SqlError {
        SqlError::Evaluation {
            expression: self.describe(column).to_string(),
            reason,
        }
    }

    /// Refuses an operand the operator cannot take whatever the row holds (`c + 'x'`), so a
    /// statement fails before it reaches storage.
    pub fn check_operand(&self, column: &str) -> Result<(), SqlError> {
        match (self, self.operand()) {
            (Self::Set(_), _) | (_, SqlValue::Null) => Ok(()),
            (Self::Add(_) | Self::Sub(_), SqlValue::Int(_)) => Ok(()),
            (Self::Concat(_), SqlValue::Text(_)) => Ok(()),
            (_, other) => Err(self.error(
                column,
                format!(
                    "`{}` does not take {} {other}",
                    self.operator().unwrap_or("="),
                    other.type_name()
                ),
            )),
        }
    }

    /// The new value of `column`, whose stored value is `current` (`None`: the row has no such
    /// column, which reads as NULL).
    pub fn apply(&self, column: &str, current: Option<&SqlValue>) -> Result<SqlValue, SqlError> {
        let current = current.unwrap_or(&SqlValue::Null);
        let operand = self.operand();
        let mismatch = || {
            self.error(
                column,
                format!(
                    "{column} holds {} {current}, {} {operand} does not apply to it",
                    current.type_name(),
                    self.operator().unwrap_or("="),
                ),
            )
        };
        match (self, current, operand) {
            (Self::Set(value), _, _) => Ok(value.clone()),
            (_, SqlValue::Null, _) | (_, _, SqlValue::Null) => Ok(SqlValue::Null),
            (Self::Add(_), SqlValue::Int(a), SqlValue::Int(b)) => a
                .checked_add(*b)
                .map(SqlValue::Int)
                .ok_or_else(|| self.error(column, format!("integer overflow ({column} is {a})"))),
            (Self::Sub(_), SqlValue::Int(a), SqlValue::Int(b)) => a
                .checked_sub(*b)
                .map(SqlValue::Int)
                .ok_or_else(|| self.error(column, format!("integer overflow ({column} is {a})"))),
            (Self::Concat(_), SqlValue::Text(a), SqlValue::Text(b)) => {
                Ok(SqlValue::Text(format!("{a}{b}")))
            }
            _ => Err(mismatch()),
        }
    }
}

/// What a write of one key did on its storage node. An expression that cannot be evaluated
/// against the row is an outcome of the statement, not a failure of the node, so it travels
/// beside the node's own errors rather than among them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// There is no row to update (or lock); nothing was written.
    Missing,
    /// The row as written.
    Written(Row),
    /// An assignment failed against the row (overflow, mismatched types); nothing was written.
    Refused(SqlError),
}

/// Evaluates every assignment against `row` and applies them; on an error the row is left
/// unchanged. A result that does not fit the column's declared type in `schema` (a
/// concatenation past `VARCHAR(n)`) is an error too.
pub fn apply_assignments(
    row: &mut Row,
    assignments: &[(String, AssignValue<SqlValue>)],
    schema: Option<&TableSchema>,
) -> Result<(), SqlError> {
    let mut updated = Vec::with_capacity(assignments.len());
    for (column, assign) in assignments {
        let value = assign.apply(column, row.get(column))?;
        if let Some(dtype) = schema.and_then(|s| s.column_type(column)) {
            if !value.fits(dtype) {
                let declared = match dtype {
                    DataType::BigInt => "BIGINT".to_string(),
                    DataType::VarChar(n) => format!("VARCHAR({n})"),
                };
                return Err(assign.error(
                    column,
                    format!("the result {value} does not fit {declared}"),
                ));
            }
        }
        updated.push((column.clone(), value));
    }
    row.extend(updated);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i64) -> SqlValue {
        SqlValue::Int(v)
    }

    fn text(v: &str) -> SqlValue {
        SqlValue::Text(v.to_string())
    }

    #[test]
    fn arithmetic_and_concatenation_apply_to_the_stored_value() {
        assert_eq!(
            AssignValue::Add(int(5)).apply("b", Some(&int(10))),
            Ok(int(15))
        );
        assert_eq!(
            AssignValue::Sub(int(5)).apply("b", Some(&int(3))),
            Ok(int(-2))
        );
        assert_eq!(
            AssignValue::Concat(text("4,")).apply("v", Some(&text("1,2,"))),
            Ok(text("1,2,4,"))
        );
        assert_eq!(
            AssignValue::Set(int(7)).apply("b", Some(&text("x"))),
            Ok(int(7))
        );
    }

    #[test]
    fn null_on_either_side_gives_null() {
        assert_eq!(
            AssignValue::Add(int(1)).apply("b", Some(&SqlValue::Null)),
            Ok(SqlValue::Null)
        );
        assert_eq!(
            AssignValue::Add(int(1)).apply("b", None),
            Ok(SqlValue::Null)
        );
        assert_eq!(
            AssignValue::Concat(SqlValue::Null).apply("v", Some(&text("a"))),
            Ok(SqlValue::Null)
        );
    }

    #[test]
    fn overflow_and_mismatched_types_are_errors_that_name_the_expression() {
        let overflow = AssignValue::Add(int(1))
            .apply("b", Some(&int(i64::MAX)))
            .unwrap_err();
        assert!(
            overflow.to_string().contains("b = b + 1") && overflow.to_string().contains("overflow"),
            "{overflow}"
        );
        assert!(AssignValue::Sub(int(1))
            .apply("b", Some(&int(i64::MIN)))
            .is_err());
        let mismatch = AssignValue::Add(int(1))
            .apply("b", Some(&text("x")))
            .unwrap_err();
        assert!(mismatch.to_string().contains("string 'x'"), "{mismatch}");
        assert!(AssignValue::Concat(text("a"))
            .apply("v", Some(&int(1)))
            .is_err());
        assert!(AssignValue::Add(text("a")).check_operand("b").is_err());
        assert!(AssignValue::Concat(int(1)).check_operand("v").is_err());
        assert!(AssignValue::Add(SqlValue::Null).check_operand("b").is_ok());
    }

    #[test]
    fn a_failed_assignment_leaves_the_row_unchanged() {
        let mut row = Row::from([("a".to_string(), int(1)), ("b".to_string(), int(i64::MAX))]);
        let before = row.clone();
        let assignments = vec![
            ("a".to_string(), AssignValue::Add(int(1))),
            ("b".to_string(), AssignValue::Add(int(1))),
        ];
        assert!(apply_assignments(&mut row, &assignments, None).is_err());
        assert_eq!(row, before);
        apply_assignments(&mut row, &assignments[..1], None).unwrap();
        assert_eq!(row["a"], int(2));
    }

    #[test]
    fn a_result_past_its_declared_width_is_refused() {
        let schema = TableSchema {
            name: "t".to_string(),
            shard_key: "id".to_string(),
            columns: vec![
                crate::sharding::Column {
                    name: "id".to_string(),
                    dtype: DataType::BigInt,
                },
                crate::sharding::Column {
                    name: "v".to_string(),
                    dtype: DataType::VarChar(3),
                },
            ],
            strict: true,
        };
        let mut row = Row::from([("v".to_string(), text("ab"))]);
        let grow = vec![("v".to_string(), AssignValue::Concat(text("cd")))];
        let error = apply_assignments(&mut row, &grow, Some(&schema)).unwrap_err();
        assert!(error.to_string().contains("VARCHAR(3)"), "{error}");
        assert_eq!(row["v"], text("ab"));
    }
}
