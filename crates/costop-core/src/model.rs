//! The cluster as the core sees it: nodes, pods, workloads and Spot pools.

pub use crate::listed::{Nodes, Pods};
pub use crate::name::Name;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// CPU and memory, as Kubernetes requests count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in millicores (1000 = one vCPU).
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
}

impl Resources {
    /// A new amount of CPU (millicores) and memory (MiB).
    pub const fn new(cpu_millis: u64, memory_mib: u64) -> Self {
        Self { cpu_millis, memory_mib }
    }

    /// Whether `other` fits inside `self`.
    pub fn fits(&self, other: &Resources) -> bool {
        other.cpu_millis <= self.cpu_millis && other.memory_mib <= self.memory_mib
    }

    /// Component-wise sum.
    pub fn plus(&self, other: &Resources) -> Resources {
        Resources::new(self.cpu_millis + other.cpu_millis, self.memory_mib + other.memory_mib)
    }

    /// Component-wise difference, floored at zero.
    pub fn minus(&self, other: &Resources) -> Resources {
        Resources::new(
            self.cpu_millis.saturating_sub(other.cpu_millis),
            self.memory_mib.saturating_sub(other.memory_mib),
        )
    }

    /// Whether both components are zero.
    pub fn is_zero(&self) -> bool {
        self.cpu_millis == 0 && self.memory_mib == 0
    }
}

/// How a node is bought and whether it serves now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityType {
    /// Spot: cheapest, reclaimed with a two-minute notice.
    Spot,
    /// On-demand: fixed price, never reclaimed.
    OnDemand,
    /// An on-demand standby, joined and running, tainted `costop.io/standby:NoSchedule`.
    StandbyRunning,
    /// An on-demand standby, stopped: costs only its volumes; re-typed before it starts.
    StandbyStopped,
    /// A T-family instance: cheap emergency capacity, with a surcharge past its CPU credits.
    Burstable,
}

impl CapacityType {
    /// Whether the node is a warm standby (running or stopped).
    pub fn is_standby(self) -> bool {
        matches!(self, CapacityType::StandbyRunning | CapacityType::StandbyStopped)
    }
}

/// A Spot capacity pool: one instance type in one availability zone. AWS
/// reclaims capacity per pool, so costop treats a pool as one failure domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PoolId {
    /// EC2 instance type, e.g. `m5.xlarge`.
    pub instance_type: String,
    /// Availability zone, e.g. `us-east-1a`.
    pub zone: String,
}

impl PoolId {
    /// A pool from its instance type and zone.
    pub fn new(instance_type: impl Into<String>, zone: impl Into<String>) -> Self {
        Self { instance_type: instance_type.into(), zone: zone.into() }
    }
}

impl std::fmt::Display for PoolId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.instance_type, self.zone)
    }
}

/// A Kubernetes taint, `key[=value]:effect`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Taint {
    /// Taint key, e.g. `costop.io/interruption`.
    pub key: String,
    /// Effect: `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// The taint costop puts on a node it is about to lose.
pub const INTERRUPTION_TAINT: &str = "costop.io/interruption";
/// The taint that keeps ordinary pods off a warm standby.
pub const STANDBY_TAINT: &str = "costop.io/standby";

/// One node, as much as the decisions need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// Kubernetes node name.
    pub name: Name,
    /// EC2 instance id, e.g. `i-0abc…`.
    pub instance_id: Name,
    /// The pool the instance runs in.
    pub pool: PoolId,
    /// How the node is bought.
    pub capacity_type: CapacityType,
    /// Resources pods may request on this node.
    pub allocatable: Resources,
    /// Price now, USD per hour.
    pub price_per_hour: f64,
    /// Cordoned.
    pub unschedulable: bool,
    /// Taints on the node.
    pub taints: Vec<Taint>,
    /// Node condition Ready.
    pub ready: bool,
    /// Whether its targets are registered in the load balancer.
    pub in_load_balancer: bool,
    /// An on-demand node launched because no Spot pool could take the
    /// pods (in Kubernetes, the label `costop.io/fallback=true` on the
    /// node group or NodePool that backs Spot up): costop moves it back
    /// to Spot once a pool can take it. On-demand nodes without it (the
    /// floor under critical pods, warm standbys) are never moved.
    #[serde(default)]
    pub fallback: bool,
}

impl NodeView {
    /// Whether a taint with this key is on the node.
    pub fn has_taint(&self, key: &str) -> bool {
        self.taints.iter().any(|t| t.key == key)
    }

    /// Whether ordinary pods (no tolerations) may be scheduled here now.
    pub fn accepts_pods(&self) -> bool {
        self.ready
            && !self.unschedulable
            && !self.taints.iter().any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
    }
}

/// A volume attached to a pod (EBS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeView {
    /// EBS volume id.
    pub volume_id: Name,
    /// Zone the volume lives in.
    pub zone: Name,
    /// Node the volume is attached to, if any.
    pub attached_to: Option<Name>,
}

/// One pod, as much as the decisions need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodView {
    /// Pod name (unique in the view).
    pub name: Name,
    /// Owning workload (Deployment) name; `None` for a bare pod.
    pub workload: Option<Name>,
    /// Node the pod is bound to.
    pub node: Option<Name>,
    /// Resource requests.
    pub requests: Resources,
    /// Priority from its PriorityClass.
    pub priority: i32,
    /// Condition Ready.
    pub ready: bool,
    /// A costop placeholder (negative priority, holds free room).
    pub placeholder: bool,
    /// Run by a DaemonSet: it belongs to its node and is never evicted
    /// (as `kubectl drain --ignore-daemonsets`).
    #[serde(default)]
    pub daemon: bool,
    /// EBS volumes the pod mounts.
    pub volumes: Vec<VolumeView>,
}

/// A workload (Deployment) and its disruption budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadView {
    /// Workload name.
    pub name: Name,
    /// Desired replicas.
    pub replicas: u32,
    /// PodDisruptionBudget `minAvailable` (0 = no budget).
    pub min_available: u32,
    /// Whether traffic is currently bridged to a serverless function.
    pub bridged: bool,
    /// A Deployment, whose replicas costop may raise for a while (see
    /// [`crate::Step::Surge`]); StatefulSets keep their pods' identities.
    #[serde(default)]
    pub surgeable: bool,
}

/// What is known of a Spot pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolView {
    /// Which pool.
    pub id: PoolId,
    /// Spot price now, USD per hour.
    pub spot_price: f64,
    /// On-demand price of the same type, USD per hour.
    pub on_demand_price: f64,
    /// Expected interruptions per instance per day (from history or the Spot
    /// Advisor band).
    pub interruptions_per_day: f64,
    /// Whether a launch in this pool is expected to succeed now.
    pub launchable: bool,
    /// When this pool last reclaimed an instance, if known.
    pub last_interruption: Option<crate::Millis>,
}

/// Everything the decisions read about the cluster and its cloud.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClusterView {
    /// All nodes, including standbys (shared between copies of the view,
    /// with lookups by name and instance: see [`crate::listed`]).
    pub nodes: Nodes,
    /// All pods, including placeholders (shared between copies of the
    /// view, with lookups by node and workload: see [`crate::listed`]).
    pub pods: Pods,
    /// Workloads with their budgets.
    pub workloads: Vec<WorkloadView>,
    /// Spot pools costop may use.
    pub pools: Vec<PoolView>,
    /// Capacity requests already made, by idempotency key.
    pub capacity_requests: BTreeSet<String>,
    /// Replacements on their way: the pools (and counts) each capacity
    /// request of a response still open asked for, by its key, until its
    /// node is likely Ready (the executor's `LAUNCH_SETTLES_MS` after the
    /// launch; a launch that failed counts as long). Only claims fill it
    /// (see `crate::effects`): the plans of one reclaim see each other's
    /// launches.
    #[serde(default)]
    pub launching: BTreeMap<String, Vec<(PoolId, u32)>>,
    /// How many placeholder pods costop wants to exist.
    pub headroom_target: u32,
}

impl ClusterView {
    /// Node by name.
    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.lookups().by_name(name).map(|i| &self.nodes[i])
    }

    /// Node by EC2 instance id.
    pub fn node_by_instance(&self, instance_id: &str) -> Option<&NodeView> {
        self.nodes.lookups().by_instance(instance_id).map(|i| &self.nodes[i])
    }

    /// Workload by name.
    pub fn workload(&self, name: &str) -> Option<&WorkloadView> {
        self.workloads.iter().find(|w| w.name == name)
    }

    /// Pod by name (`namespace/name`).
    pub fn pod(&self, name: &str) -> Option<&PodView> {
        self.pods.lookups().by_name(&self.pods, name).map(|i| &*self.pods[i])
    }

    /// Pods bound to a node.
    pub fn pods_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a PodView> + 'a {
        self.pods.lookups().on_node(node).iter().map(|i| &*self.pods[*i as usize])
    }

    /// Workload pods bound to a node: neither DaemonSet pods (they stay
    /// with their node) nor placeholders (they only hold room).
    pub fn workload_pods_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a PodView> + 'a {
        self.pods_on(node).filter(|p| !p.daemon && !p.placeholder)
    }

    /// Pods bound to no node (waiting for the scheduler).
    pub fn unbound_pods(&self) -> impl Iterator<Item = &PodView> + '_ {
        self.pods.lookups().unbound().iter().map(|i| &*self.pods[*i as usize])
    }

    /// Placeholder pods, bound or not.
    pub fn placeholder_pods(&self) -> impl Iterator<Item = &PodView> + '_ {
        self.pods.lookups().placeholders().iter().map(|i| &*self.pods[*i as usize])
    }

    /// Ready pods of a workload.
    pub fn ready_pods_of(&self, workload: &str) -> usize {
        self.pods.lookups().ready(workload)
    }

    /// Requests of the pods bound to a node, added up.
    pub fn used_on(&self, node: &str) -> Resources {
        self.pods.lookups().used(node)
    }

    /// Free resources on a node: allocatable minus the requests of its pods.
    pub fn free_on(&self, node: &NodeView) -> Resources {
        node.allocatable.minus(&self.used_on(&node.name))
    }

    /// Pool by id.
    pub fn pool(&self, id: &PoolId) -> Option<&PoolView> {
        self.pools.iter().find(|p| &p.id == id)
    }

    /// Build the lookups of the nodes and pods now (the publisher of a
    /// snapshot does, so the readers it is handed to do not), and return the view.
    pub fn with_lookups(self) -> Self {
        self.nodes.lookups();
        self.pods.lookups();
        self
    }
}
