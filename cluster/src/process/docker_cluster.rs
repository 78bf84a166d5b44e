//! [`DockerCluster`]: the metadata group as containers (services `m1..m5` of
//! `docker/docker-compose.yml`: one `helios node` per container on a private network, each
//! published on 127.0.0.1), and the real faults on them: `docker kill` and `docker start` (the
//! container keeps its data directory), `docker pause`/`unpause` (the cgroup freezer), and
//! `docker network disconnect`/`connect` (the node loses every peer, and clients too).
//!
//! Every `docker` and `docker-compose` command runs with a bound; one that overruns is killed
//! and reported. Dropping the cluster removes its containers and network (`docker-compose down`)
//! unless it was [`DockerCluster::detach`]ed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::metadata::NodeId;

/// The number of metadata nodes `docker/docker-compose.yml` defines (services `m1..m5`; its
/// shard members are [`super::DockerShards`]').
pub const DOCKER_NODES: usize = 5;
/// The port every node listens on inside its container.
pub const CONTAINER_PORT: u16 = 7000;
/// The bound on one `docker` command (kill, start, pause, network connect, ...).
pub const DOCKER_COMMAND_BOUND: Duration = Duration::from_secs(30);
/// The bound on `docker-compose up` and `down`, and on an image build.
pub const COMPOSE_BOUND: Duration = Duration::from_secs(120);

/// What to start.
#[derive(Clone, Debug)]
pub struct DockerClusterSpec {
    /// `docker/docker-compose.yml`.
    pub compose_file: PathBuf,
    /// The compose project, also the prefix of container and network names.
    pub project: String,
    /// The image every node runs.
    pub image: String,
    /// The host port (on 127.0.0.1) of node `i`, index `i - 1`: the five members, and
    /// optionally a sixth for the spare node `m6` (see [`DockerCluster::start_spare`]).
    pub ports: Vec<u16>,
}

/// The id of the compose file's spare metadata node, `m6`: not a member until it is added.
pub const SPARE_NODE: NodeId = 6;
/// The compose profile of the spare node.
const SPARE_PROFILE: &str = "spare";

/// Why a Docker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The command could not be started (no docker binary, for example).
    #[error("{command}: cannot run: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The command ran and failed.
    #[error("{command}: exit {code:?}: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit code.
        code: Option<i32>,
        /// What it wrote to stderr (trimmed).
        stderr: String,
    },
    /// The command did not finish within its bound and was killed.
    #[error("{command}: no result within {bound:?}")]
    Overran {
        /// The command line.
        command: String,
        /// The bound.
        bound: Duration,
    },
    /// The id names no node of the cluster.
    #[error("no node {0} in this cluster")]
    UnknownNode(NodeId),
    /// The spec does not match the compose file.
    #[error("bad docker cluster spec: {0}")]
    Spec(String),
}

/// Runs `program args` with `env`, bounded; returns its stdout.
pub fn run_bounded(
    program: &str,
    args: &[&str],
    env: &[(String, String)],
    bound: Duration,
) -> Result<String, DockerError> {
    run_bounded_output(program, args, env, bound).map(|(stdout, _)| stdout)
}

/// Runs `program args` with `env`, bounded; returns its stdout and stderr.
pub(super) fn run_bounded_output(
    program: &str,
    args: &[&str],
    env: &[(String, String)],
    bound: Duration,
) -> Result<(String, String), DockerError> {
    let command_line = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| DockerError::Spawn {
            command: command_line.clone(),
            source,
        })?;
    let deadline = Instant::now() + bound;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(DockerError::Overran {
                    command: command_line,
                    bound,
                });
            }
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|source| DockerError::Spawn {
            command: command_line.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(DockerError::Failed {
            command: command_line,
            code: output.status.code(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok((
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// Whether a Docker engine answers (`docker info`), and if not, why.
pub fn docker_available() -> Result<(), String> {
    run_bounded("docker", &["info"], &[], Duration::from_secs(20))
        .map(|_| ())
        .map_err(|error| error.to_string())
}

/// Builds `image` FROM scratch around `binary` (a statically linked helios) with `dockerfile`,
/// in a build context of those two files alone.
pub fn build_image(binary: &Path, dockerfile: &Path, image: &str) -> Result<(), DockerError> {
    let context = std::env::temp_dir().join(format!("helios-image-{}", std::process::id()));
    let io = |what: &str, source: std::io::Error| DockerError::Spawn {
        command: format!("{what} {}", context.display()),
        source,
    };
    std::fs::create_dir_all(&context).map_err(|e| io("create", e))?;
    let result = (|| {
        std::fs::copy(binary, context.join("helios")).map_err(|e| io("copy the binary to", e))?;
        std::fs::copy(dockerfile, context.join("Dockerfile"))
            .map_err(|e| io("copy the Dockerfile to", e))?;
        let context = context.display().to_string();
        run_bounded(
            "docker",
            &["build", "--quiet", "-t", image, &context],
            &[],
            COMPOSE_BOUND,
        )
        .map(|_| ())
    })();
    let _ = std::fs::remove_dir_all(&context);
    result
}

/// A running metadata group of containers.
#[derive(Debug)]
pub struct DockerCluster {
    spec: DockerClusterSpec,
    /// Nodes paused and not unpaused since.
    paused: BTreeSet<NodeId>,
    /// Nodes disconnected from the network and not connected since.
    disconnected: BTreeSet<NodeId>,
    /// Whether the spare node was started.
    spare_started: bool,
    /// Whether dropping the cluster removes it.
    down_on_drop: bool,
}

impl DockerCluster {
    /// Starts the containers (`docker-compose up -d`); does not wait for a leader.
    pub fn up(spec: DockerClusterSpec) -> Result<Self, DockerError> {
        if spec.ports.len() != DOCKER_NODES && spec.ports.len() != DOCKER_NODES + 1 {
            return Err(DockerError::Spec(format!(
                "{} ports given, the compose file has {DOCKER_NODES} nodes and a spare",
                spec.ports.len()
            )));
        }
        let cluster = DockerCluster {
            spec,
            paused: BTreeSet::new(),
            disconnected: BTreeSet::new(),
            spare_started: false,
            down_on_drop: true,
        };
        // A project left over by a run that was killed would hold the names.
        let _ = cluster.compose(&["down", "--volumes", "--timeout", "1"]);
        // The metadata services by name: the compose file also defines the shard members.
        let services: Vec<String> = cluster.ids().into_iter().map(Self::service).collect();
        let mut args = vec!["up", "-d", "--no-build"];
        args.extend(services.iter().map(String::as_str));
        cluster.compose(&args)?;
        Ok(cluster)
    }

    /// The cluster of a project already up (as `helios cluster up --target docker` left it);
    /// dropping it does not remove it.
    pub fn attach(spec: DockerClusterSpec) -> Self {
        DockerCluster {
            spec,
            paused: BTreeSet::new(),
            disconnected: BTreeSet::new(),
            spare_started: false,
            down_on_drop: false,
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("HELIOS_IMAGE".to_string(), self.spec.image.clone()),
            ("HELIOS_PROJECT".to_string(), self.spec.project.clone()),
        ];
        for (index, port) in self.spec.ports.iter().enumerate() {
            env.push((format!("HELIOS_PORT_{}", index + 1), port.to_string()));
        }
        env
    }

    fn compose(&self, args: &[&str]) -> Result<String, DockerError> {
        let file = self.spec.compose_file.display().to_string();
        // The profile lets `down` see the spare too; naming services in `up` starts only them.
        let mut all = vec![
            "-f",
            &file,
            "-p",
            &self.spec.project,
            "--profile",
            SPARE_PROFILE,
        ];
        all.extend_from_slice(args);
        run_bounded("docker-compose", &all, &self.env(), COMPOSE_BOUND)
    }

    fn docker(&self, args: &[&str]) -> Result<(), DockerError> {
        run_bounded("docker", args, &[], DOCKER_COMMAND_BOUND).map(|_| ())
    }

    /// The node ids: `1..=5`, and the spare once started.
    pub fn ids(&self) -> Vec<NodeId> {
        let last = if self.spare_started {
            SPARE_NODE
        } else {
            DOCKER_NODES as NodeId
        };
        (1..=last).collect()
    }

    /// Starts the spare node `m6` (`docker-compose up -d m6`): a node that every member knows
    /// the address of but that is no member; the caller adds it to the group. Needs the sixth
    /// port in the spec. Returns its id.
    pub fn start_spare(&mut self) -> Result<NodeId, DockerError> {
        if self.spec.ports.len() != DOCKER_NODES + 1 {
            return Err(DockerError::Spec(
                "no host port for the spare node was given".to_owned(),
            ));
        }
        if !self.spare_started {
            tracing::warn!(node = SPARE_NODE, "docker-compose up the spare node");
            let service = Self::service(SPARE_NODE);
            self.compose(&["up", "-d", "--no-build", &service])?;
            self.spare_started = true;
        }
        Ok(SPARE_NODE)
    }

    fn check(&self, id: NodeId) -> Result<(), DockerError> {
        if self.ids().contains(&id) {
            Ok(())
        } else {
            Err(DockerError::UnknownNode(id))
        }
    }

    /// Node `id`'s container name.
    pub fn container(&self, id: NodeId) -> String {
        format!("{}-m{id}", self.spec.project)
    }

    /// Node `id`'s service name, which its peers resolve.
    pub fn service(id: NodeId) -> String {
        format!("m{id}")
    }

    /// The network the nodes share.
    pub fn network(&self) -> String {
        format!("{}-net", self.spec.project)
    }

    /// Every node's address as clients reach it: the published port on 127.0.0.1.
    pub fn addresses(&self) -> BTreeMap<NodeId, String> {
        self.ids()
            .into_iter()
            .zip(&self.spec.ports)
            .map(|(id, port)| (id, format!("127.0.0.1:{port}")))
            .collect()
    }

    /// `docker kill`: SIGKILL to the node's process; the container and its data stay.
    pub fn kill(&mut self, id: NodeId) -> Result<(), DockerError> {
        self.check(id)?;
        tracing::warn!(node = id, "docker kill");
        self.docker(&["kill", &self.container(id)])?;
        self.paused.remove(&id);
        Ok(())
    }

    /// `docker start`: the killed node's container starts again from its data directory.
    pub fn start(&mut self, id: NodeId) -> Result<(), DockerError> {
        self.check(id)?;
        tracing::warn!(node = id, "docker start");
        self.docker(&["start", &self.container(id)])
    }

    /// `docker pause`: every process of the container freezes.
    pub fn pause(&mut self, id: NodeId) -> Result<(), DockerError> {
        self.check(id)?;
        tracing::warn!(node = id, "docker pause");
        self.docker(&["pause", &self.container(id)])?;
        self.paused.insert(id);
        Ok(())
    }

    /// `docker unpause`.
    pub fn unpause(&mut self, id: NodeId) -> Result<(), DockerError> {
        self.check(id)?;
        tracing::warn!(node = id, "docker unpause");
        self.docker(&["unpause", &self.container(id)])?;
        self.paused.remove(&id);
        Ok(())
    }

    /// `docker network disconnect`: the node loses its network, so every peer and every client.
    pub fn disconnect(&mut self, id: NodeId) -> Result<(), DockerError> {
        self.check(id)?;
        tracing::warn!(node = id, "docker network disconnect");
        self.docker(&[
            "network",
            "disconnect",
            &self.network(),
            &self.container(id),
        ])?;
        self.disconnected.insert(id);
        Ok(())
    }

    /// `docker network connect`, under the node's service name, which its peers resolve.
    pub fn connect(&mut self, id: NodeId) -> Result<(), DockerError> {
        self.check(id)?;
        tracing::warn!(node = id, "docker network connect");
        let alias = Self::service(id);
        self.docker(&[
            "network",
            "connect",
            "--alias",
            &alias,
            &self.network(),
            &self.container(id),
        ])?;
        self.disconnected.remove(&id);
        Ok(())
    }

    /// Connects every disconnected node again.
    pub fn reconnect_all(&mut self) -> Result<(), DockerError> {
        for id in self.disconnected() {
            self.connect(id)?;
        }
        Ok(())
    }

    /// The nodes paused now.
    pub fn paused(&self) -> Vec<NodeId> {
        self.paused.iter().copied().collect()
    }

    /// The nodes disconnected now.
    pub fn disconnected(&self) -> Vec<NodeId> {
        self.disconnected.iter().copied().collect()
    }

    /// Node `id`'s log (`docker logs`: the node writes to stderr), for diagnosis.
    pub fn logs(&self, id: NodeId) -> Result<String, DockerError> {
        self.check(id)?;
        let (stdout, stderr) = run_bounded_output(
            "docker",
            &["logs", &self.container(id)],
            &[],
            DOCKER_COMMAND_BOUND,
        )?;
        Ok(stderr + &stdout)
    }

    /// Removes the containers and the network (`docker-compose down`), unpausing first, as a
    /// paused container cannot be stopped.
    pub fn down(&mut self) -> Result<(), DockerError> {
        for id in std::mem::take(&mut self.paused) {
            let _ = self.docker(&["unpause", &self.container(id)]);
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

impl Drop for DockerCluster {
    fn drop(&mut self) {
        if self.down_on_drop {
            if let Err(error) = self.down() {
                tracing::error!(%error, "docker-compose down failed");
            }
        }
    }
}
