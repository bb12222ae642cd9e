//! `costop demo`: the whole system in one process. The emulated cluster and
//! cloud (`costop-emu`), the store (in memory, or Redis), the server, one
//! real agent per Spot node over the emulator's IMDS with its pod's token,
//! and a load generator sending real HTTP requests through the emulated
//! load balancer. Reclaims replay a Spot trace from the repository's data;
//! each notice, step and recovery is printed as it happens, and a summary
//! at the end.

use crate::config::Config;
use crate::demo_report::{Monitor, Summary};
use anyhow::{anyhow, Context, Result};
use costop_emu::admin::{self, CloudScenario, DeploymentSpec, NodeGroup, Scenario, StatefulSpec};
use costop_emu::cloud::PoolSpec;
use costop_emu::kinds::idx;
use costop_emu::{EmuConfig, EmuState, Emulator};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// `costop demo`'s options.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Stop after this long (`120s`, `2m`, `90`); without it, Ctrl-C ends the run.
    #[arg(long = "for", value_parser = parse_duration)]
    pub run_for: Option<Duration>,
    /// Trace seconds per real second for the reclaims; default: so that the
    /// trace's first reclaim comes 20 s into the run.
    #[arg(long)]
    pub speed: Option<f64>,
    /// Print the summary as JSON (the lines before it go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Redis URL; without it the store is in memory.
    #[arg(long, env = "COSTOP_REDIS_URL")]
    pub redis_url: Option<String>,
    /// A SkyPilot preemption trace directory (default: the data directory's
    /// preemption/1-node/aws-04-19-2023).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Multiplier on the world's durations (notice, boot, start-up): 0.5 runs
    /// them twice as fast as real time.
    #[arg(long, default_value_t = 0.5)]
    pub time_scale: f64,
    /// Requests per second the load generator sends through the load balancer.
    #[arg(long, default_value_t = 200)]
    pub rps: u32,
    /// Spot nodes at the start (spread over the pools of three zones).
    #[arg(long, default_value_t = 24)]
    pub nodes: u32,
    /// Serve the live dashboard here (e.g. 127.0.0.1:8490; port 0 picks one, printed).
    #[arg(long)]
    pub dashboard: Option<std::net::SocketAddr>,
    /// Where the emulated cluster's kubeconfig is written (for kubectl while it runs).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// Read a duration: `120s`, `2m`, `1h`, `500ms`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration (e.g. 120s, 2m, 90)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    if !(secs.is_finite() && secs > 0.0 && secs <= 7.0 * 86_400.0) {
        return Err(format!("`{s}`: a duration between 1 ms and 7 days"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Instance types of the demo's Spot pools (4 vCPU, 16 GiB each, so a pod
/// fits any of them), in every zone of the trace.
pub const POOL_TYPES: [&str; 3] = ["m5.xlarge", "m5a.xlarge", "m6i.xlarge"];

/// The demo's workloads: (name, replicas, budget minAvailable, CPU).
pub const WORKLOADS: [(&str, u32, u32, &str); 4] =
    [("web", 24, 18, "500m"), ("api", 16, 12, "500m"), ("cart", 12, 9, "500m"), ("search", 8, 6, "500m")];

/// The stateful workload (one replica with an EBS volume).
pub const STATEFUL: &str = "db";

/// One reclaim to replay: when (seconds into the trace), which zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Reclaim {
    /// Seconds since the trace's start.
    pub at_s: f64,
    /// The zone the trace saw it in.
    pub zone: String,
}

/// A trace as the demo replays it.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Its zones, each with its Spot discount off on-demand at the start
    /// (from the trace's prices, else the Spot Advisor's median 65 %).
    pub zones: Vec<(String, f64)>,
    /// Its reclaims, in order.
    pub reclaims: Vec<Reclaim>,
    /// Where it was read from.
    pub path: String,
}

/// Read the trace at `path` (default: the shipped aws-04-19-2023 preemption trace).
pub fn trace_reclaims(config: &Config, path: Option<&PathBuf>) -> Result<Trace> {
    let dir = config.data_dir();
    let path = path
        .cloned()
        .unwrap_or_else(|| dir.join("skypilot-spot-traces/raw/preemption/1-node/aws-04-19-2023"));
    let market = costop_sim::trace::load_market(&path, None, None).map_err(|e| anyhow!(e))?;
    let mut zones = Vec::new();
    let mut reclaims = Vec::new();
    for pool in &market.pools {
        let discount = pool
            .prices
            .first()
            .map(|(_, p)| 1.0 - p / pool.on_demand_usd_hr)
            .filter(|d| d.is_finite() && *d > 0.0 && *d < 1.0)
            .unwrap_or(costop_emu::cloud::DEFAULT_SPOT_DISCOUNT);
        if !zones.iter().any(|(z, _)| *z == pool.id.zone) {
            zones.push((pool.id.zone.clone(), discount));
        }
        for r in &pool.reclaims {
            reclaims.push(Reclaim { at_s: r.at as f64 / 1000.0, zone: pool.id.zone.clone() });
        }
    }
    reclaims.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    if reclaims.is_empty() {
        return Err(anyhow!("trace {}: no reclaim to replay", path.display()));
    }
    zones.sort_by(|a, b| a.0.cmp(&b.0));
    let shown = std::fs::canonicalize(&path).unwrap_or(path);
    Ok(Trace { zones, reclaims, path: shown.display().to_string() })
}

/// The demo's cluster: `nodes` Spot nodes over two pool types in each of the
/// trace's zones (the third type left free for replacements), a stopped
/// on-demand standby per zone and a running one, the workloads with their
/// budgets, and the stateful workload in `volume_zone`.
pub fn scenario(zones: &[(String, f64)], nodes: u32, volume_zone: &str) -> (Scenario, CloudScenario) {
    let groups_of = zones.len() as u32 * 2;
    let mut groups = Vec::new();
    let mut i = 0;
    for (zone, _) in zones {
        for t in &POOL_TYPES[..2] {
            let count = nodes / groups_of + u32::from(i < nodes % groups_of);
            i += 1;
            if count > 0 {
                groups.push(NodeGroup {
                    count,
                    instance_type: (*t).into(),
                    zone: zone.clone(),
                    capacity_type: "spot".into(),
                });
            }
        }
    }
    for (zone, _) in zones {
        groups.push(NodeGroup {
            count: 1,
            instance_type: POOL_TYPES[0].into(),
            zone: zone.clone(),
            capacity_type: "standby-stopped".into(),
        });
    }
    if let Some((zone, _)) = zones.first() {
        groups.push(NodeGroup {
            count: 1,
            instance_type: POOL_TYPES[0].into(),
            zone: zone.clone(),
            capacity_type: "standby-running".into(),
        });
    }
    let deployments = WORKLOADS
        .iter()
        .map(|(name, replicas, min, cpu)| DeploymentSpec {
            name: (*name).into(),
            namespace: None,
            replicas: *replicas,
            cpu: (*cpu).into(),
            memory: "1Gi".into(),
            min_available: Some(*min),
        })
        .collect();
    let pools = zones
        .iter()
        .flat_map(|(zone, discount)| {
            POOL_TYPES.iter().enumerate().map(move |(k, t)| {
                let od = costop_facts::catalog::instance_type(t).map_or(0.0, |t| t.on_demand_usd_hr);
                // The trace's discount, a point less for each further type (they are not all alike).
                let d = (discount - 0.01 * k as f64).clamp(0.05, 0.95);
                PoolSpec {
                    instance_type: (*t).into(),
                    zone: zone.clone(),
                    spot_price: Some(od * (1.0 - d)),
                    launchable: None,
                }
            })
        })
        .collect();
    let stateful = vec![StatefulSpec {
        name: STATEFUL.into(),
        namespace: None,
        cpu: "500m".into(),
        memory: "1Gi".into(),
        volume_gb: 20,
        zone: volume_zone.into(),
    }];
    (
        Scenario { nodes: groups, deployments, placeholders: None },
        CloudScenario { pools, bridge_concurrency: None, stateful },
    )
}

/// Run the demo; never returns (exits with its status).
pub fn main(config_path: Option<&std::path::Path>, args: &DemoArgs) -> ! {
    let (events, rx) = tokio::sync::mpsc::unbounded_channel();
    crate::demo_report::init_tracing(events);
    let result = Config::load(config_path, std::env::vars()).and_then(|config| {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let r = runtime.block_on(run(&config, args, rx));
        runtime.shutdown_timeout(Duration::from_millis(500));
        r
    });
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("costop demo: {}", costop_store::error_chain(e.as_ref()));
            std::process::exit(1)
        }
    }
}

async fn run(
    config: &Config,
    args: &DemoArgs,
    steps: tokio::sync::mpsc::UnboundedReceiver<crate::demo_report::StepEvent>,
) -> Result<()> {
    if !(args.time_scale.is_finite() && args.time_scale > 0.0 && args.time_scale <= 10.0) {
        return Err(anyhow!("--time-scale must be in (0, 10], got {}", args.time_scale));
    }
    if args.nodes < 6 || args.nodes > 500 {
        return Err(anyhow!("--nodes must be 6..500, got {}", args.nodes));
    }
    let Trace { zones, reclaims, path: trace } = trace_reclaims(config, args.trace.as_ref())?;
    let first = reclaims[0].at_s;
    let speed = match args.speed {
        Some(s) if s.is_finite() && s > 0.0 => s,
        Some(s) => return Err(anyhow!("--speed must be a positive number, got {s}")),
        None => (first / 20.0).max(1.0),
    };
    let dir = std::env::temp_dir().join(format!("costop-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let kubeconfig = args.kubeconfig.clone().unwrap_or_else(|| dir.join("kubeconfig"));
    let (shutdown_tx, shutdown) = watch::channel(false);

    // The emulated cluster and cloud.
    let emu = Emulator::start(EmuConfig {
        kubeconfig: kubeconfig.clone(),
        timings: config.timings.clone(),
        time_scale: args.time_scale,
        ..Default::default()
    })
    .await
    .context("emulator")?;
    let st = emu.state.clone();
    let (cluster, cloud) = scenario(&zones, args.nodes, &reclaims[0].zone);
    admin::load_cloud(&st, &cloud).map_err(|e| anyhow!("scenario: {e}"))?;
    admin::load(&st, &cluster).map_err(|e| anyhow!("scenario: {e}"))?;
    let start = Instant::now();
    let say = crate::demo_report::Say::new(start, args.json);
    say.line(format!(
        "emulated cluster at {} ({} Spot nodes over {} pools in {}; standbys; {} workloads + {STATEFUL} with an EBS volume in {})",
        emu.url(),
        args.nodes,
        zones.len() * 2,
        zones.iter().map(|(z, _)| z.as_str()).collect::<Vec<_>>().join(", "),
        WORKLOADS.len(),
        reclaims[0].zone
    ));
    say.line(format!("kubectl: export KUBECONFIG={}", kubeconfig.display()));

    // The server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let server_url = format!("http://127.0.0.1:{port}");
    let plan_key = args.redis_url.as_ref().map(|_| format!("{:016x}{:016x}", rand_u64(), rand_u64()));
    let server = costop_server::ServerConfig {
        listen: ([127, 0, 0, 1], port).into(),
        redis_url: args.redis_url.clone(),
        kubeconfig: Some(kubeconfig.clone()),
        emu_url: Some(emu.url()),
        aws: None,
        policy: config.policy.clone(),
        identity: format!("costop-demo-{}", std::process::id()),
        plan_key,
        allow_unsigned_plans: false,
        advertise_url: None,
        dry_run: false,
    };
    let server_task = tokio::spawn(costop_server::run(server, shutdown.clone()));
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(2))
        .build()
        .context("HTTP client")?;

    // Wait for the workloads to run and the server to lead.
    // Pods start in about 16 world seconds; a busy machine gets a minute more.
    let ready_by = Instant::now() + Duration::from_secs_f64(60.0 + 120.0 * args.time_scale);
    loop {
        let workloads_ready = all_ready(&st);
        let server_ready =
            http.get(format!("{server_url}/readyz")).send().await.is_ok_and(|r| r.status().is_success());
        if workloads_ready && server_ready {
            break;
        }
        if server_task.is_finished() {
            let r = server_task.await;
            return Err(anyhow!("the server stopped: {r:?}"));
        }
        if Instant::now() > ready_by {
            return Err(anyhow!(
                "not ready in time: workloads {}, server {}",
                if workloads_ready { "ready" } else { "starting" },
                if server_ready { "ready" } else { "starting" }
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    say.line(format!(
        "cluster and server ready in {:.1} s; server at {server_url}",
        start.elapsed().as_secs_f64()
    ));

    // Agents on the Spot nodes (and on the ones launched later).
    let agents = crate::demo_report::Agents::new(
        st.clone(),
        emu.url(),
        server_url.clone(),
        args.redis_url.clone(),
        dir.clone(),
    );
    let agents_task = tokio::spawn(agents.clone().keep(shutdown.clone(), say.clone()));

    // Load through the load balancer.
    let monitor = Arc::new(Monitor::new(st.clone(), say.clone(), args.time_scale));
    tokio::spawn(monitor.clone().sample(shutdown.clone()));
    if let Some(addr) = args.dashboard {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("dashboard: cannot listen on {addr}"))?;
        say.line(format!("dashboard at http://{}/", listener.local_addr()?));
        tokio::spawn(crate::demo_dashboard::serve(listener, monitor.clone(), shutdown.clone()));
    }
    let mut targets: Vec<String> = WORKLOADS.iter().map(|(n, ..)| format!("default/{n}")).collect();
    targets.push(format!("default/{STATEFUL}"));
    let load = tokio::spawn(crate::demo_report::load(
        http.clone(),
        emu.url(),
        targets,
        args.rps,
        monitor.clone(),
        shutdown.clone(),
    ));
    let watch_task = tokio::spawn(monitor.clone().watch(shutdown.clone()));
    let steps_task = tokio::spawn(monitor.clone().steps(steps));

    // Replay the trace.
    let trace_start = Instant::now();
    say.line(format!(
        "replaying {} reclaims of {trace} at {speed:.0}× (first in {:.0} s); world durations × {}",
        reclaims.len(),
        first / speed,
        args.time_scale
    ));
    let end = args.run_for.map(|d| start + d);
    let mut next = 0;
    let mut stop = shutdown.clone();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let now = Instant::now();
        if end.is_some_and(|e| now >= e) {
            break;
        }
        while next < reclaims.len()
            && trace_start + Duration::from_secs_f64(reclaims[next].at_s / speed) <= now
        {
            let r = &reclaims[next];
            next += 1;
            if let Some(node) = pick_node(&st, &r.zone, &monitor.noticed()) {
                monitor.notice(&node, r, speed);
                let body = bytes::Bytes::from(json!({"interruption": {"in_seconds": 120}}).to_string());
                let _ = costop_emu::imds::inject(&st, &node, &body);
            } else {
                say.line(format!("reclaim in {} at trace {:.0} s: no Spot node there", r.zone, r.at_s));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = &mut ctrl_c => break,
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    let _ = shutdown_tx.send(true);
    let _ = load.await;
    let _ = watch_task.await;
    steps_task.abort();
    let summary: Summary = monitor.summary(start.elapsed(), speed, args.time_scale, &trace);
    let _ = tokio::time::timeout(Duration::from_secs(3), server_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), agents_task).await;
    emu.stop();
    let _ = std::fs::remove_dir_all(&dir);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.table());
    }
    Ok(())
}

fn rand_u64() -> u64 {
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    costop_facts::rng::Rng::new(t ^ u64::from(std::process::id())).next_u64()
}

/// Every Deployment has all its replicas Ready.
fn all_ready(st: &EmuState) -> bool {
    let (deploys, _) = st.store.list(idx::DEPLOYMENTS, None, |_| true);
    !deploys.is_empty()
        && deploys.iter().all(|d| d["status"]["readyReplicas"].as_u64() == d["spec"]["replicas"].as_u64())
}

/// The node a reclaim in `zone` takes: a running Spot node there, the one
/// holding an EBS volume first (the hardest case), else the one with the
/// most workload pods, not one already noticed.
fn pick_node(st: &EmuState, zone: &str, noticed: &BTreeSet<String>) -> Option<String> {
    let mut candidates: BTreeMap<String, (bool, usize)> = BTreeMap::new();
    st.store.scan(idx::NODES, |_, name, n| {
        let labels = &n["metadata"]["labels"];
        if labels["costop.io/capacity-type"] == "spot"
            && labels["topology.kubernetes.io/zone"] == zone
            && n["spec"]["unschedulable"] != true
        {
            candidates.insert(name.to_string(), (false, 0));
        }
    });
    st.store.scan(idx::PODS, |_, _, p| {
        if let Some(c) = p["spec"]["nodeName"].as_str().and_then(|n| candidates.get_mut(n)) {
            c.1 += 1;
            c.0 |= p["spec"]["volumes"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| v["persistentVolumeClaim"].is_object()));
        }
    });
    candidates.into_iter().filter(|(n, _)| !noticed.contains(n)).max_by_key(|(_, v)| *v).map(|(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for junk in ["", "s", "12x", "-3s", "1e9h", "NaN"] {
            assert!(parse_duration(junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn the_shipped_trace_and_the_scenario() {
        let Trace { zones, reclaims, .. } = trace_reclaims(&Config::default(), None).unwrap();
        assert_eq!(
            zones.iter().map(|(z, _)| z.as_str()).collect::<Vec<_>>(),
            ["us-east-1b", "us-east-1c", "us-east-1d"]
        );
        assert!(zones.iter().all(|(_, d)| *d > 0.0 && *d < 1.0));
        assert!(reclaims.windows(2).all(|w| w[0].at_s <= w[1].at_s) && reclaims[0].at_s > 0.0);
        let (cluster, cloud) = scenario(&zones, 24, &reclaims[0].zone);
        let spot: u32 = cluster.nodes.iter().filter(|g| g.capacity_type == "spot").map(|g| g.count).sum();
        assert_eq!(spot, 24);
        assert_eq!(cloud.pools.len(), 9);
        assert!(cloud.pools.iter().all(|p| p.spot_price.is_some_and(|s| s > 0.0)));
    }
}
