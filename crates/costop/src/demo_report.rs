//! What `costop demo` watches and prints: the server's response steps (from
//! its log events), each notice's cordon and recovery (from the emulated
//! cluster), the agents, the load generator's requests, and the summary.

use costop_emu::kinds::idx;
use costop_emu::EmuState;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A response event of the server's executor.
#[derive(Debug, Clone)]
pub enum StepEvent {
    /// A response started: its notice, node and step kinds.
    Responding {
        /// The notice key.
        notice: String,
        /// The doomed node.
        node: String,
        /// The plan's steps.
        steps: String,
    },
    /// A step finished.
    StepDone {
        /// The notice key.
        notice: String,
        /// Step kind.
        step: String,
        /// Its outcome.
        outcome: String,
    },
}

#[derive(Default)]
struct Fields(BTreeMap<&'static str, String>);

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name(), value.to_string());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

/// Hands the server's `responding` and the executor's `step done` events to the demo.
struct StepLayer(tokio::sync::mpsc::UnboundedSender<StepEvent>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StepLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let target = event.metadata().target();
        if !(target.starts_with("costop_executor") || target.starts_with("costop_server")) {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let mut take = |k: &str| f.0.remove(k).unwrap_or_default();
        let e = match take("message").as_str() {
            "responding" => {
                StepEvent::Responding { notice: take("notice"), node: take("node"), steps: take("steps") }
            }
            "step done" => {
                StepEvent::StepDone { notice: take("notice"), step: take("step"), outcome: take("outcome") }
            }
            _ => return,
        };
        let _ = self.0.send(e);
    }
}

/// The demo's log: warnings (or `COSTOP_LOG`) to stderr, and the
/// executor's response events to `events`.
pub fn init_tracing(events: tokio::sync::mpsc::UnboundedSender<StepEvent>) {
    init_tracing_with("warn,kube_client=off", events);
}

/// The log at `default_filter` (or `COSTOP_LOG`) to stderr, and the
/// server's and executor's response events to `events` whatever the filter.
pub fn init_tracing_with(default_filter: &str, events: tokio::sync::mpsc::UnboundedSender<StepEvent>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("COSTOP_LOG").unwrap_or_else(|_| default_filter.into());
    let steps = tracing_subscriber::filter::Targets::new()
        .with_target("costop_executor", tracing::Level::INFO)
        .with_target("costop_server", tracing::Level::INFO);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter),
        )
        .with(StepLayer(events).with_filter(steps))
        .init();
}

/// Prints one line per event with the time since the start (to stderr when
/// the summary is JSON, so stdout holds only the JSON).
#[derive(Clone)]
pub struct Say {
    /// When the demo started.
    pub start: Instant,
    to_stderr: bool,
}

impl Say {
    /// Lines timed from `start`.
    pub fn new(start: Instant, to_stderr: bool) -> Self {
        Self { start, to_stderr }
    }

    /// Print one line.
    pub fn line(&self, text: impl AsRef<str>) {
        let line = format!("[{:>6.1}s] {}\n", self.start.elapsed().as_secs_f64(), text.as_ref());
        // A closed pipe must not end the demo.
        let _ = if self.to_stderr {
            std::io::stderr().write_all(line.as_bytes())
        } else {
            std::io::stdout().write_all(line.as_bytes())
        };
    }
}

/// One notice the demo sent, and what became of it.
#[derive(Debug, Clone)]
struct Tracked {
    node: String,
    at: Instant,
    /// Workloads (`default/name`) with pods on the node at the notice.
    displaced: BTreeSet<String>,
    cordoned: Option<Duration>,
    ready: Option<Duration>,
}

/// The responses the server's log events tell of (see [`StepEvent`]): each
/// with its steps as they finished, and the steps done and failed by kind.
/// The demo's monitor and `costop server --dashboard` both keep one.
#[derive(Default)]
pub struct ResponseBook {
    responses: AtomicU64,
    /// Step kind → (done, failed).
    steps: Mutex<BTreeMap<String, (u64, u64)>>,
    /// Each response as it went, the newest last (at most [`RESPONSES_SHOWN`]).
    log: Mutex<std::collections::VecDeque<ResponseLog>>,
    /// Notice key → node.
    nodes: Mutex<BTreeMap<String, String>>,
}

/// How many responses the book keeps for the dashboard (the counts cover all).
pub const RESPONSES_SHOWN: usize = 100;

impl ResponseBook {
    /// Take one event, `now_s` seconds since the start; returns its line.
    pub fn record(&self, e: StepEvent, now_s: f64) -> String {
        match e {
            StepEvent::Responding { notice, node, steps } => {
                self.responses.fetch_add(1, Ordering::Relaxed);
                let steps = steps.replace(['"', '[', ']'], "");
                let line = format!("server responds to {node}: {steps}");
                let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
                log.push_back(ResponseLog {
                    notice: notice.clone(),
                    node: node.clone(),
                    at_s: now_s,
                    planned: steps.split(", ").map(str::to_string).collect(),
                    done: Vec::new(),
                });
                while log.len() > RESPONSES_SHOWN {
                    log.pop_front();
                }
                self.nodes.lock().unwrap_or_else(|e| e.into_inner()).insert(notice, node);
                line
            }
            StepEvent::StepDone { notice, step, outcome } => {
                let failed = outcome.starts_with("failed");
                {
                    let mut s = self.steps.lock().unwrap_or_else(|e| e.into_inner());
                    let e = s.entry(step.clone()).or_default();
                    if failed {
                        e.1 += 1;
                    } else {
                        e.0 += 1;
                    }
                }
                if let Some(r) =
                    self.log.lock().unwrap_or_else(|e| e.into_inner()).iter_mut().find(|r| r.notice == notice)
                {
                    r.done.push((step.clone(), outcome.clone(), now_s - r.at_s));
                }
                let node = self.nodes.lock().unwrap_or_else(|e| e.into_inner()).get(&notice).cloned();
                format!("  {} {step}: {outcome}", node.unwrap_or(notice))
            }
        }
    }

    /// Responses started.
    pub fn responses(&self) -> u64 {
        self.responses.load(Ordering::Relaxed)
    }

    /// Step kind → (done, failed).
    pub fn steps(&self) -> BTreeMap<String, (u64, u64)> {
        self.steps.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The responses kept, oldest first.
    pub fn log(&self) -> Vec<ResponseLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }
}

/// Watches notices, steps and requests, and sums them up.
pub struct Monitor {
    st: Arc<EmuState>,
    say: Say,
    tracked: Mutex<Vec<Tracked>>,
    book: ResponseBook,
    sent: AtomicU64,
    failed: AtomicU64,
    first_failures: Mutex<Vec<String>>,
    /// One sample a second, the latest last.
    history: Mutex<std::collections::VecDeque<Sample>>,
    time_scale: f64,
}

/// One response as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseLog {
    /// The notice key.
    pub notice: String,
    /// The doomed node.
    pub node: String,
    /// When it started, seconds since the demo's start.
    pub at_s: f64,
    /// Its planned steps, in order.
    pub planned: Vec<String>,
    /// Steps as they finished: (kind, outcome, seconds since the response started).
    pub done: Vec<(String, String, f64)>,
}

/// One second of the run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the demo's start.
    pub t: f64,
    /// Requests answered in that second (pods and function).
    pub served: u64,
    /// Requests that failed in it.
    pub failed: u64,
    /// Requests the function answered in it.
    pub by_function: u64,
    /// What the cloud costs now, USD per hour (world time).
    pub cost_usd_hr: f64,
    /// What its running nodes would cost all on-demand, USD per hour.
    pub on_demand_usd_hr: f64,
}

/// How many one-second samples are kept (ten minutes).
pub const HISTORY: usize = 600;

impl Monitor {
    /// A monitor of this cluster.
    pub fn new(st: Arc<EmuState>, say: Say, time_scale: f64) -> Self {
        Self {
            book: ResponseBook::default(),
            history: Mutex::default(),
            time_scale,
            st,
            say,
            tracked: Mutex::default(),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_failures: Mutex::default(),
        }
    }

    /// Nodes noticed so far.
    pub fn noticed(&self) -> BTreeSet<String> {
        self.tracked.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|t| t.node.clone()).collect()
    }

    /// A reclaim's notice goes to `node` now.
    pub fn notice(&self, node: &str, r: &crate::demo::Reclaim, speed: f64) {
        let mut displaced = BTreeSet::new();
        let mut pods = 0;
        self.st.store.scan(idx::PODS, |ns, _, p| {
            if p["spec"]["nodeName"] != node {
                return;
            }
            if let Some(owner) = p["metadata"]["ownerReferences"]
                .as_array()
                .and_then(|o| o.iter().find(|r| r["controller"] == true && r["kind"] == "Deployment"))
                .and_then(|r| r["name"].as_str())
            {
                displaced.insert(format!("{ns}/{owner}"));
                pods += 1;
            }
        });
        let labels = self
            .st
            .store
            .get(idx::NODES, "", node)
            .map(|n| n["metadata"]["labels"].clone())
            .unwrap_or_default();
        self.say.line(format!(
            "RECLAIM (trace {} at {:.1} h, replayed at {speed:.0}×): 2-minute notice to {node} ({} {}, {pods} pods of {})",
            r.zone,
            r.at_s / 3600.0,
            labels["node.kubernetes.io/instance-type"].as_str().unwrap_or("?"),
            labels["topology.kubernetes.io/zone"].as_str().unwrap_or("?"),
            displaced.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
        self.tracked.lock().unwrap_or_else(|e| e.into_inner()).push(Tracked {
            node: node.to_string(),
            at: Instant::now(),
            displaced,
            cordoned: None,
            ready: None,
        });
    }

    /// Print and count the server's response events until the channel closes.
    pub async fn steps(self: Arc<Self>, mut events: tokio::sync::mpsc::UnboundedReceiver<StepEvent>) {
        while let Some(e) = events.recv().await {
            let line = self.book.record(e, self.say.start.elapsed().as_secs_f64());
            self.say.line(line);
        }
    }

    /// Watch each notice's node until it is cordoned and its workloads are
    /// whole again on other nodes, printing each when it happens.
    pub async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let open: Vec<Tracked> = self
                .tracked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|t| t.cordoned.is_none() || t.ready.is_none())
                .cloned()
                .collect();
            for t in open {
                let cordoned = t.cordoned.is_some()
                    || self
                        .st
                        .store
                        .get(idx::NODES, "", &t.node)
                        .is_ok_and(|n| n["spec"]["unschedulable"] == true);
                let ready =
                    t.cordoned.is_some() && t.displaced.iter().all(|w| whole_elsewhere(&self.st, w, &t.node));
                let mut all = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
                let Some(x) = all.iter_mut().find(|x| x.node == t.node) else { continue };
                let since = x.at.elapsed();
                if cordoned && x.cordoned.is_none() {
                    x.cordoned = Some(since);
                    self.say.line(format!("{} cordoned {} ms after its notice", x.node, since.as_millis()));
                }
                if ready && x.ready.is_none() {
                    x.ready = Some(since);
                    self.say.line(format!(
                        "{}'s workloads whole again on other nodes {:.1} s after its notice",
                        x.node,
                        since.as_secs_f64()
                    ));
                }
            }
        }
    }

    /// Take a sample every second until `shutdown`.
    pub async fn sample(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut last: Option<(Instant, u64, u64, u64, f64, f64)> = None;
        loop {
            let cloud = costop_emu::cloud::summary(&self.st);
            let now = Instant::now();
            let sent = self.sent.load(Ordering::Relaxed);
            let failed = self.failed.load(Ordering::Relaxed);
            let function = cloud["requests"]["served_by_function"].as_u64().unwrap_or(0);
            let cost = cloud["cost_usd"].as_f64().unwrap_or(0.0);
            let od = cloud["on_demand_usd"].as_f64().unwrap_or(0.0);
            if let Some((t0, s0, f0, b0, c0, o0)) = last {
                // Money accrues in world time: a real second is 1 / time_scale world seconds.
                let world_h = now.duration_since(t0).as_secs_f64() / self.time_scale / 3600.0;
                let sample = Sample {
                    t: round(self.say.start.elapsed().as_secs_f64(), 1),
                    served: (sent - s0).saturating_sub(failed - f0),
                    failed: failed - f0,
                    by_function: function.saturating_sub(b0),
                    cost_usd_hr: if world_h > 0.0 { round((cost - c0) / world_h, 3) } else { 0.0 },
                    on_demand_usd_hr: if world_h > 0.0 { round((od - o0) / world_h, 3) } else { 0.0 },
                };
                let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
                h.push_back(sample);
                while h.len() > HISTORY {
                    h.pop_front();
                }
            }
            last = Some((now, sent, failed, function, cost, od));
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// What the dashboard shows now: nodes by pool and capacity type, pods
    /// starting and stopping, each response's steps, one sample a second,
    /// and the summary so far.
    pub fn snapshot(&self) -> serde_json::Value {
        let mut pods_on: BTreeMap<String, (u32, u32, u32)> = BTreeMap::new();
        let (mut pending, mut terminating) = (0u32, 0u32);
        self.st.store.scan(idx::PODS, |ns, _, p| {
            if ns == "costop-system" {
                return;
            }
            let stopping = p["metadata"]["deletionTimestamp"].is_string();
            let ready = costop_emu::cluster::is_ready(p);
            match p["spec"]["nodeName"].as_str() {
                Some(n) => {
                    let e = pods_on.entry(n.to_string()).or_default();
                    if stopping {
                        e.2 += 1;
                        terminating += 1;
                    } else if ready {
                        e.0 += 1;
                    } else {
                        e.1 += 1;
                        pending += 1;
                    }
                }
                None => pending += 1,
            }
        });
        let mut nodes = Vec::new();
        self.st.store.scan(idx::NODES, |_, name, n| {
            let labels = &n["metadata"]["labels"];
            let (ready, starting, stopping) = pods_on.get(name).copied().unwrap_or_default();
            nodes.push(serde_json::json!({
                "name": name,
                "pool": format!("{} {}", labels["node.kubernetes.io/instance-type"].as_str().unwrap_or("?"),
                                labels["topology.kubernetes.io/zone"].as_str().unwrap_or("?")),
                "capacity": labels["costop.io/capacity-type"],
                "ready": costop_emu::cluster::is_ready(n),
                "cordoned": n["spec"]["unschedulable"] == true,
                "pods": {"ready": ready, "starting": starting, "stopping": stopping},
            }));
        });
        let summary = self.summary(self.say.start.elapsed(), 0.0, self.time_scale, "");
        serde_json::json!({
            "t": round(self.say.start.elapsed().as_secs_f64(), 1),
            "nodes": nodes,
            "pods": {"starting": pending, "stopping": terminating},
            "mode": "demo",
            "responses": self.book.log(),
            "history": self.history.lock().unwrap_or_else(|e| e.into_inner()).iter().collect::<Vec<_>>(),
            "summary": summary,
        })
    }

    /// Count one request and its result.
    pub fn request(&self, ok: bool, why: impl FnOnce() -> String) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if !ok {
            let n = self.failed.fetch_add(1, Ordering::Relaxed);
            if n < 5 {
                let why = why();
                self.say.line(format!("REQUEST FAILED: {why}"));
                self.first_failures.lock().unwrap_or_else(|e| e.into_inner()).push(why);
            }
        }
    }

    /// The summary of the run so far.
    pub fn summary(&self, elapsed: Duration, speed: f64, time_scale: f64, trace: &str) -> Summary {
        let tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut cordon: Vec<f64> =
            tracked.iter().filter_map(|t| t.cordoned).map(|d| d.as_secs_f64() * 1000.0).collect();
        let mut ready: Vec<f64> = tracked.iter().filter_map(|t| t.ready).map(|d| d.as_secs_f64()).collect();
        let steps = self.book.steps();
        let cloud = costop_emu::cloud::summary(&self.st);
        let done = |k: &str| steps.get(k).map_or(0, |s| s.0);
        let cost = cloud["cost_usd"].as_f64().unwrap_or(0.0);
        let od = cloud["on_demand_usd"].as_f64().unwrap_or(0.0);
        let volume_moves =
            cloud["volumes"].as_array().into_iter().flatten().filter_map(|v| v["moves"].as_u64()).sum();
        Summary {
            duration_s: round(elapsed.as_secs_f64(), 1),
            trace: trace.to_string(),
            speed: round(speed, 1),
            time_scale,
            notices: tracked.len() as u64,
            responses: self.book.responses(),
            steps_done: steps.values().map(|s| s.0).sum(),
            steps_failed: steps.values().map(|s| s.1).sum(),
            steps: steps.iter().map(|(k, v)| (k.clone(), StepCount { done: v.0, failed: v.1 })).collect(),
            standbys_woken: done("wake-standby"),
            capacity_restored: done("restore-capacity"),
            volumes_moved: done("move-volume"),
            volume_moves_in_cloud: volume_moves,
            bridge_used: done("bridge-traffic") > 0
                && cloud["requests"]["served_by_function"].as_u64().unwrap_or(0) > 0,
            requests_sent: self.sent.load(Ordering::Relaxed),
            requests_failed: self.failed.load(Ordering::Relaxed),
            requests_by_function: cloud["requests"]["served_by_function"].as_u64().unwrap_or(0),
            first_failures: self.first_failures.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            p50_notice_to_cordon_ms: round(percentile(&mut cordon, 0.5), 0),
            p99_notice_to_cordon_ms: round(percentile(&mut cordon, 0.99), 0),
            p50_notice_to_ready_s: round(percentile(&mut ready, 0.5), 1),
            p99_notice_to_ready_s: round(percentile(&mut ready, 0.99), 1),
            recovered: ready.len() as u64,
            cost_usd: round(cost, 4),
            on_demand_usd: round(od, 4),
            cost_vs_on_demand: if od > 0.0 { round(cost / od, 3) } else { 0.0 },
        }
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Nearest-rank percentile (0 when there is none).
fn percentile(xs: &mut [f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let rank = ((p * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1]
}

/// Whether workload `ns/name` has all its replicas Ready on nodes other than `node`.
fn whole_elsewhere(st: &EmuState, workload: &str, node: &str) -> bool {
    let Some((ns, name)) = workload.split_once('/') else { return true };
    let Ok(d) = st.store.get(idx::DEPLOYMENTS, ns, name) else { return true };
    let want = d["spec"]["replicas"].as_u64().unwrap_or(1);
    let mut ready = 0;
    st.store.scan(idx::PODS, |pns, _, p| {
        let owned = p["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|o| o.iter().any(|r| r["controller"] == true && r["name"] == name));
        if pns == ns
            && owned
            && p["spec"]["nodeName"] != node
            && !p["metadata"]["deletionTimestamp"].is_string()
            && costop_emu::cluster::is_ready(p)
        {
            ready += 1;
        }
    });
    ready >= want
}

/// Count of one step kind.
#[derive(Debug, Clone, Serialize)]
pub struct StepCount {
    /// Finished without failing.
    pub done: u64,
    /// Failed.
    pub failed: u64,
}

/// What `costop demo` prints at the end (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Wall seconds the demo ran.
    pub duration_s: f64,
    /// The trace replayed.
    pub trace: String,
    /// Trace seconds per real second.
    pub speed: f64,
    /// Multiplier on the world's durations.
    pub time_scale: f64,
    /// Notices sent (one per replayed reclaim).
    pub notices: u64,
    /// Responses the server started.
    pub responses: u64,
    /// Steps that finished without failing.
    pub steps_done: u64,
    /// Steps that failed.
    pub steps_failed: u64,
    /// Per step kind.
    pub steps: BTreeMap<String, StepCount>,
    /// Standbys woken (steps done).
    pub standbys_woken: u64,
    /// Capacity restores launched (steps done).
    pub capacity_restored: u64,
    /// Volume moves (steps done).
    pub volumes_moved: u64,
    /// Moves and copies the emulated cloud carried out.
    pub volume_moves_in_cloud: u64,
    /// Traffic was bridged and the function answered requests.
    pub bridge_used: bool,
    /// Requests the load generator sent.
    pub requests_sent: u64,
    /// Requests that failed (any answer but 200, or no answer).
    pub requests_failed: u64,
    /// Requests the function bridge answered.
    pub requests_by_function: u64,
    /// The first few failures, with why.
    pub first_failures: Vec<String>,
    /// Notice → node cordoned, median, ms.
    pub p50_notice_to_cordon_ms: f64,
    /// Notice → node cordoned, 99th percentile, ms.
    pub p99_notice_to_cordon_ms: f64,
    /// Notice → the node's workloads whole on other nodes, median, wall s.
    pub p50_notice_to_ready_s: f64,
    /// Same, 99th percentile.
    pub p99_notice_to_ready_s: f64,
    /// Notices whose workloads were whole again before the end.
    pub recovered: u64,
    /// What the emulated cloud cost so far (world time), USD.
    pub cost_usd: f64,
    /// What its running nodes would have cost all on-demand, USD.
    pub on_demand_usd: f64,
    /// `cost_usd / on_demand_usd`.
    pub cost_vs_on_demand: f64,
}

impl Summary {
    /// The summary as lines for a person.
    pub fn table(&self) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(k, c)| {
                format!(
                    "{k} {}{}",
                    c.done,
                    if c.failed > 0 { format!(" ({} failed)", c.failed) } else { String::new() }
                )
            })
            .collect();
        format!(
            "\nsummary after {:.0} s ({} at {:.0}×, world durations × {})\n\
             notices {}, responses {}, steps done {} / failed {}\n  {}\n\
             requests sent {}, failed {} ({} answered by the function bridge)\n\
             notice → cordon p50 {:.0} ms, p99 {:.0} ms; notice → workloads whole p50 {:.1} s, p99 {:.1} s ({} of {} recovered)\n\
             cost so far ${:.4} vs ${:.4} all on-demand ({:.1} %)\n",
            self.duration_s,
            self.trace,
            self.speed,
            self.time_scale,
            self.notices,
            self.responses,
            self.steps_done,
            self.steps_failed,
            if steps.is_empty() { "(no step yet)".to_string() } else { steps.join(", ") },
            self.requests_sent,
            self.requests_failed,
            self.requests_by_function,
            self.p50_notice_to_cordon_ms,
            self.p99_notice_to_cordon_ms,
            self.p50_notice_to_ready_s,
            self.p99_notice_to_ready_s,
            self.recovered,
            self.notices,
            self.cost_usd,
            self.on_demand_usd,
            self.cost_vs_on_demand * 100.0
        )
    }
}

/// Send `rps` requests a second, round robin over `workloads`, through the
/// emulated load balancer until `shutdown`; count each result.
pub async fn load(
    http: reqwest::Client,
    emu_url: String,
    workloads: Vec<String>,
    rps: u32,
    monitor: Arc<Monitor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let per_tick = (f64::from(rps.max(1)) / 100.0).max(0.0);
    let mut every = tokio::time::interval(Duration::from_millis(10));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut owed = 0.0;
    let mut i = 0usize;
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let w = &workloads[i % workloads.len()];
            i += 1;
            let url = format!("{emu_url}/admin/requests/{w}");
            let (http, monitor, w) = (http.clone(), monitor.clone(), w.clone());
            in_flight.spawn(async move {
                match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => monitor.request(true, String::new),
                    Ok(r) => {
                        let code = r.status();
                        let body = r.text().await.unwrap_or_default();
                        let why: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                        monitor.request(false, || {
                            format!("{w}: HTTP {code}: {}", why["message"].as_str().unwrap_or(&body))
                        });
                    }
                    Err(e) => monitor.request(false, || format!("{w}: {e}")),
                }
            });
        }
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

/// One agent per Spot node: its DaemonSet pod on the node, the pod's token
/// in a file, and the real agent polling the emulator's IMDS for the node.
#[derive(Clone)]
pub struct Agents {
    st: Arc<EmuState>,
    emu_url: String,
    server_url: String,
    redis_url: Option<String>,
    dir: PathBuf,
    running: Arc<Mutex<BTreeSet<String>>>,
}

/// The agents' namespace and service account (the server's default).
const AGENT_NS: &str = "costop-system";

impl Agents {
    /// Agents for this cluster, their tokens under `dir`.
    pub fn new(
        st: Arc<EmuState>,
        emu_url: String,
        server_url: String,
        redis_url: Option<String>,
        dir: PathBuf,
    ) -> Self {
        Self { st, emu_url, server_url, redis_url, dir, running: Arc::default() }
    }

    /// Start an agent for every Spot node without one, every second, until `shutdown`.
    pub async fn keep(self, shutdown: watch::Receiver<bool>, say: Say) {
        let say_agent = say.clone();
        let ds = self.daemonset();
        let mut stop = shutdown.clone();
        let mut first = true;
        loop {
            let mut spot = Vec::new();
            self.st.store.scan(idx::NODES, |_, name, n| {
                if n["metadata"]["labels"]["costop.io/capacity-type"] == "spot" {
                    spot.push(name.to_string());
                }
            });
            let mut started = 0;
            for node in spot {
                if self.running.lock().unwrap_or_else(|e| e.into_inner()).contains(&node) {
                    continue;
                }
                match self.start(&node, &ds, shutdown.clone(), say_agent.clone()) {
                    Ok(()) => {
                        started += 1;
                        if !first {
                            say.line(format!("agent started on the new Spot node {node}"));
                        }
                    }
                    Err(e) => say.line(format!("cannot start the agent on {node}: {e}")),
                }
            }
            if first {
                say.line(format!(
                    "{started} agents polling IMDS (one per Spot node), each with its pod's token"
                ));
                first = false;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    fn daemonset(&self) -> String {
        let st = &self.st;
        if st.store.get(idx::NAMESPACES, "", AGENT_NS).is_err() {
            let _ = st.create(idx::NAMESPACES, "", serde_json::json!({"metadata": {"name": AGENT_NS}}));
        }
        let ds = serde_json::json!({"metadata": {"name": "costop-agent", "labels": {"app": "costop-agent"}},
            "spec": {"selector": {"matchLabels": {"app": "costop-agent"}},
                     "template": {"metadata": {"labels": {"app": "costop-agent"}},
                                  "spec": {"containers": [{"name": "agent", "image": "costop:demo"}]}}}});
        let created = st.create(
            costop_emu::kinds::KINDS.iter().position(|k| k.plural == "daemonsets").unwrap_or(0),
            AGENT_NS,
            ds,
        );
        created.ok().and_then(|d| d["metadata"]["uid"].as_str().map(str::to_string)).unwrap_or_default()
    }

    fn start(
        &self,
        node: &str,
        ds_uid: &str,
        shutdown: watch::Receiver<bool>,
        say: Say,
    ) -> Result<(), String> {
        let pod = format!("costop-agent-{node}");
        let object = serde_json::json!({"metadata": {"name": pod, "labels": {"app": "costop-agent"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "costop-agent",
                                     "uid": ds_uid, "controller": true}]},
            "spec": {"nodeName": node, "serviceAccountName": "costop-agent", "hostNetwork": true,
                     "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "agent", "image": "registry.k8s.io/pause:3.10",
                                     "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}]}});
        if self.st.store.get(idx::PODS, AGENT_NS, &pod).is_err() {
            self.st.create(idx::PODS, AGENT_NS, object).map_err(|e| e.to_string())?;
        }
        let token = self.st.pod_token(AGENT_NS, &pod).ok_or("no token issued to the agent's pod")?;
        let path = self.dir.join(format!("token-{node}"));
        std::fs::write(&path, token).map_err(|e| format!("{}: {e}", path.display()))?;
        let config = costop_agent::AgentConfig {
            imds_url: format!("{}/imds/{node}", self.emu_url),
            server_url: Some(self.server_url.clone()),
            redis_url: self.redis_url.clone(),
            token_path: Some(path),
            poll: Duration::from_millis(500),
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let agent = costop_agent::Agent::try_new(config, Arc::new(costop_store::SystemClock), tx)
            .map_err(|e| e.to_string())?;
        self.running.lock().unwrap_or_else(|e| e.into_inner()).insert(node.to_string());
        let node = node.to_string();
        tokio::spawn(async move {
            let mut told = BTreeSet::new();
            while let Some((key, delivered)) = rx.recv().await {
                if delivered.server == costop_agent::Sink::Taken && told.insert(key.to_string()) {
                    say.line(format!(
                        "agent on {node} read the notice from IMDS and handed it to the server"
                    ));
                }
            }
        });
        tokio::spawn(Arc::new(agent).run(shutdown));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        assert_eq!(percentile(&mut [], 0.5), 0.0);
        assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 0.5), 2.0);
        assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 0.99), 3.0);
        assert_eq!(percentile(&mut [5.0], 0.01), 5.0);
    }
}
