//! The memory cap holds for the whole process: `helios check --max-memory M` on a history no
//! search decides within M peaks under M + 150 MB and exits 0 or 2. Alone in its test binary,
//! so that the peak of this process's children is the one check's.

use nix::sys::resource::{getrusage, UsageWho};
use std::path::Path;
use std::process::Command;

#[test]
fn a_check_capped_at_512_mib_peaks_under_662_mb() {
    // kv-single checks Porcupine's 50-client kv file as one partition: the search needs far
    // more than 512 MiB, so it runs into the cap.
    let status = Command::new(env!("CARGO_BIN_EXE_helios"))
        .args([
            "check",
            "--model",
            "kv-single",
            "--max-memory",
            "512",
            "histories/porcupine-kv/c50-ok.txt",
        ])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .status()
        .expect("helios runs");
    let code = status.code().expect("exited, not killed");
    assert!(code == 0 || code == 2, "exit code {code}");
    // ru_maxrss is in KiB on Linux.
    let peak_bytes = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss() as u64 * 1024;
    eprintln!("peak RSS {:.1} MB, exit {code}", peak_bytes as f64 / 1e6);
    assert!(
        peak_bytes < 662_000_000,
        "peak RSS {peak_bytes} bytes over 512 MiB + 150 MB"
    );
}
