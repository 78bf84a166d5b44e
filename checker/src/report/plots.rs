//! Plots drawn with plotters into SVG strings: latency over time (p50 and p99 per `f`) and
//! throughput over time by outcome, each with the nemesis's fault intervals shaded.
//!
//! Both are bucketed over the run, at most [`MAX_BUCKETS`] buckets, so a series never has
//! more than that many points, whatever the history's size.

use super::span::Span;
use super::{open_section, MAX_POINTS_PER_SERIES};
use crate::check::Report;
use crate::ops::{Operations, Outcome};
use crate::timing::{Quantiles, TimingReport};
use crate::view::text::{excerpt, nanos, push_escaped};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::error::Error;
use std::fmt::Write;

/// Buckets over the run for the outcome strip and the plots; far below the per-series cap.
const MAX_BUCKETS: u64 = 240;
/// Most functions plotted on the latency plot, the most frequent first.
const MAX_FUNCTIONS: usize = 6;
/// A plot's size in pixels.
const PLOT_SIZE: (u32, u32) = (1_100, 330);
/// The fault shading, the same orange as the timeline's and the linearization view's.
pub(super) const FAULT_COLOR: RGBColor = RGBColor(245, 158, 66);
/// One colour per plotted function.
const PALETTE: [RGBColor; MAX_FUNCTIONS] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];
const OK_COLOR: RGBColor = RGBColor(46, 139, 74);
const FAIL_COLOR: RGBColor = RGBColor(198, 40, 40);
const INFO_COLOR: RGBColor = RGBColor(183, 121, 31);
const FONT: &str = "sans-serif";

/// Completions per bucket of completion time, by outcome: `[ok, fail, info]`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct OutcomeBuckets {
    /// The width of one bucket.
    pub bucket_ns: u64,
    /// The run's end; the last bucket holds it.
    pub end_ns: u64,
    /// Counts per bucket, from the run's start. Invariant: `counts.len() <= MAX_BUCKETS + 1`.
    pub counts: Vec<[u64; 3]>,
}

/// Outcomes per bucket: from the kept operations, or else from the per-second throughput.
/// `None` when nothing completed.
pub(super) fn outcome_buckets(
    report: &Report,
    timing: &TimingReport,
    span: &Span,
) -> Option<OutcomeBuckets> {
    let mut bucket_ns = span.bucket_ns(bucket_target(report.n_ops));
    let mut counts;
    if let Some(operations) = &report.operations {
        counts = vec![[0u64; 3]; (span.end_ns / bucket_ns + 1) as usize];
        for op in &operations.ops {
            let Some(completed) = op.complete_time else {
                continue;
            };
            let slot = ((completed / bucket_ns) as usize).min(counts.len() - 1);
            counts[slot][outcome_slot(op.outcome)] += 1;
        }
    } else {
        // Per-second buckets merged so that there are at most MAX_BUCKETS of them.
        bucket_ns = bucket_ns.max(1_000_000_000);
        bucket_ns -= bucket_ns % 1_000_000_000;
        counts = vec![[0u64; 3]; (span.end_ns / bucket_ns + 1) as usize];
        for bucket in &timing.throughput {
            let slot = ((bucket.second.saturating_mul(1_000_000_000) / bucket_ns) as usize)
                .min(counts.len() - 1);
            counts[slot][0] += bucket.ok;
            counts[slot][1] += bucket.fail;
            counts[slot][2] += bucket.info;
        }
    }
    if counts.iter().all(|c| c.iter().all(|&n| n == 0)) {
        return None;
    }
    assert!(
        counts.len() <= MAX_POINTS_PER_SERIES,
        "buckets are capped below the points of a series"
    );
    Some(OutcomeBuckets {
        bucket_ns,
        end_ns: span.end_ns,
        counts,
    })
}

/// About ten operations per bucket, between 10 and [`MAX_BUCKETS`] buckets: a short history
/// gets wide buckets, so that its plots show rates rather than single completions.
fn bucket_target(n_ops: usize) -> u64 {
    (n_ops as u64 / 10).clamp(10, MAX_BUCKETS)
}

fn outcome_slot(outcome: Outcome) -> usize {
    match outcome {
        Outcome::Ok => 0,
        Outcome::Fail => 1,
        Outcome::Info | Outcome::Pending => 2,
    }
}

/// The plots section.
pub(super) fn render(
    out: &mut String,
    report: &Report,
    timing: &TimingReport,
    span: Option<&Span>,
) {
    open_section(out, "plots", "Plots", None, "fault intervals shaded orange");
    let Some(span) = span else {
        out.push_str(
            "<p class=\"why\">The history has no times for every event, so there is nothing \
             to plot over time.</p>\n</section>\n",
        );
        return;
    };
    let faults: Vec<(f64, f64)> = timing
        .faults
        .iter()
        .map(|fault| {
            let start = fault.start_ns.unwrap_or(0);
            let end = fault.end_ns.unwrap_or(span.end_ns).max(start);
            (start as f64 / 1e9, end as f64 / 1e9)
        })
        .collect();
    out.push_str("<h3>Latency over time</h3>\n");
    match &report.operations {
        Some(operations) => {
            let target = bucket_target(report.n_ops);
            let (bucket_ns, series) = latency_series(operations, span, target);
            if series.is_empty() {
                out.push_str("<p class=\"why\">No operation completed.</p>\n");
            } else {
                let _ = writeln!(
                    out,
                    "<p class=\"note\">p50 (solid) and p99 (dashed) latency of the operations invoked in each {} bucket, per function, on a log scale.</p>",
                    nanos(bucket_ns)
                );
                let drawn = draw_latency(&series, &faults, span);
                push_plot(out, "latency", drawn);
            }
            let n_functions = distinct_functions(operations);
            if n_functions > MAX_FUNCTIONS {
                let _ = writeln!(
                    out,
                    "<p class=\"cut\">and {} more functions, not plotted</p>",
                    n_functions - MAX_FUNCTIONS
                );
            }
        }
        None => out.push_str(
            "<p class=\"why\">The report holds no operations (the check did not keep them), so \
             latencies over time cannot be plotted; the latency table below has their quantiles.</p>\n",
        ),
    }
    out.push_str("<h3>Throughput over time</h3>\n");
    match outcome_buckets(report, timing, span) {
        Some(buckets) => {
            let _ = writeln!(
                out,
                "<p class=\"note\">Completions per second by outcome, averaged over {} buckets of completion time.</p>",
                nanos(buckets.bucket_ns)
            );
            let drawn = draw_throughput(&buckets, &faults, span);
            push_plot(out, "throughput", drawn);
        }
        None => out.push_str("<p class=\"why\">No operation completed.</p>\n"),
    }
    out.push_str("</section>\n");
}

/// Inlines a drawn plot, or says why it could not be drawn.
fn push_plot(out: &mut String, name: &str, drawn: Result<String, Box<dyn Error>>) {
    match drawn {
        Ok(svg) => {
            let _ = write!(out, "<div class=\"plot\" data-plot=\"{name}\">");
            // plotters escapes the text it writes; the SVG goes in as it is.
            out.push_str(&svg);
            out.push_str("</div>\n");
        }
        Err(error) => {
            out.push_str("<p class=\"why\">The plot could not be drawn: ");
            push_escaped(out, &excerpt(&error.to_string(), 300));
            out.push_str("</p>\n");
        }
    }
}

/// One function's latency quantiles per bucket, as (seconds, ms) points.
#[derive(Debug)]
struct LatencySeries {
    f: String,
    p50: Vec<(f64, f64)>,
    p99: Vec<(f64, f64)>,
}

/// A series with at most this many points also gets a marker at each point.
const SPARSE_POINTS: usize = 40;

/// The smallest latency plotted, ms: the log scale needs positive values.
const MIN_LATENCY_MS: f64 = 1e-3;

fn distinct_functions(operations: &Operations) -> usize {
    let mut names: Vec<&str> = operations.ops.iter().map(|op| op.f.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.len()
}

/// p50 and p99 latency per bucket of invocation time, for the most frequent functions.
fn latency_series(operations: &Operations, span: &Span, target: u64) -> (u64, Vec<LatencySeries>) {
    let bucket_ns = span.bucket_ns(target);
    let n_buckets = (span.end_ns / bucket_ns + 1) as usize;
    let mut by_f: BTreeMap<&str, Vec<Vec<f64>>> = BTreeMap::new();
    for op in &operations.ops {
        let (Some(invoked), Some(completed)) = (op.invoke_time, op.complete_time) else {
            continue;
        };
        let buckets = by_f
            .entry(op.f.as_str())
            .or_insert_with(|| vec![Vec::new(); n_buckets]);
        let slot = ((invoked / bucket_ns) as usize).min(n_buckets - 1);
        buckets[slot].push(completed.saturating_sub(invoked) as f64 / 1e6);
    }
    let mut ranked: Vec<(&str, Vec<Vec<f64>>)> = by_f.into_iter().collect();
    ranked.sort_by_key(|(f, buckets)| {
        let n: usize = buckets.iter().map(Vec::len).sum();
        (std::cmp::Reverse(n), f.to_string())
    });
    let series = ranked
        .into_iter()
        .take(MAX_FUNCTIONS)
        .map(|(f, buckets)| {
            let mut series = LatencySeries {
                f: f.to_string(),
                p50: Vec::new(),
                p99: Vec::new(),
            };
            for (slot, samples) in buckets.into_iter().enumerate() {
                let x = (slot as u64 * bucket_ns + bucket_ns / 2) as f64 / 1e9;
                let quantiles = Quantiles::of(samples);
                if let (Some(p50), Some(p99)) = (quantiles.p50, quantiles.p99) {
                    series.p50.push((x, p50.max(MIN_LATENCY_MS)));
                    series.p99.push((x, p99.max(MIN_LATENCY_MS)));
                }
            }
            series
        })
        .collect();
    (bucket_ns, series)
}

fn draw_latency(
    series: &[LatencySeries],
    faults: &[(f64, f64)],
    span: &Span,
) -> Result<String, Box<dyn Error>> {
    let points = series.iter().flat_map(|s| s.p50.iter().chain(&s.p99));
    let (low, high) = points.fold((f64::MAX, MIN_LATENCY_MS), |(low, high), &(_, y)| {
        (low.min(y), high.max(y))
    });
    // Whole decades, so that the log scale always labels at least two powers of ten.
    let low = 10f64.powf((low.max(MIN_LATENCY_MS) * 0.95).log10().floor());
    let high = 10f64
        .powf((high * 1.05).log10().floor() + 1.0)
        .max(low * 10.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..span.seconds(), (low..high).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("seconds since the run started")
            .y_desc("latency (ms)")
            .x_label_formatter(&|seconds| trimmed(*seconds))
            .y_label_formatter(&|latency| trimmed(*latency))
            .label_style((FONT, 15))
            .light_line_style(RGBColor(238, 241, 245))
            .draw()?;
        shade_faults(&mut chart, faults, low, high)?;
        for (number, one) in series.iter().enumerate() {
            let color = PALETTE[number % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(one.p50.clone(), color.stroke_width(2)))?
                .label(format!("{} p50", excerpt(&one.f, 24)))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            if one.p50.len() <= SPARSE_POINTS {
                chart.draw_series(
                    one.p50
                        .iter()
                        .map(|&point| Circle::new(point, 3, color.filled())),
                )?;
                chart.draw_series(
                    one.p99
                        .iter()
                        .map(|&point| Circle::new(point, 2, color.stroke_width(1))),
                )?;
            }
            chart
                .draw_series(DashedLineSeries::new(
                    one.p99.clone(),
                    5,
                    4,
                    color.stroke_width(1),
                ))?
                .label(format!("{} p99", excerpt(&one.f, 24)))
                .legend(move |(x, y)| {
                    PathElement::new(
                        vec![(x, y), (x + 6, y), (x + 10, y), (x + 18, y)],
                        color.stroke_width(1),
                    )
                });
        }
        legend(&mut chart)?;
        root.present()?;
    }
    Ok(svg)
}

fn draw_throughput(
    buckets: &OutcomeBuckets,
    faults: &[(f64, f64)],
    span: &Span,
) -> Result<String, Box<dyn Error>> {
    let per_second = 1e9 / buckets.bucket_ns as f64;
    let series: Vec<Vec<(f64, f64)>> = (0..3)
        .map(|slot| {
            buckets
                .counts
                .iter()
                .enumerate()
                .map(|(number, counts)| {
                    let x =
                        (number as u64 * buckets.bucket_ns + buckets.bucket_ns / 2) as f64 / 1e9;
                    (x, counts[slot] as f64 * per_second)
                })
                .collect()
        })
        .collect();
    let high = series
        .iter()
        .flatten()
        .fold(1.0f64, |high, &(_, y)| high.max(y))
        * 1.12;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..span.seconds(), 0f64..high)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the run started")
            .y_desc("completions per second")
            .x_label_formatter(&|seconds| trimmed(*seconds))
            .y_label_formatter(&|rate| trimmed(*rate))
            .label_style((FONT, 15))
            .light_line_style(RGBColor(238, 241, 245))
            .draw()?;
        shade_faults(&mut chart, faults, 0.0, high)?;
        let names = ["ok", "fail", "info"];
        let colors = [OK_COLOR, FAIL_COLOR, INFO_COLOR];
        for ((points, name), color) in series.into_iter().zip(names).zip(colors) {
            if points.iter().all(|&(_, y)| y == 0.0) {
                continue;
            }
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        legend(&mut chart)?;
        root.present()?;
    }
    Ok(svg)
}

/// Shades each fault interval from `low` to `high` on the chart's y axis.
fn shade_faults<'a, DB, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    faults: &[(f64, f64)],
    low: f64,
    high: f64,
) -> Result<(), Box<dyn Error>>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    Y: Ranged<ValueType = f64>,
{
    if faults.is_empty() {
        return Ok(());
    }
    let shade = FAULT_COLOR.mix(0.22).filled();
    chart
        .draw_series(
            faults
                .iter()
                .map(|&(start, end)| Rectangle::new([(start, low), (end, high)], shade)),
        )?
        .label("fault")
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 18, y + 6)], shade));
    Ok(())
}

fn legend<'a, DB, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
) -> Result<(), Box<dyn Error>>
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 206, 214))
        .draw()?;
    Ok(())
}

/// An axis label without trailing zeros: `10`, `2.5`, `0.001`.
fn trimmed(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}
