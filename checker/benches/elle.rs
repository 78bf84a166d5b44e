//! The Elle checker on a million-transaction list-append history, timed end to end.
//!
//! Run with `cargo bench -p helios-checker --bench elle`. The parent simulates a serializable
//! list-append store (10 concurrent processes, 100 active keys, 1 to 5 micro-ops per txn; a
//! key retires after 32 appends, as Jepsen's generator does, so reads stay short) and writes
//! the history as JSON Lines to a temporary file. A child process then reads, pairs and
//! checks it for read committed, and prints its wall time and its peak resident set (VmHWM
//! from `/proc/self/status`), so the figures cover only the check. Goal: under 20 s and
//! 4 GB on 2 cores. `HELIOS_ELLE_BENCH_TXNS` overrides the number of transactions.
//!
//! With `HELIOS_ELLE_BENCH_SNAPSHOT_READS=1` the store is snapshot isolation instead: a txn
//! reads the snapshot taken when it was invoked (plus its own appends), and aborts when a
//! concurrent txn appended to a key it appends to (first committer wins). That is still read
//! committed, but full of G-single and G2-item cycles, so the cycle search has real
//! components to work through.

mod support;

use helios_checker::elle::{self, Consistency, ElleOptions};
use helios_checker::format::{self, Format};
use helios_checker::ops;
use helios_checker::Verdict;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const CHILD_VARIABLE: &str = "HELIOS_ELLE_BENCH_CHILD";
const CONCURRENCY: usize = 10;
const ACTIVE_KEYS: usize = 100;
const MAX_APPENDS_PER_KEY: usize = 32;
const SEED: u64 = 0x5EED_E11E;

/// One micro-op as planned at invocation: (is append, key, element).
type Planned = Vec<(bool, u64, u64)>;

/// A process's outstanding txn: its plan, and its read results once the store ran it.
struct Outstanding {
    plan: Planned,
    /// With snapshot reads: each key's list when the txn was invoked.
    snapshot: HashMap<u64, Vec<u64>>,
    results: Option<Vec<Vec<u64>>>,
    /// First committer wins: a concurrent txn appended to a key this one appends to.
    aborted: bool,
}

/// Simulates a store that runs each txn atomically at one instant between its invocation
/// and its completion (so the history is strict serializable), and writes the history.
fn generate(path: &Path, n_txns: usize, snapshot_reads: bool) -> std::io::Result<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(
        out,
        "{{\"helios_history\":1,\"workload\":\"list-append\",\"seed\":{SEED}}}"
    )?;
    let mut lists: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut active: Vec<(u64, usize)> = (0..ACTIVE_KEYS as u64).map(|k| (k, 0)).collect();
    let mut next_key = ACTIVE_KEYS as u64;
    let mut next_element = 1u64;
    let mut processes: Vec<Option<Outstanding>> = (0..CONCURRENCY).map(|_| None).collect();
    let (mut invoked, mut completed, mut index) = (0usize, 0usize, 0u64);
    let mut line = String::new();
    while completed < n_txns {
        let p = rng.gen_range(0..CONCURRENCY);
        match &mut processes[p] {
            None if invoked < n_txns => {
                let mut plan = Planned::new();
                for _ in 0..rng.gen_range(1..=5) {
                    let slot = rng.gen_range(0..ACTIVE_KEYS);
                    let key = active[slot].0;
                    if rng.gen_bool(0.5) {
                        plan.push((true, key, next_element));
                        next_element += 1;
                        active[slot].1 += 1;
                        if active[slot].1 == MAX_APPENDS_PER_KEY {
                            active[slot] = (next_key, 0);
                            next_key += 1;
                        }
                    } else {
                        plan.push((false, key, 0));
                    }
                }
                write_event(&mut line, index, "invoke", p, &plan, None);
                out.write_all(line.as_bytes())?;
                let mut snapshot = HashMap::new();
                if snapshot_reads {
                    for &(_, key, _) in &plan {
                        let list = lists.get(&key).cloned().unwrap_or_default();
                        snapshot.insert(key, list);
                    }
                }
                processes[p] = Some(Outstanding {
                    plan,
                    snapshot,
                    results: None,
                    aborted: false,
                });
                invoked += 1;
                index += 1;
            }
            None => {}
            Some(outstanding) if outstanding.results.is_none() => {
                let mut results = Vec::new();
                outstanding.aborted = outstanding.plan.iter().any(|&(append, key, _)| {
                    let now = lists.get(&key).map_or(0, Vec::len);
                    append
                        && outstanding
                            .snapshot
                            .get(&key)
                            .is_some_and(|s| s.len() != now)
                });
                if outstanding.aborted {
                    outstanding.results = Some(results);
                    continue;
                }
                for &(append, key, element) in &outstanding.plan {
                    let list = lists.entry(key).or_default();
                    if append {
                        list.push(element);
                        if let Some(seen) = outstanding.snapshot.get_mut(&key) {
                            seen.push(element);
                        }
                    } else if let Some(seen) = outstanding.snapshot.get(&key) {
                        results.push(seen.clone());
                    } else {
                        results.push(list.clone());
                    }
                }
                outstanding.results = Some(results);
            }
            Some(outstanding) => {
                let (kind, results) = if outstanding.aborted {
                    ("fail", None)
                } else {
                    ("ok", outstanding.results.as_deref())
                };
                write_event(&mut line, index, kind, p, &outstanding.plan, results);
                out.write_all(line.as_bytes())?;
                processes[p] = None;
                completed += 1;
                index += 1;
            }
        }
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

fn write_event(
    line: &mut String,
    index: u64,
    kind: &str,
    process: usize,
    plan: &Planned,
    results: Option<&[Vec<u64>]>,
) {
    use std::fmt::Write as _;
    line.clear();
    let _ = write!(
        line,
        "{{\"index\":{index},\"type\":\"{kind}\",\"process\":{process},\"f\":\"txn\",\"value\":["
    );
    let mut reads = results.map(|r| r.iter());
    for (i, &(append, key, element)) in plan.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        if append {
            let _ = write!(line, "[\"append\",{key},{element}]");
        } else {
            let _ = write!(line, "[\"r\",{key},");
            match reads.as_mut().and_then(Iterator::next) {
                Some(list) => {
                    line.push('[');
                    for (j, e) in list.iter().enumerate() {
                        if j > 0 {
                            line.push(',');
                        }
                        let _ = write!(line, "{e}");
                    }
                    line.push_str("]]");
                }
                None => line.push_str("null]"),
            }
        }
    }
    line.push_str("]}\n");
}

/// The child: read, pair and check one history, then report.
fn child(path: &str) {
    let started = Instant::now();
    let source = format::open(Path::new(path), Some(Format::Jsonl)).expect("history opens");
    let operations = ops::pair(source.events, path).expect("history pairs");
    let read_ms = started.elapsed().as_secs_f64() * 1e3;
    let read_rss_mb = support::peak_rss_mib();
    let options = ElleOptions {
        consistency: Consistency::ReadCommitted,
        ..ElleOptions::default()
    };
    let report = elle::check(&operations, &options).expect("history is well shaped");
    let total_s = started.elapsed().as_secs_f64();
    println!(
        "child: {} txns, verdict {}, anomalies {:?}; read+pair {:.0} ms, check {:.0} ms, \
         total {:.2} s; peak RSS {:.0} MB ({:.0} MB after read+pair)",
        report.n_txns,
        report.verdict,
        report.anomalies.keys().collect::<Vec<_>>(),
        read_ms,
        report.elapsed_ms,
        total_s,
        support::peak_rss_mib(),
        read_rss_mb
    );
    if let Some(reason) = &report.unknown_reason {
        println!("child: unknown because {reason}");
    }
    for (name, count) in &report.anomaly_counts {
        println!("child: {name}: {count} found");
    }
    if report.verdict != Verdict::Valid {
        eprintln!(
            "a serializable history was judged {}: {report:#?}",
            report.verdict
        );
        std::process::exit(1);
    }
}

fn main() {
    if let Ok(path) = std::env::var(CHILD_VARIABLE) {
        child(&path);
        return;
    }
    let n_txns = std::env::var("HELIOS_ELLE_BENCH_TXNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let folder = tempfile::tempdir().expect("temporary folder");
    let path = folder.path().join("list-append.jsonl");
    let started = Instant::now();
    let snapshot_reads = std::env::var("HELIOS_ELLE_BENCH_SNAPSHOT_READS").is_ok_and(|v| v == "1");
    let bytes = generate(&path, n_txns, snapshot_reads).expect("history written");
    let store = if snapshot_reads {
        "snapshot reads"
    } else {
        "serializable"
    };
    println!(
        "elle bench: generated {n_txns} list-append txns ({store} store, concurrency \
         {CONCURRENCY}, {ACTIVE_KEYS} keys, 1-5 micro-ops, seed {SEED:#x}), {:.0} MB, in {:.1} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let exe = std::env::current_exe().expect("bench executable");
    let started = Instant::now();
    let output = Command::new(exe)
        .env(CHILD_VARIABLE, &path)
        .output()
        .expect("child runs");
    let wall_s = started.elapsed().as_secs_f64();
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    println!("elle bench: child wall time {wall_s:.2} s (goal < 20 s, peak RSS < 4096 MB)");
    assert!(
        output.status.success(),
        "the child failed: {}",
        output.status
    );
}
