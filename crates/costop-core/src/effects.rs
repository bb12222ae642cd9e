//! The expected effect of each step on the cluster view.
//!
//! This is the contract every executor (Kubernetes, cloud, simulator) keeps,
//! written as a pure function: applying a step twice gives the same view as
//! applying it once.

use crate::model::{CapacityType, ClusterView, PodView, Taint, INTERRUPTION_TAINT, STANDBY_TAINT};
use crate::plan::{Plan, Step};
use rustc_hash::FxHashSet as HashSet;
use std::sync::Arc;

/// Apply one step's expected effect to the view.
pub fn apply_step(view: &mut ClusterView, step: &Step) {
    match step {
        Step::TaintAndCordon { node } => {
            if let Some(n) = view.nodes.iter_mut().find(|n| &n.name == node) {
                n.unschedulable = true;
                if !n.has_taint(INTERRUPTION_TAINT) {
                    n.taints.push(Taint { key: INTERRUPTION_TAINT.into(), effect: "NoSchedule".into() });
                }
            }
        }
        Step::DeregisterTargets { node } => {
            if let Some(n) = view.nodes.iter_mut().find(|n| &n.name == node) {
                n.in_load_balancer = false;
            }
        }
        Step::ClaimHeadroom { placeholders } => {
            let names: HashSet<&str> = placeholders.iter().map(String::as_str).collect();
            view.pods.retain(|p| !(p.placeholder && names.contains(p.name.as_str())));
        }
        Step::WakeStandby { node, retype_to } => {
            if let Some(n) = view.nodes.iter_mut().find(|n| &n.name == node) {
                if let Some(t) = retype_to {
                    n.pool.instance_type = t.clone();
                }
                // A burstable node stays one; a standby serves as on-demand.
                if n.capacity_type != CapacityType::Burstable {
                    n.capacity_type = CapacityType::OnDemand;
                }
                n.taints.retain(|t| t.key != STANDBY_TAINT);
                n.ready = true;
            }
        }
        Step::ReturnStandby { node } => {
            if let Some(n) = view.nodes.iter_mut().find(|n| &n.name == node) {
                if n.capacity_type != CapacityType::Burstable {
                    n.capacity_type = CapacityType::StandbyStopped;
                }
                if !n.has_taint(STANDBY_TAINT) {
                    n.taints.push(Taint { key: STANDBY_TAINT.into(), effect: "NoSchedule".into() });
                }
            }
        }
        Step::MoveVolume { volume_id, to_node, .. } => {
            let mounts = |p: &PodView| p.volumes.iter().any(|v| &v.volume_id == volume_id);
            // Only the pods that mount it are copied (the others stay shared).
            for p in view.pods.iter_mut().filter(|p| mounts(p)) {
                for v in Arc::make_mut(p).volumes.iter_mut().filter(|v| &v.volume_id == volume_id) {
                    v.attached_to = Some(to_node.as_str().into());
                }
            }
        }
        Step::BridgeTraffic { workloads } | Step::UnbridgeTraffic { workloads } => {
            let on = matches!(step, Step::BridgeTraffic { .. });
            for w in view.workloads.iter_mut().filter(|w| workloads.iter().any(|x| *x == w.name)) {
                w.bridged = on;
            }
        }
        Step::Evict { pods, .. } => {
            // Each evicted pod is replaced by a pending one of the same
            // shape (its controller's), which needs room elsewhere.
            view.pods.unbind(&pods.iter().map(String::as_str).collect());
        }
        // The surge's extra pods need the room the evicted pods'
        // replacements need (the Evict effect's pending pods); the
        // replica count itself is the cluster's to show.
        Step::Surge { .. } | Step::EndSurge { .. } => {}
        Step::ForgetNode { node } => {
            // Its pods wait for room elsewhere; the node is no more.
            let names: Vec<String> = view.workload_pods_on(node).map(|p| p.name.to_string()).collect();
            view.pods.unbind(&names.iter().map(String::as_str).collect());
            view.nodes.retain(|n| &n.name != node);
        }
        Step::RestoreCapacity { key, pools } => {
            view.capacity_requests.insert(key.clone());
            view.launching.insert(key.clone(), pools.clone());
        }
        Step::RestoreHeadroom { placeholders } => view.headroom_target = *placeholders,
        // An annotation for the node autoscaler: nothing a plan reads.
        Step::HoldReplacements { .. } => {}
        Step::RetireNode { node, .. } => {
            if let Some(n) = view.nodes.iter_mut().find(|n| &n.name == node) {
                n.unschedulable = true;
            }
        }
    }
}

/// Apply several steps' effects; evictions and placeholder claims are
/// applied together in one pass over the pods (the same result as one by one).
pub fn apply_steps<'a>(view: &mut ClusterView, steps: impl IntoIterator<Item = &'a Step>) {
    let mut evicted: HashSet<&str> = HashSet::default();
    let mut claimed: HashSet<&str> = HashSet::default();
    for step in steps {
        match step {
            Step::Evict { pods, .. } => evicted.extend(pods.iter().map(String::as_str)),
            Step::ClaimHeadroom { placeholders } => claimed.extend(placeholders.iter().map(String::as_str)),
            other => apply_step(view, other),
        }
    }
    // Only a list that holds one of the claimed placeholders is copied.
    if claimed.iter().any(|n| view.pod(n).is_some_and(|p| p.placeholder)) {
        view.pods.retain(|p| !(p.placeholder && claimed.contains(p.name.as_str())));
    }
    if !evicted.is_empty() {
        view.pods.unbind(&evicted);
    }
}

/// Apply every step of a plan, in order.
pub fn apply_plan(view: &mut ClusterView, plan: &Plan) {
    for step in &plan.steps {
        apply_step(view, step);
    }
}
