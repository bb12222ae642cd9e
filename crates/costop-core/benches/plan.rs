//! Planning one notice on a whole cluster (issue 15): 5,000 Spot nodes in
//! three pools, 150,000 workload pods (30 a node, 3,000 Deployments of 50
//! with a budget of 45) and 1,000 placeholders.
//!
//! `cargo bench -p costop-core --bench plan`. The server hands every
//! notice the same snapshot, its lookups built when it was published
//! (`ClusterView::with_lookups`); it copies the view to add the pools and
//! the capacity already requested (a copy shares the nodes and pods).

use costop_core::effects::apply_steps;
use costop_core::listed::{Lookups, PodIndex};
use costop_core::model::{CapacityType, NodeView, PodView, PoolId, PoolView, Resources};
use costop_core::notice::InstanceAction;
use costop_core::{respond, ClusterView, Notice, NoticeKind, NoticeSource, Policy, Step, WorkloadView};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

const NODES: usize = 5_000;
const PODS_PER_NODE: usize = 30;
const REPLICAS: usize = 50;
const PLACEHOLDERS: usize = 1_000;
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

fn instance(i: usize) -> String {
    format!("i-{i:017x}")
}

fn pools() -> Vec<PoolView> {
    ["m5.xlarge", "m5a.xlarge", "m6i.xlarge", "c5.2xlarge"]
        .iter()
        .flat_map(|t| ZONES.iter().map(move |z| PoolId::new(*t, *z)))
        .map(|id| PoolView {
            id,
            spot_price: 0.07,
            on_demand_price: 0.192,
            interruptions_per_day: 0.05,
            launchable: true,
            last_interruption: None,
        })
        .collect()
}

/// The cluster of `costop bench burst` at full size, as the server sees it.
fn cluster() -> ClusterView {
    let nodes: Vec<NodeView> = (0..NODES)
        .map(|i| NodeView {
            name: format!("node-{i}").into(),
            instance_id: instance(i).into(),
            pool: PoolId::new("m5.xlarge", ZONES[i % 3]),
            capacity_type: CapacityType::Spot,
            allocatable: Resources::new(3_920, 15_000),
            price_per_hour: 0.07,
            unschedulable: false,
            taints: vec![],
            ready: true,
            in_load_balancer: true,
            fallback: false,
        })
        .collect();
    let workloads: Vec<WorkloadView> = (0..NODES * PODS_PER_NODE / REPLICAS)
        .map(|w| WorkloadView {
            name: format!("default/svc-{w:04}").into(),
            replicas: REPLICAS as u32,
            min_available: (REPLICAS * 9 / 10) as u32,
            bridged: false,
            surgeable: true,
        })
        .collect();
    // Replicas spread over nodes as a scheduler spreads them: pod k of the
    // cluster on node k % NODES.
    let mut pods: Vec<PodView> = (0..NODES * PODS_PER_NODE)
        .map(|k| PodView {
            name: format!("default/svc-{:04}-7d9f8b6c5d-{k:05x}", k / REPLICAS).into(),
            workload: Some(workloads[k / REPLICAS].name.clone()),
            node: Some(nodes[k % NODES].name.clone()),
            requests: Resources::new(100, 256),
            priority: 0,
            ready: true,
            placeholder: false,
            daemon: false,
            volumes: vec![],
        })
        .collect();
    pods.extend((0..PLACEHOLDERS).map(|k| PodView {
        name: format!("costop-system/costop-headroom-5f6d7c8b9a-{k:05x}").into(),
        workload: Some("costop-system/costop-headroom".into()),
        node: Some(nodes[(k * 5) % NODES].name.clone()),
        requests: Resources::new(500, 512),
        priority: -10,
        ready: true,
        placeholder: true,
        daemon: false,
        volumes: vec![],
    }));
    ClusterView { nodes: nodes.into(), pods: pods.into(), workloads, ..ClusterView::default() }
}

fn notice(i: usize) -> Notice {
    Notice {
        instance_id: instance(i),
        kind: NoticeKind::SpotInterruption { action: InstanceAction::Terminate, effective_at: 1_800_120_000 },
        received_at: 1_800_000_000,
        source: NoticeSource::Agent,
    }
}

fn plan_one_notice(c: &mut Criterion) {
    let snapshot = cluster().with_lookups();
    let policy = Policy::default();
    let now = 1_800_000_000;
    let plan = respond(&snapshot, &notice(0), &policy, now).expect("node-0 is in the cluster");
    assert!(plan.steps_of("evict").next().is_some(), "the plan evicts node-0's pods: {:?}", plan.steps);
    let mut group = c.benchmark_group("150k pods, 5k nodes");
    group.sample_size(50);
    // What the server does per notice: copy the snapshot, add the pools and
    // the capacity requested, plan.
    group.bench_function("plan one notice", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % NODES;
            let mut view = snapshot.clone();
            view.pools = pools();
            view.capacity_requests.insert("restore:i-0".into());
            black_box(respond(&view, &notice(i), &policy, now).expect("a node of the cluster"))
        })
    });
    // In a burst the executor plans on the snapshot with the claims of the
    // responses still open applied (`effects::apply_steps`): here 200
    // other nodes' cordons and evictions (6,000 pods). It applies them
    // once per snapshot, then each new response's on top.
    let pending: Vec<Step> = (1..=200)
        .flat_map(|i| {
            let node = format!("node-{}", NODES - i);
            let pods: Vec<String> = snapshot.workload_pods_on(&node).map(|p| p.name.to_string()).collect();
            [Step::TaintAndCordon { node }, Step::Evict { pods, wave: 0 }]
        })
        .collect();
    // Once per snapshot: the 200 responses' claims applied to it.
    group.bench_function("apply 200 open responses' claims to a snapshot", |b| {
        b.iter(|| {
            let mut view = snapshot.clone();
            apply_steps(&mut view, &pending);
            black_box(view)
        })
    });
    // Per notice: plan on that (the executor keeps it, see
    // `OpenResponses::claimed`).
    let mut claimed = snapshot.clone();
    apply_steps(&mut claimed, &pending);
    group.bench_function("plan one notice with 200 responses open", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % (NODES - 200);
            let mut view = claimed.clone();
            view.pools = pools();
            black_box(respond(&view, &notice(i), &policy, now).expect("a node of the cluster"))
        })
    });
    // A whole pool reclaimed (issue 15's burst): 1,700 responses open,
    // 51,000 pods evicted.
    let whole_pool: Vec<Step> = (1..=1700)
        .flat_map(|i| {
            let node = format!("node-{}", NODES - i);
            let pods: Vec<String> = snapshot.workload_pods_on(&node).map(|p| p.name.to_string()).collect();
            [Step::TaintAndCordon { node }, Step::Evict { pods, wave: 0 }]
        })
        .collect();
    group.bench_function("apply 1,700 open responses' claims to a snapshot", |b| {
        b.iter(|| {
            let mut view = snapshot.clone();
            apply_steps(&mut view, &whole_pool);
            black_box(view)
        })
    });
    // What publishing a snapshot adds, once per snapshot (not per notice).
    group.bench_function("build the pod lookups", |b| b.iter(|| black_box(PodIndex::build(&snapshot.pods))));
    group.finish();
}

criterion_group!(benches, plan_one_notice);
criterion_main!(benches);
