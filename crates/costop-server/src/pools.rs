//! The Spot pools the server may restore capacity into, as the core's
//! `PoolView`s: configured pools, their latest Spot price (from the cloud,
//! refreshed by a loop), and the reclaims this server has seen in each.

use costop_core::time::{Millis, DAY};
use costop_core::{PoolId, PoolView};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// How far back reclaims count towards a pool's interruption rate.
const RATE_WINDOW_DAYS: u64 = 7;

#[derive(Debug, Default, Clone)]
struct Seen {
    spot_price: Option<f64>,
    reclaims: Vec<Millis>,
}

/// Pools with what is known of them.
#[derive(Debug, Default)]
pub struct PoolBook {
    pools: Vec<PoolId>,
    seen: Mutex<BTreeMap<PoolId, Seen>>,
}

impl PoolBook {
    /// A book of these pools.
    pub fn new(pools: Vec<PoolId>) -> Self {
        Self { pools, seen: Mutex::default() }
    }

    /// A book of these pools with their current Spot prices (the emulated
    /// cloud's, which names its pools).
    pub fn priced(pools: &[(PoolId, f64)]) -> Self {
        let book = Self::new(pools.iter().map(|(p, _)| p.clone()).collect());
        book.set_prices(&pools.iter().cloned().collect());
        book
    }

    /// The configured pools.
    pub fn pools(&self) -> &[PoolId] {
        &self.pools
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, BTreeMap<PoolId, Seen>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record the latest Spot prices (USD per hour).
    pub fn set_prices(&self, prices: &BTreeMap<PoolId, f64>) {
        let mut seen = self.seen();
        for (pool, price) in prices {
            seen.entry(pool.clone()).or_default().spot_price = Some(*price);
        }
    }

    /// Record that `pool` reclaimed an instance at `at`.
    pub fn reclaimed(&self, pool: &PoolId, at: Millis) {
        let mut seen = self.seen();
        let reclaims = &mut seen.entry(pool.clone()).or_default().reclaims;
        if !reclaims.contains(&at) {
            reclaims.push(at);
        }
    }

    /// The pools as the core sees them at `now`. A pool whose Spot price is
    /// not known yet is priced at its on-demand price (Spot never costs
    /// more); one with neither is not launched into.
    pub fn views(&self, now: Millis) -> Vec<PoolView> {
        let mut seen = self.seen();
        let since = now.saturating_sub(RATE_WINDOW_DAYS * DAY);
        self.pools
            .iter()
            .map(|id| {
                let s = seen.entry(id.clone()).or_default();
                s.reclaims.retain(|t| *t >= since);
                let on_demand =
                    costop_facts::catalog::instance_type(&id.instance_type).map(|t| t.on_demand_usd_hr);
                let price = s.spot_price.or(on_demand);
                PoolView {
                    id: id.clone(),
                    spot_price: price.unwrap_or(0.0),
                    on_demand_price: on_demand.unwrap_or(0.0),
                    interruptions_per_day: s.reclaims.len() as f64 / RATE_WINDOW_DAYS as f64,
                    launchable: price.is_some(),
                    last_interruption: s.reclaims.iter().max().copied(),
                }
            })
            .collect()
    }
}

/// How often the emulated cloud's Spot prices are read again.
pub const EMU_PRICE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Read the emulated cloud's Spot prices every [`EMU_PRICE_EVERY`] and hand
/// them to `set` (pools the book does not hold are ignored by it), until
/// `shutdown` turns true.
pub async fn refresh_emu_prices(
    cloud: crate::cloud::EmuCloud,
    set: impl Fn(BTreeMap<PoolId, f64>) + Send + 'static,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EMU_PRICE_EVERY) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match cloud.pools().await {
            Ok(pools) => set(pools.into_iter().collect()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the emulated cloud's Spot prices; keeping the last ones")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_reclaims_and_unknown_pools() {
        let a = PoolId::new("m5.xlarge", "us-east-1a");
        let b = PoolId::new("c5.xlarge", "us-east-1b");
        let odd = PoolId::new("zz9.plural", "us-east-1c");
        let book = PoolBook::new(vec![a.clone(), b.clone(), odd.clone()]);
        book.set_prices(&BTreeMap::from([(a.clone(), 0.07)]));
        book.reclaimed(&b, 5 * DAY);
        book.reclaimed(&b, 5 * DAY); // the same notice twice counts once
        book.reclaimed(&b, 9 * DAY);
        let views = book.views(10 * DAY);
        assert_eq!(views[0].spot_price, 0.07);
        assert!(views[0].launchable && views[0].last_interruption.is_none());
        // No Spot price yet: the on-demand price bounds it.
        assert_eq!(views[1].spot_price, views[1].on_demand_price);
        assert!(views[1].spot_price > 0.1);
        assert_eq!(views[1].interruptions_per_day, 2.0 / 7.0);
        assert_eq!(views[1].last_interruption, Some(9 * DAY));
        assert!(!views[2].launchable);
        // Reclaims older than the window drop out.
        assert_eq!(book.views(13 * DAY)[1].interruptions_per_day, 1.0 / 7.0);
    }

    #[test]
    fn priced_pools_from_the_emulated_cloud() {
        let text = r#"[{"instance_type": "m5.xlarge", "zone": "us-east-1b", "spot_price": 0.07, "on_demand_price": 0.192, "launchable": true},
                       {"instance_type": "c5.xlarge", "zone": "us-east-1c", "spot_price": 0.06, "launchable": false}]"#;
        let pools = crate::cloud::parse_pools(text).unwrap();
        assert_eq!(pools, vec![(PoolId::new("m5.xlarge", "us-east-1b"), 0.07)]);
        let views = PoolBook::priced(&pools).views(DAY);
        assert_eq!((views.len(), views[0].spot_price, views[0].launchable), (1, 0.07, true));
        for junk in [
            "",
            "{}",
            r#"[{"zone": "a"}]"#,
            r#"[{"instance_type": "m5.xlarge", "zone": "z", "spot_price": -1}]"#,
        ] {
            assert!(crate::cloud::parse_pools(junk).is_err(), "{junk}");
        }
    }
}
