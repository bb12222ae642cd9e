//! The resources the emulated API serves, for discovery and routing.

/// One resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// API group ("" for core).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Plural resource name in paths.
    pub plural: &'static str,
    /// Singular resource name.
    pub singular: &'static str,
    /// Object kind.
    pub kind: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Verbs, as discovery lists them.
    pub verbs: &'static [&'static str],
    /// Short names (kubectl uses them).
    pub short: &'static [&'static str],
    /// Subresources served.
    pub subresources: &'static [&'static str],
}

const ALL_VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];

/// Every served resource.
pub const KINDS: &[Kind] = &[
    Kind {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        verbs: ALL_VERBS,
        short: &["ns"],
        subresources: &[],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        verbs: ALL_VERBS,
        short: &["no"],
        subresources: &["status"],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        verbs: ALL_VERBS,
        short: &["po"],
        subresources: &["status", "eviction"],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        verbs: ALL_VERBS,
        short: &["ev"],
        subresources: &[],
    },
    Kind {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        namespaced: true,
        verbs: ALL_VERBS,
        short: &["pdb"],
        subresources: &["status"],
    },
    Kind {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        verbs: ALL_VERBS,
        short: &["deploy"],
        subresources: &["status", "scale"],
    },
    Kind {
        group: "scheduling.k8s.io",
        version: "v1",
        plural: "priorityclasses",
        singular: "priorityclass",
        kind: "PriorityClass",
        namespaced: false,
        verbs: ALL_VERBS,
        short: &["pc"],
        subresources: &[],
    },
    Kind {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        verbs: ALL_VERBS,
        short: &[],
        subresources: &[],
    },
    Kind {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "tokenreviews",
        singular: "tokenreview",
        kind: "TokenReview",
        namespaced: false,
        verbs: &["create"],
        short: &[],
        subresources: &[],
    },
    Kind {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        verbs: ALL_VERBS,
        short: &[],
        subresources: &[],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        verbs: ALL_VERBS,
        short: &["pvc"],
        subresources: &["status"],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "persistentvolumes",
        singular: "persistentvolume",
        kind: "PersistentVolume",
        namespaced: false,
        verbs: ALL_VERBS,
        short: &["pv"],
        subresources: &["status"],
    },
    // Stored as sent, with no controller behind them: what `kubectl apply -k
    // deploy/overlays/<kind>` creates besides the kinds above.
    Kind {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        verbs: ALL_VERBS,
        short: &["sa"],
        subresources: &[],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        verbs: ALL_VERBS,
        short: &["cm"],
        subresources: &[],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        verbs: ALL_VERBS,
        short: &[],
        subresources: &[],
    },
    Kind {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        verbs: ALL_VERBS,
        short: &["svc"],
        subresources: &[],
    },
    Kind {
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        singular: "daemonset",
        kind: "DaemonSet",
        namespaced: true,
        verbs: ALL_VERBS,
        short: &["ds"],
        subresources: &[],
    },
    Kind {
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        singular: "statefulset",
        kind: "StatefulSet",
        namespaced: true,
        verbs: ALL_VERBS,
        short: &["sts"],
        subresources: &[],
    },
    Kind {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        verbs: ALL_VERBS,
        short: &[],
        subresources: &[],
    },
    Kind {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        verbs: ALL_VERBS,
        short: &[],
        subresources: &[],
    },
    Kind {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        verbs: ALL_VERBS,
        short: &[],
        subresources: &[],
    },
    Kind {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        verbs: ALL_VERBS,
        short: &[],
        subresources: &[],
    },
    Kind {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        singular: "networkpolicy",
        kind: "NetworkPolicy",
        namespaced: true,
        verbs: ALL_VERBS,
        short: &["netpol"],
        subresources: &[],
    },
];

impl Kind {
    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Index of a resource by group and plural.
pub fn kind_index(group: &str, plural: &str) -> Option<usize> {
    KINDS.iter().position(|k| k.group == group && k.plural == plural)
}

/// Index of a resource by group, version and plural.
pub fn kind_at(group: &str, version: &str, plural: &str) -> Option<usize> {
    KINDS.iter().position(|k| k.group == group && k.version == version && k.plural == plural)
}

/// Well-known indexes.
pub mod idx {
    /// namespaces
    pub const NAMESPACES: usize = 0;
    /// nodes
    pub const NODES: usize = 1;
    /// pods
    pub const PODS: usize = 2;
    /// core events
    pub const EVENTS: usize = 3;
    /// poddisruptionbudgets
    pub const PDBS: usize = 4;
    /// deployments
    pub const DEPLOYMENTS: usize = 5;
    /// priorityclasses
    pub const PRIORITY_CLASSES: usize = 6;
    /// tokenreviews
    pub const TOKEN_REVIEWS: usize = 8;
    /// persistentvolumeclaims
    pub const PVCS: usize = 10;
    /// persistentvolumes
    pub const PVS: usize = 11;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_the_table() {
        assert_eq!(KINDS[idx::NODES].plural, "nodes");
        assert_eq!(KINDS[idx::PODS].plural, "pods");
        assert_eq!(KINDS[idx::EVENTS].plural, "events");
        assert_eq!(KINDS[idx::PDBS].plural, "poddisruptionbudgets");
        assert_eq!(KINDS[idx::DEPLOYMENTS].plural, "deployments");
        assert_eq!(KINDS[idx::PRIORITY_CLASSES].plural, "priorityclasses");
        assert_eq!(KINDS[idx::TOKEN_REVIEWS].plural, "tokenreviews");
        assert_eq!(KINDS[idx::PVCS].plural, "persistentvolumeclaims");
        assert_eq!(KINDS[idx::PVS].plural, "persistentvolumes");
        assert_eq!(kind_index("policy", "poddisruptionbudgets"), Some(idx::PDBS));
    }
}
