//! A burstable (T-family) node's CPU credits in the emulated cloud, with
//! EC2's rules (`costop_world::credits`, the simulator's too): the balance
//! accrues at the baseline and drains above it while the node runs, its
//! demand being the CPU requests of the pods running on it. A `standard`
//! node out of credits is held to its baseline, so its pods serve only
//! that share of the requests routed to them (the rest fail as throttled);
//! an `unlimited` node serves everything and is billed its surplus credits
//! (past 24 hours' earnings, at a switch to `standard`, and when it goes).
//!
//! A node registers with its type's RunInstances default option (T2
//! `standard` with launch credits; T3, T3a, T4g `unlimited`) and no earned
//! credits; `POST /admin/nodes/N/credits` switches its option (as
//! ModifyInstanceCreditSpecification does) and may set its balance (a
//! scenario's starting point, e.g. a node whose credits are spent).

use costop_facts::catalog::{Burstable, CreditMode};
use costop_world::credits::CreditAccount;
use serde::Deserialize;
use serde_json::{json, Value};

/// One node's credits and what they did last.
#[derive(Debug, Clone)]
pub(crate) struct Credits {
    account: CreditAccount,
    /// vCPUs its running pods ask for (as of the last tick).
    demand_vcpu: f64,
    /// Share of that demand it served at the last tick (1 = all).
    served_share: f64,
    /// Requests' share of service owed to the node's pods: a request is
    /// served when it reaches one, so `served_share` of them are.
    carry: f64,
    /// Surplus credits charged so far.
    charged_credits: f64,
    /// Whether the node has gone (its surplus settled).
    ended: bool,
}

impl Credits {
    /// A node just registered with the type's default option, no credits earned.
    pub(crate) fn launch(facts: &'static Burstable) -> Self {
        Self {
            account: CreditAccount::launch(facts, facts.default_mode),
            demand_vcpu: 0.0,
            served_share: 1.0,
            carry: 0.0,
            charged_credits: 0.0,
            ended: false,
        }
    }

    /// Run `dt_s` world seconds at `demand_vcpu`; returns the USD of
    /// surplus charged meanwhile.
    pub(crate) fn advance(&mut self, dt_s: f64, demand_vcpu: f64) -> f64 {
        if self.ended {
            return 0.0;
        }
        let step = self.account.advance(dt_s, demand_vcpu);
        self.demand_vcpu = demand_vcpu;
        self.served_share = self.account.served_share(demand_vcpu);
        self.charge(step.charged_credits)
    }

    /// The node stopped or was terminated: its surplus is charged (USD returned).
    pub(crate) fn end(&mut self) -> f64 {
        if self.ended {
            return 0.0;
        }
        self.ended = true;
        self.served_share = 1.0;
        let charged = self.account.stop();
        self.charge(charged)
    }

    fn charge(&mut self, credits: f64) -> f64 {
        self.charged_credits += credits;
        self.account.facts().surplus_usd(credits)
    }

    /// Whether a request that reached one of its pods is served: all are
    /// while it is not held to its baseline, else `served_share` of them,
    /// spread evenly.
    pub(crate) fn serves_request(&mut self) -> bool {
        if self.served_share >= 1.0 - 1e-9 {
            return true;
        }
        self.carry += self.served_share;
        if self.carry >= 1.0 {
            self.carry -= 1.0;
            true
        } else {
            false
        }
    }

    /// Apply a credits request; returns the USD of surplus it charged.
    pub(crate) fn apply(&mut self, req: &CreditsChange) -> f64 {
        let mut usd = 0.0;
        if let Some(balance) = req.balance {
            // A new balance settles the surplus first, as a stop does.
            let surplus = self.account.surplus();
            let facts = self.account.facts();
            let mode = self.account.mode();
            usd += self.charge(surplus);
            self.account = CreditAccount::with_balance(facts, mode, balance);
        }
        if let Some(mode) = req.mode {
            let charged = self.account.set_mode(mode);
            usd += self.charge(charged);
        }
        self.served_share = self.account.served_share(self.demand_vcpu);
        usd
    }

    /// What `GET /admin/cloud` shows of it.
    pub(crate) fn summary(&self) -> Value {
        let facts = self.account.facts();
        json!({
            "mode": self.account.mode().as_str(),
            "balance": self.account.balance(),
            "surplus": self.account.surplus(),
            "charged_credits": self.charged_credits,
            "surplus_usd": facts.surplus_usd(self.charged_credits),
            "demand_vcpu": self.demand_vcpu,
            "capacity_vcpu": self.account.capacity_vcpu(self.demand_vcpu),
            "served_share": self.served_share,
            "baseline_vcpu": facts.baseline_vcpu(),
        })
    }
}

/// `POST /admin/nodes/N/credits`, as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditsRequest {
    /// `standard` or `unlimited`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Earned credits to set (0 to the type's accrual limit).
    #[serde(default)]
    pub balance: Option<f64>,
}

/// A checked [`CreditsRequest`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CreditsChange {
    /// The option to switch to.
    pub mode: Option<CreditMode>,
    /// The balance to set.
    pub balance: Option<f64>,
}

/// Check a credits request for a node of type `facts`: a known option, a
/// balance that is a number between zero and the type's accrual limit, and
/// at least one of them.
pub fn check(req: &CreditsRequest, facts: &Burstable) -> Result<CreditsChange, String> {
    let mode = req.mode.as_deref().map(CreditMode::parse).transpose()?;
    if let Some(b) = req.balance {
        if !(b.is_finite() && (0.0..=facts.max_credits).contains(&b)) {
            return Err(format!(
                "balance {b} is not a number of credits between 0 and {} (a {}'s accrual limit)",
                facts.max_credits, facts.name
            ));
        }
    }
    if mode.is_none() && req.balance.is_none() {
        return Err("nothing to change: give `mode` (standard or unlimited) or `balance`".into());
    }
    Ok(CreditsChange { mode, balance: req.balance })
}

#[cfg(test)]
mod tests {
    use super::*;
    use costop_facts::catalog::burstable;

    #[test]
    fn a_spent_standard_node_serves_its_baseline_share_of_requests() {
        let facts = burstable("t3.large").unwrap();
        let mut c = Credits::launch(facts);
        assert_eq!(c.account.mode(), CreditMode::Unlimited, "T3's RunInstances default");
        let change = CreditsChange { mode: Some(CreditMode::Standard), balance: Some(0.0) };
        assert_eq!(c.apply(&change), 0.0);
        c.advance(60.0, 1.8);
        // 0.6 of 1.8 vCPUs: a third of the requests.
        assert!((c.served_share - 1.0 / 3.0).abs() < 1e-9);
        let served = (0..300).filter(|_| c.serves_request()).count();
        assert!((99..=100).contains(&served), "{served}");
        // Unlimited: all of them, and the surplus is billed at the switch back.
        c.apply(&CreditsChange { mode: Some(CreditMode::Unlimited), balance: None });
        assert!((0..100).all(|_| c.serves_request()));
        c.advance(600.0, 1.8);
        assert_eq!(c.served_share, 1.0);
        let usd = c.apply(&CreditsChange { mode: Some(CreditMode::Standard), balance: None });
        // 1.2 vCPUs above the baseline for 10 minutes: 12 credits, 0.01 USD.
        assert!((c.charged_credits - 12.0).abs() < 1e-9, "{}", c.charged_credits);
        assert!((usd - 0.01).abs() < 1e-12, "{usd}");
    }

    #[test]
    fn junk_requests_are_refused_with_what_is_wrong() {
        let facts = burstable("t3.large").unwrap();
        let req = |mode: Option<&str>, balance: Option<f64>| CreditsRequest {
            mode: mode.map(str::to_string),
            balance,
        };
        assert!(check(&req(Some("turbo"), None), facts).unwrap_err().contains("\"turbo\""));
        for b in [-1.0, f64::NAN, 865.0] {
            let e = check(&req(None, Some(b)), facts).unwrap_err();
            assert!(e.contains("between 0 and 864"), "{e}");
        }
        assert!(check(&req(None, None), facts).unwrap_err().contains("nothing to change"));
        assert_eq!(
            check(&req(Some("standard"), Some(10.0)), facts),
            Ok(CreditsChange { mode: Some(CreditMode::Standard), balance: Some(10.0) })
        );
    }
}
