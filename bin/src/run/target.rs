//! `helios run --target processes|docker`: the register workload, with the same clients,
//! schedule, nemesis, history and checker as the embedded run, against metadata nodes that are
//! real processes: `helios node` processes on loopback started for the run, or containers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::ValueEnum;
use helios_cluster::process::{LocalClusterSpec, Ports};
use helios_workload::client::RunProgress;
use helios_workload::runner::{run_on, StartTarget, STARTUP_TIMEOUT};
use helios_workload::target::{FaultTarget, ProcessTarget};

use super::{progress_bar, replicated, report, run_config, tick, RunArgs};

/// Where `helios run` finds its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Five Raft metadata nodes in this process, over a simulated network.
    Embedded,
    /// `helios node` processes on 127.0.0.1, started for the run in `RUN_DIR/cluster/` and
    /// stopped after it; faults are SIGKILL and restart, SIGSTOP/SIGCONT, and peer filters.
    Processes,
}

impl Target {
    fn as_str(self) -> &'static str {
        match self {
            Target::Embedded => "embedded",
            Target::Processes => "processes",
        }
    }
}

/// `RUST_LOG` of node processes started for a run: their own log lines, without openraft's
/// routine complaints about lost messages.
const NODE_LOG_FILTER: &str = "info,openraft=warn";

/// Runs the register workload against real node processes; returns the checker's exit code.
pub fn run_on_target(args: &RunArgs, target: Target) -> anyhow::Result<i32> {
    if args.workload != "register" || replicated::wants_replication(args) {
        bail!(
            "--target {} runs the register workload on the metadata group only",
            target.as_str()
        );
    }
    if let Some(mode) = args.unsafe_mode {
        bail!(
            "--unsafe {} is a mode of the embedded cluster, not of --target {}",
            mode.as_str(),
            target.as_str()
        );
    }
    let config = run_config(args)?;
    // The seed comes first, so that a run that dies can be replayed.
    eprintln!(
        "helios run: seed {} against {} node {}",
        config.seed,
        config.nodes,
        target.as_str()
    );
    let start = starter(target, config.nodes, config.op_timeout)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let progress = Arc::new(RunProgress::default());
    let bar = progress_bar(args, config.time);
    let outcome = runtime
        .block_on(async {
            let limit = config.time + Duration::from_secs(600);
            let ticker = bar
                .clone()
                .map(|bar| tokio::spawn(tick(bar, Arc::clone(&progress), limit)));
            let outcome = run_on(&config, Arc::clone(&progress), start).await;
            if let Some(ticker) = ticker {
                ticker.abort();
            }
            outcome
        })
        .with_context(|| format!("run with seed {} failed", config.seed))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    report(args, &config, &outcome)
}

/// What starts the cluster of a run, given the run's directory.
fn starter(target: Target, n_nodes: usize, op_timeout: Duration) -> anyhow::Result<StartTarget> {
    match target {
        Target::Embedded => bail!("the embedded target is started by the runner itself"),
        Target::Processes => {
            let binary = std::env::current_exe().context("cannot find the helios binary")?;
            Ok(Box::new(move |run_dir| {
                let spec = LocalClusterSpec {
                    binary,
                    dir: run_dir.join("cluster"),
                    n_nodes,
                    ports: Ports::Free,
                    node_args: Vec::new(),
                    rust_log: Some(NODE_LOG_FILTER.to_owned()),
                    // A run that dies leaves no node behind.
                    exit_with_parent: true,
                };
                Box::pin(async move {
                    let target = ProcessTarget::start(spec, op_timeout, STARTUP_TIMEOUT).await?;
                    Ok(Arc::new(target) as Arc<dyn FaultTarget>)
                })
            }))
        }
    }
}
