//! The linearizability section: the verdict and the partitions' counts, then the
//! linearization view's body (the witness in words, and each partition's lanes) embedded.

use super::open_section;
use crate::check::Report;
use crate::verdict::Verdict;
use crate::view::text::{excerpt, group, push_escaped};
use std::fmt::Write;

/// The linearizability section; `bytes_after` is what the page appends after it, which the
/// embedded view counts against the page's size limit.
pub(super) fn render(out: &mut String, report: &Report, bytes_after: usize) {
    let Some(linear) = &report.linearizability else {
        open_section(out, "linearizability", "Linearizability", None, "");
        out.push_str("<p class=\"why\">");
        push_escaped(
            out,
            &excerpt(
                report
                    .note
                    .as_deref()
                    .unwrap_or("the linearizability checker did not run"),
                1_000,
            ),
        );
        out.push_str("</p>\n</section>\n");
        return;
    };
    let count = |verdict: Verdict| {
        linear
            .partitions
            .iter()
            .filter(|p| p.verdict == verdict)
            .count()
    };
    let note = format!(
        "model {}, {} operations in {} partitions, checked in {:.1} ms",
        excerpt(&linear.model, 120),
        group(linear.n_ops as u64),
        group(linear.n_partitions as u64),
        linear.elapsed_ms
    );
    open_section(
        out,
        "linearizability",
        "Linearizability",
        Some(linear.verdict),
        &note,
    );
    let invalid = count(Verdict::Invalid);
    let unknown = count(Verdict::Unknown);
    let _ = writeln!(
        out,
        "<p>Partitions: {invalid} invalid, {unknown} unknown, {} valid.",
        group(linear.n_partitions.saturating_sub(invalid + unknown) as u64)
    );
    if linear.witness.is_some() {
        out.push_str(
            " The operation that cannot be linearized is <a href=\"#witness-op\">drawn in red below</a>.",
        );
    }
    out.push_str("</p>\n");
    if let Some(reason) = linear.unknown_reason {
        let _ = writeln!(
            out,
            "<p class=\"why\">The verdict is unknown because {}.</p>",
            reason.describe()
        );
    }
    crate::view::embed(out, report, bytes_after);
    out.push_str("</section>\n");
}
