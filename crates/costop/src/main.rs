//! `costop`: run Kubernetes on Spot and keep serving through every reclaim.

mod bench;
mod bench_burst;
mod bench_scale;
mod config;
mod demo;
mod demo_dashboard;
mod demo_report;
mod server_dashboard;
mod status;

use anyhow::{anyhow, Context, Result};
use clap::{Parser, Subcommand};
use config::Config;
use costop_sim::market::BuiltinMarket;
use costop_sim::summary::{summarize, sweep_table, table, Summary, Sweep, SweepRun};
use costop_sim::trace::{load_market, trace_dirs, SpotAdvisor};
use costop_sim::{PoolHit, SimConfig, Strategy};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(name = "costop", version, about = "Run Kubernetes on Spot and keep serving through every reclaim")]
struct Cli {
    /// Configuration file (TOML); environment COSTOP_<SECTION>_<KEY> overrides it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a Spot market and compare interruption-handling strategies.
    Sim(SimArgs),
    /// Serve the simulated cluster in real time as a Kubernetes API (for kubectl and kube-rs).
    Emu(EmuArgs),
    /// The per-node agent: poll instance metadata, hand notices to Redis and the server.
    Agent(AgentArgs),
    /// The server: take notices, plan, run and record responses.
    Server(ServerArgs),
    /// The current leader and the open and recent responses, with each step's outcome (from the Lease and Redis).
    Status(status::StatusArgs),
    /// Benchmarks that print numbers.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The whole system in one process: emulated cluster and cloud, server, agents, load, replayed reclaims.
    Demo(demo::DemoArgs),
}

#[derive(clap::Args)]
struct AgentArgs {
    /// Instance metadata base URL.
    #[arg(long, env = "COSTOP_IMDS_URL", default_value = "http://169.254.169.254")]
    imds_url: String,
    /// The server's base URL (fast path).
    #[arg(long, env = "COSTOP_SERVER_URL")]
    server_url: Option<String>,
    /// Redis URL (durable path).
    #[arg(long, env = "COSTOP_REDIS_URL")]
    redis_url: Option<String>,
    /// The pod's projected service-account token.
    #[arg(
        long,
        env = "COSTOP_TOKEN_PATH",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    token_path: PathBuf,
    /// Poll period, milliseconds.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8480")]
    listen: std::net::SocketAddr,
    /// Redis URL; without it the store is in memory (one process).
    #[arg(long, env = "COSTOP_REDIS_URL")]
    redis_url: Option<String>,
    /// Kubeconfig; without it in-cluster config or $KUBECONFIG.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The emulated world's URL, used as the cloud (`costop emu`).
    #[arg(long)]
    emu_url: Option<String>,
    /// This replica's name (default: hostname and pid).
    #[arg(long)]
    identity: Option<String>,
    /// Use AWS as the cloud (credentials and region from the standard chain).
    #[arg(long)]
    aws: bool,
    /// AWS region (default: from the environment).
    #[arg(long, env = "AWS_REGION")]
    aws_region: Option<String>,
    /// AWS endpoint override (tests: moto_server).
    #[arg(long)]
    aws_endpoint: Option<String>,
    /// Queue mode: the EventBridge → SQS queue URL.
    #[arg(long, env = "COSTOP_QUEUE_URL")]
    queue_url: Option<String>,
    /// Where unreadable queue messages are moved.
    #[arg(long, env = "COSTOP_DEAD_LETTER_URL")]
    dead_letter_url: Option<String>,
    /// Run on Redis without COSTOP_PLAN_KEY: plans there are neither signed
    /// nor checked, so a plan planted in Redis would run (trials only).
    #[arg(long, env = "COSTOP_ALLOW_UNSIGNED_PLANS")]
    allow_unsigned_plans: bool,
    /// The URL the other replicas reach this one at, published in the Lease
    /// while it leads so followers forward notices to it (in a pod:
    /// http://$(POD_IP):PORT); default http://LISTEN unless LISTEN is 0.0.0.0.
    #[arg(long, env = "COSTOP_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Dry run: take, plan and record responses, recording each step as
    /// `dry run: <what it would do>` without running it; change nothing.
    #[arg(long, env = "COSTOP_DRY_RUN")]
    dry_run: bool,
    /// Serve a live page on ADDR: the responses this server runs with their
    /// steps, and the nodes of its cluster view (the demo's dashboard).
    #[arg(long, value_name = "ADDR")]
    dashboard: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The emulator at scale: settle time, one node's pod list, full list, watch latency, memory.
    Emu(BenchEmuArgs),
    /// A whole pool reclaimed at once: emulator and server processes, notices over HTTP, cordon and eviction times.
    Burst(BenchBurstArgs),
    /// Notice in instance metadata → node tainted, through agent, Redis and server.
    NoticeLatency(BenchNoticeArgs),
    /// Queue mode: notices from SQS (moto_server) to recorded responses, per second.
    Queue(BenchQueueArgs),
}

#[derive(clap::Args)]
struct BenchBurstArgs {
    /// Nodes.
    #[arg(long, default_value_t = 5000)]
    nodes: u32,
    /// Application pods per node (plus a placeholder per five nodes).
    #[arg(long, default_value_t = 30)]
    pods_per_node: u32,
    /// Notices, one node each.
    #[arg(long, default_value_t = 1700)]
    notices: u32,
    /// Notices posted at once.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// The emulator's time scale.
    #[arg(long, default_value_t = 0.05)]
    time_scale: f64,
    /// Seconds to wait for the world to settle, and then for the responses.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// Print JSON (the only output format; kept for the documented command).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct BenchQueueArgs {
    /// Notices to send through the queue.
    #[arg(long, default_value_t = 1000)]
    notices: u32,
}

#[derive(clap::Args)]
struct BenchNoticeArgs {
    /// Notices to time (one node each).
    #[arg(long, default_value_t = 50)]
    runs: u32,
    /// The agents' poll period, milliseconds (the agent's default is 500).
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    /// Print JSON (the only output format; kept for the documented command).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct BenchEmuArgs {
    /// Nodes.
    #[arg(long, default_value_t = 5000)]
    nodes: u32,
    /// Application pods per node (plus a placeholder per five nodes).
    #[arg(long, default_value_t = 30)]
    pods_per_node: u32,
    /// One-node pod lists (field selector spec.nodeName) to time.
    #[arg(long, default_value_t = 100)]
    lists: u32,
    /// Node patches whose watch events are timed.
    #[arg(long, default_value_t = 200)]
    patches: u32,
    /// Seconds to wait for every pod to run.
    #[arg(long, default_value_t = 600)]
    settle_timeout_s: u64,
    /// Print JSON (the only output format; kept for the documented command).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct EmuArgs {
    /// Address to listen on (loopback; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Where to write the kubeconfig.
    #[arg(long, default_value = "costop-emu.kubeconfig")]
    kubeconfig: PathBuf,
    /// A scenario file (JSON: nodes, deployments, placeholders; and the
    /// cloud's pools, bridge_concurrency, stateful) to load at start.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Or a generated scenario: this many Spot nodes over three zones.
    #[arg(long, default_value_t = 0)]
    nodes: u32,
    /// Pods per node for the generated scenario.
    #[arg(long, default_value_t = 10)]
    pods_per_node: u32,
    /// Multiplier on every world duration (1 = real time).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
}

#[derive(clap::Args)]
struct SimArgs {
    /// A SkyPilot spot trace: one JSON file or a directory of them (one per zone).
    #[arg(long, conflicts_with = "sweep")]
    trace: Option<PathBuf>,
    /// Run every trace directory under DIR (recursively; preemption and
    /// availability) with the other options, and print one table.
    #[arg(long, value_name = "DIR")]
    sweep: Option<PathBuf>,
    /// Instance type of the trace's pools (default: from the file names).
    #[arg(long)]
    instance_type: Option<String>,
    /// Days to simulate (default: the whole trace, or 7 on the built-in market).
    #[arg(long)]
    days: Option<f64>,
    /// Worker nodes.
    #[arg(long)]
    nodes: Option<u32>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Comma-separated strategies (default: all but costop-burstable).
    #[arg(long, value_delimiter = ',')]
    strategies: Option<Vec<String>>,
    /// Nodes of a pool one reclaim hits: `all`, `one`, or a share in (0, 1].
    #[arg(long)]
    pool_hit: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write an HTML report with cost and failed-request charts.
    #[arg(long, conflicts_with = "sweep")]
    report: Option<PathBuf>,
    /// Print wall time and peak memory to stderr as JSON.
    #[arg(long)]
    stats: bool,
}

/// mimalloc instead of the system allocator: the simulator builds and drops
/// a ~0.5 MB cluster snapshot thousands of times a run, and glibc's malloc
/// gave those pages back to the kernel and faulted them in again each time
/// (`costop sim --days 30 --nodes 200`: 20 % of its time). The server's
/// watch caches churn the same way. The `system-allocator` feature keeps
/// the system's, for heap profilers that intercept malloc.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The server gives freed memory back to the system at once instead of
/// after mimalloc's purge delay (1 s in the mimalloc v3 that
/// libmimalloc-sys 0.1.49 builds; `options.c`). A burst's responses free
/// much as they end while others allocate snapshots; with the delay the
/// server's peak RSS held what had been freed: `costop bench burst` at
/// full size peaked at 374 MB with it, 346 MB without (339 MB with
/// `MIMALLOC_PURGE_DELAY=0`). The simulator keeps the delay (it builds and
/// drops snapshots thousands of times a run). `MIMALLOC_PURGE_DELAY` (or
/// its old name `MIMALLOC_RESET_DELAY`) in the environment still wins.
fn purge_freed_memory_at_once() {
    #[cfg(not(feature = "system-allocator"))]
    if ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"].iter().all(|v| std::env::var_os(v).is_none()) {
        // `mi_option_purge_delay` of mimalloc's `mi_option_e`
        // (include/mimalloc.h, 15 in v2 and v3 alike), which
        // libmimalloc-sys does not name.
        const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
        // SAFETY: any value is valid for this option; it is set before the
        // server starts its runtime, while this is the only thread (the
        // option is a plain value, not written atomically).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

/// The log filter when `COSTOP_LOG` is unset (its syntax: tracing's
/// `EnvFilter`, e.g. `debug` or `info,costop_kube=debug`): costop's own
/// records at info (a line per notice and per response step); the
/// Kubernetes client's own error lines are off, as costop logs each failure
/// with what it was doing.
const DEFAULT_LOG: &str = "info,kube_client=off,kube_runtime=warn,aws_config=warn,aws_smithy_runtime=warn";

/// The default log filter of `costop sim`: the executor's per-step lines
/// would be tens of thousands of virtual-time events stamped with wall
/// time, so only warnings show.
const SIM_LOG: &str = "warn";

fn main() {
    let cli = Cli::parse();
    if let Command::Demo(args) = &cli.command {
        // Its own log: the response steps as lines, other records at warn.
        demo::main(cli.config.as_deref(), args);
    }
    let default_log = if matches!(cli.command, Command::Sim(_)) { SIM_LOG } else { DEFAULT_LOG };
    if matches!(&cli.command, Command::Server(a) if a.dashboard.is_some()) {
        // The same log, and the response events for the page.
        server_dashboard::init_tracing(default_log);
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("COSTOP_LOG")
                    .unwrap_or_else(|_| default_log.into()),
            )
            .with_writer(std::io::stderr)
            .init();
    }
    if let Err(e) = run(cli) {
        // Each cause once: many clients' errors repeat their source.
        eprintln!("costop: {}", costop_store::error_chain(e.as_ref()));
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let config = Config::load(cli.config.as_deref(), std::env::vars())?;
    match cli.command {
        Command::Sim(args) => sim(&config, args),
        Command::Emu(args) => emu(&config, args),
        Command::Agent(args) => agent(args),
        Command::Server(args) => {
            purge_freed_memory_at_once();
            server(&config, args)
        }
        Command::Status(args) => status::run(args),
        Command::Demo(_) => Err(anyhow!("the demo runs from main")),
        Command::Bench(BenchCommand::Emu(args)) => {
            let _ = args.json;
            bench_scale::emu(bench_scale::EmuBench {
                nodes: args.nodes,
                pods_per_node: args.pods_per_node,
                lists: args.lists,
                patches: args.patches,
                settle_timeout: std::time::Duration::from_secs(args.settle_timeout_s),
            })
        }
        Command::Bench(BenchCommand::Burst(args)) => {
            let _ = args.json;
            bench_burst::burst(bench_burst::BurstBench {
                nodes: args.nodes,
                pods_per_node: args.pods_per_node,
                notices: args.notices,
                parallel: args.parallel,
                time_scale: args.time_scale,
                timeout: std::time::Duration::from_secs(args.timeout_s),
                server_config: cli.config.clone(),
            })
        }
        Command::Bench(BenchCommand::Queue(args)) => bench::queue(&config, args.notices),
        Command::Bench(BenchCommand::NoticeLatency(args)) => {
            let _ = args.json;
            bench::notice_latency(&config, args.runs, args.poll_ms)
        }
    }
}

/// Run `service` to its end, then give the tasks it leaves (a connect in
/// flight, a blocking DNS lookup) half a second: SIGTERM ends the process
/// within 2 s however far startup got.
fn until_done(
    runtime: tokio::runtime::Runtime,
    service: impl std::future::Future<Output = Result<()>>,
) -> Result<()> {
    let result = runtime.block_on(service);
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

/// Run until Ctrl-C or SIGTERM flips the returned shutdown signal.
fn shutdown_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
        }
        let _ = tx.send(true);
    });
    rx
}

fn agent(args: AgentArgs) -> Result<()> {
    let config = costop_agent::AgentConfig {
        imds_url: args.imds_url,
        server_url: args.server_url,
        redis_url: args.redis_url,
        token_path: Some(args.token_path),
        poll: std::time::Duration::from_millis(args.poll_ms.max(10)),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Refused before anything runs: without a sink every notice would be lost.
    let agent = costop_agent::Agent::try_new(config, std::sync::Arc::new(costop_store::SystemClock), tx)
        .context("agent: refusing to start")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    until_done(runtime, async {
        tokio::spawn(async move {
            while let Some((key, delivered)) = rx.recv().await {
                tracing::info!(%key, ?delivered, "notice delivery");
            }
        });
        std::sync::Arc::new(agent).run(shutdown_signal()).await;
        Ok(())
    })
}

fn server(config: &Config, args: ServerArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "costop".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    if (args.aws || args.queue_url.is_some()) && config.aws.cluster_name.trim().is_empty() {
        tracing::warn!(
            "[aws] cluster_name (COSTOP_AWS_CLUSTER_NAME) is empty: what costop creates is not tagged with the \
             cluster, and deploy/iam-policy.json refuses launches without that tag"
        );
    }
    until_done(runtime, async {
        let shutdown = shutdown_signal();
        if let Some(addr) = args.dashboard {
            server_dashboard::start(addr, args.kubeconfig.as_deref(), shutdown.clone()).await?;
        }
        let server = costop_server::ServerConfig {
            listen: args.listen,
            redis_url: args.redis_url,
            kubeconfig: args.kubeconfig,
            emu_url: args.emu_url,
            aws: (args.aws || args.queue_url.is_some()).then_some(costop_server::AwsOptions {
                region: args.aws_region,
                endpoint: args.aws_endpoint,
                queue_url: args.queue_url,
                dead_letter_url: args.dead_letter_url,
                settings: config.aws.settings()?,
                keep_warm_pool: config.aws.keep_warm_pool,
                warm_pool_every: costop_server::WARM_POOL_ROUND,
            }),
            policy: config.policy.clone(),
            identity,
            // From a Secret, never a flag (a command line is visible to every process).
            plan_key: std::env::var(costop_store::redis_store::PLAN_KEY_ENV).ok(),
            allow_unsigned_plans: args.allow_unsigned_plans,
            advertise_url: args.advertise_url,
            dry_run: args.dry_run,
        };
        costop_server::run(server, shutdown).await.map_err(|e| anyhow!(e))
    })
}

fn emu(config: &Config, args: EmuArgs) -> Result<()> {
    if !(args.time_scale.is_finite() && args.time_scale > 0.0) {
        return Err(anyhow!("--time-scale must be a positive number, got {}", args.time_scale));
    }
    // A scenario file holds the cluster and, optionally, the cloud's part
    // (pools, bridge_concurrency, stateful), as `POST /admin/scenario` does.
    let (scenario, cloud) = match &args.scenario {
        Some(path) => {
            let text =
                std::fs::read(path).with_context(|| format!("scenario {}: cannot read", path.display()))?;
            costop_emu::admin::parse_scenario(&text)
                .map_err(|e| anyhow!("scenario {}: {e}", path.display()))?
        }
        None => (costop_emu::admin::generated_scenario(args.nodes, args.pods_per_node), Default::default()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let emu = costop_emu::Emulator::start(costop_emu::EmuConfig {
            listen: args.listen,
            kubeconfig: args.kubeconfig.clone(),
            timings: config.timings.clone(),
            time_scale: args.time_scale,
            ..Default::default()
        })
        .await
        .context("emu")?;
        // The cloud first: its pools decide how the nodes' instances start.
        costop_emu::admin::load_cloud(&emu.state, &cloud).map_err(|e| anyhow!("scenario: {e}"))?;
        costop_emu::admin::load(&emu.state, &scenario).map_err(|e| anyhow!("scenario: {e}"))?;
        let path = std::fs::canonicalize(&emu.kubeconfig).unwrap_or(emu.kubeconfig.clone());
        // A reader may close our stdout once it has the address: never die of that.
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "costop emu: Kubernetes API on {}", emu.url());
        let _ = writeln!(out, "export KUBECONFIG={}", path.display());
        let _ = out.flush();
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        emu.stop();
        Ok(())
    })
}

/// The Spot Advisor snapshot of the data directory; a clear error naming
/// the path when the directory or the file is missing.
fn spot_advisor(config: &Config) -> Result<SpotAdvisor> {
    let dir = config.data_dir();
    if !dir.is_dir() {
        return Err(anyhow!(
            "data directory {} does not exist (set $COSTOP_DATA_DIR or [sim] data_dir to a copy of the repository's data/)",
            dir.display()
        ));
    }
    let path = dir.join("aws-spot-advisor/spot-advisor-data.json");
    if !path.is_file() {
        return Err(anyhow!(
            "Spot Advisor snapshot {} is missing (the data directory needs aws-spot-advisor/spot-advisor-data.json)",
            path.display()
        ));
    }
    Ok(SpotAdvisor::load(&path)?)
}

/// The options every run of one `sim` command shares.
struct SimPlan {
    cfg: SimConfig,
    pool_hit: PoolHit,
    /// 0 = the whole market.
    requested_days: f64,
}

impl SimPlan {
    /// Days to run on `market`: as asked, at most the market's length.
    fn days(&self, market: &costop_sim::market::Market) -> f64 {
        let market_days = market.duration as f64 / costop_core::time::DAY as f64;
        if self.requested_days > 0.0 {
            self.requested_days.min(market_days)
        } else {
            market_days
        }
    }

    /// Run every strategy on `market`.
    fn run(&self, market: &costop_sim::market::Market) -> (f64, Vec<costop_sim::StrategyResult>) {
        let days = self.days(market);
        let cfg = SimConfig { days, ..self.cfg.clone() };
        (days, costop_sim::run_all(&cfg, market))
    }
}

fn sim(config: &Config, args: SimArgs) -> Result<()> {
    let started = Instant::now();
    let s = &config.sim;
    let strategy_names = args.strategies.clone().unwrap_or_else(|| s.strategies.clone());
    let strategies = strategy_names
        .iter()
        .map(|n| n.parse::<Strategy>().map_err(|e| anyhow!(e)))
        .collect::<Result<Vec<_>>>()?;
    if strategies.is_empty() {
        return Err(anyhow!("no strategy to run"));
    }
    let pool_hit: PoolHit =
        args.pool_hit.as_deref().unwrap_or(&s.pool_hit).parse().map_err(|e: String| anyhow!(e))?;
    let seed = args.seed.unwrap_or(s.seed);
    let nodes = args.nodes.unwrap_or(s.nodes);
    if nodes == 0 || s.pods_per_node == 0 {
        return Err(anyhow!("nodes and sim.pods_per_node must be at least 1"));
    }
    let requested_days = args.days.unwrap_or(s.days);
    if !(requested_days.is_finite() && requested_days >= 0.0) {
        return Err(anyhow!("days must be a non-negative number, got {requested_days}"));
    }
    let plan = SimPlan {
        cfg: SimConfig {
            seed,
            days: requested_days,
            nodes,
            pods_per_node: s.pods_per_node,
            requests_per_pod_s: s.requests_per_pod_s,
            pod_capacity_factor: s.pod_capacity_factor,
            pool_hit,
            rebalance_probability: s.rebalance_probability,
            rebalance_lead_s: s.rebalance_lead_s,
            timings: config.timings.clone(),
            policy: config.policy.clone(),
            strategies,
            ..SimConfig::default()
        },
        pool_hit,
        requested_days,
    };

    if let Some(root) = &args.sweep {
        sweep(config, &args, &plan, root)?;
    } else {
        let market = match &args.trace {
            Some(path) => load_market(path, args.instance_type.as_deref(), Some(&spot_advisor(config)?))?,
            None => {
                let days = if requested_days > 0.0 { requested_days } else { 7.0 };
                BuiltinMarket::default().generate(seed, days)
            }
        };
        let (days, results) = plan.run(&market);
        let summary = Summary {
            strategies: summarize(&results),
            sim_days: (days * 1000.0).round() / 1000.0,
            nodes,
            seed,
            market: market.source.clone(),
            pool_hit_model: pool_hit.describe(),
        };
        if args.json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            print!("{}", table(&summary));
        }
        if let Some(path) = &args.report {
            std::fs::write(path, costop_sim::report::html(&summary, &results))
                .with_context(|| format!("report {}: cannot write", path.display()))?;
        }
    }
    if args.stats {
        let stats = serde_json::json!({
            "wall_s": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            "peak_rss_mib": peak_rss_mib(),
        });
        eprintln!("{stats}");
    }
    Ok(())
}

/// `--sweep DIR`: every trace directory under DIR, one after another, with
/// the same options; one table (or one JSON object) for all.
fn sweep(config: &Config, args: &SimArgs, plan: &SimPlan, root: &Path) -> Result<()> {
    let dirs = trace_dirs(root)?;
    let advisor = spot_advisor(config)?;
    let mut runs = Vec::new();
    for dir in &dirs {
        let market = load_market(dir, args.instance_type.as_deref(), Some(&advisor))?;
        let (days, results) = plan.run(&market);
        let name = dir.strip_prefix(root).ok().filter(|p| !p.as_os_str().is_empty()).unwrap_or(dir);
        runs.push(SweepRun {
            trace: name.display().to_string(),
            nodes: plan.cfg.nodes,
            days: (days * 1000.0).round() / 1000.0,
            strategies: summarize(&results),
        });
    }
    let sweep = Sweep { runs, seed: plan.cfg.seed, pool_hit_model: plan.pool_hit.describe() };
    if args.json {
        println!("{}", serde_json::to_string(&sweep)?);
    } else {
        let heading = format!(
            "Sweep of {} ({} traces) — {} nodes, seed {}\nModel: {}.",
            root.display(),
            dirs.len(),
            plan.cfg.nodes,
            plan.cfg.seed,
            plan.pool_hit.describe()
        );
        print!("{}", sweep_table(&heading, &sweep));
    }
    Ok(())
}

/// Peak resident memory of this process (Linux `VmHWM`), MiB.
fn peak_rss_mib() -> Option<f64> {
    proc_status_mib("VmHWM:")
}

/// A memory line of `/proc/self/status` (`VmHWM:`, `VmRSS:`), MiB.
fn proc_status_mib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}
