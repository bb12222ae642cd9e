//! The kube-rs adapter against `costop emu` over real HTTP: no mock of the
//! HTTP layer.

use costop_core::ports::{ClusterPort, Evicted};
use costop_core::CapacityType;
use costop_emu::admin::{DeploymentSpec, NodeGroup, Scenario};
use costop_emu::{EmuConfig, Emulator};
use costop_kube::{KubeCluster, KubeError};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Node};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::time::{Duration, Instant};

async fn emulator(nodes: u32, deployments: Vec<DeploymentSpec>) -> Emulator {
    let dir = std::env::temp_dir().join(format!("costop-kube-test-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let emu = Emulator::start(EmuConfig {
        kubeconfig: dir.join("kubeconfig"),
        time_scale: 0.01,
        tick: Duration::from_millis(20),
        ..Default::default()
    })
    .await
    .unwrap();
    let scenario = Scenario {
        nodes: vec![NodeGroup {
            count: nodes,
            instance_type: "m5.xlarge".into(),
            zone: "us-east-1a".into(),
            capacity_type: "spot".into(),
        }],
        deployments,
        placeholders: None,
    };
    costop_emu::admin::load(&emu.state, &scenario).unwrap();
    emu
}

fn rand_suffix() -> String {
    costop_emu::random_suffix()
}

fn deployment(name: &str, replicas: u32, min_available: Option<u32>) -> DeploymentSpec {
    DeploymentSpec {
        name: name.into(),
        namespace: None,
        replicas,
        cpu: "250m".into(),
        memory: "256Mi".into(),
        min_available,
    }
}

async fn adapter(emu: &Emulator) -> KubeCluster {
    let client = KubeCluster::client_from_kubeconfig(&emu.kubeconfig).await.unwrap();
    let cluster = KubeCluster::start(client);
    cluster.ready().await.unwrap();
    cluster
}

async fn until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_sees_a_cordon_within_a_second() {
    let emu = emulator(3, vec![deployment("web", 6, Some(5))]).await;
    let cluster = adapter(&emu).await;
    until("six ready pods", Duration::from_secs(10), || {
        (cluster.view().pods.iter().filter(|p| p.ready).count() == 6).then_some(())
    })
    .await;
    let view = cluster.view();
    let web = view.workload("default/web").expect("workload seen");
    assert_eq!((web.replicas, web.min_available), (6, 5));
    assert!(view.nodes.iter().all(|n| n.instance_id.starts_with("i-") && n.pool.zone == "us-east-1a"));

    // What `kubectl cordon` sends: a strategic merge patch.
    let nodes = Api::<Node>::all(cluster.client().clone());
    let started = Instant::now();
    nodes
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Strategic(serde_json::json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    until("the cordon in the cache", Duration::from_secs(1), || {
        cluster.view().node("node-1").filter(|n| n.unschedulable).map(|_| ())
    })
    .await;
    eprintln!("cordon seen by the reflector after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taint_cordon_uncordon_and_standby_taints_are_idempotent() {
    let emu = emulator(2, vec![]).await;
    let cluster = adapter(&emu).await;
    cluster.taint_and_cordon("node-0").await.unwrap();
    cluster.taint_and_cordon("node-0").await.unwrap();
    let node = Api::<Node>::all(cluster.client().clone()).get("node-0").await.unwrap();
    let spec = node.spec.unwrap();
    assert_eq!(spec.unschedulable, Some(true));
    let taints = spec.taints.unwrap();
    assert_eq!(taints.iter().filter(|t| t.key == "costop.io/interruption").count(), 1);
    // A retirement that cannot drain node-0 gives it back.
    cluster.untaint_and_uncordon("node-0").await.unwrap();
    cluster.untaint_and_uncordon("node-0").await.unwrap();
    let spec = Api::<Node>::all(cluster.client().clone()).get("node-0").await.unwrap().spec.unwrap();
    assert_ne!(spec.unschedulable, Some(true));
    assert!(!spec.taints.unwrap_or_default().iter().any(|t| t.key == "costop.io/interruption"));
    until("node-0 schedulable in the view", Duration::from_secs(2), || {
        cluster.view().node("node-0").filter(|n| !n.unschedulable).map(|_| ())
    })
    .await;
    cluster.taint_and_cordon("node-0").await.unwrap();

    cluster.taint_standby("node-1", costop_core::StandbyMode::Stopped).await.unwrap();
    let n1 = Api::<Node>::all(cluster.client().clone()).get("node-1").await.unwrap();
    assert!(n1.spec.unwrap().taints.unwrap().iter().any(|t| t.key == "costop.io/standby"));
    assert_eq!(n1.metadata.labels.unwrap()["costop.io/capacity-type"], "standby-stopped");
    until("a stopped standby in the view", Duration::from_secs(2), || {
        cluster.view().node("node-1").filter(|n| n.capacity_type == CapacityType::StandbyStopped).map(|_| ())
    })
    .await;
    cluster.untaint_standby("node-1").await.unwrap();
    let n1 = Api::<Node>::all(cluster.client().clone()).get("node-1").await.unwrap();
    assert!(n1.spec.unwrap().taints.unwrap_or_default().is_empty());
    assert_eq!(n1.metadata.labels.unwrap()["costop.io/capacity-type"], "on-demand");
    until("back in service in the view", Duration::from_secs(2), || {
        cluster.view().node("node-1").filter(|n| n.capacity_type == CapacityType::OnDemand).map(|_| ())
    })
    .await;
    let err = cluster.taint_and_cordon("node-missing").await.unwrap_err();
    assert!(matches!(err, KubeError::Api { .. }) && err.to_string().contains("node/node-missing"), "{err}");
}

/// The name of one pod once two are Ready (the two-replica `db` the
/// budget tests run).
async fn one_of_two_ready_pods(cluster: &KubeCluster) -> String {
    until("two ready pods", Duration::from_secs(10), || {
        let view = cluster.view();
        let ready: Vec<_> = view.pods.iter().filter(|p| p.ready).map(|p| p.name.to_string()).collect();
        (ready.len() == 2).then(|| ready[0].clone())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_a_budget_refuses_is_answered_refused_and_goes_once_the_budget_allows() {
    let emu = emulator(2, vec![deployment("db", 2, Some(2))]).await;
    let cluster = adapter(&emu).await;
    let pod = one_of_two_ready_pods(&cluster).await;

    // One request each: the budget's refusal is an answer, asked again
    // as the caller sees fit.
    assert_eq!(cluster.evict(&pod).await.unwrap(), Evicted::Refused);
    assert_eq!(cluster.evict(&pod).await.unwrap(), Evicted::Refused);

    // Loosen the budget: the eviction goes through.
    let pdbs = Api::<PodDisruptionBudget>::namespaced(cluster.client().clone(), "default");
    pdbs.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"minAvailable": 1}})),
    )
    .await
    .unwrap();
    assert_eq!(cluster.evict(&pod).await.unwrap(), Evicted::Accepted);
    // The Deployment replaces it, and the pod itself goes.
    until("a replacement ready", Duration::from_secs(10), || {
        let view = cluster.view();
        (view.pods.iter().filter(|p| p.ready).count() == 2 && !view.pods.iter().any(|p| p.name == pod))
            .then_some(())
    })
    .await;
    assert_eq!(cluster.evict(&pod).await.unwrap(), Evicted::AlreadyGone);
    assert!(matches!(cluster.evict("no-namespace").await, Err(KubeError::Invalid(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doomed_pod_its_budget_keeps_is_deleted_and_the_deletion_is_told() {
    let emu = emulator(2, vec![deployment("db", 2, Some(2))]).await;
    let cluster = adapter(&emu).await;
    let pod = one_of_two_ready_pods(&cluster).await;
    assert_eq!(cluster.evict(&pod).await.unwrap(), Evicted::Refused, "the budget lets no eviction through");
    assert_eq!(cluster.delete_doomed_pod(&pod).await.unwrap(), Evicted::Accepted);
    until("the pod gone and replaced", Duration::from_secs(10), || {
        let view = cluster.view();
        (!view.pods.iter().any(|p| p.name == pod) && view.pods.iter().filter(|p| p.ready).count() == 2)
            .then_some(())
    })
    .await;
    assert_eq!(cluster.delete_doomed_pod(&pod).await.unwrap(), Evicted::AlreadyGone);
    let (_, name) = pod.split_once('/').unwrap();
    let events = Api::<Event>::namespaced(cluster.client().clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events.items.iter().any(|e| e.type_.as_deref() == Some("Warning")
            && e.involved_object.name.as_deref() == Some(name)
            && e.message.as_deref().is_some_and(|m| m.starts_with(&format!("costop deleted {pod}")))),
        "no Warning on the pod: {:?}",
        events.items.iter().map(|e| e.message.clone()).collect::<Vec<_>>()
    );
    assert!(matches!(cluster.delete_doomed_pod("no-namespace").await, Err(KubeError::Invalid(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholders_scale_and_are_claimed_and_events_are_recorded() {
    let emu = emulator(2, vec![]).await;
    let cluster = adapter(&emu).await;
    cluster.scale_placeholders(3).await.unwrap();
    let placeholders = until("three placeholders running", Duration::from_secs(10), || {
        let view = cluster.view();
        let ps: Vec<String> =
            view.pods.iter().filter(|p| p.placeholder && p.ready).map(|p| p.name.to_string()).collect();
        (ps.len() == 3).then_some(ps)
    })
    .await;
    assert!(cluster.view().pods.iter().filter(|p| p.placeholder).all(|p| p.priority == -10));
    cluster.claim_placeholders(&placeholders[..1]).await.unwrap();
    let deploys = Api::<Deployment>::namespaced(cluster.client().clone(), "costop-system");
    assert_eq!(deploys.get("costop-headroom").await.unwrap().spec.unwrap().replicas, Some(2));
    until("two placeholders left", Duration::from_secs(10), || {
        let view = cluster.view();
        (view.pods.iter().filter(|p| p.placeholder).count() == 2
            && !view.pods.iter().any(|p| p.name == placeholders[0]))
        .then_some(())
    })
    .await;

    cluster.node_event("node-0", "CostopTaintAndCordon", "spot interruption notice: cordoned").await.unwrap();
    let events = Api::<Event>::namespaced(cluster.client().clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(events.items.iter().any(|e| e.reason.as_deref() == Some("CostopTaintAndCordon")
        && e.involved_object.name.as_deref() == Some("node-0")));
    cluster.delete_node("node-1").await.unwrap();
    cluster.delete_node("node-1").await.unwrap();
    assert!(Api::<Node>::all(cluster.client().clone()).get_opt("node-1").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_share_one_view_until_the_caches_change_and_waiters_are_woken() {
    let emu = emulator(2, vec![]).await;
    let cluster = adapter(&emu).await;
    // Let the emulator's first node-status writes reach the caches.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = cluster.view();
    tokio::time::sleep(costop_kube::VIEW_MAX_AGE * 2).await;
    let again = cluster.view();
    assert!(std::sync::Arc::ptr_eq(&first, &again), "nothing changed: the same view, however old");
    assert!(!first.node("node-0").unwrap().unschedulable);
    let (woken, _) =
        tokio::join!(tokio::time::timeout(Duration::from_secs(10), cluster.changed_since(&again)), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cluster.taint_and_cordon("node-0").await.unwrap();
        });
    assert!(woken.is_ok(), "a waiter on the view is woken by the change");
    let cordoned = until("the cordon in the view", Duration::from_secs(5), || {
        let v = cluster.view();
        let cordoned = v.node("node-0").is_some_and(|n| n.unschedulable);
        cordoned.then_some(v)
    })
    .await;
    assert!(!std::sync::Arc::ptr_eq(&first, &cordoned));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_adds_replicas_once_per_key_and_ends_back_where_it_began() {
    let emu = emulator(3, vec![deployment("web", 3, Some(2))]).await;
    let cluster = adapter(&emu).await;
    let deploys = Api::<Deployment>::namespaced(cluster.client().clone(), "default");
    let replicas = || async { deploys.get("web").await.unwrap().spec.unwrap().replicas.unwrap() };
    until("web listed as a Deployment costop may surge", Duration::from_secs(10), || {
        cluster.view().workload("default/web").filter(|w| w.surgeable).map(|_| ())
    })
    .await;

    assert!(cluster.surge("default/web", "i-1:spot-interruption:120000", 2).await.unwrap());
    assert_eq!(replicas().await, 5);
    // Again under the same key (a resumed response): nothing more.
    assert!(!cluster.surge("default/web", "i-1:spot-interruption:120000", 2).await.unwrap());
    assert_eq!(replicas().await, 5);
    // Another response's surge adds its own.
    assert!(cluster.surge("default/web", "i-2:spot-interruption:120000", 1).await.unwrap());
    assert_eq!(replicas().await, 6);
    let marks = deploys.get("web").await.unwrap().metadata.annotations.unwrap();
    assert_eq!(marks.get(&costop_kube::surge_annotation("i-1:spot-interruption:120000")).unwrap(), "2");
    until("six web pods Ready", Duration::from_secs(20), || {
        (cluster.view().ready_pods_of("default/web") == 6).then_some(())
    })
    .await;

    assert!(cluster.end_surge("default/web", "i-1:spot-interruption:120000").await.unwrap());
    assert!(!cluster.end_surge("default/web", "i-1:spot-interruption:120000").await.unwrap());
    assert_eq!(replicas().await, 4);
    assert!(cluster.end_surge("default/web", "i-2:spot-interruption:120000").await.unwrap());
    assert_eq!(replicas().await, 3);
    let marks = deploys.get("web").await.unwrap().metadata.annotations.unwrap_or_default();
    assert!(!marks.keys().any(|k| k.starts_with("surge.costop.io/")), "{marks:?}");

    let e = cluster.surge("web", "k", 1).await.unwrap_err().to_string();
    assert!(e.contains("namespace/name"), "{e}");
    let e = cluster.surge("default/nope", "k", 1).await.unwrap_err().to_string();
    assert!(e.contains("deployment/default/nope"), "{e}");
}

/// A burst's responses change the same objects at once: 60 surges of one
/// Deployment under 60 keys, then their ends, and 12 claims of the
/// placeholders, all concurrent. Every one is applied (none fails for the
/// others' changes), and the counts end exactly where they should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_surges_and_placeholder_claims_all_apply() {
    let emu = emulator(3, vec![deployment("web", 3, Some(2))]).await;
    let cluster = adapter(&emu).await;
    until("web listed as a Deployment costop may surge", Duration::from_secs(10), || {
        cluster.view().workload("default/web").filter(|w| w.surgeable).map(|_| ())
    })
    .await;
    let deploys = Api::<Deployment>::namespaced(cluster.client().clone(), "default");
    let replicas = || async { deploys.get("web").await.unwrap().spec.unwrap().replicas.unwrap() };
    let keys: Vec<String> = (0..60).map(|i| format!("i-{i}:spot-interruption:120000")).collect();
    let raised = futures::future::join_all(keys.iter().map(|k| cluster.surge("default/web", k, 1))).await;
    assert!(raised.iter().all(|r| matches!(r, Ok(true))), "{raised:?}");
    assert_eq!(replicas().await, 63);
    let ended = futures::future::join_all(keys.iter().map(|k| cluster.end_surge("default/web", k))).await;
    assert!(ended.iter().all(|r| matches!(r, Ok(true))), "{ended:?}");
    assert_eq!(replicas().await, 3);

    cluster.scale_placeholders(24).await.unwrap();
    let placeholders = until("24 placeholders", Duration::from_secs(20), || {
        let view = cluster.view();
        let ps: Vec<String> =
            view.pods.iter().filter(|p| p.placeholder).map(|p| p.name.to_string()).collect();
        (ps.len() == 24).then_some(ps)
    })
    .await;
    let claimed =
        futures::future::join_all(placeholders.chunks(2).map(|two| cluster.claim_placeholders(two))).await;
    assert!(claimed.iter().all(Result::is_ok), "{claimed:?}");
    let headroom = Api::<Deployment>::namespaced(cluster.client().clone(), "costop-system");
    assert_eq!(headroom.get("costop-headroom").await.unwrap().spec.unwrap().replicas, Some(0));
}

/// A whole pool's pods may wait at once for their eviction or their
/// delete before the deadline (51,000 at full size), one future each:
/// those futures hold only what waiting needs, not the requests' state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_eviction_delete_or_surge_is_small() {
    let emu = emulator(1, vec![]).await;
    let cluster = adapter(&emu).await;
    let evict = std::mem::size_of_val(&cluster.evict("default/web-0"));
    let delete = std::mem::size_of_val(&cluster.delete_doomed_pod("default/web-0"));
    assert!(evict < 1024, "an eviction's future is {evict} bytes");
    assert!(delete < 1024, "a delete's future is {delete} bytes");
    // Each response surges every Deployment it displaces at once (51,000
    // surges at full size): waiting, a surge holds its answer's receiver,
    // not the Deployment's read and patch.
    let surge = std::mem::size_of_val(&cluster.surge("default/web", "k", 1));
    assert!(surge < 512, "a surge's future is {surge} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_a_node_deletes_its_pods_at_once_and_then_the_node() {
    let emu = emulator(2, vec![deployment("web", 4, None)]).await;
    let cluster = adapter(&emu).await;
    let on_node = |node: &str| cluster.view().workload_pods_on(node).count();
    until("web pods on node-1", Duration::from_secs(10), || (on_node("node-1") > 0).then_some(())).await;
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::all(cluster.client().clone());
    let bound = || async {
        pods.list(&ListParams::default().fields("spec.nodeName=node-1")).await.unwrap().items.len()
    };
    assert!(bound().await > 0);
    // The emulator's pod GC may take the pods with the Node before the
    // adapter gets to them (the real one waits 40 s): any count is right.
    cluster.forget_node("node-1").await.unwrap();
    assert_eq!(bound().await, 0, "pods left bound to the forgotten node");
    assert!(Api::<Node>::all(cluster.client().clone()).get_opt("node-1").await.unwrap().is_none());
    // Their Deployment replaces them on the node left.
    until("four web pods again", Duration::from_secs(20), || {
        (cluster.view().ready_pods_of("default/web") == 4 && on_node("node-1") == 0).then_some(())
    })
    .await;
    // Forgetting it again deletes nothing and is no error.
    assert_eq!(cluster.forget_node("node-1").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_node_carries_the_autoscalers_scale_down_mark_until_released() {
    let emu = emulator(2, vec![]).await;
    let cluster = adapter(&emu).await;
    let nodes = Api::<Node>::all(cluster.client().clone());
    let mark = || async {
        let n = nodes.get("node-1").await.unwrap();
        n.metadata.annotations.unwrap_or_default().get(costop_kube::SCALE_DOWN_DISABLED).cloned()
    };
    assert_eq!(mark().await, None);
    cluster.hold_from_scale_down("node-1", true).await.unwrap();
    cluster.hold_from_scale_down("node-1", true).await.unwrap();
    assert_eq!(mark().await.as_deref(), Some("true"));
    cluster.hold_from_scale_down("node-1", false).await.unwrap();
    assert_eq!(mark().await, None);
    // Unmarking a node that is gone is no error; marking one is.
    cluster.hold_from_scale_down("node-9", false).await.unwrap();
    assert!(cluster.hold_from_scale_down("node-9", true).await.is_err());
}
