//! The CPU credits of a burstable (T-family) node, as EC2 keeps them: a
//! balance that accrues at the baseline and drains above it. In `standard`
//! mode the node is held to its baseline once its credits run out; in
//! `unlimited` mode it spends surplus credits, which later earnings pay
//! back and which are charged when they exceed 24 hours' earnings, when
//! the node stops or when it is switched to `standard`.
//!
//! Source: Amazon EC2 User Guide, "Key concepts and definitions for
//! burstable performance instances" (earned, accrued, spent and surplus
//! credits; the accrual limit), "Standard mode concepts" (launch credits
//! are spent first and do not count towards the limit) and "Unlimited mode
//! concepts" (paying surplus back; when surplus is charged; what a switch
//! of mode keeps). The figures are in `costop_facts::catalog::Burstable`.
//!
//! Model choices, where EC2 says more than this models:
//! - At zero credits a `standard` node drops to its baseline at once; EC2
//!   lowers it "gradually", so real nodes serve a little more for a while.
//! - Surplus beyond 24 hours' earnings is charged as it is spent; EC2
//!   charges it at the end of the hour.
//! - While the node runs at or under its baseline, launch credits stay
//!   untouched and the whole net gain goes to the earned balance.
//! - The account-wide limit on T2 launch credits (100 starts a day) is
//!   not modelled.
//!
//! Pure: time comes in as durations, CPU demand as vCPUs. Nothing here
//! depends on a clock, the simulator or the emulator.

use costop_facts::catalog::{Burstable, CreditMode};

/// Below this many credits a balance counts as empty (floating-point dust).
const EMPTY: f64 = 1e-9;

/// What one [`CreditAccount::advance`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// vCPU-seconds of CPU the node gave its workload over the step (less
    /// than asked for only in `standard` mode once the credits ran out).
    pub served_vcpu_s: f64,
    /// Surplus credits charged during the step.
    pub charged_credits: f64,
}

/// One burstable node's credits.
#[derive(Debug, Clone, PartialEq)]
pub struct CreditAccount {
    facts: &'static Burstable,
    mode: CreditMode,
    /// Earned credits accrued, at most `facts.max_credits`.
    balance: f64,
    /// T2 standard launch credits not yet spent (outside the limit).
    launch: f64,
    /// Surplus credits spent and neither paid back nor charged yet.
    surplus: f64,
    /// Surplus credits charged since launch.
    charged: f64,
}

impl CreditAccount {
    /// A node just launched in `mode`: no earned credits yet; launch
    /// credits where the type gets them (T2 in `standard` mode).
    pub fn launch(facts: &'static Burstable, mode: CreditMode) -> Self {
        let launch = if mode == CreditMode::Standard { facts.launch_credits } else { 0.0 };
        Self { facts, mode, balance: 0.0, launch, surplus: 0.0, charged: 0.0 }
    }

    /// A node with `balance` earned credits (as `CPUCreditBalance` reads,
    /// or as modelled from its uptime), clamped to the type's limit.
    pub fn with_balance(facts: &'static Burstable, mode: CreditMode, balance: f64) -> Self {
        let balance = balance.clamp(0.0, facts.max_credits);
        Self { facts, mode, balance, launch: 0.0, surplus: 0.0, charged: 0.0 }
    }

    /// The type's credit facts.
    pub fn facts(&self) -> &'static Burstable {
        self.facts
    }

    /// The credit option it runs with now.
    pub fn mode(&self) -> CreditMode {
        self.mode
    }

    /// Credits it can spend before it throttles (`standard`) or spends
    /// surplus (`unlimited`): earned plus launch credits.
    pub fn balance(&self) -> f64 {
        self.balance + self.launch
    }

    /// Surplus credits spent and not yet paid back or charged
    /// (`CPUSurplusCreditBalance`).
    pub fn surplus(&self) -> f64 {
        self.surplus
    }

    /// Surplus credits charged since launch (`CPUSurplusCreditsCharged`, summed).
    pub fn charged(&self) -> f64 {
        self.charged
    }

    /// The vCPUs it can give a workload asking for `demand_vcpu` now: all
    /// of it (up to its vCPUs), or only its baseline when it is in
    /// `standard` mode with no credits left.
    pub fn capacity_vcpu(&self, demand_vcpu: f64) -> f64 {
        let demand = demand_vcpu.clamp(0.0, f64::from(self.facts.vcpu));
        if self.mode == CreditMode::Standard && self.balance() <= EMPTY {
            demand.min(self.facts.baseline_vcpu())
        } else {
            demand
        }
    }

    /// The share of `demand_vcpu` it serves now (1 when nothing is asked):
    /// pods on a throttled node serve this share of the requests they
    /// serve at full speed.
    pub fn served_share(&self, demand_vcpu: f64) -> f64 {
        let demand = demand_vcpu.clamp(0.0, f64::from(self.facts.vcpu));
        if demand <= 0.0 {
            1.0
        } else {
            self.capacity_vcpu(demand) / demand
        }
    }

    /// Seconds until a `standard` node asked for `demand_vcpu` is held to
    /// its baseline (0 when it already is); `None` when it never will be
    /// at this demand (at or under the baseline, or `unlimited`).
    pub fn seconds_until_throttled(&self, demand_vcpu: f64) -> Option<f64> {
        let drain = self.drain_per_s(demand_vcpu);
        let left = if self.balance() <= EMPTY { 0.0 } else { self.balance() };
        (self.mode == CreditMode::Standard && drain > 0.0).then(|| left / drain)
    }

    /// Credits per second spent beyond what is earned at this demand
    /// (negative: accrued).
    fn drain_per_s(&self, demand_vcpu: f64) -> f64 {
        let demand = demand_vcpu.clamp(0.0, f64::from(self.facts.vcpu));
        // One credit is one vCPU-minute.
        demand / 60.0 - self.facts.credits_per_hour / 3600.0
    }

    /// Run for `dt_s` seconds with the workload asking for `demand_vcpu`
    /// (clamped to the node's vCPUs) throughout.
    pub fn advance(&mut self, dt_s: f64, demand_vcpu: f64) -> Step {
        let dt = dt_s.max(0.0);
        let demand = demand_vcpu.clamp(0.0, f64::from(self.facts.vcpu));
        let drain = self.drain_per_s(demand);
        if drain <= 0.0 {
            // At or under the baseline: earnings pay back surplus first, then accrue.
            let mut gain = -drain * dt;
            let paid = gain.min(self.surplus);
            self.surplus -= paid;
            gain -= paid;
            self.balance = (self.balance + gain).min(self.facts.max_credits);
            return Step { served_vcpu_s: demand * dt, charged_credits: 0.0 };
        }
        let need = drain * dt;
        let from_launch = need.min(self.launch);
        self.launch -= from_launch;
        let from_balance = (need - from_launch).min(self.balance);
        self.balance -= from_balance;
        let short = need - from_launch - from_balance;
        if short <= EMPTY {
            return Step { served_vcpu_s: demand * dt, charged_credits: 0.0 };
        }
        self.launch = 0.0;
        self.balance = 0.0;
        // The credits lasted `dt - short / drain` seconds of the step.
        let after = short / drain;
        match self.mode {
            CreditMode::Standard => Step {
                served_vcpu_s: demand * (dt - after) + self.facts.baseline_vcpu() * after,
                charged_credits: 0.0,
            },
            CreditMode::Unlimited => {
                self.surplus += short;
                let over = (self.surplus - self.facts.max_credits).max(0.0);
                self.surplus -= over;
                self.charged += over;
                Step { served_vcpu_s: demand * dt, charged_credits: over }
            }
        }
    }

    /// Switch the credit option (`ModifyInstanceCreditSpecification`):
    /// to `standard`, the surplus is charged at once; to `unlimited`,
    /// launch credits are dropped. Earned credits carry over. Returns the
    /// credits charged.
    pub fn set_mode(&mut self, mode: CreditMode) -> f64 {
        if mode == self.mode {
            return 0.0;
        }
        self.mode = mode;
        match mode {
            CreditMode::Standard => self.charge_surplus(),
            CreditMode::Unlimited => {
                self.launch = 0.0;
                0.0
            }
        }
    }

    /// The node stops or is terminated: its surplus is charged (returned)
    /// and a T2 loses its credits (T3, T3a and T4g keep theirs for a while,
    /// see [`CreditAccount::start`]).
    pub fn stop(&mut self) -> f64 {
        if self.facts.credits_kept_stopped_s <= 0.0 {
            self.balance = 0.0;
            self.launch = 0.0;
        }
        self.charge_surplus()
    }

    /// The node starts again after `stopped_s` seconds stopped: earned
    /// credits kept longer than the type keeps them are gone, and a
    /// `standard` T2 gets launch credits again.
    pub fn start(&mut self, stopped_s: f64) {
        if stopped_s > self.facts.credits_kept_stopped_s {
            self.balance = 0.0;
        }
        if self.mode == CreditMode::Standard {
            self.launch = self.facts.launch_credits;
        }
    }

    fn charge_surplus(&mut self) -> f64 {
        let charged = std::mem::take(&mut self.surplus);
        self.charged += charged;
        charged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use costop_facts::catalog::burstable;

    fn t3_large() -> &'static Burstable {
        burstable("t3.large").unwrap()
    }

    const HOUR: f64 = 3600.0;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    /// The acceptance: in standard mode with no credits a node
    /// serves its baseline only; in unlimited mode it serves everything and
    /// the surplus is billed.
    #[test]
    fn at_zero_credits_standard_serves_the_baseline_and_unlimited_bills_the_surplus() {
        let f = t3_large();
        // Pods asking for both vCPUs (2,000m of requests, busy).
        let mut standard = CreditAccount::with_balance(f, CreditMode::Standard, 0.0);
        assert!(close(standard.capacity_vcpu(2.0), 0.6), "30 % of 2 vCPUs");
        assert!(close(standard.served_share(2.0), 0.3));
        // Three pods that each serve 100 requests/s at full speed serve 90
        // on it: a workload sending 200 requests/s sees 110 fail.
        let served_rps = 3.0 * 100.0 * standard.served_share(2.0);
        assert!(close(served_rps, 90.0) && close(200.0 - served_rps, 110.0));
        let s = standard.advance(HOUR, 2.0);
        assert!(close(s.served_vcpu_s, 0.6 * HOUR), "{s:?}");
        assert_eq!(s.charged_credits, 0.0);
        assert!(close(standard.stop(), 0.0), "standard mode never bills surplus");

        let mut unlimited = CreditAccount::with_balance(f, CreditMode::Unlimited, 0.0);
        assert!(close(unlimited.served_share(2.0), 1.0));
        let s = unlimited.advance(HOUR, 2.0);
        assert!(close(s.served_vcpu_s, 2.0 * HOUR), "{s:?}");
        // 2 vCPUs for an hour spend 120 credits, 36 are earned: 84 surplus,
        // owed (not charged while under 24 h of earnings), charged at stop.
        assert!(close(unlimited.surplus(), 84.0));
        assert_eq!(s.charged_credits, 0.0);
        let charged = unlimited.stop();
        assert!(close(charged, 84.0));
        // 84 credits are 1.4 vCPU-hours: 0.07 USD at 0.05 USD a vCPU-hour.
        assert!(close(f.surplus_usd(charged), 0.07));
    }

    #[test]
    fn credits_accrue_at_the_baseline_up_to_the_limit_and_carry_a_burst() {
        let f = t3_large();
        let mut a = CreditAccount::launch(f, CreditMode::Standard);
        assert_eq!(a.balance(), 0.0, "T3 gets no launch credits");
        // Idle for an hour: 36 credits; for two days: capped at 864.
        a.advance(HOUR, 0.0);
        assert!(close(a.balance(), 36.0));
        a.advance(48.0 * HOUR, 0.0);
        assert!(close(a.balance(), 864.0));
        // At the baseline (0.6 vCPU) nothing changes.
        a.advance(HOUR, 0.6);
        assert!(close(a.balance(), 864.0));
        // Both vCPUs drain 84 credits an hour: full speed for 864 / 84 h.
        let until = a.seconds_until_throttled(2.0).unwrap();
        assert!(close(until, 864.0 / 84.0 * HOUR), "{until}");
        let s = a.advance(until, 2.0);
        assert!(close(s.served_vcpu_s, 2.0 * until));
        assert!(a.balance() < 1e-6 && close(a.served_share(2.0), 0.3));
        assert_eq!(a.seconds_until_throttled(2.0), Some(0.0));
        assert_eq!(a.seconds_until_throttled(0.5), None, "under the baseline it accrues");
        // A step that crosses zero: full speed for the credits, baseline after.
        let mut b = CreditAccount::with_balance(f, CreditMode::Standard, 42.0);
        let s = b.advance(HOUR, 2.0);
        let full = 42.0 / 84.0 * HOUR;
        assert!(close(s.served_vcpu_s, 2.0 * full + 0.6 * (HOUR - full)), "{s:?}");
        // Demand beyond the node's vCPUs is what the vCPUs give.
        assert!(close(b.capacity_vcpu(5.0), 0.6));
        assert!(close(CreditAccount::with_balance(f, CreditMode::Standard, 10.0).capacity_vcpu(5.0), 2.0));
    }

    #[test]
    fn unlimited_surplus_is_paid_back_by_later_earnings_or_charged_beyond_a_day_of_them() {
        let f = t3_large();
        let mut a = CreditAccount::with_balance(f, CreditMode::Unlimited, 0.0);
        // An hour on both vCPUs: 84 surplus.
        a.advance(HOUR, 2.0);
        // Idle for an hour earns 36: they pay back surplus before accruing.
        a.advance(HOUR, 0.0);
        assert!(close(a.surplus(), 48.0) && a.balance() == 0.0);
        a.advance(2.0 * HOUR, 0.0);
        assert!(a.surplus() == 0.0 && close(a.balance(), 24.0));
        assert_eq!(a.stop(), 0.0, "paid back: nothing to bill");
        // Bursting for a day: surplus beyond 864 (24 h of earnings) is charged as it goes.
        let mut b = CreditAccount::with_balance(f, CreditMode::Unlimited, 0.0);
        let s = b.advance(24.0 * HOUR, 2.0);
        assert!(close(s.charged_credits, 24.0 * 84.0 - 864.0), "{s:?}");
        assert!(close(b.surplus(), 864.0));
        // Switching to standard charges the rest at once; earned credits carry over.
        assert!(close(b.set_mode(CreditMode::Standard), 864.0));
        assert!(close(b.charged(), 24.0 * 84.0));
        assert_eq!(b.mode(), CreditMode::Standard);
        assert!(close(b.served_share(2.0), 0.3));
        assert_eq!(b.set_mode(CreditMode::Standard), 0.0);
    }

    #[test]
    fn t2_launch_credits_are_spent_first_and_lost_at_stop_or_a_switch() {
        let f = burstable("t2.medium").unwrap();
        let mut a = CreditAccount::launch(f, CreditMode::Standard);
        assert!(close(a.balance(), 60.0), "30 per vCPU");
        // Idle a day: 576 earned on top of the 60, over the limit.
        a.advance(24.0 * HOUR, 0.0);
        assert!(close(a.balance(), 636.0));
        // Bursting spends launch credits first: afterwards the balance cannot exceed 576.
        // An hour on both vCPUs: 120 spent, 24 earned, 96 drained.
        a.advance(HOUR, 2.0);
        assert!(close(a.balance(), 540.0));
        a.advance(48.0 * HOUR, 0.0);
        assert!(close(a.balance(), 576.0));
        // A stop loses a T2's credits; a start in standard mode gives launch credits again.
        a.stop();
        assert_eq!(a.balance(), 0.0);
        a.start(60.0);
        assert!(close(a.balance(), 60.0));
        // Switching to unlimited drops them.
        a.set_mode(CreditMode::Unlimited);
        assert_eq!(a.balance(), 0.0);
        assert_eq!(CreditAccount::launch(f, CreditMode::Unlimited).balance(), 0.0);
        // A T3 keeps earned credits over a stop of up to seven days.
        let mut t3 = CreditAccount::with_balance(t3_large(), CreditMode::Standard, 500.0);
        t3.stop();
        t3.start(6.0 * 24.0 * HOUR);
        assert!(close(t3.balance(), 500.0));
        t3.stop();
        t3.start(8.0 * 24.0 * HOUR);
        assert_eq!(t3.balance(), 0.0);
    }
}
