//! `helios cluster up|status|down|add-shard|rebalance`: a local cluster of `helios node`
//! processes (a metadata group, replicated shards of data nodes and witnesses, and compute
//! nodes), recorded in `DIR/cluster.json`, or (`--target docker`) the same as containers of
//! `docker/docker-compose.yml` (five metadata nodes, up to three shards), recorded in
//! `DIR/docker.json`; a local cluster takes shards at run time. Glue over
//! `helios_cluster::process`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use helios_cluster::process::{
    stop_all, AdminClient, ClusterManifest, ComputeClient, DockerCluster, DockerShards,
    LocalCluster, LocalClusterSpec, ManifestNode, NodeStatus, Ports, ProcessState, ShardClient,
    StopOutcome, DOCKER_COMPUTE, DOCKER_NODES, DOCKER_SHARDS,
};

use crate::docker::{container_state, prepare_image, state_of, DockerManifest, IMAGE};

/// Where `helios cluster up` starts the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// `helios node` processes on 127.0.0.1.
    Local,
    /// Containers of docker/docker-compose.yml (5 nodes), published on 127.0.0.1.
    Docker,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Start metadata node processes on 127.0.0.1 and wait until they elect a leader.
    Up(UpArgs),
    /// Print each node's health; exit 1 if a node is down or no node leads.
    Status(DirArgs),
    /// Stop every node: SIGTERM, then SIGKILL after the grace period.
    Down(DownArgs),
    /// Add a replicated shard to a running local cluster (two data nodes and a witness, as
    /// processes) and move its share of the rows to it while the compute nodes keep serving.
    AddShard(RebalanceArgs),
    /// Finish moving rows to the recorded ring, if a rebalance (`add-shard`) stopped part way.
    Rebalance(RebalanceArgs),
}

#[derive(Debug, Args)]
struct UpArgs {
    /// How many metadata nodes (ids 1..=N).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// How many replicated shards, each a primary, a mirror and a witness process.
    #[arg(long, default_value_t = 3)]
    shards: usize,
    /// How many compute nodes (local target only; they need a shard): 2 unless given.
    #[arg(long)]
    compute: Option<usize>,
    /// Node i listens on BASE_PORT + i - 1, and shard members follow the metadata nodes;
    /// without it, free ports are picked.
    #[arg(long)]
    base_port: Option<u16>,
    /// The cluster directory: cluster.json, node-<id>/ data, node-<id>.log (or, for docker,
    /// docker.json and the compose file).
    #[arg(long)]
    dir: PathBuf,
    /// Processes on this machine, or Docker containers (the image is built FROM scratch
    /// around a static helios; see docker/build-image.sh).
    #[arg(long, value_enum, default_value = "local")]
    target: Target,
    /// How long to wait for a leader, in seconds.
    #[arg(long, default_value_t = 30)]
    wait_secs: u64,
    /// RUST_LOG for the nodes (default: the nodes' own, info).
    #[arg(long)]
    rust_log: Option<String>,
    /// Further arguments for every `helios node`, after `--` (e.g. -- --heartbeat-ms 50).
    #[arg(last = true)]
    node_args: Vec<String>,
}

#[derive(Debug, Args)]
struct DirArgs {
    /// The cluster directory given to `helios cluster up`.
    #[arg(long)]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct DownArgs {
    /// The cluster directory given to `helios cluster up`.
    #[arg(long)]
    dir: PathBuf,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 10)]
    grace_secs: u64,
}

#[derive(Debug, Args)]
struct RebalanceArgs {
    /// The cluster directory given to `helios cluster up` (a local cluster).
    #[arg(long)]
    dir: PathBuf,
    /// The bound on the whole: the new shard's first primary and every row moved, in seconds.
    #[arg(long, default_value_t = 120)]
    wait_secs: u64,
}

pub fn run(args: ClusterArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    match args.command {
        ClusterCommand::Up(args) => runtime.block_on(up(args)),
        ClusterCommand::Status(args) => runtime.block_on(status(args)),
        ClusterCommand::Down(args) => down(args),
        ClusterCommand::AddShard(args) => runtime.block_on(add_shard(args)),
        ClusterCommand::Rebalance(args) => runtime.block_on(rebalance(args)),
    }
}

/// The local cluster of `dir`; a Docker cluster is refused by name.
fn attach_local(dir: &std::path::Path, command: &str) -> anyhow::Result<LocalCluster> {
    if DockerManifest::load(dir)?.is_some() {
        bail!(
            "{}: a Docker cluster; `helios cluster {command}` runs on local clusters (`cluster up \
             --target local`) only",
            dir.display()
        );
    }
    Ok(LocalCluster::attach(dir)?)
}

/// `add-shard`: start the new shard's processes, wait for its primary, rebalance; the new
/// processes outlive the command, recorded in `cluster.json` like the others.
async fn add_shard(args: RebalanceArgs) -> anyhow::Result<i32> {
    let mut cluster = attach_local(&args.dir, "add-shard")?;
    let old_shards = cluster.shard_count();
    if old_shards == 0 {
        bail!(
            "{}: the cluster has no shard to take rows from (`cluster up --shards 1` or more)",
            args.dir.display()
        );
    }
    let added = cluster.add_shard(Duration::from_secs(args.wait_secs)).await;
    for node in &cluster.manifest().nodes {
        if node.shard_member.is_some_and(|m| m.shard >= old_shards) {
            print_started(node);
        }
    }
    let dir = cluster.dir().to_path_buf();
    cluster.detach();
    match added {
        Ok((shard, report)) => {
            println!("shard {shard} added; rebalanced: {report}");
            Ok(0)
        }
        Err(error) => {
            eprintln!("helios cluster add-shard: {error}");
            eprintln!(
                "rows stay served by the ring as recorded; finish moving them with `helios \
                 cluster rebalance --dir {}`; logs: {}/*.log",
                dir.display(),
                dir.display()
            );
            Ok(1)
        }
    }
}

/// `rebalance`: finish the recorded ring's moves.
async fn rebalance(args: RebalanceArgs) -> anyhow::Result<i32> {
    let cluster = attach_local(&args.dir, "rebalance")?;
    match cluster.rebalance(Duration::from_secs(args.wait_secs)).await {
        Ok(report) if report.copied_rows + report.already_there + report.deleted_rows == 0 => {
            println!(
                "ring epoch {} over shards {:?}: settled, nothing to move",
                report.epoch, report.shards
            );
            Ok(0)
        }
        Ok(report) => {
            println!("rebalanced: {report}");
            Ok(0)
        }
        Err(error) => {
            eprintln!("helios cluster rebalance: {error}");
            Ok(1)
        }
    }
}

async fn up(args: UpArgs) -> anyhow::Result<i32> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if args.target == Target::Docker {
        return up_docker(args).await;
    }
    if let Ok(manifest) = ClusterManifest::load(&args.dir) {
        let live: Vec<_> = manifest
            .nodes
            .iter()
            .filter(|node| node.process_state() != ProcessState::Gone)
            .map(|node| node.id)
            .collect();
        if !live.is_empty() {
            bail!(
                "{}: nodes {live:?} of a cluster still run; `helios cluster down --dir {}` first",
                args.dir.display(),
                args.dir.display()
            );
        }
    }
    let n_compute = match args.compute {
        Some(n) if n > 0 && args.shards == 0 => bail!("compute nodes need --shards 1 or more"),
        Some(n) => n,
        None if args.shards == 0 => 0,
        None => 2,
    };
    let binary = std::env::current_exe().context("cannot find the helios binary")?;
    let cluster = LocalCluster::start(LocalClusterSpec {
        binary,
        dir: args.dir.clone(),
        n_nodes: args.nodes,
        n_shards: args.shards,
        n_compute,
        compute_args: Vec::new(),
        ports: args.base_port.map_or(Ports::Free, Ports::Base),
        node_args: args.node_args.clone(),
        rust_log: args.rust_log.clone(),
        exit_with_parent: false,
    })?;
    for node in &cluster.manifest().nodes {
        print_started(node);
    }
    let bound = Duration::from_secs(args.wait_secs);
    let mut primaries = Vec::new();
    for shard in 0..cluster.shard_count() {
        match cluster.wait_for_primary(shard, bound).await {
            Ok(primary) => primaries.push(format!("shard {shard}: storage-{primary}")),
            Err(error) => {
                eprintln!("helios cluster up: shard {shard}: {error}");
                eprintln!("logs: {}/*.log", cluster.dir().display());
                return Ok(1);
            }
        }
    }
    if !primaries.is_empty() {
        println!("primaries: {}", primaries.join(", "));
    }
    for index in cluster.compute_nodes() {
        if let Err(error) = cluster.wait_for_cache(index, bound).await {
            eprintln!("helios cluster up: {error}");
            eprintln!("logs: {}/compute-{index}.log", cluster.dir().display());
            return Ok(1);
        }
        println!("compute-{index}: holds a cache lease from every data node");
    }
    match cluster.wait_for_leader(&[], bound).await {
        Ok(leader) => {
            let status = cluster.status(leader).await?;
            println!(
                "leader: node {leader} at {} (term {})",
                cluster.manifest().nodes[(leader - 1) as usize].addr,
                status.term
            );
            println!(
                "cluster: {}",
                ClusterManifest::path_in(cluster.dir()).display()
            );
            // The nodes outlive this command; cluster.json is how `status` and `down` find them.
            cluster.detach();
            Ok(0)
        }
        Err(error) => {
            // Dropping the cluster kills the nodes; their logs stay for diagnosis.
            eprintln!("helios cluster up: {error}");
            eprintln!("node logs: {}/node-*.log", cluster.dir().display());
            Ok(1)
        }
    }
}

/// `up --target docker`: build the image, start the metadata containers and wait for a leader,
/// start the shard members' containers (a project of their own) and wait for every shard's
/// primary, record `DIR/docker.json`.
async fn up_docker(args: UpArgs) -> anyhow::Result<i32> {
    if args.nodes != DOCKER_NODES {
        bail!("--target docker starts the {DOCKER_NODES} nodes of docker/docker-compose.yml");
    }
    let n_compute = match args.compute {
        Some(n) if n > DOCKER_COMPUTE => {
            bail!("--target docker has at most the {DOCKER_COMPUTE} compute nodes of docker/docker-compose.yml")
        }
        Some(n) if n > 0 && args.shards == 0 => bail!("compute nodes need --shards 1 or more"),
        Some(n) => n,
        None if args.shards == 0 => 0,
        None => DOCKER_COMPUTE,
    };
    if args.shards > DOCKER_SHARDS {
        bail!(
            "--target docker has at most the {DOCKER_SHARDS} shards of docker/docker-compose.yml"
        );
    }
    if !args.node_args.is_empty() {
        bail!("--target docker takes the node arguments of docker/docker-compose.yml");
    }
    prepare_image(&args.dir)?;
    let base = args.base_port.unwrap_or(7101);
    // Shard members follow the metadata nodes with --base-port; else the compose defaults.
    let shard_base = args
        .base_port
        .map_or(7200, |base| base + DOCKER_NODES as u16);
    let manifest = DockerManifest {
        project: "helios".to_owned(),
        image: IMAGE.to_owned(),
        ports: (0..DOCKER_NODES as u16).map(|i| base + i).collect(),
        shard_ports: (0..3 * args.shards as u16)
            .map(|m| shard_base + m)
            .collect(),
        compute_ports: (0..n_compute as u16)
            .map(|c| shard_base + 3 * DOCKER_SHARDS as u16 + c)
            .collect(),
    };
    let cluster = DockerCluster::up(manifest.spec(&args.dir))?;
    manifest.save(&args.dir)?;
    for (id, addr) in cluster.addresses() {
        println!("node {id} container {} on {addr}", cluster.container(id));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(args.wait_secs);
    let mut leader = None;
    while leader.is_none() && std::time::Instant::now() < deadline {
        for (id, addr) in cluster.addresses() {
            if let Ok(status) = AdminClient::new(addr.clone()).status().await {
                if status.is_leader {
                    println!("leader: node {id} at {addr} (term {})", status.term);
                    leader = Some(id);
                    break;
                }
            }
        }
        if leader.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if leader.is_none() {
        eprintln!("helios cluster up: no leader within {} s", args.wait_secs);
        eprintln!("node logs: docker logs {}", cluster.container(1));
        // Dropping the cluster removes the containers.
        return Ok(1);
    }
    let shards = match manifest.shards_spec(&args.dir) {
        Some(spec) => {
            let shards = DockerShards::up(spec)?;
            let client = shards.shard_client(Duration::from_secs(1));
            for shard in 0..shards.shard_count() {
                let primary = loop {
                    if let Some(primary) = shard_primary(&client, shard).await {
                        break Some(primary);
                    }
                    if std::time::Instant::now() >= deadline {
                        break None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                let base = 3 * shard as u64;
                for member in base..base + 3 {
                    println!(
                        "shard {shard} member {member} container {} on {}",
                        shards.container(member),
                        client.addrs()[&(shard, member)]
                    );
                }
                match primary {
                    Some(primary) => println!("shard {shard}: primary storage-{primary}"),
                    None => {
                        eprintln!(
                            "helios cluster up: shard {shard} has no primary within {} s",
                            args.wait_secs
                        );
                        eprintln!("member logs: docker logs {}", shards.container(base));
                        // Dropping both removes the containers.
                        return Ok(1);
                    }
                }
            }
            for (c, addr) in shards.compute_addresses().into_iter().enumerate() {
                let client = ComputeClient::new(addr.clone(), Duration::from_secs(1));
                let leased = loop {
                    if let Ok(status) = client.status().await {
                        if status.cacheable_shards.len() == shards.shard_count() {
                            break true;
                        }
                    }
                    if std::time::Instant::now() >= deadline {
                        break false;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                let container = shards.compute_container(c);
                if !leased {
                    eprintln!(
                        "helios cluster up: compute-{c} holds no lease from every data node \
                         within {} s; logs: docker logs {container}",
                        args.wait_secs
                    );
                    return Ok(1);
                }
                println!("compute-{c} container {container} on {addr}: holds its cache leases");
            }
            Some(shards)
        }
        None => None,
    };
    println!("cluster: {}", DockerManifest::path_in(&args.dir).display());
    cluster.detach();
    if let Some(shards) = shards {
        shards.detach();
    }
    Ok(0)
}

/// The data node of `shard` that acts as primary, if one answers that it does.
async fn shard_primary(client: &ShardClient, shard: usize) -> Option<u64> {
    let base = 3 * shard as u64;
    for member in [base, base + 1] {
        if let Ok(status) = client.status(shard, member).await {
            if status.is_primary {
                return Some(member);
            }
        }
    }
    None
}

/// The line `up` and `add-shard` print for a node process they started.
fn print_started(node: &ManifestNode) {
    println!(
        "{} pid {} on {}  data {}  log {}",
        node_name(node),
        node.pid,
        node.addr,
        node.data_dir.display(),
        node.log_file.display()
    );
}

/// How `up` and `status` name a node process.
fn node_name(node: &ManifestNode) -> String {
    if let Some(index) = node.compute {
        return format!("compute-{index}");
    }
    match node.shard_member {
        None => format!("node {}", node.id),
        Some(m) if m.witness => format!("witness-{} (shard {})", m.member, m.shard),
        Some(m) => format!("storage-{} (shard {})", m.member, m.shard),
    }
}

/// The compute nodes of a local cluster as [`compute_statuses`] takes them.
fn local_computes(manifest: &ClusterManifest) -> Vec<(String, String, String)> {
    manifest
        .nodes
        .iter()
        .filter(|n| n.compute.is_some())
        .map(|node| {
            let state = format!("pid {} {:?}", node.pid, node.process_state());
            (node_name(node), node.addr.clone(), state)
        })
        .collect()
}

/// Prints a line per compute node, given as (name, address, process state); whether each
/// answered and may serve every one of the `n_shards` shards from its cache.
async fn compute_statuses(computes: &[(String, String, String)], n_shards: usize) -> bool {
    let mut healthy = true;
    for (name, addr, state) in computes {
        let client = ComputeClient::new(addr.clone(), Duration::from_secs(2));
        let line = match client.status().await {
            Ok(s) => {
                let leased = s.cacheable_shards.len() == n_shards;
                healthy &= leased;
                format!(
                    "{} rows cached, {} invalidations, {} cache drops, leases from {}/{} shards, \
                     {} transactions open, {} abandoned aborted",
                    s.cached_rows,
                    s.invalidations,
                    s.cache_drops,
                    s.cacheable_shards.len(),
                    n_shards,
                    s.open_transactions,
                    s.aborted_abandoned
                )
            }
            Err(error) => {
                healthy = false;
                format!("no answer: {error}")
            }
        };
        println!("{name:<22} {addr:<21} {line} ({state})");
    }
    healthy
}

/// Prints a line per shard member and one per shard; whether every member answered and every
/// shard has exactly one primary.
async fn member_statuses(members: &[ManifestNode]) -> bool {
    let addrs = members
        .iter()
        .filter_map(|n| {
            n.shard_member
                .map(|m| ((m.shard, m.member), n.addr.clone()))
        })
        .collect();
    let client = ShardClient::new(addrs, Duration::from_secs(2));
    let mut healthy = true;
    let mut primaries: std::collections::BTreeMap<usize, Vec<u64>> = Default::default();
    for node in members {
        let Some(m) = node.shard_member else { continue };
        primaries.entry(m.shard).or_default();
        let process = node.process_state();
        let line = match client.status(m.shard, m.member).await {
            Ok(s) => {
                if s.is_primary {
                    primaries.entry(m.shard).or_default().push(m.member);
                }
                let role = if s.witness {
                    "witness"
                } else if s.is_primary {
                    "PRIMARY"
                } else if s.record.primary == m.member {
                    "primary (no lease)"
                } else {
                    "mirror"
                };
                healthy &= process == ProcessState::Running && !s.stopped;
                format!(
                    "{:<22} {:<21} pid {:<7} {role:<18} epoch {:<4} commit {:<6} blocked {:?}",
                    node_name(node),
                    node.addr,
                    node.pid,
                    s.record.epoch,
                    s.commit_index.map_or("-".to_string(), |i| i.to_string()),
                    s.blocked_peers,
                )
            }
            Err(error) => {
                healthy = false;
                format!(
                    "{:<22} {:<21} pid {:<7} no answer: {error}",
                    node_name(node),
                    node.addr,
                    node.pid
                )
            }
        };
        println!("{line}");
    }
    for (shard, found) in primaries {
        match found.as_slice() {
            [p] => println!("shard {shard}: primary storage-{p}"),
            [] => {
                healthy = false;
                println!("shard {shard}: no primary");
            }
            many => {
                healthy = false;
                println!("shard {shard}: several primaries hold a lease: {many:?}");
            }
        }
    }
    healthy
}

/// One line of `helios cluster status`.
fn status_line(
    id: u64,
    addr: &str,
    pid: u32,
    process: ProcessState,
    status: &Result<NodeStatus, String>,
) -> String {
    let process = match process {
        ProcessState::Running => "alive",
        ProcessState::Stopped => "paused",
        ProcessState::Gone => "down",
    };
    match status {
        Ok(s) => format!(
            "node {id}  {addr:<21} pid {pid:<7} {process:<6} {:<8} term {:<4} leader {:<4} applied {:<6} blocked {:?}",
            if s.is_leader { "LEADER" } else { "follower" },
            s.term,
            s.leader.map_or("-".to_string(), |l| l.to_string()),
            s.last_applied_index.map_or("-".to_string(), |i| i.to_string()),
            s.blocked_peers,
        ),
        Err(error) => format!("node {id}  {addr:<21} pid {pid:<7} {process:<6} no answer: {error}"),
    }
}

/// `status` of a docker cluster: Docker's state of each container and each node's own status.
async fn status_docker(dir: &std::path::Path, manifest: &DockerManifest) -> anyhow::Result<i32> {
    let cluster = DockerCluster::attach(manifest.spec(dir));
    let mut leaders = Vec::new();
    let mut healthy = true;
    for (id, addr) in cluster.addresses() {
        let state = container_state(&cluster, id);
        let status = AdminClient::new(addr.clone()).status().await;
        match &status {
            Ok(s) if s.is_leader => leaders.push(id),
            Ok(_) => {}
            Err(_) => healthy = false,
        }
        let status = status.map_err(|e| e.to_string());
        let process = match state.as_str() {
            "running" => ProcessState::Running,
            "paused" => ProcessState::Stopped,
            _ => ProcessState::Gone,
        };
        println!("{} ({state})", status_line(id, &addr, 0, process, &status));
    }
    println!(
        "{}",
        match leaders.as_slice() {
            [] => "no leader".to_owned(),
            [l] => format!("leader: node {l}"),
            many => format!("several nodes hold a lease: {many:?}"),
        }
    );
    if let Some(spec) = manifest.shards_spec(dir) {
        let shards = DockerShards::attach(spec);
        healthy &= shard_statuses_docker(&shards).await;
        let computes: Vec<(String, String, String)> = shards
            .compute_addresses()
            .into_iter()
            .enumerate()
            .map(|(c, addr)| {
                let state = state_of(&shards.compute_container(c));
                (format!("compute-{c}"), addr, state)
            })
            .collect();
        healthy &= compute_statuses(&computes, shards.shard_count()).await;
    }
    Ok(if healthy && !leaders.is_empty() { 0 } else { 1 })
}

/// Prints a line per shard member container (Docker's state and the member's own status) and
/// one per shard; whether every member answered and every shard has exactly one primary.
async fn shard_statuses_docker(shards: &DockerShards) -> bool {
    let client = shards.shard_client(Duration::from_secs(2));
    let mut healthy = true;
    for shard in 0..shards.shard_count() {
        let mut primaries = Vec::new();
        let base = 3 * shard as u64;
        for member in base..base + 3 {
            let container = shards.container(member);
            let state = state_of(&container);
            let addr = &client.addrs()[&(shard, member)];
            let name = if member == base + 2 {
                format!("witness-{member} (shard {shard})")
            } else {
                format!("storage-{member} (shard {shard})")
            };
            match client.status(shard, member).await {
                Ok(s) => {
                    if s.is_primary {
                        primaries.push(member);
                    }
                    let role = if s.witness {
                        "witness"
                    } else if s.is_primary {
                        "PRIMARY"
                    } else if s.record.primary == member {
                        "primary (no lease)"
                    } else {
                        "mirror"
                    };
                    healthy &= state == "running" && !s.stopped;
                    println!(
                        "{name:<22} {addr:<21} {role:<18} epoch {:<4} commit {:<6} blocked {:?} \
                         ({state})",
                        s.record.epoch,
                        s.commit_index.map_or("-".to_string(), |i| i.to_string()),
                        s.blocked_peers,
                    );
                }
                Err(error) => {
                    healthy = false;
                    println!("{name:<22} {addr:<21} no answer: {error} ({state})");
                }
            }
        }
        match primaries.as_slice() {
            [p] => println!("shard {shard}: primary storage-{p}"),
            [] => {
                healthy = false;
                println!("shard {shard}: no primary");
            }
            many => {
                healthy = false;
                println!("shard {shard}: several primaries {many:?}");
            }
        }
    }
    healthy
}

async fn status(args: DirArgs) -> anyhow::Result<i32> {
    if let Some(manifest) = DockerManifest::load(&args.dir)? {
        return status_docker(&args.dir, &manifest).await;
    }
    let manifest = ClusterManifest::load(&args.dir)?;
    let mut queries = tokio::task::JoinSet::new();
    let (members, metadata): (Vec<_>, Vec<_>) = manifest
        .nodes
        .iter()
        .filter(|node| node.compute.is_none())
        .cloned()
        .partition(|node| node.shard_member.is_some());
    let mut healthy = member_statuses(&members).await;
    let n_shards = manifest
        .nodes
        .iter()
        .filter_map(|n| n.shard_member.map(|m| m.shard + 1))
        .max()
        .unwrap_or(0);
    healthy &= compute_statuses(&local_computes(&manifest), n_shards).await;
    for node in metadata.clone() {
        queries.spawn(async move {
            let status = AdminClient::new(node.addr.clone())
                .status()
                .await
                .map_err(|e| e.to_string());
            (node.id, status)
        });
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(joined) = queries.join_next().await {
        let (id, status) = joined.context("status query panicked")?;
        statuses.insert(id, status);
    }
    let mut leaders = Vec::new();
    for node in &metadata {
        let process = node.process_state();
        let status = &statuses[&node.id];
        println!(
            "{}",
            status_line(node.id, &node.addr, node.pid, process, status)
        );
        match status {
            Ok(s) if process == ProcessState::Running => {
                if s.is_leader {
                    leaders.push(node.id);
                }
            }
            _ => healthy = false,
        }
    }
    match leaders.as_slice() {
        [] => {
            println!("no leader");
            healthy = false;
        }
        [leader] => println!("leader: node {leader}"),
        several => println!("several nodes hold a lease: {several:?}"),
    }
    Ok(if healthy && !leaders.is_empty() { 0 } else { 1 })
}

fn down(args: DownArgs) -> anyhow::Result<i32> {
    if let Some(manifest) = DockerManifest::load(&args.dir)? {
        if let Some(spec) = manifest.shards_spec(&args.dir) {
            let project = spec.project.clone();
            DockerShards::attach(spec).down()?;
            println!("containers and network of project {project} (the shards) removed");
        }
        let mut cluster = DockerCluster::attach(manifest.spec(&args.dir));
        cluster.down()?;
        std::fs::remove_file(DockerManifest::path_in(&args.dir))?;
        println!(
            "containers and network of project {} removed",
            manifest.project
        );
        return Ok(0);
    }
    let manifest = ClusterManifest::load(&args.dir)?;
    let mut failed = false;
    for (id, outcome) in stop_all(&manifest, Duration::from_secs(args.grace_secs)) {
        let text = match &outcome {
            StopOutcome::AlreadyGone => "already down".to_string(),
            StopOutcome::Terminated => "stopped (SIGTERM)".to_string(),
            StopOutcome::Killed => "killed (SIGKILL after the grace period)".to_string(),
            StopOutcome::Failed(reason) => {
                failed = true;
                format!("FAILED: {reason}")
            }
        };
        println!("node {id}: {text}");
    }
    Ok(if failed { 1 } else { 0 })
}
