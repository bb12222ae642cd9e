//! One strategy's run: the world's events and the responders' tasks,
//! interleaved in virtual time.
//!
//! costop's notices are planned and run by the server's own code
//! ([`costop_executor::Executor`], and the warm-pool keeper between
//! responses); the peers' plans run on the same executor, so every strategy
//! meets the same API latency, eviction retries and budgets.

use crate::config::SimConfig;
use crate::market::Market;
use crate::ports::{SimPorts, SimStore};
use crate::runtime::{Runtime, VirtualClock};
use crate::strategy::Strategy;
use crate::world::{StrategyResult, World};
use costop_core::ports::{Clock, StorePort};
use costop_executor::warm_pool::WarmPoolKeeper;
use costop_executor::{Executor, NoObserver, OpenResponses};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The executor as the simulator runs it.
pub type SimExecutor = Executor<SimStore, SimPorts, SimPorts, VirtualClock>;

/// How often the warm-pool keeper runs a round (the server's default).
const KEEPER_ROUND: Duration = Duration::from_secs(20);

/// Run one strategy to the end of the market and report.
pub fn run(cfg: Arc<SimConfig>, market: Arc<Market>, strategy: Strategy) -> StrategyResult {
    // The world, the planner and the keeper all read the strategy's policy.
    let policy = strategy.policy(&cfg.policy);
    let cfg = if policy == cfg.policy { cfg } else { Arc::new(SimConfig { policy, ..(*cfg).clone() }) };
    let clock = VirtualClock::default();
    let world = Arc::new(Mutex::new(World::new(cfg.clone(), market, strategy)));
    let api = Duration::from_micros((cfg.timings.api_call_ms.max(0.0) * 1000.0) as u64);
    let ports = Arc::new(SimPorts::new(world.clone(), clock.clone(), api));
    let keeps_pool = strategy.is_costop() && cfg.run_warm_pool_keeper;
    let exec: SimExecutor = Executor {
        store: Arc::new(SimStore::default()),
        cluster: ports.clone(),
        cloud: ports.clone(),
        clock: Arc::new(clock.clone()),
        observer: Arc::new(NoObserver),
        returns_standbys: keeps_pool,
        open: Arc::new(OpenResponses::default()),
        no_move: Default::default(),
        waits: costop_executor::Waits {
            delete_doomed_before: strategy.delete_doomed_before(&cfg.policy),
            ..cfg.executor_waits
        },
    };
    let mut rt = Runtime::new(clock.clone());
    if keeps_pool {
        spawn_keeper(&mut rt, &exec, &world, &cfg);
    }
    if strategy.is_costop() {
        spawn_mover(&mut rt, &exec, &cfg);
    }
    let end = world.lock().unwrap_or_else(|e| e.into_inner()).end();
    loop {
        let next_event = world.lock().unwrap_or_else(|e| e.into_inner()).next_event_at();
        let next = match (next_event, clock.next_timer()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => break,
            },
        };
        if next > end {
            break;
        }
        clock.set(next);
        let detections = {
            let mut w = world.lock().unwrap_or_else(|e| e.into_inner());
            w.run_events_at(next);
            w.take_detections()
        };
        for d in detections {
            answer(&mut rt, &exec, &world, &cfg, strategy, d);
        }
        // The world settling (pods scheduled, drains moved on) wakes the
        // tasks waiting for a change: they run now, as a watch would tell
        // them within milliseconds, not at the next event or timer.
        for _ in 0..SETTLE_ROUNDS {
            rt.run_ready();
            world.lock().unwrap_or_else(|e| e.into_inner()).settle();
            if !rt.has_ready() {
                break;
            }
        }
    }
    // Tasks still waiting (a keeper, a response past the end) stop here.
    drop(rt);
    if std::env::var_os("COSTOP_DEBUG_RECORDS").is_some() {
        print_records(&exec.store);
    }
    let result = world.lock().unwrap_or_else(|e| e.into_inner()).finish();
    result
}

/// Rounds of running woken tasks and settling the world at one instant
/// (each round's changes may wake more tasks); a bound, so two tasks
/// that keep waking each other cannot hold time still.
const SETTLE_ROUNDS: usize = 16;

/// Answer one detected notice the strategy's way.
fn answer(
    rt: &mut Runtime,
    exec: &SimExecutor,
    world: &Arc<Mutex<World>>,
    cfg: &SimConfig,
    strategy: Strategy,
    d: crate::world::Detection,
) {
    let now = exec.clock.now_ms();
    let plan = {
        let mut w = world.lock().unwrap_or_else(|e| e.into_inner());
        if strategy.is_costop() {
            let notice = w.notice_of(&d);
            // Planned on the watch-backed view, as the server plans.
            let view = w.view();
            match exec.plan(&view, &notice, &cfg.policy, now) {
                Ok(plan) => {
                    w.after_costop_plan(&d, &plan);
                    plan
                }
                Err(_) => return,
            }
        } else {
            match w.peer_plan(&d) {
                Some(plan) => plan,
                None => return,
            }
        }
    };
    let exec = exec.clone();
    rt.spawn(async move {
        // The server saves the plan before it runs it; a second notice for
        // the same key is a duplicate.
        if exec.store.save_plan(&plan).await.unwrap_or(false) {
            exec.execute(std::sync::Arc::new(plan), now).await;
        }
    });
}

/// The warm-pool keeper's loop, as the server runs it: a round every 20 s
/// unless a response is under way. A round that changed nothing is not
/// repeated until the world changes in more than prices (it would decide
/// the same again: no rule of the keeper reads a price).
fn spawn_keeper(rt: &mut Runtime, exec: &SimExecutor, world: &Arc<Mutex<World>>, cfg: &SimConfig) {
    let open = exec.open.clone();
    let responding = open.clone();
    let keeper = WarmPoolKeeper {
        cluster: exec.cluster.clone(),
        cloud: exec.cluster.clone(),
        clock: exec.clock.clone(),
        policy: cfg.policy.clone(),
        responding: Arc::new(move || responding.busy()),
    };
    let (clock, world) = (exec.clock.clone(), world.clone());
    rt.spawn(async move {
        let mut idle_at: Option<u64> = None;
        loop {
            let version = world.lock().unwrap_or_else(|e| e.into_inner()).version_but_prices();
            if idle_at != Some(version) {
                let busy = open.busy();
                let report = keeper.round().await;
                // A round held back by a response did not decide anything.
                let decided_nothing =
                    report == costop_executor::warm_pool::RoundReport::default() && !busy && !open.busy();
                idle_at = decided_nothing.then_some(version);
            }
            clock.sleep(KEEPER_ROUND).await;
        }
    });
}

/// The move-back loop, as the server runs it: a round every
/// [`costop_executor::MOVE_ROUND`], each move run to its end.
fn spawn_mover(rt: &mut Runtime, exec: &SimExecutor, cfg: &SimConfig) {
    let (exec, policy) = (exec.clone(), cfg.policy.clone());
    rt.spawn(async move {
        loop {
            exec.move_once(&policy).await;
            exec.clock.sleep(costop_executor::MOVE_ROUND).await;
        }
    });
}

/// Every response's steps with their virtual start and end (seconds) and
/// outcome, for `COSTOP_DEBUG_RECORDS=1`.
fn print_records(store: &SimStore) {
    for r in store.records() {
        let start = r.steps.first().and_then(|s| s.started_at).unwrap_or(0);
        eprintln!("response {} on {} at {} s", r.plan.notice, r.plan.node, start / 1000);
        for (step, rec) in r.plan.steps.iter().zip(&r.steps) {
            let at = |t: Option<u64>| t.map_or(-1.0, |t| (t as f64 - start as f64) / 1000.0);
            eprintln!(
                "  {:18} {:8.1} {:8.1}  {}",
                step.kind(),
                at(rec.started_at),
                at(rec.done_at),
                rec.outcome.as_deref().unwrap_or("")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::{PoolMarket, Reclaim};
    use costop_core::PoolId;

    /// An m5.xlarge pool in `zone` at a fixed Spot price, reclaiming whole
    /// at `reclaims` and unable to launch in the spans `closed`.
    fn pool(zone: &str, price: f64, reclaims: Vec<u64>, closed: Vec<(u64, u64)>) -> PoolMarket {
        PoolMarket {
            id: PoolId::new("m5.xlarge", zone),
            on_demand_usd_hr: 0.192,
            prices: vec![(0, price)],
            unavailable: closed,
            reclaims: reclaims.into_iter().map(|at| Reclaim { at, share: 1.0 }).collect(),
            prior_interruptions_per_day: 0.5,
        }
    }

    fn market() -> Arc<Market> {
        Arc::new(Market {
            pools: vec![
                pool("us-east-1a", 0.07, vec![3_600_000], vec![]),
                pool("us-east-1b", 0.07, vec![], vec![]),
                pool("us-east-1c", 0.07, vec![], vec![]),
            ],
            duration: 2 * 3_600_000,
            source: "test".into(),
        })
    }

    /// Six nodes of ten pods, no rebalance recommendations, for `days`.
    fn small(days: f64) -> SimConfig {
        SimConfig { days, nodes: 6, pods_per_node: 10, rebalance_probability: 0.0, ..SimConfig::default() }
    }

    /// Where Spot room is dear (0.18 USD an m5.xlarge, more a core than
    /// a t3.xlarge's 0.1664; below the on-demand 0.192, or no Spot is run) and every open second is too, cost sizing
    /// with the burstable tier runs burstable nodes instead of
    /// placeholders: the reclaim's pods go to them at once and move on
    /// (surged first) to the replacement once it is Ready.
    #[test]
    fn burstable_spare_takes_a_reclaims_pods_and_hands_them_on() {
        let hour = 3_600_000;
        let market = Arc::new(Market {
            pools: vec![
                pool("us-east-1a", 0.18, vec![hour], vec![]),
                pool("us-east-1b", 0.18, vec![], vec![]),
                pool("us-east-1c", 0.18, vec![], vec![]),
            ],
            duration: 3 * hour,
            source: "test".into(),
        });
        let cfg = SimConfig {
            policy: costop_core::Policy {
                spare_sizing: costop_core::SpareSizing::Cost,
                gap_usd_per_core_s: 0.1,
                ..Default::default()
            },
            // Full nodes: a pool's loss leaves its pods short of room.
            world: crate::config::WorldSettings { utilisation: 0.9, ..Default::default() },
            ..small(0.125)
        };
        let cfg = Arc::new(cfg);
        let (held, burst) =
            (run(cfg.clone(), market.clone(), Strategy::Costop), run(cfg, market, Strategy::CostopBurstable));
        let (held_spare, spare) = (held.spare.expect("cost sized"), burst.spare.expect("cost sized"));
        assert!(held_spare.placeholder_pods > 0 && held_spare.burstable_nodes == 0, "{held_spare:?}");
        assert!(spare.burstable_nodes > 0 && spare.placeholder_pods == 0, "{spare:?}");
        // The pods ran on them for the gap, not for the two hours left.
        assert!(spare.burstable_busy_s > 0.0, "{spare:?}");
        assert!(spare.burstable_busy_s < 0.25 * 7200.0 * f64::from(spare.burstable_nodes), "{spare:?}");
        assert_eq!(spare.burstable_throttled_s, 0.0, "t3 runs unlimited by default");
        // Two t3.xlarge nodes held three hours, no surplus (a minute or two
        // of bursting is paid back by their earnings).
        assert!((spare.burstable_usd - 2.0 * 0.1664 * 3.0).abs() < 1e-6, "{spare:?}");
        assert_eq!(burst.recoveries_s.len(), 1);
        assert!(
            burst.recoveries_s[0] <= held.recoveries_s[0],
            "{:?} vs {:?}",
            burst.recoveries_s,
            held.recoveries_s
        );
        // Handed back surge first, serving until moved: nothing fails.
        assert_eq!(burst.requests_failed, 0.0);
    }

    #[test]
    fn the_simulator_runs_the_executors_wait_rules() {
        let run = |after_deadline| {
            let cfg = SimConfig {
                executor_waits: costop_executor::Waits { after_deadline, ..Default::default() },
                // Replacements Ready only after the reclaim: the workloads
                // are not whole at the deadline.
                timings: costop_facts::timings::Timings { node_ready_s: 300.0, ..Default::default() },
                ..small(1.0)
            };
            run(Arc::new(cfg), market(), Strategy::Costop)
        };
        let (shipped, none) = (run(10 * 60 * 1000), run(0));
        // Without the wait after the deadline the bridge is shifted back at
        // the reclaim, before the workloads are whole again: fewer requests
        // go through functions. A change of the executor's rule changes the figure.
        assert!(
            shipped.requests_bridged > none.requests_bridged
                && shipped.requests_failed < none.requests_failed,
            "bridged {} vs {}, failed {} vs {}",
            shipped.requests_bridged,
            none.requests_bridged,
            shipped.requests_failed,
            none.requests_failed
        );
    }

    #[test]
    fn nodes_launched_where_capacity_was_move_back_once_a_cheap_pool_can_take_them() {
        // The cheap pools cannot launch for the first hour: every node
        // starts in the dear one.
        let hour = 3_600_000;
        let market = Arc::new(Market {
            pools: vec![
                pool("us-east-1a", 0.06, vec![], vec![(0, hour)]),
                pool("us-east-1b", 0.06, vec![], vec![(0, hour)]),
                pool("us-east-1c", 0.15, vec![], vec![]),
            ],
            duration: 6 * hour,
            source: "test".into(),
        });
        let run = |move_back_saving| {
            let cfg = SimConfig {
                policy: costop_core::Policy { move_back_saving, ..Default::default() },
                ..small(0.25)
            };
            run(Arc::new(cfg), market.clone(), Strategy::Costop)
        };
        let (moved, stayed) = (run(0.15), run(1.0));
        assert!(
            moved.cost_usd < 0.8 * stayed.cost_usd,
            "with moves {:.2} USD, without {:.2} USD",
            moved.cost_usd,
            stayed.cost_usd
        );
        // Moves drain within budgets: next to no request fails.
        assert!(
            moved.requests_failed <= 1e-4 * moved.requests_total,
            "{} of {} failed",
            moved.requests_failed,
            moved.requests_total
        );
    }

    #[test]
    fn surged_workloads_lose_no_ready_pod_and_recover_sooner() {
        // Without the bridge every Ready pod lost shows as failed requests.
        let run = |surge_before_evict| {
            let cfg = SimConfig {
                policy: costop_core::Policy {
                    surge_before_evict,
                    bridge_enabled: false,
                    ..Default::default()
                },
                ..small(0.1)
            };
            run(Arc::new(cfg), market(), Strategy::Costop)
        };
        let (surged, evicted) = (run(true), run(false));
        let worst = |r: &StrategyResult| r.recoveries_s.iter().copied().fold(0.0, f64::max);
        println!(
            "surge: {} failed, slowest recovery {} s; evict at once: {} failed, {} s",
            surged.requests_failed,
            worst(&surged),
            evicted.requests_failed,
            worst(&evicted)
        );
        assert!(
            surged.requests_failed < evicted.requests_failed && worst(&surged) <= worst(&evicted),
            "failed {} vs {}, slowest recovery {} vs {} s",
            surged.requests_failed,
            evicted.requests_failed,
            worst(&surged),
            worst(&evicted)
        );
        assert!(!surged.recoveries_s.is_empty() && surged.unfinished_incidents == 0);
    }

    #[test]
    fn a_node_lost_without_notice_is_forgotten_and_its_pods_come_back_sooner() {
        // No notice ever arrives: only EC2's state change tells of the loss.
        let run = |strategy| {
            let mut cfg = small(0.1);
            cfg.world.missed_notice_rate = 1.0;
            run(Arc::new(cfg), market(), strategy)
        };
        let (costop, naive) = (run(Strategy::Costop), run(Strategy::SpotNaive));
        let worst = |r: &StrategyResult| r.unwarned_recoveries_s.iter().copied().fold(0.0, f64::max);
        let best = |r: &StrategyResult| r.unwarned_recoveries_s.iter().copied().fold(f64::MAX, f64::min);
        println!(
            "from the reclaim: costop forgets the node, back in {} s at worst; left to the node controller and pod GC, {} s at best",
            worst(&costop),
            best(&naive)
        );
        assert!(!costop.unwarned_recoveries_s.is_empty() && costop.recoveries_s.is_empty());
        assert!(
            worst(&costop) < best(&naive),
            "costop {:?}, spot-naive {:?}",
            costop.unwarned_recoveries_s,
            naive.unwarned_recoveries_s
        );
        assert!(costop.requests_failed < naive.requests_failed);
    }
}
