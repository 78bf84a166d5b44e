//! The SQL the seed speaks, parsed with `sqlparser` into a small plan: point selects, full
//! selects, `COUNT(*)`, inserts and point updates. Anything else is refused with an error that
//! names what is unsupported.

mod parse;
mod value;

pub use parse::{parse_statement, Operand, Projection, SqlError, SqlStatement};
pub use value::{FromSqlValue, Row, SqlValue, ToSqlValue};
