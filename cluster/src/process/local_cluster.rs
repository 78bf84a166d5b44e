//! [`LocalCluster`]: a metadata group of `helios node` processes on loopback, and the real faults
//! on them: kill (SIGKILL) and restart from the same data directory, pause and resume
//! (SIGSTOP/SIGCONT), partitions through each node's peer filter, heal.
//!
//! The cluster owns its children: dropping it kills every node it started (unless it was
//! [`LocalCluster::detach`]ed, as `helios cluster up` does), so a panicking test leaves no
//! process behind.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::client::{AdminClient, AdminError, ClientOptions, MetadataClient};
use super::compute_client::ComputeClient;
use super::manifest::ShardMemberEntry;
use super::manifest::{
    send_signal, stop_all, ClusterManifest, ManifestError, ManifestNode, StopOutcome,
    MANIFEST_VERSION,
};
use super::membership::{join_group, JoinError, Joiner};
use super::protocol::NodeStatus;
use super::rebalance::{self, RebalanceError, RebalanceReport};
use super::shard_client::{MemberAddrs, ShardClient};
use crate::metadata::NodeId;
use crate::replication::{ReplicationError, ShardMembers};

/// How a node process is told its port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    /// Node `i` (from 1) listens on `base + i - 1`.
    Base(u16),
    /// Ports the kernel reports free just before the nodes start.
    Free,
}

/// What to start.
#[derive(Clone, Debug)]
pub struct LocalClusterSpec {
    /// The `helios` binary.
    pub binary: PathBuf,
    /// The cluster directory: `cluster.json`, `node-<id>/` data directories, `node-<id>.log`.
    pub dir: PathBuf,
    /// The number of metadata nodes; their ids are `1..=n_nodes`.
    pub n_nodes: usize,
    /// The number of replicated shards: each is two data nodes and a witness, members `3s`,
    /// `3s + 1` (the first primary) and `3s + 2`, whose processes have ids
    /// [`SHARD_PROCESS_BASE`] + member.
    pub n_shards: usize,
    /// The number of compute nodes (they need a metadata node and a shard): indexes `0..n`,
    /// process ids [`COMPUTE_PROCESS_BASE`] + index.
    pub n_compute: usize,
    /// Extra arguments for every compute node (`--unsafe-skip-invalidation`, for example).
    pub compute_args: Vec<String>,
    /// Their ports on 127.0.0.1.
    pub ports: Ports,
    /// Extra arguments for every node (timings, for example).
    pub node_args: Vec<String>,
    /// `RUST_LOG` for the nodes; `None` inherits this process's.
    pub rust_log: Option<String>,
    /// Pass `--exit-with-parent`, so that nodes exit if this process dies without cleaning up
    /// (a test runner killed by a timeout). Off for `helios cluster up`, whose nodes outlive it.
    pub exit_with_parent: bool,
}

/// Why a local cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalClusterError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The manifest could not be written, or a signal not sent.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The id names no node of the cluster.
    #[error("no node {0} in this cluster")]
    UnknownNode(NodeId),
    /// An admin request failed.
    #[error("node {id}: {source}")]
    Admin {
        /// The node.
        id: NodeId,
        /// The error.
        #[source]
        source: AdminError,
    },
    /// A node could not be added to the group.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// A shard was added but its rows could not be moved.
    #[error("rebalance: {0}")]
    Rebalance(#[from] RebalanceError),
    /// A shard member's admin request failed.
    #[error("shard member process {id}: {source}")]
    Member {
        /// The member's process id.
        id: NodeId,
        /// The error.
        #[source]
        source: ReplicationError,
    },
    /// No leader emerged within the bound.
    #[error("no leader among nodes {among:?} after {after:?}; last statuses: {statuses}")]
    NoLeader {
        /// The nodes asked.
        among: Vec<NodeId>,
        /// The bound.
        after: Duration,
        /// What they last said.
        statuses: String,
    },
    /// A process did not exit within the bound after SIGKILL.
    #[error("node {id} (pid {pid}) did not exit within {after:?} of SIGKILL")]
    NotReaped {
        /// The node.
        id: NodeId,
        /// Its pid.
        pid: u32,
        /// The bound.
        after: Duration,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalClusterError {
    let what = what.into();
    move |source| LocalClusterError::Io { what, source }
}

/// `n` distinct ports on 127.0.0.1 that were free a moment ago (all bound at once, then released).
pub fn pick_free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|listener| listener.local_addr().map(|addr| addr.port()))
        .collect()
}

/// The process id of shard member `m` is this plus `m`, apart from the metadata ids `1..=n`.
pub const SHARD_PROCESS_BASE: NodeId = 100;

/// The process id of compute node `c` is this plus `c`, apart from the shard members.
pub const COMPUTE_PROCESS_BASE: NodeId = 200;

/// The process id of compute node `index`.
pub fn compute_process(index: u32) -> NodeId {
    COMPUTE_PROCESS_BASE + NodeId::from(index)
}

/// The process id of shard member `member`.
pub fn member_process(member: NodeId) -> NodeId {
    SHARD_PROCESS_BASE + member
}

/// How often the polling helpers look again.
const POLL: Duration = Duration::from_millis(10);
/// The bound on a killed process's exit.
const REAP_BOUND: Duration = Duration::from_secs(5);

/// A running metadata group of local processes.
#[derive(Debug)]
pub struct LocalCluster {
    dir: PathBuf,
    manifest: ClusterManifest,
    rust_log: Option<String>,
    /// The processes this cluster started and has not reaped, by node id.
    children: BTreeMap<NodeId, Child>,
    /// Nodes stopped with SIGSTOP and not resumed since.
    paused: BTreeSet<NodeId>,
    /// Whether dropping the cluster kills its children.
    kill_on_drop: bool,
}

impl LocalCluster {
    /// Creates the directory, starts every node, and writes `cluster.json`. Does not wait for a
    /// leader: see [`LocalCluster::wait_for_leader`].
    pub fn start(spec: LocalClusterSpec) -> Result<Self, LocalClusterError> {
        assert!(
            spec.n_nodes + spec.n_shards >= 1,
            "a cluster needs at least one node or shard"
        );
        assert!(
            spec.n_compute == 0 || (spec.n_nodes >= 1 && spec.n_shards >= 1),
            "compute nodes need the metadata group and at least one shard"
        );
        std::fs::create_dir_all(&spec.dir).map_err(io(format!("create {}", spec.dir.display())))?;
        let dir = std::fs::canonicalize(&spec.dir)
            .map_err(io(format!("resolve {}", spec.dir.display())))?;
        let n_processes = spec.n_nodes + 3 * spec.n_shards + spec.n_compute;
        let ports = match spec.ports {
            Ports::Base(base) => (0..n_processes)
                .map(|i| {
                    u16::try_from(usize::from(base) + i).map_err(|_| LocalClusterError::Io {
                        what: format!("port {base} + {i}"),
                        source: std::io::Error::other("port out of range"),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            Ports::Free => pick_free_ports(n_processes).map_err(io("pick free ports"))?,
        };
        let ids: Vec<NodeId> = (1..=spec.n_nodes as NodeId).collect();
        let addrs: BTreeMap<NodeId, String> = ids
            .iter()
            .zip(&ports)
            .map(|(id, port)| (*id, format!("127.0.0.1:{port}")))
            .collect();
        let peers = addrs
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<ManifestNode> = ids
            .iter()
            .map(|&id| {
                let data_dir = dir.join(format!("node-{id}"));
                let mut args: Vec<String> = [
                    "node",
                    "--role",
                    "metadata",
                    "--id",
                    &id.to_string(),
                    "--listen",
                    &addrs[&id],
                    "--peers",
                    &peers,
                    "--data-dir",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                args.push(data_dir.display().to_string());
                if spec.exit_with_parent {
                    args.push("--exit-with-parent".to_string());
                }
                args.extend(spec.node_args.iter().cloned());
                ManifestNode {
                    id,
                    addr: addrs[&id].clone(),
                    pid: 0,
                    data_dir,
                    log_file: dir.join(format!("node-{id}.log")),
                    args,
                    shard_member: None,
                    compute: None,
                }
            })
            .collect();
        let shards = shard_entries(
            &dir,
            0..spec.n_shards,
            &ports[spec.n_nodes..],
            spec.exit_with_parent,
        );
        let compute = compute_entries(
            &dir,
            &spec,
            &ports[spec.n_nodes + 3 * spec.n_shards..],
            &peers,
            &shards,
        );
        nodes.extend(shards);
        nodes.extend(compute);
        let process_ids: Vec<NodeId> = nodes.iter().map(|node| node.id).collect();
        let mut cluster = Self {
            dir,
            manifest: ClusterManifest {
                version: MANIFEST_VERSION,
                binary: spec.binary,
                nodes,
            },
            rust_log: spec.rust_log,
            children: BTreeMap::new(),
            paused: BTreeSet::new(),
            kill_on_drop: true,
        };
        for id in process_ids {
            cluster.spawn(id)?;
        }
        cluster.manifest.save(&cluster.dir)?;
        Ok(cluster)
    }

    /// The cluster that `helios cluster up` left running in `dir`, found by its `cluster.json`.
    /// It owns none of the running processes: dropping it kills none, and what needs a child
    /// handle (kill, pause, restart) does not apply to them; what goes through their endpoints,
    /// and starting new ones ([`LocalCluster::add_shard`]), does.
    pub fn attach(dir: &Path) -> Result<Self, LocalClusterError> {
        let dir = std::fs::canonicalize(dir).map_err(io(format!("resolve {}", dir.display())))?;
        let manifest = ClusterManifest::load(&dir)?;
        Ok(Self {
            dir,
            manifest,
            rust_log: None,
            children: BTreeMap::new(),
            paused: BTreeSet::new(),
            kill_on_drop: false,
        })
    }

    fn entry(&self, id: NodeId) -> Result<&ManifestNode, LocalClusterError> {
        self.manifest
            .node(id)
            .ok_or(LocalClusterError::UnknownNode(id))
    }

    /// Starts node `id`'s process with its recorded arguments, logging to its log file.
    fn spawn(&mut self, id: NodeId) -> Result<(), LocalClusterError> {
        let node = self.entry(id)?.clone();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_file)
            .map_err(io(format!("open {}", node.log_file.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io(format!("open {}", node.log_file.display())))?;
        let mut command = Command::new(&self.manifest.binary);
        command
            .args(&node.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a Ctrl-C meant for the launching terminal does not reach it.
            .process_group(0);
        if let Some(filter) = &self.rust_log {
            command.env("RUST_LOG", filter);
        }
        let child = command.spawn().map_err(io(format!(
            "start node {id} ({})",
            self.manifest.binary.display()
        )))?;
        let pid = child.id();
        tracing::info!(node = id, pid, addr = %node.addr, "node process started");
        if let Some(entry) = self.manifest.nodes.iter_mut().find(|n| n.id == id) {
            entry.pid = pid;
        }
        self.children.insert(id, child);
        self.paused.remove(&id);
        Ok(())
    }

    /// The cluster directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What `cluster.json` holds.
    pub fn manifest(&self) -> &ClusterManifest {
        &self.manifest
    }

    /// The metadata node ids, in order.
    pub fn ids(&self) -> Vec<NodeId> {
        self.manifest
            .nodes
            .iter()
            .filter(|n| n.is_metadata())
            .map(|n| n.id)
            .collect()
    }

    /// Every metadata node's address.
    pub fn addresses(&self) -> BTreeMap<NodeId, String> {
        self.manifest
            .nodes
            .iter()
            .filter(|n| n.is_metadata())
            .map(|n| (n.id, n.addr.clone()))
            .collect()
    }

    /// How many replicated shards the cluster has.
    pub fn shard_count(&self) -> usize {
        self.manifest
            .nodes
            .iter()
            .filter_map(|n| n.shard_member)
            .map(|m| m.shard + 1)
            .max()
            .unwrap_or(0)
    }

    /// The members of `shard`: data nodes `3s` (first primary) and `3s + 1`, witness `3s + 2`.
    pub fn shard_members(&self, shard: usize) -> ShardMembers {
        let base = 3 * shard as NodeId;
        ShardMembers {
            replicas: [base, base + 1],
            witness: base + 2,
        }
    }

    /// A client of every shard member, with `call_timeout` on each call.
    pub fn shard_client(&self, call_timeout: Duration) -> ShardClient {
        let addrs: MemberAddrs = self
            .manifest
            .nodes
            .iter()
            .filter_map(|n| {
                n.shard_member
                    .map(|m| ((m.shard, m.member), n.addr.clone()))
            })
            .collect();
        ShardClient::new(addrs, call_timeout)
    }

    /// The compute node indexes, in order.
    pub fn compute_nodes(&self) -> Vec<u32> {
        self.manifest
            .nodes
            .iter()
            .filter_map(|n| n.compute)
            .collect()
    }

    /// A client of compute node `index`, with `call_timeout` on each call.
    pub fn compute_client(
        &self,
        index: u32,
        call_timeout: Duration,
    ) -> Result<ComputeClient, LocalClusterError> {
        let id = compute_process(index);
        Ok(ComputeClient::new(
            self.entry(id)?.addr.clone(),
            call_timeout,
        ))
    }

    /// Waits until compute node `index` holds a live cache lease from every data node of every
    /// shard (so that it serves rows from its cache). Polls every 10 ms; bounded by `bound`.
    pub async fn wait_for_cache(
        &self,
        index: u32,
        bound: Duration,
    ) -> Result<(), LocalClusterError> {
        let client = self.compute_client(index, Duration::from_secs(1))?;
        let shards: Vec<usize> = (0..self.shard_count()).collect();
        let deadline = Instant::now() + bound;
        loop {
            let last = match client.status().await {
                Ok(status) if status.cacheable_shards == shards => return Ok(()),
                Ok(status) => format!("cacheable shards {:?}", status.cacheable_shards),
                Err(error) => error.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(LocalClusterError::Io {
                    what: format!("wait for compute node {index}'s cache leases"),
                    source: std::io::Error::other(format!("after {bound:?}: {last}")),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until a data node of `shard` acts as primary (named by its record, holding a
    /// lease), and returns its member id. Polls every 10 ms; bounded by `bound`.
    pub async fn wait_for_primary(
        &self,
        shard: usize,
        bound: Duration,
    ) -> Result<NodeId, LocalClusterError> {
        let client = self.shard_client(Duration::from_secs(1));
        let members = self.shard_members(shard);
        let deadline = Instant::now() + bound;
        let statuses = loop {
            let mut seen = Vec::new();
            for member in members.replicas {
                match client.status(shard, member).await {
                    Ok(status) if status.is_primary => return Ok(member),
                    Ok(status) => seen.push(format!("{member}: {:?}", status.record)),
                    Err(error) => seen.push(format!("{member}: {error}")),
                }
            }
            if Instant::now() >= deadline {
                break seen.join("; ");
            }
            tokio::time::sleep(POLL).await;
        };
        Err(LocalClusterError::NoLeader {
            among: members.replicas.to_vec(),
            after: bound,
            statuses,
        })
    }

    /// Adds a metadata node to the running group and returns its id (the next free one): starts
    /// its process on a fresh port with every member as its peers (it does not form a group),
    /// cuts it off from `blocked` both ways (so that it joins one side of a partition), tells
    /// every running member its address, then asks whoever leads to make it a voter, retrying
    /// within `bound`. Every member's recorded `--peers` is updated, so a restart knows the new
    /// node. A member paused meanwhile does not learn the address until it is restarted.
    pub async fn add_node(
        &mut self,
        blocked: &[NodeId],
        bound: Duration,
    ) -> Result<NodeId, LocalClusterError> {
        let deadline = Instant::now() + bound;
        let old_ids = self.ids();
        let id = old_ids.iter().max().copied().unwrap_or(0) + 1;
        if id >= SHARD_PROCESS_BASE {
            return Err(LocalClusterError::Io {
                what: format!("add metadata node {id}"),
                source: std::io::Error::other("metadata ids must stay below the shard ids"),
            });
        }
        let port = pick_free_ports(1).map_err(io("pick a free port"))?[0];
        let addr = format!("127.0.0.1:{port}");
        let mut addrs = self.addresses();
        addrs.insert(id, addr.clone());
        let peers = addrs
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(",");
        let template = self.entry(old_ids[0])?.clone();
        for node in self.manifest.nodes.iter_mut() {
            if node.is_metadata() {
                set_arg(&mut node.args, "--peers", &peers);
            }
        }
        let data_dir = self.dir.join(format!("node-{id}"));
        let mut args = template.args.clone();
        set_arg(&mut args, "--id", &id.to_string());
        set_arg(&mut args, "--peers", &peers);
        set_arg(&mut args, "--listen", &addr);
        set_arg(&mut args, "--data-dir", &data_dir.display().to_string());
        self.manifest.nodes.push(ManifestNode {
            id,
            addr: addr.clone(),
            pid: 0,
            data_dir,
            log_file: self.dir.join(format!("node-{id}.log")),
            args,
            shard_member: None,
            compute: None,
        });
        self.spawn(id)?;
        self.manifest.save(&self.dir)?;
        let joiner = Joiner {
            id,
            admin: self.admin(id)?,
            peer_addr: addr,
        };
        let mut members = Vec::new();
        for other in old_ids {
            if self.is_running(other) && !self.paused.contains(&other) {
                members.push((other, self.admin(other)?));
            }
        }
        let bound = deadline.saturating_duration_since(Instant::now());
        let joined = join_group(&joiner, &members, blocked, bound).await;
        match joined {
            Ok(_) => Ok(id),
            Err(error) if !self.is_running(id) => Err(LocalClusterError::Io {
                what: format!("add node {id}"),
                source: std::io::Error::other(format!(
                    "{error}; the process exited, see {}",
                    self.entry(id)?.log_file.display()
                )),
            }),
            Err(error) => Err(LocalClusterError::Join(error)),
        }
    }

    /// Adds a replicated shard at run time and moves its rows to it: starts its two data nodes
    /// and witness as processes on fresh ports, waits for its first primary, then runs the
    /// rebalance (see [`crate::process::rebalance`]) through the metadata group, while compute
    /// nodes keep serving. Returns the new shard and what the rebalance did. The whole is
    /// bounded by `bound`.
    pub async fn add_shard(
        &mut self,
        bound: Duration,
    ) -> Result<(usize, RebalanceReport), LocalClusterError> {
        let deadline = Instant::now() + bound;
        let shard = self.shard_count();
        let initial: MemberAddrs = self
            .shard_client(Duration::from_secs(1))
            .addrs()
            .into_iter()
            .filter(|&((s, member), _)| member != self.shard_members(s).witness)
            .collect();
        let exit_with_parent =
            self.manifest.nodes.iter().any(|n| {
                n.shard_member.is_some() && n.args.iter().any(|a| a == "--exit-with-parent")
            });
        let ports = pick_free_ports(3).map_err(io("pick free ports"))?;
        let entries = shard_entries(&self.dir, shard..shard + 1, &ports, exit_with_parent);
        let ids: Vec<NodeId> = entries.iter().map(|n| n.id).collect();
        let new_members: MemberAddrs = entries
            .iter()
            .filter_map(|n| {
                n.shard_member
                    .filter(|m| !m.witness)
                    .map(|m| ((m.shard, m.member), n.addr.clone()))
            })
            .collect();
        self.manifest.nodes.extend(entries);
        for id in ids {
            self.spawn(id)?;
        }
        self.manifest.save(&self.dir)?;
        self.wait_for_primary(shard, deadline.saturating_duration_since(Instant::now()))
            .await?;
        let metadata = self.client(ClientOptions::default());
        let shards = self.shard_client(Duration::from_secs(2));
        let report = rebalance::add_shard(
            &metadata,
            &shards,
            &initial,
            &new_members,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await?;
        Ok((shard, report))
    }

    /// Finishes the moves of the recorded ring, if a rebalance stopped part way (its rows stay
    /// served meanwhile: compute nodes route by the moving ring); a settled ring needs nothing.
    /// Bounded by `bound`.
    pub async fn rebalance(&self, bound: Duration) -> Result<RebalanceReport, LocalClusterError> {
        let metadata = self.client(ClientOptions::default());
        let shards = self.shard_client(Duration::from_secs(2));
        let deadline = tokio::time::Instant::now() + bound;
        Ok(rebalance::rebalance(&metadata, &shards, deadline).await?)
    }

    /// Cuts shard member `member` off from the other members of its shard, both ways (through
    /// the peer filters of all three).
    pub async fn isolate_member(&self, member: NodeId) -> Result<(), LocalClusterError> {
        let shard = (member / 3) as usize;
        let client = self.shard_client(Duration::from_secs(2));
        let members = self.shard_members(shard);
        let others: Vec<NodeId> = [members.replicas[0], members.replicas[1], members.witness]
            .into_iter()
            .filter(|&m| m != member)
            .collect();
        tracing::warn!(shard, member, "isolate shard member");
        let admin = |id: NodeId| {
            move |source: ReplicationError| LocalClusterError::Member {
                id: member_process(id),
                source,
            }
        };
        client
            .block_peers(shard, member, &others)
            .await
            .map_err(admin(member))?;
        for other in others {
            client
                .block_peers(shard, other, &[member])
                .await
                .map_err(admin(other))?;
        }
        Ok(())
    }

    /// A client of the whole group.
    pub fn client(&self, options: ClientOptions) -> MetadataClient {
        MetadataClient::new(self.addresses(), options)
    }

    /// The admin client of node `id`.
    pub fn admin(&self, id: NodeId) -> Result<AdminClient, LocalClusterError> {
        Ok(AdminClient::new(self.entry(id)?.addr.clone()))
    }

    /// Whether node `id`'s process runs (it was not killed, or was restarted since).
    pub fn is_running(&mut self, id: NodeId) -> bool {
        match self.children.get_mut(&id) {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Whether node `id` was stopped with SIGSTOP and not resumed since.
    pub fn is_paused(&self, id: NodeId) -> bool {
        self.paused.contains(&id)
    }

    /// Node `id`'s status.
    pub async fn status(&self, id: NodeId) -> Result<NodeStatus, LocalClusterError> {
        self.admin(id)?
            .status()
            .await
            .map_err(|source| LocalClusterError::Admin { id, source })
    }

    /// Waits until one of `among` (every node if empty) holds the leader lease, and returns it.
    /// Polls every 10 ms; bounded by `bound`.
    pub async fn wait_for_leader(
        &self,
        among: &[NodeId],
        bound: Duration,
    ) -> Result<NodeId, LocalClusterError> {
        let among = if among.is_empty() {
            self.ids()
        } else {
            among.to_vec()
        };
        let deadline = Instant::now() + bound;
        let statuses = loop {
            let mut seen = Vec::new();
            for &id in &among {
                match self.status(id).await {
                    Ok(status) if status.is_leader => return Ok(id),
                    Ok(status) => seen.push(format!(
                        "{id}: term {} leader {:?}",
                        status.term, status.leader
                    )),
                    Err(error) => seen.push(format!("{id}: {error}")),
                }
            }
            if Instant::now() >= deadline {
                break seen.join("; ");
            }
            tokio::time::sleep(POLL).await;
        };
        Err(LocalClusterError::NoLeader {
            among,
            after: bound,
            statuses,
        })
    }

    /// SIGKILL: node `id`'s process dies at once, with no chance to flush or say goodbye. Waits
    /// (bounded) until it is reaped.
    pub fn kill(&mut self, id: NodeId) -> Result<(), LocalClusterError> {
        let pid = self.entry(id)?.pid;
        let Some(mut child) = self.children.remove(&id) else {
            return Ok(());
        };
        tracing::warn!(node = id, pid, "SIGKILL");
        if matches!(child.try_wait(), Ok(None)) {
            send_signal(id, pid, Signal::SIGKILL)?;
        }
        self.paused.remove(&id);
        reap(id, &mut child, REAP_BOUND)
    }

    /// Starts node `id` again from its data directory, with the same arguments and address.
    /// Kills it first if it still runs.
    pub fn restart(&mut self, id: NodeId) -> Result<(), LocalClusterError> {
        self.kill(id)?;
        self.spawn(id)?;
        self.manifest.save(&self.dir)?;
        Ok(())
    }

    /// SIGSTOP: node `id` freezes; the kernel still accepts connections to its port.
    pub fn pause(&mut self, id: NodeId) -> Result<(), LocalClusterError> {
        let pid = self.entry(id)?.pid;
        tracing::warn!(node = id, pid, "SIGSTOP");
        send_signal(id, pid, Signal::SIGSTOP)?;
        self.paused.insert(id);
        Ok(())
    }

    /// SIGCONT: node `id` continues where it stopped.
    pub fn resume(&mut self, id: NodeId) -> Result<(), LocalClusterError> {
        let pid = self.entry(id)?.pid;
        tracing::warn!(node = id, pid, "SIGCONT");
        send_signal(id, pid, Signal::SIGCONT)?;
        self.paused.remove(&id);
        Ok(())
    }

    /// Partitions the group into `groups`: every node blocks every node outside its group. Nodes
    /// in no group are left as they are.
    pub async fn partition(&self, groups: &[Vec<NodeId>]) -> Result<(), LocalClusterError> {
        tracing::warn!(?groups, "partition");
        for group in groups {
            let outside: Vec<NodeId> = self
                .ids()
                .into_iter()
                .filter(|id| !group.contains(id))
                .collect();
            for &id in group {
                self.admin(id)?
                    .block_peers(&outside)
                    .await
                    .map_err(|source| LocalClusterError::Admin { id, source })?;
            }
        }
        Ok(())
    }

    /// Cuts node `id` off from every other node, both ways.
    pub async fn isolate(&self, id: NodeId) -> Result<(), LocalClusterError> {
        let rest: Vec<NodeId> = self.ids().into_iter().filter(|n| *n != id).collect();
        self.partition(&[vec![id], rest]).await
    }

    /// Empties the peer filter of every node and shard member that runs and is not paused (a
    /// killed node starts with an empty filter; a paused one would not answer within the bound).
    pub async fn heal(&mut self) -> Result<(), LocalClusterError> {
        tracing::warn!("heal");
        for id in self.ids() {
            if !self.is_running(id) || self.paused.contains(&id) {
                continue;
            }
            self.admin(id)?
                .unblock_all_peers()
                .await
                .map_err(|source| LocalClusterError::Admin { id, source })?;
        }
        let client = self.shard_client(Duration::from_secs(2));
        let members: Vec<(NodeId, ShardMemberEntry)> = self
            .manifest
            .nodes
            .iter()
            .filter_map(|n| n.shard_member.map(|m| (n.id, m)))
            .collect();
        for (id, entry) in members {
            if !self.is_running(id) || self.paused.contains(&id) {
                continue;
            }
            client
                .unblock_all_peers(entry.shard, entry.member)
                .await
                .map_err(|source| LocalClusterError::Member { id, source })?;
        }
        Ok(())
    }

    /// Stops every node: SIGTERM, then SIGKILL past `grace`; reaps them.
    pub fn stop(&mut self, grace: Duration) -> Vec<(NodeId, StopOutcome)> {
        let outcomes = stop_all(&self.manifest, grace);
        for (id, mut child) in std::mem::take(&mut self.children) {
            if let Err(error) = reap(id, &mut child, REAP_BOUND) {
                tracing::error!(%error, "node not reaped");
            }
        }
        self.paused.clear();
        outcomes
    }

    /// Gives up ownership of the processes: they keep running after the cluster is dropped, and
    /// `cluster.json` is how to find them again.
    pub fn detach(mut self) -> ClusterManifest {
        self.kill_on_drop = false;
        std::mem::take(&mut self.children);
        self.manifest.clone()
    }
}

/// Sets the value after `flag` in `args`, or appends both.
fn set_arg(args: &mut Vec<String>, flag: &str, value: &str) {
    match args.iter().position(|arg| arg == flag) {
        Some(i) if i + 1 < args.len() => args[i + 1] = value.to_owned(),
        _ => args.extend([flag.to_owned(), value.to_owned()]),
    }
}

/// The manifest entries of the members of `shards`, listening on `ports` (three per shard, from
/// the first shard's).
fn shard_entries(
    dir: &Path,
    shards: std::ops::Range<usize>,
    ports: &[u16],
    exit_with_parent: bool,
) -> Vec<ManifestNode> {
    let mut entries = Vec::new();
    let first = 3 * shards.start as NodeId;
    for shard in shards {
        let base = 3 * shard as NodeId;
        let addr = |member: NodeId| format!("127.0.0.1:{}", ports[(member - first) as usize]);
        let peers = (base..base + 3)
            .map(|m| format!("{m}={}", addr(m)))
            .collect::<Vec<_>>()
            .join(",");
        for member in base..base + 3 {
            let witness = member == base + 2;
            let (role, name) = if witness {
                ("witness", format!("witness-{member}"))
            } else {
                ("storage", format!("storage-{member}"))
            };
            let data_dir = dir.join(&name);
            let mut args: Vec<String> = vec![
                "node".into(),
                "--role".into(),
                role.into(),
                "--shard".into(),
                shard.to_string(),
                "--id".into(),
                member.to_string(),
                "--listen".into(),
                addr(member),
                "--peers".into(),
                peers.clone(),
                "--first-primary".into(),
                base.to_string(),
            ];
            if !witness {
                args.extend(["--witness".into(), (base + 2).to_string()]);
            }
            args.extend(["--data-dir".into(), data_dir.display().to_string()]);
            if exit_with_parent {
                args.push("--exit-with-parent".into());
            }
            entries.push(ManifestNode {
                id: member_process(member),
                addr: addr(member),
                pid: 0,
                data_dir,
                log_file: dir.join(format!("{name}.log")),
                args,
                shard_member: Some(ShardMemberEntry {
                    shard,
                    member,
                    witness,
                }),
                compute: None,
            });
        }
    }
    entries
}

/// The manifest entries of the spec's compute nodes, listening on `ports` (one each), with the
/// metadata group as `--peers` and the data nodes among `shards` as `--storage`.
fn compute_entries(
    dir: &Path,
    spec: &LocalClusterSpec,
    ports: &[u16],
    metadata_peers: &str,
    shards: &[ManifestNode],
) -> Vec<ManifestNode> {
    let storage = shards
        .iter()
        .filter_map(|n| {
            n.shard_member
                .filter(|m| !m.witness)
                .map(|m| format!("{}.{}={}", m.shard, m.member, n.addr))
        })
        .collect::<Vec<_>>()
        .join(",");
    (0..spec.n_compute)
        .map(|index| {
            let index = u32::try_from(index).expect("a handful of compute nodes");
            let addr = format!("127.0.0.1:{}", ports[index as usize]);
            let name = format!("compute-{index}");
            let data_dir = dir.join(&name);
            let mut args: Vec<String> = vec![
                "node".into(),
                "--role".into(),
                "compute".into(),
                "--id".into(),
                index.to_string(),
                "--listen".into(),
                addr.clone(),
                "--peers".into(),
                metadata_peers.to_string(),
                "--storage".into(),
                storage.clone(),
                "--data-dir".into(),
                data_dir.display().to_string(),
            ];
            if spec.exit_with_parent {
                args.push("--exit-with-parent".into());
            }
            args.extend(spec.compute_args.iter().cloned());
            ManifestNode {
                id: compute_process(index),
                addr,
                pid: 0,
                data_dir,
                log_file: dir.join(format!("{name}.log")),
                args,
                shard_member: None,
                compute: Some(index),
            }
        })
        .collect()
}

/// Waits, polling and bounded, for a signalled child to exit.
fn reap(id: NodeId, child: &mut Child, bound: Duration) -> Result<(), LocalClusterError> {
    let deadline = Instant::now() + bound;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            Ok(None) => {
                return Err(LocalClusterError::NotReaped {
                    id,
                    pid: child.id(),
                    after: bound,
                })
            }
            Err(source) => {
                return Err(LocalClusterError::Io {
                    what: format!("wait for node {id}"),
                    source,
                })
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if !self.kill_on_drop {
            return;
        }
        for (id, child) in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                // Child::kill is SIGKILL, which also ends a stopped process.
                let _ = child.kill();
            }
            let _ = reap(*id, child, Duration::from_secs(2));
        }
    }
}
