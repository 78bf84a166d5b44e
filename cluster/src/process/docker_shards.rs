//! [`DockerShards`]: replicated shards as containers (services `s0..s8` of
//! `docker/docker-compose.yml`: shard `s` is storage members `s<3s>`, the first primary, and
//! `s<3s+1>`, and witness `s<3s+2>`, each a `helios node` published on 127.0.0.1), and the real
//! faults on them: `docker kill` and `docker start` (the container keeps its data directory) and
//! `docker pause`/`unpause`. Isolations are not Docker's: they go through the members' peer
//! filters (see [`ShardClient::block_peers`]), so clients keep reaching an isolated member.
//!
//! A cluster runs the first `n` shards of the compose file in a compose project of its own,
//! with the compose file's compute nodes (`c0`, `c1`) if asked, which it also connects to the
//! metadata group's network (where table schemas live).
//! Every `docker` and `docker-compose` command is bounded, as in [`super::DockerCluster`];
//! dropping the cluster removes its containers and network unless it was detached.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use super::docker_cluster::{run_bounded, run_bounded_output, DockerError};
use super::docker_cluster::{COMPOSE_BOUND, DOCKER_COMMAND_BOUND};
use super::shard_client::{MemberAddrs, ShardClient};
use crate::metadata::NodeId;

/// The number of replicated shards `docker/docker-compose.yml` defines (members `s0..s8`).
pub const DOCKER_SHARDS: usize = 3;

/// The number of compute nodes `docker/docker-compose.yml` defines (`c0`, `c1`).
pub const DOCKER_COMPUTE: usize = 2;

/// The compose profiles of the shard members and of the compute nodes.
const PROFILES: [&str; 2] = ["shards", "compute"];

/// What to start.
#[derive(Clone, Debug)]
pub struct DockerShardsSpec {
    /// `docker/docker-compose.yml`.
    pub compose_file: PathBuf,
    /// The compose project, also the prefix of container and network names.
    pub project: String,
    /// The image every member runs.
    pub image: String,
    /// The host port (on 127.0.0.1) of member `m`, index `m`: three per shard, so `3n` ports
    /// start the first `n` shards.
    pub shard_ports: Vec<u16>,
    /// The host port of compute node `c`, index `c`: one per compute node to start (at most
    /// [`DOCKER_COMPUTE`]).
    pub compute_ports: Vec<u16>,
    /// The metadata group's network, which the compute nodes join; compute nodes need it.
    pub metadata_network: Option<String>,
}

/// Running shard members in containers.
#[derive(Debug)]
pub struct DockerShards {
    spec: DockerShardsSpec,
    /// Members paused and not unpaused since.
    paused: BTreeSet<NodeId>,
    /// Members killed and not started since.
    killed: BTreeSet<NodeId>,
    /// Compute nodes paused and not unpaused since.
    paused_compute: BTreeSet<usize>,
    /// Whether dropping the cluster removes it.
    down_on_drop: bool,
}

impl DockerShards {
    /// Starts the members of the spec's shards (`docker-compose up -d s0 ...`); does not wait
    /// for primaries.
    pub fn up(spec: DockerShardsSpec) -> Result<Self, DockerError> {
        let n = spec.shard_ports.len();
        if n == 0 || !n.is_multiple_of(3) || n / 3 > DOCKER_SHARDS {
            return Err(DockerError::Spec(format!(
                "{n} shard ports given: three per shard are needed, for 1 to {DOCKER_SHARDS} \
                 shards (the compose file has {DOCKER_SHARDS})"
            )));
        }
        if spec.compute_ports.len() > DOCKER_COMPUTE {
            return Err(DockerError::Spec(format!(
                "{} compute ports given; the compose file has {DOCKER_COMPUTE} compute nodes",
                spec.compute_ports.len()
            )));
        }
        if !spec.compute_ports.is_empty() && spec.metadata_network.is_none() {
            return Err(DockerError::Spec(
                "compute nodes need the metadata group's network".to_owned(),
            ));
        }
        let cluster = DockerShards {
            spec,
            paused: BTreeSet::new(),
            killed: BTreeSet::new(),
            paused_compute: BTreeSet::new(),
            down_on_drop: true,
        };
        // A project left over by a run that was killed would hold the names.
        let _ = cluster.compose(&["down", "--volumes", "--timeout", "1"]);
        let mut services: Vec<String> = cluster.members().map(Self::service).collect();
        services.extend((0..cluster.spec.compute_ports.len()).map(|c| format!("c{c}")));
        let mut args = vec!["up", "-d", "--no-build"];
        args.extend(services.iter().map(String::as_str));
        cluster.compose(&args)?;
        if let Some(network) = &cluster.spec.metadata_network {
            for c in 0..cluster.spec.compute_ports.len() {
                cluster.docker(&["network", "connect", network, &cluster.compute_container(c)])?;
            }
        }
        Ok(cluster)
    }

    /// The shards of a project already up (as `helios cluster up --target docker` left them);
    /// dropping them does not remove them.
    pub fn attach(spec: DockerShardsSpec) -> Self {
        DockerShards {
            spec,
            paused: BTreeSet::new(),
            killed: BTreeSet::new(),
            paused_compute: BTreeSet::new(),
            down_on_drop: false,
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("HELIOS_IMAGE".to_string(), self.spec.image.clone()),
            ("HELIOS_PROJECT".to_string(), self.spec.project.clone()),
        ];
        for (member, port) in self.spec.shard_ports.iter().enumerate() {
            env.push((format!("HELIOS_SHARD_PORT_{member}"), port.to_string()));
        }
        for (c, port) in self.spec.compute_ports.iter().enumerate() {
            env.push((format!("HELIOS_COMPUTE_PORT_{c}"), port.to_string()));
        }
        // The compute nodes use the data nodes of the shards that run.
        let storage = self
            .members()
            .filter(|member| member % 3 != 2)
            .map(|member| format!("{}.{member}={}:7000", member / 3, Self::service(member)))
            .collect::<Vec<_>>()
            .join(",");
        env.push(("HELIOS_COMPUTE_STORAGE".to_string(), storage));
        env
    }

    fn compose(&self, args: &[&str]) -> Result<String, DockerError> {
        let file = self.spec.compose_file.display().to_string();
        let mut all = vec!["-f", &file, "-p", &self.spec.project];
        for profile in PROFILES {
            all.extend(["--profile", profile]);
        }
        all.extend_from_slice(args);
        run_bounded("docker-compose", &all, &self.env(), COMPOSE_BOUND)
    }

    fn docker(&self, args: &[&str]) -> Result<(), DockerError> {
        run_bounded("docker", args, &[], DOCKER_COMMAND_BOUND).map(|_| ())
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.spec.shard_ports.len() / 3
    }

    /// Every member id, `0..3n`.
    pub fn members(&self) -> impl Iterator<Item = NodeId> {
        0..self.spec.shard_ports.len() as NodeId
    }

    fn check(&self, member: NodeId) -> Result<(), DockerError> {
        if member < self.spec.shard_ports.len() as NodeId {
            Ok(())
        } else {
            Err(DockerError::UnknownNode(member))
        }
    }

    /// Member `member`'s container name.
    pub fn container(&self, member: NodeId) -> String {
        format!("{}-s{member}", self.spec.project)
    }

    /// Compute node `c`'s container name.
    pub fn compute_container(&self, c: usize) -> String {
        format!("{}-c{c}", self.spec.project)
    }

    /// Every compute node's address as clients reach it (the published port on 127.0.0.1).
    pub fn compute_addresses(&self) -> Vec<String> {
        self.spec
            .compute_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// Member `member`'s service name, which its peers resolve.
    pub fn service(member: NodeId) -> String {
        format!("s{member}")
    }

    /// Every member's address as clients reach it (the published port on 127.0.0.1), by
    /// `(shard, member)`.
    pub fn addresses(&self) -> MemberAddrs {
        self.members()
            .zip(&self.spec.shard_ports)
            .map(|(member, port)| (((member / 3) as usize, member), format!("127.0.0.1:{port}")))
            .collect()
    }

    /// A client of every member, with `call_timeout` on each call.
    pub fn shard_client(&self, call_timeout: Duration) -> ShardClient {
        ShardClient::new(self.addresses(), call_timeout)
    }

    /// `docker kill`: SIGKILL to the member's process; the container and its data stay.
    pub fn kill(&mut self, member: NodeId) -> Result<(), DockerError> {
        self.check(member)?;
        tracing::warn!(member, "docker kill");
        self.docker(&["kill", &self.container(member)])?;
        self.paused.remove(&member);
        self.killed.insert(member);
        Ok(())
    }

    /// `docker start`: the killed member's container starts again from its data directory.
    pub fn start(&mut self, member: NodeId) -> Result<(), DockerError> {
        self.check(member)?;
        tracing::warn!(member, "docker start");
        self.docker(&["start", &self.container(member)])?;
        self.killed.remove(&member);
        Ok(())
    }

    /// `docker pause`: every process of the container freezes.
    pub fn pause(&mut self, member: NodeId) -> Result<(), DockerError> {
        self.check(member)?;
        tracing::warn!(member, "docker pause");
        self.docker(&["pause", &self.container(member)])?;
        self.paused.insert(member);
        Ok(())
    }

    /// `docker unpause`.
    pub fn unpause(&mut self, member: NodeId) -> Result<(), DockerError> {
        self.check(member)?;
        tracing::warn!(member, "docker unpause");
        self.docker(&["unpause", &self.container(member)])?;
        self.paused.remove(&member);
        Ok(())
    }

    /// `docker pause` of compute node `c`.
    pub fn pause_compute(&mut self, c: usize) -> Result<(), DockerError> {
        self.check_compute(c)?;
        tracing::warn!(compute = c, "docker pause");
        self.docker(&["pause", &self.compute_container(c)])?;
        self.paused_compute.insert(c);
        Ok(())
    }

    /// `docker unpause` of compute node `c`.
    pub fn unpause_compute(&mut self, c: usize) -> Result<(), DockerError> {
        self.check_compute(c)?;
        tracing::warn!(compute = c, "docker unpause");
        self.docker(&["unpause", &self.compute_container(c)])?;
        self.paused_compute.remove(&c);
        Ok(())
    }

    fn check_compute(&self, c: usize) -> Result<(), DockerError> {
        if c < self.spec.compute_ports.len() {
            Ok(())
        } else {
            Err(DockerError::Spec(format!("no compute node {c}")))
        }
    }

    /// Whether `member` was paused and not unpaused since.
    pub fn is_paused(&self, member: NodeId) -> bool {
        self.paused.contains(&member)
    }

    /// Whether `member` was killed and not started since.
    pub fn is_killed(&self, member: NodeId) -> bool {
        self.killed.contains(&member)
    }

    /// Unpauses every paused member, then starts every container that is not running (one
    /// `docker start` of all members: a no-op for the running ones, and it also brings back a
    /// member that died on its own).
    pub fn restore_all(&mut self) -> Result<(), DockerError> {
        for member in self.paused.clone() {
            self.unpause(member)?;
        }
        let containers: Vec<String> = self.members().map(|m| self.container(m)).collect();
        let mut args = vec!["start"];
        args.extend(containers.iter().map(String::as_str));
        tracing::warn!("docker start (every member)");
        self.docker(&args)?;
        self.killed.clear();
        Ok(())
    }

    /// Member `member`'s log (`docker logs`: the node writes to stderr), for diagnosis.
    pub fn logs(&self, member: NodeId) -> Result<String, DockerError> {
        self.check(member)?;
        let (stdout, stderr) = run_bounded_output(
            "docker",
            &["logs", &self.container(member)],
            &[],
            DOCKER_COMMAND_BOUND,
        )?;
        Ok(stderr + &stdout)
    }

    /// Removes the containers and the network (`docker-compose down`), unpausing first, as a
    /// paused container cannot be stopped.
    pub fn down(&mut self) -> Result<(), DockerError> {
        for member in std::mem::take(&mut self.paused) {
            let _ = self.docker(&["unpause", &self.container(member)]);
        }
        for c in std::mem::take(&mut self.paused_compute) {
            let _ = self.docker(&["unpause", &self.compute_container(c)]);
        }
        self.down_on_drop = false;
        self.compose(&["down", "--volumes", "--timeout", "5"])
            .map(|_| ())
    }

    /// Leaves the containers running after the cluster is dropped.
    pub fn detach(mut self) {
        self.down_on_drop = false;
    }
}

impl Drop for DockerShards {
    fn drop(&mut self) {
        if self.down_on_drop {
            if let Err(error) = self.down() {
                tracing::error!(%error, "docker-compose down of the shards failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n_ports: usize) -> DockerShardsSpec {
        DockerShardsSpec {
            compose_file: PathBuf::from("docker/docker-compose.yml"),
            project: "helios-test".to_owned(),
            image: "helios:local".to_owned(),
            shard_ports: (0..n_ports as u16).map(|i| 7200 + i).collect(),
            compute_ports: Vec::new(),
            metadata_network: None,
        }
    }

    #[test]
    fn a_spec_needs_three_ports_per_shard_within_the_compose_file() {
        for n in [0, 4, 12] {
            let error = DockerShards::up(spec(n)).expect_err("a bad spec");
            assert!(matches!(error, DockerError::Spec(_)), "{n}: {error}");
        }
        let too_many = DockerShardsSpec {
            compute_ports: vec![7300, 7301, 7302],
            metadata_network: Some("helios-net".to_owned()),
            ..spec(3)
        };
        let no_network = DockerShardsSpec {
            compute_ports: vec![7300],
            ..spec(3)
        };
        for bad in [too_many, no_network] {
            let error = DockerShards::up(bad).expect_err("a bad spec");
            assert!(matches!(error, DockerError::Spec(_)), "{error}");
        }
    }

    #[test]
    fn members_are_addressed_by_shard_and_named_by_service() {
        let cluster = DockerShards {
            spec: spec(6),
            paused: BTreeSet::new(),
            killed: BTreeSet::new(),
            paused_compute: BTreeSet::new(),
            down_on_drop: false,
        };
        assert_eq!(cluster.shard_count(), 2);
        let addrs = cluster.addresses();
        assert_eq!(addrs.len(), 6);
        assert_eq!(addrs[&(0, 2)], "127.0.0.1:7202");
        assert_eq!(addrs[&(1, 3)], "127.0.0.1:7203");
        assert_eq!(cluster.container(4), "helios-test-s4");
        assert_eq!(DockerShards::service(5), "s5");
        assert!(matches!(cluster.check(6), Err(DockerError::UnknownNode(6))));
    }
}
