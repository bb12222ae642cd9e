//! A burstable instance's CPU credit balance, where it matters (how long
//! its room lasts before `standard` mode holds it to the baseline, or
//! before `unlimited` mode bills surplus): CloudWatch's `CPUCreditBalance`
//! (namespace `AWS/EC2`, dimension `InstanceId`) when the instance
//! publishes it, else the balance modeled from its uptime and usage with
//! EC2's credit rules (`costop_world::credits::CreditAccount`).
//!
//! Source of the metric: Amazon EC2 User Guide, "Monitor your CPU credits
//! for burstable instances": `CPUCreditBalance` is "the number of earned
//! CPU credits that an instance has accrued since it was launched or
//! started" (for T2 standard it includes launch credits), published every
//! five minutes, free of charge, whether or not detailed monitoring is on.
//! Metrics can be missing all the same (a new instance, a start within the
//! last period, an account or Region without them in an emulator).

use crate::{aws_err, missing, AwsCloud, AwsError};
use aws_sdk_cloudwatch::types as cwt;
use costop_facts::catalog::{burstable, Burstable, CreditMode};
use costop_world::credits::CreditAccount;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// CloudWatch namespace of EC2's instance metrics.
pub const NAMESPACE: &str = "AWS/EC2";
/// The credit balance metric.
pub const METRIC: &str = "CPUCreditBalance";
/// EC2 publishes credit metrics every five minutes (the User Guide's
/// "Monitor your CPU credits"): the period asked for.
pub const PERIOD_S: i32 = 300;
/// How far back a datapoint is looked for: three periods, so one or two
/// late publications still find the last one.
pub const LOOKBACK_S: u64 = 3 * PERIOD_S as u64;

/// Where a balance came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BalanceSource {
    /// CloudWatch's `CPUCreditBalance`, its datapoint `age_s` seconds old
    /// (then brought forward to now at the given usage with the credit rules).
    Measured {
        /// Seconds between the datapoint's timestamp and now.
        age_s: f64,
    },
    /// No datapoint in the last [`LOOKBACK_S`]: modeled from the instance's
    /// uptime at the given usage, from a launch with no earned credits.
    Modeled {
        /// Seconds since the instance was launched or last started.
        uptime_s: f64,
    },
}

/// A burstable instance's CPU credits now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CreditBalance {
    /// Credits it can spend (one is a vCPU at 100 % for a minute).
    pub credits: f64,
    /// Its credit option.
    pub mode: CreditMode,
    /// Where `credits` came from.
    pub source: BalanceSource,
}

/// A `CPUCreditBalance` reading that cannot be a balance.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("CPUCreditBalance of a {instance_type}: {problem}")]
pub struct BadReading {
    /// The instance type it was read for.
    pub instance_type: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Check a `CPUCreditBalance` reading of a `facts` instance: a finite
/// number between zero and what the type can hold (its accrual limit plus,
/// for T2 standard, its launch credits; a little tolerance for rounding).
pub fn check_reading(facts: &Burstable, value: f64) -> Result<f64, BadReading> {
    let most = facts.max_credits + facts.launch_credits;
    let bad = |problem: String| BadReading { instance_type: facts.name.to_string(), problem };
    if !value.is_finite() {
        return Err(bad(format!("{value} is not a number of credits")));
    }
    if value < 0.0 {
        return Err(bad(format!("{value} is negative")));
    }
    if value > most * 1.001 + 1.0 {
        return Err(bad(format!("{value} is more than a {} can hold ({most})", facts.name)));
    }
    Ok(value.min(most))
}

/// The balance `age_s` seconds after a reading of `measured` credits, the
/// workload asking for `demand_vcpu` meanwhile (EC2's rules).
pub fn brought_forward(
    facts: &'static Burstable,
    mode: CreditMode,
    measured: f64,
    age_s: f64,
    demand_vcpu: f64,
) -> f64 {
    let mut account = CreditAccount::with_balance(facts, mode, measured);
    account.advance(age_s.max(0.0), demand_vcpu);
    account.balance()
}

/// The balance of an instance launched (or started) `uptime_s` ago in
/// `mode` whose workload has asked for `demand_vcpu` since (EC2's rules:
/// no earned credits at launch, T2 standard launch credits).
pub fn modeled(facts: &'static Burstable, mode: CreditMode, uptime_s: f64, demand_vcpu: f64) -> f64 {
    let mut account = CreditAccount::launch(facts, mode);
    account.advance(uptime_s.max(0.0), demand_vcpu);
    account.balance()
}

/// The latest of (epoch seconds, value) datapoints, if any.
pub fn latest(points: impl IntoIterator<Item = (f64, f64)>) -> Option<(f64, f64)> {
    points.into_iter().max_by(|a, b| a.0.total_cmp(&b.0))
}

fn epoch_s(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl AwsCloud {
    /// A burstable instance's CPU credit balance at `now`: its last
    /// `CPUCreditBalance` datapoint of the past [`LOOKBACK_S`] brought
    /// forward to `now`, or, with none, the balance modeled from its
    /// uptime (DescribeInstances' `LaunchTime`, which a start resets). In
    /// both, `demand_vcpu` is what its workload asks for meanwhile (its
    /// pods' CPU requests). Errors: the instance is not a burstable type
    /// of the catalog, a call fails, or the reading is junk (named).
    pub async fn credit_balance(
        &self,
        id: &str,
        now: SystemTime,
        demand_vcpu: f64,
    ) -> Result<CreditBalance, AwsError> {
        let inst = self.describe_instance(id).await?;
        let itype = inst.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default();
        let facts = burstable(&itype).ok_or_else(|| AwsError {
            action: "DescribeInstances",
            resource: id.into(),
            message: format!("instance type '{itype}' is not a burstable type costop knows"),
        })?;
        let mode = self.credit_mode(id).await?;
        if let Some((at, value)) = self.credit_metric(id, now).await? {
            let value = check_reading(facts, value).map_err(|e| AwsError {
                action: "GetMetricStatistics",
                resource: id.into(),
                message: e.to_string(),
            })?;
            let age_s = (epoch_s(now) - at).max(0.0);
            return Ok(CreditBalance {
                credits: brought_forward(facts, mode, value, age_s, demand_vcpu),
                mode,
                source: BalanceSource::Measured { age_s },
            });
        }
        let launched = inst
            .launch_time()
            .and_then(|t| t.to_millis().ok())
            .ok_or_else(|| missing("DescribeInstances", id, "LaunchTime"))?;
        let uptime_s = (epoch_s(now) * 1000.0 - launched as f64).max(0.0) / 1000.0;
        Ok(CreditBalance {
            credits: modeled(facts, mode, uptime_s, demand_vcpu),
            mode,
            source: BalanceSource::Modeled { uptime_s },
        })
    }

    /// The last `CPUCreditBalance` datapoint (epoch seconds, credits) of
    /// the [`LOOKBACK_S`] before `now` (GetMetricStatistics, Average per
    /// [`PERIOD_S`]), or none.
    async fn credit_metric(&self, id: &str, now: SystemTime) -> Result<Option<(f64, f64)>, AwsError> {
        const ACTION: &str = "GetMetricStatistics";
        let start = now.checked_sub(Duration::from_secs(LOOKBACK_S)).unwrap_or(UNIX_EPOCH);
        let out = self
            .cloudwatch
            .get_metric_statistics()
            .namespace(NAMESPACE)
            .metric_name(METRIC)
            .dimensions(cwt::Dimension::builder().name("InstanceId").value(id).build())
            .start_time(start.into())
            .end_time(now.into())
            .period(PERIOD_S)
            .statistics(cwt::Statistic::Average)
            .send()
            .await
            .map_err(aws_err(ACTION, id))?;
        let mut points = Vec::new();
        for p in out.datapoints() {
            let at = p.timestamp().ok_or_else(|| missing(ACTION, id, "Timestamp of a datapoint"))?;
            let value = p.average().ok_or_else(|| missing(ACTION, id, "Average of a datapoint"))?;
            points.push((at.as_secs_f64(), value));
        }
        Ok(latest(points))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t3_large() -> &'static Burstable {
        burstable("t3.large").unwrap()
    }

    #[test]
    fn junk_readings_are_refused_with_what_is_wrong() {
        let f = t3_large();
        assert_eq!(check_reading(f, 288.0), Ok(288.0));
        assert_eq!(check_reading(f, 0.0), Ok(0.0));
        for (v, says) in [(f64::NAN, "not a number"), (-1.0, "negative"), (1e6, "more than a t3.large")] {
            let e = check_reading(f, v).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("t3.large"), "{v}: {e}");
        }
    }

    #[test]
    fn a_reading_is_brought_forward_and_uptime_is_modeled_with_the_credit_rules() {
        let f = t3_large();
        // A t3.large earns 36 credits an hour (0.6 vCPU of baseline): idle
        // for an hour after launch, 36; with 2 vCPUs asked, nothing.
        assert!((modeled(f, CreditMode::Standard, 3600.0, 0.0) - 36.0).abs() < 1e-9);
        assert!(modeled(f, CreditMode::Standard, 3600.0, 2.0).abs() < 1e-9);
        // 100 credits read ten minutes ago, 2 vCPUs asked since: 100 − 10 ×
        // (2 − 0.6) = 86.
        assert!((brought_forward(f, CreditMode::Unlimited, 100.0, 600.0, 2.0) - 86.0).abs() < 1e-9);
        // Idle, it accrues up to the limit (864 for a t3.large).
        assert!((brought_forward(f, CreditMode::Standard, 850.0, 3600.0, 0.0) - 864.0).abs() < 1e-9);
        // A T2 starts with its launch credits in standard mode only.
        let t2 = burstable("t2.large").unwrap();
        assert_eq!(modeled(t2, CreditMode::Standard, 0.0, 0.0), t2.launch_credits);
        assert_eq!(modeled(t2, CreditMode::Unlimited, 0.0, 0.0), 0.0);
    }

    proptest::proptest! {
        /// Whatever CloudWatch answers, a reading is refused or is a
        /// balance the type can hold.
        #[test]
        fn any_reading_is_refused_or_a_balance_the_type_can_hold(
            bits in proptest::num::u64::ANY,
            t in proptest::sample::select(costop_facts::catalog::burstable_types()),
        ) {
            let value = f64::from_bits(bits);
            if let Ok(v) = check_reading(&t, value) {
                proptest::prop_assert!(v.is_finite() && v >= 0.0 && v <= t.max_credits + t.launch_credits);
            }
        }
    }

    #[test]
    fn the_latest_datapoint_wins_whatever_the_order() {
        assert_eq!(latest([(10.0, 1.0), (30.0, 3.0), (20.0, 2.0)]), Some((30.0, 3.0)));
        assert_eq!(latest(std::iter::empty()), None);
    }
}
