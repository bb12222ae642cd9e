//! The simulated world: a cluster, its cloud and a Spot market, in virtual time.

pub use costop_facts::{catalog, rng, timings};
pub mod config;
pub mod driver;
pub mod market;
pub mod ports;
pub mod runtime;
pub mod strategy;
pub mod trace;
pub mod world;

pub use config::{PoolHit, SimConfig};
pub use strategy::Strategy;
pub use world::{StrategyResult, World};

/// Run every configured strategy on the same market and seed, two at a time
/// (one per core). Results come back in the configured order.
pub fn run_all(cfg: &SimConfig, market: &market::Market) -> Vec<StrategyResult> {
    let (cfg, market) = (std::sync::Arc::new(cfg.clone()), std::sync::Arc::new(market.clone()));
    let mut results: Vec<Option<StrategyResult>> = vec![None; cfg.strategies.len()];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    for chunk in cfg.strategies.iter().enumerate().collect::<Vec<_>>().chunks(threads) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(i, s)| {
                    let (cfg, market) = (cfg.clone(), market.clone());
                    (*i, scope.spawn(move || driver::run(cfg, market, **s)))
                })
                .collect();
            for (i, h) in handles {
                results[i] = h.join().ok();
            }
        });
    }
    results.into_iter().flatten().collect()
}
pub mod report;
pub mod summary;
