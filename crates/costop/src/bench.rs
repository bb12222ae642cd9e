//! `costop bench …`: benchmarks that print JSON. Not timed tests.

use super::bench_scale::percentile;
use anyhow::{anyhow, Context, Result};
use std::time::{Duration, Instant};

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Time from a notice appearing in a node's instance metadata to that node
/// carrying costop's taint: agent poll → Redis and HTTP → server → kube-rs
/// patch → emulated API. Everything in this process but Redis, which runs
/// as a real `redis-server` when one is installed.
pub fn notice_latency(config: &super::config::Config, runs: u32, poll_ms: u64) -> Result<()> {
    if runs == 0 {
        return Err(anyhow!("--runs must be at least 1"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let policy = config.policy.clone();
    runtime.block_on(async move {
        let dir = std::env::temp_dir().join(format!("costop-bench-notice-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let emu = costop_emu::Emulator::start(costop_emu::EmuConfig {
            kubeconfig: dir.join("kubeconfig"),
            time_scale: 0.05,
            tick: Duration::from_millis(50),
            ..Default::default()
        })
        .await?;
        let scenario = costop_emu::admin::Scenario {
            nodes: vec![costop_emu::admin::NodeGroup {
                count: runs + 1,
                instance_type: "m5.xlarge".into(),
                zone: "us-east-1a".into(),
                capacity_type: "spot".into(),
            }],
            ..Default::default()
        };
        costop_emu::admin::load(&emu.state, &scenario).map_err(|e| anyhow!(e))?;
        let redis = costop_store::redis_server::RedisServer::start().ok();
        let store_kind = if redis.is_some() { "redis" } else { "memory" };
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let server = costop_server::ServerConfig {
            listen,
            redis_url: redis.as_ref().map(|r| r.url()),
            kubeconfig: Some(emu.kubeconfig.clone()),
            emu_url: Some(emu.url()),
            aws: None,
            policy,
            identity: "bench".into(),
            // One process: a key of its own signs and checks its plans.
            plan_key: Some(format!("bench-plan-key-{}", std::process::id())),
            allow_unsigned_plans: false,
            advertise_url: None,
            dry_run: false,
        };
        let server_stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = costop_server::run(server, server_stop).await {
                tracing::error!(error = %e, "server failed");
            }
        });
        let http = reqwest::Client::builder().no_proxy().build()?;
        let server_url = format!("http://{listen}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(format!("{server_url}/readyz")).send().await.ok().map(|r| r.status().is_success()) != Some(true)
            || http.get(format!("{server_url}/readyz")).send().await?.text().await? != "leader"
        {
            if Instant::now() > deadline {
                return Err(anyhow!("the server did not become leader within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // One agent pod (owned by a DaemonSet) and one agent per node.
        for i in 0..runs {
            let node = format!("node-{i}");
            let pod = serde_json::json!({"metadata": {"name": format!("costop-agent-{node}"), "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "costop-agent", "uid": "ds", "controller": true}]},
                "spec": {"nodeName": node, "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "agent", "image": "costop:dev"}]}});
            emu.state.create(costop_emu::kinds::idx::PODS, "kube-system", pod).map_err(|e| anyhow!(e.to_string()))?;
            let token = emu.state.pod_token("kube-system", &format!("costop-agent-{node}")).unwrap_or_default();
            let token_path = dir.join(format!("token-{node}"));
            std::fs::write(&token_path, token)?;
            let agent = costop_agent::AgentConfig {
                imds_url: format!("{}/imds/{node}", emu.url()),
                server_url: Some(server_url.clone()),
                redis_url: redis.as_ref().map(|r| r.url()),
                token_path: Some(token_path),
                poll: Duration::from_millis(poll_ms.max(10)),
            };
            let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
            let agent = costop_agent::Agent::try_new(agent, std::sync::Arc::new(costop_store::SystemClock), tx)
                .with_context(|| format!("agent for {node}"))?;
            let agent = std::sync::Arc::new(agent);
            tokio::spawn(agent.run(stop.clone()));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut latencies = Vec::new();
        for i in 0..runs {
            let node = format!("node-{i}");
            // Notices come at any moment of an agent's poll cycle: start at a random phase.
            let phase = costop_emu::random_suffix().bytes().map(u64::from).sum::<u64>() * 7919 % poll_ms.max(1);
            tokio::time::sleep(Duration::from_millis(phase)).await;
            let mut changes = emu.state.store.subscribe();
            let t = Instant::now();
            let body = axum_body(r#"{"interruption": {"action": "terminate", "in_seconds": 120}}"#);
            costop_emu::imds::inject(&emu.state, &node, &body);
            let tainted = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match changes.recv().await {
                        Ok(c) if c.kind == costop_emu::kinds::idx::NODES
                            && c.object["metadata"]["name"] == node.as_str()
                            && c.object["spec"]["taints"]
                                .as_array()
                                .is_some_and(|ts| ts.iter().any(|t| t["key"] == "costop.io/interruption")) =>
                        {
                            return true
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return false,
                    }
                }
            })
            .await;
            if tainted != Ok(true) {
                return Err(anyhow!("{node} was not tainted within 10 s of its notice"));
            }
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let _ = stop_tx.send(true);
        latencies.sort_by(f64::total_cmp);
        let out = serde_json::json!({
            "p50_ms": round(percentile(&latencies, 0.50)),
            "p99_ms": round(percentile(&latencies, 0.99)),
            "runs": latencies.len(),
            "poll_ms": poll_ms,
            "store": store_kind,
        });
        println!("{out}");
        emu.stop();
        Ok(())
    })
}

fn axum_body(s: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(s.as_bytes())
}

/// Queue mode throughput: `notices` EventBridge Spot warnings sent to an SQS
/// queue (moto_server), consumed, and each recorded as a response (notice
/// recorded, plan made by `respond`, plan saved) in Redis when installed,
/// else in memory.
pub fn queue(config: &super::config::Config, notices: u32) -> Result<()> {
    use costop_core::ports::StorePort;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let policy = config.policy.clone();
    runtime.block_on(async move {
        let moto = costop_aws::moto::MotoServer::start().map_err(|e| anyhow!(e))?;
        let cloud = costop_aws::AwsCloud::new(&moto.sdk_config().await, costop_aws::AwsSettings::default());
        let url = cloud.sqs.create_queue().queue_name("costop-bench").send().await?.queue_url.unwrap_or_default();
        let redis = costop_store::redis_server::RedisServer::start().ok();
        let store = costop_store::AnyStore::open(redis.as_ref().map(|r| r.url()).as_deref()).await?;
        // A cluster with one Spot node per notice.
        let mut view = costop_core::ClusterView::default();
        for i in 0..notices {
            view.nodes.push(costop_core::NodeView {
                name: format!("node-{i}").into(),
                instance_id: format!("i-{i:08x}").into(),
                pool: costop_core::PoolId::new("m5.xlarge", "us-east-1a"),
                capacity_type: costop_core::CapacityType::Spot,
                allocatable: costop_core::Resources::new(3680, 14000),
                price_per_hour: 0.07,
                unschedulable: false,
                taints: vec![],
                ready: true,
                in_load_balancer: true,
                fallback: false,
            });
        }
        let now = costop_core::time::format_rfc3339(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64,
        );
        for i in 0..notices {
            let body = serde_json::json!({"version": "0", "id": format!("bench-{i}"), "detail-type": "EC2 Spot Instance Interruption Warning",
                "source": "aws.ec2", "account": "123456789012", "time": now, "region": "us-east-1",
                "resources": [], "detail": {"instance-id": format!("i-{i:08x}"), "instance-action": "terminate"}});
            cloud.sqs.send_message().queue_url(&url).message_body(body.to_string()).send().await?;
        }
        let consumer = costop_aws::queue::QueueConsumer::new(cloud.clone(), &url, None, 0);
        let started = Instant::now();
        let mut recorded = 0;
        while recorded < notices as usize {
            let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
            let stats = consumer
                .poll_once(now_ms, |n| {
                    let (store, view, policy) = (&store, &view, &policy);
                    async move {
                        store.record_notice(&n).await.map_err(|e| e.to_string())?;
                        let plan = costop_core::respond(view, &n, policy, now_ms).map_err(|e| e.to_string())?;
                        store.save_plan(&plan).await.map_err(|e| e.to_string())?;
                        Ok(())
                    }
                })
                .await?;
            recorded += stats.recorded;
            if started.elapsed() > Duration::from_secs(600) {
                return Err(anyhow!("only {recorded} of {notices} recorded in 10 minutes"));
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let out = serde_json::json!({
            "notices": recorded, "seconds": round(secs), "notices_per_s": round(recorded as f64 / secs),
            "store": if redis.is_some() { "redis" } else { "memory" }, "queue": "moto_server",
        });
        println!("{out}");
        Ok(())
    })
}
