//! `costop server --dashboard ADDR`: the demo's dashboard page
//! (`crate::demo_dashboard`) showing what a server knows, where there is no
//! emulated world and no load generator: each response this process ran,
//! with its steps as they finished (from the server's and executor's own
//! `responding` / `step done` events, as the demo takes them), and the
//! nodes and pods of a cluster view kept by the same Kubernetes adapter the
//! server plans with (its own watch of nodes and pods). The request and
//! cost charts, which need the demo's load generator and emulated cloud,
//! are hidden.

use crate::demo_dashboard::Source;
use crate::demo_report::{init_tracing_with, ResponseBook, StepEvent};
use anyhow::{Context, Result};
use costop_core::ports::ClusterPort;
use costop_kube::KubeCluster;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// The response events, from tracing's start until the dashboard takes them.
static EVENTS: OnceLock<Mutex<Option<mpsc::UnboundedReceiver<StepEvent>>>> = OnceLock::new();

/// The server's log at `default_filter` (or `COSTOP_LOG`), its response
/// events kept for [`start`].
pub fn init_tracing(default_filter: &str) {
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = EVENTS.set(Mutex::new(Some(rx)));
    init_tracing_with(default_filter, tx);
}

/// What a server knows, for the page.
struct ServerView {
    start: Instant,
    book: ResponseBook,
    /// Filled once the cluster view has synced.
    cluster: OnceLock<KubeCluster>,
}

impl Source for ServerView {
    fn snapshot(&self) -> serde_json::Value {
        let mut nodes = Vec::new();
        let (mut starting, mut pods_ready) = (0u32, 0u32);
        if let Some(cluster) = self.cluster.get() {
            let view = cluster.view();
            // Node → (Ready, not Ready) workload pods.
            let mut on: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
            for p in view.pods.iter().filter(|p| !p.placeholder && !p.daemon) {
                if p.ready {
                    pods_ready += 1;
                } else {
                    starting += 1;
                }
                if let Some(n) = &p.node {
                    let e = on.entry(n.as_str()).or_default();
                    if p.ready {
                        e.0 += 1;
                    } else {
                        e.1 += 1;
                    }
                }
            }
            for n in view.nodes.iter() {
                let (ready, not_ready) = on.get(n.name.as_str()).copied().unwrap_or_default();
                nodes.push(serde_json::json!({
                    "name": n.name.to_string(),
                    "pool": n.pool.to_string(),
                    "capacity": n.capacity_type,
                    "ready": n.ready,
                    "cordoned": n.unschedulable,
                    "pods": {"ready": ready, "starting": not_ready, "stopping": 0},
                }));
            }
        }
        let steps = self.book.steps();
        serde_json::json!({
            "mode": "server",
            "t": (self.start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "synced": self.cluster.get().is_some(),
            "nodes": nodes,
            "pods": {"ready": pods_ready, "starting": starting, "stopping": 0},
            "responses": self.book.log(),
            "history": [],
            "summary": {
                "responses": self.book.responses(),
                "steps_done": steps.values().map(|s| s.0).sum::<u64>(),
                "steps_failed": steps.values().map(|s| s.1).sum::<u64>(),
                "nodes": nodes.len(),
                "cordoned": nodes.iter().filter(|n| n["cordoned"] == true).count(),
            },
        })
    }
}

/// Serve the dashboard on `addr` until `shutdown`: the page at once, the
/// cluster's nodes once the view has synced (`kubeconfig` as the server's).
pub async fn start(
    addr: SocketAddr,
    kubeconfig: Option<&Path>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--dashboard {addr}: cannot listen"))?;
    let local = listener.local_addr().with_context(|| format!("--dashboard {addr}"))?;
    let config = KubeCluster::load_config(kubeconfig).await?;
    let client = KubeCluster::client_from_config(config)?;
    let view = Arc::new(ServerView {
        start: Instant::now(),
        book: ResponseBook::default(),
        cluster: OnceLock::new(),
    });
    let events = EVENTS.get().and_then(|e| e.lock().unwrap_or_else(|e| e.into_inner()).take());
    if let Some(mut events) = events {
        let v = view.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                v.book.record(e, v.start.elapsed().as_secs_f64());
            }
        });
    }
    let v = view.clone();
    tokio::spawn(async move {
        let cluster = KubeCluster::start(client);
        match cluster.ready().await {
            Ok(()) => {
                let _ = v.cluster.set(cluster);
            }
            Err(e) => tracing::warn!(error = %e, "dashboard: no cluster view, the page shows no nodes"),
        }
    });
    tracing::info!(url = %format!("http://{local}/"), "dashboard");
    eprintln!("costop server: dashboard at http://{local}/");
    tokio::spawn(crate::demo_dashboard::serve(listener, view, shutdown));
    Ok(())
}
