//! Responses that run now, and the steps of theirs that have not run yet.
//!
//! A reclaim of a whole pool brings many notices within a second. Each is
//! planned against the cluster as observed, where the placeholders, standbys
//! and capacity the earlier responses are about to take still look free. So
//! the planner sees the view with every open response's remaining claims
//! applied ([`costop_core::effects::apply_step`]): no two responses claim
//! the same room.

use costop_core::effects::apply_step;
use costop_core::{ClusterView, NoticeKey, Plan, Step};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The open responses of this process, with how far each has run.
#[derive(Debug, Default)]
pub struct OpenResponses(Mutex<BTreeMap<NoticeKey, (Plan, Vec<bool>)>>);

impl OpenResponses {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NoticeKey, (Plan, Vec<bool>)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A response starts (or resumes with `done` steps already finished).
    pub fn opened(&self, plan: &Plan, done: Vec<bool>) {
        let mut done = done;
        done.resize(plan.steps.len(), false);
        self.lock().insert(plan.notice.clone(), (plan.clone(), done));
    }

    /// Step `index` of a response has run.
    pub fn step_done(&self, key: &NoticeKey, index: usize) {
        if let Some(flag) = self.lock().get_mut(key).and_then(|(_, d)| d.get_mut(index)) {
            *flag = true;
        }
    }

    /// A response has ended.
    pub fn closed(&self, key: &NoticeKey) {
        self.lock().remove(key);
    }

    /// How many responses are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no response is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether some open response still has a claim to make (a cordon,
    /// launch, wake, placeholder claim or eviction): the warm-pool keeper
    /// keeps still meanwhile. A response that only waits (to shift traffic
    /// back, restore headroom, retire a node later) does not count.
    pub fn busy(&self) -> bool {
        self.lock().values().any(|(plan, done)| plan.steps.iter().zip(done).any(|(s, d)| !*d && is_claim(s)))
    }

    /// The view with every open response's claims that have not run yet
    /// counted as done.
    pub fn claimed(&self, view: &ClusterView) -> ClusterView {
        let mut view = view.clone();
        for (plan, done) in self.lock().values() {
            for (step, _) in plan.steps.iter().zip(done).filter(|(_, d)| !**d) {
                if is_claim(step) {
                    apply_step(&mut view, step);
                }
            }
        }
        view
    }
}

/// Steps that take something another response could also want.
fn is_claim(step: &Step) -> bool {
    matches!(
        step,
        Step::TaintAndCordon { .. }
            | Step::DeregisterTargets { .. }
            | Step::ClaimHeadroom { .. }
            | Step::WakeStandby { .. }
            | Step::Evict { .. }
            | Step::RestoreCapacity { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use costop_core::notice::InstanceAction;
    use costop_core::{Notice, NoticeKind, NoticeSource, PodView, Resources};

    fn plan_claiming(instance: &str, placeholder: &str) -> Plan {
        let notice = Notice {
            instance_id: instance.into(),
            kind: NoticeKind::SpotInterruption { action: InstanceAction::Terminate, effective_at: 120_000 },
            received_at: 0,
            source: NoticeSource::Agent,
        };
        Plan {
            notice: notice.key(),
            node: "n".into(),
            deadline: Some(120_000),
            steps: vec![Step::ClaimHeadroom { placeholders: vec![placeholder.into()] }],
            unevictable: vec![],
        }
    }

    fn view_with_placeholder(name: &str) -> ClusterView {
        ClusterView {
            pods: vec![PodView {
                name: name.into(),
                workload: None,
                node: Some("a".into()),
                requests: Resources::new(1000, 1024),
                priority: -10,
                ready: true,
                placeholder: true,
                daemon: false,
                volumes: vec![],
            }],
            ..ClusterView::default()
        }
    }

    #[test]
    fn a_claim_not_yet_run_is_taken_out_of_the_view_and_a_run_one_is_not_applied_again() {
        let open = OpenResponses::default();
        let plan = plan_claiming("i-1", "ph-1");
        open.opened(&plan, vec![]);
        assert!(open.claimed(&view_with_placeholder("ph-1")).pods.is_empty());
        open.step_done(&plan.notice, 0);
        assert_eq!(open.claimed(&view_with_placeholder("ph-1")).pods.len(), 1);
        open.closed(&plan.notice);
        assert!(open.is_empty());
    }
}
