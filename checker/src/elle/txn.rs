//! Transactions in compact form: micro-ops with interned keys and values, in flat arenas.
//!
//! An `ok` transaction is read from its completion (which carries what its reads returned);
//! any other from its invocation, whose reads are unknown. Keys and values are interned as
//! dense `u32` ids, so that the inference passes work on integers only.

use super::TxnWorkload;
use crate::models::{ShapeError, ValueInterner};
use crate::ops::{Operation, Operations, Outcome};
use serde_json::Value;

/// How a transaction ended, as far as isolation is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Committed; its reads are known.
    Ok,
    /// Unknown outcome (`info`, or pending at the end): it may have committed.
    Info,
    /// Certainly aborted.
    Fail,
}

/// The kind of a micro-op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MopKind {
    /// `["append", k, v]`.
    Append,
    /// `["w", k, v]`.
    Write,
    /// `["r", k, v]`.
    Read,
}

/// A read whose value is unknown (the transaction did not complete `ok`).
pub(crate) const UNKNOWN_READ: u32 = u32::MAX;

/// One micro-op.
///
/// Invariant: for an append or a write, `value` is the interned element; for a list read,
/// `value..value + len` is the read's range in [`Txns::arena`]; for a register read, `value`
/// is the interned value (0 for nil) and `len` is 1. `len == UNKNOWN_READ` for a read whose
/// result is unknown.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mop {
    pub kind: MopKind,
    pub key: u32,
    pub value: u32,
    pub len: u32,
}

impl Mop {
    /// True for a read whose result is known.
    pub fn is_known_read(&self) -> bool {
        self.kind == MopKind::Read && self.len != UNKNOWN_READ
    }
}

/// One transaction. Invariant: `mops_start..mops_end` is a range of [`Txns::mops`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Txn {
    /// The `Operation` id.
    pub op: u32,
    pub status: Status,
    pub mops_start: u32,
    pub mops_end: u32,
}

/// Every transaction of a history, in invocation order.
#[derive(Debug)]
pub(crate) struct Txns {
    pub txns: Vec<Txn>,
    pub mops: Vec<Mop>,
    /// The elements of every list read, back to back.
    pub arena: Vec<u32>,
    pub keys: ValueInterner,
    pub values: ValueInterner,
}

impl Txns {
    /// Parses every `f: "txn"` operation of `history` for `workload`.
    pub fn parse(history: &Operations, workload: TxnWorkload) -> Result<Txns, ShapeError> {
        let mut txns = Txns {
            txns: Vec::new(),
            mops: Vec::new(),
            arena: Vec::new(),
            keys: ValueInterner::default(),
            values: ValueInterner::default(),
        };
        for op in history.ops.iter().filter(|op| op.f == "txn") {
            txns.push(op, workload)?;
        }
        if txns.mops.len() >= UNKNOWN_READ as usize || txns.arena.len() >= u32::MAX as usize {
            let op = history
                .ops
                .last()
                .expect("a history with txns has operations");
            return Err(ShapeError::new(
                op,
                false,
                "value",
                "more than 2^32 micro-ops or read elements: too large to check".to_string(),
            ));
        }
        Ok(txns)
    }

    /// The micro-ops of `txn`.
    pub fn mops_of(&self, txn: &Txn) -> &[Mop] {
        &self.mops[txn.mops_start as usize..txn.mops_end as usize]
    }

    /// The elements a list read returned.
    pub fn read_list(&self, mop: &Mop) -> &[u32] {
        debug_assert!(mop.is_known_read());
        &self.arena[mop.value as usize..(mop.value + mop.len) as usize]
    }

    fn push(&mut self, op: &Operation, workload: TxnWorkload) -> Result<(), ShapeError> {
        let status = match op.outcome {
            Outcome::Ok => Status::Ok,
            Outcome::Fail => Status::Fail,
            Outcome::Info | Outcome::Pending => Status::Info,
        };
        let on_completion = status == Status::Ok;
        let value = match (&op.output, on_completion) {
            (Some(output), true) => output,
            _ => &op.input,
        };
        let bad = |message: String| ShapeError::new(op, on_completion, "value", message);
        let Some(mops) = value.as_array() else {
            return Err(bad(format!(
                "a txn's value must be a list of micro-ops, found {}",
                brief(value)
            )));
        };
        let mops_start = self.mops.len() as u32;
        for (position, mop) in mops.iter().enumerate() {
            let parsed = self
                .parse_mop(mop, workload, on_completion)
                .map_err(|message| bad(format!("micro-op {position}: {message}")))?;
            self.mops.push(parsed);
        }
        self.txns.push(Txn {
            op: op.id as u32,
            status,
            mops_start,
            mops_end: self.mops.len() as u32,
        });
        Ok(())
    }

    fn parse_mop(
        &mut self,
        mop: &Value,
        workload: TxnWorkload,
        reads_known: bool,
    ) -> Result<Mop, String> {
        let parts = match mop.as_array() {
            Some(parts) if parts.len() == 3 => parts,
            _ => return Err(format!("expected [f, key, value], found {}", brief(mop))),
        };
        let f = parts[0].as_str().unwrap_or("");
        let kind = match (f, workload) {
            ("append", TxnWorkload::ListAppend) => MopKind::Append,
            ("w" | "write", TxnWorkload::RwRegister) => MopKind::Write,
            ("r" | "read", _) => MopKind::Read,
            _ => {
                let expected = match workload {
                    TxnWorkload::ListAppend => "append or r",
                    TxnWorkload::RwRegister => "w or r",
                };
                return Err(format!(
                    "unknown micro-op {} for a {} history (expected {expected})",
                    brief(&parts[0]),
                    workload.name()
                ));
            }
        };
        if !is_scalar(&parts[1]) || parts[1].is_null() {
            return Err(format!(
                "a key must be a scalar, found {}",
                brief(&parts[1])
            ));
        }
        let key = self.keys.intern(&parts[1]);
        let argument = &parts[2];
        match kind {
            MopKind::Append | MopKind::Write => {
                if !is_scalar(argument) || argument.is_null() {
                    return Err(format!(
                        "{f} needs a scalar, non-nil value, found {}",
                        brief(argument)
                    ));
                }
                let value = self.values.intern(argument);
                Ok(Mop {
                    kind,
                    key,
                    value,
                    len: 0,
                })
            }
            MopKind::Read if !reads_known => Ok(Mop {
                kind,
                key,
                value: 0,
                len: UNKNOWN_READ,
            }),
            MopKind::Read => self.parse_read(key, argument, workload),
        }
    }

    fn parse_read(&mut self, key: u32, read: &Value, workload: TxnWorkload) -> Result<Mop, String> {
        match workload {
            TxnWorkload::RwRegister => {
                if !is_scalar(read) {
                    return Err(format!(
                        "a register read returns a scalar, found {}",
                        brief(read)
                    ));
                }
                let value = self.values.intern(read);
                Ok(Mop {
                    kind: MopKind::Read,
                    key,
                    value,
                    len: 1,
                })
            }
            TxnWorkload::ListAppend => {
                let start = self.arena.len() as u32;
                // A read of nil is a read of the empty list, as Jepsen's clients return it.
                let elements: &[Value] = match read {
                    Value::Null => &[],
                    Value::Array(elements) => elements,
                    other => {
                        return Err(format!(
                            "a list read returns a list or nil, found {}",
                            brief(other)
                        ))
                    }
                };
                for element in elements {
                    if !is_scalar(element) || element.is_null() {
                        return Err(format!(
                            "a list read holds scalars, found {}",
                            brief(element)
                        ));
                    }
                    let id = self.values.intern(element);
                    self.arena.push(id);
                }
                Ok(Mop {
                    kind: MopKind::Read,
                    key,
                    value: start,
                    len: self.arena.len() as u32 - start,
                })
            }
        }
    }
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Array(_) | Value::Object(_))
}

/// A value for an error message, cut short.
fn brief(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("{cut}...")
    } else {
        text
    }
}
