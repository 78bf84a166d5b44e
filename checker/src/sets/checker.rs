//! The set-full pass: one sweep over adds and reads in invocation order, O(1) per read element.

use super::{
    definitions, DuplicateReport, ElementReport, SetOptions, SetReport, UnexpectedReport,
    MAX_LISTED,
};
use crate::models::{show, show_key, ShapeError, ValueInterner};
use crate::ops::{Operation, Outcome};
use crate::timing::{ms, Quantiles, TimeBasis};
use crate::verdict::Verdict;
use std::collections::BTreeMap;

/// Checks sets one operation at a time, so that a history need not be held in memory.
///
/// Feed every add and read with [`SetChecker::observe`] in invocation order (ascending
/// `invoke_index`), then call [`SetChecker::finish`]. [`super::check`] does this for a whole
/// [`crate::ops::Operations`].
#[derive(Debug)]
pub struct SetChecker {
    options: SetOptions,
    sets: BTreeMap<Option<String>, SetState>,
    /// The `invoke_index` of the last operation observed, to refuse out-of-order input.
    last_invoke_index: Option<u64>,
    /// False once an add or read lacks a time, so latencies cannot be measured.
    all_timed: bool,
}

/// One key's set.
#[derive(Debug, Default)]
struct SetState {
    values: ValueInterner,
    /// Indexed by interned id; id 0 (null) is a slot like any other.
    elements: Vec<ElementState>,
    /// The `ok` reads, in invocation order; a read's position here is its `position`.
    reads: Vec<ReadPoint>,
}

#[derive(Clone, Copy, Debug)]
struct ReadPoint {
    op: usize,
    invoke_index: u64,
    invoke_time: Option<u64>,
}

/// What the sweep knows about one value of one set.
#[derive(Clone, Debug, Default)]
struct ElementState {
    /// The first add that did not fail.
    add_op: Option<usize>,
    /// Whether some add of it failed.
    failed_add: bool,
    /// The event index at which it became known. Invariant: only decreases.
    known_index: Option<u64>,
    known_time: Option<u64>,
    known_op: Option<usize>,
    /// The position of the latest read that returned it.
    last_seen: Option<usize>,
    /// The first read that returned it.
    first_seen_op: Option<usize>,
    /// The position of the latest counting read that missed it, found so far.
    /// Invariant: `last_absent < last_seen` whenever both are set and the sweep is between reads.
    last_absent: Option<usize>,
    /// Copies of it in the read at `last_seen`.
    copies_in_last_read: usize,
    max_multiplicity: usize,
    duplicate_read_op: Option<usize>,
    duplicate_reads: usize,
}

impl ElementState {
    fn learn_known(&mut self, index: u64, time: Option<u64>, op: usize) {
        if self.known_index.is_none_or(|known| index < known) {
            self.known_index = Some(index);
            self.known_time = time;
            self.known_op = Some(op);
        }
    }

    /// Whether a read invoked at `invoke_index` began after this element was known.
    fn known_before(&self, invoke_index: u64) -> bool {
        self.known_index.is_some_and(|known| invoke_index > known)
    }
}

impl SetChecker {
    /// A checker with no operations yet.
    pub fn new(options: SetOptions) -> SetChecker {
        SetChecker {
            options,
            sets: BTreeMap::new(),
            last_invoke_index: None,
            all_timed: true,
        }
    }

    /// Takes the next operation in invocation order. Operations other than adds (or inserts)
    /// and reads are ignored. A malformed add or read, or one out of order, is an error.
    pub fn observe(&mut self, op: &Operation) -> Result<(), ShapeError> {
        let add = super::is_add(&op.f);
        if !add && !super::is_read(&op.f) {
            return Ok(());
        }
        if let Some(last) = self.last_invoke_index {
            if op.invoke_index < last {
                return Err(ShapeError::new(
                    op,
                    false,
                    "index",
                    format!(
                        "operations must come in invocation order, but index {} follows {last}",
                        op.invoke_index
                    ),
                ));
            }
        }
        self.last_invoke_index = Some(op.invoke_index);
        let timed =
            op.invoke_time.is_some() && (op.complete_index.is_none() || op.complete_time.is_some());
        self.all_timed &= timed;
        let key = op.key.as_ref().map(show_key);
        let set = self.sets.entry(key).or_default();
        if add {
            set.observe_add(op)
        } else {
            set.observe_read(op)
        }
    }

    /// Classifies every element and builds the report (its `elapsed_ms` is left at 0).
    pub fn finish(self) -> SetReport {
        let mut tally = Tally::default();
        for (key, set) in &self.sets {
            set.classify(key, &mut tally);
        }
        tally.lost.sort_by_key(|element| element.add_op);
        tally.never_read.sort_by_key(|element| element.add_op);
        tally.stale.sort_by(|a, b| {
            let a_latency = a.latency_ms.unwrap_or(0.0);
            let b_latency = b.latency_ms.unwrap_or(0.0);
            b_latency
                .total_cmp(&a_latency)
                .then(a.add_op.cmp(&b.add_op))
        });
        let counts = (
            tally.lost.len(),
            tally.stale.len(),
            tally.never_read.len(),
            tally.duplicated.len(),
            tally.unexpected.len(),
        );
        let (lost_count, stale_count, never_read_count, duplicated_count, unexpected_count) =
            counts;
        let verdict = if lost_count > 0
            || duplicated_count > 0
            || unexpected_count > 0
            || (self.options.linearizable && stale_count > 0)
        {
            Verdict::Invalid
        } else if tally.stable_count == 0 {
            Verdict::Unknown
        } else {
            Verdict::Valid
        };
        let (time_basis, note) = if self.all_timed {
            (TimeBasis::Nanoseconds, None)
        } else {
            (
                TimeBasis::EventIndex,
                Some(
                    "some adds or reads have no time: elements are ordered by event index, \
                     and latencies are not available"
                        .to_string(),
                ),
            )
        };
        SetReport {
            verdict,
            n_elements: tally.n_elements,
            n_reads: self.sets.values().map(|set| set.reads.len()).sum(),
            n_keys: self.sets.len(),
            lost: capped(tally.lost),
            stale: capped(tally.stale),
            never_read: capped(tally.never_read),
            duplicated: capped(tally.duplicated),
            unexpected: capped(tally.unexpected),
            stable_count: tally.stable_count,
            lost_count,
            stale_count,
            never_read_count,
            duplicated_count,
            unexpected_count,
            stable_latency_ms: Quantiles::of(tally.stable_latencies),
            lost_latency_ms: Quantiles::of(tally.lost_latencies),
            time_basis,
            note,
            definitions: definitions(),
            elapsed_ms: 0.0,
        }
    }
}

fn capped<T>(mut items: Vec<T>) -> Vec<T> {
    items.truncate(MAX_LISTED);
    items
}

/// The classified elements of every set.
#[derive(Default)]
struct Tally {
    n_elements: usize,
    stable_count: usize,
    lost: Vec<ElementReport>,
    stale: Vec<ElementReport>,
    never_read: Vec<ElementReport>,
    duplicated: Vec<DuplicateReport>,
    unexpected: Vec<UnexpectedReport>,
    stable_latencies: Vec<f64>,
    lost_latencies: Vec<f64>,
}

impl SetState {
    fn slot(&mut self, value: &serde_json::Value) -> usize {
        let id = self.values.intern(value) as usize;
        if id >= self.elements.len() {
            self.elements.resize_with(id + 1, ElementState::default);
        }
        id
    }

    fn observe_add(&mut self, op: &Operation) -> Result<(), ShapeError> {
        if op.input.is_null() {
            return Err(ShapeError::new(
                op,
                false,
                "value",
                format!("{} carries the element in \"value\", found nil", op.f),
            ));
        }
        let id = self.slot(&op.input);
        let element = &mut self.elements[id];
        match op.outcome {
            Outcome::Fail => element.failed_add = true,
            Outcome::Ok | Outcome::Info | Outcome::Pending => {
                element.add_op.get_or_insert(op.id);
            }
        }
        if op.outcome == Outcome::Ok {
            if let Some(index) = op.complete_index {
                element.learn_known(index, op.complete_time, op.id);
            }
        }
        Ok(())
    }

    fn observe_read(&mut self, op: &Operation) -> Result<(), ShapeError> {
        if op.outcome != Outcome::Ok {
            return Ok(());
        }
        let output = op.output.as_ref().unwrap_or(&serde_json::Value::Null);
        let Some(items) = output.as_array() else {
            return Err(ShapeError::new(
                op,
                true,
                "value",
                format!(
                    "a read returns the whole set as a list, found {}",
                    show(output)
                ),
            ));
        };
        let position = self.reads.len();
        let previous = position.checked_sub(1).map(|before| self.reads[before]);
        self.reads.push(ReadPoint {
            op: op.id,
            invoke_index: op.invoke_index,
            invoke_time: op.invoke_time,
        });
        for item in items {
            let id = self.slot(item);
            let element = &mut self.elements[id];
            if element.last_seen == Some(position) {
                element.copies_in_last_read += 1;
                if element.copies_in_last_read == 2 {
                    element.duplicate_reads += 1;
                }
                if element.copies_in_last_read > element.max_multiplicity {
                    element.max_multiplicity = element.copies_in_last_read;
                    element.duplicate_read_op = Some(op.id);
                }
                continue;
            }
            // Every read between the last one that returned it and this one missed it; the
            // latest of them, the read just before this one, decides whether a counting read
            // missed it. If that read began before the element was known, so did the others.
            let gap_start = element.last_seen.map_or(0, |seen| seen + 1);
            if let Some(before) = previous {
                if gap_start < position && element.known_before(before.invoke_index) {
                    element.last_absent = Some(position - 1);
                }
            }
            element.last_seen = Some(position);
            element.copies_in_last_read = 1;
            element.first_seen_op.get_or_insert(op.id);
            if let Some(index) = op.complete_index {
                element.learn_known(index, op.complete_time, op.id);
            }
        }
        Ok(())
    }

    fn classify(&self, key: &Option<String>, tally: &mut Tally) {
        for (id, element) in self.elements.iter().enumerate() {
            // Ids come from the interner, which hands out u32s.
            let value = self.values.value(id as u32);
            if element.max_multiplicity > 1 {
                tally.duplicated.push(self.duplicate(key, value, element));
            }
            let Some(add_op) = element.add_op else {
                if let Some(read_op) = element.first_seen_op {
                    tally
                        .unexpected
                        .push(unexpected(key, value, element, read_op));
                }
                continue;
            };
            tally.n_elements += 1;
            self.classify_element(key, value, add_op, element, tally);
        }
    }

    fn classify_element(
        &self,
        key: &Option<String>,
        value: &serde_json::Value,
        add_op: usize,
        element: &ElementState,
        tally: &mut Tally,
    ) {
        let mut last_absent = element.last_absent;
        // The gap after the last read that returned it runs to the final read.
        if let Some(last) = self.reads.len().checked_sub(1) {
            let seen_last = element.last_seen == Some(last);
            if !seen_last && element.known_before(self.reads[last].invoke_index) {
                last_absent = Some(last);
            }
        }
        let last_present = element.last_seen;
        let mut report = ElementReport {
            key: key.clone(),
            element: value.clone(),
            add_op,
            known_index: element.known_index,
            known_time: element.known_time,
            known_op: element.known_op,
            last_present: last_present.map(|position| self.reads[position].op),
            last_absent: last_absent.map(|position| self.reads[position].op),
            latency_ms: None,
            explanation: String::new(),
        };
        let shown = format!("{}{}", show(value), in_key(key));
        match (last_present, last_absent) {
            (Some(_), None) => {
                tally.stable_count += 1;
                report.latency_ms = element.known_time.map(|_| 0.0);
                tally.stable_latencies.extend(report.latency_ms);
            }
            (Some(present), Some(absent)) if present > absent => {
                tally.stable_count += 1;
                let recovered = self.reads[absent + 1];
                report.latency_ms = latency(element.known_time, recovered.invoke_time);
                tally.stable_latencies.extend(report.latency_ms);
                report.explanation = format!(
                    "{shown} was known at {} but read op {} (began {}) missed it; it is present \
                     in every read from op {} (began {}) on",
                    self.when(element.known_index, element.known_time),
                    self.reads[absent].op,
                    self.began(absent),
                    recovered.op,
                    self.began(absent + 1),
                );
                tally.stale.push(report);
            }
            (present, Some(absent)) => {
                report.latency_ms = match present {
                    Some(present) => latency(element.known_time, self.reads[present].invoke_time),
                    None => element.known_time.map(|_| 0.0),
                };
                tally.lost_latencies.extend(report.latency_ms);
                let seen = match present {
                    Some(present) => format!(
                        "last returned by read op {} (began {})",
                        self.reads[present].op,
                        self.began(present)
                    ),
                    None => "never returned by any read".to_string(),
                };
                report.explanation = format!(
                    "{shown} was known at {} (by op {}), {seen}, then missing from read op {} \
                     (began {}) and every later read",
                    self.when(element.known_index, element.known_time),
                    element.known_op.unwrap_or(add_op),
                    self.reads[absent].op,
                    self.began(absent),
                );
                tally.lost.push(report);
            }
            (None, None) => {
                report.explanation = match element.known_index {
                    Some(_) => format!(
                        "{shown} was known at {}, but no read began after that",
                        self.when(element.known_index, element.known_time)
                    ),
                    None => format!(
                        "{shown} was never known: its add's outcome is unknown and no read \
                         returned it"
                    ),
                };
                tally.never_read.push(report);
            }
        }
    }

    fn duplicate(
        &self,
        key: &Option<String>,
        value: &serde_json::Value,
        element: &ElementState,
    ) -> DuplicateReport {
        let read_op = element.duplicate_read_op.unwrap_or_default();
        DuplicateReport {
            key: key.clone(),
            element: value.clone(),
            max_multiplicity: element.max_multiplicity,
            read_op,
            n_reads: element.duplicate_reads,
            explanation: format!(
                "read op {read_op} returned {}{} {} times ({} reads returned it more than once)",
                show(value),
                in_key(key),
                element.max_multiplicity,
                element.duplicate_reads
            ),
        }
    }

    fn began(&self, position: usize) -> String {
        let read = self.reads[position];
        self.when(Some(read.invoke_index), read.invoke_time)
    }

    fn when(&self, index: Option<u64>, time: Option<u64>) -> String {
        match (index, time) {
            (_, Some(time)) => format!("{:.3} ms", ms(time)),
            (Some(index), None) => format!("event {index}"),
            (None, None) => "an unknown time".to_string(),
        }
    }
}

fn unexpected(
    key: &Option<String>,
    value: &serde_json::Value,
    element: &ElementState,
    read_op: usize,
) -> UnexpectedReport {
    let why = if element.failed_add {
        "every add of it failed"
    } else {
        "it was never added"
    };
    UnexpectedReport {
        key: key.clone(),
        element: value.clone(),
        read_op,
        add_failed: element.failed_add,
        explanation: format!(
            "read op {read_op} returned {}{}, but {why}",
            show(value),
            in_key(key)
        ),
    }
}

fn in_key(key: &Option<String>) -> String {
    key.as_ref()
        .map_or(String::new(), |key| format!(" in key {key}"))
}

/// `to - from` in ms, 0 when negative; `None` without both times.
fn latency(from: Option<u64>, to: Option<u64>) -> Option<f64> {
    Some(ms(to?.saturating_sub(from?)))
}
