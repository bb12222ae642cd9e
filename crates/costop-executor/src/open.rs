//! Responses that run now, and the steps of theirs that have not run yet.
//!
//! A reclaim of a whole pool brings many notices within a second. Each is
//! planned against the cluster as observed, where the placeholders, standbys
//! and capacity the earlier responses are about to take still look free. So
//! the planner sees the view with every open response's remaining claims
//! applied ([`costop_core::effects::apply_step`]): no two responses claim
//! the same room.

use costop_core::effects::apply_steps;
use costop_core::{ClusterView, Millis, NoticeKey, Plan, Step};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// A step done this recently may not show in a watch-backed view yet, so
/// its claim still counts (applying a claim twice changes nothing).
pub const CLAIM_SETTLES_MS: Millis = 5_000;

/// A launch shows in the view only as a Ready node, so its claim (room on
/// its way, `ClusterView::launching`) counts this long after the launch
/// call: the world's node is Ready 30 s after it (`node_ready_s`), and
/// EC2 instances commonly join and turn Ready within a minute (estimate).
pub const LAUNCH_SETTLES_MS: Millis = 60_000;

/// The Ready count a response's surge of one Deployment waits for (see
/// [`OpenResponses::surged_to`]).
#[derive(Debug, Clone, Default)]
pub struct SurgeTarget {
    /// The Deployment's replicas before the surge, plus the surge.
    pub target: usize,
    /// Whether a view has shown `target` replicas (or more) since.
    pub seen: Arc<std::sync::atomic::AtomicBool>,
}

impl SurgeTarget {
    /// A target of `target` replicas, not seen yet.
    pub fn new(target: usize) -> Self {
        Self { target, seen: Arc::default() }
    }

    /// The Ready count to wait for on a view that shows `shown` replicas:
    /// the target until a view has shown it once (a view lagging the
    /// surge shows the count before it), then the view's own count
    /// (another response's surge of the same Deployment may be lowered
    /// meanwhile, and the target would then never come).
    pub fn wanted(&self, shown: usize) -> usize {
        use std::sync::atomic::Ordering;
        if shown >= self.target {
            self.seen.store(true, Ordering::SeqCst);
        }
        if self.seen.load(Ordering::SeqCst) {
            0
        } else {
            self.target
        }
    }
}

/// Each step's state: not run (`None`), or when it was done.
type Progress = Vec<Option<Millis>>;

/// The open responses of this process, with how far each has run; and
/// the last view their claims were applied to (see [`OpenResponses::claimed`]).
#[derive(Debug, Default)]
pub struct OpenResponses(
    Mutex<BTreeMap<NoticeKey, (Arc<Plan>, Progress)>>,
    Mutex<Option<Claimed>>,
    Mutex<BTreeMap<NoticeKey, Vec<(String, SurgeTarget)>>>,
);

/// A view's nodes, pods and workloads with these claims applied.
#[derive(Debug)]
pub struct Claimed {
    /// The snapshot the claims were applied to: its node and pod lists by
    /// id ([`costop_core::listed::Listed::id`]; a copy would keep an old
    /// snapshot's 150,000 pods alive once a newer one is out), and its
    /// workloads.
    base: (u64, u64, Vec<costop_core::model::WorkloadView>),
    applied: BTreeSet<(NoticeKey, usize)>,
    view: ClusterView,
}

/// Whether a plan only retires its node (a rebalance recommendation's,
/// a move's) rather than answering its interruption.
fn retires_only(plan: &Plan) -> bool {
    plan.notice.kind == "rebalance-recommendation"
        || plan.notice.kind == costop_core::move_back::MOVE_BACK_KIND
}

impl OpenResponses {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NoticeKey, (Arc<Plan>, Progress)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A response starts (or resumes with `done` steps already finished
    /// long ago). The plan is shared with the response that runs it, not
    /// copied (a burst holds 1,700 plans of 30 pods each).
    pub fn opened(&self, plan: &Arc<Plan>, done: Vec<bool>) {
        let mut progress: Progress = done.into_iter().map(|d| d.then_some(0)).collect();
        progress.resize(plan.steps.len(), None);
        self.lock().insert(plan.notice.clone(), (Arc::clone(plan), progress));
    }

    /// Step `index` of a response was done at `at`.
    pub fn step_done(&self, key: &NoticeKey, index: usize, at: Millis) {
        if let Some(flag) = self.lock().get_mut(key).and_then(|(_, d)| d.get_mut(index)) {
            *flag = Some(at);
        }
    }

    /// A response has ended.
    pub fn closed(&self, key: &NoticeKey) {
        self.lock().remove(key);
        self.2.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// The response `key` raised these Deployments: each is to have its
    /// target Ready before its old pods go (see [`SurgeTarget::wanted`]).
    pub fn surged_to(&self, key: &NoticeKey, wanted: Vec<(String, SurgeTarget)>) {
        self.2.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default().extend(wanted);
    }

    /// What [`Self::surged_to`] recorded for `workload` under `key` (a
    /// target of 0 when nothing was: a response resumed after its surge
    /// ran elsewhere waits for the view's count).
    pub fn surge_target(&self, key: &NoticeKey, workload: &str) -> SurgeTarget {
        (self.2.lock().unwrap_or_else(|e| e.into_inner()).get(key))
            .and_then(|targets| targets.iter().find(|(w, _)| w == workload))
            .map_or_else(SurgeTarget::default, |(_, t)| t.clone())
    }

    /// How many responses are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no response is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether an open plan answers a notice of this kind label.
    pub fn any_of_kind(&self, kind: &str) -> bool {
        self.lock().keys().any(|k| k.kind == kind)
    }

    /// Whether a response to an interruption of `node` (a Spot notice, a
    /// scheduled event, a state change) is open: not a rebalance
    /// recommendation's or a move's, which only retire it.
    pub fn interrupted(&self, node: &str) -> bool {
        self.lock().values().any(|(plan, _)| plan.node == node && !retires_only(plan))
    }

    /// The nodes open responses are retiring (their [`Step::RetireNode`]
    /// has not run to its end yet).
    pub fn retiring(&self) -> Vec<String> {
        self.retiring_except(None)
    }

    /// The nodes that open responses other than `key`'s are retiring
    /// (their [`Step::RetireNode`] has not run to its end yet).
    pub fn retiring_besides(&self, key: &NoticeKey) -> Vec<String> {
        self.retiring_except(Some(key))
    }

    /// The nodes open responses other than `key`'s (all, when none) are
    /// retiring.
    fn retiring_except(&self, key: Option<&NoticeKey>) -> Vec<String> {
        (self.lock().iter())
            .filter(|(k, _)| key != Some(*k))
            .flat_map(|(_, (plan, done))| {
                plan.steps.iter().zip(done).filter_map(|(s, d)| match s {
                    Step::RetireNode { node, .. } if d.is_none() => Some(node.clone()),
                    _ => None,
                })
            })
            .collect()
    }

    /// Whether some open response still has a claim to make (a cordon,
    /// launch, wake, placeholder claim or eviction): the warm-pool keeper
    /// keeps still meanwhile. A response that only waits (to shift traffic
    /// back, restore headroom, retire a node later) does not count.
    pub fn busy(&self) -> bool {
        self.lock()
            .values()
            .any(|(plan, done)| plan.steps.iter().zip(done).any(|(s, d)| d.is_none() && is_claim(s)))
    }

    /// The view with every open response's claims that have not run yet,
    /// or ran too recently to show in the view, counted as done (the view
    /// itself when there are none).
    ///
    /// In a burst every notice is planned with the claims of hundreds of
    /// open responses applied, on the same snapshot: the snapshot with the
    /// claims applied so far is kept, and only the claims opened since are
    /// applied to it (applying the evictions afresh copied all 150,000 pods
    /// for each notice). A claim that settles while the snapshot stays
    /// keeps counting until the next snapshot, which shows it.
    pub fn claimed<'v>(&self, view: &'v ClusterView, now: Millis) -> std::borrow::Cow<'v, ClusterView> {
        let open = self.lock();
        let unseen = |s: &Step, d: &Option<Millis>| {
            let settles =
                if matches!(s, Step::RestoreCapacity { .. }) { LAUNCH_SETTLES_MS } else { CLAIM_SETTLES_MS };
            d.is_none_or(|at| now < at.saturating_add(settles))
        };
        let pending: Vec<((NoticeKey, usize), &Step)> = open
            .iter()
            .flat_map(|(key, (plan, done))| {
                plan.steps
                    .iter()
                    .zip(done)
                    .enumerate()
                    .filter(|(_, (s, d))| unseen(s, d) && is_claim(s))
                    .map(move |(i, (s, _))| ((key.clone(), i), s))
            })
            .collect();
        if pending.is_empty() {
            // Nothing to claim: the copy kept for a burst goes too.
            *self.1.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return std::borrow::Cow::Borrowed(view);
        }
        let mut cache = self.1.lock().unwrap_or_else(|e| e.into_inner());
        let same_base = cache.as_ref().is_some_and(|c| {
            c.base.0 == view.nodes.id() && c.base.1 == view.pods.id() && c.base.2 == view.workloads
        });
        if !same_base {
            let base = ClusterView {
                nodes: view.nodes.clone(),
                pods: view.pods.clone(),
                workloads: view.workloads.clone(),
                ..ClusterView::default()
            };
            let id = (view.nodes.id(), view.pods.id(), view.workloads.clone());
            *cache = Some(Claimed { view: base, base: id, applied: BTreeSet::new() });
        }
        let claimed = cache.as_mut().expect("set above");
        let new: Vec<&Step> =
            pending.iter().filter(|(id, _)| !claimed.applied.contains(id)).map(|(_, s)| *s).collect();
        apply_steps(&mut claimed.view, new);
        claimed.applied.extend(pending.iter().map(|(id, _)| id.clone()));
        // The caller's own pools, requests and headroom, with the cached
        // nodes, pods and workloads; capacity requests as every pending
        // claim makes them.
        let mut out = view.clone();
        out.nodes = claimed.view.nodes.clone();
        out.pods = claimed.view.pods.clone();
        out.workloads = claimed.view.workloads.clone();
        apply_steps(
            &mut out,
            pending.iter().map(|(_, s)| *s).filter(|s| matches!(s, Step::RestoreCapacity { .. })),
        );
        std::borrow::Cow::Owned(out)
    }
}

impl OpenResponses {
    /// Response `key` shifts its workloads back from their functions at
    /// `now`: marks its shift-back as done and returns the workloads
    /// another open response has bridged and not shifted back yet, which
    /// must stay bridged (the last response to finish shifts them back).
    /// One lock for both, so two responses finishing together cannot each
    /// leave a workload to the other.
    pub fn shift_back(&self, key: &NoticeKey, now: Millis) -> BTreeSet<String> {
        let mut open = self.lock();
        if let Some((plan, done)) = open.get_mut(key) {
            let i = plan.steps.iter().position(|s| matches!(s, Step::UnbridgeTraffic { .. }));
            if let Some(flag) = i.and_then(|i| done.get_mut(i)) {
                *flag = Some(now);
            }
        }
        Self::bridged_by_others_in(&open, key)
    }

    /// Workloads another open response has bridged to their functions and
    /// not shifted back yet.
    pub fn bridged_by_others(&self, key: &NoticeKey) -> BTreeSet<String> {
        Self::bridged_by_others_in(&self.lock(), key)
    }

    fn bridged_by_others_in(
        open: &BTreeMap<NoticeKey, (Arc<Plan>, Progress)>,
        key: &NoticeKey,
    ) -> BTreeSet<String> {
        let mut bridged = BTreeSet::new();
        for (_, (plan, done)) in open.iter().filter(|(k, _)| *k != key) {
            let ran = |want: fn(&Step) -> Option<&Vec<String>>| -> BTreeSet<String> {
                plan.steps
                    .iter()
                    .zip(done)
                    .filter(|(_, d)| d.is_some())
                    .filter_map(|(s, _)| want(s))
                    .flatten()
                    .cloned()
                    .collect()
            };
            let on = ran(|s| match s {
                Step::BridgeTraffic { workloads } => Some(workloads),
                _ => None,
            });
            let off = ran(|s| match s {
                Step::UnbridgeTraffic { workloads } => Some(workloads),
                _ => None,
            });
            bridged.extend(on.difference(&off).cloned());
        }
        bridged
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
            }]
            .into(),
            ..ClusterView::default()
        }
    }

    #[test]
    fn a_claim_not_yet_run_or_just_run_is_taken_out_of_the_view_and_a_settled_one_is_not_applied_again() {
        let open = OpenResponses::default();
        let plan = Arc::new(plan_claiming("i-1", "ph-1"));
        open.opened(&plan, vec![]);
        assert!(open.claimed(&view_with_placeholder("ph-1"), 0).pods.is_empty());
        open.step_done(&plan.notice, 0, 1_000);
        // Just done: the view may not show it yet, so it still counts.
        assert!(open.claimed(&view_with_placeholder("ph-1"), 2_000).pods.is_empty());
        assert_eq!(open.claimed(&view_with_placeholder("ph-1"), 1_000 + CLAIM_SETTLES_MS).pods.len(), 1);
        open.closed(&plan.notice);
        assert!(open.is_empty());
    }

    /// A launch shows only as a Ready node, so it counts as room on its way
    /// for about a minute after the launch call, not the 5 s of other claims.
    /// A surge's target holds until a view shows it once; then the view's
    /// own count does (another surge of the Deployment may be lowered).
    #[test]
    fn a_surge_target_holds_until_a_view_shows_it() {
        let t = SurgeTarget::new(12);
        assert_eq!(t.wanted(11), 12, "a view lagging the surge");
        assert_eq!(t.wanted(12), 0, "shown: the view's count rules");
        assert_eq!(t.wanted(11), 0, "another response's surge lowered: not waited for");
        assert_eq!(SurgeTarget::default().wanted(3), 0, "nothing recorded");
    }

    #[test]
    fn a_launch_counts_as_room_on_its_way_until_its_node_is_likely_ready() {
        let open = OpenResponses::default();
        let mut plan = plan_claiming("i-1", "ph-1");
        let pools = vec![(costop_core::PoolId::new("m5.xlarge", "us-east-1a"), 1)];
        plan.steps = vec![Step::RestoreCapacity { key: "restore:i-1".into(), pools: pools.clone() }];
        let plan = Arc::new(plan);
        open.opened(&plan, vec![]);
        open.step_done(&plan.notice, 0, 1_000);
        let view = ClusterView::default();
        let launching = |now| open.claimed(&view, now).launching.get("restore:i-1").cloned();
        assert_eq!(launching(1_000 + CLAIM_SETTLES_MS), Some(pools));
        assert_eq!(launching(1_000 + LAUNCH_SETTLES_MS), None);
    }

    #[test]
    fn on_one_snapshot_the_claims_opened_since_the_last_plan_are_added_to_those_applied() {
        let open = OpenResponses::default();
        let mut snapshot = view_with_placeholder("ph-1");
        let mut second = (*snapshot.pods[0]).clone();
        second.name = "ph-2".into();
        snapshot.pods.push(second.into());
        snapshot.pools = vec![];
        open.opened(&Arc::new(plan_claiming("i-1", "ph-1")), vec![]);
        let names = |v: &ClusterView| v.pods.iter().map(|p| p.name.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&open.claimed(&snapshot, 0)), vec!["ph-2"]);
        open.opened(&Arc::new(plan_claiming("i-2", "ph-2")), vec![]);
        let mut asked = snapshot.clone();
        asked.headroom_target = 7;
        let claimed = open.claimed(&asked, 0);
        assert!(claimed.pods.is_empty(), "both claims: {:?}", names(&claimed));
        assert_eq!(claimed.headroom_target, 7, "the caller's own fields");
        assert_eq!(names(&snapshot), vec!["ph-1", "ph-2"], "the snapshot is untouched");
        // A new snapshot starts again from it.
        let fresh = view_with_placeholder("ph-3");
        assert_eq!(names(&open.claimed(&fresh, 0)), vec!["ph-3"]);
    }

    #[test]
    fn a_workload_another_response_bridged_stays_bridged_until_that_one_shifts_it_back() {
        let bridging = |instance: &str, workloads: &[&str]| {
            let mut plan = plan_claiming(instance, "ph");
            let w: Vec<String> = workloads.iter().map(|w| w.to_string()).collect();
            plan.steps =
                vec![Step::BridgeTraffic { workloads: w.clone() }, Step::UnbridgeTraffic { workloads: w }];
            plan
        };
        let open = OpenResponses::default();
        let (a, b) = (Arc::new(bridging("i-1", &["web", "api"])), Arc::new(bridging("i-2", &["web"])));
        open.opened(&a, vec![]);
        open.opened(&b, vec![]);
        // b has not bridged yet: a may shift everything back.
        assert!(open.bridged_by_others(&a.notice).is_empty());
        open.step_done(&b.notice, 0, 1_000);
        assert_eq!(open.bridged_by_others(&a.notice), BTreeSet::from(["web".to_string()]));
        assert!(open.bridged_by_others(&b.notice).is_empty(), "a has not bridged yet");
        // Both shift back together: a first keeps web for b, then b (seeing
        // a's shift-back done) takes web back; nothing is left on.
        assert_eq!(open.shift_back(&a.notice, 2_000), BTreeSet::from(["web".to_string()]));
        open.step_done(&a.notice, 0, 1_500);
        assert!(open.shift_back(&b.notice, 2_000).is_empty());
        assert!(open.bridged_by_others(&a.notice).is_empty());
    }
}
