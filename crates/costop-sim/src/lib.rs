//! The simulated world: a cluster, its cloud and a Spot market, in virtual time.

pub mod catalog;
pub mod config;
pub mod market;
pub mod rng;
pub mod strategy;
pub mod timings;
pub mod trace;
pub mod world;

pub use config::{PoolHit, SimConfig};
pub use strategy::Strategy;
pub use world::{StrategyResult, World};

/// Run every configured strategy on the same market and seed, two at a time
/// (one per core). Results come back in the configured order.
pub fn run_all(cfg: &SimConfig, market: &market::Market) -> Vec<StrategyResult> {
    let mut results: Vec<Option<StrategyResult>> = vec![None; cfg.strategies.len()];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    for chunk in cfg.strategies.iter().enumerate().collect::<Vec<_>>().chunks(threads) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(i, s)| (*i, scope.spawn(move || World::new(cfg, market, **s).run())))
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
