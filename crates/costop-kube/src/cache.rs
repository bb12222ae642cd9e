//! Lean caches of pods and nodes: each object is read off the watch into
//! the few fields costop's decisions use ([`PodRec`], [`NodeRec`]) and
//! only that is kept.
//!
//! A full `Pod` held by a reflector (managed fields, labels, annotations,
//! every container's spec and status) took several kilobytes; on a
//! 150,000-pod cluster the server's caches alone passed a gigabyte. Here a
//! pod is decoded straight into its record (the rest of the JSON is skipped
//! by the decoder, never built) and a record is about two hundred bytes.

use crate::view::parse_provider_id;
use crate::{CAPACITY_LABEL, FALLBACK_LABEL, PLACEHOLDER_CLASS};
use costop_core::model::{CapacityType, NodeView, PoolId, Resources, Taint, STANDBY_TAINT};
use costop_core::quantity::{cpu_millis, memory_mib};
use costop_core::Name;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// The metadata fields costop reads.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    owner_references: Vec<RawOwner>,
    deletion_timestamp: Option<IgnoredAny>,
}

impl RawMeta {
    /// What the watcher needs of the object (its name and version).
    fn object_meta(&self) -> ObjectMeta {
        ObjectMeta {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            resource_version: self.resource_version.clone(),
            ..ObjectMeta::default()
        }
    }

    /// `namespace/name`.
    fn key(&self) -> Name {
        format!("{}/{}", self.namespace.as_deref().unwrap_or("default"), self.name.as_deref().unwrap_or(""))
            .into()
    }

    fn controller(&self) -> Option<&RawOwner> {
        self.owner_references.iter().find(|o| o.controller == Some(true))
    }
}

#[derive(Deserialize)]
struct RawOwner {
    kind: String,
    name: String,
    controller: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRequests {
    cpu: Option<String>,
    memory: Option<String>,
}

impl RawRequests {
    fn resources(&self) -> Resources {
        Resources::new(
            self.cpu.as_deref().map_or(0, cpu_millis),
            self.memory.as_deref().map_or(0, memory_mib),
        )
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawContainerResources {
    requests: Option<RawRequests>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawContainer {
    resources: Option<RawContainerResources>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawClaimRef {
    claim_name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawVolume {
    persistent_volume_claim: Option<RawClaimRef>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawPodSpec {
    node_name: Option<String>,
    priority: Option<i32>,
    priority_class_name: Option<String>,
    containers: Vec<RawContainer>,
    volumes: Vec<RawVolume>,
}

#[derive(Deserialize)]
struct RawCondition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawPodStatus {
    phase: Option<String>,
    conditions: Vec<RawCondition>,
}

#[derive(Deserialize)]
struct RawPod {
    #[serde(default)]
    metadata: RawMeta,
    #[serde(default)]
    spec: RawPodSpec,
    #[serde(default)]
    status: RawPodStatus,
}

fn ready_in(conditions: &[RawCondition]) -> bool {
    conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// How a pod's workload is found: its controller, and for a ReplicaSet
/// the Deployment owning it (looked up when a view is built).
#[derive(Debug, Clone, PartialEq)]
pub enum Owner {
    /// No controller: a bare pod.
    None,
    /// A ReplicaSet of this name (in the pod's namespace).
    ReplicaSet(Name),
    /// Another controller (StatefulSet, Job, …), or a DaemonSet.
    Other,
}

/// A pod as costop's decisions read it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRec {
    /// `namespace/name`.
    pub key: Name,
    /// The node it is bound to.
    pub node: Option<Name>,
    /// Requests of its containers, added up.
    pub requests: Resources,
    /// Priority from its PriorityClass.
    pub priority: i32,
    /// Condition Ready.
    pub ready: bool,
    /// One of costop's placeholders.
    pub placeholder: bool,
    /// Run by a DaemonSet.
    pub daemon: bool,
    /// Succeeded or Failed.
    pub finished: bool,
    /// Being deleted (its eviction was accepted).
    pub terminating: bool,
    /// Its controller.
    pub owner: Owner,
    /// The workload when the controller is not a ReplicaSet known to the
    /// cache: `namespace/controller` (for a ReplicaSet, the name before its
    /// hash suffix).
    pub workload: Option<Name>,
    /// PersistentVolumeClaims it mounts (in its namespace).
    pub claims: Vec<Name>,
}

impl PodRec {
    /// Its namespace.
    pub fn namespace(&self) -> &str {
        self.key.split_once('/').map_or("default", |(ns, _)| ns)
    }

    /// Live: neither finished nor being deleted.
    pub fn live(&self) -> bool {
        !self.finished && !self.terminating
    }

    fn from_raw(raw: RawPod) -> Self {
        let RawPod { metadata, spec, status } = raw;
        let ns = metadata.namespace.as_deref().unwrap_or("default");
        let controller = metadata.controller();
        let owner = match controller {
            None => Owner::None,
            Some(o) if o.kind == "ReplicaSet" => Owner::ReplicaSet(o.name.as_str().into()),
            Some(_) => Owner::Other,
        };
        let workload = controller.map(|o| {
            let name = match o.kind.as_str() {
                "ReplicaSet" => o.name.rsplit_once('-').map_or(o.name.as_str(), |(d, _)| d),
                _ => o.name.as_str(),
            };
            Name::from(format!("{ns}/{name}"))
        });
        PodRec {
            key: metadata.key(),
            node: spec.node_name.as_deref().map(Into::into),
            requests: spec.containers.iter().fold(Resources::default(), |acc, c| {
                let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
                acc.plus(&req.map_or_else(Resources::default, RawRequests::resources))
            }),
            priority: spec.priority.unwrap_or(0),
            ready: ready_in(&status.conditions),
            placeholder: spec.priority_class_name.as_deref() == Some(PLACEHOLDER_CLASS),
            daemon: controller.is_some_and(|o| o.kind == "DaemonSet"),
            finished: matches!(status.phase.as_deref(), Some("Failed") | Some("Succeeded")),
            terminating: metadata.deletion_timestamp.is_some(),
            owner,
            workload,
            claims: spec
                .volumes
                .iter()
                .filter_map(|v| v.persistent_volume_claim.as_ref())
                .map(|c| c.claim_name.as_str().into())
                .collect(),
        }
    }
}

/// A pod as decoded off the watch: what the watcher needs of its metadata,
/// and its record.
#[derive(Debug, Clone)]
pub struct PodLite {
    meta: ObjectMeta,
    /// The record.
    pub rec: PodRec,
}

impl<'de> Deserialize<'de> for PodLite {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawPod::deserialize(d)?;
        Ok(PodLite { meta: raw.metadata.object_meta(), rec: PodRec::from_raw(raw) })
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawNodeSpec {
    #[serde(rename = "providerID")]
    provider_id: Option<String>,
    unschedulable: Option<bool>,
    taints: Vec<RawTaint>,
}

#[derive(Deserialize)]
struct RawTaint {
    key: String,
    effect: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawNodeStatus {
    conditions: Vec<RawCondition>,
    allocatable: RawRequests,
}

#[derive(Deserialize)]
struct RawNode {
    #[serde(default)]
    metadata: RawMeta,
    #[serde(default)]
    spec: RawNodeSpec,
    #[serde(default)]
    status: RawNodeStatus,
}

/// A node as costop's decisions read it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRec {
    /// The core's view of it (its price is not known here: 0).
    pub view: NodeView,
    /// Its uid (Events name it).
    pub uid: Option<String>,
}

fn label<'a>(labels: &'a Option<BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    labels.as_ref().and_then(|l| l.get(key)).map(String::as_str)
}

impl NodeRec {
    fn from_raw(raw: RawNode) -> Self {
        let RawNode { metadata, spec, status } = raw;
        let labels = &metadata.labels;
        let taints: Vec<Taint> =
            spec.taints.into_iter().map(|t| Taint { key: t.key, effect: t.effect }).collect();
        let (zone, instance_id) =
            spec.provider_id.as_deref().and_then(|p| parse_provider_id(p).ok()).unwrap_or_else(|| {
                (label(labels, "topology.kubernetes.io/zone").unwrap_or("").into(), String::new())
            });
        let ready = ready_in(&status.conditions);
        let own_label = label(labels, CAPACITY_LABEL);
        let capacity = match own_label
            .or(label(labels, "karpenter.sh/capacity-type"))
            .or(label(labels, "eks.amazonaws.com/capacityType"))
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            // A stopped instance's node goes NotReady; costop also labels the ones it stops.
            _ if taints.iter().any(|t| t.key == STANDBY_TAINT) => {
                if !ready || own_label == Some("standby-stopped") {
                    CapacityType::StandbyStopped
                } else {
                    CapacityType::StandbyRunning
                }
            }
            Some("spot") => CapacityType::Spot,
            Some("burstable") => CapacityType::Burstable,
            _ => CapacityType::OnDemand,
        };
        NodeRec {
            view: NodeView {
                name: metadata.name.as_deref().unwrap_or("").into(),
                instance_id: instance_id.into(),
                pool: PoolId::new(label(labels, "node.kubernetes.io/instance-type").unwrap_or(""), zone),
                capacity_type: capacity,
                allocatable: status.allocatable.resources(),
                price_per_hour: 0.0,
                unschedulable: spec.unschedulable.unwrap_or(false),
                taints,
                ready,
                in_load_balancer: label(labels, "node.kubernetes.io/exclude-from-external-load-balancers")
                    .is_none(),
                fallback: label(labels, FALLBACK_LABEL) == Some("true"),
            },
            uid: metadata.uid.clone(),
        }
    }
}

/// A node as decoded off the watch.
#[derive(Debug, Clone)]
pub struct NodeLite {
    meta: ObjectMeta,
    /// The record.
    pub rec: NodeRec,
}

impl<'de> Deserialize<'de> for NodeLite {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawNode::deserialize(d)?;
        Ok(NodeLite { meta: raw.metadata.object_meta(), rec: NodeRec::from_raw(raw) })
    }
}

macro_rules! lite_resource {
    ($ty:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;
            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("")
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("v1")
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.meta
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.meta
            }
        }
    };
}

lite_resource!(PodLite, "Pod", "pods", k8s_openapi::NamespaceResourceScope);
lite_resource!(NodeLite, "Node", "nodes", k8s_openapi::ClusterResourceScope);

/// A record kept in a [`Table`].
pub trait Record: Clone + Send + 'static {
    /// Its key (`namespace/name`, or the name of a cluster-wide object).
    fn key(&self) -> &Name;
    /// The node it is bound to, for the table's by-node lookup.
    fn node(&self) -> Option<&Name> {
        None
    }
}

impl Record for PodRec {
    fn key(&self) -> &Name {
        &self.key
    }
    fn node(&self) -> Option<&Name> {
        self.node.as_ref()
    }
}

impl Record for NodeRec {
    fn key(&self) -> &Name {
        &self.view.name
    }
}

/// What a watched object gives its table.
pub trait Decoded: Send + 'static {
    /// The record kept.
    type Rec: Record;
    /// Its record.
    fn rec(&self) -> &Self::Rec;
}

impl Decoded for PodLite {
    type Rec = PodRec;
    fn rec(&self) -> &PodRec {
        &self.rec
    }
}

impl Decoded for NodeLite {
    type Rec = NodeRec;
    fn rec(&self) -> &NodeRec {
        &self.rec
    }
}

/// The records of one kind, by key, and by node.
pub struct Rows<R> {
    /// By key, in key order: a snapshot's pods come out in name order, so
    /// it finds a pod by name without a map of its own
    /// (`costop_core::listed::PodIndex::by_name`).
    pub by_key: BTreeMap<Name, R>,
    /// Keys of the records bound to each node.
    pub by_node: HashMap<Name, HashSet<Name>>,
    /// Records of a list under way (replaces `by_key` when it is done).
    listing: Option<HashMap<Name, R>>,
    /// Whether a first list is done.
    pub listed: bool,
}

impl<R: Record> Rows<R> {
    fn unbind(&mut self, rec: &R) {
        if let Some(node) = rec.node() {
            if let Some(keys) = self.by_node.get_mut(node) {
                keys.remove(rec.key());
                if keys.is_empty() {
                    self.by_node.remove(node);
                }
            }
        }
    }

    fn bind(&mut self, rec: &R) {
        if let Some(node) = rec.node() {
            self.by_node.entry(node.clone()).or_default().insert(rec.key().clone());
        }
    }

    fn put(&mut self, rec: R) {
        if let Some(old) = self.by_key.get(rec.key()) {
            if old.node() == rec.node() {
                self.by_key.insert(rec.key().clone(), rec);
                return;
            }
            let old = old.clone();
            self.unbind(&old);
        }
        self.bind(&rec);
        self.by_key.insert(rec.key().clone(), rec);
    }

    fn remove(&mut self, key: &Name) {
        if let Some(old) = self.by_key.remove(key) {
            self.unbind(&old);
        }
    }

    /// The records bound to `node`.
    pub fn on_node<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a R> + 'a {
        self.by_node.get(node).into_iter().flatten().filter_map(|k| self.by_key.get(k))
    }
}

/// A lean cache: the records of one kind, kept up to date from a watch.
pub struct Table<R> {
    rows: Mutex<Rows<R>>,
    listed: tokio::sync::watch::Sender<bool>,
}

impl<R: Record> Default for Table<R> {
    fn default() -> Self {
        let rows = Rows { by_key: BTreeMap::new(), by_node: HashMap::new(), listing: None, listed: false };
        Self { rows: Mutex::new(rows), listed: tokio::sync::watch::channel(false).0 }
    }
}

impl<R: Record> Table<R> {
    /// A new, empty table (not listed yet).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The rows, locked.
    pub fn rows(&self) -> MutexGuard<'_, Rows<R>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply one watch event.
    pub fn apply<K: Decoded<Rec = R>>(&self, event: &watcher::Event<K>) {
        let mut rows = self.rows();
        match event {
            watcher::Event::Init => rows.listing = Some(HashMap::new()),
            watcher::Event::InitApply(o) => {
                let rec = o.rec().clone();
                match rows.listing.as_mut() {
                    Some(listing) => {
                        listing.insert(rec.key().clone(), rec);
                    }
                    None => rows.put(rec),
                }
            }
            watcher::Event::InitDone => {
                if let Some(listing) = rows.listing.take() {
                    rows.by_node.clear();
                    rows.by_key = BTreeMap::new();
                    for (_, rec) in listing {
                        rows.put(rec);
                    }
                }
                rows.listed = true;
                drop(rows);
                self.listed.send_replace(true);
            }
            watcher::Event::Apply(o) => rows.put(o.rec().clone()),
            watcher::Event::Delete(o) => {
                let key = o.rec().key().clone();
                rows.remove(&key)
            }
        }
    }

    /// Mark the table listed with nothing in it (a kind not watched).
    pub fn listed_empty(&self) {
        self.rows().listed = true;
        self.listed.send_replace(true);
    }

    /// Wait until the first list is done.
    pub async fn wait_until_listed(&self) {
        let mut rx = self.listed.subscribe();
        let _ = rx.wait_for(|l| *l).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> PodRec {
        serde_json::from_value::<PodLite>(json).unwrap().rec
    }

    #[test]
    fn a_pod_is_read_into_its_record() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web-7d9f-abcde", "namespace": "shop", "resourceVersion": "42",
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
                "annotations": {"big": "x"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f",
                                     "uid": "u", "controller": true}]},
            "spec": {"nodeName": "node-1", "priority": 5, "containers": [
                {"name": "a", "image": "i", "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}}},
                {"name": "b", "image": "i", "resources": {"requests": {"cpu": "1"}}}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-web"}},
                            {"name": "tmp", "emptyDir": {}}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}));
        assert_eq!(p.key, "shop/web-7d9f-abcde");
        assert_eq!(p.namespace(), "shop");
        assert_eq!(p.node.as_deref(), Some("node-1"));
        assert_eq!(p.requests, Resources::new(1250, 1024));
        assert_eq!(p.priority, 5);
        assert!(p.ready && p.live() && !p.placeholder && !p.daemon);
        assert_eq!(p.owner, Owner::ReplicaSet("web-7d9f".into()));
        assert_eq!(p.workload.as_deref(), Some("shop/web"));
        assert_eq!(p.claims, vec![Name::from("data-web")]);

        let gone = pod(serde_json::json!({
            "metadata": {"name": "x", "deletionTimestamp": "2026-01-01T00:00:00Z",
                "ownerReferences": [{"kind": "DaemonSet", "name": "agent", "controller": true}]},
            "spec": {"priorityClassName": PLACEHOLDER_CLASS, "containers": []},
            "status": {"phase": "Succeeded"}}));
        assert_eq!(gone.key, "default/x");
        assert!(gone.terminating && gone.finished && gone.placeholder && gone.daemon && !gone.live());
        assert_eq!(gone.workload.as_deref(), Some("default/agent"));
    }

    #[test]
    fn a_node_is_read_into_its_view() {
        let n = serde_json::from_value::<NodeLite>(serde_json::json!({
            "metadata": {"name": "node-1", "uid": "u-1", "labels": {
                "node.kubernetes.io/instance-type": "m5.xlarge", CAPACITY_LABEL: "spot"}},
            "spec": {"providerID": "aws:///us-east-1a/i-0123456789abcdef0", "unschedulable": true,
                     "taints": [{"key": "k", "effect": "NoSchedule", "value": "v"}]},
            "status": {"allocatable": {"cpu": "3920m", "memory": "15Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap()
        .rec;
        assert_eq!(n.uid.as_deref(), Some("u-1"));
        let v = n.view;
        assert_eq!((v.name.as_str(), v.instance_id.as_str()), ("node-1", "i-0123456789abcdef0"));
        assert_eq!(v.pool, PoolId::new("m5.xlarge", "us-east-1a"));
        assert_eq!(v.capacity_type, CapacityType::Spot);
        assert_eq!(v.allocatable, Resources::new(3920, 15 * 1024));
        assert!(v.unschedulable && v.ready && v.in_load_balancer && !v.fallback);
        assert_eq!(v.taints, vec![Taint { key: "k".into(), effect: "NoSchedule".into() }]);
        // An on-demand node of the group that backs Spot up.
        let fallback = serde_json::from_value::<NodeLite>(serde_json::json!({
            "metadata": {"name": "node-2", "labels": {
                "eks.amazonaws.com/capacityType": "ON_DEMAND", FALLBACK_LABEL: "true"}},
            "spec": {"providerID": "aws:///us-east-1a/i-0123456789abcdef1"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap()
        .rec
        .view;
        assert_eq!(fallback.capacity_type, CapacityType::OnDemand);
        assert!(fallback.fallback);
    }

    #[test]
    fn a_table_follows_lists_and_changes_with_its_by_node_lookup() {
        let lite = |name: &str, node: &str| {
            serde_json::from_value::<PodLite>(serde_json::json!({
                "metadata": {"name": name}, "spec": {"nodeName": node, "containers": []}}))
            .unwrap()
        };
        let table = Table::<PodRec>::new();
        table.apply(&watcher::Event::<PodLite>::Init);
        table.apply(&watcher::Event::InitApply(lite("a", "n1")));
        assert!(table.rows().by_key.is_empty(), "a list under way is not shown");
        table.apply(&watcher::Event::<PodLite>::InitDone);
        table.apply(&watcher::Event::Apply(lite("b", "n1")));
        table.apply(&watcher::Event::Apply(lite("a", "n2")));
        let keys = |node: &str| {
            let mut k: Vec<String> = table.rows().on_node(node).map(|r| r.key.to_string()).collect();
            k.sort();
            k
        };
        assert_eq!(keys("n1"), vec!["default/b"]);
        assert_eq!(keys("n2"), vec!["default/a"]);
        table.apply(&watcher::Event::Delete(lite("a", "n2")));
        assert!(keys("n2").is_empty());
        assert!(table.rows().listed);
        // A relist replaces everything.
        table.apply(&watcher::Event::<PodLite>::Init);
        table.apply(&watcher::Event::InitApply(lite("c", "n3")));
        table.apply(&watcher::Event::<PodLite>::InitDone);
        assert_eq!(keys("n3"), vec!["default/c"]);
        assert!(keys("n1").is_empty());
        assert_eq!(table.rows().by_key.len(), 1);
    }
}
