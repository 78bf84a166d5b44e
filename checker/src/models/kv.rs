//! Key-value model of Porcupine's kv tests: `get`, `put` and `append` on string values.
//!
//! A key's string is a node of a trie of pieces (the values put and appended), so that a
//! state is a few integers however long its strings grow, and the search's memory is bounded
//! by its configurations, not by the length of the strings. Each node carries the length and
//! a polynomial hash of its whole string; equal strings reached by different pieces are
//! different nodes, which only makes the memo table finer (never unsound), and every
//! equality that decides a verdict is confirmed character by character.
//!
//! **Garbage strings.** A key's string that is not a prefix of anything an `ok` get of that key
//! returned can never be read: appends only lengthen it, so no later string built on it is read
//! either, until a put replaces it. All such strings behave alike in every future (gets fail,
//! appends keep them garbage, a put replaces them), so the state compares them as equal: the
//! search then memoises one configuration where it had one per ordering of the appends that
//! a put will wipe out. The real string is kept beside, for witnesses.

use super::{
    show, show_key, Effect, Model, ModelInstance, PartitionKey, ShapeError, ValueInterner,
};
use crate::linear::search::PartitionOp;
use crate::ops::Operation;
use hashbrown::{HashMap, HashSet};
use smallvec::SmallVec;
use std::hash::{Hash, Hasher};

/// A map from keys to strings, initially empty strings.
///
/// With `split_by_key` (the default), each key is its own partition and the state is one
/// string. Without it the whole history is one partition and the state is a map of every
/// key, which is what Porcupine's unpartitioned benchmark checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvModel {
    /// Check each key separately (P-compositionality).
    pub split_by_key: bool,
}

impl Model for KvModel {
    type Instance = KvInstance;

    fn name(&self) -> String {
        if self.split_by_key {
            "kv".to_string()
        } else {
            "kv-single".to_string()
        }
    }

    fn partition(&self, op: &Operation) -> PartitionKey {
        if self.split_by_key {
            op.key.as_ref().map(show_key)
        } else {
            None
        }
    }

    fn instance(&self) -> KvInstance {
        let mut pieces = ValueInterner::default();
        let empty_piece = pieces.intern_str("");
        KvInstance {
            pieces,
            piece_info: Vec::new(),
            empty_piece,
            nodes: vec![Node {
                parent: ROOT,
                piece: empty_piece,
                len: 0,
                hash: 0,
            }],
            children: HashMap::new(),
            keys: HashMap::new(),
            key_names: Vec::new(),
            read_prefixes: HashSet::new(),
            unobserved_pieces: HashSet::new(),
        }
    }
}

/// The root of the trie: the empty string.
const ROOT: u32 = 0;
/// Set on a key's node in a state when its string is garbage (see the module doc).
const GARBAGE: u32 = 1 << 31;

/// The node as states compare it: every garbage string is the same.
fn canonical(node: u32) -> u32 {
    if node & GARBAGE != 0 {
        GARBAGE
    } else {
        node
    }
}
/// The base of the polynomial string hash (odd, so multiplication is invertible mod 2^64).
const BASE: u64 = 0x100_0000_01b3;

/// One node of the trie: its parent's string followed by one piece.
#[derive(Clone, Copy, Debug)]
struct Node {
    parent: u32,
    piece: u32,
    /// Bytes in the whole string.
    len: u32,
    /// The polynomial hash of the whole string.
    hash: u64,
}

/// What the model knows of one interned piece.
#[derive(Clone, Debug, Default)]
struct PieceInfo {
    /// The hash of the piece alone and `BASE^len`.
    hash: u64,
    power: u64,
    /// For a string some `get` returned: the hashes of its prefixes, `prefix[i]` of the
    /// first `i` bytes. Empty for pieces only put or appended.
    prefix: Vec<u64>,
}

/// One partition of a kv history.
#[derive(Debug)]
pub struct KvInstance {
    pieces: ValueInterner,
    piece_info: Vec<PieceInfo>,
    empty_piece: u32,
    /// Invariant: `nodes[n].len == nodes[parent].len + len(piece)`, and `hash` likewise.
    nodes: Vec<Node>,
    children: HashMap<(u32, u32), u32>,
    keys: HashMap<String, u16>,
    key_names: Vec<String>,
    /// `(key, length, hash)` of every prefix of every string an `ok` get returned.
    read_prefixes: HashSet<(u16, u32, u64)>,
    /// `(key, piece, is_put)` of every append and put whose effect no get observes.
    unobserved_pieces: HashSet<(u16, u32, bool)>,
}

/// A kv operation on key number `key`. Values are piece ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// A get that returned the string.
    Get {
        /// The key's number.
        key: u16,
        /// The string read.
        value: u32,
    },
    /// A put of the string.
    Put {
        /// The key's number.
        key: u16,
        /// The string written.
        value: u32,
    },
    /// An append of the string.
    Append {
        /// The key's number.
        key: u16,
        /// The suffix appended.
        value: u32,
    },
}

impl KvOp {
    fn key(&self) -> u16 {
        match *self {
            KvOp::Get { key, .. } | KvOp::Put { key, .. } | KvOp::Append { key, .. } => key,
        }
    }
}

/// The state: the trie node of every key's string, by key number, with a hash kept up to date.
///
/// The nodes sit inline for up to 16 keys, so a step copies a few cache lines and never
/// allocates, and the hash is updated in O(1) when one key changes (Zobrist hashing).
///
/// Invariant: `hash` is the XOR of `slot_hash(key, canonical(values[key]))` over every key
/// whose node is not the root; equality compares the canonical nodes.
#[derive(Debug)]
pub struct KvState {
    hash: u64,
    values: SmallVec<[u32; 16]>,
}

impl Clone for KvState {
    fn clone(&self) -> Self {
        // `from_slice` copies in one go; the derived clone extends element by element.
        KvState {
            hash: self.hash,
            values: SmallVec::from_slice(&self.values),
        }
    }
}

impl PartialEq for KvState {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && self.values.len() == other.values.len()
            && self
                .values
                .iter()
                .zip(&other.values)
                .all(|(&a, &b)| canonical(a) == canonical(b))
    }
}

impl Eq for KvState {}

impl Hash for KvState {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Equal states have equal hashes, so hashing the hash alone is consistent with Eq.
        state.write_u64(self.hash);
    }
}

fn reset_piece(op: &KvOp) -> u32 {
    match *op {
        KvOp::Get { value, .. } | KvOp::Put { value, .. } | KvOp::Append { value, .. } => value,
    }
}

/// The Zobrist key of one key holding one node.
fn slot_hash(key: u16, node: u32) -> u64 {
    super::mix64((u64::from(key) << 32) | u64::from(node))
}

fn string_hash(text: &str) -> u64 {
    text.bytes().fold(0u64, |hash, byte| {
        hash.wrapping_mul(BASE).wrapping_add(u64::from(byte) + 1)
    })
}

impl KvInstance {
    fn key(&mut self, op: &Operation) -> Result<u16, ShapeError> {
        let name = match &op.key {
            Some(key) => show_key(key),
            None => {
                return Err(ShapeError::new(
                    op,
                    false,
                    "key",
                    "kv operations need a key".into(),
                ))
            }
        };
        if let Some(&id) = self.keys.get(&name) {
            return Ok(id);
        }
        let id = u16::try_from(self.key_names.len()).map_err(|_| {
            ShapeError::new(
                op,
                false,
                "key",
                "more than 65536 keys in one partition".into(),
            )
        })?;
        self.keys.insert(name.clone(), id);
        self.key_names.push(name);
        Ok(id)
    }

    /// Interns a piece and, for a string a `get` of `key` returned, its prefix hashes.
    fn piece(&mut self, op: &Operation, key: u16, read: bool) -> Result<u32, ShapeError> {
        let value = if read {
            op.output.as_ref()
        } else {
            Some(&op.input)
        };
        let id = match value {
            Some(serde_json::Value::String(text)) => self.pieces.intern_str(text),
            Some(serde_json::Value::Null) => self.empty_piece,
            other => {
                return Err(ShapeError::new(
                    op,
                    read,
                    "value",
                    format!(
                        "kv values are strings, found {}",
                        other.map(show).unwrap_or_default()
                    ),
                ))
            }
        };
        while self.piece_info.len() <= id as usize {
            let text = self.pieces.text(self.piece_info.len() as u32);
            let power = (0..text.len()).fold(1u64, |power, _| power.wrapping_mul(BASE));
            self.piece_info.push(PieceInfo {
                hash: string_hash(text),
                power,
                prefix: Vec::new(),
            });
        }
        if read && self.piece_info[id as usize].prefix.is_empty() {
            let text = self.pieces.text(id);
            let mut prefix = Vec::with_capacity(text.len() + 1);
            let mut hash = 0u64;
            prefix.push(hash);
            for byte in text.bytes() {
                hash = hash.wrapping_mul(BASE).wrapping_add(u64::from(byte) + 1);
                prefix.push(hash);
            }
            self.piece_info[id as usize].prefix = prefix;
        }
        if read && op.output.is_some() {
            for (length, &hash) in self.piece_info[id as usize].prefix.iter().enumerate() {
                let length = u32::try_from(length).expect("kv strings shorter than 4 GiB");
                self.read_prefixes.insert((key, length, hash));
            }
        }
        Ok(id)
    }

    /// The node of `node`'s string followed by `piece`, marked as garbage when no get of
    /// `key` read a string that starts with it.
    fn child(&mut self, key: u16, node: u32, piece: u32) -> u32 {
        let child = self.untagged_child(node & !GARBAGE, piece);
        let Node { len, hash, .. } = self.nodes[child as usize];
        if node & GARBAGE != 0 || !self.read_prefixes.contains(&(key, len, hash)) {
            child | GARBAGE
        } else {
            child
        }
    }

    fn untagged_child(&mut self, node: u32, piece: u32) -> u32 {
        if piece == self.empty_piece {
            return node;
        }
        if let Some(&child) = self.children.get(&(node, piece)) {
            return child;
        }
        let parent = self.nodes[node as usize];
        let info = &self.piece_info[piece as usize];
        let child = u32::try_from(self.nodes.len())
            .ok()
            .filter(|&child| child < GARBAGE)
            .expect("fewer than 2^31 kv strings");
        let len = parent.len as usize + self.pieces.text(piece).len();
        self.nodes.push(Node {
            parent: node,
            piece,
            len: u32::try_from(len).expect("kv strings shorter than 4 GiB"),
            hash: parent.hash.wrapping_mul(info.power).wrapping_add(info.hash),
        });
        self.children.insert((node, piece), child);
        child
    }

    /// Whether `node`'s string equals the string of piece `read`, confirmed byte by byte.
    fn equals(&self, node: u32, read: u32) -> bool {
        if node & GARBAGE != 0 {
            return false;
        }
        let target = self.pieces.text(read).as_bytes();
        let info = &self.piece_info[read as usize];
        let whole = self.nodes[node as usize];
        if whole.len as usize != target.len() || whole.hash != info.hash {
            return false;
        }
        let mut end = target.len();
        let mut at = node;
        while at != ROOT {
            let current = self.nodes[at as usize];
            let piece = self.pieces.text(current.piece).as_bytes();
            if target[end - piece.len()..end] != *piece {
                return false;
            }
            end -= piece.len();
            at = current.parent;
        }
        end == 0
    }

    /// The string of a node.
    fn text(&self, node: u32) -> String {
        let mut pieces = Vec::new();
        let mut at = node & !GARBAGE;
        while at != ROOT {
            pieces.push(self.nodes[at as usize].piece);
            at = self.nodes[at as usize].parent;
        }
        pieces
            .iter()
            .rev()
            .map(|&piece| self.pieces.text(piece))
            .collect()
    }

    fn set(&self, state: &KvState, key: u16, node: u32) -> KvState {
        let mut next = state.clone();
        let old = canonical(next.values[key as usize]);
        if old != ROOT {
            next.hash ^= slot_hash(key, old);
        }
        if canonical(node) != ROOT {
            next.hash ^= slot_hash(key, canonical(node));
        }
        next.values[key as usize] = node;
        next
    }
}

impl ModelInstance for KvInstance {
    type State = KvState;
    type Op = KvOp;

    fn encode(&mut self, op: &Operation) -> Result<Option<KvOp>, ShapeError> {
        let key = self.key(op)?;
        match op.f.as_str() {
            "get" | "read" => match op.output {
                None => Ok(None),
                Some(_) => Ok(Some(KvOp::Get {
                    key,
                    value: self.piece(op, key, true)?,
                })),
            },
            "put" | "write" => Ok(Some(KvOp::Put {
                key,
                value: self.piece(op, key, false)?,
            })),
            "append" => Ok(Some(KvOp::Append {
                key,
                value: self.piece(op, key, false)?,
            })),
            other => Err(ShapeError::new(
                op,
                false,
                "f",
                format!("the kv model has no operation {other:?}; expected get|put|append"),
            )),
        }
    }

    fn init(&mut self) -> KvState {
        KvState {
            hash: 0,
            values: SmallVec::from_elem(ROOT, self.key_names.len()),
        }
    }

    fn step(&mut self, state: &KvState, op: &KvOp) -> Option<KvState> {
        match *op {
            KvOp::Get { key, value } => self
                .equals(state.values[key as usize], value)
                .then(|| state.clone()),
            KvOp::Put { key, value } => {
                let node = self.child(key, ROOT, value);
                Some(self.set(state, key, node))
            }
            KvOp::Append { key, value } => {
                let node = self.child(key, state.values[key as usize], value);
                Some(self.set(state, key, node))
            }
        }
    }

    fn describe_state(&self, state: &KvState) -> String {
        let pairs: Vec<String> = state
            .values
            .iter()
            .enumerate()
            .filter(|&(_, &node)| canonical(node) != ROOT)
            .map(|(key, &node)| format!("{}: {:?}", self.key_names[key], self.text(node)))
            .collect();
        format!("{{{}}}", pairs.join(", "))
    }

    fn effect(&self, op: &KvOp) -> Effect {
        match op {
            KvOp::Get { .. } => Effect::ReadOnly,
            KvOp::Put { .. } => Effect::Reset,
            KvOp::Append { .. } => Effect::Update,
        }
    }

    fn object(&self, op: &KvOp) -> u32 {
        u32::from(op.key())
    }

    /// Appends only lengthen a string, so a get is out of reach of every sequence of appends
    /// unless the current string is a prefix of what it read. A differing prefix hash proves
    /// the strings differ; an equal one (a collision at worst) keeps the state, which is safe.
    fn doomed(&mut self, state: &KvState, observer: &KvOp) -> bool {
        let KvOp::Get { key, value } = *observer else {
            return false;
        };
        let node = state.values[key as usize];
        if node & GARBAGE != 0 {
            return true;
        }
        let node = self.nodes[node as usize];
        let prefix = &self.piece_info[value as usize].prefix;
        match prefix.get(node.len as usize) {
            Some(&hash) => hash != node.hash,
            None => true,
        }
    }

    /// After a put, appends reach a get only if the put wrote a prefix of what it read.
    fn may_rescue(&mut self, reset: &KvOp, observer: &KvOp) -> bool {
        match (*reset, *observer) {
            (KvOp::Put { value: written, .. }, KvOp::Get { value: read, .. }) => {
                let written = &self.piece_info[written as usize];
                let length = self.pieces.text(reset_piece(reset)).len();
                self.piece_info[read as usize]
                    .prefix
                    .get(length)
                    .is_some_and(|&hash| hash == written.hash)
            }
            _ => true,
        }
    }

    fn prepare(&mut self, ops: &[PartitionOp<KvOp>]) {
        let mut reads: HashMap<u16, Vec<u32>> = HashMap::new();
        for op in ops {
            if let (KvOp::Get { key, value }, Some(_)) = (op.op, op.ret) {
                reads.entry(key).or_default().push(value);
            }
        }
        for values in reads.values_mut() {
            values.sort_unstable();
            values.dedup();
        }
        let none = Vec::new();
        for op in ops {
            let (key, piece, is_put) = match op.op {
                KvOp::Append { key, value } => (key, value, false),
                KvOp::Put { key, value } => (key, value, true),
                KvOp::Get { .. } => continue,
            };
            let text = self.pieces.text(piece);
            let seen = reads.get(&key).unwrap_or(&none).iter();
            let unobserved = if is_put {
                !text.is_empty()
                    && !seen
                        .map(|&r| self.pieces.text(r))
                        .any(|r| r.starts_with(text))
            } else {
                text.is_empty() || !seen.map(|&r| self.pieces.text(r)).any(|r| r.contains(text))
            };
            if unobserved {
                self.unobserved_pieces.insert((key, piece, is_put));
            }
        }
    }

    /// An append is unobserved when its piece is empty (it changes nothing) or no `ok` get of
    /// its key returned a string containing the piece: once appended, the piece stays in the
    /// string, appends only add after it, until a put; so a get placed in between would
    /// contain it, and none does. Only appends and puts can come before that put, and both
    /// are legal in any state. A put is unobserved when its string is not empty and no `ok`
    /// get of its key returned a string that starts with it, by the same argument. Rule 1:
    /// one of unknown outcome may be dropped. Rule 4: on garbage it changes nothing.
    fn unobserved(&self, op: &KvOp) -> bool {
        match *op {
            KvOp::Append { key, value } => self.unobserved_pieces.contains(&(key, value, false)),
            KvOp::Put { key, value } => self.unobserved_pieces.contains(&(key, value, true)),
            KvOp::Get { .. } => false,
        }
    }

    fn garbage(&self, state: &KvState, op: &KvOp) -> bool {
        state.values[op.key() as usize] & GARBAGE != 0
    }

    fn heap_bytes(&self) -> u64 {
        let prefixes: usize = self
            .piece_info
            .iter()
            .map(|info| info.prefix.capacity() * 8)
            .sum();
        let child_slot = std::mem::size_of::<((u32, u32), u32)>() + 1;
        self.pieces.bytes()
            + (self.piece_info.capacity() * std::mem::size_of::<PieceInfo>()
                + prefixes
                + self.nodes.capacity() * std::mem::size_of::<Node>()
                + self.children.capacity() * child_slot
                + self.read_prefixes.capacity() * (std::mem::size_of::<(u16, u32, u64)>() + 1)
                + self.unobserved_pieces.capacity() * 13) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(f: &str, input: serde_json::Value, output: Option<serde_json::Value>) -> Operation {
        Operation {
            id: 0,
            process: crate::history::Process::Client(0),
            f: f.to_string(),
            key: Some(json!("k")),
            input,
            output,
            outcome: crate::ops::Outcome::Ok,
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

    #[test]
    fn strings_built_from_different_pieces_read_the_same() {
        let mut kv = KvModel { split_by_key: true }.instance();
        let put_ab = kv.encode(&op("put", json!("ab"), None)).unwrap().unwrap();
        let append_a = kv.encode(&op("append", json!("a"), None)).unwrap().unwrap();
        let append_b = kv.encode(&op("append", json!("b"), None)).unwrap().unwrap();
        let get_ab = kv
            .encode(&op("get", json!(null), Some(json!("ab"))))
            .unwrap()
            .unwrap();
        let get_abb = kv
            .encode(&op("get", json!(null), Some(json!("abb"))))
            .unwrap()
            .unwrap();
        let empty = kv.init();
        let by_put = kv.step(&empty, &put_ab).unwrap();
        let by_a = kv.step(&empty, &append_a).unwrap();
        let by_appends = kv.step(&by_a, &append_b).unwrap();
        assert!(kv.step(&by_put, &get_ab).is_some());
        assert!(kv.step(&by_appends, &get_ab).is_some());
        assert!(kv.step(&by_a, &get_ab).is_none());
        assert!(kv.step(&by_appends, &get_abb).is_none());
        assert_eq!(kv.describe_state(&by_appends), "{k: \"ab\"}");
        // "a" is a prefix of "abb", "ab" too, "abb" + "b" is not.
        assert!(!kv.doomed(&by_a, &get_abb));
        assert!(!kv.doomed(&by_appends, &get_abb));
        let longer = kv.step(&by_put, &append_b).unwrap();
        let longest = kv.step(&longer, &append_b).unwrap();
        assert!(kv.doomed(&longest, &get_abb));
        let get_b = kv
            .encode(&op("get", json!(null), Some(json!("b"))))
            .unwrap()
            .unwrap();
        assert!(kv.doomed(&by_appends, &get_b));
        // A put of "a" rescues a get of "abb" from any state; a put of "b" does not.
        let put_a = kv.encode(&op("put", json!("a"), None)).unwrap().unwrap();
        let put_b = kv.encode(&op("put", json!("b"), None)).unwrap().unwrap();
        assert!(kv.may_rescue(&put_a, &get_abb));
        assert!(!kv.may_rescue(&put_b, &get_abb));
    }
}
