//! `helios node`: one node as its own process, until SIGTERM or SIGINT: a metadata node (the
//! library's `NodeServer`), a data node or witness of a replicated shard (`MemberServer`), or a
//! compute node (`ComputeServer`).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use helios_cluster::process::{
    ComputeConfig, ComputeServer, InitPolicy, MemberAddrs, MemberConfig, MemberRole, MemberServer,
    NodeConfig, NodeServer,
};
use helios_cluster::{NodeId, NodeSettings};
use tokio::signal::unix::{signal, SignalKind};

/// The kinds of node a process can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// A member of the metadata Raft group.
    Metadata,
    /// A data node (primary or mirror) of a replicated shard; needs --shard and --witness.
    Storage,
    /// The witness of a replicated shard; needs --shard. Its data nodes are the other --peers.
    Witness,
    /// A compute node: SQL, a row cache kept fresh by leases; needs --listen and --storage,
    /// and --peers lists the metadata group (where table schemas live).
    Compute,
}

/// When this node forms the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Init {
    /// The node with the lowest id among --peers forms the group, if its data directory is new.
    LowestId,
    /// This node forms the group if its data directory is new.
    Always,
    /// Never: wait to hear from a leader.
    Never,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// What the node is.
    #[arg(long, value_enum)]
    role: Role,
    /// The node's id; it must appear in --peers.
    #[arg(long)]
    id: NodeId,
    /// Where to listen for peers, clients and the admin endpoint: HOST:PORT, or a PORT alone
    /// for loopback. Default: 127.0.0.1 and the port of this node's entry in --peers.
    #[arg(long, value_parser = parse_listen)]
    listen: Option<SocketAddr>,
    /// Every member of the group, this node included: ID=HOST:PORT,ID=HOST:PORT,... For a
    /// compute node: the metadata group's nodes.
    #[arg(long, value_parser = parse_peers)]
    peers: Peers,
    /// Where the vote, the Raft log and the state machine are kept (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// When this node forms the group.
    #[arg(long, value_enum, default_value = "lowest-id")]
    init: Init,
    /// How often the leader sends heartbeats, in milliseconds.
    #[arg(long, default_value_t = 30)]
    heartbeat_ms: u64,
    /// The election timeout range MIN..MAX, in milliseconds (a random draw in it per term).
    #[arg(long, default_value = "100..200", value_parser = parse_range)]
    election_timeout_ms: (u64, u64),
    /// The bound on one client request inside the node, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    request_timeout_ms: u64,
    /// Exit when the parent process exits (a test aid: nodes started by a test runner that is
    /// killed do not outlive it).
    #[arg(long)]
    exit_with_parent: bool,
    /// Metadata: nodes that are not members but may be added later, ID=HOST:PORT,... (their
    /// addresses are known from the start; they are never voters when the group forms).
    #[arg(long, value_parser = parse_peers)]
    spare_peers: Option<Peers>,
    /// Storage and witness: the shard this node belongs to. --peers then lists the shard's
    /// three members (two data nodes and the witness), by their ids within the shard.
    #[arg(long)]
    shard: Option<usize>,
    /// Storage: the id of the shard's witness among --peers.
    #[arg(long)]
    witness: Option<NodeId>,
    /// Storage and witness: the shard's first primary, used only when the data directory is
    /// new; every member of the shard must be given the same. Default: the lower data node id.
    #[arg(long)]
    first_primary: Option<NodeId>,
    /// Compute: every data node of every shard, SHARD.ID=HOST:PORT,... (not the witnesses).
    #[arg(long, value_parser = parse_storage)]
    storage: Option<Storage>,
    /// Compute: the address shard members deliver invalidations to (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// Compute, a deliberately broken test aid: acknowledge invalidations without applying
    /// them, so cached rows go stale (the checker must catch it).
    #[arg(long)]
    unsafe_skip_invalidation: bool,
    /// Compute, a deliberately broken test aid: statements read other transactions'
    /// uncommitted writes (dirty reads; the isolation checker must catch it).
    #[arg(long)]
    unsafe_dirty_reads: bool,
}

/// The data nodes of `--storage`, by (shard, member id).
#[derive(Clone, Debug)]
pub struct Storage(MemberAddrs);

fn parse_storage(text: &str) -> Result<Storage, String> {
    let mut members = MemberAddrs::new();
    for item in text.split(',').filter(|item| !item.trim().is_empty()) {
        let (name, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("storage node {item:?}: expected SHARD.ID=HOST:PORT"))?;
        let (shard, id) = name
            .trim()
            .split_once('.')
            .ok_or_else(|| format!("storage node {item:?}: expected SHARD.ID before '='"))?;
        let shard: usize = shard
            .parse()
            .map_err(|_| format!("storage node {item:?}: shard {shard:?} is not a number"))?;
        let id: NodeId = id
            .parse()
            .map_err(|_| format!("storage node {item:?}: id {id:?} is not a number"))?;
        let addr = addr.trim();
        if !addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        {
            return Err(format!(
                "storage node {item:?}: address {addr:?} is not HOST:PORT"
            ));
        }
        if members.insert((shard, id), addr.to_string()).is_some() {
            return Err(format!("storage node {shard}.{id} appears twice"));
        }
    }
    if members.is_empty() {
        return Err("no storage nodes given".to_string());
    }
    Ok(Storage(members))
}

/// The peers of `--peers`, by id.
#[derive(Clone, Debug)]
pub struct Peers(BTreeMap<NodeId, String>);

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse()
        .map_err(|_| format!("expected HOST:PORT (an IP address) or a port, found {text:?}"))
}

fn parse_peers(text: &str) -> Result<Peers, String> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').filter(|item| !item.trim().is_empty()) {
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("peer {item:?}: expected ID=HOST:PORT"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| format!("peer {item:?}: id {id:?} is not a number"))?;
        let addr = addr.trim();
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!("peer {item:?}: address {addr:?} is not HOST:PORT"));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("peer id {id} appears twice"));
        }
    }
    if peers.is_empty() {
        return Err("no peers given".to_string());
    }
    Ok(Peers(peers))
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (min, max) = text
        .split_once("..")
        .ok_or_else(|| format!("expected MIN..MAX, found {text:?}"))?;
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("{s:?} is not a number of milliseconds"))
    };
    let (min, max) = (parse(min)?, parse(max)?);
    if min >= max {
        return Err(format!("the range {min}..{max} is empty"));
    }
    Ok((min, max))
}

/// The address to listen on: --listen, else loopback and the port of this node's peer entry.
fn listen_addr(args: &NodeArgs) -> anyhow::Result<SocketAddr> {
    if let Some(listen) = args.listen {
        return Ok(listen);
    }
    let own = &args.peers.0[&args.id];
    let port = own
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .with_context(|| format!("--peers entry {}={own} has no port", args.id))?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

fn check_no_compute_flags(args: &NodeArgs) -> anyhow::Result<()> {
    if args.storage.is_some()
        || args.advertise.is_some()
        || args.unsafe_skip_invalidation
        || args.unsafe_dirty_reads
    {
        bail!(
            "--storage, --advertise, --unsafe-skip-invalidation and --unsafe-dirty-reads are \
             for compute nodes"
        );
    }
    Ok(())
}

fn check_id_among_peers(args: &NodeArgs) -> anyhow::Result<()> {
    check_no_compute_flags(args)?;
    if !args.peers.0.contains_key(&args.id) {
        bail!(
            "--id {} is not among --peers (ids {:?})",
            args.id,
            args.peers.0.keys().collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// The configuration of a storage or witness node.
fn member_config(args: &NodeArgs) -> anyhow::Result<MemberConfig> {
    check_id_among_peers(args)?;
    if args.spare_peers.is_some() {
        bail!("--spare-peers is for metadata nodes");
    }
    let peers = args.peers.0.clone();
    let Some(shard) = args.shard else {
        let role = args
            .role
            .to_possible_value()
            .map_or_else(String::new, |value| value.get_name().to_owned());
        bail!("--role {role} needs --shard");
    };
    if peers.len() != 3 {
        bail!(
            "a shard has three members (two data nodes and a witness); --peers lists {:?}",
            peers.keys().collect::<Vec<_>>()
        );
    }
    let others: Vec<NodeId> = peers.keys().copied().filter(|&id| id != args.id).collect();
    let role = match args.role {
        Role::Storage => {
            let Some(witness) = args.witness else {
                bail!("--role storage needs --witness (the id of the shard's witness)");
            };
            if !others.contains(&witness) {
                bail!("--witness {witness} is not another member among --peers {others:?}");
            }
            let peer = others
                .iter()
                .copied()
                .find(|&id| id != witness)
                .context("the shard's other data node")?;
            MemberRole::DataNode { peer, witness }
        }
        Role::Witness => {
            if args.witness.is_some() {
                bail!("--witness is for storage nodes; a witness's data nodes are its --peers");
            }
            MemberRole::Witness {
                replicas: [others[0], others[1]],
            }
        }
        Role::Metadata | Role::Compute => bail!("a {:?} node has no shard", args.role),
    };
    let listen = listen_addr(args)?;
    let mut config = MemberConfig::new(shard, args.id, role, listen, peers, args.data_dir.clone());
    if let Some(first) = args.first_primary {
        config.initial_primary = first;
    }
    config.request_timeout = Duration::from_millis(args.request_timeout_ms);
    Ok(config)
}

/// The configuration of a compute node.
fn compute_config(args: &NodeArgs) -> anyhow::Result<ComputeConfig> {
    if args.shard.is_some() || args.witness.is_some() || args.first_primary.is_some() {
        bail!("--shard, --witness and --first-primary are for storage and witness nodes");
    }
    if args.spare_peers.is_some() {
        bail!("--spare-peers is for metadata nodes");
    }
    let Some(listen) = args.listen else {
        bail!("--role compute needs --listen (its address is not among --peers)");
    };
    let Some(storage) = &args.storage else {
        bail!("--role compute needs --storage (every data node of every shard)");
    };
    let id = u32::try_from(args.id).context("--id of a compute node must fit 32 bits")?;
    let mut config = ComputeConfig::new(id, listen, storage.0.clone(), args.peers.0.clone());
    config.advertise.clone_from(&args.advertise);
    config.unsafe_skip_invalidation = args.unsafe_skip_invalidation;
    config.unsafe_dirty_reads = args.unsafe_dirty_reads;
    Ok(config)
}

fn config(args: &NodeArgs) -> anyhow::Result<NodeConfig> {
    if args.shard.is_some() || args.witness.is_some() || args.first_primary.is_some() {
        bail!("--shard, --witness and --first-primary are for storage and witness nodes");
    }
    check_id_among_peers(args)?;
    let peers = args.peers.0.clone();
    let (election_min, election_max) = args.election_timeout_ms;
    if args.heartbeat_ms == 0 || args.heartbeat_ms >= election_min {
        bail!(
            "--heartbeat-ms {} must be positive and below the election timeout's minimum {election_min}",
            args.heartbeat_ms
        );
    }
    let listen = listen_addr(args)?;
    let mut config = NodeConfig::new(args.id, listen, peers, args.data_dir.clone());
    if let Some(spare) = &args.spare_peers {
        if let Some(id) = spare.0.keys().find(|id| config.peers.contains_key(id)) {
            bail!("--spare-peers names node {id}, which --peers already has");
        }
        config.spare_peers = spare.0.clone();
    }
    config.settings = NodeSettings {
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms),
        election_timeout_min: Duration::from_millis(election_min),
        election_timeout_max: Duration::from_millis(election_max),
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        unsafe_stale_reads: false,
    };
    config.init = match args.init {
        Init::LowestId => InitPolicy::LowestIdWhenPristine,
        Init::Always => InitPolicy::WhenPristine,
        Init::Never => InitPolicy::Never,
    };
    Ok(config)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // openraft logs every lost message at error level, which faults make routine.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Node logs usually go to a file (helios cluster up), where colour codes are noise.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Why the node stops.
#[derive(Debug)]
enum Stop {
    Signal(&'static str),
    ParentExited,
    Failed(String),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Signal(name) => write!(f, "{name} received"),
            Stop::ParentExited => f.write_str("the parent process exited"),
            Stop::Failed(reason) => write!(f, "stopped: {reason}"),
        }
    }
}

/// How often the node checks its parent and its Raft.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);
/// The bound on a clean shutdown.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);

async fn wait_for_stop(
    exit_with_parent: bool,
    failed: impl Fn() -> Option<String>,
) -> anyhow::Result<Stop> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let parent = std::os::unix::process::parent_id();
    let mut watch = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = terminate.recv() => return Ok(Stop::Signal("SIGTERM")),
            _ = interrupt.recv() => return Ok(Stop::Signal("SIGINT")),
            _ = watch.tick() => {
                if exit_with_parent && std::os::unix::process::parent_id() != parent {
                    return Ok(Stop::ParentExited);
                }
                if let Some(fatal) = failed() {
                    return Ok(Stop::Failed(fatal));
                }
            }
        }
    }
}

/// The server a node process runs.
enum Server {
    Metadata(NodeServer),
    Member(MemberServer),
    Compute(ComputeServer),
}

impl Server {
    /// Starts the server that `args` describe.
    async fn start(args: &NodeArgs) -> anyhow::Result<Self> {
        Ok(match args.role {
            Role::Metadata => Server::Metadata(
                NodeServer::start(config(args)?)
                    .await
                    .with_context(|| format!("node {} did not start", args.id))?,
            ),
            Role::Storage | Role::Witness => Server::Member(
                MemberServer::start(member_config(args)?)
                    .await
                    .with_context(|| {
                        format!(
                            "{:?} node {} of shard {:?} did not start",
                            args.role, args.id, args.shard
                        )
                    })?,
            ),
            Role::Compute => Server::Compute(
                ComputeServer::start(compute_config(args)?)
                    .await
                    .with_context(|| format!("compute node {} did not start", args.id))?,
            ),
        })
    }

    /// Why the server can no longer serve, if it cannot.
    fn failure(&self) -> Option<String> {
        match self {
            Server::Metadata(server) => server
                .node()
                .metrics()
                .and_then(|metrics| metrics.running_state.err())
                .map(|fatal| format!("raft: {fatal}")),
            Server::Member(server) => server
                .status()
                .stopped
                .then(|| "the member could not save its state".to_string()),
            Server::Compute(_) => None,
        }
    }

    async fn shutdown(self) {
        match self {
            Server::Metadata(server) => server.shutdown().await,
            Server::Member(server) => server.shutdown().await,
            Server::Compute(server) => server.shutdown().await,
        }
    }
}

pub fn run(args: NodeArgs) -> anyhow::Result<i32> {
    // Bad flags are reported before anything starts.
    match args.role {
        Role::Metadata => drop(config(&args)?),
        Role::Storage | Role::Witness => drop(member_config(&args)?),
        Role::Compute => drop(compute_config(&args)?),
    }
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let code = runtime.block_on(async {
        let server = Server::start(&args).await?;
        let stop = wait_for_stop(args.exit_with_parent, || server.failure()).await?;
        tracing::info!(node = args.id, reason = %stop, "stopping");
        if tokio::time::timeout(SHUTDOWN_BOUND, server.shutdown())
            .await
            .is_err()
        {
            tracing::error!(
                node = args.id,
                "shutdown took longer than {SHUTDOWN_BOUND:?}"
            );
        }
        anyhow::Ok(match stop {
            Stop::Signal(_) | Stop::ParentExited => 0,
            Stop::Failed(_) => {
                eprintln!("helios node {}: {stop}", args.id);
                1
            }
        })
    })?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_ones_are_named() {
        let peers = parse_peers("1=127.0.0.1:7001, 2=m2:7002").expect("valid");
        assert_eq!(peers.0[&2], "m2:7002");
        let error = parse_peers("1=127.0.0.1:7001,1=127.0.0.1:7002").expect_err("twice");
        assert_eq!(error, "peer id 1 appears twice");
        assert!(parse_peers("one=x:1")
            .expect_err("id")
            .contains("not a number"));
        assert!(parse_peers("1=localhost")
            .expect_err("port")
            .contains("HOST:PORT"));
        assert!(parse_peers("").is_err());
    }

    #[test]
    fn storage_nodes_parse_by_shard_and_id() {
        let storage =
            parse_storage("0.0=127.0.0.1:7100,0.1=127.0.0.1:7101, 1.3=s3:7000").expect("valid");
        assert_eq!(storage.0[&(1, 3)], "s3:7000");
        assert_eq!(storage.0.len(), 3);
        assert!(parse_storage("0=127.0.0.1:1")
            .expect_err("no id")
            .contains("SHARD.ID"));
        assert!(parse_storage("0.0=x:1,0.0=y:2")
            .expect_err("twice")
            .contains("twice"));
        assert!(parse_storage("a.0=x:1")
            .expect_err("shard")
            .contains("not a number"));
        assert!(parse_storage("").is_err());
    }

    #[test]
    fn a_bare_port_listens_on_loopback_and_ranges_must_be_non_empty() {
        assert_eq!(
            parse_listen("7001").unwrap(),
            "127.0.0.1:7001".parse().unwrap()
        );
        assert_eq!(
            parse_listen("0.0.0.0:7001").unwrap(),
            "0.0.0.0:7001".parse().unwrap()
        );
        assert!(parse_listen("localhost:7001").is_err());
        assert_eq!(parse_range("150..300").unwrap(), (150, 300));
        assert!(parse_range("300..150").is_err());
        assert!(parse_range("300").is_err());
    }
}
