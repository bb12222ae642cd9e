//! The replica controllers' decision: how many pods to create or delete,
//! and which pods a scale-down deletes first.

use std::cmp::{Ordering, Reverse};

/// The controller that owns a set of replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    /// A Deployment (through its ReplicaSet).
    Deployment,
    /// A StatefulSet: each replica has a stable identity (and volume).
    StatefulSet,
}

impl Controller {
    /// Whether a terminating pod still holds its replica. The ReplicaSet
    /// controller counts only active pods (`controller.FilterActivePods`:
    /// not terminal, not being deleted), so it replaces an evicted pod at
    /// once; the StatefulSet controller recreates an ordinal only once its
    /// old pod is gone (`pkg/controller/statefulset`, stable identity).
    pub fn counts_terminating(self) -> bool {
        self == Controller::StatefulSet
    }
}

/// What one sync of a replica controller does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaDecision {
    /// Create this many pods.
    Create(u32),
    /// Delete this many pods (chosen by [`deletion_order`]).
    Delete(u32),
    /// Nothing to do.
    Steady,
}

/// One sync (`manageReplicas`, kubernetes `pkg/controller/replicaset`):
/// the difference between the desired replicas and the pods that count
/// (see [`Controller::counts_terminating`]; terminal pods never count).
pub fn decide(replicas: u32, counted: u32) -> ReplicaDecision {
    match counted.cmp(&replicas) {
        Ordering::Less => ReplicaDecision::Create(replicas - counted),
        Ordering::Greater => ReplicaDecision::Delete(counted - replicas),
        Ordering::Equal => ReplicaDecision::Steady,
    }
}

/// A pod's phase, as far as the ranking needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Not all containers are running yet.
    Pending,
    /// The node stopped reporting.
    Unknown,
    /// Running.
    Running,
}

/// An active pod of a controller, as a scale-down ranks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaPod {
    /// Bound to a node.
    pub assigned: bool,
    /// Phase.
    pub phase: Phase,
    /// Its Ready condition is True.
    pub ready: bool,
    /// `controller.kubernetes.io/pod-deletion-cost` (0 when unset).
    pub deletion_cost: i32,
    /// Active pods of the same controller on its node, itself included.
    pub colocated: u32,
    /// Since when it has been Ready, on any increasing scale.
    pub ready_since: u64,
    /// Container restarts.
    pub restarts: u32,
    /// When it was created, on any increasing scale.
    pub created: u64,
}

/// The order a scale-down deletes pods in (`ActivePodsWithRanks.Less`,
/// kubernetes `pkg/controller/controller_utils.go`): unassigned before
/// assigned; Pending, then Unknown, then Running; not Ready before Ready;
/// lower deletion cost first; pods doubled up on a node first; Ready for
/// less time first; more restarts first; newer first. (Kube compares the
/// two times on a log2 scale; here they are compared exactly.)
pub fn deletion_order(a: &ReplicaPod, b: &ReplicaPod) -> Ordering {
    let key = |p: &ReplicaPod| {
        (
            p.assigned,
            p.phase,
            p.ready,
            p.deletion_cost,
            Reverse(p.colocated),
            Reverse(if p.ready { p.ready_since } else { 0 }),
            Reverse(p.restarts),
            Reverse(p.created),
        )
    };
    key(a).cmp(&key(b))
}

/// The indices of the `count` pods a scale-down deletes, first first.
pub fn pick_for_deletion(pods: &[ReplicaPod], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..pods.len()).collect();
    order.sort_by(|&a, &b| deletion_order(&pods[a], &pods[b]).then(a.cmp(&b)));
    order.truncate(count);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(created: u64) -> ReplicaPod {
        ReplicaPod {
            assigned: true,
            phase: Phase::Running,
            ready: true,
            deletion_cost: 0,
            colocated: 1,
            ready_since: created,
            restarts: 0,
            created,
        }
    }

    #[test]
    fn the_difference_decides() {
        assert_eq!(decide(3, 1), ReplicaDecision::Create(2));
        assert_eq!(decide(1, 3), ReplicaDecision::Delete(2));
        assert_eq!(decide(2, 2), ReplicaDecision::Steady);
        assert!(Controller::StatefulSet.counts_terminating());
        assert!(!Controller::Deployment.counts_terminating());
    }

    #[test]
    fn scale_down_takes_the_least_useful_pods_first() {
        let pods = [
            running(1),
            ReplicaPod { assigned: false, phase: Phase::Pending, ready: false, ..running(2) },
            ReplicaPod { ready: false, ..running(3) },
            running(4),
            ReplicaPod { colocated: 2, ..running(5) },
            ReplicaPod { phase: Phase::Pending, ready: false, ..running(6) },
            ReplicaPod { deletion_cost: -5, ..running(7) },
        ];
        assert_eq!(pick_for_deletion(&pods, 7), vec![1, 5, 2, 6, 4, 3, 0]);
        assert_eq!(pick_for_deletion(&pods, 2), vec![1, 5]);
        let restarted = [running(1), ReplicaPod { restarts: 3, ..running(1) }];
        assert_eq!(pick_for_deletion(&restarted, 1), vec![1]);
    }
}
