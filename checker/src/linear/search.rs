//! The WGL search (Wing & Gong, with Lowe's memoisation) over one partition of a history.
//!
//! Operations are laid out as a doubly linked list of call and return entries in real-time
//! order. The search repeatedly linearizes the first call entry whose operation is legal in
//! the current state, lifting its call and return out of the list; when it meets a return
//! entry whose operation was not linearized, that operation cannot be placed, so it backtracks.
//! Lowe's memoisation skips any configuration (set of linearized operations, model state)
//! that was reached before, which turns the exponential search into a practical one.
//!
//! Semantics (DESIGN.md): intervals are closed; an operation of unknown outcome (`info`, or
//! pending at the end) has no return entry, so it may be linearized at any point after its
//! call, or never. The search succeeds once every operation that completed `ok` is placed.

use crate::models::{mix64, ModelInstance};
use hashbrown::{hash_table::Entry as TableEntry, DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// One operation of a partition, encoded for the model, with its real-time interval.
#[derive(Clone, Debug)]
pub struct PartitionOp<Op> {
    /// The encoded operation.
    pub op: Op,
    /// The position of its invocation in the history (real-time order).
    pub call: u64,
    /// The position of its `ok` completion; `None` for an unknown outcome (return at infinity).
    pub ret: Option<u64>,
}

/// The limits of one search. Hitting any of them gives [`SearchOutcome::Unknown`].
#[derive(Debug)]
pub struct Budget<'a> {
    /// Give up after this instant.
    pub deadline: Option<Instant>,
    /// Give up after memoising this many configurations in this partition.
    pub max_states: u64,
    /// Give up when the memo tables of all partitions together hold more bytes than this.
    pub max_memory_bytes: u64,
    /// The bytes held by the memo tables of every running partition.
    pub memory_in_use: &'a AtomicU64,
    /// Set by another partition that has already proven the history invalid.
    pub cancel: &'a AtomicBool,
}

/// Why a search stopped without a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownReason {
    /// The deadline passed.
    Timeout,
    /// The state budget ran out.
    StateBudget,
    /// The memory cap was reached.
    MemoryCap,
    /// Another partition was found invalid first, so this one was not finished.
    Cancelled,
}

impl UnknownReason {
    /// The reason in words, naming the option that sets the budget.
    pub fn describe(self) -> &'static str {
        match self {
            UnknownReason::Timeout => "the time budget (--timeout) ran out",
            UnknownReason::StateBudget => "the state budget (--max-states) ran out",
            UnknownReason::MemoryCap => "the memory cap (--max-memory) was reached",
            UnknownReason::Cancelled => {
                "another partition was found invalid first, so this one was not finished"
            }
        }
    }
}

/// How a search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchOutcome {
    /// A linearization exists.
    Linearizable,
    /// No linearization exists.
    NotLinearizable,
    /// A budget ran out first.
    Unknown(UnknownReason),
}

/// The result of one search, with its witness.
#[derive(Debug)]
pub struct SearchResult<State> {
    /// The verdict.
    pub outcome: SearchOutcome,
    /// For a linearizable partition, the linearization; otherwise the longest linearizable
    /// prefix that was found. Indices into the partition's operations.
    pub linearization: Vec<u32>,
    /// The model state after `linearization`.
    pub state: State,
    /// For a non-linearizable partition, the operation that could not be placed after the
    /// longest prefix: its return came before any legal placement.
    pub stuck: Option<u32>,
    /// How many configurations were memoised.
    pub states_memoised: u64,
    /// How many steps the search took.
    pub steps: u64,
}

const HEAD: u32 = 0;
const TAIL: u32 = 1;
const NONE: u32 = u32::MAX;
/// How many steps pass between two looks at the clock and the budgets.
const CHECK_EVERY: u64 = 4096;

#[derive(Clone, Copy, Debug)]
struct Entry {
    op: u32,
    is_call: bool,
    /// For a call, its return entry (or NONE at infinity).
    partner: u32,
    prev: u32,
    next: u32,
}

/// The doubly linked list of call and return entries ("dancing links").
struct EntryList {
    entries: Vec<Entry>,
}

impl EntryList {
    fn new<Op>(ops: &[PartitionOp<Op>]) -> EntryList {
        let mut items: Vec<(u64, bool, u32)> = Vec::with_capacity(ops.len() * 2);
        for (index, op) in ops.iter().enumerate() {
            let index = u32::try_from(index).expect("fewer than 2^32 operations per partition");
            items.push((op.call, true, index));
            if let Some(ret) = op.ret {
                assert!(ret > op.call, "a completion precedes its invocation");
                items.push((ret, false, index));
            }
        }
        items.sort_unstable();
        let blank = Entry {
            op: NONE,
            is_call: false,
            partner: NONE,
            prev: NONE,
            next: NONE,
        };
        let mut entries = vec![blank; items.len() + 2];
        let mut call_entry = vec![NONE; ops.len()];
        let mut previous = HEAD;
        for (offset, &(_, is_call, op)) in items.iter().enumerate() {
            let at = u32::try_from(offset + 2).expect("entry count fits in u32");
            entries[at as usize] = Entry {
                op,
                is_call,
                partner: NONE,
                prev: previous,
                next: NONE,
            };
            entries[previous as usize].next = at;
            if is_call {
                call_entry[op as usize] = at;
            } else {
                let call = call_entry[op as usize];
                entries[call as usize].partner = at;
                entries[at as usize].partner = call;
            }
            previous = at;
        }
        entries[previous as usize].next = TAIL;
        entries[TAIL as usize].prev = previous;
        EntryList { entries }
    }

    fn lift(&mut self, call: u32) {
        let entry = self.entries[call as usize];
        self.entries[entry.prev as usize].next = entry.next;
        self.entries[entry.next as usize].prev = entry.prev;
        if entry.partner != NONE {
            let ret = self.entries[entry.partner as usize];
            self.entries[ret.prev as usize].next = ret.next;
            self.entries[ret.next as usize].prev = ret.prev;
        }
    }

    /// Undoes [`EntryList::lift`]; lifts must be undone in reverse order.
    fn unlift(&mut self, call: u32) {
        let entry = self.entries[call as usize];
        if entry.partner != NONE {
            let ret = self.entries[entry.partner as usize];
            self.entries[ret.prev as usize].next = entry.partner;
            self.entries[ret.next as usize].prev = entry.partner;
        }
        self.entries[entry.prev as usize].next = call;
        self.entries[entry.next as usize].prev = call;
    }
}

/// One memoised configuration: the set of linearized operations and the model state.
struct Memo<State> {
    hash: u64,
    /// Offset of the bitset in the arena.
    bits_at: usize,
    state: State,
}

/// Lowe's memo table: configurations already explored. Bitsets live in one arena.
struct MemoTable<State> {
    table: HashTable<Memo<State>>,
    arena: Vec<u64>,
    words: usize,
}

impl<State: Eq> MemoTable<State> {
    /// Inserts the configuration; false when it was already there.
    fn insert(&mut self, hash: u64, bits: &[u64], state: &State) -> bool
    where
        State: Clone,
    {
        let arena = &self.arena;
        let words = self.words;
        let found = self.table.entry(
            hash,
            |memo| {
                memo.hash == hash
                    && memo.state == *state
                    && arena[memo.bits_at..memo.bits_at + words] == *bits
            },
            |memo| memo.hash,
        );
        match found {
            TableEntry::Occupied(_) => false,
            TableEntry::Vacant(vacant) => {
                let bits_at = self.arena.len();
                self.arena.extend_from_slice(bits);
                vacant.insert(Memo {
                    hash,
                    bits_at,
                    state: state.clone(),
                });
                true
            }
        }
    }

    fn bytes(&self) -> u64 {
        let slots = self.table.capacity() * (std::mem::size_of::<Memo<State>>() + 1);
        (slots + self.arena.capacity() * 8) as u64
    }
}

/// Searches for a linearization of `ops` from the model's initial state.
pub fn search<I: ModelInstance>(
    instance: &mut I,
    ops: &[PartitionOp<I::Op>],
    budget: &Budget<'_>,
) -> SearchResult<I::State> {
    let mut list = EntryList::new(ops);
    let words = ops.len().div_ceil(64).max(1);
    let mut bits = vec![0u64; words];
    // Zobrist hashing: the hash of a set of operations is the XOR of their keys, so it is
    // updated in O(1) when one operation is linearized or undone.
    let zobrist: Vec<u64> = (0..ops.len() as u64).map(mix64).collect();
    let mut bits_hash = 0u64;
    let hasher = DefaultHashBuilder::default();
    let mut memo = MemoTable {
        table: HashTable::new(),
        arena: Vec::new(),
        words,
    };
    let mut state = instance.init();
    let mut stack: Vec<(u32, I::State)> = Vec::new();
    let mut remaining_ok = ops.iter().filter(|op| op.ret.is_some()).count();
    let mut best: Option<(Vec<u32>, I::State, u32)> = None;
    let mut steps = 0u64;
    let mut memory_reported = 0u64;
    let mut entry = list.entries[HEAD as usize].next;

    let outcome = loop {
        if remaining_ok == 0 {
            break SearchOutcome::Linearizable;
        }
        steps += 1;
        if steps.is_multiple_of(CHECK_EVERY) {
            let bytes = memo.bytes();
            let total = budget
                .memory_in_use
                .fetch_add(bytes - memory_reported, Ordering::Relaxed)
                + (bytes - memory_reported);
            memory_reported = bytes;
            if let Some(reason) = exhausted(budget, memo.table.len() as u64, total) {
                break SearchOutcome::Unknown(reason);
            }
        }
        assert!(
            entry != TAIL,
            "the list ended while ok operations remained to place"
        );
        let current = list.entries[entry as usize];
        if current.is_call {
            let op = current.op as usize;
            if let Some(next_state) = instance.step(&state, &ops[op].op) {
                bits[op / 64] |= 1 << (op % 64);
                bits_hash ^= zobrist[op];
                let hash = bits_hash ^ hasher.hash_one(&next_state).rotate_left(17);
                if memo.insert(hash, &bits, &next_state) {
                    stack.push((entry, std::mem::replace(&mut state, next_state)));
                    list.lift(entry);
                    if current.partner != NONE {
                        remaining_ok -= 1;
                    }
                    entry = list.entries[HEAD as usize].next;
                    continue;
                }
                bits[op / 64] &= !(1 << (op % 64));
                bits_hash ^= zobrist[op];
            }
            entry = current.next;
        } else {
            // A return entry: its operation had to be linearized by now, and was not.
            if best
                .as_ref()
                .is_none_or(|(prefix, _, _)| stack.len() > prefix.len())
            {
                let prefix = stack
                    .iter()
                    .map(|&(call, _)| list.entries[call as usize].op)
                    .collect();
                best = Some((prefix, state.clone(), current.op));
            }
            let Some((call, previous_state)) = stack.pop() else {
                break SearchOutcome::NotLinearizable;
            };
            state = previous_state;
            let undone = list.entries[call as usize];
            let op = undone.op as usize;
            bits[op / 64] &= !(1 << (op % 64));
            bits_hash ^= zobrist[op];
            list.unlift(call);
            if undone.partner != NONE {
                remaining_ok += 1;
            }
            entry = undone.next;
        }
    };
    budget
        .memory_in_use
        .fetch_sub(memory_reported, Ordering::Relaxed);
    let states_memoised = memo.table.len() as u64;
    match outcome {
        SearchOutcome::Linearizable => SearchResult {
            outcome,
            linearization: stack
                .iter()
                .map(|&(call, _)| list.entries[call as usize].op)
                .collect(),
            state,
            stuck: None,
            states_memoised,
            steps,
        },
        _ => {
            let (linearization, state, stuck) = match best {
                Some((prefix, state, stuck)) => (prefix, state, Some(stuck)),
                None => (Vec::new(), instance.init(), None),
            };
            let stuck = if outcome == SearchOutcome::NotLinearizable {
                stuck
            } else {
                None
            };
            SearchResult {
                outcome,
                linearization,
                state,
                stuck,
                states_memoised,
                steps,
            }
        }
    }
}

fn exhausted(budget: &Budget<'_>, states: u64, memory: u64) -> Option<UnknownReason> {
    if budget.cancel.load(Ordering::Relaxed) {
        Some(UnknownReason::Cancelled)
    } else if budget
        .deadline
        .is_some_and(|deadline| Instant::now() >= deadline)
    {
        Some(UnknownReason::Timeout)
    } else if states > budget.max_states {
        Some(UnknownReason::StateBudget)
    } else if memory > budget.max_memory_bytes {
        Some(UnknownReason::MemoryCap)
    } else {
        None
    }
}
