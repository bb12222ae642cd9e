//! From Kubernetes objects to the core's `ClusterView`.

use crate::PLACEHOLDER_CLASS;
use costop_core::model::{
    CapacityType, NodeView, PodView, PoolId, Resources, Taint, VolumeView, WorkloadView, STANDBY_TAINT,
};
use costop_core::quantity::{cpu_millis, memory_mib};
use costop_core::ClusterView;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
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

fn node_view(n: &Node) -> NodeView {
    let labels = &n.metadata.labels;
    let spec = n.spec.clone().unwrap_or_default();
    let taints: Vec<Taint> =
        spec.taints.unwrap_or_default().into_iter().map(|t| Taint { key: t.key, effect: t.effect }).collect();
    let (zone, instance_id) =
        spec.provider_id.as_deref().and_then(|p| parse_provider_id(p).ok()).unwrap_or_else(|| {
            (label(labels, "topology.kubernetes.io/zone").unwrap_or("").into(), String::new())
        });
    let status = n.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let own_label = label(labels, crate::CAPACITY_LABEL);
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
    let alloc = status.allocatable.unwrap_or_default();
    NodeView {
        name: n.metadata.name.clone().unwrap_or_default().into(),
        instance_id: instance_id.into(),
        pool: PoolId::new(label(labels, "node.kubernetes.io/instance-type").unwrap_or(""), zone),
        capacity_type: capacity,
        allocatable: Resources::new(
            alloc.get("cpu").map_or(0, |q| cpu_millis(&q.0)),
            alloc.get("memory").map_or(0, |q| memory_mib(&q.0)),
        ),
        price_per_hour: 0.0,
        unschedulable: spec.unschedulable.unwrap_or(false),
        taints,
        ready,
        in_load_balancer: label(labels, "node.kubernetes.io/exclude-from-external-load-balancers").is_none(),
    }
}

/// The controller owner of an object, if any.
fn controller_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<(&str, &str)> {
    let owner = meta.owner_references.as_ref()?.iter().find(|o| o.controller == Some(true))?;
    Some((owner.kind.as_str(), owner.name.as_str()))
}

/// What owns each ReplicaSet (`namespace/name` → its Deployment's name, or
/// None for a standalone one).
type ReplicaSetOwners = BTreeMap<String, Option<String>>;

fn replicaset_owners(replicasets: &[Arc<ReplicaSet>]) -> ReplicaSetOwners {
    replicasets
        .iter()
        .map(|rs| {
            let key = format!(
                "{}/{}",
                rs.metadata.namespace.as_deref().unwrap_or("default"),
                rs.metadata.name.as_deref().unwrap_or("")
            );
            let deployment = controller_of(&rs.metadata)
                .filter(|(kind, _)| *kind == "Deployment")
                .map(|(_, n)| n.to_string());
            (key, deployment)
        })
        .collect()
}

/// The workload a pod belongs to, `namespace/name`: its controller, and
/// for a ReplicaSet the Deployment owning it (when the ReplicaSet is not in
/// the cache, the name before its hash suffix).
fn workload_of(p: &Pod, owners: &ReplicaSetOwners) -> Option<String> {
    let ns = p.metadata.namespace.as_deref().unwrap_or("default");
    let (kind, owner) = controller_of(&p.metadata)?;
    let name = match kind {
        "ReplicaSet" => match owners.get(&format!("{ns}/{owner}")) {
            Some(Some(deployment)) => deployment.as_str(),
            Some(None) => owner,
            None => owner.rsplit_once('-').map_or(owner, |(d, _)| d),
        },
        _ => owner,
    };
    Some(format!("{ns}/{name}"))
}

/// EBS volumes by claim (`namespace/claim`): the volume id and zone of
/// each bound PersistentVolume backed by EBS (the CSI driver's, or the
/// in-tree `awsElasticBlockStore`).
/// Whether a pod has run to completion (`Succeeded` or `Failed`).
pub(crate) fn is_finished(p: &Pod) -> bool {
    matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed") | Some("Succeeded"))
}

/// Whether a DaemonSet controls the pod.
pub(crate) fn is_daemon(p: &Pod) -> bool {
    p.metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.controller == Some(true) && r.kind == "DaemonSet"))
}

/// Whether the pod is one of costop's placeholders.
pub(crate) fn is_placeholder(p: &Pod) -> bool {
    p.spec.as_ref().and_then(|s| s.priority_class_name.as_deref()) == Some(PLACEHOLDER_CLASS)
}

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

fn pod_view(p: &Pod, ebs: &BTreeMap<String, (String, String)>, owners: &ReplicaSetOwners) -> PodView {
    let spec = p.spec.clone().unwrap_or_default();
    let requests = spec.containers.iter().fold(Resources::default(), |acc, c| {
        let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        acc.plus(&Resources::new(
            req.and_then(|r| r.get("cpu")).map_or(0, |q| cpu_millis(&q.0)),
            req.and_then(|r| r.get("memory")).map_or(0, |q| memory_mib(&q.0)),
        ))
    });
    let ready = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    PodView {
        name: format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or("default"),
            p.metadata.name.as_deref().unwrap_or("")
        )
        .into(),
        workload: workload_of(p, owners).map(Into::into),
        node: spec.node_name.clone().map(Into::into),
        requests,
        priority: spec.priority.unwrap_or(0),
        ready,
        placeholder: is_placeholder(p),
        daemon: is_daemon(p),
        volumes: {
            let ns = p.metadata.namespace.as_deref().unwrap_or("default");
            spec.volumes
                .iter()
                .flatten()
                .filter_map(|v| ebs.get(&format!("{ns}/{}", v.persistent_volume_claim.as_ref()?.claim_name)))
                .map(|(id, zone)| VolumeView {
                    volume_id: id.as_str().into(),
                    zone: zone.as_str().into(),
                    attached_to: spec.node_name.clone().map(Into::into),
                })
                .collect()
        },
    }
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

/// The cached objects a view is built from.
pub struct Objects<'a> {
    /// Nodes.
    pub nodes: &'a [Arc<Node>],
    /// Pods.
    pub pods: &'a [Arc<Pod>],
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

/// The core's view of these objects.
pub fn build(o: &Objects<'_>) -> ClusterView {
    let Objects { nodes, pods, deployments, statefulsets, replicasets, budgets, claims, volumes } = *o;
    let owners = replicaset_owners(replicasets);
    let ebs = ebs_by_claim(claims, volumes);
    let live_pods = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && !is_finished(p));
    // A workload: its namespace and name, replicas, and pod template labels
    // (what budgets select).
    let deployed = deployments.iter().map(|d| {
        let spec = d.spec.clone().unwrap_or_default();
        (&d.metadata, spec.replicas, spec.template.metadata.and_then(|m| m.labels))
    });
    let stateful = statefulsets.iter().map(|s| {
        let spec = s.spec.clone().unwrap_or_default();
        (&s.metadata, spec.replicas, spec.template.metadata.and_then(|m| m.labels))
    });
    // A ReplicaSet no Deployment owns is a workload of its own.
    let standalone = replicasets.iter().filter(|rs| controller_of(&rs.metadata).is_none()).map(|rs| {
        let spec = rs.spec.clone().unwrap_or_default();
        (&rs.metadata, spec.replicas, spec.template.and_then(|t| t.metadata).and_then(|m| m.labels))
    });
    let workloads = deployed
        .chain(stateful)
        .chain(standalone)
        .map(|(meta, replicas, template_labels)| {
            let ns = meta.namespace.as_deref().unwrap_or("default");
            let replicas = replicas.unwrap_or(1).max(0) as u32;
            let min_available = budgets
                .iter()
                .filter(|b| b.metadata.namespace.as_deref() == Some(ns))
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
            }
        })
        .collect();
    ClusterView {
        nodes: nodes.iter().map(|n| node_view(n)).collect(),
        pods: live_pods.map(|p| pod_view(p, &ebs, &owners)).collect(),
        workloads,
        ..ClusterView::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
