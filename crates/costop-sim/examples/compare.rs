//! Compare the strategies on the built-in market without the CLI:
//! `cargo run --release -p costop-sim --example compare -- DAYS NODES SEED [POOL_HIT] [STRATEGY]`.
//! `FULL_JSON=1` prints every result in full (series included) as JSON
//! instead of the table, to check that a change moves no figure.

use costop_sim::market::BuiltinMarket;
use costop_sim::{PoolHit, SimConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let cfg = SimConfig {
        days: arg(0, "30").parse().unwrap_or(30.0),
        nodes: arg(1, "200").parse().unwrap_or(200),
        seed: arg(2, "1").parse().unwrap_or(1),
        pool_hit: arg(3, "all").parse().unwrap_or(PoolHit::All),
        ..SimConfig::default()
    };
    let mut cfg = cfg;
    if std::env::var_os("NO_SURGE").is_some() {
        cfg.policy.surge_before_evict = false;
    }
    if std::env::var_os("NO_REBALANCE").is_some() {
        cfg.policy.act_on_rebalance = false;
    }
    if let Some(h) = std::env::var("HEADROOM").ok().and_then(|v| v.parse().ok()) {
        cfg.policy.headroom_share_of_shortfall = h;
    }
    if let Some(m) = std::env::var("COOLDOWN").ok().and_then(|v| v.parse().ok()) {
        cfg.policy.pool_cooldown_minutes = m;
    }
    if let Some(w) = std::env::var("RISK").ok().and_then(|v| v.parse().ok()) {
        cfg.policy.risk_weight = w;
    }
    if let Some(s) = std::env::var("STANDBY").ok().and_then(|v| v.parse().ok()) {
        cfg.policy.standby_share_of_shortfall = s;
    }
    if let Some(w) = std::env::var("REBALANCE_WINDOW").ok().and_then(|v| v.parse().ok()) {
        cfg.policy.rebalance_window_minutes = w;
    }
    if let Some(m) = std::env::var("MOVE_SAVING").ok().and_then(|v| v.parse().ok()) {
        cfg.policy.move_back_saving = m;
    }
    if let Some(s) = std::env::var("DOOMED_S").ok().and_then(|v| v.parse().ok()) {
        cfg.policy.delete_doomed_before_deadline_s = s;
    }
    if let Some(h) = std::env::var("MAX_POOL").ok().and_then(|v| v.parse().ok()) {
        cfg.policy.max_pool_share = h;
    }
    // TRACE=DIR replays a trace directory instead of the built-in market.
    let market = match std::env::var("TRACE") {
        Ok(dir) => {
            let advisor = costop_sim::trace::SpotAdvisor::load(std::path::Path::new(
                "data/aws-spot-advisor/spot-advisor-data.json",
            ))
            .ok();
            match costop_sim::trace::load_market(std::path::Path::new(&dir), None, advisor.as_ref()) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
        }
        Err(_) => BuiltinMarket::default().generate(cfg.seed, cfg.days),
    };
    let started = std::time::Instant::now();
    let only: Option<costop_sim::Strategy> = args.get(4).and_then(|s| s.parse().ok());
    let results: Vec<_> = match only {
        Some(s) => {
            let r = costop_sim::driver::run(
                std::sync::Arc::new(cfg.clone()),
                std::sync::Arc::new(market.clone()),
                s,
            );
            vec![r]
        }
        None => costop_sim::run_all(&cfg, &market),
    };
    if std::env::var_os("FULL_JSON").is_some() {
        println!("{}", serde_json::to_string(&results).unwrap_or_default());
        eprintln!("wall {:.1} s", started.elapsed().as_secs_f64());
        return;
    }
    let od = results.iter().find(|r| r.name == "on-demand").map_or(1.0, |r| r.cost_usd);
    for r in &results {
        let mut rec = r.recoveries_s.clone();
        rec.sort_by(f64::total_cmp);
        let q = |p: f64| {
            rec.get(((rec.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0)
        };
        println!(
            "{:18} cost {:6.3}x  served {:9.5}%  incidents {:4} unfinished {:3}  p50 {:6.1}  p99 {:6.1}  max {:6.1}",
            r.name,
            r.cost_usd / od,
            100.0 * (1.0 - r.requests_failed / r.requests_total.max(1.0)),
            rec.len(),
            r.unfinished_incidents,
            q(0.5),
            q(0.99),
            rec.last().copied().unwrap_or(0.0)
        );
    }
    eprintln!("wall {:.1} s", started.elapsed().as_secs_f64());
}
