//! The Spot market the world runs in: per pool, a price series, the times
//! the pool reclaims capacity, and the spans when launches fail.

use crate::catalog;
use crate::rng::Rng;
use costop_core::time::{Millis, DAY, HOUR, MINUTE, SECOND};
use costop_core::PoolId;

/// One pool's market history.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolMarket {
    /// Instance type × zone.
    pub id: PoolId,
    /// On-demand price of the type, USD/h.
    pub on_demand_usd_hr: f64,
    /// Spot price as a step function: (from, USD/h), sorted, first at 0.
    pub prices: Vec<(Millis, f64)>,
    /// When the pool reclaims instances, and how much of it each time, sorted.
    pub reclaims: Vec<Reclaim>,
    /// Spans `[from, to)` in which a launch in this pool fails.
    pub unavailable: Vec<(Millis, Millis)>,
    /// Prior belief of interruptions per instance per day, before any is seen
    /// (from the Spot Advisor band when known).
    pub prior_interruptions_per_day: f64,
}

/// One reclaim event of a pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reclaim {
    /// When the instances are terminated.
    pub at: Millis,
    /// Share of the pool's instances it takes, in (0, 1] (a trace's drop
    /// from 3 to 2 running instances takes a third).
    pub share: f64,
}

impl PoolMarket {
    /// Spot price at `t`.
    pub fn price_at(&self, t: Millis) -> f64 {
        let i = self.prices.partition_point(|(from, _)| *from <= t);
        self.prices[i.saturating_sub(1)].1
    }

    /// Whether a launch succeeds at `t`.
    pub fn launchable_at(&self, t: Millis) -> bool {
        !self.unavailable.iter().any(|(a, b)| *a <= t && t < *b)
    }

    /// This pool closed to launches from `lead` before each reclaim as well.
    /// EC2 reclaims Spot capacity when it needs it back ("Spot Instance
    /// interruptions", EC2 User Guide), so once the notices are out a launch
    /// in the pool fails for want of capacity; a trace only marks the pool
    /// short from the reclaim on, which let a node launched inside the
    /// notice's 2 minutes outlive the reclaim it was never hit by.
    pub fn closed_from_notices(&self, lead: Millis) -> PoolMarket {
        let mut spans = self.unavailable.clone();
        spans.extend(self.reclaims.iter().map(|r| (r.at.saturating_sub(lead), r.at)));
        spans.sort_unstable();
        let mut merged: Vec<(Millis, Millis)> = Vec::with_capacity(spans.len());
        for (from, to) in spans {
            match merged.last_mut() {
                Some((_, end)) if from <= *end => *end = (*end).max(to),
                _ => merged.push((from, to)),
            }
        }
        PoolMarket {
            id: self.id.clone(),
            on_demand_usd_hr: self.on_demand_usd_hr,
            prices: self.prices.clone(),
            reclaims: self.reclaims.clone(),
            unavailable: merged,
            prior_interruptions_per_day: self.prior_interruptions_per_day,
        }
    }
}

/// All pools, over a span of time.
#[derive(Debug, Clone, PartialEq)]
pub struct Market {
    /// The pools.
    pub pools: Vec<PoolMarket>,
    /// How long the history runs.
    pub duration: Millis,
    /// Where it came from, for the output.
    pub source: String,
}

impl Market {
    /// Every pool closed to launches from `lead` before each of its
    /// reclaims ([`PoolMarket::closed_from_notices`]): the market the world
    /// runs in.
    pub fn closed_from_notices(&self, lead: Millis) -> Market {
        Market {
            pools: self.pools.iter().map(|p| p.closed_from_notices(lead)).collect(),
            duration: self.duration,
            source: self.source.clone(),
        }
    }
}

/// Parameters of the built-in market (no data needed). The numbers are model
/// choices, not data: discounts around the Spot Advisor's median saving (65 %),
/// pool reclaim rates between the Advisor's bands and the much higher rates
/// seen in the public r5.16xlarge trace.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltinMarket {
    /// Instance types (all must be in the catalog).
    pub types: Vec<&'static str>,
    /// Zones.
    pub zones: Vec<&'static str>,
    /// Range of Spot discounts off on-demand, drawn per pool.
    pub discount: (f64, f64),
    /// Range of reclaim events per pool per day, drawn per pool.
    pub reclaims_per_day: (f64, f64),
    /// Mean minutes a pool cannot launch after it reclaimed.
    pub unavailable_mean_minutes: f64,
}

impl Default for BuiltinMarket {
    fn default() -> Self {
        Self {
            types: vec!["m5.xlarge", "m5a.xlarge", "m6i.xlarge"],
            zones: vec!["us-east-1a", "us-east-1b", "us-east-1c"],
            discount: (0.55, 0.72),
            reclaims_per_day: (0.1, 1.5),
            unavailable_mean_minutes: 20.0,
        }
    }
}

impl BuiltinMarket {
    /// Draw a market of `days` from `seed`.
    pub fn generate(&self, seed: u64, days: f64) -> Market {
        let duration = (days * DAY as f64) as Millis;
        let root = Rng::new(seed);
        let mut pools = Vec::new();
        for (ti, ty) in self.types.iter().enumerate() {
            let od = catalog::instance_type(ty).map_or(0.2, |t| t.on_demand_usd_hr);
            for (zi, zone) in self.zones.iter().enumerate() {
                let mut rng = root.fork((ti * 100 + zi) as u64 + 1);
                let discount = rng.range(self.discount.0, self.discount.1);
                let rate = rng.range(self.reclaims_per_day.0, self.reclaims_per_day.1);
                // Hourly price moves of at most ±3 %, kept within 20–60 % of on-demand.
                let mut price = od * (1.0 - discount);
                let mut prices = vec![(0, price)];
                let mut t = HOUR;
                while t < duration {
                    price = (price * rng.range(0.97, 1.03)).clamp(od * 0.2, od * 0.6);
                    prices.push((t, (price * 10_000.0).round() / 10_000.0));
                    t += HOUR;
                }
                let (mut reclaims, mut unavailable) = (Vec::new(), Vec::new());
                let mut t = (rng.exponential(DAY as f64 / rate) as Millis).max(10 * MINUTE);
                while t < duration {
                    let t_sec = t / SECOND * SECOND;
                    reclaims.push(Reclaim { at: t_sec, share: 1.0 });
                    let gap = rng.exponential(self.unavailable_mean_minutes * MINUTE as f64) as Millis;
                    unavailable.push((t_sec, t_sec + gap));
                    t += (rng.exponential(DAY as f64 / rate) as Millis).max(10 * MINUTE);
                }
                pools.push(PoolMarket {
                    id: PoolId::new(*ty, *zone),
                    on_demand_usd_hr: od,
                    prices,
                    reclaims,
                    unavailable,
                    // What costop is told: the Spot Advisor band the true
                    // rate falls in (a coarse public prior), never the rate.
                    prior_interruptions_per_day: crate::trace::advisor_prior_per_day(rate),
                });
            }
        }
        Market { pools, duration, source: format!("built-in market (seed {seed})") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_is_deterministic_and_sane() {
        let a = BuiltinMarket::default().generate(42, 30.0);
        assert_eq!(a, BuiltinMarket::default().generate(42, 30.0));
        assert_ne!(a, BuiltinMarket::default().generate(43, 30.0));
        assert_eq!(a.pools.len(), 9);
        for p in &a.pools {
            assert!(p.prices.windows(2).all(|w| w[0].0 < w[1].0));
            assert!(p.price_at(0) < p.on_demand_usd_hr);
            assert!(p.reclaims.iter().all(|r| r.at < a.duration));
            for (from, _) in &p.unavailable {
                assert!(!p.launchable_at(*from));
            }
        }
        let total: usize = a.pools.iter().map(|p| p.reclaims.len()).sum();
        assert!(total > 10, "30 days of 9 pools should see reclaims, saw {total}");
    }

    /// A pool cannot launch in the 2 minutes between a reclaim's notices
    /// and the reclaim; spans that touch are merged, others kept.
    #[test]
    fn a_pool_closes_to_launches_once_its_reclaim_is_noticed() {
        let pool = PoolMarket {
            id: PoolId::new("m5.large", "us-east-1a"),
            on_demand_usd_hr: 0.096,
            prices: vec![(0, 0.03)],
            reclaims: vec![Reclaim { at: HOUR, share: 1.0 }, Reclaim { at: 3 * HOUR, share: 0.5 }],
            unavailable: vec![(HOUR, HOUR + 20 * MINUTE), (2 * HOUR, 2 * HOUR + MINUTE)],
            prior_interruptions_per_day: 0.1,
        };
        let lead = 2 * MINUTE;
        assert!(pool.launchable_at(HOUR - MINUTE), "the trace alone leaves the pool open");
        let closed = pool.closed_from_notices(lead);
        assert_eq!(
            closed.unavailable,
            vec![
                (HOUR - lead, HOUR + 20 * MINUTE),
                (2 * HOUR, 2 * HOUR + MINUTE),
                (3 * HOUR - lead, 3 * HOUR)
            ]
        );
        assert!(!closed.launchable_at(HOUR - MINUTE));
        assert!(closed.launchable_at(HOUR - lead - SECOND));
        assert!(closed.launchable_at(3 * HOUR));
        let market = Market { pools: vec![pool], duration: 4 * HOUR, source: "test".into() };
        assert_eq!(market.closed_from_notices(lead).pools[0], closed);
    }

    /// The prior costop gets is the Spot Advisor band's rate, not the pool's
    /// true reclaim rate.
    #[test]
    fn the_prior_is_the_advisor_band_not_the_truth() {
        let bands: Vec<f64> = (0..5).map(|b| crate::trace::band_interruptions_per_day(b).unwrap()).collect();
        for (rate, band) in [(0.001, 0), (0.004, 2), (0.006, 3), (0.007, 4), (0.5, 4)] {
            let market =
                BuiltinMarket { reclaims_per_day: (rate, rate), ..Default::default() }.generate(7, 3.0);
            for p in &market.pools {
                assert_eq!(p.prior_interruptions_per_day, bands[band], "rate {rate}");
                assert_ne!(p.prior_interruptions_per_day, rate);
            }
        }
        // The default market's rates (0.1–1.5 a day) are all beyond 20 % a month.
        for p in &BuiltinMarket::default().generate(42, 7.0).pools {
            assert!(bands.contains(&p.prior_interruptions_per_day), "{}", p.prior_interruptions_per_day);
            assert_eq!(p.prior_interruptions_per_day, bands[4]);
        }
    }
}
