//! The SQL the seed speaks, parsed with `sqlparser` into a small plan: point selects (also
//! `FOR UPDATE`), full selects, `COUNT(*)`, inserts and point updates whose assignments may
//! be `c = c + x`, `c - x` or `c || x`. Anything else is refused with an error that names what
//! is unsupported.

mod assign;
mod parse;
mod value;

pub use assign::{apply_assignments, AssignValue, Described, WriteOutcome};
pub use parse::{bind_row, parse_statement, Operand, Projection, SqlError, SqlStatement};
pub use value::{FromSqlValue, Row, SqlValue, ToSqlValue};
