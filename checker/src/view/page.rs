//! The page around the partitions: the header with the verdict and the witness in words, the
//! budget that decides which partitions are drawn, the table of those left out, CSS and JS.

use super::section::{self, Context};
use super::select::{self, Group};
use super::text::{escape, excerpt, group, push_escaped};
use super::{
    nemesis, Axis, MAX_OPS_PER_PAGE, MAX_OPS_PER_PARTITION, MAX_PAGE_BYTES, MAX_PARTITIONS_DRAWN,
    MAX_TEXT_CHARS, MIN_OPS_PER_PARTITION,
};
use crate::check::Report;
use crate::linear::search::UnknownReason;
use crate::linear::{LinearReport, Witness};
use crate::ops::Operations;
use crate::verdict::Verdict;
use std::fmt::Write;

/// Bytes kept free for the table of left-out partitions and the end of the page.
const RESERVED_BYTES: usize = 300_000;
/// A partition whose window has shrunk to this many operations and still does not fit is left out.
const SMALLEST_WINDOW: usize = 25;

/// The whole page.
pub(super) fn render(report: &Report) -> String {
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>",
    );
    push_escaped(
        &mut out,
        &format!(
            "helios · {} · {}",
            excerpt(&report.file, 120),
            report.verdict
        ),
    );
    out.push_str("</title>\n<style>");
    out.push_str(CSS);
    out.push_str("</style>\n</head>\n<body>\n");
    out.push_str(PATTERNS);
    header(&mut out, report);
    lanes_or_verdicts(&mut out, report, 0);
    out.push_str("<div id=\"tip\" role=\"tooltip\"></div>\n<script>");
    out.push_str(SCRIPT);
    out.push_str("</script>\n</body>\n</html>\n");
    out
}

/// The body of the view inside another page: witness, legend, then the partitions.
pub(super) fn embed(out: &mut String, report: &Report, bytes_after: usize) {
    out.push_str(PATTERNS);
    if let Some(witness) = report
        .linearizability
        .as_ref()
        .and_then(|linear| linear.witness.as_ref())
    {
        witness_words(out, witness);
    }
    out.push_str(LEGEND);
    lanes_or_verdicts(out, report, bytes_after);
}

/// The partitions' lanes, or without kept operations a table of their verdicts.
fn lanes_or_verdicts(out: &mut String, report: &Report, bytes_after: usize) {
    match &report.operations {
        Some(operations) => partitions(out, report, operations, bytes_after),
        None => {
            out.push_str(
                "<p class=\"cut\">The report holds no operations (the check did not keep them), \
                 so there are no lanes to draw; run the check with its linearizations kept \
                 (<code>helios check --html</code>).</p>\n",
            );
            if let Some(linear) = &report.linearizability {
                let rows: Vec<(String, Verdict, usize, &str)> = linear
                    .partitions
                    .iter()
                    .map(|p| (key_words(&p.key), p.verdict, p.n_ops, "operations not kept"))
                    .collect();
                left_out_table(out, &rows, rows.len());
            }
        }
    }
}

/// The header: file, verdict, model, counts, and the witness or the reason for `unknown`.
fn header(out: &mut String, report: &Report) {
    let verdict = report.verdict.to_string();
    let _ = write!(out, "<header>\n<h1>Linearization view <span class=\"badge {verdict}\">{verdict}</span></h1>\n<dl class=\"facts\">");
    fact(out, "file", &excerpt(&report.file, 300));
    fact(out, "format", report.format.name());
    let model = match &report.model {
        Some(model) => format!("{model} ({})", report.model_source),
        None => report.model_source.clone(),
    };
    fact(out, "model", &excerpt(&model, 300));
    fact(
        out,
        "operations",
        &format!(
            "{} ({} events)",
            group(report.n_ops as u64),
            group(report.n_events)
        ),
    );
    if let Some(linear) = &report.linearizability {
        fact(out, "partitions", &partition_counts(linear));
        fact(
            out,
            "checked",
            &format!(
                "{} operations in {:.1} ms",
                group(linear.n_ops as u64),
                linear.elapsed_ms
            ),
        );
    }
    if let Some(operations) = &report.operations {
        let axis = match Axis::for_operations(operations) {
            Axis::Time => "time since the run started",
            Axis::Index => "event index (the history has no times for every event)",
        };
        fact(out, "axis", axis);
        fact(
            out,
            "nemesis events",
            &group(operations.nemesis.len() as u64),
        );
    }
    out.push_str("</dl>\n");
    if let Some(linear) = &report.linearizability {
        if let Some(witness) = &linear.witness {
            witness_words(out, witness);
        }
        if let Some(reason) = linear.unknown_reason {
            let _ = writeln!(
                out,
                "<p class=\"why\">The verdict is unknown because {}.</p>",
                reason.describe()
            );
        }
    }
    if let Some(note) = &report.note {
        out.push_str("<p class=\"why\">");
        push_escaped(out, &excerpt(note, 1_000));
        out.push_str("</p>\n");
    }
    out.push_str(LEGEND);
    out.push_str("</header>\n");
}

fn fact(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, "<dt>{name}</dt><dd>");
    push_escaped(out, value);
    out.push_str("</dd>");
}

/// `12 (1 invalid, 3 unknown, 8 valid)`.
fn partition_counts(linear: &LinearReport) -> String {
    let count = |verdict: Verdict| {
        linear
            .partitions
            .iter()
            .filter(|p| p.verdict == verdict)
            .count()
    };
    let invalid = count(Verdict::Invalid);
    let unknown = count(Verdict::Unknown);
    let valid = linear.n_partitions.saturating_sub(invalid + unknown);
    format!(
        "{} ({invalid} invalid, {unknown} unknown, {valid} valid)",
        group(linear.n_partitions as u64)
    )
}

/// The witness in words: what cannot be linearized, after how long a prefix, in which state.
fn witness_words(out: &mut String, witness: &Witness) {
    out.push_str("<div class=\"witness\"><p><b>Cannot linearize</b> <a href=\"#witness-op\">");
    push_escaped(out, &excerpt(&witness.description, MAX_TEXT_CHARS));
    out.push_str("</a> in ");
    push_escaped(out, &key_words(&witness.key));
    let _ = write!(
        out,
        ". The longest linearizable prefix of that partition has {} operations; the model state after it is <code>",
        group(witness.prefix.len() as u64)
    );
    push_escaped(out, &excerpt(&witness.state, MAX_TEXT_CHARS));
    out.push_str("</code>.</p>\n");
    if !witness.prefix_tail.is_empty() {
        let first = witness.prefix.len() - witness.prefix_tail.len().min(witness.prefix.len()) + 1;
        let _ = write!(
            out,
            "<p>The prefix ends with:</p><ol class=\"steps\" start=\"{first}\">"
        );
        for step in &witness.prefix_tail {
            out.push_str("<li>");
            push_escaped(out, &excerpt(&step.description, MAX_TEXT_CHARS));
            out.push_str(" <span class=\"st\">⇒ ");
            push_escaped(out, &excerpt(&step.state, MAX_TEXT_CHARS));
            out.push_str("</span></li>");
        }
        out.push_str("<li class=\"fail\">✗ ");
        push_escaped(out, &excerpt(&witness.description, MAX_TEXT_CHARS));
        out.push_str("</li></ol>\n");
    }
    out.push_str("</div>\n");
}

/// A partition key in words.
pub(super) fn key_words(key: &Option<String>) -> String {
    match key {
        Some(key) => format!("key {}", excerpt(key, 80)),
        None => "the whole history".to_string(),
    }
}

/// Draws the partitions within the page's budgets, then lists those left out. `bytes_after`
/// is what the page will append after them, counted against the page's size limit.
fn partitions(out: &mut String, report: &Report, operations: &Operations, bytes_after: usize) {
    let groups = select::groups(report, operations);
    let axis = Axis::for_operations(operations);
    let markers = nemesis::markers(&operations.nemesis, |event| axis.nemesis(event));
    let intervals = nemesis::intervals(&markers);
    let witness = report
        .linearizability
        .as_ref()
        .and_then(|linear| linear.witness.as_ref());
    let n_drawable = groups.len().clamp(1, MAX_PARTITIONS_DRAWN);
    let share = (MAX_OPS_PER_PAGE / n_drawable).clamp(MIN_OPS_PER_PARTITION, MAX_OPS_PER_PARTITION);
    let mut ops_left = MAX_OPS_PER_PAGE;
    let mut left_out: Vec<(&Group<'_>, &str)> = Vec::new();
    out.push_str("<main>\n");
    for (number, group) in groups.iter().enumerate() {
        if number >= MAX_PARTITIONS_DRAWN {
            left_out.push((group, "the page draws at most 200 partitions"));
            continue;
        }
        if ops_left == 0 {
            left_out.push((group, "the page's limit of 20,000 operations was reached"));
            continue;
        }
        let context = Context {
            number,
            axis,
            markers: &markers,
            intervals: &intervals,
            witness: witness.filter(|witness| witness.key == group.key),
        };
        let placed = section::place_steps(group, operations, axis);
        // A partition the search could not finish gets as much room as an invalid one, unless
        // it was only cancelled because another partition was invalid.
        let cancelled =
            group.report.and_then(|report| report.unknown_reason) == Some(UnknownReason::Cancelled);
        let wanted = match group.verdict {
            Verdict::Invalid => MAX_OPS_PER_PARTITION,
            Verdict::Unknown if !cancelled => MAX_OPS_PER_PARTITION,
            Verdict::Unknown | Verdict::Valid => share,
        };
        let mut cap = wanted.min(ops_left);
        loop {
            let (html, n_drawn) = section::render(&context, group, &placed, cap);
            if out.len() + bytes_after + html.len() + RESERVED_BYTES <= MAX_PAGE_BYTES {
                out.push_str(&html);
                ops_left = ops_left.saturating_sub(n_drawn);
                break;
            }
            if cap <= SMALLEST_WINDOW {
                left_out.push((group, "the page's size limit was reached"));
                break;
            }
            cap /= 2;
        }
    }
    let rows: Vec<(String, Verdict, usize, &str)> = left_out
        .iter()
        .map(|(group, why)| (key_words(&group.key), group.verdict, group.ops.len(), *why))
        .collect();
    left_out_table(out, &rows, rows.len());
    out.push_str("</main>\n");
}

/// The partitions not drawn, at most [`MAX_PARTITIONS_DRAWN`] rows of them.
fn left_out_table(out: &mut String, rows: &[(String, Verdict, usize, &str)], n_left_out: usize) {
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<section class=\"left-out\"><h2>{} partitions not drawn</h2><table><tr><th>partition</th><th>verdict</th><th>operations</th><th>why</th></tr>",
        group(n_left_out as u64)
    );
    for (key, verdict, n_ops, why) in rows.iter().take(MAX_PARTITIONS_DRAWN) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"{verdict}\">{verdict}</td><td>{}</td><td>{}</td></tr>",
            escape(key),
            group(*n_ops as u64),
            escape(why)
        );
    }
    out.push_str("</table>");
    if rows.len() > MAX_PARTITIONS_DRAWN {
        let _ = write!(
            out,
            "<p class=\"cut\">and {} more</p>",
            group((rows.len() - MAX_PARTITIONS_DRAWN) as u64)
        );
    }
    out.push_str("</section>\n");
}

/// Fill patterns shared by every lane drawing: hatching marks an unknown outcome.
const PATTERNS: &str = concat!(
    "<svg width=\"0\" height=\"0\" style=\"position:absolute\" aria-hidden=\"true\"><defs>",
    "<pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">",
    "<rect width=\"6\" height=\"6\" fill=\"#dfe8f2\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#7f9bb8\" stroke-width=\"2\"/></pattern>",
    "<pattern id=\"hatch-lin\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">",
    "<rect width=\"6\" height=\"6\" fill=\"#a9c4e4\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#2f5f93\" stroke-width=\"2\"/></pattern>",
    "</defs></svg>\n"
);

/// What each mark means.
const LEGEND: &str = concat!(
    "<div class=\"legend\"><svg width=\"940\" height=\"22\" aria-label=\"legend\">",
    "<rect class=\"op lin\" x=\"2\" y=\"4\" width=\"26\" height=\"14\"/><text x=\"33\" y=\"15\">linearized</text>",
    "<rect class=\"op\" x=\"112\" y=\"4\" width=\"26\" height=\"14\"/><text x=\"143\" y=\"15\">not linearized</text>",
    "<rect class=\"op unk\" x=\"242\" y=\"4\" width=\"26\" height=\"14\"/><text x=\"273\" y=\"15\">outcome unknown</text>",
    "<rect class=\"op failed\" x=\"392\" y=\"4\" width=\"26\" height=\"14\"/><text x=\"423\" y=\"15\">failed</text>",
    "<rect class=\"op witness\" x=\"482\" y=\"4\" width=\"26\" height=\"14\"/><text x=\"513\" y=\"15\">cannot be linearized</text>",
    "<circle class=\"pt\" cx=\"662\" cy=\"11\" r=\"4\"/><text x=\"671\" y=\"15\">linearization point</text>",
    "<rect class=\"fault\" x=\"800\" y=\"2\" width=\"26\" height=\"18\"/><line class=\"nem\" x1=\"813\" y1=\"2\" x2=\"813\" y2=\"20\"/>",
    "<text x=\"831\" y=\"15\">nemesis fault</text></svg></div>\n"
);

pub(crate) const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 24px 40px;color:#1c2430;background:#fff}
h1{font-size:22px;margin:18px 0 8px}h2{font-size:16px;margin:0 0 6px}
h2 small{font-weight:normal;color:#5a6676;margin-left:8px}
.badge{display:inline-block;padding:1px 9px;border-radius:10px;color:#fff;font-size:.8em;vertical-align:middle}
.badge.valid{background:#2e8b4a}.badge.invalid{background:#c62828}.badge.unknown{background:#b7791f}
td.valid{color:#2e8b4a}td.invalid{color:#c62828}td.unknown{color:#b7791f}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:1px 14px;margin:6px 0 10px}
.facts dt{color:#5a6676}.facts dd{margin:0;word-break:break-all}
.witness{border-left:4px solid #c62828;background:#fdf0f0;padding:6px 12px;margin:8px 0}
.witness p{margin:4px 0}.why,.cut{color:#6b4e16;margin:4px 0}
code{background:#f1f3f6;padding:0 3px;border-radius:3px;word-break:break-all}
.steps{font:12px/1.5 ui-monospace,Menlo,Consolas,monospace;margin:4px 0;padding-left:56px;max-height:320px;overflow:auto}
.steps li[data-ref]{cursor:default}.steps li[data-ref]:hover{background:#eef4fb}
.steps .st{color:#2f5f93}.steps .fail{color:#c62828;font-weight:bold}
section.part{border-top:1px solid #d8dee6;padding:12px 0 6px;margin-top:10px}
.lanes{display:flex;border:1px solid #e3e8ee;border-radius:4px;margin:6px 0}
.lanes .scroll{overflow-x:auto;flex:1}.names{flex:none;border-right:1px solid #e3e8ee}
svg text{font:11px system-ui,sans-serif;fill:#36404d}
.lane{font-size:11px}.stripe{fill:#f5f7fa}.grid{stroke:#e6eaef}.tick{fill:#6b7684;font-size:10px}
.op{fill:#c9d8ea;stroke:#6f8fb3;stroke-width:.7}.op.lin{fill:#5b8fc7;stroke:#2f5f93}
.op.unk{fill:url(#hatch)}.op.unk.lin{fill:url(#hatch-lin)}
.op.failed{fill:#f2f2f2;stroke:#a8a8a8;stroke-dasharray:3 2}
.op.witness{fill:#e53935;stroke:#8e0000;stroke-width:2}
.op.clipped{stroke-dasharray:2 2}
.op.hl{stroke:#000;stroke-width:2.5}
.pts circle,.pt{fill:#fff;stroke:#1d3d63;stroke-width:1.4}.pts text{font-size:9px;fill:#1d3d63;text-anchor:middle}
.order{fill:none;stroke:#1d3d63;stroke-opacity:.3;stroke-width:1}
.wlabel{fill:#c62828;font-weight:bold}
.fault{fill:#f59e42;fill-opacity:.16}.nem{stroke:#d9822b;stroke-width:1.2;stroke-dasharray:4 3}
.nlabel{fill:#a85c12;font-size:10px}
table{border-collapse:collapse;font-size:13px}td,th{border-bottom:1px solid #e3e8ee;padding:2px 10px;text-align:left}
#tip{position:fixed;display:none;max-width:560px;background:#1c2430;color:#fff;padding:6px 9px;border-radius:4px;
font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-all;pointer-events:none;z-index:10}
"#;

/// Tooltips from `data-t` (a point or a listed step shows the tooltip of the bar it refers to
/// with `data-ref`, and highlights that bar), and scrolling the
/// failing operation into view. Text goes in with `textContent`, never as markup.
pub(crate) const SCRIPT: &str = r#"
(function(){
var tip=document.getElementById('tip'),lit=null;
function place(e){var w=tip.offsetWidth,h=tip.offsetHeight,x=e.clientX+14,y=e.clientY+16;
if(x+w>innerWidth-6)x=Math.max(6,e.clientX-w-14);if(y+h>innerHeight-6)y=Math.max(6,e.clientY-h-16);
tip.style.left=x+'px';tip.style.top=y+'px';}
function light(el){if(lit)lit.classList.remove('hl');lit=el;if(lit)lit.classList.add('hl');}
document.addEventListener('mouseover',function(e){
var r=e.target.closest?e.target.closest('[data-ref]'):null,b=r?document.getElementById(r.getAttribute('data-ref')):null;
var t=e.target.closest?e.target.closest('[data-t]'):null;if(!t&&b&&b.hasAttribute('data-t'))t=b;
if(t){tip.textContent=t.getAttribute('data-t');tip.style.display='block';place(e);}else{tip.style.display='none';}
light(b);});
document.addEventListener('mousemove',function(e){if(tip.style.display==='block')place(e);});
var w=document.getElementById('witness-op');
if(w){var s=w.closest('.scroll');if(s)s.scrollLeft=Math.max(0,parseFloat(w.getAttribute('x'))-s.clientWidth/2);}
})();
"#;
