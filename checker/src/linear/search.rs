//! The WGL search (Wing & Gong, with Lowe's memoisation) over one partition of a history, as
//! a resumable machine with sound pruning rules.
//!
//! Operations are laid out as a doubly linked list of call and return entries in real-time
//! order. The search repeatedly linearizes the first call entry whose operation is legal in
//! the current state, lifting its call and return out of the list; when it meets a return
//! entry whose operation was not linearized, that operation cannot be placed, so it backtracks.
//! Lowe's memoisation skips any configuration (set of linearized operations, model state)
//! that was reached before: a configuration met again was fully explored and failed, since
//! the linearized set only grows along a path.
//!
//! Semantics (DESIGN.md): intervals are closed; an operation of unknown outcome (`info`, or
//! pending at the end) has no return entry, so it may be linearized at any point after its
//! call, or never. The search succeeds once every operation that completed `ok` is placed.
//!
//! # Pruning rules
//!
//! Each rule removes work without changing the verdict. "Callable" means that the operation's
//! call entry comes before the first return entry left in the list: every operation that
//! returned before it was called is already linearized.
//!
//! 1. **Unobserved operations of unknown outcome are never linearized.** An `info` write
//!    whose value no read returns and no compare-and-set expects may be linearized "never"
//!    ([`ModelInstance::unobserved`]): in any linearization that places it, the state it sets
//!    is replaced before anything looks at it, so dropping it leaves every other operation
//!    legal where it was. Each model argues its own case.
//! 2. **Read-only operations are linearized eagerly.** When a callable operation whose
//!    [`Effect`] is `ReadOnly` is legal in the current state, the search linearizes it there
//!    and tries nothing else in that configuration. Exchange argument: take any linearization
//!    from here that places the read later. Move the read to the front. It was legal in the
//!    current state, and it changes no state, so every other operation sees the same states
//!    as before; real time still holds, because the read is callable now, and everything that
//!    had to follow it still does. So if any linearization exists, one that starts with the
//!    read does, and it has the same length.
//! 3. **Doomed states are abandoned.** Let `g` be a read-only `ok` operation left in the list.
//!    Everything linearized before `g` must be called before `g` returns, so the operations
//!    that can come between the current state and `g` are `Update`s and the remaining
//!    `Reset`s (a write or put, which sets its object whatever it held) called before `g`
//!    returned. If the model says that no sequence of updates takes the current state to one
//!    where `g` is legal ([`ModelInstance::doomed`]; for a kv string: the string is not a
//!    prefix of what `g` read), and that none of those resets leaves a state from which
//!    updates could ([`ModelInstance::may_rescue`]; for kv: no such put wrote a prefix of what
//!    `g` read), then no linearization exists from here.
//! 4. **Wasted updates are absorbed.** When an operation's object holds garbage (a value no
//!    operation of the partition can observe, [`ModelInstance::garbage`]), and a callable
//!    operation is unobserved (its own effect is never observed either: a write of a value
//!    no read returns, an append of a piece no get read), the search linearizes it there and
//!    tries nothing else. Exchange argument: take a linearization from here that places it
//!    later, at `q`. Moved to the front, it turns garbage into garbage, which the state treats
//!    as the same value, so everything up to `q` sees the same states. From `q` on, its
//!    object held garbage until the next reset in the original order (its effect was
//!    unobserved, so nothing but resets and updates, which are legal in any state, came
//!    there), and now holds what it held before `q`; resets and updates stay legal, so the
//!    order is still a linearization.
//!
//! Each rule has a property test against a brute-force oracle (`checker/tests/`) that fails
//! when the rule is broken on purpose ([`Sabotage`]).
//!
//! # Resumable
//!
//! [`Search::run`] takes a step budget and returns [`Progress::Paused`] when it is spent, so
//! that a scheduler can advance many partitions in rounds and stop as soon as one of them is
//! invalid. The search is deterministic: after the same number of steps it is in the same
//! configuration, whatever else runs beside it.

use crate::models::{mix64, Effect, ModelInstance};
use hashbrown::{hash_table::Entry as TableEntry, DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

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

/// A pruning rule broken on purpose, so that tests can show the oracle catches it. Never set
/// outside tests.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// Rule 1 drops every operation of unknown outcome, observed or not.
    DropObservedUnknown,
    /// Rule 2 takes any callable legal operation eagerly, not only read-only ones.
    EagerAnyOperation,
    /// Rule 3 ignores resets: it judges observers that a write could still precede.
    DoomIgnoringResets,
    /// Rule 4 absorbs wasted updates whatever their object holds, garbage or not.
    AbsorbAnywhere,
}

/// Switches for the pruning rules (all on by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pruning {
    /// Rule 1: unobserved operations of unknown outcome are dropped.
    pub unobserved: bool,
    /// Rule 2: read-only operations are linearized eagerly.
    pub eager_reads: bool,
    /// Rule 3: doomed states are abandoned.
    pub doomed_states: bool,
    /// Rule 4: wasted updates are absorbed eagerly into garbage.
    pub absorb_wasted: bool,
    /// A rule broken on purpose (tests only).
    #[doc(hidden)]
    pub sabotage: Option<Sabotage>,
}

impl Default for Pruning {
    fn default() -> Self {
        Pruning {
            unobserved: true,
            eager_reads: true,
            doomed_states: true,
            absorb_wasted: true,
            sabotage: None,
        }
    }
}

impl Pruning {
    /// Plain WGL with memoisation: every rule off.
    pub fn none() -> Self {
        Pruning {
            unobserved: false,
            eager_reads: false,
            doomed_states: false,
            absorb_wasted: false,
            sabotage: None,
        }
    }
}

/// What one call of [`Search::run`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The search ended with this outcome.
    Done(SearchOutcome),
    /// The step budget was spent; call `run` again to go on.
    Paused,
    /// The next allocation would exceed the memory allowance; call `run` again with a larger
    /// allowance to go on, or give up.
    OutOfMemory,
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
/// How many remaining read-only operations rule 3 judges when a state changes.
const DOOM_HORIZON: usize = 64;

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
    fn new<Op>(ops: &[PartitionOp<Op>], keep: &[bool]) -> EntryList {
        let mut items: Vec<(u64, bool, u32)> = Vec::with_capacity(ops.len() * 2);
        for (index, op) in ops.iter().enumerate().filter(|&(index, _)| keep[index]) {
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

    fn first(&self) -> u32 {
        self.entries[HEAD as usize].next
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
    /// Heap bytes held by the memoised states beyond their inline size.
    state_heap_bytes: u64,
}

impl<State: Eq + Clone> MemoTable<State> {
    fn contains(&self, hash: u64, bits: &[u64], state: &State) -> bool {
        let words = self.words;
        self.table
            .find(hash, |memo| {
                memo.hash == hash
                    && memo.state == *state
                    && self.arena[memo.bits_at..memo.bits_at + words] == *bits
            })
            .is_some()
    }

    /// Inserts the configuration; false when it was already there.
    fn insert(&mut self, hash: u64, bits: &[u64], state: &State, state_heap_bytes: u64) -> bool {
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
                self.state_heap_bytes += state_heap_bytes;
                true
            }
        }
    }

    fn table_bytes(capacity: usize) -> u64 {
        // hashbrown keeps one control byte per bucket beside each slot, and the bucket count
        // is the next power of two of capacity * 8 / 7.
        let buckets = (capacity.max(1) * 8 / 7).next_power_of_two();
        (buckets * (std::mem::size_of::<Memo<State>>() + 1)) as u64
    }

    fn bytes(&self) -> u64 {
        Self::table_bytes(self.table.capacity())
            + self.arena.capacity() as u64 * 8
            + self.state_heap_bytes
    }

    /// The bytes the table would hold at its peak if one more insert grew it: while a
    /// container grows, the old and the new allocation are both alive.
    fn bytes_if_grown(&self) -> u64 {
        let mut peak = self.bytes();
        if self.table.len() == self.table.capacity() {
            let grown = (self.table.capacity() * 2).max(4);
            peak += Self::table_bytes(grown);
        }
        if self.arena.len() + self.words > self.arena.capacity() {
            let grown = (self.arena.capacity() * 2).max(self.arena.len() + self.words);
            peak += grown as u64 * 8;
        }
        peak
    }
}

/// Where the search stands between two steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cursor {
    /// A configuration was just entered; `changed` says whether its state differs from its
    /// parent's (so that rule 3 has something new to judge).
    Enter { changed: bool },
    /// Iterating the configuration's list at this entry.
    At(u32),
    /// The current configuration failed: undo the step that made it.
    Backtrack,
}

/// One step on the current path: the call entry linearized and the state before it.
struct Frame<State> {
    call: u32,
    previous: State,
    /// Taken by rule 2, so the configuration before it has no other branch to try.
    forced: bool,
}

/// A search over one partition, resumable between calls of [`Search::run`].
pub struct Search<I: ModelInstance> {
    ops: Vec<PartitionOp<I::Op>>,
    /// Per operation: the model says nothing could observe its effect (rules 1 and 4).
    unobserved: Vec<bool>,
    effects: Vec<Effect>,
    objects: Vec<u32>,
    pruning: Pruning,
    list: EntryList,
    bits: Vec<u64>,
    bits_hash: u64,
    zobrist: Vec<u64>,
    hasher: DefaultHashBuilder,
    memo: MemoTable<I::State>,
    state: I::State,
    stack: Vec<Frame<I::State>>,
    remaining_ok: usize,
    best: Option<(Vec<u32>, I::State, u32)>,
    steps: u64,
    cursor: Cursor,
    outcome: Option<SearchOutcome>,
    /// Scratch for rule 3: the remaining resets met so far in the walk.
    resets_seen: Vec<u32>,
    /// Operations dropped by rule 1.
    pub dropped: usize,
}

impl<I: ModelInstance> std::fmt::Debug for Search<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Search")
            .field("ops", &self.ops.len())
            .field("steps", &self.steps)
            .field("states", &self.memo.table.len())
            .field("outcome", &self.outcome)
            .finish()
    }
}

impl<I: ModelInstance> Search<I> {
    /// Prepares a search of `ops` from the model's initial state.
    pub fn new(instance: &mut I, ops: Vec<PartitionOp<I::Op>>, pruning: Pruning) -> Self {
        instance.prepare(&ops);
        let unobserved: Vec<bool> = ops.iter().map(|op| instance.unobserved(&op.op)).collect();
        let keep: Vec<bool> = ops
            .iter()
            .zip(&unobserved)
            .map(|(op, &unobserved)| {
                let drop = match pruning.sabotage {
                    Some(Sabotage::DropObservedUnknown) => op.ret.is_none(),
                    _ => op.ret.is_none() && unobserved,
                };
                !(pruning.unobserved && drop)
            })
            .collect();
        let dropped = keep.iter().filter(|&&kept| !kept).count();
        let list = EntryList::new(&ops, &keep);
        let words = ops.len().div_ceil(64).max(1);
        let effects: Vec<Effect> = ops.iter().map(|op| instance.effect(&op.op)).collect();
        let objects: Vec<u32> = ops.iter().map(|op| instance.object(&op.op)).collect();
        let remaining_ok = ops
            .iter()
            .zip(&keep)
            .filter(|(op, &kept)| kept && op.ret.is_some())
            .count();
        let zobrist = (0..ops.len() as u64).map(mix64).collect();
        Search {
            ops,
            unobserved,
            effects,
            objects,
            pruning,
            list,
            bits: vec![0u64; words],
            bits_hash: 0,
            // Zobrist hashing: the hash of a set of operations is the XOR of their keys, so it
            // is updated in O(1) when one operation is linearized or undone.
            zobrist,
            hasher: DefaultHashBuilder::default(),
            memo: MemoTable {
                table: HashTable::new(),
                arena: Vec::new(),
                words,
                state_heap_bytes: 0,
            },
            state: instance.init(),
            stack: Vec::new(),
            remaining_ok,
            best: None,
            steps: 0,
            cursor: Cursor::Enter { changed: true },
            outcome: None,
            resets_seen: Vec::new(),
            dropped,
        }
    }

    /// The partition's operations, as given.
    pub fn ops(&self) -> &[PartitionOp<I::Op>] {
        &self.ops
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Configurations memoised so far.
    pub fn states_memoised(&self) -> u64 {
        self.memo.table.len() as u64
    }

    /// Bytes this search holds: the memo table, the current path and the fixed tables. The
    /// model instance's own bytes are the caller's to add.
    pub fn footprint_bytes(&self) -> u64 {
        let fixed = self.ops.capacity() * std::mem::size_of::<PartitionOp<I::Op>>()
            + self.unobserved.capacity()
            + self.list.entries.capacity() * std::mem::size_of::<Entry>()
            + self.zobrist.capacity() * 8
            + self.bits.capacity() * 8
            + self.effects.capacity()
            + self.objects.capacity() * 4;
        let path = self.stack.capacity() * std::mem::size_of::<Frame<I::State>>();
        self.memo.bytes() + (fixed + path) as u64
    }

    /// Advances the search by at most `max_steps` steps. Before the memo table would grow past
    /// `memory_allowance` bytes of footprint it stops with [`Progress::OutOfMemory`].
    pub fn run(&mut self, instance: &mut I, max_steps: u64, memory_allowance: u64) -> Progress {
        if let Some(outcome) = self.outcome {
            return Progress::Done(outcome);
        }
        let stop_at = self.steps.saturating_add(max_steps);
        while self.steps < stop_at {
            self.steps += 1;
            let progress = match self.cursor {
                Cursor::Enter { changed } => self.enter(instance, changed, memory_allowance),
                Cursor::At(entry) => self.at(instance, entry, memory_allowance),
                Cursor::Backtrack => self.backtrack(),
            };
            match progress {
                None => {}
                Some(Progress::Done(outcome)) => {
                    self.outcome = Some(outcome);
                    return Progress::Done(outcome);
                }
                Some(other) => return other,
            }
        }
        Progress::Paused
    }

    /// Entering a configuration: success, rule 3, then rule 2, then the ordinary iteration.
    fn enter(&mut self, instance: &mut I, changed: bool, allowance: u64) -> Option<Progress> {
        if self.remaining_ok == 0 {
            return Some(Progress::Done(SearchOutcome::Linearizable));
        }
        if changed && self.pruning.doomed_states {
            if let Some(observer) = self.doomed_observer(instance) {
                self.record_best(observer);
                self.cursor = Cursor::Backtrack;
                return None;
            }
        }
        if self.pruning.eager_reads {
            let mut entry = self.list.first();
            loop {
                let current = self.list.entries[entry as usize];
                if !current.is_call {
                    break;
                }
                let op = current.op as usize;
                let eager = match self.pruning.sabotage {
                    Some(Sabotage::EagerAnyOperation) => true,
                    Some(Sabotage::AbsorbAnywhere) if self.unobserved[op] => true,
                    _ => {
                        self.effects[op] == Effect::ReadOnly
                            || (self.pruning.absorb_wasted
                                && self.unobserved[op]
                                && instance.garbage(&self.state, &self.ops[op].op))
                    }
                };
                if eager {
                    if let Some(next) = instance.step(&self.state, &self.ops[op].op) {
                        return self.try_push(instance, entry, next, true, allowance);
                    }
                }
                entry = current.next;
            }
        }
        self.cursor = Cursor::At(self.list.first());
        None
    }

    /// Rule 3: a remaining read-only `ok` operation that the current state can no longer
    /// satisfy, whether through updates alone or after one of the remaining resets that may
    /// precede it. The walk looks at the first `DOOM_HORIZON` such operations only: skipping
    /// a check is always safe.
    fn doomed_observer(&mut self, instance: &mut I) -> Option<u32> {
        let ignore_resets = self.pruning.sabotage == Some(Sabotage::DoomIgnoringResets);
        self.resets_seen.clear();
        let mut examined = 0;
        let mut entry = self.list.first();
        while entry != TAIL && examined < DOOM_HORIZON {
            let current = self.list.entries[entry as usize];
            let op = current.op as usize;
            match (current.is_call, self.effects[op]) {
                (true, Effect::Reset) if !ignore_resets => self.resets_seen.push(current.op),
                (false, Effect::ReadOnly) => {
                    examined += 1;
                    let observer = &self.ops[op].op;
                    if instance.doomed(&self.state, observer) {
                        let object = self.objects[op];
                        let rescued = self.resets_seen.iter().any(|&reset| {
                            self.objects[reset as usize] == object
                                && instance.may_rescue(&self.ops[reset as usize].op, observer)
                        });
                        if !rescued {
                            return Some(current.op);
                        }
                    }
                }
                _ => {}
            }
            entry = current.next;
        }
        None
    }

    /// The ordinary WGL step at one entry of the current configuration's list.
    fn at(&mut self, instance: &mut I, entry: u32, allowance: u64) -> Option<Progress> {
        assert!(
            entry != TAIL,
            "the list ended while ok operations remained to place"
        );
        let current = self.list.entries[entry as usize];
        if !current.is_call {
            // A return entry: its operation had to be linearized by now, and was not.
            self.record_best(current.op);
            self.cursor = Cursor::Backtrack;
            return None;
        }
        let op = current.op as usize;
        match instance.step(&self.state, &self.ops[op].op) {
            Some(next) => self.try_push(instance, entry, next, false, allowance),
            None => {
                self.cursor = Cursor::At(current.next);
                None
            }
        }
    }

    /// Linearizes the operation at `entry`, reaching `next`, unless that configuration was
    /// explored before.
    fn try_push(
        &mut self,
        instance: &mut I,
        entry: u32,
        next: I::State,
        forced: bool,
        allowance: u64,
    ) -> Option<Progress> {
        let current = self.list.entries[entry as usize];
        let op = current.op as usize;
        self.bits[op / 64] ^= 1 << (op % 64);
        self.bits_hash ^= self.zobrist[op];
        let hash = self.bits_hash ^ self.hasher.hash_one(&next).rotate_left(17);
        let seen = self.memo.contains(hash, &self.bits, &next);
        if !seen && self.memo.bytes_if_grown() + self.fixed_and_path_bytes() > allowance {
            self.bits[op / 64] ^= 1 << (op % 64);
            self.bits_hash ^= self.zobrist[op];
            // Nothing changed: the same step is tried again when the search resumes.
            self.steps -= 1;
            return Some(Progress::OutOfMemory);
        }
        if seen {
            self.bits[op / 64] ^= 1 << (op % 64);
            self.bits_hash ^= self.zobrist[op];
            self.cursor = if forced {
                // The only branch of this configuration was explored before and failed.
                Cursor::Backtrack
            } else {
                Cursor::At(current.next)
            };
            return None;
        }
        let extra = instance.state_heap_bytes(&next);
        self.memo.insert(hash, &self.bits, &next, extra);
        let changed = next != self.state;
        let previous = std::mem::replace(&mut self.state, next);
        self.stack.push(Frame {
            call: entry,
            previous,
            forced,
        });
        self.list.lift(entry);
        if current.partner != NONE {
            self.remaining_ok -= 1;
        }
        self.cursor = Cursor::Enter { changed };
        None
    }

    fn fixed_and_path_bytes(&self) -> u64 {
        self.footprint_bytes() - self.memo.bytes()
    }

    /// The current configuration failed: undo the step that made it.
    fn backtrack(&mut self) -> Option<Progress> {
        let Some(frame) = self.stack.pop() else {
            return Some(Progress::Done(SearchOutcome::NotLinearizable));
        };
        self.state = frame.previous;
        let undone = self.list.entries[frame.call as usize];
        let op = undone.op as usize;
        self.bits[op / 64] ^= 1 << (op % 64);
        self.bits_hash ^= self.zobrist[op];
        self.list.unlift(frame.call);
        if undone.partner != NONE {
            self.remaining_ok += 1;
        }
        self.cursor = if frame.forced {
            // Rule 2 left the parent no other branch: it failed too.
            Cursor::Backtrack
        } else {
            Cursor::At(undone.next)
        };
        None
    }

    /// Keeps the longest prefix seen before a failure, with the operation that failed it.
    fn record_best(&mut self, stuck: u32) {
        if self
            .best
            .as_ref()
            .is_none_or(|(prefix, _, _)| self.stack.len() > prefix.len())
        {
            let prefix = self.path();
            self.best = Some((prefix, self.state.clone(), stuck));
        }
    }

    fn path(&self) -> Vec<u32> {
        self.stack
            .iter()
            .map(|frame| self.list.entries[frame.call as usize].op)
            .collect()
    }

    /// Ends the search: its outcome (`Unknown(reason)` when it did not finish) and witness,
    /// and the operations it was given back.
    pub fn finish(self, instance: &mut I, unfinished: UnknownReason) -> Finished<I> {
        let outcome = self.outcome.unwrap_or(SearchOutcome::Unknown(unfinished));
        let states_memoised = self.memo.table.len() as u64;
        let steps = self.steps;
        if outcome == SearchOutcome::Linearizable {
            let result = SearchResult {
                outcome,
                linearization: self.path(),
                state: self.state,
                stuck: None,
                states_memoised,
                steps,
            };
            return Finished {
                result,
                ops: self.ops,
            };
        }
        let (linearization, state, stuck) = match self.best {
            Some((prefix, state, stuck)) => (prefix, state, Some(stuck)),
            None => (Vec::new(), instance.init(), None),
        };
        let result = SearchResult {
            outcome,
            linearization,
            state,
            stuck: stuck.filter(|_| outcome == SearchOutcome::NotLinearizable),
            states_memoised,
            steps,
        };
        Finished {
            result,
            ops: self.ops,
        }
    }
}

/// A search that ended: its result, and the operations it was given back.
pub struct Finished<I: ModelInstance> {
    /// The outcome and the witness.
    pub result: SearchResult<I::State>,
    /// The partition's operations.
    pub ops: Vec<PartitionOp<I::Op>>,
}

impl<I: ModelInstance> std::fmt::Debug for Finished<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finished")
            .field("outcome", &self.result.outcome)
            .field("ops", &self.ops.len())
            .finish()
    }
}

/// The longest prefix that a search without rule 3 finds within `max_steps` steps, with the
/// model state after it and the operation that no continuation of it can place.
///
/// Rule 3 decides early, from a lookahead, so the prefix it leaves behind is short; this
/// longer one reads better in a witness. Every failure recorded is of a configuration that
/// was explored completely, so the statement holds even when the budget runs out.
pub fn longest_failure<I: ModelInstance>(
    instance: &mut I,
    ops: &[PartitionOp<I::Op>],
    pruning: Pruning,
    max_steps: u64,
) -> Option<(Vec<u32>, I::State, u32)> {
    let pruning = Pruning {
        doomed_states: false,
        ..pruning
    };
    let mut search = Search::new(instance, ops.to_vec(), pruning);
    search.run(instance, max_steps, u64::MAX);
    search.best
}

/// Runs a whole search with no budget but `max_steps` (for tests and single partitions).
pub fn search<I: ModelInstance>(
    instance: &mut I,
    ops: &[PartitionOp<I::Op>],
    pruning: Pruning,
    max_steps: u64,
) -> SearchResult<I::State> {
    let mut search = Search::new(instance, ops.to_vec(), pruning);
    search.run(instance, max_steps, u64::MAX);
    search.finish(instance, UnknownReason::StateBudget).result
}
