//! What the root package's process-driving suites share: the repository's path, bounded child
//! commands, and the release `helios` binary the node processes run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The bound on building the binary or the image.
pub const BUILD_BOUND: Duration = Duration::from_secs(40 * 60);

/// The repository's root.
pub fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `command` to completion within `bound`; panics with its name if it fails.
pub fn run_bounded(mut command: Command, what: &str, bound: Duration) {
    let mut child = command
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{what}: cannot start: {error}"));
    let deadline = Instant::now() + bound;
    loop {
        match child.try_wait().expect("wait for a child") {
            Some(status) => {
                assert!(status.success(), "{what}: {status}");
                return;
            }
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what}: not done within {bound:?}");
            }
        }
    }
}

/// The `helios` binary the node processes run: `HELIOS_BIN`, else a release build (built once
/// per suite), as the timings of debug builds on two cores would measure the build rather
/// than the protocols.
pub fn helios_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("HELIOS_BIN") {
            return PathBuf::from(path);
        }
        // The suite runs from target/<profile>/deps/.
        let exe = std::env::current_exe().expect("the test's own path");
        let target_dir = exe
            .ancestors()
            .nth(3)
            .expect("target/<profile>/deps/<test>");
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build
            .current_dir(repository())
            .args(["build", "--release", "-p", "helios"]);
        run_bounded(build, "cargo build --release -p helios", BUILD_BOUND);
        target_dir.join("release").join("helios")
    })
}
