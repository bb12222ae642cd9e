//! A burst of notices on a bigger cluster (issue 15, in small): real
//! `costop emu` (500 nodes, 5,000 pods) and `costop server` processes, 170
//! interruption notices posted at once through the agents' authenticated
//! HTTP path (each with its node's agent-pod token). No notice may be
//! refused for leadership (503), the server must keep the Lease all along
//! (no transition), and every noticed node must end up cordoned.
//! Counts and status codes only: the timings are `costop bench`'s.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{bin, free_port, Proc};

const NODES: u32 = 500;
const PODS_PER_NODE: u32 = 10;
const NOTICES: usize = 170;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    let r = http.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    r.json().await.unwrap_or(Value::Null)
}

/// Poll `check` every 200 ms until it holds; panic with `what` and the
/// server log's tail after `timeout`.
async fn wait_for(
    what: &str,
    timeout: Duration,
    log: &std::path::Path,
    mut check: impl AsyncFnMut() -> bool,
) {
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > timeout {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            panic!(
                "timed out waiting for {what}; server log:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_170_notices_on_500_nodes_is_taken_by_the_leader_and_cordons_every_node() {
    let dir = std::env::temp_dir().join(format!("costop-burst-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_emu, kubeconfig, emu_url) = common::start_emu_scaled(&dir, NODES, PODS_PER_NODE, 0.05);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    let server_url = format!("http://127.0.0.1:{}", free_port());
    let log = dir.join("server.log");
    let server = Command::new(bin())
        .args(["server", "--listen", server_url.trim_start_matches("http://"), "--identity", "burst"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("COSTOP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _server = Proc(server);
    wait_for("the server to lead", Duration::from_secs(60), &log, async || {
        let r = http.get(format!("{server_url}/readyz")).send().await;
        match r {
            Ok(r) => r.text().await.ok().as_deref() == Some("leader"),
            Err(_) => false,
        }
    })
    .await;
    let want = (NODES * PODS_PER_NODE) as usize;
    wait_for("the workload to run", Duration::from_secs(120), &log, async || {
        let pods = get(&http, &format!("{emu_url}/api/v1/namespaces/default/pods")).await;
        pods["items"]
            .as_array()
            .map_or(0, |ps| ps.iter().filter(|p| p["status"]["phase"] == "Running").count())
            >= want
    })
    .await;

    // The first NOTICES nodes, each with its instance and an agent pod's token.
    let nodes = get(&http, &format!("{emu_url}/api/v1/nodes")).await;
    let instances: HashMap<String, String> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let provider = n["spec"]["providerID"].as_str().unwrap();
            (
                n["metadata"]["name"].as_str().unwrap().to_string(),
                provider.rsplit('/').next().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(instances.len(), NODES as usize);
    let mut agents = Vec::new();
    for i in 0..NOTICES {
        let node = format!("node-{i}");
        let name = format!("costop-agent-{node}");
        let pod = json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                "name": "costop-agent", "uid": "costop-agent-ds", "controller": true}]},
            "spec": {"nodeName": node, "serviceAccountName": "costop-agent", "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "agent", "image": "costop:dev"}]}});
        let r = http
            .post(format!("{emu_url}/api/v1/namespaces/costop-system/pods"))
            .json(&pod)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
        let token = get(&http, &format!("{emu_url}/admin/tokens/costop-system/{name}")).await["token"]
            .as_str()
            .unwrap()
            .to_string();
        agents.push((node.clone(), instances[&node].clone(), token));
    }

    // Every notice at once, as a reclaimed pool's agents send them.
    let effective_at = now_ms() + 120_000;
    let posts = agents.iter().map(|(_, instance, token)| {
        let notice = serde_json::to_value(costop_core::Notice {
            instance_id: instance.clone(),
            kind: costop_core::NoticeKind::SpotInterruption {
                action: costop_core::notice::InstanceAction::Terminate,
                effective_at,
            },
            received_at: now_ms(),
            source: costop_core::NoticeSource::Agent,
        })
        .unwrap();
        let (http, url) = (http.clone(), format!("{server_url}/v1/notices"));
        let token = token.clone();
        async move {
            let r = http.post(url).bearer_auth(token).json(&notice).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    });
    let answers = futures::future::join_all(posts).await;
    let refused: Vec<&(u16, String)> = answers.iter().filter(|(code, _)| *code == 503).collect();
    assert!(refused.is_empty(), "{} of {NOTICES} notices got 503: {:?}", refused.len(), refused.first());
    let accepted = answers.iter().filter(|(code, _)| *code == 202).count();
    assert_eq!(accepted, NOTICES, "every notice accepted: {:?}", answers.iter().find(|(c, _)| *c != 202));

    let noticed: Vec<&String> = agents.iter().map(|(node, _, _)| node).collect();
    let cordoned = async || {
        let nodes = get(&http, &format!("{emu_url}/api/v1/nodes")).await;
        nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["spec"]["unschedulable"] == true)
            .filter(|n| noticed.iter().any(|name| n["metadata"]["name"] == name.as_str()))
            .count()
    };
    wait_for("every noticed node cordoned", Duration::from_secs(120), &log, async || {
        cordoned().await == NOTICES
    })
    .await;

    // The server led all along: the Lease never changed hands.
    let lease = get(
        &http,
        &format!("{emu_url}/apis/coordination.k8s.io/v1/namespaces/costop-system/leases/costop-server"),
    )
    .await;
    assert_eq!(lease["spec"]["holderIdentity"], "burst");
    assert_eq!(lease["spec"]["leaseTransitions"], 0, "{lease}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("leadership lost"), "the server lost leadership during the burst");
}
