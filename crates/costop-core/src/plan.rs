//! A response plan: ordered, idempotent steps.

use crate::model::PoolId;
use crate::notice::NoticeKey;
use crate::time::Millis;
use serde::{Deserialize, Serialize};

/// One step of a response. Every step is idempotent: running it again after
/// it succeeded changes nothing (see [`crate::effects::apply_step`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// Add the `costop.io/interruption:NoSchedule` taint and cordon the node.
    TaintAndCordon {
        /// Node name.
        node: String,
    },
    /// Deregister the node's targets from every load balancer target group,
    /// so no new request reaches it; open connections drain.
    DeregisterTargets {
        /// Node name.
        node: String,
    },
    /// Delete these placeholder pods so evicted pods land in their room at once.
    ClaimHeadroom {
        /// Placeholder pod names.
        placeholders: Vec<String>,
    },
    /// Bring a warm standby into service: a stopped one is re-typed (if
    /// `retype_to` is set) and started; then its standby taint is removed.
    WakeStandby {
        /// Standby node name.
        node: String,
        /// Instance type to switch a stopped standby to before it starts.
        retype_to: Option<String>,
    },
    /// Move an EBS volume from the doomed node to the replacement after its
    /// pod has stopped: detach/attach in one zone, snapshot → volume across zones.
    MoveVolume {
        /// EBS volume id.
        volume_id: String,
        /// Node it is attached to now.
        from_node: String,
        /// Node it goes to.
        to_node: String,
        /// Zone of `to_node`.
        to_zone: String,
        /// Whether the zone differs, so a snapshot is needed.
        via_snapshot: bool,
    },
    /// Shift these workloads' load balancer traffic partly to their
    /// serverless function while replacement pods start.
    BridgeTraffic {
        /// Workload names.
        workloads: Vec<String>,
    },
    /// Evict pods through the eviction API (budgets are enforced by the API
    /// server too). Wave `n > 0` starts once wave `n - 1`'s replacements are Ready.
    Evict {
        /// Pod names.
        pods: Vec<String>,
        /// Wave number, from 0.
        wave: u32,
    },
    /// Surge, then evict: raise each of these Deployments' replicas by the
    /// count of its pods on the doomed node, so their replacements start
    /// (on free room, placeholders' room or the restored capacity) while
    /// the old pods still serve. The evictions wait for them (see the
    /// executor). Marked on each Deployment under the response's key, so
    /// running it again adds nothing.
    Surge {
        /// Deployment name → replicas added.
        workloads: Vec<(String, u32)>,
    },
    /// Take a [`Step::Surge`] back once the old pods are evicted: lower the
    /// replicas by what the surge added (the controller then deletes the
    /// pods it made for the evicted ones, still pending, first). The
    /// executor lowers a Deployment whose pods one wave evicts as soon as
    /// that wave is done; this step lowers what is left.
    EndSurge {
        /// Deployment name → replicas the surge added.
        workloads: Vec<(String, u32)>,
    },
    /// The node's instance is already going (no notice came before it, or
    /// it came too late): delete its Node and force-delete the pods still
    /// bound to it (grace 0: no kubelet will confirm their end), so
    /// their controllers replace them now, not once the node controller and
    /// the pod garbage collector notice (about 105 s), and their volumes
    /// can be attached elsewhere.
    ForgetNode {
        /// Node name.
        node: String,
    },
    /// Launch Spot capacity in other pools to replace the lost node.
    RestoreCapacity {
        /// Idempotency key: the same key never launches twice.
        key: String,
        /// Pool → number of nodes.
        pools: Vec<(PoolId, u32)>,
    },
    /// Once the restored capacity is Ready, move the standby's pods off it
    /// (keeping budgets) and put it back on standby.
    ReturnStandby {
        /// Standby node name.
        node: String,
    },
    /// Shift traffic back from the function once the workloads are Ready.
    UnbridgeTraffic {
        /// Workload names.
        workloads: Vec<String>,
    },
    /// Put placeholder pods back to the target count once capacity is restored.
    RestoreHeadroom {
        /// Placeholder pods wanted.
        placeholders: u32,
    },
    /// Keep the node autoscaler from removing the nodes launched under
    /// `key` until `until`: each is marked scale-down-disabled once it has
    /// joined, and unmarked at `until`. Cluster Autoscaler removes a node
    /// empty for 10 minutes (`--scale-down-unneeded-time`). No longer
    /// planned: a rebalance recommendation's replacement, once held empty
    /// for the window, now takes its node's pods as soon as it joins
    /// ([`Step::RetireNode`] with `once_room`). Kept so that plans recorded
    /// by an earlier version resume.
    HoldReplacements {
        /// Idempotency key the replacements were launched under.
        key: String,
        /// End of the recommendation's window (Unix ms).
        until: Millis,
    },
    /// After a rebalance recommendation or a move launched the node's
    /// replacement: if the node is still here and no interruption is being
    /// answered for it, drain it within budgets and end its instance, so the
    /// new capacity does not stay as extra. A node that cannot be drained
    /// (its budgets refuse for 10 minutes) or ended is uncordoned again.
    RetireNode {
        /// Node name.
        node: String,
        /// When it is drained (or, `once_room`, the latest it waits for
        /// room; Unix ms).
        after: Millis,
        /// Bridge the node's workloads to their functions while it drains.
        #[serde(default)]
        bridge: bool,
        /// Drain as soon as the other nodes have room for its pods (a
        /// move to a cheaper pool: its replacement has joined) instead of
        /// at `after`; with no room by `after` the node stays.
        #[serde(default)]
        once_room: bool,
        /// Surge, then evict (as an interruption's waves do): these
        /// Deployments, by their pods on the node, are raised before its
        /// pods are evicted, which waits for the extra pods to be Ready,
        /// so no workload serves with fewer Ready pods while the node
        /// drains. Lowered back once it is drained, and by the plan's
        /// [`Step::EndSurge`] after it (which finds them done, or retries).
        #[serde(default)]
        surges: Vec<(String, u32)>,
    },
}

impl Step {
    /// A short stable name of the step kind, for records and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::TaintAndCordon { .. } => "taint-and-cordon",
            Step::DeregisterTargets { .. } => "deregister-targets",
            Step::ClaimHeadroom { .. } => "claim-headroom",
            Step::WakeStandby { .. } => "wake-standby",
            Step::MoveVolume { .. } => "move-volume",
            Step::BridgeTraffic { .. } => "bridge-traffic",
            Step::Evict { .. } => "evict",
            Step::ForgetNode { .. } => "forget-node",
            Step::Surge { .. } => "surge",
            Step::EndSurge { .. } => "end-surge",
            Step::RestoreCapacity { .. } => "restore-capacity",
            Step::ReturnStandby { .. } => "return-standby",
            Step::UnbridgeTraffic { .. } => "unbridge-traffic",
            Step::RestoreHeadroom { .. } => "restore-headroom",
            Step::RetireNode { .. } => "retire-node",
            Step::HoldReplacements { .. } => "hold-replacements",
        }
    }
}

/// The response to one notice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The notice this answers.
    pub notice: NoticeKey,
    /// The node the notice is about.
    pub node: String,
    /// When the node is lost, if known.
    pub deadline: Option<Millis>,
    /// Steps, in order.
    pub steps: Vec<Step>,
    /// Pods that no wave may evict without breaking their budget; they stay
    /// until the node goes.
    pub unevictable: Vec<String>,
}

impl Plan {
    /// Steps of one kind.
    pub fn steps_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Step> + 'a {
        self.steps.iter().filter(move |s| s.kind() == kind)
    }

    /// The pods its eviction steps name, every wave.
    pub fn evicted_pods(&self) -> impl Iterator<Item = &String> + '_ {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Evict { pods, .. } => Some(pods),
                _ => None,
            })
            .flatten()
    }
}
