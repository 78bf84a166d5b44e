//! `helios run`: start the embedded cluster, drive a workload under faults, record the history,
//! check it, and write `results.json` next to `history.jsonl`.

mod replicated;
mod set;
mod summary;
mod target;
mod txn;

use std::hash::{BuildHasher, Hasher};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use helios_checker::check::{check_file, CheckOptions};
use helios_checker::report;
use helios_checker::Verdict;
use helios_workload::client::RunProgress;
use helios_workload::runner::SUPPORTED_WORKLOADS;
use helios_workload::schedule::NemesisKind;
use helios_workload::{RunConfig, RunOutcome};
use indicatif::{ProgressBar, ProgressStyle};

use crate::check::parse_duration;

/// Deliberately broken cluster modes, to show that the checker catches what they break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UnsafeMode {
    /// Every node answers reads from its local state, leader or not: reads can be stale
    /// (register workload).
    StaleReads,
    /// Moves switch ownership right after the bulk copy, without catching up the writes made
    /// during it, so those writes are lost (set workload).
    SkipCatchup,
    /// The replication primary acknowledges a write before its mirror has it, so a failover
    /// loses acknowledged writes (register workload on the replicated store).
    AsyncReplication,
    /// Replication epochs are not fenced, so an isolated primary and the promoted mirror both
    /// accept writes (register workload on the replicated store).
    NoFencing,
    /// Storage reads return other transactions' uncommitted intents (list-append, rw-register,
    /// bank): G1a and G1b.
    DirtyReads,
    /// Compute nodes ignore invalidations, so cached rows go stale (cache workload).
    SkipInvalidation,
    /// Commit goes shard by shard with no prepare and no commit record, so a crash in between
    /// half-applies a transaction (bank, list-append, rw-register).
    #[value(name = "no-2pc")]
    No2pc,
}

impl UnsafeMode {
    /// The `--unsafe` name.
    fn as_str(self) -> &'static str {
        match self {
            UnsafeMode::StaleReads => "stale-reads",
            UnsafeMode::SkipCatchup => "skip-catchup",
            UnsafeMode::AsyncReplication => "async-replication",
            UnsafeMode::NoFencing => "no-fencing",
            UnsafeMode::DirtyReads => "dirty-reads",
            UnsafeMode::SkipInvalidation => "skip-invalidation",
            UnsafeMode::No2pc => "no-2pc",
        }
    }

    /// The workloads whose cluster this mode breaks.
    fn workloads(self) -> &'static [&'static str] {
        match self {
            UnsafeMode::StaleReads => &["register"],
            UnsafeMode::SkipCatchup => &["set"],
            UnsafeMode::AsyncReplication | UnsafeMode::NoFencing => &["register"],
            UnsafeMode::DirtyReads | UnsafeMode::No2pc => &["list-append", "rw-register", "bank"],
            UnsafeMode::SkipInvalidation => &["cache"],
        }
    }
}

/// The workloads `helios run` knows: the register workload on the Raft metadata cluster, the
/// set workload on the sharded storage cluster, and the compute workloads.
pub const WORKLOADS: [&str; 6] = [
    "register",
    "set",
    "list-append",
    "rw-register",
    "bank",
    "cache",
];

/// Arguments of `helios run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workload to run: register (Raft metadata cluster), set (sharded storage cluster), or
    /// through compute nodes list-append, rw-register, bank or cache.
    #[arg(long, default_value = "register")]
    workload: String,
    /// Faults to inject, comma-separated, or none. Register: partition, isolate-leader,
    /// majorities-ring, kill, pause (default partition,kill,pause); or, on the replicated store,
    /// kill-primary, isolate-primary, isolate-mirror, isolate-witness. Set: add-node, kill,
    /// partition (default all three). Compute workloads: kill-compute, pause-compute,
    /// crash-compute (a crash armed between two shards' commits), partition-compute, kill-storage, partition-storage, kill-metadata, pause-metadata,
    /// partition-metadata, or kill, pause, partition for every role (default all; on processes
    /// kill-compute, pause-compute, kill-storage and partition-storage).
    #[arg(long)]
    nemesis: Option<String>,
    /// How long clients run (`30s`, `500ms`, `2m`); the last 20 % (at least 3 s) is fault-free.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    time: Duration,
    /// The number of concurrent logical clients.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// The seed of every random choice; random (and printed) when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// The target rate of operations per second, all clients together (default 1000 for
    /// register, 200 for set, whose reads return the whole set).
    #[arg(long)]
    rate: Option<f64>,
    /// The number of cluster nodes: metadata nodes for register (default 5), storage nodes at
    /// start for set (default 3, with 3 metadata nodes), shard member processes for the compute
    /// workloads on processes (a multiple of 3, default 6: two shards).
    #[arg(long)]
    nodes: Option<usize>,
    /// A deliberately broken mode, as a test aid for the checker.
    #[arg(long = "unsafe", value_enum, value_name = "MODE")]
    unsafe_mode: Option<UnsafeMode>,
    /// The bound on each client operation; past it the outcome is unknown (default 1s for
    /// register, 2s for set).
    #[arg(long, value_parser = parse_duration)]
    op_timeout: Option<Duration>,
    /// The budget of the check; past it the verdict is unknown.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    check_timeout: Duration,
    /// Runs are written to `STORE/<workload>/<timestamp>/`.
    #[arg(long, default_value = "store")]
    store: PathBuf,
    /// Print results.json to stdout instead of the human summary.
    #[arg(long)]
    json: bool,
    /// The cluster to drive (register workload; the compute workloads on embedded or
    /// processes): embedded (in this process), processes (`helios node` processes on 127.0.0.1
    /// started for the run, with real faults), or docker (five containers, faulted with docker
    /// kill/pause/network disconnect).
    #[arg(long, value_enum, default_value = "embedded")]
    target: target::Target,
}

/// Runs `helios run`; returns the exit code: 0 valid, 1 invalid, 2 unknown.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    init_tracing();
    check_workload(&args)?;
    // The compute workloads choose their own target: they run on processes too.
    if let Some(workload) = helios_workload::txn::TxnWorkload::parse(&args.workload) {
        return txn::run_txn(&args, workload);
    }
    if args.target != target::Target::Embedded {
        return target::run_on_target(&args, args.target);
    }
    if args.workload == "set" {
        return set::run_set(&args);
    }
    if replicated::wants_replication(&args) {
        return replicated::run_replicated(&args);
    }
    let config = run_config(&args)?;
    // The seed comes first, so that a run that dies can be replayed.
    eprintln!("helios run: seed {}", config.seed);
    if config.unsafe_stale_reads {
        eprintln!(
            "WARNING: --unsafe stale-reads: the cluster deliberately serves stale reads. \
             This run is expected to be INVALID; it exists to show that the checker catches it."
        );
    }
    let outcome = drive_with_progress(&args, config.time, |progress| {
        let config = config.clone();
        async move { helios_workload::run(&config, progress).await }
    })
    .with_context(|| format!("run with seed {} failed", config.seed))?;
    report(&args, &config, &outcome)
}

/// Refuses an unknown workload, and an unsafe mode that breaks another workload's cluster.
fn check_workload(args: &RunArgs) -> anyhow::Result<()> {
    if !WORKLOADS.contains(&args.workload.as_str()) {
        anyhow::bail!(
            "unknown workload {:?}: supported workloads are {}",
            args.workload,
            WORKLOADS.join(", ")
        );
    }
    if let Some(mode) = args.unsafe_mode {
        if !mode.workloads().contains(&args.workload.as_str()) {
            anyhow::bail!(
                "--unsafe {} breaks the {} workload's cluster, not the {} workload's",
                mode.as_str(),
                mode.workloads().join(" or "),
                args.workload
            );
        }
    }
    Ok(())
}

/// Checks the history, writes `results.json`, and prints the summary; returns the exit code.
fn report(args: &RunArgs, config: &RunConfig, outcome: &RunOutcome) -> anyhow::Result<i32> {
    let options = CheckOptions {
        model: Some("cas-register(nil)".to_owned()),
        timeout: Some(args.check_timeout),
        // The report's linearization view needs each partition's linearization.
        keep_linearizations: true,
        ..CheckOptions::default()
    };
    let check = check_file(&outcome.history_path, &options)
        .with_context(|| format!("seed {}: cannot check the recorded history", config.seed))?;
    // Liveness: in the healed phase the cluster must serve every key again.
    let liveness = if outcome.final_reads.iter().all(|read| read.served()) {
        Verdict::Valid
    } else {
        Verdict::Invalid
    };
    let verdict = check.verdict.combine(liveness);
    let results = summary::results_json(config, outcome, &check, liveness, verdict);
    conclude(
        args,
        config.seed,
        &outcome.run_dir,
        verdict,
        &results,
        &check,
        || summary::human_summary(config, outcome, &check, liveness, verdict),
    )
}

fn run_config(args: &RunArgs) -> anyhow::Result<RunConfig> {
    if !SUPPORTED_WORKLOADS.contains(&args.workload.as_str()) {
        anyhow::bail!(
            "unknown workload {:?}: supported workloads are {}",
            args.workload,
            SUPPORTED_WORKLOADS.join(", ")
        );
    }
    let config = RunConfig {
        workload: args.workload.clone(),
        nemesis: NemesisKind::parse_list(
            args.nemesis.as_deref().unwrap_or("partition,kill,pause"),
        )?,
        time: args.time,
        concurrency: args.concurrency,
        seed: args.seed.unwrap_or_else(random_seed),
        nodes: args.nodes.unwrap_or(5),
        unsafe_stale_reads: args.unsafe_mode == Some(UnsafeMode::StaleReads),
        op_timeout: args.op_timeout.unwrap_or(Duration::from_secs(1)),
        rate: args.rate.unwrap_or(1000.0),
        store_dir: args.store.clone(),
        ..RunConfig::default()
    };
    config.validate()?;
    Ok(config)
}

/// Runs `run` on a fresh multi-threaded runtime with the progress bar ticking; shuts the
/// runtime down after.
pub(crate) fn drive_with_progress<T, F, Fut>(
    args: &RunArgs,
    time: Duration,
    run: F,
) -> anyhow::Result<T>
where
    F: FnOnce(Arc<RunProgress>) -> Fut,
    Fut: std::future::Future<Output = Result<T, helios_workload::WorkloadError>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let progress = Arc::new(RunProgress::default());
    let bar = progress_bar(args, time);
    let outcome = runtime.block_on(async {
        let limit = time + Duration::from_secs(600);
        let ticker = bar
            .clone()
            .map(|bar| tokio::spawn(tick(bar, Arc::clone(&progress), limit)));
        let outcome = run(Arc::clone(&progress)).await;
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        outcome
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(outcome?)
}

/// Ends a run: writes `results.json` and `report.html` into `run_dir`, prints the results
/// (with `--json`) or the human summary, says how to replay a run that is not valid, and
/// returns the exit code.
pub(crate) fn conclude(
    args: &RunArgs,
    seed: u64,
    run_dir: &std::path::Path,
    verdict: Verdict,
    results: &serde_json::Value,
    check: &helios_checker::check::Report,
    summary: impl FnOnce() -> String,
) -> anyhow::Result<i32> {
    let text = write_outputs(run_dir, results, check)?;
    if args.json {
        println!("{text}");
    } else {
        print!("{}", summary());
    }
    if verdict != Verdict::Valid {
        eprintln!("helios run: {verdict} with seed {seed}; replay with --seed {seed}");
    }
    Ok(verdict.exit_code())
}

/// Writes `results.json` and `report.html` into `run_dir`; returns the JSON text.
pub(crate) fn write_outputs(
    run_dir: &std::path::Path,
    results: &serde_json::Value,
    check: &helios_checker::check::Report,
) -> anyhow::Result<String> {
    let results_path = run_dir.join("results.json");
    let text = serde_json::to_string_pretty(results).context("cannot serialize results.json")?;
    std::fs::write(&results_path, format!("{text}\n"))
        .with_context(|| format!("{}: cannot write", results_path.display()))?;
    let page_path = run_dir.join("report.html");
    std::fs::write(&page_path, report::render_report_html(check))
        .with_context(|| format!("{}: cannot write", page_path.display()))?;
    Ok(text)
}

/// A fresh seed from the standard library's per-process random keys.
pub(crate) fn random_seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    hasher.finish()
}

pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // openraft logs every lost message at error level, which faults make routine.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error,openraft=off"));
    // Another subscriber may already be installed (tests); keeping it is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A bar of elapsed time over the run's length, with operation and fault counts; only when
/// stderr is a terminal and the output is for people.
fn progress_bar(args: &RunArgs, time: Duration) -> Option<ProgressBar> {
    if args.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(time.as_millis() as u64);
    let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
        .expect("the progress template is valid")
        .progress_chars("=> ");
    bar.set_style(style);
    Some(bar)
}

/// Updates the bar five times a second; the caller aborts it when the run ends, and it stops by
/// itself after `limit`.
async fn tick(bar: ProgressBar, progress: Arc<RunProgress>, limit: Duration) {
    let started = tokio::time::Instant::now();
    while started.elapsed() < limit {
        bar.set_position(started.elapsed().as_millis() as u64);
        bar.set_message(format!(
            "{} ops, {} faults",
            progress.n_ops.load(Ordering::Relaxed),
            progress.n_faults.load(Ordering::Relaxed)
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
