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
    /// 99th percentile of recovery (notice → displaced workloads Ready again), seconds.
    pub p99_recovery_s: f64,
    /// Longest recovery, seconds.
    pub max_recovery_s: f64,
    /// Requests served by the function bridge.
    pub requests_bridged: u64,
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
                p99_recovery_s: round(quantile(&r.recoveries_s, 0.99), 1),
                max_recovery_s: round(r.recoveries_s.iter().copied().fold(0.0, f64::max), 1),
                requests_bridged: r.requests_bridged.round() as u64,
            }
        })
        .collect()
}

/// A plain-text table of the comparison.
pub fn table(summary: &Summary) -> String {
    let mut out = format!(
        "{} — {} nodes, {:.1} days, seed {}\nModel: {}.\n\n",
        summary.market, summary.nodes, summary.sim_days, summary.seed, summary.pool_hit_model
    );
    out.push_str(&format!(
        "{:<18} {:>11} {:>7} {:>15} {:>12} {:>10} {:>7} {:>9} {:>9}\n",
        "strategy",
        "cost USD",
        "vs OD",
        "requests",
        "failed",
        "served %",
        "reclaims",
        "p99 rec s",
        "max rec s"
    ));
    for s in &summary.strategies {
        let vs = s.cost_vs_on_demand.map_or("-".to_string(), |v| format!("{v:.3}"));
        out.push_str(&format!(
            "{:<18} {:>11.2} {:>7} {:>15} {:>12} {:>10.4} {:>7} {:>9.1} {:>9.1}\n",
            s.name,
            s.cost_usd,
            vs,
            s.requests_total,
            s.requests_failed,
            s.success_rate * 100.0,
            s.interruptions,
            s.p99_recovery_s,
            s.max_recovery_s
        ));
    }
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
    }
}
