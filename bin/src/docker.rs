//! The Docker side of `helios cluster up --target docker` and `helios run --target docker`: the
//! compose file (the metadata group and the replicated shards) and Dockerfile (compiled in from
//! `docker/`, so the binary works from any directory), and the image, built FROM scratch around
//! a statically linked helios.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use helios_cluster::process::{
    build_image, run_bounded, DockerCluster, DockerClusterSpec, DockerShardsSpec,
    DOCKER_COMMAND_BOUND,
};
use serde::{Deserialize, Serialize};

/// `docker/docker-compose.yml`.
pub const COMPOSE_FILE: &str = include_str!("../../docker/docker-compose.yml");
/// `docker/Dockerfile`.
pub const DOCKERFILE: &str = include_str!("../../docker/Dockerfile");
/// The image the compose file runs.
pub const IMAGE: &str = "helios:local";
/// The target triple of the static build (`docker/build-image.sh`).
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Writes the compose file and the Dockerfile into `dir`; returns the compose file's path.
pub fn write_files(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let compose = dir.join("docker-compose.yml");
    std::fs::write(&compose, COMPOSE_FILE)
        .with_context(|| format!("write {}", compose.display()))?;
    let dockerfile = dir.join("Dockerfile");
    std::fs::write(&dockerfile, DOCKERFILE)
        .with_context(|| format!("write {}", dockerfile.display()))?;
    Ok(compose)
}

/// Whether the ELF file at `path` is statically linked: it names no dynamic loader. A dynamic
/// binary in an image FROM scratch fails to start with a bare "no such file or directory".
fn is_static(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let head = &bytes[..bytes.len().min(64 * 1024)];
    bytes.starts_with(b"\x7fELF") && !head.windows(8).any(|window| window == b"ld-linux")
}

/// The statically linked helios to put in the image: `$HELIOS_STATIC_BINARY`, this binary if it
/// is static, or the static build beside this binary's target directory.
fn static_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok();
    let beside = exe.as_ref().and_then(|exe| {
        let target_dir = exe.parent()?.parent()?;
        Some(
            target_dir
                .join(STATIC_TARGET)
                .join("release")
                .join("helios"),
        )
    });
    std::env::var_os("HELIOS_STATIC_BINARY")
        .map(PathBuf::from)
        .into_iter()
        .chain(exe)
        .chain(beside)
        .find(|path| is_static(path))
}

/// Builds the image from the static binary when there is one; otherwise uses the image if it
/// exists; otherwise says how to build it. Writes the build's Dockerfile into `dir`.
pub fn prepare_image(dir: &Path) -> anyhow::Result<()> {
    write_files(dir)?;
    match static_binary() {
        Some(binary) => {
            eprintln!(
                "helios: building image {IMAGE} FROM scratch with {}",
                binary.display()
            );
            build_image(&binary, &dir.join("Dockerfile"), IMAGE)
                .with_context(|| format!("cannot build the image {IMAGE}"))
        }
        None => {
            if run_bounded(
                "docker",
                &["image", "inspect", IMAGE],
                &[],
                DOCKER_COMMAND_BOUND,
            )
            .is_ok()
            {
                eprintln!(
                    "helios: no static helios binary found; using the existing image {IMAGE}"
                );
                return Ok(());
            }
            bail!(
                "no image {IMAGE} and no statically linked helios to build it from: run \
                 docker/build-image.sh (or set HELIOS_STATIC_BINARY)"
            )
        }
    }
}

/// `DIR/docker.json`: what `helios cluster up --target docker` started, so that `status` and
/// `down` find it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DockerManifest {
    /// The compose project, the prefix of the container and network names.
    pub project: String,
    /// The image.
    pub image: String,
    /// The host port of node `i`, index `i - 1`.
    pub ports: Vec<u16>,
    /// The host port of shard member `m`, index `m` (three per shard; none in a manifest
    /// written before the shards ran in Docker).
    #[serde(default)]
    pub shard_ports: Vec<u16>,
    /// The host port of compute node `c`, index `c` (none in a manifest written before the
    /// compute nodes ran in Docker).
    #[serde(default)]
    pub compute_ports: Vec<u16>,
}

impl DockerManifest {
    /// The manifest's path in `dir`.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("docker.json")
    }

    /// Reads `DIR/docker.json`, if there is one.
    pub fn load(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = Self::path_in(dir);
        if !path.exists() {
            return Ok(None);
        }
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let manifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a docker manifest", path.display()))?;
        Ok(Some(manifest))
    }

    /// Writes `DIR/docker.json`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = Self::path_in(dir);
        let text = serde_json::to_string_pretty(self).context("serialize docker.json")?;
        std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))
    }

    /// The spec of this cluster, with the compose file in `dir`.
    pub fn spec(&self, dir: &Path) -> DockerClusterSpec {
        DockerClusterSpec {
            compose_file: dir.join("docker-compose.yml"),
            project: self.project.clone(),
            image: self.image.clone(),
            ports: self.ports.clone(),
        }
    }

    /// The spec of the replicated shards, if there are any: the shard services of the same
    /// compose file, in the project `<project>-shards` (so on a network of their own).
    pub fn shards_spec(&self, dir: &Path) -> Option<DockerShardsSpec> {
        (!self.shard_ports.is_empty()).then(|| DockerShardsSpec {
            compose_file: dir.join("docker-compose.yml"),
            project: format!("{}-shards", self.project),
            image: self.image.clone(),
            shard_ports: self.shard_ports.clone(),
            compute_ports: self.compute_ports.clone(),
            metadata_network: Some(format!("{}-net", self.project)),
        })
    }
}

/// The state Docker reports for node `id`'s container: running, paused, exited, ...
pub fn container_state(cluster: &DockerCluster, id: u64) -> String {
    state_of(&cluster.container(id))
}

/// The state Docker reports for the container named `container`, or `missing`.
pub fn state_of(container: &str) -> String {
    run_bounded(
        "docker",
        &["inspect", "--format", "{{.State.Status}}", container],
        &[],
        DOCKER_COMMAND_BOUND,
    )
    .map(|state| state.trim().to_owned())
    .unwrap_or_else(|_| "missing".to_owned())
}
