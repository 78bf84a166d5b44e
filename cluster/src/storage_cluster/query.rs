//! The SQL front end: binds parameters, checks rows against the schema, and runs each plan as
//! point requests or an epoch-consistent scatter.

use crate::sharding::{DataType, TableSchema};
use crate::sql::{
    bind_row, parse_statement, AssignValue, FromSqlValue, Operand, Projection, Row, SqlError,
    SqlStatement, SqlValue, ToSqlValue, WriteOutcome,
};

use super::{ClusterError, StorageCluster};

/// One result row: output column names and values, in projection order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultRow {
    /// The columns.
    pub columns: Vec<(String, SqlValue)>,
}

impl ResultRow {
    /// The value of `column` as `T`.
    ///
    /// # Panics
    /// If there is no such column or it holds another type; [`Self::try_get`] returns a `Result`.
    pub fn get<T: FromSqlValue>(&self, column: &str) -> T {
        self.try_get(column)
            .unwrap_or_else(|e| panic!("{e} in row {:?}", self.columns))
    }

    /// The value of `column` as `T`.
    pub fn try_get<T: FromSqlValue>(&self, column: &str) -> Result<T, ClusterError> {
        let value = self
            .columns
            .iter()
            .find(|(name, _)| name == column)
            .map(|(_, value)| value)
            .ok_or_else(|| ClusterError::ResultColumn {
                column: column.to_string(),
                reason: "no such column".to_string(),
            })?;
        T::from_sql_value(value).ok_or_else(|| ClusterError::ResultColumn {
            column: column.to_string(),
            reason: format!("holds {} {value}", value.type_name()),
        })
    }
}

/// What a statement returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// The rows of a `SELECT`.
    pub rows: Vec<ResultRow>,
    /// Rows inserted or updated.
    pub rows_affected: u64,
}

fn type_text(dtype: &DataType) -> String {
    match dtype {
        DataType::BigInt => "BIGINT".to_string(),
        DataType::VarChar(n) => format!("VARCHAR({n})"),
    }
}

fn check_value(schema: &TableSchema, column: &str, value: &SqlValue) -> Result<(), ClusterError> {
    match schema.column_type(column) {
        Some(dtype) if !value.fits(dtype) => Err(ClusterError::WrongType {
            table: schema.name.clone(),
            column: column.to_string(),
            expected: type_text(dtype),
            found: format!("{} {value}", value.type_name()),
        }),
        None if schema.strict => Err(ClusterError::UnknownColumn {
            table: schema.name.clone(),
            column: column.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Checks a row against `schema` and returns its shard key.
pub(crate) fn validate_row(schema: &TableSchema, row: &Row) -> Result<SqlValue, ClusterError> {
    for (column, value) in row {
        check_value(schema, column, value)?;
    }
    match row.get(&schema.shard_key) {
        Some(SqlValue::Null) | None => Err(ClusterError::MissingShardKey {
            table: schema.name.clone(),
            column: schema.shard_key.clone(),
        }),
        Some(key) => Ok(key.clone()),
    }
}

pub(crate) fn project(row: &Row, projection: &Projection) -> ResultRow {
    let columns = match projection {
        Projection::All => row.iter().map(|(c, v)| (c.clone(), v.clone())).collect(),
        Projection::Columns(columns) => columns
            .iter()
            .map(|(column, alias)| {
                let value = row.get(column).cloned().unwrap_or(SqlValue::Null);
                (alias.clone(), value)
            })
            .collect(),
        Projection::Count(_) => unreachable!("counts are not projected row by row"),
    };
    ResultRow { columns }
}

impl StorageCluster {
    /// Binds an update's assignments and checks them against `schema` before they reach storage:
    /// no shard key update, no unknown column in a strict table, a plain value of the column's
    /// type, an operand the operator takes. The storage node checks what depends on the row.
    pub(crate) fn bind_assignments(
        schema: &TableSchema,
        assignments: &[(String, AssignValue)],
        params: &[SqlValue],
    ) -> Result<Vec<(String, AssignValue<SqlValue>)>, ClusterError> {
        let mut bound = Vec::with_capacity(assignments.len());
        for (target, assign) in assignments {
            if *target == schema.shard_key {
                return Err(ClusterError::ShardKeyUpdate {
                    table: schema.name.clone(),
                    column: target.clone(),
                });
            }
            let value = assign.bind(params);
            match &value {
                AssignValue::Set(plain) => check_value(schema, target, plain)?,
                _ => {
                    if schema.strict && schema.column_type(target).is_none() {
                        return Err(ClusterError::UnknownColumn {
                            table: schema.name.clone(),
                            column: target.clone(),
                        });
                    }
                    value.check_operand(target)?;
                }
            }
            bound.push((target.clone(), value));
        }
        Ok(bound)
    }

    /// How many rows a point write wrote (0 or 1); an expression refused against the row is
    /// the statement's error.
    pub(crate) fn rows_written(outcome: WriteOutcome) -> Result<u64, ClusterError> {
        match outcome {
            WriteOutcome::Missing => Ok(0),
            WriteOutcome::Written(_) => Ok(1),
            WriteOutcome::Refused(error) => Err(error.into()),
        }
    }

    /// The error for `SELECT ... FOR UPDATE` outside a transaction, which has no lock to hold.
    pub(crate) fn for_update_outside_transaction() -> ClusterError {
        SqlError::Unsupported {
            what: "SELECT ... FOR UPDATE outside a transaction".to_string(),
        }
        .into()
    }

    /// The seed API: runs one SQL statement with `?` parameters.
    pub async fn query<P: ToSqlValue>(
        &self,
        sql: &str,
        params: &[P],
    ) -> Result<QueryResult, ClusterError> {
        let statement = parse_statement(sql)?;
        let params: Vec<SqlValue> = params.iter().map(ToSqlValue::to_sql_value).collect();
        if statement.n_params() != params.len() {
            return Err(SqlError::ParameterCount {
                expected: statement.n_params(),
                given: params.len(),
            }
            .into());
        }
        let schema = self.schema(statement.table()).await?;
        match statement {
            SqlStatement::Select {
                for_update: true, ..
            } => Err(Self::for_update_outside_transaction()),
            SqlStatement::Select {
                projection, filter, ..
            } => {
                let filter = filter.map(|(column, operand)| (column, operand.bind(&params)));
                self.select(&schema, &projection, filter).await
            }
            SqlStatement::Insert { columns, rows, .. } => {
                let mut inserted = 0;
                for values in rows {
                    let row = bind_row(&columns, &values, &params);
                    self.insert_row(&schema.name, row).await?;
                    inserted += 1;
                }
                Ok(QueryResult {
                    rows: Vec::new(),
                    rows_affected: inserted,
                })
            }
            SqlStatement::Update {
                assignments,
                filter,
                ..
            } => self.update(&schema, &assignments, &filter, &params).await,
        }
    }

    fn check_filter_column(
        schema: &TableSchema,
        column: &str,
        value: &SqlValue,
    ) -> Result<(), ClusterError> {
        if schema.column_type(column).is_none() && schema.strict {
            return Err(ClusterError::UnknownColumn {
                table: schema.name.clone(),
                column: column.to_string(),
            });
        }
        check_value(schema, column, value)
    }

    async fn select(
        &self,
        schema: &TableSchema,
        projection: &Projection,
        filter: Option<(String, SqlValue)>,
    ) -> Result<QueryResult, ClusterError> {
        if let Projection::Columns(columns) = projection {
            for (column, _) in columns {
                if schema.strict && schema.column_type(column).is_none() {
                    return Err(ClusterError::UnknownColumn {
                        table: schema.name.clone(),
                        column: column.clone(),
                    });
                }
            }
        }
        let rows: Vec<Row> = match filter {
            Some((column, value)) if column == schema.shard_key => {
                Self::check_filter_column(schema, &column, &value)?;
                if value == SqlValue::Null {
                    Vec::new()
                } else {
                    let table = schema.name.as_str();
                    let row = self
                        .route(&value, |node, epoch| {
                            let value = &value;
                            async move { node.get(epoch, table, value).await }
                        })
                        .await?;
                    row.into_iter().collect()
                }
            }
            Some((column, value)) => {
                Self::check_filter_column(schema, &column, &value)?;
                let all = self.read_all(&schema.name).await?;
                all.into_iter()
                    .filter(|row| row.get(&column) == Some(&value))
                    .collect()
            }
            None => match projection {
                Projection::Count(alias) => {
                    let table = schema.name.as_str();
                    let parts = self
                        .scatter(|node, epoch| async move { node.count_owned(epoch, table).await })
                        .await?;
                    let count: usize = parts.iter().map(|(_, n)| n).sum();
                    return Ok(QueryResult {
                        rows: vec![ResultRow {
                            columns: vec![(alias.clone(), SqlValue::Int(count as i64))],
                        }],
                        rows_affected: 0,
                    });
                }
                _ => self.read_all(&schema.name).await?,
            },
        };
        let rows = match projection {
            Projection::Count(alias) => vec![ResultRow {
                columns: vec![(alias.clone(), SqlValue::Int(rows.len() as i64))],
            }],
            _ => rows.iter().map(|row| project(row, projection)).collect(),
        };
        Ok(QueryResult {
            rows,
            rows_affected: 0,
        })
    }

    async fn update(
        &self,
        schema: &TableSchema,
        assignments: &[(String, AssignValue)],
        filter: &(String, Operand),
        params: &[SqlValue],
    ) -> Result<QueryResult, ClusterError> {
        let (column, operand) = filter;
        if *column != schema.shard_key {
            return Err(SqlError::Unsupported {
                what: format!(
                    "UPDATE filtered on {column:?} (only the shard key {:?})",
                    schema.shard_key
                ),
            }
            .into());
        }
        let key = operand.bind(params);
        check_value(schema, column, &key)?;
        if key == SqlValue::Null {
            return Err(ClusterError::InvalidValue {
                what: format!("shard key {column:?}"),
                value: key,
            });
        }
        let bound = Self::bind_assignments(schema, assignments, params)?;
        let table = schema.name.as_str();
        let outcome = self
            .route(&key, |node, epoch| {
                let (key, bound) = (&key, &bound);
                async move { node.update(epoch, table, key, bound).await }
            })
            .await?;
        Ok(QueryResult {
            rows: Vec::new(),
            rows_affected: Self::rows_written(outcome)?,
        })
    }
}
