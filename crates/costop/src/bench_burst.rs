//! `costop bench burst`: a whole Spot pool reclaimed at once (issue 15).
//! Starts `costop emu` (the bench's world, see `bench_scale::scenario_json`)
//! and `costop server` (Redis store) as processes of their own, so each
//! one's memory is its own; gives each noticed node an agent pod and its
//! token; posts the notices through the agents' authenticated HTTP path
//! (`--parallel` at a time); and follows nodes and pods with watches to
//! time every cordon and the start of every eviction.

use anyhow::{anyhow, Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What `costop bench burst` runs.
#[derive(Debug, Clone)]
pub struct BurstBench {
    /// Nodes of the world.
    pub nodes: u32,
    /// Application pods per node.
    pub pods_per_node: u32,
    /// Notices (one node each, the first nodes by name order of creation).
    pub notices: u32,
    /// Notices posted at once.
    pub parallel: usize,
    /// The emulator's time scale (start-up and shutdown durations).
    pub time_scale: f64,
    /// How long to wait for the world to settle and for the responses.
    pub timeout: Duration,
    /// The server's configuration file (`costop --config FILE bench burst`:
    /// the server runs with it, e.g. another `[policy]`); none: defaults.
    pub server_config: Option<PathBuf>,
}

/// A child process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A memory line (`VmRSS:`, `VmHWM:`) of a process, MiB.
fn proc_mib(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

/// CPU seconds (user + system) a process has used.
fn cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (in parentheses): utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn start_emu(dir: &Path, bench: &BurstBench) -> Result<(Proc, String, PathBuf)> {
    let scenario = dir.join("scenario.json");
    std::fs::write(
        &scenario,
        super::bench_scale::scenario_json(bench.nodes, bench.pods_per_node).to_string(),
    )?;
    let kubeconfig = dir.join("kubeconfig");
    let mut child = Command::new(std::env::current_exe()?)
        .args(["emu", "--scenario"])
        .arg(&scenario)
        .args(["--time-scale", &bench.time_scale.to_string(), "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("emu.log"))?)
        .spawn()
        .context("start costop emu")?;
    let mut lines = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("emu stdout"))?);
    let mut line = String::new();
    lines.read_line(&mut line)?;
    let url = line.split_whitespace().last().filter(|u| u.starts_with("http")).map(str::to_string);
    std::thread::spawn(move || for _ in lines.lines() {});
    let emu = Proc(child);
    let url = url.ok_or_else(|| anyhow!("costop emu did not print its URL (got {line:?})"))?;
    Ok((emu, url, kubeconfig))
}

/// Starts the server; `COSTOP_BENCH_SERVER_WRAPPER` (a program such as
/// `heaptrack`) runs it under that program, to profile it in the burst.
fn start_server(
    dir: &Path,
    kubeconfig: &Path,
    redis_url: &str,
    listen: &str,
    config: Option<&Path>,
) -> Result<Proc> {
    let exe = std::env::current_exe()?;
    let mut command = match std::env::var_os("COSTOP_BENCH_SERVER_WRAPPER") {
        Some(wrapper) => {
            let mut c = Command::new(wrapper);
            c.arg(exe);
            c
        }
        None => Command::new(exe),
    };
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let child = command
        .args(["server", "--listen", listen, "--redis-url", redis_url, "--identity", "bench", "--kubeconfig"])
        .arg(kubeconfig)
        .env("COSTOP_PLAN_KEY", format!("bench-burst-plan-key-{}", std::process::id()))
        .env("COSTOP_LOG", std::env::var("COSTOP_LOG").unwrap_or_else(|_| "info".into()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("server.log"))?)
        .spawn()
        .context("start costop server")?;
    Ok(Proc(child))
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value> {
    let r = http.get(url).send().await.with_context(|| format!("GET {url}"))?;
    let status = r.status();
    let body: Value = r.json().await.with_context(|| format!("GET {url}: not JSON"))?;
    if !status.is_success() {
        return Err(anyhow!("GET {url}: {status}: {body}"));
    }
    Ok(body)
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<bool>,
) -> Result<f64> {
    let start = Instant::now();
    loop {
        if check().await.unwrap_or(false) {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > timeout {
            return Err(anyhow!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Follow a watch (newline-delimited JSON events) and hand each event to `on`.
async fn follow(http: reqwest::Client, url: String, mut on: impl FnMut(&str, &Value) + Send + 'static) {
    let Ok(mut r) = http.get(&url).send().await else { return };
    let mut buf: Vec<u8> = Vec::new();
    while let Ok(Some(chunk)) = r.chunk().await {
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            if let Ok(event) = serde_json::from_slice::<Value>(&line) {
                on(event["type"].as_str().unwrap_or(""), &event["object"]);
            }
        }
    }
}

/// The highest values seen while sampling the server.
#[derive(Debug, Default, Clone, Copy)]
struct Samples {
    rss_mib: f64,
    lists: u64,
    list_bytes: u64,
}

/// Every 500 ms: the server's RSS and its snapshot gauges
/// (`costop_view_lists_live`, `costop_view_list_bytes`), keeping the highest.
async fn sample(http: reqwest::Client, metrics_url: String, pid: u32, into: Arc<Mutex<Samples>>) {
    loop {
        let rss = proc_mib(pid, "VmRSS:").unwrap_or(0.0);
        let text = match http.get(&metrics_url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let gauge = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(0)
        };
        {
            let mut s = into.lock().unwrap_or_else(|e| e.into_inner());
            s.rss_mib = s.rss_mib.max(rss);
            s.lists = s.lists.max(gauge("costop_view_lists_live"));
            s.list_bytes = s.list_bytes.max(gauge("costop_view_list_bytes"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Run the bench and print one JSON object.
pub fn burst(bench: BurstBench) -> Result<()> {
    if bench.nodes == 0 || bench.notices == 0 || bench.notices > bench.nodes || bench.parallel == 0 {
        return Err(anyhow!("need 1 <= --notices <= --nodes and --parallel >= 1"));
    }
    if !(bench.time_scale.is_finite() && bench.time_scale > 0.0) {
        return Err(anyhow!("--time-scale must be a positive number"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(bench))
}

async fn run(bench: BurstBench) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("costop-bench-burst-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let settle_started = Instant::now();
    let (emu, emu_url, kubeconfig) = start_emu(&dir, &bench)?;
    let emu_pid = emu.0.id();

    // The world settles: every Deployment's replicas ready.
    let want = u64::from(bench.nodes) * u64::from(bench.pods_per_node);
    wait_until("every pod ready", bench.timeout, async || {
        let list = get_json(&http, &format!("{emu_url}/apis/apps/v1/namespaces/default/deployments")).await?;
        let ready: u64 = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| d["status"]["readyReplicas"].as_u64().unwrap_or(0))
            .sum();
        Ok(ready >= want)
    })
    .await?;
    let settle_s = settle_started.elapsed().as_secs_f64();
    // The server starts on the settled cluster (its caches' first lists
    // must finish within its start-up limit).
    let redis = costop_store::redis_server::RedisServer::start()
        .context("redis-server (scripts/deps installs it)")?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
    let server = start_server(&dir, &kubeconfig, &redis.url(), &listen, bench.server_config.as_deref())?;
    let server_url = format!("http://{listen}");
    let log = dir.join("server.log");
    let server_pid = server.0.id();
    let server_started = Instant::now();
    wait_until("the server to lead", bench.timeout, async || {
        Ok(http.get(format!("{server_url}/readyz")).send().await?.text().await? == "leader")
    })
    .await
    .with_context(|| format!("server log: {}", log.display()))?;
    let server_ready_s = server_started.elapsed().as_secs_f64();
    let lease_url =
        format!("{emu_url}/apis/coordination.k8s.io/v1/namespaces/costop-system/leases/costop-server");
    let transitions_before =
        get_json(&http, &lease_url).await?["spec"]["leaseTransitions"].as_u64().unwrap_or(0);

    // The noticed nodes: their instances, their workload pods, an agent pod and its token each.
    let nodes = get_json(&http, &format!("{emu_url}/api/v1/nodes")).await?;
    let instances: HashMap<String, String> = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            let provider = n["spec"]["providerID"].as_str()?;
            Some((n["metadata"]["name"].as_str()?.to_string(), provider.rsplit('/').next()?.to_string()))
        })
        .collect();
    let mut noticed = Vec::new();
    let mut workload: HashSet<String> = HashSet::new();
    for i in 0..bench.notices {
        let node = format!("node-{i}");
        let instance = instances.get(&node).ok_or_else(|| anyhow!("{node} has no instance"))?.clone();
        let pods = get_json(
            &http,
            &format!("{emu_url}/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3D{node}"),
        )
        .await?;
        for p in pods["items"].as_array().into_iter().flatten() {
            workload.insert(format!("default/{}", p["metadata"]["name"].as_str().unwrap_or("")));
        }
        let name = format!("costop-agent-{node}");
        let pod = json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                "name": "costop-agent", "uid": "costop-agent-ds", "controller": true}]},
            "spec": {"nodeName": node, "serviceAccountName": "costop-agent", "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "agent", "image": "costop:dev"}]}});
        let r =
            http.post(format!("{emu_url}/api/v1/namespaces/costop-system/pods")).json(&pod).send().await?;
        if !r.status().is_success() {
            return Err(anyhow!("agent pod on {node}: {}", r.text().await.unwrap_or_default()));
        }
        let token = get_json(&http, &format!("{emu_url}/admin/tokens/costop-system/{name}")).await?["token"]
            .as_str()
            .ok_or_else(|| anyhow!("no token for {name}"))?
            .to_string();
        noticed.push((node, instance, token));
    }
    let workload_pods = workload.len();

    // Watches from now: when each noticed node is cordoned, when each of
    // their workload pods starts terminating (eviction accepted).
    let t0 = Instant::now();
    let cordoned: Arc<Mutex<HashMap<String, f64>>> = Arc::default();
    let evicted: Arc<Mutex<HashMap<String, f64>>> = Arc::default();
    let names: Arc<HashSet<String>> = Arc::new(noticed.iter().map(|(n, _, _)| n.clone()).collect());
    {
        let (cordoned, names) = (cordoned.clone(), names.clone());
        let url = format!("{emu_url}/api/v1/nodes?watch=true&timeoutSeconds=3600");
        tokio::spawn(follow(http.clone(), url, move |_, n| {
            let name = n["metadata"]["name"].as_str().unwrap_or("");
            if n["spec"]["unschedulable"] == true && names.contains(name) {
                cordoned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(name.into())
                    .or_insert(t0.elapsed().as_secs_f64());
            }
        }));
        let (evicted, workload) = (evicted.clone(), Arc::new(workload));
        let rv = get_json(&http, &format!("{emu_url}/api/v1/namespaces/default/pods?limit=1")).await?
            ["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string();
        let url = format!(
            "{emu_url}/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}&timeoutSeconds=3600"
        );
        tokio::spawn(follow(http.clone(), url, move |event, p| {
            let key = format!("default/{}", p["metadata"]["name"].as_str().unwrap_or(""));
            if (event == "DELETED" || p["metadata"]["deletionTimestamp"].is_string())
                && workload.contains(&key)
            {
                evicted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key)
                    .or_insert(t0.elapsed().as_secs_f64());
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_before = cpu_s(server_pid).unwrap_or(0.0);
    let peak_before_burst = proc_mib(server_pid, "VmHWM:");
    // During the burst: the server's RSS and its live snapshot lists
    // (what the responses and notices still read), their highest values.
    let sampled: Arc<Mutex<Samples>> = Arc::default();
    let sampler =
        tokio::spawn(sample(http.clone(), format!("{server_url}/metrics"), server_pid, sampled.clone()));

    // The burst.
    let effective_at =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64 + 120_000;
    let burst_started = t0.elapsed().as_secs_f64();
    let posts = futures::stream::iter(noticed.iter().cloned())
        .map(|(node, instance, token)| {
            let (http, url) = (http.clone(), format!("{server_url}/v1/notices"));
            async move {
                let notice = serde_json::to_value(costop_core::Notice {
                    instance_id: instance,
                    kind: costop_core::NoticeKind::SpotInterruption {
                        action: costop_core::notice::InstanceAction::Terminate,
                        effective_at,
                    },
                    received_at: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    source: costop_core::NoticeSource::Agent,
                })
                .unwrap_or(Value::Null);
                let sent = t0.elapsed().as_secs_f64();
                let code = match http.post(url).bearer_auth(token).json(&notice).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                (node, sent, code)
            }
        })
        .buffer_unordered(bench.parallel)
        .collect::<Vec<_>>()
        .await;
    let last_post = t0.elapsed().as_secs_f64();
    let mut codes: HashMap<u16, usize> = HashMap::new();
    for (_, _, code) in &posts {
        *codes.entry(*code).or_default() += 1;
    }

    // Wait for every cordon and every eviction to start (or the timeout).
    let deadline = Instant::now() + bench.timeout;
    while Instant::now() < deadline {
        let c = cordoned.lock().unwrap_or_else(|e| e.into_inner()).len();
        let e = evicted.lock().unwrap_or_else(|e| e.into_inner()).len();
        if c == names.len() && e == workload_pods {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    sampler.abort();
    let sampled = *sampled.lock().unwrap_or_else(|e| e.into_inner());
    let cordoned = cordoned.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let evicted = evicted.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut to_cordon: Vec<f64> = posts
        .iter()
        .filter_map(|(node, sent, _)| cordoned.get(node).map(|at| (at - sent).max(0.0)))
        .collect();
    to_cordon.sort_by(f64::total_cmp);
    let all = |m: &HashMap<String, f64>, n: usize| {
        (m.len() == n).then(|| round(m.values().copied().fold(0.0, f64::max) - burst_started))
    };
    let transitions_after =
        get_json(&http, &lease_url).await?["spec"]["leaseTransitions"].as_u64().unwrap_or(0);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let lost = text.matches("leadership lost").count() + text.matches("leadership lapsed").count();
    let out = json!({
        "nodes": bench.nodes,
        "pods": want + u64::from(bench.nodes / 5),
        "notices": bench.notices,
        "answers": codes.iter().map(|(c, n)| (c.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "post_s": round(last_post - burst_started),
        "cordoned": cordoned.len(),
        "all_cordoned_s": all(&cordoned, names.len()),
        "all_cordoned_after_last_notice_s": all(&cordoned, names.len()).map(|s| round(s - (last_post - burst_started))),
        "p50_cordon_s": round(super::bench_scale::percentile(&to_cordon, 0.50)),
        "p99_cordon_s": round(super::bench_scale::percentile(&to_cordon, 0.99)),
        "workload_pods_on_noticed_nodes": workload_pods,
        "evictions_started": evicted.len(),
        "all_evictions_started_s": all(&evicted, workload_pods),
        "server_rss_mb": proc_mib(server_pid, "VmRSS:"),
        "server_peak_rss_mb": proc_mib(server_pid, "VmHWM:"),
        "server_peak_rss_before_burst_mb": peak_before_burst,
        "server_rss_max_sampled_mb": round(sampled.rss_mib),
        "view_lists_live_max": sampled.lists,
        "view_list_mb_max": round(sampled.list_bytes as f64 / 1048576.0),
        "server_cpu_s_during_burst": cpu_s(server_pid).map(|c| round(c - cpu_before)),
        "leader_changes": transitions_after.saturating_sub(transitions_before) as usize + lost,
        "emu_rss_mb": proc_mib(emu_pid, "VmRSS:"),
        "settle_s": round(settle_s),
        "server_ready_s": round(server_ready_s),
        "store": "redis",
        "server_config": bench.server_config.as_ref().map(|p| p.display().to_string()),
        "paths": "HTTP (authenticated with each agent pod's token); not the Redis stream",
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cores_note": "the emulator, the server, Redis and this client share every core",
    });
    println!("{out}");
    drop(server);
    drop(emu);
    Ok(())
}
