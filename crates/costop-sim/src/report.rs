//! `--report FILE.html`: the comparison table and one chart per metric
//! (cumulative cost, cost as a share of on-demand, failed requests), as
//! inline SVG in one self-contained HTML page.
//!
//! Each chart has gridlines at round values, tick labels that never share a
//! place with the axis titles, and its legend to the right of the plot. The
//! failed-requests chart switches to a log scale (log10(1 + n)) when one
//! strategy's total dwarfs another's, so the small ones stay readable.

use crate::summary::{table, Summary};
use crate::world::StrategyResult;

const COLORS: [&str; 8] =
    ["#555555", "#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"];

/// Width and height of a chart, and the plot's margins inside it.
const W: f64 = 900.0;
const H: f64 = 340.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 52.0;

/// When the largest total of failed requests exceeds the smallest by this
/// factor (as 1 + n), the failed-requests chart uses a log scale.
const LOG_WHEN_RATIO: f64 = 20.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// About `target` round tick values (1, 2, 5 × 10^k steps) covering [lo, hi].
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let first = (lo / step).floor() * step;
    let mut ticks = Vec::new();
    let mut i = 0;
    loop {
        let t = first + step * i as f64;
        // Snap away float noise (0.30000000000000004).
        let t = (t / step).round() * step;
        ticks.push(t);
        if t >= hi - 1e-9 * span {
            break;
        }
        i += 1;
    }
    ticks
}

/// A tick label: short, no float noise (1.5, 250, 12k, 3.4M).
pub fn tick_label(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = format!("{:.2}", x);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{}{suffix}", if text == "-0" { "0" } else { text })
}

/// How values map onto the y axis.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Scale {
    Linear,
    /// log10(1 + y): zero stays at the bottom.
    Log,
}

impl Scale {
    fn f(self, y: f64) -> f64 {
        match self {
            Scale::Linear => y,
            Scale::Log => (1.0 + y.max(0.0)).log10(),
        }
    }
}

/// One strategy's line: its name, its color (the same in every chart) and
/// its (hours, value) points.
struct Series<'a> {
    name: &'a str,
    color: &'static str,
    points: Vec<(f64, f64)>,
}

/// One chart of one line per strategy.
fn chart(title: &str, y_label: &str, scale: Scale, series: &[Series]) -> String {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let max_x = points().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let (min_y, max_y) =
        points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (min_y, max_y) = if min_y.is_finite() { (min_y, max_y) } else { (0.0, 1.0) };
    let x_ticks = nice_ticks(0.0, max_x, 8);
    let x_end = *x_ticks.last().unwrap_or(&max_x);
    let y_ticks: Vec<f64> = match scale {
        Scale::Linear => {
            // Ratios (cost vs on-demand) need not start at zero; totals do.
            let lo = if min_y > 0.0 && min_y < 1.0 && max_y <= 1.5 { min_y } else { min_y.min(0.0) };
            nice_ticks(lo, max_y.max(lo + 1e-9), 5)
        }
        Scale::Log => {
            let decades = (1.0 + max_y.max(1.0)).log10().ceil() as i32;
            // 0, 10, 100, …: a tick at 1 would crowd the one at 0.
            std::iter::once(0.0).chain((1..=decades.max(1)).map(|k| 10f64.powi(k))).collect()
        }
    };
    let (y_lo, y_hi) = (scale.f(y_ticks[0]), scale.f(*y_ticks.last().unwrap_or(&1.0)));
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + x / x_end.max(1e-9) * plot_w;
    let py = |y: f64| TOP + plot_h - (scale.f(y) - y_lo) / (y_hi - y_lo).max(1e-12) * plot_h;

    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         font-family=\"sans-serif\" font-size=\"12\" role=\"img\" aria-label=\"{t}\">\
         <text class=\"title\" x=\"{LEFT}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{t}</text>",
        t = escape(title)
    );
    // Gridlines and tick labels.
    for y in &y_ticks {
        let yy = py(*y);
        svg.push_str(&format!(
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#e3e3e3\"/>\
             <text class=\"ytick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0,
            tick_label(*y)
        ));
    }
    for x in &x_ticks {
        let xx = px(*x);
        svg.push_str(&format!(
            "<line class=\"grid\" x1=\"{xx:.1}\" y1=\"{TOP}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"#eeeeee\"/>\
             <text class=\"xtick\" x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + plot_h,
            TOP + plot_h + 16.0,
            tick_label(*x)
        ));
    }
    // Axes and their titles: x below the tick labels, y rotated left of them.
    let scale_note = if scale == Scale::Log { " (log scale)" } else { "" };
    svg.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{b:.1}\" x2=\"{r:.1}\" y2=\"{b:.1}\" stroke=\"#000\"/>\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b:.1}\" stroke=\"#000\"/>\
         <text class=\"xlabel\" x=\"{cx:.1}\" y=\"{xl:.1}\" text-anchor=\"middle\">hours</text>\
         <text class=\"ylabel\" transform=\"translate(16 {cy:.1}) rotate(-90)\" text-anchor=\"middle\">{}{scale_note}</text>",
        escape(y_label),
        b = TOP + plot_h,
        r = LEFT + plot_w,
        cx = LEFT + plot_w / 2.0,
        xl = H - 10.0,
        cy = TOP + plot_h / 2.0,
    ));
    // Lines, then the legend right of the plot (never on it).
    for (i, Series { name, color, points }) in series.iter().enumerate() {
        let path: Vec<String> = points.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        let ly = TOP + 8.0 + 20.0 * i as f64;
        let lx = LEFT + plot_w + 16.0;
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\
             <line class=\"legend\" x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" stroke-width=\"3\"/>\
             <text class=\"legend\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            path.join(" "),
            lx + 22.0,
            lx + 28.0,
            ly + 4.0,
            escape(name)
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// Value of a cumulative series at `t` (the last sample at or before it).
fn at(series: &[(f64, f64, f64)], t: f64) -> Option<f64> {
    let i = series.partition_point(|s| s.0 <= t);
    i.checked_sub(1).map(|i| series[i].1)
}

/// The report page.
pub fn html(summary: &Summary, results: &[StrategyResult]) -> String {
    let color = |i: usize| COLORS[i % COLORS.len()];
    let lines = |value: fn(&(f64, f64, f64)) -> f64| -> Vec<Series> {
        results
            .iter()
            .enumerate()
            .map(|(i, r)| Series {
                name: &r.name,
                color: color(i),
                points: r.series.iter().map(|p| (p.0, value(p))).collect(),
            })
            .collect()
    };
    let cost = lines(|p| p.1);
    let failed = lines(|p| p.2);
    let share: Option<Vec<Series>> = results.iter().find(|r| r.name == "on-demand").map(|od| {
        results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.name != "on-demand")
            .map(|(i, r)| Series {
                name: &r.name,
                color: color(i),
                points: r
                    .series
                    .iter()
                    .filter_map(|(t, c, _)| at(&od.series, *t).filter(|o| *o > 0.0).map(|o| (*t, c / o)))
                    .collect(),
            })
            .collect()
    });
    // Log scale when the largest total dwarfs the smallest (zero counts as
    // 1 on the log10(1 + n) scale).
    let finals = failed.iter().filter_map(|s| s.points.last().map(|p| p.1));
    let (smallest, largest) =
        finals.fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| (lo.min(v.max(0.0)), hi.max(v)));
    let failed_scale = if (1.0 + largest) / (1.0 + smallest.min(largest)) > LOG_WHEN_RATIO {
        Scale::Log
    } else {
        Scale::Linear
    };
    let mut charts = vec![chart("Cumulative cost", "USD", Scale::Linear, &cost)];
    if let Some(share) = &share {
        charts.push(chart(
            "Cumulative cost as a share of on-demand",
            "cost / on-demand cost",
            Scale::Linear,
            share,
        ));
    }
    charts.push(chart("Cumulative failed requests", "requests", failed_scale, &failed));
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>costop sim report</title>\
         <style>body{{font-family:sans-serif;max-width:960px;margin:1em auto}} svg{{display:block;margin:1.5em 0}} \
         dt{{font-weight:bold}} pre{{overflow-x:auto}}</style></head>\
         <body><h1>costop sim</h1><pre>{}</pre>\
         <dl><dt>cost USD, vs OD</dt><dd>what the run cost, and that as a share of the all on-demand run</dd>\
         <dt>requests, failed, served %</dt><dd>requests offered to the load balancer, those that failed, the share served</dd>\
         <dt>reclaims</dt><dd>nodes that received a reclaim notice</dd>\
         <dt>n, open</dt><dd>incidents (reclaim events) whose displaced workloads were Ready again by the end, and those still open</dd>\
         <dt>p50 s … max s</dt><dd>recovery (notice → every displaced workload Ready again), nearest-rank percentiles over n</dd></dl>\
         {}</body></html>\n",
        escape(&table(summary)),
        charts.join("\n")
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
            unfinished_incidents: 0,
            series: (0..=10).map(|h| (h as f64, cost_per_h * h as f64, failed_per_h * h as f64)).collect(),
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

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(nice_ticks(0.0, 10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(nice_ticks(0.0, 167.0, 8), vec![0.0, 25.0, 50.0, 75.0, 100.0, 125.0, 150.0, 175.0]);
        let t = nice_ticks(0.31, 1.0, 5);
        assert!(t[0] <= 0.31 && *t.last().unwrap() >= 1.0, "{t:?}");
        assert!(t.iter().all(|v| tick_label(*v).len() <= 4), "{t:?}");
        assert_eq!(tick_label(0.30000000000000004), "0.3");
        assert_eq!(tick_label(12_000.0), "12k");
        assert_eq!(tick_label(3_400_000.0), "3.4M");
        assert_eq!(tick_label(250.0), "250");
    }

    #[test]
    fn the_legend_sits_right_of_the_plot_and_labels_do_not_collide() {
        let results =
            [result("on-demand", 10.0, 0.0), result("spot-naive", 4.0, 50_000.0), result("costop", 3.5, 3.0)];
        let page = html(&summary(&results), &results);
        assert!(page.contains("Cumulative cost") && page.contains("polyline"));
        assert!(page.contains("as a share of on-demand"));
        for svg in page.split("<svg").skip(1) {
            // Legend entries start right of the plot area.
            for part in svg.split("<text class=\"legend\" x=\"").skip(1) {
                let x: f64 = part.split('"').next().unwrap().parse().unwrap();
                assert!(x > W - RIGHT, "legend inside the plot at x={x}");
            }
            // Every text has its own place: no two share a baseline within 10 px horizontally.
            let mut places: Vec<(f64, f64)> = Vec::new();
            for part in svg.split("<text ").skip(1) {
                let attr = |name: &str| -> Option<f64> {
                    part.split(&format!(" {name}=\"")).nth(1)?.split('"').next()?.parse().ok()
                };
                if let (Some(x), Some(y)) = (attr("x"), attr("y")) {
                    assert!(
                        !places.iter().any(|(px, py)| (px - x).abs() < 10.0 && (py - y).abs() < 10.0),
                        "text at ({x}, {y}) overlaps another"
                    );
                    places.push((x, y));
                }
            }
            assert!(svg.contains("class=\"grid\""), "no gridlines");
        }
    }

    #[test]
    fn failed_requests_go_log_when_one_strategy_dwarfs_the_rest() {
        let results =
            [result("on-demand", 10.0, 0.0), result("spot-naive", 4.0, 50_000.0), result("costop", 3.5, 3.0)];
        let page = html(&summary(&results), &results);
        let failed = page.split("<svg").find(|s| s.contains("Cumulative failed requests")).unwrap();
        assert!(failed.contains("(log scale)"), "expected a log scale");
        let results = [result("a", 4.0, 100.0), result("b", 4.0, 120.0)];
        let page = html(&summary(&results), &results);
        let failed = page.split("<svg").find(|s| s.contains("Cumulative failed requests")).unwrap();
        assert!(!failed.contains("(log scale)"), "comparable totals stay linear");
    }
}
