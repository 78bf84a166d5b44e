//! SQL values, rows, and the conversions the seed's call sites need (`("id", i)`, `&[id]`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::sharding::DataType;

/// A value of a column or a query parameter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SqlValue {
    /// SQL `NULL`.
    Null,
    /// An integer (every integer type maps here).
    Int(i64),
    /// A string.
    Text(String),
}

impl SqlValue {
    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Int(_) => "integer",
            Self::Text(_) => "string",
        }
    }

    /// Whether this value may be stored in a column of type `dtype` (`NULL` fits any).
    pub fn fits(&self, dtype: &DataType) -> bool {
        match (self, dtype) {
            (Self::Null, _) => true,
            (Self::Int(_), DataType::BigInt) => true,
            (Self::Text(text), DataType::VarChar(n)) => text.chars().count() <= *n,
            _ => false,
        }
    }

    /// The canonical bytes of a shard key: a type tag, then an order-preserving encoding.
    pub fn key_bytes(&self) -> Vec<u8> {
        match self {
            Self::Null => vec![0],
            Self::Int(value) => {
                let mut bytes = vec![1];
                bytes.extend_from_slice(&((*value as u64) ^ (1 << 63)).to_be_bytes());
                bytes
            }
            Self::Text(text) => {
                let mut bytes = vec![2];
                bytes.extend_from_slice(text.as_bytes());
                bytes
            }
        }
    }
}

impl fmt::Display for SqlValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("NULL"),
            Self::Int(value) => write!(f, "{value}"),
            Self::Text(text) => write!(f, "'{text}'"),
        }
    }
}

/// Anything that can be a column value or a query parameter: integers, strings, and
/// references to them (the seed passes `i32`, `&i32` and `String`).
pub trait ToSqlValue {
    /// The SQL value.
    fn to_sql_value(&self) -> SqlValue;
}

macro_rules! int_to_sql {
    ($($t:ty),*) => {$(
        impl ToSqlValue for $t {
            fn to_sql_value(&self) -> SqlValue {
                SqlValue::Int(i64::from(*self))
            }
        }
    )*};
}
int_to_sql!(i8, i16, i32, i64, u8, u16, u32);

impl ToSqlValue for u64 {
    fn to_sql_value(&self) -> SqlValue {
        // Ids past i64::MAX do not fit BIGINT; wrap them deterministically rather than panic.
        SqlValue::Int(*self as i64)
    }
}

impl ToSqlValue for usize {
    fn to_sql_value(&self) -> SqlValue {
        SqlValue::Int(*self as i64)
    }
}

impl ToSqlValue for str {
    fn to_sql_value(&self) -> SqlValue {
        SqlValue::Text(self.to_string())
    }
}

impl ToSqlValue for String {
    fn to_sql_value(&self) -> SqlValue {
        SqlValue::Text(self.clone())
    }
}

impl ToSqlValue for SqlValue {
    fn to_sql_value(&self) -> SqlValue {
        self.clone()
    }
}

impl<T: ToSqlValue + ?Sized> ToSqlValue for &T {
    fn to_sql_value(&self) -> SqlValue {
        (**self).to_sql_value()
    }
}

impl From<&i32> for SqlValue {
    fn from(value: &i32) -> Self {
        Self::Int(i64::from(*value))
    }
}

impl From<&i64> for SqlValue {
    fn from(value: &i64) -> Self {
        Self::Int(*value)
    }
}

impl From<i64> for SqlValue {
    fn from(value: i64) -> Self {
        Self::Int(value)
    }
}

impl From<i32> for SqlValue {
    fn from(value: i32) -> Self {
        Self::Int(i64::from(value))
    }
}

impl From<String> for SqlValue {
    fn from(value: String) -> Self {
        Self::Text(value)
    }
}

impl From<&str> for SqlValue {
    fn from(value: &str) -> Self {
        Self::Text(value.to_string())
    }
}

/// A stored row: column name to value.
pub type Row = BTreeMap<String, SqlValue>;

/// A Rust type a column can be read as (`row.get::<String>("data")`, `get::<i64>("cnt")`).
pub trait FromSqlValue: Sized {
    /// The value as `Self`, or `None` when the types differ.
    fn from_sql_value(value: &SqlValue) -> Option<Self>;
}

impl FromSqlValue for i64 {
    fn from_sql_value(value: &SqlValue) -> Option<Self> {
        match value {
            SqlValue::Int(v) => Some(*v),
            _ => None,
        }
    }
}

impl FromSqlValue for i32 {
    fn from_sql_value(value: &SqlValue) -> Option<Self> {
        i64::from_sql_value(value).and_then(|v| i32::try_from(v).ok())
    }
}

impl FromSqlValue for u64 {
    fn from_sql_value(value: &SqlValue) -> Option<Self> {
        i64::from_sql_value(value).and_then(|v| u64::try_from(v).ok())
    }
}

impl FromSqlValue for String {
    fn from_sql_value(value: &SqlValue) -> Option<Self> {
        match value {
            SqlValue::Text(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl FromSqlValue for SqlValue {
    fn from_sql_value(value: &SqlValue) -> Option<Self> {
        Some(value.clone())
    }
}

impl<T: FromSqlValue> FromSqlValue for Option<T> {
    fn from_sql_value(value: &SqlValue) -> Option<Self> {
        match value {
            SqlValue::Null => Some(None),
            other => T::from_sql_value(other).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_key_bytes_sort_like_the_integers() {
        let mut values = [-5i64, 3, -1, 0, i64::MAX, i64::MIN];
        let mut by_bytes = values.to_vec();
        by_bytes.sort_by_key(|v| SqlValue::Int(*v).key_bytes());
        values.sort();
        assert_eq!(by_bytes, values);
    }

    #[test]
    fn every_integer_width_gives_the_same_value() {
        assert_eq!(7i32.to_sql_value(), 7i64.to_sql_value());
        let seven = 7u32;
        let by_ref: &u32 = &seven;
        assert_eq!(ToSqlValue::to_sql_value(&by_ref), SqlValue::Int(7));
        assert!(SqlValue::Text("abc".into()).fits(&DataType::VarChar(3)));
        assert!(!SqlValue::Text("abcd".into()).fits(&DataType::VarChar(3)));
        assert!(!SqlValue::Int(1).fits(&DataType::VarChar(3)));
    }
}
