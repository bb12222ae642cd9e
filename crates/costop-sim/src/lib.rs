//! The simulated world: a cluster, its cloud and a Spot market, in virtual time.

pub use costop_facts::{catalog, rng, timings};
pub mod config;
pub mod driver;
pub mod market;
pub mod ports;
pub mod runtime;
pub mod spare;
pub mod strategy;
pub mod trace;
pub mod world;

pub use config::{PoolHit, SimConfig};
pub use strategy::Strategy;
pub use world::{StrategyResult, World};

/// Run every configured strategy on the same market and seed, one per
/// core at a time: each thread takes the next strategy not yet started,
/// costop's (by far the longest) first, so the run takes about as long as
/// costop alone or the rest shared by the other cores. Results come back
/// in the configured order.
pub fn run_all(cfg: &SimConfig, market: &market::Market) -> Vec<StrategyResult> {
    let (cfg, market) = (std::sync::Arc::new(cfg.clone()), std::sync::Arc::new(market.clone()));
    let mut order: Vec<(usize, Strategy)> = cfg.strategies.iter().copied().enumerate().collect();
    order.sort_by_key(|(_, s)| !s.is_costop());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; cfg.strategies.len()]);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(order.len()) {
            scope.spawn(|| {
                while let Some(&(i, s)) = order.get(next.fetch_add(1, std::sync::atomic::Ordering::SeqCst)) {
                    let r = driver::run(cfg.clone(), market.clone(), s);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().flatten().collect()
}
pub mod report;
pub mod summary;
