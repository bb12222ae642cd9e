//! Runs a plan step by step, recording each step before and after it runs.
//! A step recorded as done is never run again (a restarted server resumes
//! after it); a step that was running when the server died is run again,
//! which is safe because every step is idempotent.

use crate::evictions::{evict_pods, EvictionTally};
use crate::observe::ResponseObserver;
use crate::open::{OpenResponses, SurgeTarget};
use costop_core::model::INTERRUPTION_TAINT;
use costop_core::move_back::Move;
use costop_core::ports::{Clock, CloudPort, ClusterPort, StorePort};
use costop_core::time::Millis;
use costop_core::{respond, ClusterView, Notice, NoticeKey, Plan, PlanError, Policy, Step};
use futures::future::join_all;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Time between rounds of moving capacity back to cheap pools (see
/// [`Executor::move_once`]): prices and pools' launchability change over
/// minutes, and each move takes [`costop_core::move_back::MOVE_SETTLE`].
pub const MOVE_ROUND: Duration = Duration::from_secs(60);

/// How long a node whose move ended without it (no room for its pods in
/// time, or its drain refused and the node given back) is left out of
/// moves: an hour, so a move that cannot finish is not launched and
/// drained again every round.
pub const MOVE_REST: Millis = 60 * 60 * 1000;

/// The executor's wait rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waits {
    /// How long waits after the deadline may run (restoring headroom,
    /// shifting traffic back) before the step gives up and says so. Default 10 min.
    pub after_deadline: Millis,
    /// How long before the deadline evictions stop being retried: a pod
    /// not evicted by then is deleted with its grace period, whatever its
    /// budget says, to start elsewhere before its node goes
    /// ([`costop_core::Policy::delete_doomed_before_deadline_s`]). 0: never;
    /// evictions are retried until the deadline and such pods stay.
    /// Default 45 s.
    pub delete_doomed_before: Millis,
}

impl Waits {
    /// The wait rules a policy asks for.
    pub fn from_policy(policy: &Policy) -> Self {
        Self {
            after_deadline: 10 * 60 * 1000,
            delete_doomed_before: u64::from(policy.delete_doomed_before_deadline_s) * 1000,
        }
    }
}

impl Default for Waits {
    /// The default policy's.
    fn default() -> Self {
        Self::from_policy(&Policy::default())
    }
}

/// A volume whose pod has not stopped this long before the deadline is
/// force-detached: a plain detach and a re-attach take about ten seconds,
/// and after the deadline the instance is gone with the volume stuck on it.
const FORCE_DETACH_BEFORE_DEADLINE: Millis = 20 * 1000;

/// How long a volume move waits for its pod to stop when the deadline is
/// further away than that (a scheduled event): then the volume is left to
/// the CSI driver rather than detached from a pod that still runs.
const VOLUME_WAIT_LIMIT: Millis = 10 * 60 * 1000;

/// How long before the deadline surged workloads' pods are evicted even
/// when their extra pods are not all Ready yet: Kubernetes' default
/// `terminationGracePeriodSeconds` (30 s, API reference, PodSpec) and
/// about 10 s for endpoints to drop the pods, so they stop in time.
const SURGE_EVICT_BEFORE_DEADLINE: Millis = 40 * 1000;

/// How long after its start the last wave looks again for pods bound to
/// the node after the plan: the cache a view is read from may show a
/// binding made just before the cordon a moment after it.
const LATE_ARRIVALS_AGAIN_AFTER: Millis = 2_000;

/// How long a node retired after a rebalance recommendation may take to
/// drain within its pods' budgets.
const RETIRE_DRAIN: Millis = 10 * 60 * 1000;

/// Longest a retirement waits for its surged pods to be Ready before it
/// evicts anyway (within the budgets): as long as a node takes to join
/// and a pod to start, twice over.
const RETIRE_SURGE_WAIT: Millis = 3 * 60 * 1000;

/// How a [`Step::RetireNode`] goes (its fields, but the node).
struct Retirement<'a> {
    after: Millis,
    bridge: bool,
    once_room: bool,
    surges: &'a [(String, u32)],
}

/// How often a hold looks for replacements that have joined, and for how
/// long after it starts (a Spot node joins in well under a minute; after
/// this none launched for the key is still to come).
const HOLD_LOOK_EVERY: Millis = 15 * 1000;
const HOLD_LOOK_FOR: Millis = 5 * 60 * 1000;

/// Everything a response needs.
pub struct Executor<S, K, C, T> {
    /// Database.
    pub store: Arc<S>,
    /// Kubernetes.
    pub cluster: Arc<K>,
    /// Cloud.
    pub cloud: Arc<C>,
    /// Time.
    pub clock: Arc<T>,
    /// Where measurements go.
    pub observer: Arc<dyn ResponseObserver>,
    /// Whether a warm-pool keeper runs: it returns woken standbys.
    pub returns_standbys: bool,
    /// The responses running now, for planning the next one.
    pub open: Arc<OpenResponses>,
    /// The last snapshot a move round found no move on (see [`NoMoveMemo`]).
    pub no_move: Arc<NoMoveMemo>,
    /// Wait rules.
    pub waits: Waits,
}

impl<S, K, C, T> Clone for Executor<S, K, C, T> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            cluster: self.cluster.clone(),
            cloud: self.cloud.clone(),
            clock: self.clock.clone(),
            observer: self.observer.clone(),
            returns_standbys: self.returns_standbys,
            open: self.open.clone(),
            no_move: self.no_move.clone(),
            waits: self.waits,
        }
    }
}

/// Workloads whose pods the plan evicts, from the view.
fn displaced_workloads(plan: &Plan, view: &ClusterView) -> BTreeSet<String> {
    let evicted: HashSet<&str> = plan.evicted_pods().map(String::as_str).collect();
    // Looked up by name (the snapshot's lookups, shared by every
    // response), not found by a pass over every pod for each response.
    evicted.into_iter().filter_map(|name| view.pod(name)?.workload.as_deref().map(String::from)).collect()
}

/// The last snapshot on which a move round found no move, the policy it
/// went by, which pools were cooling down, which nodes open responses
/// were retiring and which were resting. [`choose_moves`] is a pure
/// function of the snapshot, the policy and the time, and reads the time
/// only to tell which pools cool down: a round on the same snapshot, by the
/// same policy, with the same pools cooling down finds no move either, and
/// does not look again (a round a minute, and a snapshot of every pod to
/// look through each time).
///
/// [`choose_moves`]: costop_core::move_back::choose_moves
///
/// It also keeps the nodes resting from moves (see [`MOVE_REST`]): a
/// node's move that ended without it is not tried again until then.
#[derive(Default)]
pub struct NoMoveMemo(std::sync::Mutex<Option<NoMove>>, std::sync::Mutex<BTreeMap<String, Millis>>);

/// What [`NoMoveMemo`] holds. The weak reference keeps the snapshot's
/// address taken (a later snapshot can never be mistaken for it) without
/// keeping its pods alive.
struct NoMove {
    view: Weak<ClusterView>,
    policy: Policy,
    cooling: Vec<bool>,
    retiring: Vec<String>,
    resting: Vec<String>,
}

impl NoMoveMemo {
    /// `node`'s move ended without it: no move of it until `until`.
    fn rest(&self, node: &str, until: Millis) {
        self.1.lock().unwrap_or_else(|e| e.into_inner()).insert(node.to_string(), until);
    }

    /// The nodes resting from moves at `now` (those whose rest is over
    /// are forgotten).
    fn resting(&self, now: Millis) -> Vec<String> {
        let mut resting = self.1.lock().unwrap_or_else(|e| e.into_inner());
        resting.retain(|_, until| *until > now);
        resting.keys().cloned().collect()
    }

    /// Which of the view's pools cool down at `now`.
    fn cooling(view: &ClusterView, policy: &Policy, now: Millis) -> Vec<bool> {
        view.pools.iter().map(|p| costop_core::pools::in_cooldown(p, policy, now)).collect()
    }

    /// The moves worth making on `view` at `now` (see [`costop_core::move_back::choose_moves`]),
    /// not looked for again when the last look found none in the same state.
    fn choose(
        &self,
        view: &Arc<ClusterView>,
        policy: &Policy,
        now: Millis,
        retiring: &[String],
    ) -> Vec<Move> {
        let cooling = Self::cooling(view, policy, now);
        let resting = self.resting(now);
        let mut memo = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let same = memo.as_ref().is_some_and(|m| {
            std::ptr::eq(m.view.as_ptr(), Arc::as_ptr(view))
                && m.policy == *policy
                && m.cooling == cooling
                && m.retiring == retiring
                && m.resting == resting
        });
        if same {
            return Vec::new();
        }
        let held = costop_core::move_back::Held { retiring, resting: &resting };
        let chosen = costop_core::move_back::choose_moves(view, policy, now, held);
        *memo = chosen.is_empty().then(|| NoMove {
            view: Arc::downgrade(view),
            policy: policy.clone(),
            cooling,
            retiring: retiring.to_vec(),
            resting,
        });
        chosen
    }
}

/// Whether every one of these workloads has all its replicas Ready off
/// `node` (the node being given up: its pods, terminating or about to be,
/// do not count, even while a lagging view still shows them Ready), but
/// for the pods in `staying` (left on it, which serve until it goes).
fn whole(view: &ClusterView, workloads: &BTreeSet<String>, node: &str, staying: &[String]) -> bool {
    let replicas = |w: &str| view.workload(w).map_or(0, |x| x.replicas as usize);
    // Ready pods per workload: counted once per snapshot, by its lookups,
    // however many responses wait on it.
    let ready = |w: &str| view.pods.lookups().ready(w);
    // Short of Ready pods even counting the node's: no need to look at it.
    if workloads.iter().any(|w| ready(w) < replicas(w)) {
        return false;
    }
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in view.pods_on(node).filter(|p| p.ready && !staying.iter().any(|s| same_pod(s, &p.name))) {
        if let Some(w) = p.workload.as_deref().filter(|w| workloads.contains(*w)) {
            *on_node.entry(w).or_default() += 1;
        }
    }
    workloads.iter().all(|w| {
        let off_node = ready(w).saturating_sub(on_node.get(w.as_str()).copied().unwrap_or(0));
        off_node >= replicas(w)
    })
}

/// The replicas the view shows for `workload` (0 for one it does not know).
fn replicas_of(view: &ClusterView, workload: &str) -> usize {
    view.workload(workload).map_or(0, |x| x.replicas as usize)
}

/// Whether each workload has all its replicas (a surge's extra ones
/// included) Ready, and at least the count given with it (what it is to
/// have once a surge shows in the view).
fn all_replicas_ready<'w>(view: &ClusterView, workloads: impl IntoIterator<Item = (&'w str, usize)>) -> bool {
    workloads.into_iter().all(|(w, at_least)| {
        let wanted = view.workload(w).map_or(0, |x| x.replicas as usize);
        view.pods.lookups().ready(w) >= wanted.max(at_least)
    })
}

/// The workloads the plan surges (see [`Step::Surge`]).
fn surged_workloads(plan: &Plan) -> Vec<&str> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::Surge { workloads } => Some(workloads),
            _ => None,
        })
        .flatten()
        .map(|(w, _)| w.as_str())
        .collect()
}

/// The surged workloads whose pods the plan evicts in `wave` and in no
/// other (pods looked up in `view`, taken before the wave's evictions):
/// their surge can end with this wave. A workload split across waves
/// keeps its surge until the plan's [`Step::EndSurge`]: the waves run at
/// once, and a refused pod of an earlier wave may still be asked after a
/// later wave is done.
fn surges_only_in(plan: &Plan, view: &ClusterView, surged: &[&str], wave: u32) -> Vec<String> {
    let mut waves: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    for step in &plan.steps {
        let Step::Evict { pods, wave: w } = step else { continue };
        for pod in pods {
            let workload = view.pod(pod).and_then(|p| p.workload.as_deref());
            if let Some(s) = workload.and_then(|w| surged.iter().find(|s| **s == w)) {
                waves.entry(s).or_default().insert(*w);
            }
        }
    }
    waves.into_iter().filter(|(_, w)| w.len() == 1 && w.contains(&wave)).map(|(s, _)| s.to_string()).collect()
}

/// The highest eviction wave of the plan, if it evicts at all.
fn last_wave(plan: &Plan) -> Option<u32> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::Evict { wave, .. } => Some(*wave),
            _ => None,
        })
        .max()
}

/// Workload pods on the plan's node that no step of the plan names: the
/// scheduler bound them there between the plan and the cordon (pods
/// evicted from a sibling node whose notice came first, or new replicas).
/// Left alone they would die with the node.
fn late_arrivals(plan: &Plan, view: &ClusterView) -> Vec<String> {
    let named: Vec<&String> = plan.evicted_pods().chain(&plan.unevictable).collect();
    view.workload_pods_on(&plan.node)
        .filter(|p| !named.iter().any(|n| same_pod(n, &p.name)))
        .map(|p| p.name.to_string())
        .collect()
}

/// Whether `a` and `b` name one pod, either written `namespace/name` or `name`.
fn same_pod(a: &str, b: &str) -> bool {
    fn name(x: &str) -> &str {
        x.rsplit('/').next().unwrap_or(x)
    }
    a == b || (!(a.contains('/') && b.contains('/')) && name(a) == name(b))
}

impl<S, K, C, T> Executor<S, K, C, T>
where
    S: StorePort + 'static,
    K: ClusterPort + Send + Sync + 'static,
    C: CloudPort + 'static,
    T: Clock + 'static,
{
    /// Retry a store write until it works: progress is never dropped.
    async fn durably<F, Fut>(&self, what: &str, mut write: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), S::Error>>,
    {
        let mut wait = Duration::from_millis(100);
        loop {
            match write().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, what, "store write failed; retrying");
                    self.clock.sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Plan the response to `notice` on `view`, counting the claims of
    /// every response still running here as already made (see [`OpenResponses`]).
    pub fn plan(
        &self,
        view: &ClusterView,
        notice: &Notice,
        policy: &Policy,
        now: Millis,
    ) -> Result<Plan, PlanError> {
        // A recommendation launches a replacement and retires its node once
        // there is room (judged when it runs, not now): the claims of the
        // other responses do not change the plan, and copying the view is
        // not free.
        if matches!(notice.kind, costop_core::NoticeKind::RebalanceRecommendation { .. }) {
            return respond(view, notice, policy, now);
        }
        respond(&self.open.claimed(view, now), notice, policy, now)
    }

    /// Between responses: the plans that move capacity back to cheap
    /// Spot pools (see [`costop_core::move_back::choose_moves`]: every
    /// on-demand fallback node at once, or one Spot node), saved, to be
    /// run with [`Self::execute`]. None while a response has claims to
    /// make or another move is under way, or when no move is worth it;
    /// nodes whose last move ended without them rest ([`MOVE_REST`]).
    pub async fn next_moves(&self, policy: &Policy) -> Vec<Plan> {
        if self.open.busy() || self.open.any_of_kind(costop_core::move_back::MOVE_BACK_KIND) {
            return Vec::new();
        }
        let now = self.clock.now_ms();
        let view = self.cluster.view();
        let chosen = self.no_move.choose(&view, policy, now, &self.open.retiring());
        let plans: Vec<Plan> =
            chosen.iter().map(|m| costop_core::move_back::move_plan(m, &view, policy, now)).collect();
        drop(view);
        let mut saved = Vec::new();
        for plan in plans {
            match self.store.save_plan(&plan).await {
                Ok(true) => saved.push(plan),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, node = %plan.node, "cannot record a move; not moving it")
                }
            }
        }
        saved
    }

    /// One round of moving capacity back: the moves worth making now, if
    /// any, run together to their end. Whether a move ran. The server and
    /// the simulator call it every [`MOVE_ROUND`] between responses.
    pub async fn move_once(&self, policy: &Policy) -> bool {
        let plans = self.next_moves(policy).await;
        if plans.is_empty() {
            return false;
        }
        let now = self.clock.now_ms();
        join_all(plans.into_iter().map(|plan| {
            tracing::info!(node = %plan.node, steps = ?plan.steps, "moving a node to a cheaper Spot pool");
            self.execute(Arc::new(plan), now)
        }))
        .await;
        true
    }

    /// Run the plan's remaining steps in order. `received_at` is when the
    /// notice arrived (for the notice → cordon metric). Volume moves wait
    /// for their pod to stop, which a later step (the eviction) brings
    /// about, so each runs alongside the steps after it; the response is
    /// done when all are.
    pub async fn execute(&self, plan: Arc<Plan>, received_at: Millis) {
        let done = self.steps_done(&plan).await;
        self.execute_from(plan, received_at, done).await;
    }

    /// [`Self::execute`] for a plan just saved, none of its steps recorded
    /// yet: the store is not read first, so the cordon waits on one round
    /// trip to it less.
    pub async fn execute_new(&self, plan: Arc<Plan>, received_at: Millis) {
        let done = vec![false; plan.steps.len()];
        self.execute_from(plan, received_at, done).await;
    }

    /// Run the steps not `done`. The pods left on the node are reported
    /// alongside, not before the cordon.
    async fn execute_from(&self, plan: Arc<Plan>, received_at: Millis, done: Vec<bool>) {
        self.open.opened(&plan, done.clone());
        let plan = &*plan;
        let key = &plan.notice;
        let fresh = !done.iter().any(|d| *d);
        let report = async {
            if fresh {
                Box::pin(self.report_pods_left(plan)).await;
            }
        };
        // Closes the open entry however this future ends (done, or dropped
        // when leadership is lost).
        let _open = CloseOnDrop(&self.open, key);
        let displaced = displaced_workloads(plan, &self.cluster.view());
        let deadline = plan.deadline.unwrap_or(self.clock.now_ms() + 2 * 60 * 1000);
        // How far the steps in order have come: a volume move starts once
        // the steps before it have run.
        let reached = AtomicUsize::new(0);
        let in_order = async {
            let mut i = 0;
            while i < plan.steps.len() {
                reached.store(i, Ordering::SeqCst);
                // The eviction waves run together: each eviction is retried
                // while its budget refuses it, so a later wave's pods go as
                // soon as their workload can spare them, and the pods of a
                // workload that is not surged do not wait for an earlier
                // wave's surged ones.
                let waves = plan.steps[i..].iter().take_while(|s| matches!(s, Step::Evict { .. })).count();
                if waves > 0 {
                    let runs = (i..i + waves)
                        .filter(|j| !done[*j])
                        .map(|j| self.run_recorded(plan, j, received_at, deadline, &displaced));
                    join_all(runs).await;
                    i += waves;
                    continue;
                }
                if !done[i] && !matches!(plan.steps[i], Step::MoveVolume { .. }) {
                    self.run_recorded(plan, i, received_at, deadline, &displaced).await;
                }
                i += 1;
            }
            reached.store(plan.steps.len(), Ordering::SeqCst);
        };
        let alongside = join_all(
            plan.steps
                .iter()
                .enumerate()
                .filter(|(i, s)| !done[*i] && matches!(s, Step::MoveVolume { .. }))
                .map(|(i, _)| {
                    let (reached, displaced) = (&reached, &displaced);
                    async move {
                        while reached.load(Ordering::SeqCst) < i {
                            self.clock.sleep(Duration::from_millis(100)).await;
                        }
                        self.run_recorded(plan, i, received_at, deadline, displaced).await;
                    }
                }),
        );
        futures::join!(report, in_order, alongside);
        let at = self.clock.now_ms();
        Box::pin(self.durably("response done", || self.store.response_done(key, at))).await;
    }

    /// Dry run: record the plan's remaining steps, in order, as done with
    /// the outcome `dry run: <what the step would do>` (see [`would_do`]),
    /// each with its node Event, and the response as done, without running
    /// any of them: nothing in the cluster or the cloud changes and no step
    /// waits for what would never happen. Resumes like [`Self::execute`]:
    /// steps already recorded as done are left as they are.
    pub async fn rehearse(&self, plan: &Plan) {
        let key = &plan.notice;
        let done = self.steps_done(plan).await;
        for (i, step) in plan.steps.iter().enumerate() {
            if done[i] {
                continue;
            }
            let started = self.step_started(plan, i).await;
            let outcome = format!("dry run: {}", would_do(step, self.returns_standbys));
            self.step_finished(plan, i, started, &outcome).await;
        }
        let at = self.clock.now_ms();
        Box::pin(self.durably("response done", || self.store.response_done(key, at))).await;
    }

    /// The pods the plan leaves on the doomed node (their budget allows no
    /// disruption at all): a Warning on each and a count, once, when the
    /// response starts.
    async fn report_pods_left(&self, plan: &Plan) {
        if plan.unevictable.is_empty() {
            return;
        }
        let why = "its disruption budget allows no disruption (minAvailable is all its replicas)";
        self.warn_pods_left(plan.unevictable.iter().map(|pod| (pod.as_str(), why))).await;
    }

    /// Count the pods left on their doomed node and say of each why (a
    /// Warning on it and its node); a Warning that cannot be recorded is
    /// logged.
    async fn warn_pods_left<'p>(&self, left: impl ExactSizeIterator<Item = (&'p str, &'p str)> + Send) {
        self.observer.pods_left(left.len());
        for (pod, why) in left {
            if let Err(e) = self.cluster.warn_pod_left(pod, why).await {
                tracing::warn!(error = %e, pod, "cannot record that the pod is left");
            }
        }
    }

    /// Run step `i`, recording it before and after, with a node event.
    async fn run_recorded(
        &self,
        plan: &Plan,
        i: usize,
        received_at: Millis,
        deadline: Millis,
        displaced: &BTreeSet<String>,
    ) {
        let started = self.step_started(plan, i).await;
        // A wave runs inline; any other step's future is boxed while it
        // runs (see [`Self::evict_wave`]).
        let run = match &plan.steps[i] {
            Step::Evict { pods, wave } => self.evict_wave(plan, pods, *wave, deadline).await,
            step => Box::pin(self.run_step(plan, step, received_at, deadline, displaced)).await,
        };
        let outcome = match run {
            Ok(done) => done,
            Err(failed) => format!("failed: {failed}"),
        };
        Box::pin(self.step_finished(plan, i, started, &outcome)).await;
    }

    /// Which of the plan's steps the stored record has as done (read until
    /// the store answers): what a resumed response skips.
    async fn steps_done(&self, plan: &Plan) -> Vec<bool> {
        let record = loop {
            match self.store.response(&plan.notice).await {
                Ok(r) => break r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the response record; retrying");
                    self.clock.sleep(Duration::from_millis(200)).await;
                }
            }
        };
        (0..plan.steps.len())
            .map(|i| record.as_ref().and_then(|r| r.steps.get(i)).is_some_and(|s| s.done_at.is_some()))
            .collect()
    }

    /// Record step `i` as started; when it started.
    async fn step_started(&self, plan: &Plan, i: usize) -> Millis {
        let started = self.clock.now_ms();
        self.durably("step started", || self.store.step_started(&plan.notice, i, started)).await;
        started
    }

    /// Record step `i` as done with `outcome`: in the store, in the open
    /// responses (if this one is open), in the metrics, the log and the
    /// node's Event.
    async fn step_finished(&self, plan: &Plan, i: usize, started: Millis, outcome: &str) {
        let (key, step) = (&plan.notice, &plan.steps[i]);
        let finished = self.clock.now_ms();
        self.durably("step done", || self.store.step_done(key, i, finished, outcome)).await;
        self.open.step_done(key, i, finished);
        self.observer.step(step.kind(), (finished - started) as f64 / 1000.0);
        tracing::info!(notice = %key, step = step.kind(), outcome, "step done");
        if let Err(e) = self.cluster.node_event(&plan.node, &event_reason(step), outcome).await {
            tracing::warn!(error = %e, "cannot record the event");
        }
    }

    /// At `after` (or, `once_room`, as soon as the other nodes can hold
    /// its pods), drain a node a rebalance recommendation or a move
    /// replaced and end it, unless it is gone or an interruption is being
    /// answered for it (its taint) by then. Its workloads are bridged to their
    /// functions (when `bridge`) until their pods are Ready elsewhere; its
    /// Deployments in `surges` are raised (under `key`) before their pods
    /// are evicted and lowered back once the node is drained.
    ///
    /// An interruption is told by its open response, not by the node's
    /// taint: the retirement's own cordon puts the same taint on, and a
    /// retirement resumed after a restart carries on draining. Room is
    /// looked for outside the nodes other responses are retiring.
    async fn retire(&self, key: &NoticeKey, node: &str, how: Retirement<'_>) -> Result<String, String> {
        let Retirement { after, bridge, once_room, surges } = how;
        let answered = |v: &ClusterView| v.node(node).is_none() || self.open.interrupted(node);
        let room = |v: &ClusterView| {
            once_room && costop_core::move_back::room_elsewhere(v, node, &self.open.retiring_besides(key))
        };
        let notice = key;
        let key = &key.to_string();
        self.wait_until(after, |v| answered(v) || room(v)).await;
        let view = self.cluster.view();
        if answered(&view) {
            return Ok(format!("skipped: {node} was interrupted (or is gone); its replacement stays"));
        }
        // Retirements waking on one view change may each find the same
        // room: with their Deployments surged first, the old pods wait
        // for the surge's pods to be placed and Ready, so none serves
        // short meanwhile. (Claiming the room under one lock, tried at
        // stop 35, held them back one by one and made the built-in
        // market's slow incidents 4 -> 9.)
        if once_room && !room(&view) {
            self.rest_if_moved(notice, node);
            return Ok(format!(
                "skipped: no room for {node}'s pods on other nodes by the deadline; it stays"
            ));
        }
        self.cluster.taint_and_cordon(node).await.map_err(|e| e.to_string())?;
        let cordoned_at = self.clock.now_ms();
        let view = self.cluster.view();
        let workloads: BTreeSet<String> =
            view.workload_pods_on(node).filter_map(|p| p.workload.as_deref().map(String::from)).collect();
        let names: Vec<String> = workloads.iter().cloned().collect();
        // A surged Deployment's pods go once its extra pods are Ready; the
        // others at once, as in a response's waves.
        let (after_surge, at_once): (Vec<String>, Vec<String>) =
            view.workload_pods_on(node).map(|p| p.name.to_string()).partition(|p| {
                let workload = view.pod(p).and_then(|p| p.workload.as_deref());
                workload.is_some_and(|w| surges.iter().any(|(s, _)| s == w))
            });
        drop(view);
        let bridged = bridge && !names.is_empty() && self.cloud.bridge(&names, true).await.is_ok();
        let until = self.clock.now_ms() + RETIRE_DRAIN;
        // Within the budgets only: nothing is deleted (no lead).
        let at_once: Vec<(&String, Millis)> = at_once.iter().map(|p| (p, 0)).collect();
        let now = evict_pods(self.cluster.as_ref(), self.clock.as_ref(), &at_once, until);
        let later = async {
            let surged = self.surge_and_wait(key, surges, until).await;
            let pods: Vec<(&String, Millis)> = after_surge.iter().map(|p| (p, 0)).collect();
            let tally = evict_pods(self.cluster.as_ref(), self.clock.as_ref(), &pods, until).await;
            self.end_surges(key, &surged).await;
            tally
        };
        let (first, second) = futures::future::join(now, later).await;
        let mut tally = first.plus(second);
        // A pod bound just before the cordon may come into view only after
        // the first look; ended with the node, it would die serving.
        let again = cordoned_at.saturating_add(LATE_ARRIVALS_AGAIN_AFTER);
        let now = self.clock.now_ms();
        if now < again {
            self.clock.sleep(Duration::from_millis(again - now)).await;
        }
        let late: Vec<String> = (self.cluster.view().workload_pods_on(node))
            .map(|p| p.name.to_string())
            .filter(|p| !at_once.iter().any(|(asked, _)| *asked == p) && !after_surge.contains(p))
            .collect();
        if !late.is_empty() {
            let pods: Vec<(&String, Millis)> = late.iter().map(|p| (p, 0)).collect();
            tally = tally.plus(evict_pods(self.cluster.as_ref(), self.clock.as_ref(), &pods, until).await);
        }
        let failed = tally.refused.first().map(|(pod, why)| format!("{pod}: {why}"));
        if bridged {
            self.wait_until(until, |v| whole(v, &workloads, node, &[])).await;
            if let Err(e) = self.cloud.bridge(&names, false).await {
                tracing::warn!(error = %e, node, "cannot shift traffic back after a retirement");
            }
        }
        if let Some(e) = failed {
            return Err(self.give_back(notice, node, format!("{node} not retired: {e}")).await);
        }
        if self.open.interrupted(node) {
            return Ok(format!("drained; not ended: {node} was interrupted meanwhile, its response goes on"));
        }
        let view = self.cluster.view();
        let n = view.node(node).ok_or_else(|| format!("node {node} not in the cluster"))?;
        let ended = match self.cloud.retire_node(n).await {
            Ok(ended) => ended,
            Err(e) => return Err(self.give_back(notice, node, format!("{node} not ended: {e}")).await),
        };
        self.cluster.delete_node(node).await.map_err(|e| e.to_string())?;
        Ok(format!("ok: drained, no interruption came; {ended}"))
    }

    /// A retirement that could not drain or end `node` gives it back to
    /// service (interruption taint off, uncordoned), unless an
    /// interruption's response has it now: a node left cordoned would hold
    /// capacity nobody can use. `why` with what became of the node.
    async fn give_back(&self, key: &NoticeKey, node: &str, why: String) -> String {
        if self.open.interrupted(node) {
            return format!("{why}; left cordoned: an interruption's response has it");
        }
        self.rest_if_moved(key, node);
        let given = match self.cluster.untaint_and_uncordon(node).await {
            Ok(()) => format!("{why}; uncordoned, it stays in service"),
            Err(e) => return format!("{why}; and it could not be uncordoned: {e}"),
        };
        // An interruption's response that opened meanwhile found the node
        // already cordoned, and cordons nothing again: cordon it back.
        if self.open.interrupted(node) {
            return match self.cluster.taint_and_cordon(node).await {
                Ok(()) => format!("{why}; cordoned again: an interruption's response has it now"),
                Err(e) => {
                    format!("{why}; uncordoned, and an interruption came: cordoning it again failed: {e}")
                }
            };
        }
        given
    }

    /// A move's node that stays (no room in time, or given back) rests
    /// from moves for [`MOVE_REST`], so a move that cannot finish is not
    /// tried again every round.
    fn rest_if_moved(&self, key: &NoticeKey, node: &str) {
        if key.kind == costop_core::move_back::MOVE_BACK_KIND {
            self.no_move.rest(node, self.clock.now_ms().saturating_add(MOVE_REST));
        }
    }

    /// The pods the plan leaves on its node (no budget lets them go):
    /// they serve until the node goes at the deadline.
    fn left_until<'p>(&self, plan: &'p Plan, deadline: Millis) -> &'p [String] {
        if self.clock.now_ms() < deadline {
            &plan.unevictable
        } else {
            &[]
        }
    }

    /// Evict the pods (see [`crate::evictions`]). Every eviction is
    /// retried while a budget refuses it, so later waves are not held
    /// back: the API server lets each pod go as soon as its workload can
    /// spare it. A pod of a workload the view knows (a Deployment or
    /// StatefulSet that starts it again) not evicted `delete_doomed_before`
    /// the deadline is deleted then: it would go with the node anyway, and
    /// it starts elsewhere in time. A bare pod, or a Job's, gains nothing
    /// from going early and is only evicted, until the deadline.
    async fn evict_all(&self, pods: &[&String], deadline: Millis) -> EvictionTally {
        // The snapshot is not kept while the pods are evicted: a burst's
        // thousand responses would keep a thousand alive.
        let with_leads: Vec<(&String, Millis)> = {
            let view = self.cluster.view();
            let replaced = |pod: &str| {
                view.pod(pod).and_then(|p| p.workload.as_deref()).is_some_and(|w| view.workload(w).is_some())
            };
            pods.iter().map(|p| (*p, if replaced(p) { self.waits.delete_doomed_before } else { 0 })).collect()
        };
        evict_pods(self.cluster.as_ref(), self.clock.as_ref(), &with_leads, deadline).await
    }

    /// Mark the nodes launched under `key` scale-down-disabled as they
    /// join, until `until`, then take the marks off (see
    /// [`Step::HoldReplacements`]).
    async fn hold_replacements(&self, key: &str, until: Millis) -> Result<String, String> {
        let started = self.clock.now_ms();
        let mut held: BTreeSet<String> = BTreeSet::new();
        let mut problems: Vec<String> = Vec::new();
        loop {
            let now = self.clock.now_ms();
            let launched = match self.cloud.launched_under(key).await {
                Ok(ids) => ids,
                Err(x) => {
                    tracing::warn!(error = %x, key, "cannot list the replacements launched; looking again");
                    Vec::new()
                }
            };
            let joined: Vec<String> = {
                let view = self.cluster.view();
                launched
                    .iter()
                    .filter_map(|id| view.node_by_instance(id))
                    .map(|n| n.name.to_string())
                    .collect()
            };
            for node in joined {
                if held.contains(&node) {
                    continue;
                }
                match self.cluster.hold_from_scale_down(&node, true).await {
                    Ok(()) => {
                        held.insert(node);
                    }
                    Err(x) => problems.push(format!("{node}: {x}")),
                }
            }
            let all_held = !launched.is_empty() && held.len() >= launched.len();
            if now >= until || all_held || now >= started.saturating_add(HOLD_LOOK_FOR) {
                break;
            }
            self.clock.sleep(Duration::from_millis(HOLD_LOOK_EVERY.min(until - now))).await;
        }
        let now = self.clock.now_ms();
        if now < until {
            self.clock.sleep(Duration::from_millis(until - now)).await;
        }
        for node in &held {
            if let Err(x) = self.cluster.hold_from_scale_down(node, false).await {
                problems.push(format!("{node} (unmarking): {x}"));
            }
        }
        let done = format!("{} replacements held from scale-down until the window's end", held.len());
        if problems.is_empty() {
            Ok(format!("ok: {done}"))
        } else {
            Ok(format!("partial: {done}; {}", problems.join("; ")))
        }
    }

    /// Wait until `ok` holds for the cluster or `until` has passed,
    /// looking at most once a second (what waits here, shifting traffic
    /// back, restoring headroom, retiring a node later, is not urgent). A
    /// snapshot already looked at is not judged again, and when the
    /// adapter tells of changes a quiet cluster is not looked at at all
    /// until it changes or `until` comes.
    ///
    /// Between looks only a weak reference to the snapshot judged last is
    /// kept: a thousand waiting responses must not keep a thousand old
    /// snapshots of every pod alive (the weak one keeps its address taken,
    /// so a later snapshot can never be mistaken for it).
    async fn wait_until(&self, until: Millis, mut ok: impl FnMut(&Arc<ClusterView>) -> bool) -> bool {
        let mut judged: Weak<ClusterView> = Weak::new();
        let same = |judged: &Weak<ClusterView>, view: &Arc<ClusterView>| {
            std::ptr::eq(judged.as_ptr(), Arc::as_ptr(view))
        };
        loop {
            let view = self.cluster.view();
            if !same(&judged, &view) {
                if ok(&view) {
                    return true;
                }
                judged = Arc::downgrade(&view);
            }
            drop(view);
            let now = self.clock.now_ms();
            if now >= until {
                return false;
            }
            self.clock.sleep(Duration::from_millis((until - now).min(1000))).await;
            let view = self.cluster.view();
            if K::NOTIFIES_CHANGES && same(&judged, &view) {
                let left = until.saturating_sub(self.clock.now_ms());
                let changed = std::pin::pin!(self.cluster.changed_since(&view));
                let timeout = std::pin::pin!(self.clock.sleep(Duration::from_millis(left)));
                futures::future::select(changed, timeout).await;
            }
        }
    }

    /// Raise each of `surges` (under `key`) and wait, until `until` or
    /// [`RETIRE_SURGE_WAIT`] at the latest, for every one raised to have
    /// all its replicas Ready; the ones raised, to lower back. A failure
    /// is logged: the pods are then evicted within their budgets alone.
    async fn surge_and_wait(&self, key: &str, surges: &[(String, u32)], until: Millis) -> Vec<String> {
        // Ready counted against the replicas before the surge and the
        // surge itself (see `SurgeTarget`): the view may show the old
        // count a while longer. A surge already there (a resumed
        // retirement) waits for the view's count.
        let before: Vec<usize> = {
            let view = self.cluster.view();
            surges.iter().map(|(w, _)| replicas_of(&view, w)).collect()
        };
        let raised = join_all(surges.iter().map(|(w, by)| self.cluster.surge(w, key, *by))).await;
        let mut surged = Vec::new();
        let mut targets = Vec::new();
        for (((w, by), before), r) in surges.iter().zip(before).zip(raised) {
            match r {
                Ok(added) => {
                    surged.push(w.clone());
                    let target = if added { before + *by as usize } else { 0 };
                    targets.push((w.as_str(), SurgeTarget::new(target)));
                }
                Err(e) => {
                    tracing::warn!(workload = %w, error = %e, "cannot surge before a retirement; evicting within the budget")
                }
            }
        }
        if !surged.is_empty() {
            let by = until.min(self.clock.now_ms().saturating_add(RETIRE_SURGE_WAIT));
            self.wait_until(by, |v| {
                all_replicas_ready(v, targets.iter().map(|(w, t)| (*w, t.wanted(replicas_of(v, w)))))
            })
            .await;
        }
        surged
    }

    /// Lower back the surge of each of `workloads` (this plan's; a later
    /// [`Step::EndSurge`] finds them done) and say how many were lowered.
    /// A failure is logged: that step tries again.
    async fn end_surges(&self, key: &str, workloads: &[String]) -> usize {
        let mut lowered = 0;
        for w in workloads {
            match self.cluster.end_surge(w, key).await {
                Ok(true) => lowered += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    workload = %w,
                    error = %e,
                    "cannot lower a surge back after its wave; the plan's last step tries again"
                ),
            }
        }
        lowered
    }

    /// Run one eviction wave (see [`Step::Evict`]). Surge, then evict:
    /// the pods of a surged workload go once every surged workload has all
    /// its replicas (the extra ones included) Ready, or shortly before the
    /// deadline at the latest. The others (StatefulSets, workloads not
    /// surged) go at once: nothing they wait for comes sooner.
    ///
    /// Its own function, not an arm of [`Self::run_step`], so that a
    /// waiting wave's future holds only what a wave needs: every open
    /// response of a burst has its waves waiting at once, and the other
    /// steps' futures (requests to the cluster and the cloud) are larger.
    async fn evict_wave(
        &self,
        plan: &Plan,
        pods: &[String],
        wave: u32,
        deadline: Millis,
    ) -> Result<String, String> {
        let surged = surged_workloads(plan);
        let started = self.clock.now_ms();
        let (after_surge, at_once, ends_here) = {
            let view = self.cluster.view();
            let (after_surge, at_once): (Vec<&String>, Vec<&String>) = pods.iter().partition(|p| {
                let workload = view.pod(p).and_then(|p| p.workload.as_deref());
                workload.is_some_and(|w| surged.contains(&w))
            });
            (after_surge, at_once, surges_only_in(plan, &view, &surged, wave))
        };
        let last = last_wave(plan) == Some(wave);
        let now = self.evict_all(&at_once, deadline);
        let later = async {
            if after_surge.is_empty() && !last {
                return (EvictionTally::default(), 0);
            }
            if !surged.is_empty() {
                let by = deadline.saturating_sub(SURGE_EVICT_BEFORE_DEADLINE);
                let targets: Vec<(&str, SurgeTarget)> =
                    surged.iter().map(|w| (*w, self.open.surge_target(&plan.notice, w))).collect();
                self.wait_until(by, |v| {
                    all_replicas_ready(v, targets.iter().map(|(w, t)| (*w, t.wanted(replicas_of(v, w)))))
                })
                .await;
            }
            // The last wave also takes the pods that landed on the
            // node after the plan was made (bound before the cordon
            // took).
            let late = if last { late_arrivals(plan, &self.cluster.view()) } else { Vec::new() };
            let pods: Vec<&String> = after_surge.iter().copied().chain(&late).collect();
            let mut tally = self.evict_all(&pods, deadline).await;
            // A workload's old pods gone, its surge ends with their wave,
            // not with the plan's slowest one: the evicted pods'
            // replacements (the surge still counted) would wait as Pending
            // and have the node autoscaler launch for them.
            let lowered = self.end_surges(&plan.notice.to_string(), &ends_here).await;
            if last {
                // Once more when the cache has caught up past the cordon:
                // a pod bound just before it may have come into view only
                // after the first look.
                let again = started.saturating_add(LATE_ARRIVALS_AGAIN_AFTER);
                let now = self.clock.now_ms();
                if now < again {
                    self.clock.sleep(Duration::from_millis(again - now)).await;
                }
                let later_still: Vec<String> = late_arrivals(plan, &self.cluster.view())
                    .into_iter()
                    .filter(|p| !late.contains(p))
                    .collect();
                if !later_still.is_empty() {
                    let pods: Vec<&String> = later_still.iter().collect();
                    tally = tally.plus(self.evict_all(&pods, deadline).await);
                }
            }
            (tally, lowered)
        };
        let (first, (second, lowered)) = futures::future::join(now, later).await;
        let tally = first.plus(second);
        let mut summary = format!(
            "evicted {}, deleted before the deadline {}, already gone {}, not evicted {}",
            tally.evicted,
            tally.deleted,
            tally.gone,
            tally.refused.len()
        );
        if lowered > 0 {
            summary.push_str(&format!("; the surge of {lowered} deployments lowered back with this wave"));
        }
        if tally.refused.is_empty() {
            return Ok(format!("ok: {summary}"));
        }
        // Each pod left says so; the response goes on.
        self.warn_pods_left(tally.refused.iter().map(|(pod, why)| (pod.as_str(), why.as_str()))).await;
        let refused: Vec<String> = tally.refused.iter().map(|(pod, why)| format!("{pod}: {why}")).collect();
        Ok(format!("partial: {summary}: {}", refused.join("; ")))
    }

    async fn run_step(
        &self,
        plan: &Plan,
        step: &Step,
        received_at: Millis,
        deadline: Millis,
        displaced: &BTreeSet<String>,
    ) -> Result<String, String> {
        let e = |x: &dyn std::fmt::Display| x.to_string();
        match step {
            Step::TaintAndCordon { node } => {
                self.cluster.taint_and_cordon(node).await.map_err(|x| e(&x))?;
                let secs = self.clock.now_ms().saturating_sub(received_at) as f64 / 1000.0;
                self.observer.notice_to_cordon(secs);
                Ok(format!("ok: {node} tainted and cordoned"))
            }
            Step::DeregisterTargets { node } => {
                let view = self.cluster.view();
                let n = view.node(node).ok_or_else(|| format!("node {node} not in the cluster"))?;
                self.cloud.deregister_targets(n).await.map_err(|x| e(&x))
            }
            Step::ClaimHeadroom { placeholders } => {
                self.cluster.claim_placeholders(placeholders).await.map_err(|x| e(&x))?;
                Ok(format!("ok: {} placeholders released", placeholders.len()))
            }
            Step::WakeStandby { node, retype_to } => {
                let view = self.cluster.view();
                let n = view.node(node).ok_or_else(|| format!("node {node} not in the cluster"))?;
                // A burstable node runs already: only its taint comes off.
                let woke = if n.capacity_type == costop_core::CapacityType::Burstable {
                    format!("{node} running (burstable)")
                } else {
                    self.cloud.wake_standby(n, retype_to.as_deref()).await.map_err(|x| e(&x))?
                };
                self.cluster.untaint_standby(node).await.map_err(|x| e(&x))?;
                Ok(format!("ok: {woke}; untainted"))
            }
            Step::MoveVolume { volume_id, from_node, to_node, via_snapshot, .. } => {
                // Every pod on the doomed node using it, terminating ones
                // included, must stop first; near the deadline it is forced.
                let force_at = deadline.saturating_sub(FORCE_DETACH_BEFORE_DEADLINE);
                let give_up = self.clock.now_ms() + VOLUME_WAIT_LIMIT;
                let until = force_at.min(give_up);
                let mut stopped = !self.cluster.volume_in_use(volume_id, from_node);
                while !stopped && self.clock.now_ms() < until {
                    self.clock.sleep(Duration::from_millis(100)).await;
                    stopped = !self.cluster.volume_in_use(volume_id, from_node);
                }
                if !stopped && until < force_at {
                    return Err(format!(
                        "{volume_id} still in use on {from_node} after {} min; left to the CSI driver",
                        VOLUME_WAIT_LIMIT / 60_000
                    ));
                }
                let view = self.cluster.view();
                let to = view.node(to_node).ok_or_else(|| format!("node {to_node} not in the cluster"))?;
                self.cloud.move_volume(volume_id, to, *via_snapshot, !stopped).await.map_err(|x| e(&x))
            }
            Step::BridgeTraffic { workloads } => self.cloud.bridge(workloads, true).await.map_err(|x| e(&x)),
            Step::UnbridgeTraffic { workloads } => {
                let set: BTreeSet<String> = workloads.iter().cloned().collect();
                self.wait_until(deadline.saturating_add(self.waits.after_deadline), |v| {
                    whole(v, &set, &plan.node, self.left_until(plan, deadline))
                })
                .await;
                // Workloads another response still has on their functions
                // stay there: that response shifts them back when it ends.
                let others = self.open.shift_back(&plan.notice, self.clock.now_ms());
                let (kept, back): (Vec<String>, Vec<String>) =
                    workloads.iter().cloned().partition(|w| others.contains(w));
                if back.is_empty() {
                    return Ok(format!("ok: {} workloads left bridged for other responses", kept.len()));
                }
                let done = self.cloud.bridge(&back, false).await.map_err(|x| e(&x))?;
                Ok(if kept.is_empty() {
                    done
                } else {
                    format!("{done}; {} left bridged for other responses", kept.len())
                })
            }
            Step::ForgetNode { node } => {
                let pods = self.cluster.forget_node(node).await.map_err(|x| e(&x))?;
                Ok(format!("ok: {pods} pods deleted with no grace and {node} deleted: its instance is gone"))
            }
            Step::Surge { workloads } => {
                let key = plan.notice.to_string();
                // Counted before the surge: the waves wait for this many
                // Ready, not for what a view that lags the surge shows.
                let before: Vec<usize> = {
                    let view = self.cluster.view();
                    workloads
                        .iter()
                        .map(|(w, _)| view.workload(w).map_or(0, |x| x.replicas as usize))
                        .collect()
                };
                // All at once: in a burst the adapter can then patch each
                // Deployment once for every response that surges it.
                let raised = join_all(workloads.iter().map(|(w, by)| self.cluster.surge(w, &key, *by))).await;
                let mut added = Vec::new();
                for (((w, by), before), r) in workloads.iter().zip(before).zip(raised) {
                    if r.map_err(|x| e(&x))? {
                        added.push((w.clone(), SurgeTarget::new(before + *by as usize)));
                    }
                }
                let count = added.len();
                self.open.surged_to(&plan.notice, added);
                Ok(format!("ok: {count} of {} deployments raised", workloads.len()))
            }
            Step::EndSurge { workloads } => {
                let key = plan.notice.to_string();
                let lowered = join_all(workloads.iter().map(|(w, _)| self.cluster.end_surge(w, &key))).await;
                let mut ended = 0;
                for r in lowered {
                    if r.map_err(|x| e(&x))? {
                        ended += 1;
                    }
                }
                Ok(match workloads.len() - ended {
                    0 => format!("ok: {ended} of {} deployments lowered back", workloads.len()),
                    before => format!(
                        "ok: {ended} of {} deployments lowered back ({before} had none of this response's \
                         surge left: lowered with their wave, or never raised)",
                        workloads.len()
                    ),
                })
            }
            // `run_recorded` runs a wave itself, unboxed; this arm is what
            // any other caller of `run_step` gets, the same wave.
            Step::Evict { pods, wave } => self.evict_wave(plan, pods, *wave, deadline).await,
            Step::RestoreCapacity { key, pools } => {
                self.cloud.restore_capacity(key, pools).await.map_err(|x| e(&x))
            }
            Step::ReturnStandby { node } => Ok(if self.returns_standbys {
                format!("ok: the warm-pool keeper returns {node} once other nodes can hold its pods")
            } else {
                format!("deferred: {node} stays in service (no warm-pool keeper runs)")
            }),
            Step::RetireNode { node, after, bridge, once_room, surges } => {
                let how = Retirement { after: *after, bridge: *bridge, once_room: *once_room, surges };
                self.retire(&plan.notice, node, how).await
            }
            Step::HoldReplacements { key, until } => self.hold_replacements(key, *until).await,
            Step::RestoreHeadroom { placeholders } => {
                let ready = self
                    .wait_until(deadline.saturating_add(self.waits.after_deadline), |v| {
                        whole(v, displaced, &plan.node, self.left_until(plan, deadline))
                    })
                    .await;
                self.cluster.scale_placeholders(*placeholders).await.map_err(|x| e(&x))?;
                let note = if ready { "" } else { " (displaced workloads were not whole yet)" };
                Ok(format!("ok: {placeholders} placeholders wanted{note}; plan for {}", plan.node))
            }
        }
    }
}

struct CloseOnDrop<'a>(&'a OpenResponses, &'a costop_core::NoticeKey);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.closed(self.1);
    }
}

/// The reason of a step's node Event: `Costop` and the step's kind in
/// camel case (`CostopTaintAndCordon`).
pub fn event_reason(step: &Step) -> String {
    format!("Costop{}", step.kind().split('-').map(capitalize).collect::<String>())
}

/// What running `step` would do, in words, for a dry run's record
/// (`returns_standbys`: a warm-pool keeper runs and would return woken
/// standbys).
pub fn would_do(step: &Step, returns_standbys: bool) -> String {
    let list = |names: &[String]| {
        const SHOWN: usize = 10;
        let mut text = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if names.len() > SHOWN {
            text.push_str(&format!(" and {} more", names.len() - SHOWN));
        }
        text
    };
    match step {
        Step::TaintAndCordon { node } => {
            format!("would taint {node} with {INTERRUPTION_TAINT}:NoSchedule and cordon it")
        }
        Step::DeregisterTargets { node } => {
            format!("would deregister {node} from every load balancer target group")
        }
        Step::ClaimHeadroom { placeholders } => format!(
            "would delete {} placeholder pods for the evicted pods' room: {}",
            placeholders.len(),
            list(placeholders)
        ),
        Step::WakeStandby { node, retype_to } => format!(
            "would start standby {node}{} and take its standby taint off",
            retype_to.as_deref().map(|t| format!(" as {t}")).unwrap_or_default()
        ),
        Step::MoveVolume { volume_id, from_node, to_node, to_zone, via_snapshot } => format!(
            "would move volume {volume_id} from {from_node} to {to_node} ({to_zone}){} once its pod stops",
            if *via_snapshot { " through a snapshot" } else { "" }
        ),
        Step::BridgeTraffic { workloads } => {
            format!("would shift part of the traffic of {} to their functions", list(workloads))
        }
        Step::UnbridgeTraffic { workloads } => format!(
            "would shift the traffic of {} back from their functions once their pods are Ready",
            list(workloads)
        ),
        Step::Evict { pods, wave } if pods.is_empty() => format!(
            "would evict the pods bound to the node after this plan was made, if any (wave {wave}), within \
             their budgets"
        ),
        Step::Evict { pods, wave } => {
            format!(
                "would evict {} pods (wave {wave}) within their budgets (deleting those still refused shortly \
                 before the deadline): {}",
                pods.len(),
                list(pods)
            )
        }
        Step::ForgetNode { node } => {
            format!("would delete the pods on {node} with no grace and then {node}: its instance is gone")
        }
        Step::Surge { workloads } => format!(
            "would raise the replicas of {} until the old pods are evicted",
            workloads.iter().map(|(w, n)| format!("{w} by {n}")).collect::<Vec<_>>().join(", ")
        ),
        Step::EndSurge { workloads } => format!(
            "would lower the replicas of {} back by what the surge added",
            workloads.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>().join(", ")
        ),
        Step::RestoreCapacity { pools, .. } => format!(
            "would launch {}",
            pools.iter().map(|(p, n)| format!("{n}×{p}")).collect::<Vec<_>>().join(", ")
        ),
        Step::ReturnStandby { node } => {
            if returns_standbys {
                format!("would return {node} to standby once other nodes can hold its pods")
            } else {
                format!("would leave {node} in service (no warm-pool keeper runs)")
            }
        }
        Step::RetireNode { node, after, bridge, once_room, surges } => format!(
            "would drain {node}{}{} and end its instance {} {} unless an interruption follows",
            if surges.is_empty() {
                String::new()
            } else {
                format!(" ({} deployments surged first)", surges.len())
            },
            if *bridge { " (its workloads bridged to their functions)" } else { "" },
            if *once_room { "once other nodes have room for its pods, by" } else { "at" },
            costop_core::time::format_rfc3339(*after)
        ),
        Step::RestoreHeadroom { placeholders } => {
            format!("would set the placeholder pods to {placeholders} once the displaced workloads are whole")
        }
        Step::HoldReplacements { key, until } => format!(
            "would mark the nodes launched for {key} scale-down-disabled until {}",
            costop_core::time::format_rfc3339(*until)
        ),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use costop_core::model::{NodeView, PoolId};
    use costop_core::notice::InstanceAction;
    use costop_core::ports::Evicted;
    use costop_core::{NoticeKind, NoticeSource};
    use costop_store::MemoryStore;
    use std::sync::Mutex;

    #[derive(Debug, thiserror::Error)]
    #[error("fake")]
    struct Never;

    /// A cluster that refuses every change (a dry run must make none) and
    /// keeps the Events put on nodes.
    #[derive(Default)]
    struct ReadOnlyCluster {
        events: Mutex<Vec<(String, String, String)>>,
    }

    impl ClusterPort for ReadOnlyCluster {
        type Error = Never;
        fn view(&self) -> Arc<ClusterView> {
            Arc::new(ClusterView::default())
        }
        async fn taint_and_cordon(&self, node: &str) -> Result<(), Never> {
            panic!("dry run tainted {node}")
        }
        async fn untaint_and_uncordon(&self, node: &str) -> Result<(), Never> {
            panic!("dry run uncordoned {node}")
        }
        async fn untaint_standby(&self, node: &str) -> Result<(), Never> {
            panic!("dry run untainted {node}")
        }
        async fn taint_standby(&self, node: &str, _: costop_core::StandbyMode) -> Result<(), Never> {
            panic!("dry run put {node} on standby")
        }
        async fn evict(&self, pod: &str) -> Result<Evicted, Never> {
            panic!("dry run evicted {pod}")
        }
        async fn delete_doomed_pod(&self, pod: &str) -> Result<Evicted, Never> {
            panic!("dry run deleted {pod}")
        }
        async fn surge(&self, workload: &str, _: &str, _: u32) -> Result<bool, Never> {
            panic!("dry run surged {workload}")
        }
        async fn forget_node(&self, node: &str) -> Result<usize, Never> {
            panic!("dry run forgot {node}")
        }
        async fn end_surge(&self, workload: &str, _: &str) -> Result<bool, Never> {
            panic!("dry run ended the surge of {workload}")
        }
        async fn scale_placeholders(&self, _: u32) -> Result<(), Never> {
            panic!("dry run scaled placeholders")
        }
        async fn claim_placeholders(&self, _: &[String]) -> Result<(), Never> {
            panic!("dry run claimed placeholders")
        }
        fn volume_in_use(&self, _: &str, _: &str) -> bool {
            true
        }
        fn workload_pods_bound(&self, _: &str) -> usize {
            0
        }
        async fn delete_node(&self, node: &str) -> Result<(), Never> {
            panic!("dry run deleted {node}")
        }
        async fn node_event(&self, node: &str, reason: &str, message: &str) -> Result<(), Never> {
            self.events.lock().unwrap().push((node.into(), reason.into(), message.into()));
            Ok(())
        }
        async fn warn_pod_left(&self, pod: &str, _: &str) -> Result<(), Never> {
            panic!("dry run warned about {pod}")
        }
    }

    /// A Ready m5.large Spot node in us-east-1b that takes pods.
    fn spot_node(name: &str, instance_id: &str, in_load_balancer: bool) -> NodeView {
        NodeView {
            name: name.into(),
            instance_id: instance_id.into(),
            pool: PoolId::new("m5.large", "us-east-1b"),
            capacity_type: costop_core::CapacityType::Spot,
            allocatable: costop_core::Resources::new(2000, 8192),
            price_per_hour: 0.04,
            unschedulable: false,
            taints: vec![],
            ready: true,
            in_load_balancer,
            fallback: false,
        }
    }

    /// A cloud that refuses every call.
    struct NoCalls;

    impl CloudPort for NoCalls {
        type Error = Never;
        async fn deregister_targets(&self, _: &NodeView) -> Result<String, Never> {
            panic!("dry run deregistered targets")
        }
        async fn wake_standby(&self, _: &NodeView, _: Option<&str>) -> Result<String, Never> {
            panic!("dry run woke a standby")
        }
        async fn move_volume(&self, _: &str, _: &NodeView, _: bool, _: bool) -> Result<String, Never> {
            panic!("dry run moved a volume")
        }
        async fn bridge(&self, _: &[String], _: bool) -> Result<String, Never> {
            panic!("dry run bridged traffic")
        }
        async fn restore_capacity(&self, _: &str, _: &[(PoolId, u32)]) -> Result<String, Never> {
            panic!("dry run launched capacity")
        }
        async fn retire_node(&self, _: &NodeView) -> Result<String, Never> {
            panic!("dry run retired a node")
        }
    }

    /// A clock that never waits (a dry run must not wait anyway).
    struct Instant;

    impl Clock for Instant {
        fn now_ms(&self) -> Millis {
            5_000
        }
        async fn sleep(&self, _: Duration) {}
    }

    #[tokio::test]
    async fn a_dry_run_records_what_each_step_would_do_and_changes_nothing() {
        let notice = Notice {
            instance_id: "i-0abc".into(),
            kind: NoticeKind::SpotInterruption { action: InstanceAction::Terminate, effective_at: 125_000 },
            received_at: 5_000,
            source: NoticeSource::Agent,
        };
        let pool = PoolId { instance_type: "m5.large".into(), zone: "us-east-1b".into() };
        let plan = Plan {
            notice: notice.key(),
            node: "node-1".into(),
            deadline: Some(125_000),
            steps: vec![
                Step::TaintAndCordon { node: "node-1".into() },
                Step::BridgeTraffic { workloads: vec!["web".into()] },
                Step::RestoreCapacity { key: "k".into(), pools: vec![(pool, 2)] },
                Step::MoveVolume {
                    volume_id: "vol-1".into(),
                    from_node: "node-1".into(),
                    to_node: "node-2".into(),
                    to_zone: "us-east-1b".into(),
                    via_snapshot: true,
                },
                Step::Evict { pods: vec!["default/web-1".into(), "default/web-2".into()], wave: 0 },
                Step::DeregisterTargets { node: "node-1".into() },
                Step::UnbridgeTraffic { workloads: vec!["web".into()] },
                Step::RestoreHeadroom { placeholders: 3 },
            ],
            unevictable: vec!["default/db-0".into()],
        };
        let store = Arc::new(MemoryStore::new());
        assert!(store.save_plan(&plan).await.unwrap());
        // The first step was recorded before a restart: it stays as it is.
        store.step_started(&plan.notice, 0, 4_000).await.unwrap();
        store.step_done(&plan.notice, 0, 4_001, "dry run: earlier").await.unwrap();
        let cluster = Arc::new(ReadOnlyCluster::default());
        let exec = Executor {
            store: store.clone(),
            cluster: cluster.clone(),
            cloud: Arc::new(NoCalls),
            clock: Arc::new(Instant),
            observer: Arc::new(crate::NoObserver),
            returns_standbys: false,
            open: Arc::new(OpenResponses::default()),
            no_move: Default::default(),
            waits: Waits::default(),
        };
        exec.rehearse(&plan).await;

        let record = store.response(&plan.notice).await.unwrap().unwrap();
        assert_eq!(record.done_at, Some(5_000), "the response is recorded as done");
        let outcomes: Vec<&str> = record.steps.iter().map(|s| s.outcome.as_deref().unwrap()).collect();
        assert_eq!(outcomes[0], "dry run: earlier");
        assert_eq!(
            outcomes[1..],
            [
                "dry run: would shift part of the traffic of web to their functions",
                "dry run: would launch 2×m5.large/us-east-1b",
                "dry run: would move volume vol-1 from node-1 to node-2 (us-east-1b) through a snapshot once its pod stops",
                "dry run: would evict 2 pods (wave 0) within their budgets (deleting those still refused shortly \
                 before the deadline): default/web-1, default/web-2",
                "dry run: would deregister node-1 from every load balancer target group",
                "dry run: would shift the traffic of web back from their functions once their pods are Ready",
                "dry run: would set the placeholder pods to 3 once the displaced workloads are whole",
            ]
        );
        assert!(record.steps.iter().all(|s| s.started_at.is_some() && s.done_at.is_some()));
        assert!(store.unfinished().await.unwrap().is_empty());
        let events = cluster.events.lock().unwrap().clone();
        assert_eq!(events.len(), 7, "one Event per step run: {events:?}");
        assert_eq!(
            events[0],
            (
                "node-1".to_string(),
                "CostopBridgeTraffic".to_string(),
                "dry run: would shift part of the traffic of web to their functions".to_string()
            )
        );
        assert!(events.iter().all(|(node, reason, message)| node == "node-1"
            && reason.starts_with("Costop")
            && message.starts_with("dry run: would ")));
    }

    #[test]
    fn long_lists_are_cut_short_and_standbys_follow_the_keeper() {
        let pods: Vec<String> = (0..13).map(|i| format!("p{i}")).collect();
        let said = would_do(&Step::Evict { pods, wave: 1 }, false);
        assert!(said.starts_with("would evict 13 pods (wave 1)"), "{said}");
        assert!(said.ends_with("p9 and 3 more"), "{said}");
        let ret = Step::ReturnStandby { node: "sb-1".into() };
        assert!(would_do(&ret, true).contains("return sb-1 to standby"));
        assert!(would_do(&ret, false).contains("leave sb-1 in service"));
        assert_eq!(
            would_do(&Step::TaintAndCordon { node: "n".into() }, false),
            format!("would taint n with {INTERRUPTION_TAINT}:NoSchedule and cordon it")
        );
        assert_eq!(event_reason(&Step::RestoreHeadroom { placeholders: 1 }), "CostopRestoreHeadroom");
    }

    /// A clock that waits by moving its own time forward.
    #[derive(Default)]
    struct Stepping(std::sync::atomic::AtomicU64);

    impl Clock for Stepping {
        fn now_ms(&self) -> Millis {
            self.0.load(Ordering::SeqCst)
        }
        async fn sleep(&self, d: Duration) {
            self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
        }
    }

    /// An executor over `cluster` and `cloud` whose waits move `clock`
    /// forward, with a store in memory and no warm-pool keeper.
    fn stepping_executor<K: ClusterPort + Send + Sync + 'static, C: CloudPort + 'static>(
        cluster: Arc<K>,
        cloud: Arc<C>,
        clock: Arc<Stepping>,
    ) -> Executor<MemoryStore, K, C, Stepping> {
        test_executor(cluster, cloud, clock)
    }

    /// An executor over `cluster` and `cloud` on `clock`, with a store in
    /// memory and no warm-pool keeper.
    fn test_executor<K: ClusterPort + Send + Sync + 'static, C: CloudPort + 'static, T: Clock + 'static>(
        cluster: Arc<K>,
        cloud: Arc<C>,
        clock: Arc<T>,
    ) -> Executor<MemoryStore, K, C, T> {
        Executor {
            store: Arc::new(MemoryStore::new()),
            cluster,
            cloud,
            clock,
            observer: Arc::new(crate::NoObserver),
            returns_standbys: false,
            open: Arc::new(OpenResponses::default()),
            no_move: Default::default(),
            waits: Waits::default(),
        }
    }

    /// A cluster whose node-1 is tainted for an interruption at 60 s, and
    /// which tells of changes: waiting for one moves the clock to 60 s.
    /// A cluster whose node-1 is gone after one minute (its instance
    /// reclaimed), and which tells when its view changes.
    struct GoneAtOneMinute {
        clock: Arc<Stepping>,
        before: Arc<ClusterView>,
        after: Arc<ClusterView>,
        looks: AtomicUsize,
    }

    impl GoneAtOneMinute {
        fn new(clock: Arc<Stepping>) -> Self {
            let node = spot_node("node-1", "i-1", true);
            Self {
                clock,
                before: Arc::new(ClusterView { nodes: vec![node].into(), ..ClusterView::default() }),
                after: Arc::new(ClusterView::default()),
                looks: AtomicUsize::new(0),
            }
        }
    }

    impl ClusterPort for GoneAtOneMinute {
        type Error = Never;
        fn view(&self) -> Arc<ClusterView> {
            self.looks.fetch_add(1, Ordering::SeqCst);
            if self.clock.now_ms() >= 60_000 {
                self.after.clone()
            } else {
                self.before.clone()
            }
        }
        const NOTIFIES_CHANGES: bool = true;
        async fn changed_since(&self, seen: &Arc<ClusterView>) {
            if Arc::ptr_eq(seen, &self.before) {
                self.clock.0.fetch_max(60_000, Ordering::SeqCst);
            }
        }
        async fn taint_and_cordon(&self, node: &str) -> Result<(), Never> {
            panic!("tainted {node}: the interruption's response does that")
        }
        async fn untaint_and_uncordon(&self, node: &str) -> Result<(), Never> {
            panic!("uncordoned {node}")
        }
        async fn untaint_standby(&self, node: &str) -> Result<(), Never> {
            panic!("untainted {node}")
        }
        async fn taint_standby(&self, node: &str, _: costop_core::StandbyMode) -> Result<(), Never> {
            panic!("put {node} on standby")
        }
        async fn evict(&self, pod: &str) -> Result<Evicted, Never> {
            panic!("evicted {pod}")
        }
        async fn delete_doomed_pod(&self, pod: &str) -> Result<Evicted, Never> {
            panic!("deleted {pod}")
        }
        async fn surge(&self, workload: &str, _: &str, _: u32) -> Result<bool, Never> {
            panic!("surged {workload}")
        }
        async fn forget_node(&self, node: &str) -> Result<usize, Never> {
            panic!("forgot {node}")
        }
        async fn end_surge(&self, workload: &str, _: &str) -> Result<bool, Never> {
            panic!("ended the surge of {workload}")
        }
        async fn scale_placeholders(&self, _: u32) -> Result<(), Never> {
            panic!("scaled placeholders")
        }
        async fn claim_placeholders(&self, _: &[String]) -> Result<(), Never> {
            panic!("claimed placeholders")
        }
        fn volume_in_use(&self, _: &str, _: &str) -> bool {
            false
        }
        fn workload_pods_bound(&self, _: &str) -> usize {
            0
        }
        async fn delete_node(&self, node: &str) -> Result<(), Never> {
            panic!("deleted {node}")
        }
        async fn node_event(&self, _: &str, _: &str, _: &str) -> Result<(), Never> {
            Ok(())
        }
        async fn warn_pod_left(&self, pod: &str, _: &str) -> Result<(), Never> {
            panic!("warned about {pod}")
        }
    }

    #[tokio::test]
    async fn a_wait_wakes_when_the_cluster_changes_instead_of_looking_each_second() {
        let clock = Arc::new(Stepping::default());
        let cluster = Arc::new(GoneAtOneMinute::new(clock.clone()));
        let exec = stepping_executor(cluster.clone(), Arc::new(NoCalls), clock.clone());
        // A node a recommendation replaced is to be retired at 15 min; it is
        // gone at 1 min, and the retirement is skipped then.
        let how = Retirement { after: 15 * 60_000, bridge: false, once_room: false, surges: &[] };
        let key = costop_core::NoticeKey {
            instance_id: "i-1".into(),
            kind: "rebalance-recommendation".into(),
            stated_time: 0,
        };
        let outcome = exec.retire(&key, "node-1", how).await;
        assert!(outcome.as_ref().is_ok_and(|o| o.starts_with("skipped")), "{outcome:?}");
        assert!(clock.now_ms() < 62_000, "noticed at {} ms", clock.now_ms());
        // Looking each second would have taken 60 looks.
        let looks = cluster.looks.load(Ordering::SeqCst);
        assert!(looks <= 5, "{looks} looks at the cluster");
    }

    /// A cluster that shows `view` from `shown_from` on (an empty one
    /// before), lets every cordon, eviction, surge and scale-down mark
    /// through, and notes when each eviction and mark came.
    struct Recording {
        clock: Arc<Stepping>,
        view: Arc<ClusterView>,
        shown_from: Millis,
        evicted: Mutex<Vec<(String, Millis)>>,
        marks: Mutex<Vec<(String, bool, Millis)>>,
        /// Pods whose budget refuses every eviction.
        refused: HashSet<String>,
        /// Pods whose eviction is never answered (a stuck request).
        hangs: HashSet<String>,
        deleted: Mutex<Vec<(String, Millis)>>,
        /// Workloads whose surge was lowered back, when, and how many pods
        /// had been deleted by then.
        ended: Mutex<Vec<(String, Millis, usize)>>,
        /// Pods said to be left on their node, with why.
        warned: Mutex<Vec<(String, String)>>,
        /// Whether an eviction answers only after a turn of the runtime.
        answers_after_a_turn: bool,
        /// Evictions on their way now, and the most at once.
        asking: AtomicUsize,
        most_asking: AtomicUsize,
        /// Surges raised, and when.
        surged: Mutex<Vec<(String, Millis)>>,
        /// The view shown once a surge was raised, if another.
        after_surge: Option<Arc<ClusterView>>,
        /// Pods evicted by the time each surge was lowered.
        evicted_when_ended: Mutex<Vec<usize>>,
        /// Whether a Node may be deleted (else a deletion is a failure)
        /// and the ones deleted.
        deletes_nodes: bool,
        nodes_deleted: Mutex<Vec<String>>,
        /// Nodes given back to service (untainted and uncordoned).
        uncordoned: Mutex<Vec<String>>,
    }

    impl Recording {
        fn new(clock: Arc<Stepping>, view: ClusterView, shown_from: Millis) -> Self {
            Self {
                clock,
                view: Arc::new(view),
                shown_from,
                evicted: Mutex::new(Vec::new()),
                marks: Mutex::new(Vec::new()),
                refused: HashSet::new(),
                hangs: HashSet::new(),
                deleted: Mutex::new(Vec::new()),
                ended: Mutex::new(Vec::new()),
                warned: Mutex::new(Vec::new()),
                answers_after_a_turn: false,
                asking: AtomicUsize::new(0),
                most_asking: AtomicUsize::new(0),
                surged: Mutex::new(Vec::new()),
                after_surge: None,
                evicted_when_ended: Mutex::new(Vec::new()),
                deletes_nodes: false,
                nodes_deleted: Mutex::new(Vec::new()),
                uncordoned: Mutex::new(Vec::new()),
            }
        }
    }

    impl ClusterPort for Recording {
        type Error = std::io::Error;
        fn view(&self) -> Arc<ClusterView> {
            if let Some(after) = self.after_surge.as_ref().filter(|_| !self.surged.lock().unwrap().is_empty())
            {
                after.clone()
            } else if self.clock.now_ms() >= self.shown_from {
                self.view.clone()
            } else {
                Arc::new(ClusterView::default())
            }
        }
        async fn taint_and_cordon(&self, _: &str) -> Result<(), std::io::Error> {
            Ok(())
        }
        async fn untaint_and_uncordon(&self, node: &str) -> Result<(), std::io::Error> {
            self.uncordoned.lock().unwrap().push(node.to_string());
            Ok(())
        }
        async fn untaint_standby(&self, node: &str) -> Result<(), std::io::Error> {
            panic!("untainted {node}")
        }
        async fn taint_standby(&self, node: &str, _: costop_core::StandbyMode) -> Result<(), std::io::Error> {
            panic!("put {node} on standby")
        }
        async fn evict(&self, pod: &str) -> Result<Evicted, std::io::Error> {
            let asked_at = self.clock.now_ms();
            let asked = self.asking.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_asking.fetch_max(asked, Ordering::SeqCst);
            if self.answers_after_a_turn {
                // On its way for a turn of the runtime, as a request is.
                // (Not in every test: this clock's sleeps jump at once, so
                // a waiting response would move it on while it is asked.)
                tokio::task::yield_now().await;
            }
            self.asking.fetch_sub(1, Ordering::SeqCst);
            if self.hangs.contains(pod) {
                return std::future::pending().await;
            }
            if self.refused.contains(pod) {
                return Ok(Evicted::Refused);
            }
            self.evicted.lock().unwrap().push((pod.to_string(), asked_at));
            Ok(Evicted::Accepted)
        }
        async fn delete_doomed_pod(&self, pod: &str) -> Result<Evicted, std::io::Error> {
            // As large across an await as the Kubernetes adapter's delete
            // (a request and an Event): see
            // `a_waiting_eviction_does_not_hold_room_for_the_delete`.
            let request = std::hint::black_box([0u8; 4096]);
            self.clock.sleep(Duration::ZERO).await;
            std::hint::black_box(&request);
            self.deleted.lock().unwrap().push((pod.to_string(), self.clock.now_ms()));
            Ok(Evicted::Accepted)
        }
        async fn surge(&self, workload: &str, _: &str, _: u32) -> Result<bool, std::io::Error> {
            // As large across an await as the Kubernetes adapter's (a read
            // and a patch): see `a_waiting_response_holds_little`.
            let request = std::hint::black_box([0u8; 8192]);
            self.clock.sleep(Duration::ZERO).await;
            std::hint::black_box(&request);
            self.surged.lock().unwrap().push((workload.to_string(), self.clock.now_ms()));
            Ok(true)
        }
        async fn forget_node(&self, node: &str) -> Result<usize, std::io::Error> {
            panic!("forgot {node}")
        }
        async fn end_surge(&self, workload: &str, _: &str) -> Result<bool, std::io::Error> {
            let deleted = self.deleted.lock().unwrap().len();
            self.evicted_when_ended.lock().unwrap().push(self.evicted.lock().unwrap().len());
            let mut ended = self.ended.lock().unwrap();
            let first = !ended.iter().any(|(w, _, _)| w == workload);
            ended.push((workload.to_string(), self.clock.now_ms(), deleted));
            Ok(first)
        }
        async fn scale_placeholders(&self, _: u32) -> Result<(), std::io::Error> {
            panic!("scaled placeholders")
        }
        async fn claim_placeholders(&self, _: &[String]) -> Result<(), std::io::Error> {
            panic!("claimed placeholders")
        }
        fn volume_in_use(&self, _: &str, _: &str) -> bool {
            false
        }
        fn workload_pods_bound(&self, _: &str) -> usize {
            0
        }
        async fn delete_node(&self, node: &str) -> Result<(), std::io::Error> {
            assert!(self.deletes_nodes, "deleted {node}");
            self.nodes_deleted.lock().unwrap().push(node.to_string());
            Ok(())
        }
        async fn node_event(&self, _: &str, _: &str, _: &str) -> Result<(), std::io::Error> {
            Ok(())
        }
        async fn hold_from_scale_down(&self, node: &str, hold: bool) -> Result<(), std::io::Error> {
            self.marks.lock().unwrap().push((node.to_string(), hold, self.clock.now_ms()));
            Ok(())
        }
        async fn warn_pod_left(&self, pod: &str, why: &str) -> Result<(), std::io::Error> {
            self.warned.lock().unwrap().push((pod.to_string(), why.to_string()));
            Ok(())
        }
    }

    /// `web` (a Deployment, surged by one) never gets its extra replica
    /// Ready; `db` (a StatefulSet) is on the same node.
    fn surge_never_ready() -> ClusterView {
        let pod = |name: &str, workload: &str| costop_core::PodView {
            name: name.into(),
            workload: Some(workload.into()),
            node: Some("node-1".into()),
            requests: costop_core::Resources::new(500, 512),
            priority: 0,
            ready: true,
            placeholder: false,
            daemon: false,
            volumes: vec![],
        };
        let workload = |name: &str, replicas, surgeable| costop_core::WorkloadView {
            name: name.into(),
            replicas,
            min_available: 0,
            bridged: false,
            surgeable,
        };
        ClusterView {
            pods: vec![pod("default/web-1", "web"), pod("default/db-0", "db")].into(),
            // The surge asked for a second web replica; it never comes.
            workloads: vec![workload("web", 2, true), workload("db", 1, false)],
            ..ClusterView::default()
        }
    }

    /// `view` with `extra` more web pods Ready on node-2 (a surge's), and
    /// web's replicas (the ones before the surge) as they stand.
    fn with_extra_web_ready(mut view: ClusterView, extra: usize) -> ClusterView {
        let web = view.pods.iter().find(|p| p.workload.as_deref() == Some("web")).map(|p| (**p).clone());
        let mut pods: Vec<Arc<costop_core::PodView>> = view.pods.iter().cloned().collect();
        for i in 0..extra {
            let mut pod = web.clone().expect("a web pod");
            pod.name = format!("default/web-surge-{i}").into();
            pod.node = Some("node-2".into());
            pods.push(pod.into());
        }
        view.pods = pods.into();
        view
    }

    /// A wave's surged pods wait for the surge's extra replicas, counted
    /// from the replicas before it, even while the view still shows the
    /// old count (web: 1 replica, Ready); the other pods go at once.
    #[tokio::test]
    async fn pods_of_workloads_not_surged_are_evicted_without_waiting_for_the_surge() {
        let mut old_count = surge_never_ready();
        old_count.workloads[0].replicas = 1;
        for view in [surge_never_ready(), old_count] {
            let clock = Arc::new(Stepping::default());
            let cluster = Arc::new(Recording::new(clock.clone(), view, 0));
            let exec = stepping_executor(cluster.clone(), Arc::new(NoCalls), clock.clone());
            let deadline = 120_000;
            let plan = web_surge_plan(deadline, 1, &[&["default/web-1", "default/db-0"]]);
            exec.execute_new(Arc::new(plan), 0).await;
            let evicted = cluster.evicted.lock().unwrap().clone();
            let deleted = cluster.deleted.lock().unwrap().clone();
            let at =
                |pod: &str, list: &[(String, Millis)]| list.iter().find(|(p, _)| p == pod).map(|(_, t)| *t);
            // db is not surged: it goes at once. web waits for its surge, here
            // until 40 s before the deadline: past the time its eviction would
            // be given up for a delete (45 s before), so it is deleted then,
            // with no eviction asked first.
            assert_eq!(at("default/db-0", &evicted), Some(0), "{evicted:?}");
            assert_eq!(at("default/web-1", &evicted), None, "went before its surge: {evicted:?}");
            assert_eq!(
                at("default/web-1", &deleted),
                Some(deadline - SURGE_EVICT_BEFORE_DEADLINE),
                "{deleted:?}"
            );
        }
    }

    /// A retirement (a rebalance recommendation's, a move's) surges the
    /// node's Deployments first and evicts their pods once the extra
    /// replicas are Ready (counted from the replicas before the surge: a
    /// view still showing the old count does not pass), or after
    /// [`RETIRE_SURGE_WAIT`] at the latest; the StatefulSet's pod goes at
    /// once; the surge is lowered once the node is drained, and the node
    /// ended.
    #[tokio::test]
    async fn a_retirement_surges_first_and_lowers_the_surge_once_drained() {
        let node = spot_node("node-1", "i-1", false);
        // Before the surge: web has its one replica, Ready, on node-1.
        let mut before = surge_never_ready();
        before.workloads[0].replicas = 1;
        before.nodes = vec![node].into();
        // Once raised: two replicas, the new one Ready elsewhere.
        let mut raised = before.clone();
        raised.workloads[0].replicas = 2;
        let mut extra = (*raised.pods[0]).clone();
        extra.name = "default/web-2".into();
        extra.node = Some("node-2".into());
        raised.pods.push(extra.into());
        for (surge_comes, evicted_at) in [(true, 0), (false, RETIRE_SURGE_WAIT)] {
            let clock = Arc::new(Stepping::default());
            let mut cluster = Recording::new(clock.clone(), before.clone(), 0);
            cluster.after_surge = surge_comes.then(|| Arc::new(raised.clone()));
            cluster.deletes_nodes = true;
            let cluster = Arc::new(cluster);
            let exec = stepping_executor(
                cluster.clone(),
                Arc::new(FewCalls { ends_instances: true }),
                clock.clone(),
            );
            let surges = [("web".to_string(), 1)];
            let how = Retirement { after: 0, bridge: false, once_room: false, surges: &surges };
            let key = costop_core::NoticeKey {
                instance_id: "i-1".into(),
                kind: "move-back".into(),
                stated_time: 0,
            };
            let outcome = exec.retire(&key, "node-1", how).await;
            assert_eq!(outcome, Ok("ok: drained, no interruption came; node-1 terminated".to_string()));
            assert_eq!(*cluster.surged.lock().unwrap(), [("web".to_string(), 0)]);
            let evicted = cluster.evicted.lock().unwrap().clone();
            let at = |pod: &str| evicted.iter().find(|(p, _)| p == pod).map(|(_, t)| *t);
            assert_eq!(
                (at("default/db-0"), at("default/web-1")),
                (Some(0), Some(evicted_at)),
                "surge comes {surge_comes}: {evicted:?}"
            );
            // Lowered once, after both pods were evicted.
            let ended: Vec<String> =
                cluster.ended.lock().unwrap().iter().map(|(w, _, _)| w.clone()).collect();
            assert_eq!(ended, ["web".to_string()]);
            assert_eq!(*cluster.evicted_when_ended.lock().unwrap(), [2]);
            assert_eq!(*cluster.nodes_deleted.lock().unwrap(), ["node-1".to_string()]);
        }
    }

    /// A retirement whose evictions a budget refuses for the whole drain
    /// gives its node back: uncordoned, not ended, its surge lowered.
    #[tokio::test]
    async fn a_retirement_that_cannot_drain_gives_its_node_back() {
        let clock = Arc::new(Stepping::default());
        let mut view = surge_never_ready();
        view.nodes = vec![spot_node("node-1", "i-1", false)].into();
        let mut cluster = Recording::new(clock.clone(), view, 0);
        cluster.refused.insert("default/db-0".into());
        let cluster = Arc::new(cluster);
        // Ends no instance: a call to end node-1 fails the test.
        let exec =
            stepping_executor(cluster.clone(), Arc::new(FewCalls { ends_instances: false }), clock.clone());
        let surges = [("web".to_string(), 1)];
        let how = Retirement { after: 0, bridge: false, once_room: false, surges: &surges };
        let key =
            costop_core::NoticeKey { instance_id: "i-1".into(), kind: "move-back".into(), stated_time: 0 };
        let outcome = exec.retire(&key, "node-1", how).await;
        let failed = outcome.expect_err("the drain cannot finish");
        assert!(failed.starts_with("node-1 not retired: default/db-0"), "{failed}");
        assert!(failed.ends_with("; uncordoned, it stays in service"), "{failed}");
        assert_eq!(*cluster.uncordoned.lock().unwrap(), ["node-1".to_string()]);
        assert_eq!(exec.no_move.resting(clock.now_ms()), ["node-1".to_string()], "a move given back rests");
        assert!(cluster.nodes_deleted.lock().unwrap().is_empty());
        assert_eq!(cluster.ended.lock().unwrap().len(), 1, "the surge is lowered");
        assert!(clock.now_ms() >= RETIRE_DRAIN, "gave up at {} ms", clock.now_ms());
    }

    /// A move whose node finds no room by its deadline leaves the node
    /// resting from moves for [`MOVE_REST`]; so does one given back.
    #[tokio::test]
    async fn a_move_that_cannot_finish_rests_its_node() {
        let clock = Arc::new(Stepping::default());
        let mut view = surge_never_ready();
        view.nodes = vec![spot_node("node-1", "i-1", false)].into();
        let cluster = Arc::new(Recording::new(clock.clone(), view, 0));
        let exec =
            stepping_executor(cluster.clone(), Arc::new(FewCalls { ends_instances: false }), clock.clone());
        // node-1 is the only node: no room elsewhere, ever.
        let how = Retirement { after: 60_000, bridge: false, once_room: true, surges: &[] };
        let key =
            costop_core::NoticeKey { instance_id: "i-1".into(), kind: "move-back".into(), stated_time: 0 };
        let outcome = exec.retire(&key, "node-1", how).await.expect("skipped, not failed");
        assert!(outcome.starts_with("skipped: no room"), "{outcome}");
        assert_eq!(exec.no_move.resting(clock.now_ms()), ["node-1".to_string()]);
        assert!(exec.no_move.resting(clock.now_ms() + MOVE_REST).is_empty(), "rested an hour");
        // A rebalance recommendation's retirement rests nothing.
        let exec = stepping_executor(cluster, Arc::new(FewCalls { ends_instances: false }), clock.clone());
        let key = costop_core::NoticeKey { kind: "rebalance-recommendation".into(), ..key };
        let how = Retirement { after: clock.now_ms() + 60_000, bridge: false, once_room: true, surges: &[] };
        exec.retire(&key, "node-1", how).await.expect("skipped");
        assert!(exec.no_move.resting(clock.now_ms()).is_empty());
    }

    /// A retirement's node that an interruption's response came for while
    /// it drained is left to that response: drained, not ended.
    #[tokio::test(start_paused = true)]
    async fn a_retirement_leaves_a_node_interrupted_meanwhile_to_its_response() {
        let clock = Arc::new(Stepping::default());
        let mut view = surge_never_ready();
        view.nodes = vec![spot_node("node-1", "i-1", false)].into();
        let mut cluster = Recording::new(clock.clone(), view, 0);
        cluster.deletes_nodes = true;
        let cluster = Arc::new(cluster);
        // tokio's paused time: the retirement waits while the response opens.
        let paused = Arc::new(PausedClock(tokio::time::Instant::now()));
        let exec = test_executor(cluster.clone(), Arc::new(FewCalls { ends_instances: true }), paused);
        // The interruption's response opens while web's surge is awaited.
        let interruption = Arc::new(interruption_plan(120_000, vec![]));
        let surges = [("web".to_string(), 1)];
        let how = Retirement { after: 0, bridge: false, once_room: false, surges: &surges };
        let key =
            costop_core::NoticeKey { instance_id: "i-1".into(), kind: "move-back".into(), stated_time: 0 };
        let open = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            exec.open.opened(&interruption, vec![]);
        };
        let (outcome, ()) = futures::future::join(exec.retire(&key, "node-1", how), open).await;
        assert_eq!(
            outcome,
            Ok("drained; not ended: node-1 was interrupted meanwhile, its response goes on".to_string())
        );
        assert!(cluster.nodes_deleted.lock().unwrap().is_empty());
        assert_eq!(cluster.ended.lock().unwrap().len(), 1, "the surge is lowered all the same");
    }

    /// A surge ends with the wave that evicted its workload's last old
    /// pods, not with the plan's slowest wave (here a StatefulSet pod its
    /// budget keeps until the give-up time): the evicted pods' replacements
    /// would otherwise wait as Pending, the surge still counted, and have
    /// the node autoscaler launch for them.
    #[tokio::test]
    async fn a_surge_ends_with_the_wave_that_took_its_workloads_old_pods() {
        let clock = Arc::new(Stepping::default());
        let mut view = surge_never_ready();
        view.workloads[0].replicas = 1;
        let view = with_extra_web_ready(view, 1); // web's surge is Ready
        let mut cluster = Recording::new(clock.clone(), view, 0);
        cluster.refused.insert("default/db-0".into());
        let cluster = Arc::new(cluster);
        let exec = stepping_executor(cluster.clone(), Arc::new(NoCalls), clock.clone());
        let deadline = 120_000;
        let plan = web_surge_plan(deadline, 1, &[&["default/web-1"], &["default/db-0"]]);
        exec.execute_new(Arc::new(plan), 0).await;
        let ended = cluster.ended.lock().unwrap().clone();
        let deleted = cluster.deleted.lock().unwrap().clone();
        let give_up = deadline - Waits::default().delete_doomed_before;
        assert_eq!(deleted, [("default/db-0".to_string(), give_up)]);
        assert!(ended.first().is_some_and(|(w, at, _)| w == "web" && *at < 1_000), "{ended:?}");
    }

    /// A workload whose pods are split across waves keeps its surge until
    /// the plan's last step: the waves run at once, and an earlier wave's
    /// refused pod is still asked after a later wave is done.
    #[tokio::test(start_paused = true)]
    async fn a_surge_split_across_waves_ends_with_the_plan() {
        let clock = Arc::new(Stepping::default());
        let mut view = surge_never_ready();
        let mut second = (*view.pods[0]).clone();
        second.name = "default/web-2".into();
        view.pods = vec![view.pods[0].clone(), second.into()].into();
        let view = with_extra_web_ready(view, 2); // web's surge is Ready
        let mut cluster = Recording::new(clock.clone(), view, 0);
        cluster.refused.insert("default/web-1".into());
        let cluster = Arc::new(cluster);
        // tokio's paused time: the waves' waits overlap, as they do.
        let paused = Arc::new(PausedClock(tokio::time::Instant::now()));
        let exec = test_executor(cluster.clone(), Arc::new(NoCalls), paused);
        let plan = web_surge_plan(120_000, 2, &[&["default/web-1"], &["default/web-2"]]);
        exec.execute_new(Arc::new(plan), 0).await;
        let evicted: Vec<String> = cluster.evicted.lock().unwrap().iter().map(|(p, _)| p.clone()).collect();
        let deleted: Vec<String> = cluster.deleted.lock().unwrap().iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(
            (evicted, deleted),
            (vec!["default/web-2".to_string()], vec!["default/web-1".to_string()])
        );
        let ended = cluster.ended.lock().unwrap().clone();
        assert_eq!(ended.len(), 1, "{ended:?}");
        assert_eq!(ended[0].2, 1, "lowered while web-1 was still asked: {ended:?}");
    }

    /// The last wave looks for late arrivals again once the view has
    /// caught up: here the pod comes into view a second after the wave
    /// starts, and is evicted then.
    #[tokio::test]
    async fn a_late_arrival_seen_only_after_the_first_look_is_evicted_too() {
        let clock = Arc::new(Stepping::default());
        let cluster = Arc::new(Recording::new(clock.clone(), surge_never_ready(), 1_000));
        let exec = stepping_executor(cluster.clone(), Arc::new(NoCalls), clock.clone());
        let plan = interruption_plan(120_000, vec![Step::Evict { pods: vec![], wave: 0 }]);
        exec.execute_new(Arc::new(plan), 0).await;
        let evicted = cluster.evicted.lock().unwrap().clone();
        assert_eq!(evicted.len(), 2, "{evicted:?}");
        assert!(evicted.iter().all(|(_, at)| *at == LATE_ARRIVALS_AGAIN_AFTER), "{evicted:?}");
    }

    #[test]
    fn an_empty_wave_says_it_takes_the_pods_that_land_after_the_plan() {
        let said = would_do(&Step::Evict { pods: vec![], wave: 0 }, false);
        assert!(said.contains("bound to the node after this plan was made"), "{said}");
    }

    /// Pods bound to the node after the plan was made (between the notice
    /// and the cordon) are evicted by the last wave, also when the plan had
    /// nothing else to evict (a node empty at the notice): left alone they
    /// would die with it.
    #[tokio::test]
    async fn pods_that_landed_after_the_plan_are_evicted_even_from_a_node_planned_empty() {
        let clock = Arc::new(Stepping::default());
        let cluster = Arc::new(Recording::new(clock.clone(), surge_never_ready(), 0));
        let exec = stepping_executor(cluster.clone(), Arc::new(NoCalls), clock.clone());
        let plan = interruption_plan(120_000, vec![Step::Evict { pods: vec![], wave: 0 }]);
        exec.execute_new(Arc::new(plan), 0).await;
        let mut evicted: Vec<String> =
            cluster.evicted.lock().unwrap().iter().map(|(p, _)| p.clone()).collect();
        evicted.sort();
        assert_eq!(evicted, ["default/db-0", "default/web-1"]);
    }

    /// A whole pool's pods may be refused by their budgets at once (51,000
    /// at full size): they wait for their next attempt as data, with no
    /// more than a few requests of one response on their way, and each is
    /// still deleted at its give-up time.
    #[tokio::test]
    async fn refused_pods_wait_for_their_next_attempt_as_data_a_few_asked_at_a_time() {
        let clock = Arc::new(Stepping::default());
        let mut view = surge_never_ready();
        let template = (*view.pods[0]).clone();
        let names: Vec<String> = (0..200).map(|i| format!("default/db-{i}")).collect();
        let mut cluster = Recording::new(clock.clone(), ClusterView::default(), 0);
        for name in &names {
            let mut pod = template.clone();
            pod.name = name.as_str().into();
            view.pods.push(pod.into());
            cluster.refused.insert(name.clone());
        }
        cluster.view = Arc::new(view);
        cluster.answers_after_a_turn = true;
        let cluster = Arc::new(cluster);
        let exec = stepping_executor(cluster.clone(), Arc::new(NoCalls), clock.clone());
        let deadline = 120_000;
        let pods: Vec<&String> = names.iter().collect();
        let tally = exec.evict_all(&pods, deadline).await;
        assert_eq!(tally.deleted, 200, "{:?}", tally.refused);
        let most = cluster.most_asking.load(Ordering::SeqCst);
        assert!((2..=crate::evictions::ASKED_AT_ONCE).contains(&most), "{most} evictions asked at once");
        let give_up = deadline - Waits::default().delete_doomed_before;
        let deleted = cluster.deleted.lock().unwrap().clone();
        assert!(deleted.iter().all(|(_, at)| *at == give_up), "{deleted:?}");
    }

    /// tokio's clock: in a test started paused, time moves on when every
    /// task waits, and waits that overlap take the longest of them, not
    /// their sum (as [`Stepping`] would).
    struct PausedClock(tokio::time::Instant);

    impl Clock for PausedClock {
        fn now_ms(&self) -> Millis {
            self.0.elapsed().as_millis() as Millis
        }
        async fn sleep(&self, d: Duration) {
            tokio::time::sleep(d).await
        }
    }

    /// Requests that are never answered (a stuck connection) hold their
    /// set's turns only until their pod's give-up time (a lead: the pod is
    /// deleted then) or the deadline (none: it is reported left). While
    /// eight are stuck the set's later pods wait, so the good ones come
    /// first here.
    #[tokio::test(start_paused = true)]
    async fn stuck_requests_are_given_up_and_do_not_stall_their_set() {
        let clock = Arc::new(Stepping::default());
        let mut view = surge_never_ready();
        let template = (*view.pods[0]).clone();
        let mut cluster = Recording::new(clock.clone(), ClusterView::default(), 0);
        let names: Vec<String> = (0..12).map(|i| format!("default/p-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            let mut pod = template.clone();
            pod.name = name.as_str().into();
            // The first four are evicted; the next four are bare pods (no
            // lead) and the last four replaced (a lead), and those hang.
            if (4..8).contains(&i) {
                pod.workload = None;
            }
            view.pods.push(pod.into());
            if i >= 4 {
                cluster.hangs.insert(name.clone());
            }
        }
        cluster.view = Arc::new(view);
        let cluster = Arc::new(cluster);
        let paused = Arc::new(PausedClock(tokio::time::Instant::now()));
        let exec = test_executor(cluster.clone(), Arc::new(NoCalls), paused);
        let pods: Vec<&String> = names.iter().collect();
        let tally = tokio::time::timeout(Duration::from_secs(600), exec.evict_all(&pods, 120_000))
            .await
            .expect("the set stalled behind its stuck requests");
        let deleted = cluster.deleted.lock().unwrap().len();
        assert_eq!(deleted, 4, "the replaced pods are deleted at their give-up time");
        assert_eq!(
            exec.clock.now_ms(),
            120_000,
            "the bare pods' requests were waited for until the deadline"
        );
        assert_eq!((tally.evicted, tally.deleted), (4, 4), "{:?}", tally.refused);
        let mut left: Vec<(String, String)> = tally.refused;
        left.sort();
        let mut expected: Vec<(String, String)> =
            names[4..8].iter().map(|n| (n.clone(), "no answer by the deadline".to_string())).collect();
        expected.sort();
        assert_eq!(left, expected);
    }

    /// A burst's requests wait for their turn at once (27,000 at full
    /// size): the rare delete before the deadline must not make every one
    /// of them as large as its own state.
    #[test]
    fn a_waiting_eviction_does_not_hold_room_for_the_delete() {
        let clock = Arc::new(Stepping::default());
        let cluster = Recording::new(clock.clone(), surge_never_ready(), 0);
        let delete = std::mem::size_of_val(&cluster.delete_doomed_pod("default/db-0"));
        assert!(delete > 4096, "the fake's delete holds {delete} bytes");
        let ask = crate::evictions::Ask::Evict;
        let waiting = std::mem::size_of_val(&crate::evictions::ask_once(
            &cluster,
            clock.as_ref(),
            "default/db-0",
            ask,
            None,
        ));
        assert!(waiting < 1024, "a request's future is {waiting} bytes");
    }

    /// Every open response of a burst (1,700 at full size) waits at once:
    /// its task, and each eviction wave waiting on budgets, must not hold
    /// room for the largest request another step makes (a surge here).
    /// Sizes of the futures themselves: what a future boxes is not
    /// counted, so `evict_wave` is measured too (a wave sent back through
    /// the boxed `run_step` would pass the first two checks).
    #[test]
    fn a_waiting_response_holds_little() {
        let clock = Arc::new(Stepping::default());
        let cluster = Arc::new(Recording::new(clock.clone(), surge_never_ready(), 0));
        let surge = std::mem::size_of_val(&cluster.surge("web", "k", 1));
        assert!(surge > 8192, "the fake's surge holds {surge} bytes");
        let exec = stepping_executor(cluster, Arc::new(NoCalls), clock);
        let plan = Arc::new(interruption_plan(
            120_000,
            vec![
                Step::Surge { workloads: vec![("web".into(), 1)] },
                Step::Evict { pods: vec!["default/web-1".into(), "default/db-0".into()], wave: 0 },
            ],
        ));
        let wave = std::mem::size_of_val(&exec.run_recorded(&plan, 1, 0, 120_000, &BTreeSet::new()));
        assert!(wave < 2048, "a wave's future is {wave} bytes");
        let pods = ["default/web-1".to_string()];
        let evicting = std::mem::size_of_val(&exec.evict_wave(&plan, &pods, 0, 120_000));
        assert!(evicting < 2048, "evict_wave's future is {evicting} bytes");
        let response = std::mem::size_of_val(&exec.execute_new(plan, 0));
        assert!(response < 4096, "a response's future is {response} bytes");
    }

    /// The plan of a spot interruption of node-1 (instance i-1) due at `deadline`.
    /// An interruption plan that surges `web` by `by`, evicts `waves`
    /// (wave `i` takes `waves[i]`) and then ends the surge.
    fn web_surge_plan(deadline: Millis, by: u32, waves: &[&[&str]]) -> Plan {
        let surge = vec![("web".to_string(), by)];
        let evictions = waves.iter().enumerate().map(|(i, pods)| Step::Evict {
            pods: pods.iter().map(|p| p.to_string()).collect(),
            wave: i as u32,
        });
        let steps = std::iter::once(Step::Surge { workloads: surge.clone() })
            .chain(evictions)
            .chain([Step::EndSurge { workloads: surge }])
            .collect();
        interruption_plan(deadline, steps)
    }

    fn interruption_plan(deadline: Millis, steps: Vec<Step>) -> Plan {
        Plan {
            notice: costop_core::NoticeKey {
                instance_id: "i-1".into(),
                kind: "spot-interruption".into(),
                stated_time: deadline,
            },
            node: "node-1".into(),
            deadline: Some(deadline),
            steps,
            unevictable: vec![],
        }
    }

    #[tokio::test]
    async fn a_pod_its_budget_keeps_is_deleted_shortly_before_the_deadline() {
        let deadline = 120_000;
        let run = |lead| async move {
            let clock = Arc::new(Stepping::default());
            // A bare pod (no workload: nothing would start it again).
            let mut view = surge_never_ready();
            let mut solo = (*view.pods[0]).clone();
            solo.name = "default/solo".into();
            solo.workload = None;
            view.pods.push(solo.into());
            let mut cluster = Recording::new(clock.clone(), view, 0);
            cluster.refused.insert("default/db-0".into());
            cluster.refused.insert("default/solo".into());
            let cluster = Arc::new(cluster);
            let mut exec = stepping_executor(cluster.clone(), Arc::new(NoCalls), clock.clone());
            exec.waits.delete_doomed_before = lead;
            // web first: this clock jumps as soon as a wait is polled, and
            // web's eviction is to be asked before db's wait moves it.
            let pods = ["default/web-1", "default/db-0", "default/solo"].map(String::from).to_vec();
            let plan = Arc::new(interruption_plan(deadline, vec![Step::Evict { pods, wave: 0 }]));
            assert!(exec.store.save_plan(&plan).await.unwrap());
            exec.execute_new(plan.clone(), 0).await;
            let outcome =
                exec.store.response(&plan.notice).await.unwrap().unwrap().steps[0].outcome.clone().unwrap();
            let deleted = cluster.deleted.lock().unwrap().clone();
            let warned: Vec<String> = cluster.warned.lock().unwrap().iter().map(|(p, _)| p.clone()).collect();
            (deleted, outcome, warned)
        };
        // db is refused until 45 s before the deadline, then deleted; web
        // goes at once; the bare pod is only evicted, refused until the
        // deadline, and left.
        let (deleted, outcome, warned) = run(45_000).await;
        assert_eq!(deleted, vec![("default/db-0".to_string(), deadline - 45_000)], "{outcome}");
        assert_eq!(warned, vec!["default/solo".to_string()], "the pod left says so");
        assert!(
            outcome.starts_with(
                "partial: evicted 1, deleted before the deadline 1, already gone 0, not evicted 1"
            ),
            "{outcome}"
        );
        // Told never to: refused until the deadline, left, and said so.
        let (deleted, outcome, mut warned) = run(0).await;
        assert!(deleted.is_empty(), "{deleted:?}");
        warned.sort();
        assert_eq!(warned, vec!["default/db-0".to_string(), "default/solo".to_string()]);
        assert!(
            outcome.starts_with(
                "partial: evicted 1, deleted before the deadline 0, already gone 0, not evicted 2"
            ),
            "{outcome}"
        );
    }

    /// A cloud that launched i-7 under `restore:i-1` and, when
    /// `ends_instances`, ends any instance it is asked to; every other call
    /// is a failure.
    struct FewCalls {
        ends_instances: bool,
    }

    impl CloudPort for FewCalls {
        type Error = Never;
        async fn deregister_targets(&self, _: &NodeView) -> Result<String, Never> {
            panic!("deregistered targets")
        }
        async fn wake_standby(&self, _: &NodeView, _: Option<&str>) -> Result<String, Never> {
            panic!("woke a standby")
        }
        async fn move_volume(&self, _: &str, _: &NodeView, _: bool, _: bool) -> Result<String, Never> {
            panic!("moved a volume")
        }
        async fn bridge(&self, _: &[String], _: bool) -> Result<String, Never> {
            panic!("bridged traffic")
        }
        async fn restore_capacity(&self, _: &str, _: &[(PoolId, u32)]) -> Result<String, Never> {
            panic!("launched capacity")
        }
        async fn launched_under(&self, key: &str) -> Result<Vec<String>, Never> {
            Ok(if key == "restore:i-1" { vec!["i-7".into()] } else { vec![] })
        }
        async fn retire_node(&self, node: &NodeView) -> Result<String, Never> {
            assert!(self.ends_instances, "retired {}", node.name);
            Ok(format!("{} terminated", node.name))
        }
    }

    #[tokio::test]
    async fn an_early_replacement_is_held_from_scale_down_once_joined_until_the_window_ends() {
        let clock = Arc::new(Stepping::default());
        let node = spot_node("node-7", "i-7", true);
        // The replacement (node-7, instance i-7) joins 30 s after the launch.
        let joined = ClusterView { nodes: vec![node].into(), ..ClusterView::default() };
        let cluster = Arc::new(Recording::new(clock.clone(), joined, 30_000));
        let exec =
            stepping_executor(cluster.clone(), Arc::new(FewCalls { ends_instances: false }), clock.clone());
        let until = 15 * 60_000;
        let plan = Arc::new(Plan {
            notice: costop_core::NoticeKey {
                instance_id: "i-1".into(),
                kind: "rebalance-recommendation".into(),
                stated_time: 0,
            },
            node: "node-1".into(),
            deadline: None,
            steps: vec![Step::HoldReplacements { key: "restore:i-1".into(), until }],
            unevictable: vec![],
        });
        assert!(exec.store.save_plan(&plan).await.unwrap());
        exec.execute_new(plan.clone(), 0).await;
        let marks = cluster.marks.lock().unwrap().clone();
        // Marked at the first look after it joined (looks every 15 s),
        // unmarked at the window's end; nothing else.
        assert_eq!(marks, vec![("node-7".to_string(), true, 30_000), ("node-7".to_string(), false, until)]);
        let record = exec.store.response(&plan.notice).await.unwrap().unwrap();
        let outcome = record.steps[0].outcome.clone().unwrap_or_default();
        assert!(outcome.starts_with("ok: 1 replacements held"), "{outcome}");
    }
}
