//! Linearizability benchmarks, printed as figures beside Porcupine's reference timings.
//!
//! Run with `cargo bench -p helios-checker --bench linearizability`. Each memory figure is
//! the peak resident set of a child process that checks one case, read from
//! `/proc/self/status` (VmHWM), so the cases do not pollute each other's figures.

mod support;

use helios_checker::check::{check_file, CheckOptions};
use helios_checker::format::{self, Format};
use helios_checker::linear::{self, LinearOptions};
use helios_checker::models::ModelSpec;
use helios_checker::ops::{self, Operations};
use helios_checker::synth::{register_history, RegisterHistoryConfig};
use helios_checker::Verdict;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD_VARIABLE: &str = "HELIOS_BENCH_CHILD";

fn histories() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../histories")
}

fn load(path: &Path, format: Format) -> Operations {
    let source = format::open(path, Some(format)).expect("corpus file opens");
    ops::pair(source.events, &path.display().to_string()).expect("corpus file pairs")
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time_check(operations: &Operations, model: &ModelSpec, rounds: usize) -> (Duration, Verdict) {
    let options = LinearOptions::default();
    let mut samples = Vec::with_capacity(rounds);
    let mut verdict = Verdict::Unknown;
    for _ in 0..rounds {
        let started = Instant::now();
        verdict = linear::check(operations, model, &options)
            .expect("well-shaped")
            .verdict;
        samples.push(started.elapsed());
    }
    (median(samples), verdict)
}

fn etcd() {
    let model = ModelSpec::parse("cas-register(nil)").expect("valid model");
    let folder = histories().join("porcupine-etcd");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .expect("corpus folder")
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    let started = Instant::now();
    let loaded: Vec<(PathBuf, Operations)> = files
        .iter()
        .map(|path| (path.clone(), load(path, Format::JepsenLog)))
        .collect();
    let parse_time = started.elapsed();
    let mut total = Duration::ZERO;
    let mut slowest = (Duration::ZERO, String::new());
    let mut etcd_002 = Duration::ZERO;
    for (path, operations) in &loaded {
        let (time, _) = time_check(operations, &model, 9);
        total += time;
        let name = path
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .to_string();
        if name == "etcd_002.log" {
            etcd_002 = time;
        }
        if time > slowest.0 {
            slowest = (time, name);
        }
    }
    println!(
        "etcd corpus ({} histories, cas-register(nil)):",
        loaded.len()
    );
    println!(
        "  check, summed medians of 9 runs: {:>8.1} ms   (Porcupine v1.3.0: 553 ms for 102 histories; goal <= 1/5)",
        ms(total)
    );
    println!(
        "  etcd_002 alone:                  {:>8.1} ms   (Porcupine: 235 ms)",
        ms(etcd_002)
    );
    println!(
        "  slowest: {} at {:.1} ms; parsing all files once: {:.1} ms",
        slowest.1,
        ms(slowest.0),
        ms(parse_time)
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Runs one case in a child process and returns its printed figures.
fn child(case: &str, argument: &str) -> String {
    let output = Command::new(std::env::current_exe().expect("current exe"))
        .env(CHILD_VARIABLE, case)
        .env("HELIOS_BENCH_ARGUMENT", argument)
        .output()
        .expect("child runs");
    assert!(
        output.status.success(),
        "child {case} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// In the child: checks one file with one model, prints `verdict elapsed_ms peak_rss_mib`.
fn run_child(case: &str) {
    let argument = std::env::var("HELIOS_BENCH_ARGUMENT").expect("argument set");
    let (path, model) = argument.split_once('|').expect("path|model");
    let options = CheckOptions {
        model: Some(model.to_string()),
        ..Default::default()
    };
    let started = Instant::now();
    let report = check_file(Path::new(path), &options).expect("checkable");
    let elapsed = started.elapsed();
    let check_ms = report
        .linearizability
        .as_ref()
        .map_or(f64::NAN, |linear| linear.elapsed_ms);
    println!(
        "{case} {} {:.1} {:.1} {check_ms:.2}",
        report.verdict,
        ms(elapsed),
        support::peak_rss_mib()
    );
}

/// One file checked in a fresh process `rounds` times: the verdict, the median of the check
/// alone, the median of the whole process (spawn to exit, as a user's `helios check` would
/// take), and the largest peak RSS.
struct Figures {
    verdict: String,
    check_ms: f64,
    process_ms: f64,
    peak_rss_mib: f64,
}

fn figures(path: &Path, model: &str, rounds: usize) -> Figures {
    let mut checks = Vec::with_capacity(rounds);
    let mut processes = Vec::with_capacity(rounds);
    let mut verdict = String::new();
    let mut peak = 0f64;
    for _ in 0..rounds {
        let started = Instant::now();
        let line = child("hard", &format!("{}|{model}", path.display()));
        processes.push(ms(started.elapsed()));
        let fields: Vec<&str> = line.split_whitespace().collect();
        verdict = fields[1].to_string();
        peak = peak.max(fields[3].parse().unwrap_or(f64::NAN));
        checks.push(fields[4].parse::<f64>().unwrap_or(f64::NAN));
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    Figures {
        verdict,
        check_ms: median(checks),
        process_ms: median(processes),
        peak_rss_mib: peak,
    }
}

/// The hard histories: Porcupine's c50 pair, its hard keys alone, and the generated files,
/// each beside the Porcupine figures measured on this machine kind (issue "The checker's
/// worst case"; the generated files have none yet).
fn hard_histories() {
    const ROUNDS: usize = 5;
    println!("hard histories (median of {ROUNDS} fresh processes each; check alone / whole process / peak RSS):");
    let kv = histories().join("porcupine-kv");
    let cases: Vec<(PathBuf, &str, &str)> = vec![
        (
            kv.join("c50-ok.txt"),
            "kv",
            "Porcupine: 99 ms check; goal <= 35 ms",
        ),
        (
            kv.join("c50-bad.txt"),
            "kv",
            "Porcupine: 17-47 ms check, 47 ms / 14 MiB whole; goal <= 50 ms and 50 MB whole",
        ),
    ];
    for (path, model, reference) in &cases {
        print_figures(path, model, ROUNDS, reference);
    }
    let folder = std::env::temp_dir().join("helios-bench-keys");
    std::fs::create_dir_all(&folder).expect("temp folder");
    let bad = std::fs::read_to_string(kv.join("c50-bad.txt")).expect("c50-bad");
    for (key, reference) in [
        ("5", "Porcupine: 6.9 s"),
        ("7", "Porcupine: 7.3 s"),
        ("8", "Porcupine: 0.35 s"),
        ("0", "Porcupine: killed at 30 s, 5.8 GB"),
        ("9", "Porcupine: killed at 30 s, 5.8 GB"),
    ] {
        let needle = format!(":key \"{key}\"");
        let lines: String = bad
            .lines()
            .filter(|line| line.contains(&needle))
            .map(|line| format!("{line}\n"))
            .collect();
        let path = folder.join(format!("c50-bad-key-{key}.txt"));
        std::fs::write(&path, lines).expect("key file");
        print_figures(&path, "kv", ROUNDS, reference);
    }
    let generated = histories().join("generated");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&generated)
        .expect("histories/generated")
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    for path in files {
        let model = if path.extension().is_some_and(|e| e == "jsonl") {
            "register(nil)"
        } else {
            "kv"
        };
        print_figures(&path, model, ROUNDS, "");
    }
}

fn print_figures(path: &Path, model: &str, rounds: usize, reference: &str) {
    let figures = figures(path, model, rounds);
    let name = path.file_name().expect("file name").to_string_lossy();
    println!(
        "  {name:<30} {:<8} {:>9.2} ms {:>9.1} ms {:>7.1} MiB   {reference}",
        figures.verdict, figures.check_ms, figures.process_ms, figures.peak_rss_mib
    );
}

fn kv_single_partition() {
    println!("kv with 10 clients as ONE partition (kv-single, no per-key split), read+pair+check:");
    for name in ["c10-ok.txt", "c10-bad.txt"] {
        let path = histories().join("porcupine-kv").join(name);
        let mut times = Vec::new();
        let mut last = String::new();
        for _ in 0..5 {
            last = child("kv", &format!("{}|kv-single", path.display()));
            let fields: Vec<&str> = last.split_whitespace().collect();
            times.push(fields[2].parse::<f64>().expect("elapsed"));
        }
        times.sort_by(f64::total_cmp);
        let fields: Vec<&str> = last.split_whitespace().collect();
        println!(
            "  {name:<12} {:<8} median {:>7.1} ms over 5 runs, peak RSS {:>6.1} MiB   (Porcupine 2.2-2.4 s, 560-670 MB; goal < 500 ms, < 200 MB)",
            fields[1],
            times[2],
            fields[3].parse::<f64>().unwrap_or(f64::NAN)
        );
    }
}

fn register_ops(n_ops: usize) {
    let config = RegisterHistoryConfig {
        n_ops,
        n_keys: 1000,
        concurrency: 20,
        info_rate: 0.01,
        seed: 1,
        ..Default::default()
    };
    let folder = std::env::temp_dir().join("helios-bench");
    std::fs::create_dir_all(&folder).expect("temp folder");
    let path = folder.join(format!("register-{n_ops}.jsonl"));
    let started = Instant::now();
    let history = register_history(&config);
    let file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    helios_checker::jsonl::write_history(file, &history).expect("write");
    drop(history);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "generated {n_ops} register ops (1000 keys, 20 processes, 1% info) in {:.1} s, {:.0} MB of JSON Lines",
        started.elapsed().as_secs_f64(),
        size as f64 / 1e6
    );
    let figures = child(
        "register-1m",
        &format!("{}|cas-register(nil)", path.display()),
    );
    let fields: Vec<&str> = figures.split_whitespace().collect();
    println!(
        "  read+pair+check: {} in {:.2} s, peak RSS {} MiB   (goal for 1,000,000: < 10 s and < 2 GB on 2 cores)",
        fields[1],
        fields[2].parse::<f64>().unwrap_or(f64::NAN) / 1e3,
        fields[3]
    );
    let _ = std::fs::remove_file(&path);
}

fn main() {
    if let Ok(case) = std::env::var(CHILD_VARIABLE) {
        run_child(&case);
        return;
    }
    println!("threads: {}", rayon::current_num_threads());
    hard_histories();
    etcd();
    kv_single_partition();
    register_ops(1_000_000);
    // A 1 GB history, to show that reading streams: set HELIOS_BENCH_GB=1 (it takes a minute).
    if std::env::var("HELIOS_BENCH_GB").is_ok() {
        register_ops(5_000_000);
    }
}
