//! Helpers shared by the checker's benchmarks.

/// The peak resident set of this process in MiB (VmHWM from `/proc/self/status`), or NaN where
/// the kernel does not report it. Each benchmark case runs in a child process, so the figure
/// is that case's own.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}
