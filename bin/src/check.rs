//! `helios check`: check one or more history files and print verdicts, a table, or JSON.

use anyhow::{bail, Context};
use clap::Args;
use helios_checker::check::{check_file, CheckError, CheckOptions, Report};
use helios_checker::format::Format;
use helios_checker::report;
use helios_checker::select::CheckerKind;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `helios check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// History files, or folders to search for them (recursively).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The model: register[(init)], cas-register[(init)], kv, kv-single, multi-register[(init)],
    /// mutex, set. Detected from the history when absent.
    #[arg(long)]
    model: Option<String>,
    /// The checkers, comma-separated: linearizable, read-committed (isolation), lost-writes,
    /// bank, cache, timing. Chosen from the history's header or operations when absent.
    #[arg(long)]
    checker: Option<String>,
    /// The consistency model the isolation checker enforces: read-committed (default),
    /// repeatable-read, snapshot-isolation, serializable, strict-serializable.
    #[arg(long)]
    consistency: Option<String>,
    /// The input format: jsonl, jepsen-edn, jepsen-log, porcupine-kv. Detected when absent.
    #[arg(long)]
    format: Option<String>,
    /// Print the full report as JSON.
    #[arg(long)]
    json: bool,
    /// Write the report page (one self-contained HTML file: verdicts, plots, anomalies, the
    /// linearization view). With several files, a folder.
    #[arg(long, value_name = "PATH")]
    html: Option<PathBuf>,
    /// Give up after this long (`30s`, `500ms`, or seconds); the verdict is then unknown.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Give up when one partition memoises more configurations than this.
    #[arg(long)]
    max_states: Option<u64>,
    /// Give up when the search's memo tables exceed this many MiB.
    #[arg(long, value_name = "MIB")]
    max_memory: Option<u64>,
    /// The cache checker's bound (`5ms`, `250ms`, or seconds): every compute node must stop
    /// serving older values this long after a write is acknowledged. Overrides the header's
    /// `invalidation_bound_ms`; 100 ms when neither gives one.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    invalidation_bound: Option<Duration>,
}

/// Parses `30s`, `1m30s`, `500ms`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Ok(Duration::from_secs_f64(seconds));
        }
        return Err(format!("{text:?} is not a non-negative number of seconds"));
    }
    humantime::parse_duration(text).map_err(|error| format!("{text:?}: {error}"))
}

/// Runs `helios check`; returns the exit code.
pub fn run(args: CheckArgs) -> anyhow::Result<i32> {
    let format = match &args.format {
        Some(name) => Some(Format::parse(name).with_context(|| {
            format!(
                "unknown format {name:?}; expected jsonl, jepsen-edn, jepsen-log or porcupine-kv"
            )
        })?),
        None => None,
    };
    let files = expand(&args.files)?;
    let checkers = match &args.checker {
        Some(names) => Some(CheckerKind::parse_list(names).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let options = CheckOptions {
        checkers,
        consistency: args.consistency.clone(),
        model: args.model.clone(),
        format,
        timeout: args.timeout,
        max_states: args.max_states,
        max_memory_bytes: args.max_memory.map(|mib| mib << 20),
        keep_linearizations: args.html.is_some(),
        invalidation_bound: args.invalidation_bound,
    };
    if files.len() == 1 {
        return check_one(&files[0], &options, &args);
    }
    check_many(&files, &options, &args)
}

fn check_one(file: &Path, options: &CheckOptions, args: &CheckArgs) -> anyhow::Result<i32> {
    let spinner = progress(None);
    spinner.set_message(format!("checking {}", file.display()));
    let result = check_file(file, options);
    spinner.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(error) => return Ok(report_error(&error)),
    };
    if let Some(path) = &args.html {
        write_view(&report, path)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
    }
    Ok(report.verdict.exit_code())
}

fn check_many(files: &[PathBuf], options: &CheckOptions, args: &CheckArgs) -> anyhow::Result<i32> {
    if let Some(folder) = &args.html {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("{}: cannot create", folder.display()))?;
    }
    let bar = progress(Some(files.len() as u64));
    let mut worst = 0;
    let mut rows = Vec::new();
    let mut reports = Vec::new();
    for file in files {
        bar.set_message(file.display().to_string());
        let result = check_file(file, options);
        bar.inc(1);
        let code = match &result {
            Ok(report) => report.verdict.exit_code(),
            Err(_) => 3,
        };
        worst = worse(worst, code);
        match result {
            Ok(report) => {
                if let Some(folder) = &args.html {
                    let name = file
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    write_view(&report, &folder.join(format!("{name}.html")))?;
                }
                rows.push(format!(
                    "{:<60} {:>8} {:>8} {:>10.1}",
                    file.display(),
                    report.n_ops,
                    report.verdict.to_string(),
                    report.elapsed_ms
                ));
                reports.push(serde_json::to_value(&report)?);
            }
            Err(error) => {
                rows.push(format!(
                    "{:<60} {:>8} {:>8} {:>10}",
                    file.display(),
                    "-",
                    "error",
                    "-"
                ));
                rows.push(format!("  {error}"));
                reports.push(serde_json::json!({ "file": file.display().to_string(), "error": error.to_string() }));
            }
        }
    }
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        println!(
            "{:<60} {:>8} {:>8} {:>10}",
            "file", "ops", "verdict", "time ms"
        );
        for row in rows {
            println!("{row}");
        }
    }
    Ok(worst)
}

/// The worse of two exit codes: unreadable (3) beats invalid (1) beats unknown (2) beats valid (0).
fn worse(a: i32, b: i32) -> i32 {
    let rank = |code: i32| match code {
        0 => 0,
        2 => 1,
        1 => 2,
        _ => 3,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

fn report_error(error: &CheckError) -> i32 {
    eprintln!("helios: {error}");
    3
}

fn write_view(report: &Report, path: &Path) -> anyhow::Result<()> {
    let html = report::render_report_html(report);
    std::fs::write(path, html).with_context(|| format!("{}: cannot write the view", path.display()))
}

/// Expands folders into the history files below them, sorted; files are kept as given.
fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            walk(path, &mut found)?;
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    if files.is_empty() {
        bail!("no history files found in {:?}", paths);
    }
    Ok(files)
}

fn walk(folder: &Path, found: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(folder).with_context(|| format!("{}: cannot list", folder.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, found)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("jsonl" | "edn" | "log" | "txt" | "json")
        ) {
            found.push(path);
        }
    }
    Ok(())
}

/// A progress bar on a terminal; hidden when stderr is not one.
fn progress(length: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match length {
        Some(length) => {
            let bar = ProgressBar::new(length);
            bar.set_style(
                ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                    .expect("the template is valid"),
            );
            bar
        }
        None => {
            let spinner = ProgressBar::new_spinner();
            spinner.enable_steady_tick(Duration::from_millis(120));
            spinner
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_combine_with_unreadable_input_worst() {
        assert_eq!(worse(0, 2), 2);
        assert_eq!(worse(2, 1), 1);
        assert_eq!(worse(1, 2), 1);
        assert_eq!(worse(1, 3), 3);
        assert_eq!(worse(3, 0), 3);
    }

    #[test]
    fn durations_parse_as_seconds_or_with_units() {
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
