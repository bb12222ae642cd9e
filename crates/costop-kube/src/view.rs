//! From Kubernetes objects to the core's `ClusterView`.

use crate::cache::{NodeRec, Owner, PodRec, Rows};
use costop_core::listed::Pods;
use costop_core::model::{NodeView, PodView, VolumeView, WorkloadView};
use costop_core::{ClusterView, Name};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Zone and instance id from an AWS `spec.providerID` (`aws:///ZONE/i-…`).
pub fn parse_provider_id(id: &str) -> Result<(String, String), String> {
    let rest = id.strip_prefix("aws://").ok_or_else(|| format!("providerID `{id}` is not aws://…"))?;
    let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        [zone, instance] if !zone.is_empty() && is_instance_id(instance) => {
            Ok(((*zone).into(), (*instance).into()))
        }
        _ => Err(format!("providerID `{id}` is not aws:///ZONE/i-…")),
    }
}

fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-")
        .is_some_and(|h| (8..=17).contains(&h.len()) && h.chars().all(|c| c.is_ascii_hexdigit()))
}

fn label<'a>(labels: &'a Option<BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    labels.as_ref().and_then(|l| l.get(key)).map(String::as_str)
}

/// The controller owner of an object, if any.
fn controller_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<(&str, &str)> {
    let owner = meta.owner_references.as_ref()?.iter().find(|o| o.controller == Some(true))?;
    Some((owner.kind.as_str(), owner.name.as_str()))
}

/// The workload of each ReplicaSet, by namespace and name: its
/// Deployment's (`namespace/deployment`), or itself when no Deployment owns it.
type ReplicaSetOwners<'a> = HashMap<&'a str, HashMap<&'a str, Name>>;

fn replicaset_owners(replicasets: &[Arc<ReplicaSet>]) -> ReplicaSetOwners<'_> {
    let mut owners: ReplicaSetOwners<'_> = HashMap::new();
    for rs in replicasets {
        let ns = rs.metadata.namespace.as_deref().unwrap_or("default");
        let name = rs.metadata.name.as_deref().unwrap_or("");
        let workload = match controller_of(&rs.metadata).filter(|(kind, _)| *kind == "Deployment") {
            Some((_, deployment)) => format!("{ns}/{deployment}"),
            None => format!("{ns}/{name}"),
        };
        owners.entry(ns).or_default().insert(name, workload.into());
    }
    owners
}

/// EBS volumes by claim (`namespace/claim`): the volume id and zone of
/// each bound PersistentVolume backed by EBS (the CSI driver's, or the
/// in-tree `awsElasticBlockStore`).
fn ebs_by_claim(
    claims: &[Arc<PersistentVolumeClaim>],
    volumes: &[Arc<PersistentVolume>],
) -> BTreeMap<String, (String, String)> {
    let by_name: BTreeMap<&str, &PersistentVolume> =
        volumes.iter().filter_map(|v| Some((v.metadata.name.as_deref()?, v.as_ref()))).collect();
    claims
        .iter()
        .filter_map(|c| {
            let pv = by_name.get(c.spec.as_ref()?.volume_name.as_deref()?)?;
            let (id, zone) = ebs_volume(pv)?;
            let key = format!(
                "{}/{}",
                c.metadata.namespace.as_deref().unwrap_or("default"),
                c.metadata.name.as_deref()?
            );
            Some((key, (id, zone)))
        })
        .collect()
}

/// Zone labels a volume's node affinity may name.
const ZONE_KEYS: &[&str] = &[
    "topology.ebs.csi.aws.com/zone",
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/zone",
];

/// The EBS volume id and zone of a PersistentVolume, if it is one.
pub fn ebs_volume(pv: &PersistentVolume) -> Option<(String, String)> {
    let spec = pv.spec.as_ref()?;
    let (id, mut zone) = if let Some(csi) = spec.csi.as_ref().filter(|c| c.driver == "ebs.csi.aws.com") {
        (csi.volume_handle.clone(), String::new())
    } else {
        // In-tree form: `vol-…` or `aws://ZONE/vol-…`.
        let raw = &spec.aws_elastic_block_store.as_ref()?.volume_id;
        match raw.strip_prefix("aws://").and_then(|r| r.trim_start_matches('/').split_once('/')) {
            Some((z, id)) => (id.to_string(), z.to_string()),
            None => (raw.clone(), String::new()),
        }
    };
    if !id.starts_with("vol-") {
        return None;
    }
    let terms = spec.node_affinity.as_ref().and_then(|a| a.required.as_ref()).map(|r| &r.node_selector_terms);
    for term in terms.into_iter().flatten() {
        for e in term.match_expressions.iter().flatten() {
            if ZONE_KEYS.contains(&e.key.as_str()) && e.operator == "In" {
                if let Some(z) = e.values.as_ref().and_then(|v| v.first()) {
                    zone = z.clone();
                }
            }
        }
    }
    if zone.is_empty() {
        zone = label(&pv.metadata.labels, "topology.kubernetes.io/zone").unwrap_or("").to_string();
    }
    Some((id, zone))
}

/// The workload `p` belongs to: its ReplicaSet's Deployment, or the owner
/// its record names.
fn workload_of<'a>(p: &'a PodRec, owners: &'a ReplicaSetOwners<'_>) -> Option<&'a Name> {
    match &p.owner {
        Owner::ReplicaSet(rs) => {
            owners.get(p.namespace()).and_then(|o| o.get(rs.as_str())).or(p.workload.as_ref())
        }
        _ => p.workload.as_ref(),
    }
}

/// The EBS volumes `p` mounts, through its claims.
fn volumes_of(p: &PodRec, ebs: &BTreeMap<String, (String, String)>) -> Vec<VolumeView> {
    let ns = p.namespace();
    p.claims
        .iter()
        .filter_map(|claim| ebs.get(&format!("{ns}/{claim}")))
        .map(|(id, zone)| VolumeView {
            volume_id: id.as_str().into(),
            zone: zone.as_str().into(),
            attached_to: p.node.clone(),
        })
        .collect()
}

fn pod_view(p: &PodRec, ebs: &BTreeMap<String, (String, String)>, owners: &ReplicaSetOwners<'_>) -> PodView {
    PodView {
        name: p.key.clone(),
        workload: workload_of(p, owners).cloned(),
        node: p.node.clone(),
        requests: p.requests,
        priority: p.priority,
        ready: p.ready,
        placeholder: p.placeholder,
        daemon: p.daemon,
        volumes: volumes_of(p, ebs),
    }
}

/// Whether `v` (a row of the last snapshot) is what [`pod_view`] makes of
/// `p` now: compared field by field, nothing built but a pod's volumes.
fn shows(
    v: &PodView,
    p: &PodRec,
    ebs: &BTreeMap<String, (String, String)>,
    owners: &ReplicaSetOwners<'_>,
) -> bool {
    v.name == p.key
        && v.node == p.node
        && v.ready == p.ready
        && v.requests == p.requests
        && v.priority == p.priority
        && v.placeholder == p.placeholder
        && v.daemon == p.daemon
        && v.workload.as_ref() == workload_of(p, owners)
        && if p.claims.is_empty() { v.volumes.is_empty() } else { v.volumes == volumes_of(p, ebs) }
}

fn budget_amount(v: &Option<IntOrString>, of: u32) -> Option<u32> {
    match v.as_ref()? {
        IntOrString::Int(i) => Some((*i).max(0) as u32),
        IntOrString::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<f64>().ok())
            .map(|p| (p / 100.0 * f64::from(of)).ceil() as u32),
    }
}

fn matches(
    selector: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    labels: &Option<BTreeMap<String, String>>,
) -> bool {
    let Some(sel) = selector else { return false };
    let labels_ok =
        sel.match_labels.as_ref().is_none_or(|m| m.iter().all(|(k, v)| label(labels, k) == Some(v.as_str())));
    let exprs_ok = sel.match_expressions.as_ref().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let got = label(labels, &e.key);
            let values = e.values.clone().unwrap_or_default();
            match e.operator.as_str() {
                "In" => got.is_some_and(|g| values.iter().any(|v| v == g)),
                "NotIn" => got.is_none_or(|g| values.iter().all(|v| v != g)),
                "Exists" => got.is_some(),
                "DoesNotExist" => got.is_none(),
                _ => false,
            }
        })
    });
    labels_ok && exprs_ok
}

/// The cached records and objects a view is built from.
pub struct Objects<'a> {
    /// Nodes.
    pub nodes: &'a Rows<NodeRec>,
    /// Pods.
    pub pods: &'a Rows<PodRec>,
    /// Deployments.
    pub deployments: &'a [Arc<Deployment>],
    /// StatefulSets.
    pub statefulsets: &'a [Arc<StatefulSet>],
    /// ReplicaSets (those a Deployment owns, and standalone ones).
    pub replicasets: &'a [Arc<ReplicaSet>],
    /// PodDisruptionBudgets.
    pub budgets: &'a [Arc<PodDisruptionBudget>],
    /// PersistentVolumeClaims.
    pub claims: &'a [Arc<PersistentVolumeClaim>],
    /// PersistentVolumes.
    pub volumes: &'a [Arc<PersistentVolume>],
}

/// The core's view of these records and objects: nodes in name order,
/// live pods (neither finished nor being deleted) in name order (the
/// cache's key order: the view finds them by binary search), workloads
/// with their budgets. Its lookups are not built yet (see `ClusterView::with_lookups`).
/// Rows of `last_pods` (the last snapshot's pods) that are still right
/// are shared, not made again.
pub fn build(o: &Objects<'_>, last_pods: Option<&Pods>) -> ClusterView {
    let Objects { nodes, pods, deployments, statefulsets, replicasets, budgets, claims, volumes } = *o;
    let owners = replicaset_owners(replicasets);
    let ebs = ebs_by_claim(claims, volumes);
    let mut node_views: Vec<NodeView> = nodes.by_key.values().map(|n| n.view.clone()).collect();
    node_views.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    // Sized up front: collected from a filter, the list grew by doubling
    // and kept up to twice the room it needs (at 151,000 pods, 262,144
    // places of a snapshot that may outlive the next few).
    let mut pod_views: Vec<Arc<PodView>> = Vec::with_capacity(pods.by_key.len());
    // A pod the last snapshot showed as it is now keeps that row, shared
    // (both lists are in name order): the snapshots alive at once hold one
    // row per pod between them, not one each (a row is 120 bytes, 18 MB
    // for 151,000 pods).
    let mut last = last_pods.map_or(&[][..], |l| &l[..]).iter().peekable();
    pod_views.extend(pods.by_key.values().filter(|p| p.live()).map(|p| {
        while last.next_if(|v| v.name < p.key).is_some() {}
        match last.next_if(|v| shows(v, p, &ebs, &owners)) {
            Some(kept) => kept.clone(),
            None => Arc::new(pod_view(p, &ebs, &owners)),
        }
    }));
    ClusterView {
        nodes: node_views.into(),
        pods: pod_views.into(),
        workloads: workloads(deployments, statefulsets, replicasets, budgets),
        ..ClusterView::default()
    }
}

/// Deployments, StatefulSets and standalone ReplicaSets, with the
/// minimum their budgets keep available.
fn workloads(
    deployments: &[Arc<Deployment>],
    statefulsets: &[Arc<StatefulSet>],
    replicasets: &[Arc<ReplicaSet>],
    budgets: &[Arc<PodDisruptionBudget>],
) -> Vec<WorkloadView> {
    // A workload: its namespace and name, replicas, and pod template labels
    // (what budgets select).
    let deployed = deployments.iter().map(|d| {
        let spec = d.spec.clone().unwrap_or_default();
        (&d.metadata, spec.replicas, spec.template.metadata.and_then(|m| m.labels), true)
    });
    let stateful = statefulsets.iter().map(|s| {
        let spec = s.spec.clone().unwrap_or_default();
        (&s.metadata, spec.replicas, spec.template.metadata.and_then(|m| m.labels), false)
    });
    // A ReplicaSet no Deployment owns is a workload of its own.
    let standalone = replicasets.iter().filter(|rs| controller_of(&rs.metadata).is_none()).map(|rs| {
        let spec = rs.spec.clone().unwrap_or_default();
        (&rs.metadata, spec.replicas, spec.template.and_then(|t| t.metadata).and_then(|m| m.labels), false)
    });
    // Budgets by namespace and the first label their selector names (those
    // without one are tried on every workload of their namespace): a
    // workload is matched against the few budgets that could select it,
    // not every budget of the cluster (3,000 × 3,000 label checks at full size).
    let mut by_label: HashMap<(&str, &str, &str), Vec<&PodDisruptionBudget>> = HashMap::new();
    let mut unlabelled: HashMap<&str, Vec<&PodDisruptionBudget>> = HashMap::new();
    for b in budgets {
        let ns = b.metadata.namespace.as_deref().unwrap_or("default");
        let first = b.spec.as_ref().and_then(|s| s.selector.as_ref()?.match_labels.as_ref()?.iter().next());
        match first {
            Some((k, v)) => by_label.entry((ns, k.as_str(), v.as_str())).or_default().push(b),
            None => unlabelled.entry(ns).or_default().push(b),
        }
    }
    deployed
        .chain(stateful)
        .chain(standalone)
        .map(|(meta, replicas, template_labels, surgeable)| {
            let ns = meta.namespace.as_deref().unwrap_or("default");
            let replicas = replicas.unwrap_or(1).max(0) as u32;
            let labelled = template_labels
                .iter()
                .flatten()
                .filter_map(|(k, v)| by_label.get(&(ns, k.as_str(), v.as_str())))
                .flatten();
            let min_available = labelled
                .chain(unlabelled.get(ns).into_iter().flatten())
                .filter_map(|b| b.spec.as_ref())
                .filter(|s| matches(&s.selector, &template_labels))
                .filter_map(|s| {
                    budget_amount(&s.min_available, replicas).or_else(|| {
                        budget_amount(&s.max_unavailable, replicas).map(|m| replicas.saturating_sub(m))
                    })
                })
                .max()
                .unwrap_or(0);
            WorkloadView {
                name: format!("{ns}/{}", meta.name.as_deref().unwrap_or("")).into(),
                replicas,
                min_available,
                bridged: false,
                surgeable,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pods come out of the cache in name order, whatever order they came
    /// in: a snapshot finds a pod by name with no map of its own.
    #[test]
    fn a_snapshot_lists_its_pods_in_name_order() {
        use crate::cache::{NodeRec, PodLite, Table};
        use kube::runtime::watcher;
        let lite = |name: &str| {
            serde_json::from_value::<PodLite>(serde_json::json!({
                "metadata": {"name": name, "namespace": "shop"}, "spec": {"nodeName": "n1", "containers": []}}))
            .unwrap()
        };
        let pods = Table::<PodRec>::new();
        for name in ["web-c", "db-0", "web-a", "api-b"] {
            pods.apply(&watcher::Event::Apply(lite(name)));
        }
        let view = build_from(&Table::<NodeRec>::new(), &pods, None);
        let names: Vec<&str> = view.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["shop/api-b", "shop/db-0", "shop/web-a", "shop/web-c"]);
        assert_eq!(view.pod("shop/db-0").map(|p| p.name.as_str()), Some("shop/db-0"));
        assert!(view.pod("shop/db-1").is_none());
    }

    /// A view of bare pods and nodes as the caches hold them (see [`build`]).
    fn build_from(
        nodes: &crate::cache::Table<NodeRec>,
        pods: &crate::cache::Table<PodRec>,
        last: Option<&Pods>,
    ) -> ClusterView {
        let objects = Objects {
            nodes: &nodes.rows(),
            pods: &pods.rows(),
            deployments: &[],
            statefulsets: &[],
            replicasets: &[],
            budgets: &[],
            claims: &[],
            volumes: &[],
        };
        build(&objects, last)
    }

    /// A new snapshot shares the rows of the pods that did not change
    /// with the last one, and has rows of its own for those that did, came
    /// or went: the same list a snapshot built afresh shows.
    #[test]
    fn a_snapshot_shares_the_rows_of_unchanged_pods_with_the_last() {
        use crate::cache::{PodLite, Table};
        use kube::runtime::watcher;
        let lite = |name: &str, node: &str| {
            serde_json::from_value::<PodLite>(serde_json::json!({
                "metadata": {"name": name, "namespace": "shop"}, "spec": {"nodeName": node, "containers": []}}))
            .unwrap()
        };
        let (nodes, pods) = (Table::<NodeRec>::new(), Table::<PodRec>::new());
        for name in ["a", "b", "c", "d"] {
            pods.apply(&watcher::Event::Apply(lite(name, "n1")));
        }
        let first = build_from(&nodes, &pods, None);
        // b moves, c goes, e comes.
        pods.apply(&watcher::Event::Apply(lite("b", "n2")));
        pods.apply(&watcher::Event::Delete(lite("c", "n1")));
        pods.apply(&watcher::Event::Apply(lite("e", "n1")));
        let second = build_from(&nodes, &pods, Some(&first.pods));
        let afresh = build_from(&nodes, &pods, None);
        assert_eq!(second.pods, afresh.pods);
        let shared = |name: &str| {
            let (a, b) = (first.pod(name).unwrap(), second.pod(name).unwrap());
            std::ptr::eq(a, b)
        };
        assert!(shared("shop/a") && shared("shop/d"), "unchanged rows are shared");
        assert!(!shared("shop/b"), "a changed pod has a row of its own");
        assert_eq!(second.pod("shop/b").and_then(|p| p.node.as_deref()), Some("n2"));
        assert!(second.pod("shop/c").is_none() && second.pod("shop/e").is_some());
    }

    fn pv(spec: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "pv"}, "spec": spec})).unwrap()
    }

    #[test]
    fn ebs_volumes_from_csi_and_in_tree_forms() {
        let affinity = serde_json::json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "topology.ebs.csi.aws.com/zone", "operator": "In", "values": ["us-east-1b"]}]}]}});
        let csi = pv(serde_json::json!({"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-0abc"},
                                       "nodeAffinity": affinity}));
        assert_eq!(ebs_volume(&csi), Some(("vol-0abc".into(), "us-east-1b".into())));
        let in_tree =
            pv(serde_json::json!({"awsElasticBlockStore": {"volumeID": "aws://us-east-1c/vol-0def"}}));
        assert_eq!(ebs_volume(&in_tree), Some(("vol-0def".into(), "us-east-1c".into())));
        let other = pv(serde_json::json!({"csi": {"driver": "efs.csi.aws.com", "volumeHandle": "fs-1"}}));
        assert_eq!(ebs_volume(&other), None);
        let junk =
            pv(serde_json::json!({"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "not-a-volume"}}));
        assert_eq!(ebs_volume(&junk), None);
    }

    #[test]
    fn provider_ids() {
        assert_eq!(
            parse_provider_id("aws:///us-east-1a/i-0123456789abcdef0").unwrap(),
            ("us-east-1a".to_string(), "i-0123456789abcdef0".to_string())
        );
        for bad in [
            "",
            "gce://p/z/n",
            "aws:///us-east-1a",
            "aws:///us-east-1a/x-123",
            "aws:///us-east-1a/i-zz",
            "aws:////i-12345678",
            "aws:///a/b/i-12345678",
        ] {
            let err = parse_provider_id(bad).unwrap_err();
            assert!(err.contains("providerID"), "{bad}: {err}");
        }
    }
}
