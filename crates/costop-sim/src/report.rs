//! `--report FILE.html`: the comparison table, its columns explained, and
//! one uPlot chart per metric (cumulative cost, cost as a share of
//! on-demand, failed requests), in one self-contained HTML page: uPlot's
//! script and style are inlined, and so is the data, as JSON.
//!
//! What is decided here, in Rust (and unit-tested): the panels, their
//! series on one shared time axis, each strategy's color and dash (the same
//! in every panel), and whether the failed-requests panel is drawn on a log
//! scale (when one strategy's total dwarfs another's). The page's script
//! only draws: gridlines, axis titles, tick labels sized so they never
//! reach the axis title, the legend below the plot (outside it), and a
//! layout check of what uPlot laid out (tick labels that overlap, a legend
//! or a title on the plot), written into the page as `#layout-check` so a
//! headless browser's DOM shows it (`crates/costop/tests/sim_report.rs`).
//!
//! uPlot (1.6.32, MIT licence, `assets/uplot/LICENSE`) lives in this crate
//! once; the demo's dashboard serves the same bytes through [`UPLOT_JS`],
//! [`UPLOT_CSS`] and [`UPLOT_LICENSE`].

use crate::summary::{percentile_cell, Summary, RECOVERY_NOTE};
use crate::world::StrategyResult;
use serde::Serialize;

/// uPlot's script (an IIFE defining the global `uPlot`).
pub const UPLOT_JS: &str = include_str!("../assets/uplot/uPlot.iife.min.js");
/// uPlot's style sheet.
pub const UPLOT_CSS: &str = include_str!("../assets/uplot/uPlot.min.css");
/// uPlot's licence (MIT), served or quoted with it.
pub const UPLOT_LICENSE: &str = include_str!("../assets/uplot/LICENSE");
/// The uPlot release the files above are.
pub const UPLOT_VERSION: &str = "1.6.32";

/// The page's drawing and layout-check script.
const SCRIPT: &str = include_str!("../assets/report.js");
/// The page's own style.
const STYLE: &str = include_str!("../assets/report.css");

/// Line colors, by strategy (in run order), the same in every panel.
const COLORS: [&str; 8] =
    ["#5a6473", "#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"];
/// Dash patterns (CSS px on, off), by strategy: lines that coincide (two
/// strategies paying for the same nodes) still show both.
const DASHES: [&[u32]; 3] = [&[], &[10, 5], &[3, 4]];

/// When the largest total of failed requests exceeds the smallest by this
/// factor (as 1 + n), the failed-requests panel uses a log scale.
pub const LOG_WHEN_RATIO: f64 = 20.0;

/// At most this many points per line (the samples are thinned evenly past it).
const MAX_POINTS: usize = 2000;

/// One strategy's line in a panel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    /// Strategy name, shown in the legend.
    pub name: String,
    /// CSS color.
    pub color: &'static str,
    /// Dash pattern (empty: solid).
    pub dash: &'static [u32],
    /// One value per point of the shared x axis; `None` before the
    /// strategy's first sample.
    pub values: Vec<Option<f64>>,
}

/// One chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Panel {
    /// Element id.
    pub id: &'static str,
    /// Heading.
    pub title: String,
    /// What it shows and how to read it.
    pub note: String,
    /// Title of the y axis.
    pub y_label: String,
    /// Log scale (uPlot's asinh: log-like above 1, linear through 0).
    pub log: bool,
    /// Format of the y tick labels: `usd`, `ratio` or `count`.
    pub format: &'static str,
    /// One line per strategy.
    pub lines: Vec<Line>,
}

/// Everything the page's script draws.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Charts {
    /// Title of the shared x axis.
    pub x_label: &'static str,
    /// The shared x axis (days or hours since the start).
    pub x: Vec<f64>,
    /// The panels, top to bottom.
    pub panels: Vec<Panel>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Value of a cumulative series at `t` (the last sample at or before it).
fn at(series: &[(f64, f64, f64)], t: f64, value: fn(&(f64, f64, f64)) -> f64) -> Option<f64> {
    let i = series.partition_point(|s| s.0 <= t);
    i.checked_sub(1).map(|i| value(&series[i]))
}

/// Whether the failed-requests panel needs a log scale: the largest final
/// total exceeds the smallest by more than [`LOG_WHEN_RATIO`] (as 1 + n,
/// so a strategy with none counts as 1).
pub fn failed_needs_log(finals: &[f64]) -> bool {
    let (smallest, largest) =
        finals.iter().fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| (lo.min(v.max(0.0)), hi.max(*v)));
    finals.len() > 1 && (1.0 + largest) / (1.0 + smallest.min(largest)) > LOG_WHEN_RATIO
}

/// The panels of a run's results.
pub fn charts(summary: &Summary, results: &[StrategyResult]) -> Charts {
    // One x axis for every line: the union of the sample times, thinned.
    let mut hours: Vec<f64> = results.iter().flat_map(|r| r.series.iter().map(|p| p.0)).collect();
    hours.sort_by(f64::total_cmp);
    hours.dedup();
    if hours.len() > MAX_POINTS {
        let step = hours.len().div_ceil(MAX_POINTS);
        let last = hours[hours.len() - 1];
        hours = hours.iter().copied().step_by(step).collect();
        if hours.last() != Some(&last) {
            hours.push(last);
        }
    }
    let in_days = summary.sim_days >= 2.0;
    let (x_label, x) = if in_days {
        ("days since the start", hours.iter().map(|h| h / 24.0).collect())
    } else {
        ("hours since the start", hours.clone())
    };
    // Solid, unless an earlier strategy's cost ends where this one's does:
    // then dashed, so both lines show.
    let dashes: Vec<&'static [u32]> = (0..results.len())
        .map(|i| {
            let before = results[..i].iter().filter(|r| same_cost(r.cost_usd, results[i].cost_usd)).count();
            DASHES[before % DASHES.len()]
        })
        .collect();
    let style = |i: usize| (COLORS[i % COLORS.len()], dashes[i]);
    let line = |i: usize, r: &StrategyResult, values: Vec<Option<f64>>| {
        let (color, dash) = style(i);
        Line { name: r.name.clone(), color, dash, values }
    };
    let each = |value: fn(&(f64, f64, f64)) -> f64| -> Vec<Line> {
        results
            .iter()
            .enumerate()
            .map(|(i, r)| line(i, r, hours.iter().map(|t| at(&r.series, *t, value)).collect()))
            .collect()
    };
    let cost = each(|p| p.1);
    let mut panels = vec![Panel {
        id: "cost",
        title: "Cumulative cost".into(),
        note: format!(
            "What each strategy has paid for its nodes so far, in USD.{}",
            coinciding(results).map(|names| format!(" {names} pay for the same nodes here: their lines lie on each other (dashed over solid).")).unwrap_or_default()
        ),
        y_label: "USD".into(),
        log: false,
        format: "usd",
        lines: cost,
    }];
    if let Some(od) = results.iter().find(|r| r.name == "on-demand") {
        let lines = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.name != "on-demand")
            .map(|(i, r)| {
                let share = |t: &f64| {
                    let o = at(&od.series, *t, |p| p.1).filter(|o| *o > 0.0)?;
                    Some(at(&r.series, *t, |p| p.1)? / o)
                };
                line(i, r, hours.iter().map(share).collect())
            })
            .collect();
        panels.push(Panel {
            id: "share",
            title: "Cumulative cost as a share of on-demand".into(),
            note: "Each strategy's cost so far divided by what the same cluster cost all on-demand \
                   (1 = no saving, 0.25 = a quarter of it)."
                .into(),
            y_label: "cost / on-demand cost".into(),
            log: false,
            format: "ratio",
            lines,
        });
    }
    let failed = each(|p| p.2);
    let finals: Vec<f64> =
        failed.iter().filter_map(|l| l.values.iter().rev().flatten().next().copied()).collect();
    let log = failed_needs_log(&finals);
    panels.push(Panel {
        id: "failed",
        title: "Cumulative failed requests".into(),
        note: {
            let mut note = String::from("Requests the load balancer could not serve, so far.");
            if log {
                note.push_str(&format!(
                    " Log scale: the largest total is more than {LOG_WHEN_RATIO}× the smallest, and on a \
                     linear scale the small ones would lie on zero."
                ));
            }
            let none: Vec<&str> =
                results.iter().filter(|r| r.requests_failed < 0.5).map(|r| r.name.as_str()).collect();
            if let [rest @ .., last] = none.as_slice() {
                let names = if rest.is_empty() {
                    last.to_string()
                } else {
                    format!("{} and {last}", rest.join(", "))
                };
                note.push_str(&format!(" {names} failed none: on the bottom line."));
            }
            note
        },
        y_label: if log { "requests (log scale)".into() } else { "requests".into() },
        log,
        format: "count",
        lines: failed,
    });
    Charts { x_label, x, panels }
}

/// Names of strategies whose total cost is within 0.1 % of another's,
/// joined for a sentence (`None` when no two are).
fn coinciding(results: &[StrategyResult]) -> Option<String> {
    let names: Vec<&str> = results
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            results.iter().enumerate().any(|(j, b)| *i != j && same_cost(a.cost_usd, b.cost_usd))
        })
        .map(|(_, r)| r.name.as_str())
        .collect();
    match names.len() {
        0 | 1 => None,
        n => Some(format!("{} and {}", names[..n - 1].join(", "), names[n - 1])),
    }
}

/// Two totals a chart cannot tell apart.
fn same_cost(a: f64, b: f64) -> bool {
    (a - b).abs() <= 0.001 * a.abs().max(b.abs())
}

/// The table's columns: header, what it means.
pub const COLUMNS: [(&str, &str); 16] = [
    ("strategy", "how the cluster buys nodes and answers reclaims (see the README's strategy list)"),
    ("cost USD", "what the run's nodes cost"),
    ("vs on-demand", "that cost divided by the all on-demand run's (1 = no saving)"),
    ("requests", "requests offered to the load balancer over the run"),
    ("failed", "requests that failed (no Ready, routed pod to serve them)"),
    ("served %", "share of the requests that were served"),
    ("reclaims", "nodes that received a reclaim notice"),
    ("n", "incidents (reclaim events) whose displaced workloads were all Ready again by the end"),
    ("open", "incidents still open when the run ended (not in the percentiles)"),
    ("p50 s", "median recovery: notice → every displaced workload Ready again, seconds"),
    ("p90 s", "90th percentile of recovery (nearest rank; * with under 10 incidents: the maximum)"),
    ("p99 s", "99th percentile of recovery (nearest rank; * with under 100 incidents: the maximum)"),
    ("max s", "longest recovery"),
    ("nn", "incidents in which a node got no notice at all (not in the percentiles above)"),
    ("nn p50", "median recovery of those: reclaim → every displaced workload Ready again, seconds"),
    ("nn max", "longest recovery of those"),
];

/// A count with thousands separators (3,628,800,000).
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The comparison as an HTML table, each header carrying its meaning.
fn table(summary: &Summary) -> String {
    let mut out = String::from("<table id=\"summary\"><thead><tr>");
    for (name, meaning) in COLUMNS {
        out.push_str(&format!("<th title=\"{}\">{}</th>", escape(meaning), escape(name)));
    }
    out.push_str("</tr></thead><tbody>");
    for (i, s) in summary.strategies.iter().enumerate() {
        let cells = [
            format!("{:.2}", s.cost_usd),
            s.cost_vs_on_demand.map_or("-".into(), |v| format!("{v:.3}")),
            grouped(s.requests_total),
            grouped(s.requests_failed),
            format!("{:.4}", s.success_rate * 100.0),
            s.interruptions.to_string(),
            s.incidents.to_string(),
            s.unfinished_incidents.to_string(),
            percentile_cell(s.p50_recovery_s, 0.50, s.incidents),
            percentile_cell(s.p90_recovery_s, 0.90, s.incidents),
            percentile_cell(s.p99_recovery_s, 0.99, s.incidents),
            percentile_cell(s.max_recovery_s, 0.0, s.incidents),
            s.unwarned_incidents.to_string(),
            percentile_cell(s.p50_unwarned_recovery_s, 0.50, s.unwarned_incidents),
            percentile_cell(s.max_unwarned_recovery_s, 0.0, s.unwarned_incidents),
        ];
        out.push_str(&format!(
            "<tr><td><i class=\"swatch\" style=\"background:{}\"></i>{}</td>",
            COLORS[i % COLORS.len()],
            escape(&s.name)
        ));
        for c in cells {
            out.push_str(&format!("<td class=\"num\">{}</td>", escape(&c)));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table><dl class=\"columns\">");
    for (name, meaning) in COLUMNS {
        out.push_str(&format!("<dt>{}</dt><dd>{}</dd>", escape(name), escape(meaning)));
    }
    out.push_str(&format!("</dl><p class=\"note\">{}</p>", escape(&RECOVERY_NOTE.replace('\n', " "))));
    out
}

/// JSON safe inside a `<script>` element.
fn script_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into()).replace('<', "\\u003c")
}

/// The report page.
pub fn html(summary: &Summary, results: &[StrategyResult]) -> String {
    let charts = charts(summary, results);
    let panels: String = charts
        .panels
        .iter()
        .map(|p| {
            format!(
                "<section class=\"panel\" id=\"panel-{id}\"><h2>{}</h2><p class=\"note\">{}</p>\
                 <div class=\"chart\" id=\"chart-{id}\"></div></section>",
                escape(&p.title),
                escape(&p.note),
                id = p.id
            )
        })
        .collect();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>costop sim report</title>\n\
         <style>{UPLOT_CSS}</style>\n<style>{STYLE}</style>\n<script>{js}</script>\n</head>\n<body><main>\n\
         <h1>costop sim</h1>\n<p class=\"sub\">{} — {} nodes, {:.1} days, seed {}. Model: {}.</p>\n{}\n\
         {panels}\n<pre id=\"layout-check\" hidden></pre>\n\
         <footer>Charts: uPlot {UPLOT_VERSION} (MIT licence: {}), inlined in this file.</footer>\n</main>\n\
         <script type=\"application/json\" id=\"report-data\">{}</script>\n<script>{SCRIPT}</script>\n\
         </body></html>\n",
        escape(&summary.market),
        summary.nodes,
        summary.sim_days,
        summary.seed,
        escape(&summary.pool_hit_model),
        table(summary),
        escape(UPLOT_LICENSE.lines().find(|l| l.contains("Copyright")).unwrap_or("see uPlot's LICENSE")),
        script_json(&charts),
        js = UPLOT_JS.replace("</script", "<\\/script"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, cost_per_h: f64, failed_per_h: f64) -> StrategyResult {
        StrategyResult {
            name: name.into(),
            cost_usd: cost_per_h * 10.0,
            requests_total: 1e6,
            requests_failed: failed_per_h * 10.0,
            requests_bridged: 0.0,
            interruptions: 1,
            recoveries_s: vec![60.0],
            unwarned_recoveries_s: Vec::new(),
            unfinished_incidents: 0,
            series: (0..=10).map(|h| (h as f64, cost_per_h * h as f64, failed_per_h * h as f64)).collect(),
            spare: None,
        }
    }

    fn summary(results: &[StrategyResult]) -> Summary {
        Summary {
            strategies: crate::summary::summarize(results),
            sim_days: 10.0 / 24.0,
            nodes: 3,
            seed: 1,
            market: "test".into(),
            pool_hit_model: "model".into(),
        }
    }

    fn panel<'a>(c: &'a Charts, id: &str) -> &'a Panel {
        c.panels.iter().find(|p| p.id == id).unwrap_or_else(|| panic!("no panel {id}"))
    }

    #[test]
    fn one_panel_per_metric_on_one_time_axis_with_a_color_per_strategy() {
        let results =
            [result("on-demand", 10.0, 0.0), result("spot-naive", 4.0, 50_000.0), result("costop", 3.5, 3.0)];
        let c = charts(&summary(&results), &results);
        let ids: Vec<&str> = c.panels.iter().map(|p| p.id).collect();
        assert_eq!(ids, ["cost", "share", "failed"]);
        assert_eq!(c.x, (0..=10).map(f64::from).collect::<Vec<_>>());
        assert_eq!(c.x_label, "hours since the start");
        for p in &c.panels {
            assert!(p.lines.iter().all(|l| l.values.len() == c.x.len()), "{}", p.id);
        }
        // The share panel has no on-demand line (it would be 1 throughout),
        // and a strategy keeps its color in every panel.
        let share = panel(&c, "share");
        assert_eq!(share.lines.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["spot-naive", "costop"]);
        assert_eq!(share.lines[1].color, panel(&c, "cost").lines[2].color);
        assert_eq!(share.lines[1].values[10], Some(0.35));
        assert_eq!(share.lines[1].values[0], None, "no share before on-demand has cost anything");
        let colors: std::collections::HashSet<_> = panel(&c, "cost").lines.iter().map(|l| l.color).collect();
        assert_eq!(colors.len(), 3);
    }

    #[test]
    fn failed_requests_go_log_when_one_strategy_dwarfs_the_rest() {
        let results =
            [result("on-demand", 10.0, 0.0), result("spot-naive", 4.0, 50_000.0), result("costop", 3.5, 3.0)];
        let failed = panel(&charts(&summary(&results), &results), "failed").clone();
        assert!(failed.log && failed.y_label.contains("log scale"), "{failed:?}");
        assert!(failed.note.contains("on-demand failed none"), "{}", failed.note);
        let results = [result("a", 4.0, 100.0), result("b", 4.0, 120.0)];
        let failed = panel(&charts(&summary(&results), &results), "failed").clone();
        assert!(!failed.log && !failed.y_label.contains("log"), "comparable totals stay linear");
        assert!(
            !failed_needs_log(&[0.0]) && failed_needs_log(&[0.0, 25.0]) && !failed_needs_log(&[0.0, 15.0])
        );
    }

    #[test]
    fn coinciding_cost_lines_are_named_and_dashed_apart() {
        let results =
            [result("on-demand", 10.0, 0.0), result("spot-naive", 4.0, 9.0), result("drain", 4.0, 3.0)];
        let c = charts(&summary(&results), &results);
        let cost = panel(&c, "cost");
        assert!(cost.note.contains("spot-naive and drain pay for the same nodes"), "{}", cost.note);
        assert_ne!(cost.lines[1].dash, cost.lines[2].dash);
        let apart = [result("on-demand", 10.0, 0.0), result("costop", 3.5, 3.0)];
        assert!(!panel(&charts(&summary(&apart), &apart), "cost").note.contains("same nodes"));
    }

    #[test]
    fn long_runs_are_in_days_and_thinned() {
        let mut r = result("on-demand", 1.0, 0.0);
        r.series = (0..=10_000).map(|i| (i as f64 * 0.1, i as f64, 0.0)).collect();
        let mut s = summary(std::slice::from_ref(&r));
        s.sim_days = 1000.0 / 24.0;
        let c = charts(&s, std::slice::from_ref(&r));
        assert_eq!(c.x_label, "days since the start");
        assert!(c.x.len() <= MAX_POINTS + 1, "{}", c.x.len());
        assert_eq!(c.x.last(), Some(&(1000.0 / 24.0)), "the last sample is kept");
    }

    #[test]
    fn the_page_is_self_contained_and_explains_every_column() {
        let results = [result("on-demand", 10.0, 0.0), result("<costop>", 3.5, 3.0)];
        let page = html(&summary(&results), &results);
        assert!(page.contains(UPLOT_JS.get(..200).unwrap()), "uPlot is not inlined");
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http"), "an external asset");
        assert!(page.contains("id=\"report-data\"") && page.contains("id=\"layout-check\""));
        for (name, _) in COLUMNS {
            assert!(page.contains(&format!("<dt>{}</dt>", escape(name))), "{name} unexplained");
        }
        assert!(page.contains("<td class=\"num\">1,000,000</td>"), "requests grouped");
        assert_eq!((grouped(0), grouped(999), grouped(1000)), ("0".into(), "999".into(), "1,000".into()));
        assert!(page.contains("&lt;costop&gt;") && !page.contains("\"<costop>\""), "names are escaped");
        // The data parses back.
        let data = page.split("id=\"report-data\">").nth(1).unwrap().split("</script>").next().unwrap();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["panels"].as_array().unwrap().len(), 3);
    }
}
