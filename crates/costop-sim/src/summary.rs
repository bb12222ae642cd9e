//! The comparison the `sim` command prints: one row per strategy.

use crate::world::StrategyResult;
use serde::Serialize;

/// One strategy's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StrategySummary {
    /// Strategy name.
    pub name: String,
    /// Total cost, USD (cents precision).
    pub cost_usd: f64,
    /// Cost divided by the on-demand strategy's cost (null without it).
    pub cost_vs_on_demand: Option<f64>,
    /// Requests offered.
    pub requests_total: u64,
    /// Requests failed.
    pub requests_failed: u64,
    /// Share of requests served.
    pub success_rate: f64,
    /// Nodes that received a reclaim notice.
    pub interruptions: u64,
    /// Incidents (reclaim events) whose displaced workloads were all Ready
    /// again before the run ended: the count every recovery percentile is over.
    pub incidents: u64,
    /// Incidents still open when the run ended; not in the percentiles.
    pub unfinished_incidents: u64,
    /// Median recovery (notice → displaced workloads Ready again), seconds,
    /// nearest rank over `incidents`; 0 without incidents.
    pub p50_recovery_s: f64,
    /// 90th percentile of recovery, seconds (nearest rank: with fewer than
    /// 10 incidents it is the longest).
    pub p90_recovery_s: f64,
    /// 99th percentile of recovery, seconds (nearest rank: with fewer than
    /// 100 incidents it is the longest).
    pub p99_recovery_s: f64,
    /// Longest recovery, seconds.
    pub max_recovery_s: f64,
    /// Finished incidents in which some node got no notice at all (not in
    /// the percentiles above: they are timed from the reclaim).
    pub unwarned_incidents: u64,
    /// Median recovery of those, reclaim → displaced workloads Ready, seconds.
    pub p50_unwarned_recovery_s: f64,
    /// Longest recovery of those, seconds.
    pub max_unwarned_recovery_s: f64,
    /// Requests served by the function bridge.
    pub requests_bridged: u64,
    /// costop's spare capacity by tier and what each cost, when sized by
    /// cost (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spare_tiers: Option<crate::spare::SpareReport>,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// One entry per strategy, in run order.
    pub strategies: Vec<StrategySummary>,
    /// Days simulated.
    pub sim_days: f64,
    /// Worker nodes.
    pub nodes: u32,
    /// Seed.
    pub seed: u64,
    /// Where the market came from.
    pub market: String,
    /// How a pool reclaim maps onto the cluster.
    pub pool_hit_model: String,
}

/// The `q`-quantile (nearest rank) of `values`; 0 when empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// Turn raw results into the printed comparison.
pub fn summarize(results: &[StrategyResult]) -> Vec<StrategySummary> {
    let on_demand = results.iter().find(|r| r.name == "on-demand").map(|r| r.cost_usd);
    results
        .iter()
        .map(|r| {
            let total = r.requests_total.round() as u64;
            let failed = (r.requests_failed.round() as u64).min(total);
            StrategySummary {
                name: r.name.clone(),
                cost_usd: round(r.cost_usd, 2),
                cost_vs_on_demand: on_demand.filter(|c| *c > 0.0).map(|c| round(r.cost_usd / c, 4)),
                requests_total: total,
                requests_failed: failed,
                success_rate: if total == 0 { 1.0 } else { round(1.0 - failed as f64 / total as f64, 6) },
                interruptions: r.interruptions,
                incidents: r.recoveries_s.len() as u64,
                unfinished_incidents: r.unfinished_incidents,
                p50_recovery_s: round(quantile(&r.recoveries_s, 0.50), 1),
                p90_recovery_s: round(quantile(&r.recoveries_s, 0.90), 1),
                p99_recovery_s: round(quantile(&r.recoveries_s, 0.99), 1),
                max_recovery_s: round(r.recoveries_s.iter().copied().fold(0.0, f64::max), 1),
                unwarned_incidents: r.unwarned_recoveries_s.len() as u64,
                p50_unwarned_recovery_s: round(quantile(&r.unwarned_recoveries_s, 0.50), 1),
                max_unwarned_recovery_s: round(
                    r.unwarned_recoveries_s.iter().copied().fold(0.0, f64::max),
                    1,
                ),
                requests_bridged: r.requests_bridged.round() as u64,
                spare_tiers: r.spare.as_ref().map(crate::spare::SpareReport::rounded),
            }
        })
        .collect()
}

/// One trace of a sweep: where it came from and its comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepRun {
    /// The trace directory, as found under the sweep's root.
    pub trace: String,
    /// Worker nodes.
    pub nodes: u32,
    /// Days simulated (the trace's length, or less when asked).
    pub days: f64,
    /// One entry per strategy, in run order.
    pub strategies: Vec<StrategySummary>,
}

/// `costop sim --sweep`: every trace directory under a root.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sweep {
    /// One run per trace directory, sorted by path.
    pub runs: Vec<SweepRun>,
    /// Seed of every run.
    pub seed: u64,
    /// How a pool reclaim maps onto the cluster, in every run.
    pub pool_hit_model: String,
}

/// Header cells of a strategy's figures (after the leading columns).
fn figures_header() -> String {
    format!(
        "{:>11} {:>7} {:>13} {:>10} {:>9} {:>8} {:>5} {:>5} {:>8} {:>8} {:>8} {:>8} {:>5} {:>8} {:>8}",
        "cost USD",
        "vs OD",
        "requests",
        "failed",
        "served %",
        "reclaims",
        "n",
        "open",
        "p50 s",
        "p90 s",
        "p99 s",
        "max s",
        "nn",
        "nn p50",
        "nn max"
    )
}

/// A percentile cell: `-` without incidents, marked `*` when there are too
/// few incidents for it to be more than the maximum (nearest rank with
/// n < 1 / (1 - q)).
pub(crate) fn percentile_cell(value: f64, q: f64, n: u64) -> String {
    if n == 0 {
        return "-".into();
    }
    let starved = (n as f64) < 1.0 / (1.0 - q) - 1e-9;
    format!("{value:.1}{}", if starved { "*" } else { "" })
}

/// A strategy's figures, aligned with [`figures_header`].
fn figures_row(s: &StrategySummary) -> String {
    let vs = s.cost_vs_on_demand.map_or("-".to_string(), |v| format!("{v:.3}"));
    format!(
        "{:>11.2} {:>7} {:>13} {:>10} {:>9.4} {:>8} {:>5} {:>5} {:>8} {:>8} {:>8} {:>8} {:>5} {:>8} {:>8}",
        s.cost_usd,
        vs,
        s.requests_total,
        s.requests_failed,
        s.success_rate * 100.0,
        s.interruptions,
        s.incidents,
        s.unfinished_incidents,
        percentile_cell(s.p50_recovery_s, 0.50, s.incidents),
        percentile_cell(s.p90_recovery_s, 0.90, s.incidents),
        percentile_cell(s.p99_recovery_s, 0.99, s.incidents),
        percentile_cell(s.max_recovery_s, 0.0, s.incidents),
        s.unwarned_incidents,
        percentile_cell(s.p50_unwarned_recovery_s, 0.50, s.unwarned_incidents),
        percentile_cell(s.max_unwarned_recovery_s, 0.0, s.unwarned_incidents)
    )
}

/// A line per strategy whose spare capacity was sized by cost: its tier
/// mix and what each tier cost; a blank line after them.
fn spare_lines(strategies: &[StrategySummary], prefix: &str) -> String {
    let mut out = String::new();
    for s in strategies {
        if let Some(spare) = &s.spare_tiers {
            out.push_str(&format!("{prefix}{}: {}\n", s.name, spare.line()));
        }
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// What the recovery columns mean, printed under every table.
pub const RECOVERY_NOTE: &str = "\
Recovery: reclaim notice → every displaced workload Ready again, in seconds; nearest-rank
percentiles over the n finished incidents whose notices all came (late ones timed from when
they were due). nn: finished incidents in which a node got no notice at all, timed from the
reclaim (nn p50, nn max). open: incidents unfinished when the run ended (in neither).
*: too few incidents for that percentile (p90 needs 10, p99 100), so it is the maximum.";

/// A plain-text table of the comparison.
pub fn table(summary: &Summary) -> String {
    let mut out = format!(
        "{} — {} nodes, {:.1} days, seed {}\nModel: {}.\n\n",
        summary.market, summary.nodes, summary.sim_days, summary.seed, summary.pool_hit_model
    );
    out.push_str(&format!("{:<18} {}\n", "strategy", figures_header()));
    for s in &summary.strategies {
        out.push_str(&format!("{:<18} {}\n", s.name, figures_row(s)));
    }
    out.push('\n');
    out.push_str(&spare_lines(&summary.strategies, ""));
    out.push_str(RECOVERY_NOTE);
    out.push('\n');
    out
}

/// One table for a sweep: a row per trace × strategy, traces separated by a
/// blank line. `heading` says what was swept (root, nodes, seed, model).
pub fn sweep_table(heading: &str, sweep: &Sweep) -> String {
    let width = sweep.runs.iter().map(|r| r.trace.chars().count()).max().unwrap_or(5).max(5);
    let mut out = format!("{heading}\n\n");
    out.push_str(&format!("{:<width$} {:>6} {:<18} {}\n", "trace", "days", "strategy", figures_header()));
    for (i, run) in sweep.runs.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for s in &run.strategies {
            out.push_str(&format!(
                "{:<width$} {:>6.2} {:<18} {}\n",
                run.trace,
                run.days,
                s.name,
                figures_row(s)
            ));
        }
    }
    out.push('\n');
    for run in &sweep.runs {
        out.push_str(&spare_lines(&run.strategies, &format!("{} ", run.trace)));
    }
    out.push_str(RECOVERY_NOTE);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_nearest_rank() {
        assert_eq!(quantile(&[], 0.99), 0.0);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[5.0], 0.5), 5.0);
        // Nearest rank, not interpolation: p50 of 1..=4 is 2, p90 of 1..=10 is 9.
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.5), 2.0);
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&ten, 0.9), 9.0);
        assert_eq!(quantile(&ten, 0.99), 10.0);
    }

    fn result(name: &str, recoveries_s: Vec<f64>, unfinished: u64) -> StrategyResult {
        StrategyResult {
            name: name.into(),
            cost_usd: 10.0,
            requests_total: 1000.0,
            requests_failed: 3.0,
            requests_bridged: 0.0,
            interruptions: 4,
            recoveries_s,
            unwarned_recoveries_s: vec![130.0, 250.0],
            unfinished_incidents: unfinished,
            series: Vec::new(),
            spare: None,
        }
    }

    #[test]
    fn recovery_percentiles_count_and_unfinished_incidents() {
        // 200 incidents: 1..=200 s. An unfinished one must not count as a
        // (huge) recovery: it is reported on its own.
        let r = result("costop", (1..=200).map(f64::from).collect(), 2);
        let s = &summarize(&[r])[0];
        assert_eq!((s.incidents, s.unfinished_incidents), (200, 2));
        assert_eq!(s.p50_recovery_s, 100.0);
        assert_eq!(s.p90_recovery_s, 180.0);
        assert_eq!(s.p99_recovery_s, 198.0);
        assert_eq!(s.max_recovery_s, 200.0);
        // Incidents without a notice are counted and timed on their own.
        assert_eq!(
            (s.unwarned_incidents, s.p50_unwarned_recovery_s, s.max_unwarned_recovery_s),
            (2, 130.0, 250.0)
        );
        // No incidents: zeros, and the count says why.
        let s = &summarize(&[result("on-demand", vec![], 0)])[0];
        assert_eq!((s.incidents, s.p50_recovery_s, s.p99_recovery_s, s.max_recovery_s), (0, 0.0, 0.0, 0.0));
    }

    #[test]
    fn json_has_every_recovery_field() {
        let s = &summarize(&[result("costop", vec![30.0, 60.0, 90.0], 1)])[0];
        let v = serde_json::to_value(s).unwrap();
        for key in [
            "name",
            "cost_usd",
            "cost_vs_on_demand",
            "requests_total",
            "requests_failed",
            "success_rate",
            "interruptions",
            "p50_recovery_s",
            "p90_recovery_s",
            "p99_recovery_s",
            "max_recovery_s",
            "incidents",
            "unfinished_incidents",
            "unwarned_incidents",
            "p50_unwarned_recovery_s",
            "max_unwarned_recovery_s",
            "requests_bridged",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert_eq!(v["incidents"], 3);
        assert_eq!(v["unfinished_incidents"], 1);
        assert_eq!(v["p50_recovery_s"], 60.0);
    }

    #[test]
    fn the_table_prints_the_count_beside_percentiles_and_marks_starved_ones() {
        let summary = Summary {
            strategies: summarize(&[
                result("few", vec![10.0, 20.0, 500.0], 1),
                result("many", (1..=100).map(f64::from).collect(), 0),
            ]),
            sim_days: 1.0,
            nodes: 10,
            seed: 1,
            market: "test market".into(),
            pool_hit_model: "model".into(),
        };
        let text = table(&summary);
        let lines: Vec<&str> = text.lines().collect();
        let header = lines.iter().find(|l| l.starts_with("strategy")).unwrap();
        let few = lines.iter().find(|l| l.starts_with("few")).unwrap();
        let many = lines.iter().find(|l| l.starts_with("many")).unwrap();
        assert!(header.contains(" n ") && header.contains("open") && header.contains("p50 s"), "{header}");
        let cells: Vec<&str> = few.split_whitespace().collect();
        // …, reclaims, n, open, p50, p90, p99, max, nn, nn p50, nn max
        let want = ["3", "1", "20.0", "500.0*", "500.0*", "500.0", "2", "130.0", "250.0"];
        assert_eq!(&cells[cells.len() - 9..], want, "{few}");
        let cells: Vec<&str> = many.split_whitespace().collect();
        let want = ["100", "0", "50.0", "90.0", "99.0", "100.0", "2", "130.0", "250.0"];
        assert_eq!(&cells[cells.len() - 9..], want, "{many}");
        assert!(text.contains("nearest-rank"), "{text}");
        let mut on_demand = result("on-demand", vec![], 0);
        on_demand.unwarned_recoveries_s.clear();
        let summary = Summary { strategies: summarize(&[on_demand]), ..summary };
        let text = table(&summary);
        let od = text.lines().find(|l| l.starts_with("on-demand")).unwrap();
        let cells: Vec<&str> = od.split_whitespace().collect();
        assert_eq!(&cells[cells.len() - 9..], ["0", "0", "-", "-", "-", "-", "0", "-", "-"], "{od}");
        // Columns line up: every row as long as the header.
        assert_eq!(few.len(), header.len());
        assert_eq!(many.len(), header.len());
    }

    #[test]
    fn the_sweep_table_has_a_row_per_trace_and_strategy() {
        let strategies = summarize(&[result("on-demand", vec![], 0), result("costop", vec![5.0], 0)]);
        let sweep = Sweep {
            runs: ["preemption/a", "availability/b"]
                .iter()
                .map(|t| SweepRun {
                    trace: t.to_string(),
                    nodes: 10,
                    days: 1.0,
                    strategies: strategies.clone(),
                })
                .collect(),
            seed: 1,
            pool_hit_model: "model".into(),
        };
        let text = sweep_table("sweep of test", &sweep);
        assert!(text.starts_with("sweep of test"));
        let rows: Vec<&str> = text.lines().filter(|l| l.contains("/a ") || l.contains("/b ")).collect();
        assert_eq!(rows.len(), 4, "{text}");
        assert!(rows[0].starts_with("preemption/a") && rows[0].contains("on-demand"));
        assert!(rows[3].starts_with("availability/b") && rows[3].contains("costop"));
        let v = serde_json::to_value(&sweep).unwrap();
        assert_eq!(v["runs"][1]["trace"], "availability/b");
        assert_eq!(v["runs"][0]["strategies"][1]["name"], "costop");
        for key in ["trace", "nodes", "days", "strategies"] {
            assert!(v["runs"][0].get(key).is_some(), "{key}");
        }
    }
}
