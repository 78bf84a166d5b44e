//! The full report page: rendered from corpus histories of every checker and from generated
//! timed histories with nemesis faults, then searched for what a reader must find on it.

use helios_checker::check::{check_file, CheckOptions, Report};
use helios_checker::elle::EdgeKind;
use helios_checker::history::{Event, EventType, History, Process};
use helios_checker::jsonl::write_history;
use helios_checker::report::render_report_html;
use helios_checker::synth::{register_history, RegisterHistoryConfig};
use helios_checker::verdict::Verdict;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Every page must stay under this, that of a 1,000,000-operation history included.
const PAGE_LIMIT_BYTES: usize = 10_000_000;
/// A value that would run script if it reached the page unescaped.
const MALICIOUS: &str = "</script><img src=x onerror=alert(1)>";

fn corpus(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../histories")
        .join(path)
}

fn check_with(path: &Path, options: CheckOptions) -> Report {
    check_file(path, &options).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn kept() -> CheckOptions {
    CheckOptions {
        keep_linearizations: true,
        ..Default::default()
    }
}

/// Text as the page must show it: escaped for HTML, as `view::text::push_escaped` does.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The structure every page must have, whatever the history.
fn assert_well_formed(page: &str) {
    assert!(page.starts_with("<!DOCTYPE html>"), "not an HTML page");
    assert!(
        page.trim_end().ends_with("</html>"),
        "the page is cut short"
    );
    assert!(page.len() < PAGE_LIMIT_BYTES, "{} bytes", page.len());
    for external in ["src=\"http", "href=\"http", "<link ", "<script src"] {
        assert!(!page.contains(external), "the page loads {external}");
    }
    assert_eq!(
        page.matches("<svg").count(),
        page.matches("</svg>").count(),
        "every SVG is closed"
    );
    assert_eq!(
        page.matches("<section").count(),
        page.matches("</section>").count(),
        "every section is closed"
    );
}

/// The opening tag of the first element of `class` and everything to its closing `</svg>`.
fn svg_with_class<'a>(page: &'a str, class: &str, from: usize) -> &'a str {
    let marker = format!("<svg class=\"{class}\"");
    let start = from
        + page[from..]
            .find(&marker)
            .unwrap_or_else(|| panic!("no {marker}"));
    let end = start + page[start..].find("</svg>").expect("the SVG is closed");
    &page[start..end]
}

/// A section of the page by id, up to the next section.
fn section<'a>(page: &'a str, id: &str) -> &'a str {
    let marker = format!("<section id=\"{id}\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no section {id}"));
    let end = page[start + 1..]
        .find("<section id=")
        .map_or(page.len(), |end| start + 1 + end);
    &page[start..end]
}

/// Writes `history` as JSON Lines to a file of the test's own and returns its path.
fn write_temporary(name: &str, history: &History) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("helios-report-{}-{name}.jsonl", std::process::id()));
    let file = std::fs::File::create(&path).expect("the temporary directory is writable");
    write_history(std::io::BufWriter::new(file), history).expect("the history is written");
    path
}

/// A linearizable register history of `n_ops` operations over about `seconds` seconds, with
/// a partition (healed), a kill (restarted) and a pause that is never resumed. Reads invoked
/// during the partition `fail` with a timeout: a failed read changes no state, so the history
/// stays linearizable, and the partition gets disruptions to recover from.
fn timed_history_with_faults(config: RegisterHistoryConfig, seconds: u64) -> History {
    let mut history = register_history(&config);
    let last = history
        .events
        .iter()
        .filter_map(|event| event.time)
        .max()
        .unwrap_or(1)
        .max(1);
    let scale = seconds as f64 * 1e9 / last as f64;
    for event in &mut history.events {
        event.time = event.time.map(|time| (time as f64 * scale) as u64);
    }
    let at = |fraction: f64| (seconds as f64 * 1e9 * fraction) as u64;
    let partition = at(0.2)..at(0.35);
    let mut reading_in_partition = std::collections::HashSet::new();
    for event in &mut history.events {
        let time = event.time.unwrap_or(0);
        if event.kind == EventType::Invoke {
            if event.f == "read" && partition.contains(&time) {
                reading_in_partition.insert(event.process.clone());
            }
        } else if reading_in_partition.remove(&event.process) && event.kind == EventType::Ok {
            event.kind = EventType::Fail;
            event.value = Some(serde_json::Value::Null);
            event.error = Some(json!("timeout"));
        }
    }
    let nemesis = [
        (partition.start, "start-partition", json!(["n1", "n2"])),
        (partition.end, "stop-partition", json!(["n1", "n2"])),
        (at(0.5), "kill", json!(["n3"])),
        (at(0.6), "restart", json!(["n3"])),
        (at(0.8), "pause", json!(["n4"])),
    ];
    insert_nemesis(&mut history, &nemesis);
    history
}

/// Adds nemesis `info` events at their times and renumbers every event densely.
fn insert_nemesis(history: &mut History, nemesis: &[(u64, &str, serde_json::Value)]) {
    for (time, f, value) in nemesis {
        let mut event = Event::new(0, EventType::Info, Process::nemesis(), *f);
        event.time = Some(*time);
        event.value = Some(value.clone());
        let position = history
            .events
            .partition_point(|existing| existing.time.unwrap_or(0) <= *time);
        history.events.insert(position, event);
    }
    for (index, event) in history.events.iter_mut().enumerate() {
        event.index = index as u64;
    }
}

#[test]
fn the_isolation_section_names_g2_item_explains_it_and_draws_its_cycle() {
    let options = CheckOptions {
        consistency: Some("repeatable-read".into()),
        ..kept()
    };
    let report = check_with(&corpus("elle/si-without-g-single.edn"), options);
    let page = render_report_html(&report);
    assert_well_formed(&page);
    let isolation = report
        .isolation
        .as_ref()
        .expect("the isolation checker ran");
    assert_eq!(isolation.verdict, Verdict::Invalid);
    let elle = section(&page, "isolation");
    assert!(elle.contains("G2-item"), "the anomaly is named");
    assert!(elle.contains("forbidden by repeatable-read"));
    let anomaly = &isolation.anomalies["G2-item"][0];
    for line in &anomaly.explanation {
        assert!(
            elle.contains(&escaped(line)),
            "explanation line missing: {line}"
        );
    }
    let cycle = anomaly.cycle.as_ref().expect("G2-item is a cycle");
    let graph = svg_with_class(&page, "cycle", 0);
    assert!(graph.contains(&format!("data-nodes=\"{}\"", cycle.len())));
    assert_eq!(graph.matches("<circle class=\"txn\"").count(), cycle.len());
    assert_eq!(graph.matches("<path class=\"edge ").count(), cycle.len());
    let rw = cycle
        .iter()
        .filter(|step| step.kind == EdgeKind::Rw)
        .count();
    assert_eq!(graph.matches("<path class=\"edge rw\"").count(), rw);
    assert!(rw >= 2, "G2-item needs two anti-dependencies, found {rw}");
    for step in cycle {
        assert!(
            graph.contains(&format!("<title>{}</title>", escaped(&step.why))),
            "the edge's why is its tooltip: {}",
            step.why
        );
    }
}

#[test]
fn a_g1c_cycle_of_two_transactions_is_drawn_with_both_wr_edges() {
    let report = check_with(
        &corpus("elle-handmade/g1c-circular-information-flow.jsonl"),
        kept(),
    );
    let page = render_report_html(&report);
    assert_well_formed(&page);
    let elle = section(&page, "isolation");
    assert!(elle.contains("G1c"));
    assert!(elle.contains(&escaped("because T1 read T0's append of 1 to key x (wr)")));
    let graph = svg_with_class(&page, "cycle", 0);
    assert_eq!(graph.matches("<circle class=\"txn\"").count(), 2);
    assert_eq!(graph.matches("<path class=\"edge wr\"").count(), 2);
    assert!(graph.contains(">T0</text>") && graph.contains(">T1</text>"));
    assert!(
        graph.contains("marker-end=\"url(#arrow-wr)\"") && page.contains("id=\"arrow-wr\""),
        "arrows point with a marker defined on the page"
    );
}

#[test]
fn a_stale_read_page_explains_the_witness_and_embeds_the_linearization_view() {
    let report = check_with(&corpus("handmade/stale-read.jsonl"), kept());
    let page = render_report_html(&report);
    assert_well_formed(&page);
    assert!(page.contains("<h1>Helios report <span class=\"badge invalid\">invalid</span>"));
    let linear = section(&page, "linearizability");
    assert!(linear.contains("<span class=\"badge invalid\">invalid</span>"));
    assert!(linear.contains("Cannot linearize"));
    assert!(linear.contains(&escaped("process 1: read → 1 (lines 6-7)")));
    assert!(
        linear.contains("class=\"part"),
        "the view's partition section"
    );
    assert!(
        linear.contains("id=\"witness-op\""),
        "the failing bar is drawn"
    );
    assert!(
        page.contains("href=\"#witness-op\""),
        "and linked from the words"
    );
    assert!(page.contains("<a href=\"#linearizability\">linearizable</a>"));
}

#[test]
fn a_lost_element_is_counted_listed_and_explained_with_the_definitions_at_hand() {
    let report = check_with(&corpus("sets-handmade/lost-after-ack.jsonl"), kept());
    let sets = report
        .lost_writes
        .as_ref()
        .expect("the lost-writes checker ran");
    assert_eq!(sets.lost_count, 1);
    let page = render_report_html(&report);
    assert_well_formed(&page);
    let lost = section(&page, "lost-writes");
    assert!(lost.contains("<span class=\"badge invalid\">invalid</span>"));
    assert!(lost.contains("<th>lost</th>"));
    assert!(
        lost.contains("<td class=\"n big bad\">1</td>"),
        "one lost, in red"
    );
    assert!(lost.contains("<h3>Lost <small>1</small></h3>"));
    assert!(lost.contains(&escaped(&sets.lost[0].explanation)));
    assert!(
        lost.contains("<td>lost</td><td class=\"n\">1</td>"),
        "lost latency quantiles"
    );
    let definitions = section(&page, "definitions");
    assert!(definitions.contains("<details>"));
    for (name, text) in &sets.definitions {
        assert!(definitions.contains(&format!(
            "<dt>{}</dt><dd>{}</dd>",
            escaped(name),
            escaped(text)
        )));
    }
}

#[test]
fn duplicated_elements_are_listed_with_their_multiplicity() {
    let report = check_with(&corpus("sets-handmade/duplicate.jsonl"), kept());
    let page = render_report_html(&report);
    assert_well_formed(&page);
    let lost = section(&page, "lost-writes");
    assert!(lost.contains("<h3>Duplicated <small>1</small></h3>"));
    assert!(
        lost.contains("<td class=\"n\">3</td><td class=\"n\">2</td>"),
        "3 copies, in 2 reads"
    );
}

#[test]
fn faults_are_shaded_on_the_timeline_and_every_plot_with_their_recovery() {
    let config = RegisterHistoryConfig {
        n_ops: 4_000,
        n_keys: 3,
        seed: 11,
        ..Default::default()
    };
    let path = write_temporary("faults", &timed_history_with_faults(config, 60));
    let report = check_with(&path, kept());
    let timing = report
        .timing
        .as_ref()
        .expect("the timing checker ran on a timed history");
    assert_eq!(timing.faults.len(), 3, "partition, kill and pause");
    let partition = &timing.faults[0];
    assert!(
        partition.affected_ops > 0,
        "reads failed during the partition"
    );
    assert!(partition.rto_ms.is_some(), "and the system recovered");
    assert_eq!(
        report.linearizability.as_ref().map(|l| l.verdict),
        Some(Verdict::Valid)
    );
    let page = render_report_html(&report);
    assert_well_formed(&page);

    let timeline = svg_with_class(&page, "timeline", 0);
    assert_eq!(timeline.matches("<rect class=\"fault\"").count(), 3);
    assert_eq!(timeline.matches("<rect class=\"fbar").count(), 3);
    assert_eq!(
        timeline.matches("<rect class=\"fbar open\"").count(),
        1,
        "the pause never heals"
    );
    assert!(
        timeline.contains("<path class=\"rec\""),
        "the recovery point is marked"
    );
    assert!(timeline.contains("class=\"sok\"") && timeline.contains("class=\"sfail\""));

    let plots = section(&page, "plots");
    for name in ["latency", "throughput"] {
        let marker = format!("<div class=\"plot\" data-plot=\"{name}\"><svg");
        let start = plots
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} plot"));
        let plot = &plots[start..start + plots[start..].find("</svg>").expect("closed")];
        assert!(
            plot.contains("xmlns=\"http://www.w3.org/2000/svg\""),
            "drawn by plotters"
        );
        // plotters writes the translucent fault shading as filled rectangles in its colour.
        let shaded = plot.matches("fill=\"#F59E42\"").count();
        assert!(
            shaded >= 3,
            "{name}: {shaded} shaded rectangles for 3 faults and the legend"
        );
        assert!(
            plot.contains(">\nfault\n</text>"),
            "{name}: the legend names the shading"
        );
        assert!(plot.contains("seconds since the run started"));
    }
    assert!(plots.contains(">\nread p50\n</text>") && plots.contains(">\nwrite p99\n</text>"));

    let tables = section(&page, "timing");
    assert!(tables.contains("start-partition") && tables.contains("stop-partition at"));
    assert!(tables.contains("not recovered") || timing.faults.iter().all(|f| f.recovered));
    assert!(
        tables.contains("<td class=\"o-fail\">fail</td>"),
        "failed reads have a latency row"
    );
    let definitions = section(&page, "definitions");
    assert!(definitions.contains("<dt>rto</dt>"));
    std::fs::remove_file(&path).ok();
}

#[test]
fn markup_in_history_values_keys_and_fault_targets_is_escaped() {
    let mut history = History::default();
    let mut push = |kind: EventType, process: u64, f: &str, value: serde_json::Value, time: u64| {
        let mut event = Event::new(0, kind, Process::Client(process), f);
        event.time = Some(time);
        event.key = Some(json!(MALICIOUS));
        event.value = Some(value);
        history.events.push(event);
    };
    push(EventType::Invoke, 0, "write", json!(MALICIOUS), 1_000_000);
    push(EventType::Ok, 0, "write", json!(MALICIOUS), 2_000_000);
    push(EventType::Invoke, 1, "read", json!(null), 3_000_000);
    push(
        EventType::Ok,
        1,
        "read",
        json!(format!("{MALICIOUS}!")),
        4_000_000,
    );
    insert_nemesis(
        &mut history,
        &[(1_500_000, "start-partition", json!([MALICIOUS]))],
    );
    let path = write_temporary("malicious", &history);
    let report = check_with(&path, kept());
    assert_eq!(
        report.verdict,
        Verdict::Invalid,
        "the read returned a value never written"
    );
    let page = render_report_html(&report);
    assert_well_formed(&page);
    assert!(!page.contains(MALICIOUS), "the value reached the page raw");
    assert!(!page.contains("<img"), "no element from the history");
    assert!(
        page.contains(&escaped(MALICIOUS)),
        "the value is shown, escaped"
    );
    let faults = section(&page, "timing");
    assert!(faults.contains(&escaped(&json!([MALICIOUS]).to_string())));
    std::fs::remove_file(&path).ok();
}

#[test]
fn a_report_without_kept_operations_still_renders_every_section() {
    let config = RegisterHistoryConfig {
        n_ops: 500,
        seed: 3,
        ..Default::default()
    };
    let path = write_temporary("unkept", &timed_history_with_faults(config, 10));
    let report = check_with(&path, CheckOptions::default());
    assert!(report.operations.is_none());
    let page = render_report_html(&report);
    assert_well_formed(&page);
    assert!(section(&page, "plots").contains("cannot be plotted"));
    assert!(
        section(&page, "plots").contains("data-plot=\"throughput\""),
        "from per-second counts"
    );
    assert!(section(&page, "linearizability").contains("did not keep them"));
    std::fs::remove_file(&path).ok();
}

/// Generates, checks and renders a timed history of `n_ops` operations with faults, and
/// returns the page's size.
fn page_bytes_for(n_ops: usize) -> usize {
    let config = RegisterHistoryConfig {
        n_ops,
        n_keys: 8,
        concurrency: 10,
        info_rate: 0.001,
        seed: 5,
        ..Default::default()
    };
    let path = write_temporary(
        &format!("size-{n_ops}"),
        &timed_history_with_faults(config, 600),
    );
    let report = check_with(&path, kept());
    std::fs::remove_file(&path).ok();
    assert_eq!(report.n_ops, n_ops);
    let page = render_report_html(&report);
    assert_well_formed(&page);
    assert!(page.contains("data-plot=\"latency\"") && page.contains("class=\"part"));
    eprintln!("{n_ops} operations: a page of {} bytes", page.len());
    page.len()
}

#[test]
fn the_page_of_two_hundred_thousand_operations_stays_bounded() {
    let bytes = page_bytes_for(200_000);
    assert!(bytes < PAGE_LIMIT_BYTES, "{bytes} bytes");
}

#[test]
#[ignore = "a million operations take minutes in a debug build; run with --ignored --release"]
fn the_page_of_a_million_operations_stays_under_ten_megabytes() {
    let bytes = page_bytes_for(1_000_000);
    assert!(bytes < PAGE_LIMIT_BYTES, "{bytes} bytes");
}

#[test]
fn a_bad_bank_read_is_counted_listed_and_explained_on_the_page() {
    let report = check_with(&corpus("bank-handmade/wrong-total-fractured.jsonl"), kept());
    let bank = report.bank.as_ref().expect("the bank checker ran");
    let page = render_report_html(&report);
    assert_well_formed(&page);
    assert!(
        page.contains("<a href=\"#bank\">bank</a>"),
        "the verdict table links the section"
    );
    let bank_section = section(&page, "bank");
    assert!(bank_section.contains("<span class=\"badge invalid\">invalid</span>"));
    assert!(bank_section.contains("total 100 (the history&#39;s header)"));
    assert!(bank_section.contains("<th>wrong-total</th>"));
    assert!(
        bank_section.contains("<td class=\"n big bad\">2</td>"),
        "two wrong totals, in red"
    );
    let first = bank.first_error.as_ref().unwrap();
    assert!(bank_section.contains(&escaped(&first.explanation)));
    assert!(bank_section.contains(&escaped(r#"{"0":50,"1":35,"2":20}"#)));
    let definitions = section(&page, "definitions");
    assert!(definitions.contains("<h3>Bank</h3>"));
}

#[test]
fn a_late_stale_read_is_shown_with_the_write_it_missed_and_how_late() {
    let report = check_with(&corpus("cache-handmade/never-converged.jsonl"), kept());
    let cache = report.cache.as_ref().expect("the cache checker ran");
    let page = render_report_html(&report);
    assert_well_formed(&page);
    let cache_section = section(&page, "cache");
    assert!(cache_section.contains("<span class=\"badge invalid\">invalid</span>"));
    assert!(cache_section.contains("bound 100 ms"));
    assert!(cache_section.contains("<h3>Late stale reads <small>late (write, node) pairs: 1;"));
    assert!(
        cache_section.contains("<td class=\"n bad\">195</td>"),
        "195 ms late"
    );
    assert!(cache_section.contains(&escaped(&cache.witness.as_ref().unwrap().explanation)));
    let definitions = section(&page, "definitions");
    assert!(definitions.contains("<h3>Cache invalidation</h3>"));
    assert!(definitions.contains("<dt>late stale read</dt>"));
}
