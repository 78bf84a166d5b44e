//! Lost-writes benchmark: 100,000 elements and 10,000 full reads, each returning every element
//! added so far minus a few deliberately lost ones.
//!
//! Run with `cargo bench -p helios-checker --bench sets`. Each case runs in a child process, so
//! that its peak resident set (VmHWM from `/proc/self/status`) is its own.
//!
//! - `streaming`: the full size, fed operation by operation to `SetChecker`; the reads hold
//!   about 5 × 10^8 element occurrences in all, which as JSON values in memory would take some
//!   16 GB, so the history is generated as it is checked and never held whole.
//! - `in-memory`: `sets::check` on an `Operations` held in memory, at a tenth of the reads
//!   and a fifth of the elements, to show the whole-history path at a size that fits.

mod support;

use helios_checker::history::Process;
use helios_checker::ops::{Operation, Operations, Outcome};
use helios_checker::sets::{self, SetChecker, SetOptions, SetReport};
use helios_checker::Verdict;
use serde_json::Value;
use std::process::Command;
use std::time::Instant;

const CHILD_VARIABLE: &str = "HELIOS_SETS_BENCH_CHILD";

/// The shape of a generated history: one read after every `adds_per_read` adds.
#[derive(Clone, Copy)]
struct Shape {
    elements: u64,
    reads: u64,
}

impl Shape {
    fn adds_per_read(self) -> u64 {
        self.elements / self.reads
    }

    /// Lost elements: one in every 10,000 (at least one), missing from every read that begins
    /// 50 reads or more after it was added.
    fn is_lost(self, element: u64) -> bool {
        element % 10_000 == 1234
    }
}

/// Generates the history in invocation order and hands each operation to `sink`.
fn generate(shape: Shape, mut sink: impl FnMut(Operation)) {
    let mut index = 0u64;
    let mut id = 0usize;
    let mut next = |f: &str, input: Value, output: Value, index: &mut u64| {
        let op = Operation {
            id,
            process: Process::Client(0),
            f: f.to_string(),
            key: None,
            input,
            output: Some(output),
            outcome: Outcome::Ok,
            invoke_index: *index,
            complete_index: Some(*index + 1),
            // One event per microsecond.
            invoke_time: Some(*index * 1000),
            complete_time: Some((*index + 1) * 1000),
            invoke_line: *index + 1,
            complete_line: *index + 2,
            node: None,
            error: None,
        };
        id += 1;
        *index += 2;
        op
    };
    let per_read = shape.adds_per_read();
    let mut added = 0u64;
    for _ in 0..shape.reads {
        for _ in 0..per_read {
            let element = Value::from(added);
            sink(next("add", element.clone(), element, &mut index));
            added += 1;
        }
        let lost_before = added.saturating_sub(50 * per_read);
        let contents: Vec<Value> = (0..added)
            .filter(|&element| !(shape.is_lost(element) && element < lost_before))
            .map(Value::from)
            .collect();
        sink(next(
            "read",
            Value::Null,
            Value::Array(contents),
            &mut index,
        ));
    }
}

fn expected_lost(shape: Shape) -> usize {
    let per_read = shape.adds_per_read();
    // An element is lost when some read 50 × per_read adds later exists.
    let last_added = shape.elements;
    (0..shape.elements)
        .filter(|&element| shape.is_lost(element) && element + 50 * per_read < last_added)
        .count()
}

fn print_report(case: &str, shape: Shape, report: &SetReport, seconds: f64, occurrences: u64) {
    println!(
        "{case}: {} elements, {} reads, {occurrences} element occurrences in reads: {:.2} s, \
         peak RSS {:.0} MiB; verdict {}, {} stable, {} lost (expected {}), {} stale, \
         stable latency p50 {:?} ms",
        report.n_elements,
        report.n_reads,
        seconds,
        support::peak_rss_mib(),
        report.verdict,
        report.stable_count,
        report.lost_count,
        expected_lost(shape),
        report.stale_count,
        report.stable_latency_ms.p50,
    );
    assert_eq!(report.n_elements as u64, shape.elements);
    assert_eq!(report.n_reads as u64, shape.reads);
    assert_eq!(report.lost_count, expected_lost(shape));
    assert_eq!(report.verdict, Verdict::Invalid);
}

fn streaming() {
    let shape = Shape {
        elements: 100_000,
        reads: 10_000,
    };
    let started = Instant::now();
    let mut checker = SetChecker::new(SetOptions::default());
    let mut occurrences = 0u64;
    // Time spent checking, without the time spent generating the operations.
    let mut checking = std::time::Duration::ZERO;
    generate(shape, |op| {
        if let Some(Value::Array(items)) = &op.output {
            if op.f == "read" {
                occurrences += items.len() as u64;
            }
        }
        let observed = Instant::now();
        checker
            .observe(&op)
            .expect("generated operations are well formed");
        checking += observed.elapsed();
    });
    let finished = Instant::now();
    let report = checker.finish();
    checking += finished.elapsed();
    println!(
        "streaming: {:.2} s including generating the history",
        started.elapsed().as_secs_f64()
    );
    print_report(
        "streaming (checking only)",
        shape,
        &report,
        checking.as_secs_f64(),
        occurrences,
    );
}

fn in_memory() {
    let shape = Shape {
        elements: 20_000,
        reads: 1_000,
    };
    let mut operations = Operations::default();
    let mut occurrences = 0u64;
    generate(shape, |op| {
        if let Some(Value::Array(items)) = &op.output {
            if op.f == "read" {
                occurrences += items.len() as u64;
            }
        }
        operations.ops.push(op);
    });
    let started = Instant::now();
    let report = sets::check(&operations, &SetOptions::default()).expect("well formed");
    print_report(
        "in-memory",
        shape,
        &report,
        started.elapsed().as_secs_f64(),
        occurrences,
    );
}

fn main() {
    if let Ok(case) = std::env::var(CHILD_VARIABLE) {
        match case.as_str() {
            "streaming" => streaming(),
            "in-memory" => in_memory(),
            other => panic!("unknown case {other}"),
        }
        return;
    }
    // `cargo bench` passes `--bench`; run each case in a child to measure its own peak RSS.
    for case in ["in-memory", "streaming"] {
        let output = Command::new(std::env::current_exe().expect("current exe"))
            .env(CHILD_VARIABLE, case)
            .output()
            .expect("child runs");
        print!("{}", String::from_utf8_lossy(&output.stdout));
        assert!(
            output.status.success(),
            "case {case} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
