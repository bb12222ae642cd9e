//! `--report FILE.html`: cost over time and failed requests per strategy,
//! as inline SVG line charts in one self-contained HTML page.

use crate::summary::{table, Summary};
use crate::world::StrategyResult;

const COLORS: [&str; 5] = ["#555555", "#d62728", "#ff7f0e", "#1f77b4", "#2ca02c"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// One line chart: series of (x, y) per strategy.
fn chart(title: &str, y_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> String {
    let (w, h, left, bottom) = (760.0, 320.0, 80.0, 40.0);
    let max_x = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.0)).fold(0.0, f64::max).max(1e-9);
    let max_y = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).fold(0.0, f64::max).max(1e-9);
    let px = |x: f64| left + x / max_x * (w - left - 20.0);
    let py = |y: f64| h - bottom - y / max_y * (h - bottom - 30.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
         <text x=\"{left}\" y=\"18\" font-size=\"14\">{}</text>\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#000\"/>\
         <line x1=\"{left}\" y1=\"30\" x2=\"{left}\" y2=\"{}\" stroke=\"#000\"/>\
         <text x=\"{}\" y=\"{}\">hours</text><text x=\"4\" y=\"40\">{}</text>\
         <text x=\"4\" y=\"{}\">{:.4}</text><text x=\"{}\" y=\"{}\">{:.1}</text>",
        escape(title),
        h - bottom,
        w - 20.0,
        h - bottom,
        h - bottom,
        w / 2.0,
        h - 8.0,
        escape(y_label),
        py(max_y) + 4.0,
        max_y,
        w - 60.0,
        h - bottom + 16.0,
        max_x
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>",
            path.join(" "),
            left + 10.0 + 140.0 * i as f64,
            h - bottom - 8.0 - 0.0,
            escape(name)
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// The report page.
pub fn html(summary: &Summary, results: &[StrategyResult]) -> String {
    let cost: Vec<(&str, Vec<(f64, f64)>)> = results
        .iter()
        .map(|r| (r.name.as_str(), r.series.iter().map(|(t, c, _)| (*t, *c)).collect()))
        .collect();
    let failed: Vec<(&str, Vec<(f64, f64)>)> = results
        .iter()
        .map(|r| (r.name.as_str(), r.series.iter().map(|(t, _, f)| (*t, *f)).collect()))
        .collect();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>costop sim report</title></head>\
         <body style=\"font-family:sans-serif\"><h1>costop sim</h1><pre>{}</pre>{}<br>{}</body></html>\n",
        escape(&table(summary)),
        chart("Cumulative cost", "USD", &cost),
        chart("Cumulative failed requests", "requests", &failed)
    )
}
