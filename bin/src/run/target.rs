//! `helios run --target processes|docker`: the register workload, with the same clients,
//! schedule, nemesis, history and checker as the embedded run, against metadata nodes that are
//! real processes: `helios node` processes on loopback started for the run, or containers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::ValueEnum;
use helios_cluster::process::DOCKER_NODES;
use helios_cluster::process::{pick_free_ports, DockerClusterSpec, LocalClusterSpec, Ports};
use helios_workload::runner::{run_on, StartTarget, STARTUP_TIMEOUT};
use helios_workload::target::{DockerTarget, FaultTarget, ProcessTarget};
use helios_workload::WorkloadError;

use super::{drive_with_progress, replicated, report, run_config, RunArgs};

/// Where `helios run` finds its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Five Raft metadata nodes in this process, over a simulated network.
    Embedded,
    /// `helios node` processes on 127.0.0.1, started for the run in `RUN_DIR/cluster/` and
    /// stopped after it; faults are SIGKILL and restart, SIGSTOP/SIGCONT, and peer filters.
    Processes,
    /// Five containers of `docker/docker-compose.yml` on a private network, reached through
    /// ports published on 127.0.0.1; faults are `docker kill`/`start`, `docker pause`/`unpause`
    /// and `docker network disconnect`/`connect`.
    Docker,
}

impl Target {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Target::Embedded => "embedded",
            Target::Processes => "processes",
            Target::Docker => "docker",
        }
    }
}

/// `RUST_LOG` of node processes started for a run: their own log lines, without openraft's
/// routine complaints about lost messages.
pub(super) const NODE_LOG_FILTER: &str = "info,openraft=warn";

/// How long the containers may take to elect a leader: `docker-compose up` returns before the
/// nodes serve.
const DOCKER_STARTUP: Duration = Duration::from_secs(60);

/// The containers of one run: the image built (or found), the compose file in `dir`, a project
/// named after this process, and free host ports.
fn docker_spec(dir: &std::path::Path) -> anyhow::Result<DockerClusterSpec> {
    crate::docker::prepare_image(dir)?;
    Ok(DockerClusterSpec {
        compose_file: dir.join("docker-compose.yml"),
        project: format!("helios-run-{}", std::process::id()),
        image: crate::docker::IMAGE.to_owned(),
        ports: pick_free_ports(DOCKER_NODES).context("pick free ports")?,
    })
}

/// Runs the register workload against real node processes; returns the checker's exit code.
pub fn run_on_target(args: &RunArgs, target: Target) -> anyhow::Result<i32> {
    if args.workload == "register" && replicated::wants_replication(args) {
        if target != Target::Processes {
            bail!(
                "--target {} runs the metadata group only; replicated shards run embedded or as \
                 --target processes",
                target.as_str()
            );
        }
        return replicated::run_replicated(args);
    }
    if args.workload != "register" {
        bail!(
            "--target {} runs the register workload (on the metadata group, or on replicated \
             shards when --nemesis names a replication fault)",
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
    let outcome = drive_with_progress(args, config.time, |progress| {
        let config = config.clone();
        async move { run_on(&config, progress, start).await }
    })
    .with_context(|| format!("run with seed {} failed", config.seed))?;
    report(args, &config, &outcome)
}

/// What starts the cluster of a run, given the run's directory.
fn starter(target: Target, n_nodes: usize, op_timeout: Duration) -> anyhow::Result<StartTarget> {
    match target {
        Target::Embedded => bail!("the embedded target is started by the runner itself"),
        Target::Docker => {
            if n_nodes != DOCKER_NODES {
                bail!("--target docker runs the {DOCKER_NODES} nodes of docker/docker-compose.yml, not {n_nodes}");
            }
            Ok(Box::new(move |run_dir| {
                Box::pin(async move {
                    // Building the image blocks; keep it off the runtime's workers.
                    let dir = run_dir.join("docker");
                    let spec = tokio::task::spawn_blocking(move || docker_spec(&dir))
                        .await
                        .map_err(|error| WorkloadError::TaskFailed(error.to_string()))?
                        .map_err(|error| WorkloadError::TaskFailed(format!("{error:#}")))?;
                    let target = DockerTarget::start(spec, op_timeout, DOCKER_STARTUP).await?;
                    Ok(Arc::new(target) as Arc<dyn FaultTarget>)
                })
            }))
        }
        Target::Processes => {
            let binary = std::env::current_exe().context("cannot find the helios binary")?;
            Ok(Box::new(move |run_dir| {
                let spec = LocalClusterSpec {
                    binary,
                    dir: run_dir.join("cluster"),
                    n_nodes,
                    n_shards: 0,
                    n_compute: 0,
                    compute_args: Vec::new(),
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
