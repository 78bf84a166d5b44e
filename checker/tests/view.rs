//! The linearization view: pages rendered from corpus histories and from generated ones.

use helios_checker::check::{check_file, CheckOptions, Report};
use helios_checker::verdict::Verdict;
use helios_checker::view::render_html;
use serde_json::json;
use std::path::{Path, PathBuf};

/// The page of a 1,000,000-operation history must stay under this; every page must, too.
const PAGE_LIMIT_BYTES: usize = 10_000_000;

fn corpus(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../histories")
        .join(path)
}

fn check_kept(path: &Path) -> Report {
    let options = CheckOptions {
        keep_linearizations: true,
        ..Default::default()
    };
    check_file(path, &options).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Writes a JSON Lines history (a header, then `events`) to a file of the test's own.
fn write_history(
    name: &str,
    header: serde_json::Value,
    events: impl IntoIterator<Item = serde_json::Value>,
) -> PathBuf {
    let mut text = header.to_string();
    text.push('\n');
    for event in events {
        text.push_str(&event.to_string());
        text.push('\n');
    }
    let path =
        std::env::temp_dir().join(format!("helios-view-{}-{name}.jsonl", std::process::id()));
    std::fs::write(&path, text).expect("the temporary directory is writable");
    path
}

/// Events of operations that never overlap: `ops` as (process, f, key, invoke value, ok value).
fn sequential(
    ops: &[(u64, &str, &str, serde_json::Value, serde_json::Value)],
) -> Vec<serde_json::Value> {
    let mut events = Vec::with_capacity(ops.len() * 2);
    for (process, f, key, input, output) in ops {
        let index = events.len() as u64;
        events.push(json!({"index": index, "time": index * 1_000, "type": "invoke", "process": process, "f": f, "key": key, "value": input}));
        events.push(json!({"index": index + 1, "time": index * 1_000 + 500, "type": "ok", "process": process, "f": f, "key": key, "value": output}));
    }
    events
}

/// The structural checks every page must pass.
fn assert_well_formed(page: &str) {
    assert!(
        page.starts_with("<!DOCTYPE html>"),
        "the page starts with a doctype"
    );
    assert_eq!(page.matches("<html").count(), 1, "one <html>");
    assert_eq!(page.matches("</html>").count(), 1, "one </html>");
    assert_eq!(
        page.matches("<svg").count(),
        page.matches("</svg>").count(),
        "balanced <svg>"
    );
    assert_eq!(
        page.matches("<section").count(),
        page.matches("</section>").count(),
        "balanced <section>"
    );
    assert_eq!(
        page.matches("<script").count(),
        1,
        "only the page's own script"
    );
    assert_eq!(page.matches("</script>").count(), 1, "no script ends early");
    let without_namespace = page.replace("http://www.w3.org/2000/svg", "");
    assert!(
        !without_namespace.contains("http://") && !without_namespace.contains("https://"),
        "no network references"
    );
    assert!(
        page.len() < PAGE_LIMIT_BYTES,
        "page of {} bytes",
        page.len()
    );
}

/// The page after its header and legend: the partitions.
fn drawing(page: &str) -> &str {
    &page[page
        .find("<main>")
        .expect("a page with operations has a <main>")..]
}

/// The text of the element with `id`, up to the end of its tag.
fn tag_with_id<'a>(page: &'a str, id: &str) -> &'a str {
    let at = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element with id {id}"));
    let start = page[..at].rfind('<').expect("an id sits inside a tag");
    let end = at + page[at..].find('>').expect("a tag ends");
    &page[start..=end]
}

#[test]
fn the_knossos_bad_analysis_page_names_and_highlights_the_failing_read() {
    let report = check_kept(&corpus("knossos/cas-register/bad/bad-analysis.edn"));
    assert_eq!(report.verdict, Verdict::Invalid);
    let page = render_html(&report);
    assert_well_formed(&page);
    let witness = report
        .linearizability
        .as_ref()
        .and_then(|l| l.witness.as_ref())
        .expect("an invalid report has a witness");
    assert!(
        page.contains(&format!(">{}</a>", witness.description)),
        "the header names {}",
        witness.description
    );
    let bar = tag_with_id(&page, "witness-op");
    assert!(bar.contains("class=\"op witness\""), "{bar}");
    // Five steps: process 20's write of 1, whose outcome is unknown and whose value nobody
    // read, is never linearized (rule 1 of the search).
    assert!(
        bar.contains("CANNOT BE LINEARIZED after the 5 steps"),
        "{bar}"
    );
    assert!(page.contains("The longest linearizable prefix of that partition has 5 operations"));
    // Five numbered linearization points, one per step of the prefix.
    assert_eq!(drawing(&page).matches("<circle cx=").count(), 5);
    assert!(page.contains("class=\"badge invalid\""));
}

#[test]
fn the_etcd_page_draws_the_prefix_and_marks_unknown_outcomes() {
    let report = check_kept(&corpus("porcupine-etcd/etcd_000.log"));
    assert_eq!(report.verdict, Verdict::Invalid);
    let page = render_html(&report);
    assert_well_formed(&page);
    let witness = report
        .linearizability
        .as_ref()
        .and_then(|l| l.witness.as_ref())
        .expect("a witness");
    assert!(page.contains("id=\"witness-op\""));
    assert_eq!(
        drawing(&page).matches("<circle cx=").count(),
        witness.prefix.len()
    );
    assert!(
        page.contains("class=\"op lin unk\""),
        "an info write that was linearized is hatched and solid"
    );
    assert!(page.contains("outcome: info (unknown"));
}

#[test]
fn invalid_partitions_of_the_porcupine_kv_history_come_first() {
    let report = check_kept(&corpus("porcupine-kv/c10-bad.txt"));
    assert_eq!(report.verdict, Verdict::Invalid);
    let page = render_html(&report);
    assert_well_formed(&page);
    let badges: Vec<&str> = page
        .split("<section class=\"part\"")
        .skip(1)
        .map(|section| {
            let at = section
                .find("class=\"badge ")
                .expect("each section has a verdict badge")
                + 13;
            &section[at..at + section[at..].find('"').expect("a closing quote")]
        })
        .collect();
    assert_eq!(badges.len(), 10, "{badges:?}");
    let witness = report
        .linearizability
        .as_ref()
        .and_then(|l| l.witness.as_ref())
        .expect("a witness");
    let first = page
        .split("<section class=\"part\"")
        .nth(1)
        .expect("a first section");
    assert!(
        first.contains("id=\"witness-op\""),
        "the witness's partition is drawn first"
    );
    assert!(first.contains(&format!(
        "key {}",
        witness
            .key
            .clone()
            .unwrap_or_default()
            .replace('"', "&quot;")
    )));
    let rank = |badge: &&str| {
        ["invalid", "unknown", "valid"]
            .iter()
            .position(|b| b == badge)
    };
    let ranks: Vec<_> = badges.iter().map(rank).collect();
    assert!(
        ranks.windows(2).all(|pair| pair[0] <= pair[1]),
        "{badges:?}"
    );
}

#[test]
fn nemesis_faults_are_shaded_between_fault_and_heal() {
    let header = json!({"helios_history": 1, "workload": "register"});
    let mut events = sequential(&[
        (1, "write", "x", json!(1), json!(1)),
        (2, "read", "x", json!(null), json!(1)),
        (1, "write", "x", json!(2), json!(2)),
        (2, "read", "x", json!(null), json!(2)),
    ]);
    let nemesis = |index: u64, f: &str, value: serde_json::Value| json!({"index": index, "time": index * 1_000 + 700, "type": "info", "process": "nemesis", "f": f, "value": value});
    events.insert(
        2,
        nemesis(
            2,
            "start-partition",
            json!({"groups": [["n1"], ["n2", "n3"]]}),
        ),
    );
    events.insert(6, nemesis(6, "stop-partition", json!(null)));
    events.insert(7, nemesis(7, "kill", json!("n2")));
    for (index, event) in events.iter_mut().enumerate() {
        event["index"] = json!(index);
        event["time"] = json!(index as u64 * 1_000);
    }
    let path = write_history("nemesis", header, events);
    let report = check_kept(&path);
    assert_eq!(report.verdict, Verdict::Valid);
    let page = render_html(&report);
    assert_well_formed(&page);
    assert_eq!(
        drawing(&page).matches("<rect class=\"fault\" x=").count(),
        2,
        "one healed partition, one kill never healed"
    );
    assert!(page.contains("fault: start-partition {&quot;groups&quot;:[[&quot;n1&quot;],[&quot;n2&quot;,&quot;n3&quot;]]}&#10;from 2 µs until stop-partition at 6 µs"));
    assert!(page.contains("fault: kill &quot;n2&quot;&#10;from 7 µs, never healed in this history"));
    assert_eq!(drawing(&page).matches("<line class=\"nem\"").count(), 3);
    assert!(page.contains("time since the run started"));
    assert!(
        page.contains(">5 µs</text>") || page.contains(">4 µs</text>"),
        "tick labels are times"
    );
    std::fs::remove_file(path).ok();
}

#[test]
fn a_corpus_history_with_nemesis_events_gets_annotations() {
    let report = check_kept(&corpus("knossos/cas-register/bad/cas-failure.edn"));
    let page = render_html(&report);
    assert_well_formed(&page);
    assert!(
        page.contains("<line class=\"nem\""),
        "nemesis markers are drawn"
    );
    assert!(
        page.contains("<rect class=\"fault\""),
        "the start/stop partition is shaded"
    );
}

#[test]
fn markup_in_history_values_is_escaped() {
    let evil = "</script><img src=x onerror=alert(1)>";
    let header = json!({"helios_history": 1, "workload": "register"});
    let events = sequential(&[
        (1, "write", evil, json!(evil), json!(evil)),
        (2, "read", evil, json!(null), json!("'\"&<marquee>")),
    ]);
    let path = write_history("escape", header, events);
    let report = check_kept(&path);
    assert_eq!(
        report.verdict,
        Verdict::Invalid,
        "the read saw a value never written"
    );
    let page = render_html(&report);
    assert_well_formed(&page);
    assert!(
        !page.contains("<img"),
        "no markup from the history survives"
    );
    assert!(!page.contains("<marquee>"));
    assert!(
        page.contains("&#39;\\&quot;&amp;&lt;marquee&gt;"),
        "the read's value is shown, escaped"
    );
    assert!(page.contains("&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"));
    std::fs::remove_file(path).ok();
}

#[test]
fn a_hundred_thousand_operations_on_one_key_render_a_bounded_window_around_the_failure() {
    let n_ops: u64 = 100_000;
    let failing = 60_001;
    let ops: Vec<(u64, &str, &str, serde_json::Value, serde_json::Value)> = (0..n_ops)
        .map(|at| {
            let process = at % 7;
            match at {
                at if at == failing => (process, "read", "k", json!(null), json!(-1)),
                at if at % 2 == 0 => (process, "write", "k", json!(at), json!(at)),
                at => (process, "read", "k", json!(null), json!(at - 1)),
            }
        })
        .collect();
    let header = json!({"helios_history": 1, "workload": "register"});
    let path = write_history("hundred-thousand", header, sequential(&ops));
    let report = check_kept(&path);
    std::fs::remove_file(&path).ok();
    assert_eq!(report.verdict, Verdict::Invalid);
    let page = render_html(&report);
    assert_well_formed(&page);
    assert!(page.len() < 1_500_000, "page of {} bytes", page.len());
    let cut = page
        .find("<p class=\"cut\">Showing")
        .map(|at| &page[at..at + 200]);
    assert!(
        page.contains("Showing 1,000 of 100,000 operations of key "),
        "{cut:?}"
    );
    assert!(
        cut.is_some_and(|cut| cut.contains(" around the failing operation.</p>")),
        "{cut:?}"
    );
    assert_eq!(page.matches("<rect id=").count(), 1_000);
    let bar = tag_with_id(&page, "witness-op");
    assert!(bar.contains("read k → -1"), "{bar}");
    assert!(
        bar.contains("CANNOT BE LINEARIZED after the 60,001 steps"),
        "{bar}"
    );
    assert!(page.contains("60,001 linearized") || page.contains("has 60,001 operations"));
}

#[test]
fn many_partitions_stay_within_the_page_limits_and_list_what_was_left_out() {
    let n_keys = 260;
    let ops_per_key = 120;
    let keys: Vec<String> = (0..n_keys).map(|key| format!("key-{key}")).collect();
    let mut ops = Vec::new();
    for round in 0..ops_per_key {
        for (at, key) in keys.iter().enumerate() {
            ops.push((
                at as u64 % 5,
                "write",
                key.as_str(),
                json!(round),
                json!(round),
            ));
        }
    }
    let header = json!({"helios_history": 1, "workload": "register"});
    let path = write_history("many-partitions", header, sequential(&ops));
    let report = check_kept(&path);
    std::fs::remove_file(&path).ok();
    assert_eq!(report.verdict, Verdict::Valid);
    let page = render_html(&report);
    assert_well_formed(&page);
    let n_sections = page.matches("<section class=\"part\"").count();
    assert_eq!(n_sections, 200, "at most 200 partitions are drawn");
    assert_eq!(
        page.matches("<rect id=").count(),
        20_000,
        "100 operations for each of 200 partitions"
    );
    assert!(page.contains("Showing 100 of 120 operations of key "));
    assert!(page.contains("<h2>60 partitions not drawn</h2>"));
    assert_eq!(
        page.matches("the page draws at most 200 partitions")
            .count(),
        60
    );
}

#[test]
fn valid_partitions_without_kept_steps_still_show_their_bars() {
    let mut report = check_kept(&corpus("knossos/cas-register/good/cas-register-bug.edn"));
    assert_eq!(report.verdict, Verdict::Valid);
    let n_ops = report
        .operations
        .as_ref()
        .map(|ops| ops.ops.len())
        .expect("operations are kept");
    for partition in &mut report
        .linearizability
        .as_mut()
        .expect("a model applied")
        .partitions
    {
        partition.steps.clear();
    }
    let page = render_html(&report);
    assert_well_formed(&page);
    assert_eq!(page.matches("<rect id=").count(), n_ops);
    assert!(!drawing(&page).contains("<circle cx="));
    assert!(page.contains("does not hold this partition's linearization"));
}

#[test]
fn a_report_without_operations_renders_its_header_alone() {
    let path = corpus("knossos/cas-register/bad/bad-analysis.edn");
    let report = check_file(&path, &CheckOptions::default()).expect("the corpus file reads");
    assert!(report.operations.is_none());
    let page = render_html(&report);
    assert_well_formed(&page);
    assert!(page.contains("Cannot linearize"));
    assert!(page.contains("the check did not keep them"));
    assert!(!page.contains("<rect id="));
}
