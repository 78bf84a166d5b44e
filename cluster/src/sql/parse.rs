//! From SQL text to [`SqlStatement`]: every clause the plan cannot express is an error naming
//! it, so nothing is silently ignored.

use sqlparser::ast::{
    self, Assignment, AssignmentTarget, BinaryOperator, Expr, FunctionArg, FunctionArgExpr,
    FunctionArguments, LockType, ObjectName, SelectItem, SetExpr, Statement, TableFactor,
    TableObject, UnaryOperator, Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use super::assign::AssignValue;
use super::value::{Row, SqlValue};

/// Why a statement cannot be run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// The text is not SQL that `sqlparser` understands.
    #[error("sql syntax error: {reason}")]
    Syntax {
        /// The parser's message.
        reason: String,
    },
    /// Valid SQL that this database does not support.
    #[error("unsupported sql: {what}")]
    Unsupported {
        /// What is unsupported, named.
        what: String,
    },
    /// The number of parameters differs from the placeholders.
    #[error("statement has {expected} placeholders, {given} parameters were given")]
    ParameterCount {
        /// Placeholders in the statement.
        expected: usize,
        /// Parameters passed.
        given: usize,
    },
    /// An update expression cannot be evaluated against the stored row (an integer overflow,
    /// an operand of the wrong type, a result too wide for its column); nothing was written.
    #[error("cannot evaluate `{expression}`: {reason}")]
    Evaluation {
        /// The assignment, as SQL (`balance = balance - 5`).
        expression: String,
        /// Why.
        reason: String,
    },
}

fn unsupported(what: impl Into<String>) -> SqlError {
    SqlError::Unsupported { what: what.into() }
}

/// A value in a statement: a literal, or the `index`-th parameter (0-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operand {
    /// A literal value.
    Literal(SqlValue),
    /// A placeholder (`?` in order of appearance, or `$n`).
    Param(usize),
}

/// One row of an `INSERT`: each of `columns` with its operand of `values`, parameters bound.
///
/// # Panics
/// As [`Operand::bind`], if a parameter index is out of range.
pub fn bind_row(columns: &[String], values: &[Operand], params: &[SqlValue]) -> Row {
    columns
        .iter()
        .cloned()
        .zip(values.iter().map(|operand| operand.bind(params)))
        .collect()
}

impl Operand {
    /// The value, with parameters bound.
    ///
    /// # Panics
    /// If the index is out of range; [`SqlStatement::n_params`] is checked before binding.
    pub fn bind(&self, params: &[SqlValue]) -> SqlValue {
        match self {
            Self::Literal(value) => value.clone(),
            Self::Param(index) => params[*index].clone(),
        }
    }
}

/// What a `SELECT` returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Projection {
    /// `SELECT *`.
    All,
    /// Named columns: (column, output name).
    Columns(Vec<(String, String)>),
    /// `COUNT(*)` under the output name.
    Count(String),
}

/// A parsed statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SqlStatement {
    /// `SELECT ... FROM table [WHERE column = operand] [FOR UPDATE]`.
    Select {
        /// The table.
        table: String,
        /// What to return.
        projection: Projection,
        /// An equality filter, if any.
        filter: Option<(String, Operand)>,
        /// `FOR UPDATE`: lock the row against other writers until the transaction ends (only
        /// inside a transaction, by shard key).
        for_update: bool,
    },
    /// `INSERT INTO table (columns) VALUES (...), ...`.
    Insert {
        /// The table.
        table: String,
        /// The columns, in order.
        columns: Vec<String>,
        /// The rows; each as long as `columns`.
        rows: Vec<Vec<Operand>>,
    },
    /// `UPDATE table SET column = operand | column op operand, ... WHERE column = operand`.
    Update {
        /// The table.
        table: String,
        /// The assignments: each column once, the right side a value or an expression of the
        /// column's own value.
        assignments: Vec<(String, AssignValue)>,
        /// The equality filter (required: updates are by key).
        filter: (String, Operand),
    },
}

impl SqlStatement {
    /// The table the statement touches.
    pub fn table(&self) -> &str {
        match self {
            Self::Select { table, .. }
            | Self::Insert { table, .. }
            | Self::Update { table, .. } => table,
        }
    }

    /// How many parameters the statement needs.
    pub fn n_params(&self) -> usize {
        let mut operands: Vec<&Operand> = Vec::new();
        match self {
            Self::Select { filter, .. } => operands.extend(filter.iter().map(|(_, o)| o)),
            Self::Insert { rows, .. } => operands.extend(rows.iter().flatten()),
            Self::Update {
                assignments,
                filter,
                ..
            } => {
                operands.extend(assignments.iter().map(|(_, a)| a.operand()));
                operands.push(&filter.1);
            }
        }
        operands
            .iter()
            .filter_map(|o| match o {
                Operand::Param(i) => Some(i + 1),
                Operand::Literal(_) => None,
            })
            .max()
            .unwrap_or(0)
    }
}

/// Numbers `?` placeholders in order of appearance.
#[derive(Default)]
struct Placeholders {
    n_anonymous: usize,
}

impl Placeholders {
    fn operand(&mut self, expr: &Expr) -> Result<Operand, SqlError> {
        match expr {
            Expr::Value(value) => match &value.value {
                Value::Placeholder(text) if text == "?" => {
                    self.n_anonymous += 1;
                    Ok(Operand::Param(self.n_anonymous - 1))
                }
                Value::Placeholder(text) => {
                    let digits = text.trim_start_matches(['$', '?']);
                    match digits.parse::<usize>() {
                        Ok(n) if n >= 1 => Ok(Operand::Param(n - 1)),
                        _ => Err(unsupported(format!("placeholder {text}"))),
                    }
                }
                Value::Number(text, _) => text
                    .parse::<i64>()
                    .map(|v| Operand::Literal(SqlValue::Int(v)))
                    .map_err(|_| unsupported(format!("number {text} (only 64-bit integers)"))),
                Value::SingleQuotedString(text) => {
                    Ok(Operand::Literal(SqlValue::Text(text.clone())))
                }
                Value::Null => Ok(Operand::Literal(SqlValue::Null)),
                other => Err(unsupported(format!("value {other}"))),
            },
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr: inner,
            } => match self.operand(inner)? {
                Operand::Literal(SqlValue::Int(v)) => Ok(Operand::Literal(SqlValue::Int(-v))),
                _ => Err(unsupported(format!("expression {expr}"))),
            },
            other => Err(unsupported(format!(
                "expression {other} (only literals and placeholders)"
            ))),
        }
    }
}

fn single_name(name: &ObjectName, what: &str) -> Result<String, SqlError> {
    match name.0.as_slice() {
        [part] => part
            .as_ident()
            .map(|ident| ident.value.clone())
            .ok_or_else(|| unsupported(format!("{what} {name}"))),
        _ => Err(unsupported(format!("qualified {what} {name}"))),
    }
}

fn column_name(expr: &Expr) -> Result<String, SqlError> {
    match expr {
        Expr::Identifier(ident) => Ok(ident.value.clone()),
        other => Err(unsupported(format!(
            "expression {other} (only column names)"
        ))),
    }
}

fn equality_filter(
    expr: &Expr,
    placeholders: &mut Placeholders,
) -> Result<(String, Operand), SqlError> {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } => Ok((column_name(left)?, placeholders.operand(right)?)),
        other => Err(unsupported(format!(
            "WHERE {other} (only `column = value`)"
        ))),
    }
}

/// Parses one statement.
pub fn parse_statement(sql: &str) -> Result<SqlStatement, SqlError> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| SqlError::Syntax {
        reason: e.to_string(),
    })?;
    let statement = match statements.as_slice() {
        [one] => one,
        [] => {
            return Err(SqlError::Syntax {
                reason: "empty statement".to_string(),
            })
        }
        _ => return Err(unsupported("several statements in one query")),
    };
    let plan = match statement {
        Statement::Query(query) => parse_select(query)?,
        Statement::Insert(insert) => parse_insert(insert)?,
        Statement::Update(update) => parse_update(update)?,
        other => {
            let text = other.to_string();
            let keyword = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            return Err(unsupported(format!("statement {keyword} ...")));
        }
    };
    Ok(plan)
}

fn parse_select(query: &ast::Query) -> Result<SqlStatement, SqlError> {
    if query.with.is_some() {
        return Err(unsupported("WITH"));
    }
    if query.order_by.is_some() {
        return Err(unsupported("ORDER BY"));
    }
    if query.limit_clause.is_some() || query.fetch.is_some() {
        return Err(unsupported("LIMIT/FETCH"));
    }
    let for_update = match query.locks.as_slice() {
        [] => false,
        [lock] if lock.lock_type == LockType::Update && lock.of.is_none() => {
            if lock.nonblock.is_some() {
                return Err(unsupported(format!("{lock} (only a waiting FOR UPDATE)")));
            }
            true
        }
        [lock] => return Err(unsupported(format!("{lock} (only FOR UPDATE)"))),
        _ => return Err(unsupported("several locking clauses")),
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(unsupported(format!(
            "query body {} (only a plain SELECT)",
            query.body
        )));
    };
    if select.distinct.is_some() {
        return Err(unsupported("DISTINCT"));
    }
    if select.having.is_some() {
        return Err(unsupported("HAVING"));
    }
    if select.group_by != ast::GroupByExpr::Expressions(vec![], vec![]) {
        return Err(unsupported("GROUP BY"));
    }
    let table = match select.from.as_slice() {
        [from] if from.joins.is_empty() => match &from.relation {
            TableFactor::Table {
                name,
                alias: None,
                args: None,
                ..
            } => single_name(name, "table")?,
            other => return Err(unsupported(format!("FROM {other}"))),
        },
        [_] => return Err(unsupported("JOIN")),
        [] => return Err(unsupported("SELECT without FROM")),
        _ => return Err(unsupported("several tables in FROM")),
    };
    let projection = parse_projection(&select.projection)?;
    let mut placeholders = Placeholders::default();
    let filter = select
        .selection
        .as_ref()
        .map(|expr| equality_filter(expr, &mut placeholders))
        .transpose()?;
    // Every clause the plan expresses, rendered back, must give the statement again: a clause
    // that no check above names is refused rather than ignored.
    let rendered = {
        let items: Vec<String> = select.projection.iter().map(ToString::to_string).collect();
        let filter = select
            .selection
            .as_ref()
            .map(|e| format!(" WHERE {e}"))
            .unwrap_or_default();
        let lock = if for_update { " FOR UPDATE" } else { "" };
        format!(
            "SELECT {} FROM {}{}{}",
            items.join(", "),
            select.from[0],
            filter,
            lock
        )
    };
    if rendered != query.to_string() {
        return Err(unsupported(format!("clause in `{query}`")));
    }
    Ok(SqlStatement::Select {
        table,
        projection,
        filter,
        for_update,
    })
}

fn is_count_star(expr: &Expr) -> Result<bool, SqlError> {
    let Expr::Function(function) = expr else {
        return Ok(false);
    };
    let name = single_name(&function.name, "function")?;
    if !name.eq_ignore_ascii_case("count") {
        return Err(unsupported(format!("function {name} (only COUNT(*))")));
    }
    match &function.args {
        FunctionArguments::List(list)
            if list.duplicate_treatment.is_none()
                && list.clauses.is_empty()
                && matches!(
                    list.args.as_slice(),
                    [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]
                ) =>
        {
            Ok(true)
        }
        _ => Err(unsupported(format!("{function} (only COUNT(*))"))),
    }
}

fn parse_projection(items: &[SelectItem]) -> Result<Projection, SqlError> {
    if let [SelectItem::Wildcard(_)] = items {
        return Ok(Projection::All);
    }
    if let [item] = items {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(expr) => (expr, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            _ => (&Expr::Value(Value::Null.into()), None),
        };
        if is_count_star(expr)? {
            return Ok(Projection::Count(
                alias.unwrap_or_else(|| "count".to_string()),
            ));
        }
    }
    let mut columns = Vec::with_capacity(items.len());
    for item in items {
        match item {
            SelectItem::UnnamedExpr(expr) => {
                let column = column_name(expr)?;
                columns.push((column.clone(), column));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                if is_count_star(expr)? {
                    return Err(unsupported("COUNT(*) beside other columns"));
                }
                columns.push((column_name(expr)?, alias.value.clone()));
            }
            other => return Err(unsupported(format!("select item {other}"))),
        }
    }
    Ok(Projection::Columns(columns))
}

fn parse_insert(insert: &ast::Insert) -> Result<SqlStatement, SqlError> {
    let TableObject::TableName(name) = &insert.table else {
        return Err(unsupported(format!("INSERT INTO {}", insert.table)));
    };
    let table = single_name(name, "table")?;
    if insert.on.is_some() || insert.returning.is_some() || insert.or.is_some() {
        return Err(unsupported("INSERT with ON CONFLICT, OR or RETURNING"));
    }
    if insert.columns.is_empty() {
        return Err(unsupported("INSERT without a column list"));
    }
    let columns = insert
        .columns
        .iter()
        .map(|c| single_name(c, "column"))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(source) = &insert.source else {
        return Err(unsupported("INSERT without VALUES"));
    };
    let SetExpr::Values(values) = source.body.as_ref() else {
        return Err(unsupported("INSERT ... SELECT"));
    };
    let mut placeholders = Placeholders::default();
    let mut rows = Vec::with_capacity(values.rows.len());
    for row in &values.rows {
        if row.content.len() != columns.len() {
            return Err(SqlError::Syntax {
                reason: format!(
                    "INSERT row has {} values for {} columns",
                    row.content.len(),
                    columns.len()
                ),
            });
        }
        let operands = row
            .content
            .iter()
            .map(|e| placeholders.operand(e))
            .collect::<Result<Vec<_>, _>>()?;
        rows.push(operands);
    }
    Ok(SqlStatement::Insert {
        table,
        columns,
        rows,
    })
}

fn parse_update(update: &ast::Update) -> Result<SqlStatement, SqlError> {
    if !update.table.joins.is_empty() || update.from.is_some() {
        return Err(unsupported("UPDATE with JOIN or FROM"));
    }
    if update.returning.is_some() || update.limit.is_some() || !update.order_by.is_empty() {
        return Err(unsupported("UPDATE with RETURNING, ORDER BY or LIMIT"));
    }
    let table = match &update.table.relation {
        TableFactor::Table {
            name, alias: None, ..
        } => single_name(name, "table")?,
        other => return Err(unsupported(format!("UPDATE {other}"))),
    };
    let mut placeholders = Placeholders::default();
    let mut assignments = Vec::with_capacity(update.assignments.len());
    for assignment in &update.assignments {
        let AssignmentTarget::ColumnName(column) = &assignment.target else {
            return Err(unsupported(format!("assignment {assignment}")));
        };
        let column = single_name(column, "column")?;
        if assignments.iter().any(|(c, _)| *c == column) {
            return Err(unsupported(format!("column {column} assigned twice")));
        }
        let value = assign_value(&column, assignment, &mut placeholders)?;
        assignments.push((column, value));
    }
    let Some(selection) = &update.selection else {
        return Err(unsupported(
            "UPDATE without WHERE (updates are by shard key)",
        ));
    };
    let filter = equality_filter(selection, &mut placeholders)?;
    Ok(SqlStatement::Update {
        table,
        assignments,
        filter,
    })
}

/// `column = x`, or `column = column op x` with op one of `+`, `-`, `||`.
fn assign_value(
    column: &str,
    assignment: &Assignment,
    placeholders: &mut Placeholders,
) -> Result<AssignValue, SqlError> {
    let Expr::BinaryOp { left, op, right } = &assignment.value else {
        return Ok(AssignValue::Set(placeholders.operand(&assignment.value)?));
    };
    let refused = || {
        unsupported(format!(
            "assignment {assignment} (only `{column} = value` or `{column} = {column} + value`, \
             `- value`, `|| value`)"
        ))
    };
    match left.as_ref() {
        Expr::Identifier(ident) if ident.value == column => {}
        _ => return Err(refused()),
    }
    let operand = match right.as_ref() {
        // A literal's own error (a number past 64 bits) is more precise than the refusal.
        Expr::Value(_) | Expr::UnaryOp { .. } => placeholders.operand(right)?,
        _ => return Err(refused()),
    };
    match op {
        BinaryOperator::Plus => Ok(AssignValue::Add(operand)),
        BinaryOperator::Minus => Ok(AssignValue::Sub(operand)),
        BinaryOperator::StringConcat => Ok(AssignValue::Concat(operand)),
        _ => Err(refused()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_statements_parse_into_plans() {
        let select = parse_statement("SELECT data FROM critical WHERE id = ?").unwrap();
        assert_eq!(
            select,
            SqlStatement::Select {
                table: "critical".into(),
                projection: Projection::Columns(vec![("data".into(), "data".into())]),
                filter: Some(("id".into(), Operand::Param(0))),
                for_update: false,
            }
        );
        let count = parse_statement("SELECT COUNT(*) as cnt FROM concurrent").unwrap();
        assert_eq!(
            count,
            SqlStatement::Select {
                table: "concurrent".into(),
                projection: Projection::Count("cnt".into()),
                filter: None,
                for_update: false,
            }
        );
        let insert = parse_statement("INSERT INTO t (id, v) VALUES (?, 'x'), (-3, ?)").unwrap();
        assert_eq!(insert.n_params(), 2);
        let update = parse_statement("UPDATE t SET v = ? WHERE id = ?").unwrap();
        assert_eq!(
            update,
            SqlStatement::Update {
                table: "t".into(),
                assignments: vec![("v".into(), AssignValue::Set(Operand::Param(0)))],
                filter: ("id".into(), Operand::Param(1)),
            }
        );
    }

    #[test]
    fn update_expressions_of_the_assigned_column_parse() {
        let update =
            parse_statement("UPDATE accounts SET balance = balance - ?, n = n + 1 WHERE id = ?")
                .unwrap();
        assert_eq!(
            update,
            SqlStatement::Update {
                table: "accounts".into(),
                assignments: vec![
                    ("balance".into(), AssignValue::Sub(Operand::Param(0))),
                    (
                        "n".into(),
                        AssignValue::Add(Operand::Literal(SqlValue::Int(1)))
                    ),
                ],
                filter: ("id".into(), Operand::Param(1)),
            }
        );
        assert_eq!(update.n_params(), 2);
        let append = parse_statement("UPDATE lists SET v = v || '4,' WHERE id = 3").unwrap();
        let SqlStatement::Update { assignments, .. } = append else {
            panic!("an update parses as an update: {append:?}");
        };
        assert_eq!(
            assignments,
            vec![(
                "v".into(),
                AssignValue::Concat(Operand::Literal(SqlValue::Text("4,".into())))
            )]
        );
        let negative = parse_statement("UPDATE t SET b = b + -5 WHERE id = 1").unwrap();
        let SqlStatement::Update { assignments, .. } = negative else {
            panic!("an update parses as an update: {negative:?}");
        };
        assert_eq!(
            assignments[0].1,
            AssignValue::Add(Operand::Literal(SqlValue::Int(-5)))
        );
    }

    #[test]
    fn select_for_update_is_marked_and_plain_selects_are_not() {
        let locked =
            parse_statement("SELECT balance FROM accounts WHERE id = 4 FOR UPDATE").unwrap();
        assert!(matches!(
            locked,
            SqlStatement::Select {
                for_update: true,
                ..
            }
        ));
        let plain = parse_statement("SELECT balance FROM accounts WHERE id = 4").unwrap();
        assert!(matches!(
            plain,
            SqlStatement::Select {
                for_update: false,
                ..
            }
        ));
    }

    #[test]
    fn unsupported_sql_is_named() {
        let cases = [
            ("DELETE FROM t WHERE id = 1", "DELETE FROM"),
            ("SELECT a FROM t ORDER BY a", "ORDER BY"),
            ("SELECT a FROM t JOIN u ON t.a = u.a", "JOIN"),
            ("SELECT a FROM t WHERE a > 1", "only `column = value`"),
            ("SELECT SUM(a) FROM t", "function SUM"),
            ("SELECT a FROM t GROUP BY a", "GROUP BY"),
            ("UPDATE t SET a = 1", "without WHERE"),
            (
                "UPDATE t SET a = b + 1 WHERE id = 1",
                "assignment a = b + 1",
            ),
            (
                "UPDATE t SET a = 1 + a WHERE id = 1",
                "assignment a = 1 + a",
            ),
            (
                "UPDATE t SET a = a * 2 WHERE id = 1",
                "assignment a = a * 2",
            ),
            (
                "UPDATE t SET a = a + b WHERE id = 1",
                "assignment a = a + b",
            ),
            (
                "UPDATE t SET a = a + 1 + 1 WHERE id = 1",
                "assignment a = a + 1 + 1",
            ),
            ("UPDATE t SET a = 1, a = 2 WHERE id = 1", "assigned twice"),
            (
                "SELECT a FROM t WHERE id = 1 FOR SHARE",
                "FOR SHARE (only FOR UPDATE)",
            ),
            (
                "SELECT a FROM t WHERE id = 1 FOR UPDATE NOWAIT",
                "only a waiting",
            ),
            (
                "SELECT a FROM t WHERE id = 1 FOR UPDATE OF t",
                "FOR UPDATE OF t",
            ),
        ];
        for (sql, needle) in cases {
            let error = parse_statement(sql).unwrap_err().to_string();
            assert!(error.contains(needle), "{sql}: {error}");
        }
        assert!(matches!(
            parse_statement("SELEC nothing"),
            Err(SqlError::Syntax { .. })
        ));
    }
}
