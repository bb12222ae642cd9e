//! Disruption-budget arithmetic: a PodDisruptionBudget's status, and the
//! API server's answer to an eviction request.

/// An `IntOrString` amount of pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    /// A number of pods.
    Count(u32),
    /// A percentage of the expected pods, rounded up.
    Percent(u32),
}

impl Amount {
    /// The amount for `expected` pods (`GetScaledValueFromIntOrPercent`
    /// with rounding up, as the disruption controller calls it).
    pub fn of(self, expected: u32) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => (u64::from(p) * u64::from(expected)).div_ceil(100) as u32,
        }
    }
}

/// A budget's spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetSpec {
    /// `minAvailable`.
    pub min_available: Option<Amount>,
    /// `maxUnavailable` (wins when both are set).
    pub max_unavailable: Option<Amount>,
}

impl BudgetSpec {
    /// Whether the expected pod count is the scale of the pods'
    /// controllers (`maxUnavailable`, or a percentage `minAvailable`)
    /// rather than the number of pods selected (an integer `minAvailable`).
    pub fn counts_scale(&self) -> bool {
        self.max_unavailable.is_some() || matches!(self.min_available, Some(Amount::Percent(_)))
    }
}

/// A budget's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetStatus {
    /// Pods expected (see [`BudgetSpec::counts_scale`]).
    pub expected_pods: u32,
    /// Ready pods not being deleted.
    pub current_healthy: u32,
    /// Ready pods the budget requires.
    pub desired_healthy: u32,
    /// Evictions of Ready pods allowed now.
    pub disruptions_allowed: u32,
}

/// The status the disruption controller writes (`getExpectedPodCount` and
/// `updatePdbStatus`, kubernetes `pkg/controller/disruption`): desired is
/// `minAvailable`, or expected minus `maxUnavailable` (floored at 0), and
/// disruptions allowed is healthy minus desired (0 when negative or when no
/// pod is expected). `expected` is the scale or the pod count, as
/// [`BudgetSpec::counts_scale`] says.
pub fn status(spec: &BudgetSpec, expected: u32, healthy: u32) -> BudgetStatus {
    let desired = match (spec.max_unavailable, spec.min_available) {
        (Some(max), _) => expected.saturating_sub(max.of(expected)),
        (None, Some(min)) => min.of(expected),
        (None, None) => 0,
    };
    let allowed = if expected == 0 { 0 } else { healthy.saturating_sub(desired) };
    BudgetStatus {
        expected_pods: expected,
        current_healthy: healthy,
        desired_healthy: desired,
        disruptions_allowed: allowed,
    }
}

/// The pod an eviction is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictedPod {
    /// Pending, Succeeded or Failed, or already being deleted: budgets do
    /// not apply.
    Exempt,
    /// Running but not Ready.
    Unready,
    /// Ready.
    Ready,
}

/// Whether the API server lets the eviction through a budget with this
/// status (`pkg/registry/core/pod/storage/eviction.go`, default
/// `unhealthyPodEvictionPolicy: IfHealthyBudget`): an exempt pod always; an
/// unready one when the budget is met (`currentHealthy >= desiredHealthy
/// > 0`); otherwise only while disruptions are allowed (else 429).
pub fn may_evict(pod: EvictedPod, budget: &BudgetStatus) -> bool {
    match pod {
        EvictedPod::Exempt => true,
        EvictedPod::Unready
            if budget.desired_healthy > 0 && budget.current_healthy >= budget.desired_healthy =>
        {
            true
        }
        EvictedPod::Unready | EvictedPod::Ready => budget.disruptions_allowed > 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_available_and_max_unavailable() {
        let min = BudgetSpec { min_available: Some(Amount::Count(2)), ..BudgetSpec::default() };
        assert_eq!(status(&min, 3, 3).disruptions_allowed, 1);
        assert_eq!(status(&min, 3, 2).disruptions_allowed, 0);
        assert!(!min.counts_scale());
        let pct = BudgetSpec { min_available: Some(Amount::Percent(50)), ..BudgetSpec::default() };
        assert_eq!(status(&pct, 3, 3).desired_healthy, 2, "50 % of 3 rounds up");
        assert!(pct.counts_scale());
        let max = BudgetSpec { max_unavailable: Some(Amount::Count(1)), ..BudgetSpec::default() };
        assert_eq!(
            status(&max, 4, 4),
            BudgetStatus { expected_pods: 4, current_healthy: 4, desired_healthy: 3, disruptions_allowed: 1 }
        );
        let max_pct = BudgetSpec { max_unavailable: Some(Amount::Percent(10)), ..BudgetSpec::default() };
        assert_eq!(status(&max_pct, 15, 15).desired_healthy, 13, "10 % of 15 rounds up to 2");
        let all = BudgetSpec { max_unavailable: Some(Amount::Count(9)), ..BudgetSpec::default() };
        assert_eq!(status(&all, 4, 4).desired_healthy, 0);
        assert_eq!(status(&BudgetSpec::default(), 2, 2).disruptions_allowed, 2);
        assert_eq!(status(&min, 0, 0).disruptions_allowed, 0, "nothing expected, nothing allowed");
    }

    #[test]
    fn evictions_follow_if_healthy_budget() {
        let min = BudgetSpec { min_available: Some(Amount::Count(2)), ..BudgetSpec::default() };
        let met = status(&min, 3, 2);
        assert!(!may_evict(EvictedPod::Ready, &met));
        assert!(may_evict(EvictedPod::Unready, &met), "the budget is met: an unready pod may go");
        assert!(may_evict(EvictedPod::Exempt, &met));
        let broken = status(&min, 3, 1);
        assert!(!may_evict(EvictedPod::Unready, &broken), "an unmet budget keeps even unready pods");
        assert!(may_evict(EvictedPod::Exempt, &broken));
        assert!(may_evict(EvictedPod::Ready, &status(&min, 3, 3)));
    }
}
