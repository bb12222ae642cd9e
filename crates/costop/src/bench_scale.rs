//! `costop bench emu`: the emulator at the scale of issue 15 (5,000 nodes,
//! 150,000 pods). Builds the world in this process, waits until every pod
//! is bound, Running and Ready, then times lists of one node's pods (a
//! `spec.nodeName` field selector, what a drain reads) through HTTP, a full
//! pod list, the watch latency of node patches, and memory.

use anyhow::{anyhow, Context, Result};
use costop_emu::admin::Scenario;
use costop_emu::kinds::idx;
use costop_emu::store::IndexBy;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use std::time::{Duration, Instant};

/// What `costop bench emu` builds and measures.
#[derive(Debug, Clone)]
pub struct EmuBench {
    /// Nodes (m5.xlarge Spot, over three zones).
    pub nodes: u32,
    /// Application pods per node (Deployments of 50 replicas, 100m CPU and
    /// 256 MiB each, so 30 a node fit an m5.xlarge's 3,680m), plus one
    /// placeholder per five nodes.
    pub pods_per_node: u32,
    /// One-node pod lists to time.
    pub lists: u32,
    /// Node patches whose watch events are timed.
    pub patches: u32,
    /// How long to wait for the world to settle.
    pub settle_timeout: Duration,
}

/// Pods per Deployment in the bench's world (the generated scenario's).
const REPLICAS_PER_DEPLOYMENT: u32 = 50;

/// The bench's world, as a scenario file's JSON: `nodes` m5.xlarge Spot
/// nodes over three zones, Deployments of 50 replicas (budget 90 %) of
/// 100m / 256 MiB pods, and placeholders worth a fifth of the nodes.
pub fn scenario_json(nodes: u32, pods_per_node: u32) -> serde_json::Value {
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
    let groups: Vec<serde_json::Value> = zones
        .iter()
        .enumerate()
        .map(|(i, z)| (nodes / 3 + u32::from((i as u32) < nodes % 3), z))
        .filter(|(count, _)| *count > 0)
        .map(|(count, z)| {
            serde_json::json!({"count": count, "instance_type": "m5.xlarge", "zone": z, "capacity_type": "spot"})
        })
        .collect();
    let pods = nodes.saturating_mul(pods_per_node);
    let deployments: Vec<serde_json::Value> = (0..pods.div_ceil(REPLICAS_PER_DEPLOYMENT))
        .map(|i| {
            let replicas = (pods - i * REPLICAS_PER_DEPLOYMENT).min(REPLICAS_PER_DEPLOYMENT);
            serde_json::json!({"name": format!("svc-{i:04}"), "replicas": replicas, "cpu": "100m",
                               "memory": "256Mi", "min_available": replicas * 9 / 10})
        })
        .collect();
    let mut world = serde_json::json!({"nodes": groups, "deployments": deployments});
    if nodes >= 5 {
        world["placeholders"] = serde_json::json!({"count": nodes / 5, "cpu": "500m", "memory": "512Mi"});
    }
    world
}

/// [`scenario_json`] as the emulator reads it.
pub fn scenario(nodes: u32, pods_per_node: u32) -> Result<Scenario> {
    serde_json::from_value(scenario_json(nodes, pods_per_node)).context("the bench's scenario")
}

/// Pods the emulator holds now, those not bound yet and those bound but
/// not started.
fn pod_counts(st: &costop_emu::EmuState) -> (usize, usize, usize) {
    let count = |by, v: &str| {
        let mut n = 0;
        st.store.scan_by(by, v, |_, _, _| n += 1);
        n
    };
    (st.store.count(idx::PODS), count(IndexBy::NodeName, ""), count(IndexBy::Kubelet, "starting"))
}

/// The `q` quantile of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Run the bench and print one JSON object.
pub fn emu(bench: EmuBench) -> Result<()> {
    if bench.nodes == 0 || bench.pods_per_node == 0 || bench.lists == 0 {
        return Err(anyhow!("--nodes, --pods-per-node and --lists must be at least 1"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let dir = std::env::temp_dir().join(format!("costop-bench-emu-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let rss_before = super::proc_status_mib("VmRSS:").unwrap_or(0.0);
        let emu = costop_emu::Emulator::start(costop_emu::EmuConfig {
            kubeconfig: dir.join("kubeconfig"),
            // Start-up and shutdown in a thousandth of the world's time:
            // settling measures the emulator's own work.
            time_scale: 0.001,
            ..Default::default()
        })
        .await?;
        let started = Instant::now();
        let world = scenario(bench.nodes, bench.pods_per_node)?;
        costop_emu::admin::load(&emu.state, &world).map_err(|e| anyhow!(e))?;
        let want = world.deployments.iter().map(|d| d.replicas as usize).sum::<usize>()
            + world.placeholders.as_ref().map_or(0, |p| p.count as usize);
        loop {
            let (pods, unbound, starting) = pod_counts(&emu.state);
            if pods >= want && unbound == 0 && starting == 0 {
                break;
            }
            if started.elapsed() > bench.settle_timeout {
                return Err(anyhow!(
                    "not settled after {:?}: {pods} of {want} pods, {unbound} not bound, {starting} starting",
                    bench.settle_timeout
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let settle_s = started.elapsed().as_secs_f64();
        let pods = emu.state.store.count(idx::PODS);
        // Let the controllers' last passes (budgets, Deployment status)
        // finish: until the store has not changed for a second (a list
        // made while they still run waits for them: up to 56 ms 1 s after
        // settling, 1.2 ms once quiet).
        let quiet_started = Instant::now();
        let mut last = emu.state.store.resource_version();
        let quiet = loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = emu.state.store.resource_version();
            if now == last {
                break true;
            }
            if quiet_started.elapsed() > bench.settle_timeout {
                break false;
            }
            last = now;
        };
        let quiet_s = quiet_started.elapsed().as_secs_f64();
        let rss = super::proc_status_mib("VmRSS:").unwrap_or(0.0);

        // One node's pods through HTTP, as a drain lists them.
        let http = reqwest::Client::builder().no_proxy().build()?;
        let mut one_node_ms = Vec::new();
        for i in 0..bench.lists {
            let node = format!("node-{}", (u64::from(i) * 7919) % u64::from(bench.nodes));
            let url = format!("{}/api/v1/pods?fieldSelector=spec.nodeName%3D{node}", emu.url());
            let t = Instant::now();
            let resp = http.get(&url).bearer_auth(&emu.state.admin_token).send().await?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.context("one node's pod list")?;
            one_node_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            let items = body["items"].as_array().map_or(0, Vec::len);
            if !status.is_success() || items == 0 {
                return Err(anyhow!("listing {node}'s pods answered {status} with {items} pods"));
            }
        }
        one_node_ms.sort_by(f64::total_cmp);

        let t = Instant::now();
        let all =
            http.get(format!("{}/api/v1/pods", emu.url())).bearer_auth(&emu.state.admin_token).send().await?;
        let all_bytes = all.bytes().await?.len();
        let list_all_s = t.elapsed().as_secs_f64();

        let client = costop_kube::KubeCluster::client_from_kubeconfig(&emu.kubeconfig).await?;
        let nodes_api = Api::<Node>::all(client.clone());
        let rv = nodes_api
            .list(&ListParams::default().limit(1))
            .await?
            .metadata
            .resource_version
            .unwrap_or_default();
        let mut stream = nodes_api.watch(&WatchParams::default().timeout(290), &rv).await?.boxed();
        let mut latencies = Vec::new();
        for i in 0..bench.patches {
            let node = format!("node-{}", i % bench.nodes);
            let mark = format!("m{i}");
            let patch = serde_json::json!({"metadata": {"labels": {"costop.io/bench": mark}}});
            let t = Instant::now();
            nodes_api.patch(&node, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            loop {
                let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
                    .await
                    .map_err(|_| anyhow!("no watch event within 10 s"))?;
                match next {
                    Some(Ok(WatchEvent::Modified(n))) => {
                        let labels = n.metadata.labels.unwrap_or_default();
                        if labels.get("costop.io/bench") == Some(&mark) {
                            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(anyhow!("watch: {e}")),
                    None => return Err(anyhow!("watch ended")),
                }
            }
        }
        latencies.sort_by(f64::total_cmp);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let out = serde_json::json!({
            "nodes": bench.nodes,
            "pods": pods,
            "settle_s": round(settle_s),
            "quiet_after_settle_s": round(quiet_s),
            "quiet": quiet,
            "list_one_node_ms": {"p50": round(percentile(&one_node_ms, 0.50)),
                                 "p99": round(percentile(&one_node_ms, 0.99)), "lists": one_node_ms.len()},
            "list_all_s": round(list_all_s),
            "list_all_mb": round(all_bytes as f64 / 1e6),
            "watch_patches": latencies.len(),
            "watch_p50_ms": round(percentile(&latencies, 0.50)),
            "watch_p99_ms": round(percentile(&latencies, 0.99)),
            "emu_rss_mb": rss,
            "bytes_per_pod": ((rss - rss_before).max(0.0) * 1024.0 * 1024.0 / pods.max(1) as f64).round(),
            "peak_rss_mb": super::peak_rss_mib(),
            "cores": cores,
            "process": "the emulator and this bench's client share one process",
        });
        println!("{out}");
        emu.stop();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_world_fits_its_nodes() {
        let world = scenario(5000, 30).unwrap();
        let pods: u32 = world.deployments.iter().map(|d| d.replicas).sum();
        assert_eq!(pods, 150_000);
        assert_eq!(world.nodes.iter().map(|g| g.count).sum::<u32>(), 5000);
        assert_eq!(world.placeholders.as_ref().map(|p| p.count), Some(1000));
        // 30 pods and a placeholder a node stay within a node's allocatable CPU.
        let node = costop_emu::admin::node_object("node-0", "i-0", &world.nodes[0]).unwrap();
        let allocatable = costop_emu::cluster::parse_cpu(&node["status"]["allocatable"]["cpu"]);
        let cpu = |q: &str| costop_emu::cluster::parse_cpu(&serde_json::json!(q));
        let placeholder = world.placeholders.as_ref().map_or(0, |p| cpu(&p.cpu));
        assert!(30 * cpu(&world.deployments[0].cpu) + placeholder <= allocatable, "{allocatable}m");
        let odd = scenario(7, 3).unwrap();
        assert_eq!(odd.deployments.iter().map(|d| d.replicas).sum::<u32>(), 21);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 0.5), 50.0);
        assert_eq!(percentile(&xs, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
