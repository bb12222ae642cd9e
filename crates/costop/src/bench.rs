//! `costop bench …`: benchmarks that print JSON. Not timed tests.

use anyhow::{anyhow, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The emulator with `nodes` nodes and `pods` pods: time a full pod list
/// through kube-rs, the watch latency of node patches, and memory.
pub fn emu(nodes: u32, pods: u32, patches: u32) -> Result<()> {
    if nodes == 0 {
        return Err(anyhow!("--nodes must be at least 1"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let dir = std::env::temp_dir().join(format!("costop-bench-emu-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let emu = costop_emu::Emulator::start(costop_emu::EmuConfig {
            kubeconfig: dir.join("kubeconfig"),
            time_scale: 0.001,
            tick: Duration::from_millis(250),
            ..Default::default()
        })
        .await?;
        let started = Instant::now();
        let scenario = costop_emu::admin::generated_scenario(nodes, pods.div_ceil(nodes));
        costop_emu::admin::load(&emu.state, &scenario).map_err(|e| anyhow!(e))?;
        let want = scenario.deployments.iter().map(|d| d.replicas as usize).sum::<usize>();
        loop {
            let mut running = 0;
            emu.state.store.scan(costop_emu::kinds::idx::PODS, |_, _, p| {
                if p["status"]["phase"] == "Running" {
                    running += 1;
                }
            });
            if running >= want {
                break;
            }
            if started.elapsed() > Duration::from_secs(1200) {
                return Err(anyhow!("only {running} of {want} pods running after 20 minutes"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let settle_s = started.elapsed().as_secs_f64();
        let emu_rss = super::proc_status_mib("VmRSS:");

        let client = costop_kube::KubeCluster::client_from_kubeconfig(&emu.kubeconfig).await?;
        let pods_api = Api::<Pod>::all(client.clone());
        let mut list_s = Vec::new();
        let mut listed = 0;
        for _ in 0..3 {
            let t = Instant::now();
            listed = pods_api.list(&ListParams::default()).await.context("list pods")?.items.len();
            list_s.push(t.elapsed().as_secs_f64());
        }
        list_s.sort_by(f64::total_cmp);

        let nodes_api = Api::<Node>::all(client.clone());
        let rv = nodes_api
            .list(&ListParams::default().limit(1))
            .await?
            .metadata
            .resource_version
            .unwrap_or_default();
        let mut stream = nodes_api.watch(&WatchParams::default().timeout(290), &rv).await?.boxed();
        let mut latencies = Vec::new();
        for i in 0..patches {
            let node = format!("node-{}", i % nodes);
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
        let out = serde_json::json!({
            "nodes": nodes, "pods": listed,
            "settle_s": round(settle_s),
            "list_pods_s": round(list_s[list_s.len() / 2]),
            "watch_patches": latencies.len(),
            "watch_p50_ms": round(percentile(&latencies, 0.50)),
            "watch_p99_ms": round(percentile(&latencies, 0.99)),
            "emu_rss_mib": emu_rss,
            "peak_rss_mib": super::peak_rss_mib(),
        });
        println!("{out}");
        emu.stop();
        Ok(())
    })
}
