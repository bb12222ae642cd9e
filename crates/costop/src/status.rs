//! `costop status`: the current leader (from the server's Lease) and the
//! open and most recent responses with each step's outcome (from Redis),
//! as lines or as one JSON object (`--json`).

use anyhow::{anyhow, Result};
use costop_core::ports::{Clock, ResponseRecord, StorePort};
use costop_core::time::{format_rfc3339, Millis};
use costop_core::NoticeKey;
use costop_store::redis_store::PLAN_KEY_ENV;
use costop_store::{redact_url, RedisStore};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the Lease read may take before the leader is reported unknown.
const LEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// `costop status`'s flags.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// Redis URL, as the server's (the responses are read from it).
    #[arg(long, env = "COSTOP_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Kubeconfig; without it in-cluster config or $KUBECONFIG (as the server).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// How many of the most recent responses to show.
    #[arg(long, default_value_t = 10)]
    pub last: usize,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// The Lease's live holder.
#[derive(Debug, Serialize)]
pub struct Leader {
    /// Its identity (`--identity`).
    pub identity: String,
    /// Where its intake is reached (`--advertise-url`), if it says.
    pub url: Option<String>,
    /// How long ago it renewed the Lease.
    pub renewed_ms_ago: u64,
}

/// One step of a response.
#[derive(Debug, Serialize)]
pub struct StepStatus {
    /// The step's kind (`taint-and-cordon`, …).
    pub kind: String,
    /// How it ended (`ok: …`, `dry run: …`, `failed: …`); none while it runs or before.
    pub outcome: Option<String>,
    /// When it started (Unix ms).
    pub started_at: Option<Millis>,
    /// When it finished (Unix ms).
    pub done_at: Option<Millis>,
    /// How long it took.
    pub duration_ms: Option<u64>,
}

/// One response.
#[derive(Debug, Serialize)]
pub struct ResponseStatus {
    /// The notice key (`instance:kind:time`).
    pub notice: String,
    /// The node it answers for (none when its record cannot be read).
    pub node: Option<String>,
    /// When its first step started (Unix ms).
    pub started_at: Option<Millis>,
    /// Whether it is finished.
    pub finished: bool,
    /// When it finished (Unix ms).
    pub done_at: Option<Millis>,
    /// Its steps, in plan order.
    pub steps: Vec<StepStatus>,
    /// Why its record cannot be read (a plan failing its integrity check, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything `costop status` prints.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The Lease's live holder; none when the Lease is free or cannot be read.
    pub leader: Option<Leader>,
    /// Why the leader is unknown (the Lease could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader_error: Option<String>,
    /// Responses not finished.
    pub open: Vec<ResponseStatus>,
    /// The most recent responses, newest first.
    pub recent: Vec<ResponseStatus>,
}

/// A response's record as printed.
pub fn response_status(key: &NoticeKey, record: Result<Option<ResponseRecord>, String>) -> ResponseStatus {
    let missing = |error: String| ResponseStatus {
        notice: key.to_string(),
        node: None,
        started_at: None,
        finished: false,
        done_at: None,
        steps: Vec::new(),
        error: Some(error),
    };
    let record = match record {
        Ok(Some(r)) => r,
        Ok(None) => return missing("no record (listed, but its plan is gone)".into()),
        Err(e) => return missing(e),
    };
    let steps: Vec<StepStatus> = record
        .plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let s = record.steps.get(i).cloned().unwrap_or_default();
            StepStatus {
                kind: step.kind().to_string(),
                outcome: s.outcome,
                started_at: s.started_at,
                done_at: s.done_at,
                duration_ms: s.started_at.zip(s.done_at).map(|(a, b)| b.saturating_sub(a)),
            }
        })
        .collect();
    ResponseStatus {
        notice: key.to_string(),
        node: Some(record.plan.node.clone()),
        started_at: steps.iter().filter_map(|s| s.started_at).min(),
        finished: record.done_at.is_some(),
        done_at: record.done_at,
        steps,
        error: None,
    }
}

/// The Lease's live holder, read with the server's kubeconfig inference.
async fn leader(kubeconfig: Option<&Path>) -> Result<Option<Leader>, String> {
    let config = costop_kube::KubeCluster::load_config(kubeconfig).await.map_err(|e| e.to_string())?;
    let url = config.cluster_url.to_string();
    let client = costop_kube::KubeCluster::client_from_config(config)
        .map_err(|e| format!("Kubernetes API at {url}: {e}"))?;
    let read = tokio::time::timeout(LEASE_TIMEOUT, costop_server::leader::leader(&client)).await;
    let at = |why: String| {
        format!(
            "Kubernetes API at {url}: cannot read the Lease {}/{}: {why}",
            costop_kube::COSTOP_NAMESPACE,
            costop_server::leader::LEASE
        )
    };
    match read {
        Err(_) => Err(at(format!("no answer within {} s", LEASE_TIMEOUT.as_secs()))),
        Ok(Err(e)) => Err(at(costop_store::error_chain(&e))),
        Ok(Ok(held)) => Ok(held.map(|l| Leader {
            identity: l.holder.identity,
            url: l.holder.url,
            renewed_ms_ago: costop_store::SystemClock.now_ms().saturating_sub(l.renewed_at),
        })),
    }
}

/// Read the status: the store's part must be readable, the leader's may not.
pub async fn read(args: &StatusArgs) -> Result<Status> {
    let url = args.redis_url.as_deref().filter(|u| !u.trim().is_empty()).ok_or_else(|| {
        anyhow!(
            "costop status reads the responses from Redis: give --redis-url or COSTOP_REDIS_URL (the server's); \
             a server without Redis keeps them in its own memory, which no other process can read"
        )
    })?;
    let shown = redact_url(url);
    let plan_key = std::env::var(PLAN_KEY_ENV).ok().filter(|k| !k.trim().is_empty());
    let store = RedisStore::connect(url).await?.with_plan_key(plan_key.as_deref().map(str::as_bytes));
    let at = |e: costop_store::StoreError| anyhow!("Redis at {shown}: {e}");
    let (leader, leader_error) = match leader(args.kubeconfig.as_deref()).await {
        Ok(l) => (l, None),
        Err(e) => (None, Some(e)),
    };
    let mut open = Vec::new();
    for key in store.unfinished().await.map_err(at)? {
        let record = store.response(&key).await.map_err(|e| e.to_string());
        open.push(response_status(&key, record));
    }
    let mut recent = Vec::new();
    for key in store.recent(args.last).await.map_err(at)? {
        let record = store.response(&key).await.map_err(|e| e.to_string());
        recent.push(response_status(&key, record));
    }
    Ok(Status { leader, leader_error, open, recent })
}

fn when(ms: Option<Millis>) -> String {
    ms.map_or_else(|| "-".into(), format_rfc3339)
}

fn response_lines(out: &mut String, r: &ResponseStatus, with_steps: bool) {
    let done = r.steps.iter().filter(|s| s.done_at.is_some()).count();
    let state = if r.finished {
        format!("finished {}", when(r.done_at))
    } else {
        format!("running, {done}/{} steps done", r.steps.len())
    };
    match &r.error {
        Some(e) => out.push_str(&format!("  {}  cannot be read: {e}\n", r.notice)),
        None => out.push_str(&format!(
            "  {}  node {}  started {}  {state}\n",
            r.notice,
            r.node.as_deref().unwrap_or("-"),
            when(r.started_at)
        )),
    }
    if with_steps {
        let width = r.steps.iter().map(|s| s.kind.len()).max().unwrap_or(0);
        for (i, s) in r.steps.iter().enumerate() {
            let took = match (s.duration_ms, s.started_at) {
                (Some(ms), _) => format!("{ms} ms"),
                (None, Some(_)) => "running".into(),
                (None, None) => "not started".into(),
            };
            out.push_str(&format!(
                "    {:>2}. {:<width$}  {:>11}  {}\n",
                i + 1,
                s.kind,
                took,
                s.outcome.as_deref().unwrap_or("")
            ));
        }
    }
}

/// The status as lines.
pub fn text(status: &Status, last: usize) -> String {
    let mut out = String::new();
    match (&status.leader, &status.leader_error) {
        (Some(l), _) => out.push_str(&format!(
            "leader: {} at {} (renewed {:.1} s ago)\n",
            l.identity,
            l.url.as_deref().unwrap_or("no advertised URL"),
            l.renewed_ms_ago as f64 / 1000.0
        )),
        (None, Some(e)) => out.push_str(&format!("leader: unknown ({e})\n")),
        (None, None) => out.push_str("leader: none (the Lease is free or expired: no server leads)\n"),
    }
    if status.open.is_empty() {
        out.push_str("open responses: none\n");
    } else {
        out.push_str(&format!("open responses ({}):\n", status.open.len()));
        for r in &status.open {
            response_lines(&mut out, r, false);
        }
    }
    if status.recent.is_empty() {
        out.push_str("recent responses: none\n");
    } else {
        out.push_str(&format!("recent responses (newest first, up to {last}):\n"));
        for r in &status.recent {
            response_lines(&mut out, r, true);
        }
    }
    out
}

/// `costop status`.
pub fn run(args: StatusArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let status = runtime.block_on(read(&args));
    runtime.shutdown_timeout(Duration::from_millis(500));
    let status = status?;
    use std::io::Write;
    let mut out = std::io::stdout();
    if args.json {
        let _ = writeln!(out, "{}", serde_json::to_string(&status)?);
    } else {
        let _ = write!(out, "{}", text(&status, args.last));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use costop_core::ports::StepRecord;
    use costop_core::{Plan, Step};

    fn key() -> NoticeKey {
        NoticeKey { instance_id: "i-0abc".into(), kind: "spot-interruption".into(), stated_time: 9 }
    }

    #[test]
    fn a_record_shows_each_step_with_its_duration() {
        let plan = Plan {
            notice: key(),
            node: "node-1".into(),
            deadline: None,
            steps: vec![
                Step::TaintAndCordon { node: "node-1".into() },
                Step::RestoreHeadroom { placeholders: 2 },
                Step::DeregisterTargets { node: "node-1".into() },
            ],
            unevictable: vec![],
        };
        let steps = vec![
            StepRecord { started_at: Some(1_000), done_at: Some(1_250), outcome: Some("ok: x".into()) },
            StepRecord { started_at: Some(1_300), done_at: None, outcome: None },
        ];
        let r = response_status(&key(), Ok(Some(ResponseRecord { plan, steps, done_at: None })));
        assert_eq!((r.node.as_deref(), r.started_at, r.finished), (Some("node-1"), Some(1_000), false));
        assert_eq!(r.steps[0].duration_ms, Some(250));
        assert_eq!(r.steps[1].kind, "restore-headroom");
        assert_eq!((r.steps[1].duration_ms, r.steps[2].started_at), (None, None));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["steps"][0]["outcome"], "ok: x");
        assert!(json.get("error").is_none());
        let status =
            Status { leader: None, leader_error: Some("no API".into()), open: vec![], recent: vec![r] };
        let lines = text(&status, 10);
        assert!(lines.starts_with("leader: unknown (no API)\nopen responses: none\n"), "{lines}");
        assert!(lines.contains("running, 1/3 steps done"), "{lines}");
        assert!(lines.contains("taint-and-cordon") && lines.contains("250 ms") && lines.contains("ok: x"));
        assert!(lines.contains("not started"), "{lines}");
    }

    #[test]
    fn an_unreadable_record_says_why() {
        let r = response_status(&key(), Err("fails its integrity check".into()));
        assert_eq!(r.error.as_deref(), Some("fails its integrity check"));
        let lines = text(&Status { leader: None, leader_error: None, open: vec![r], recent: vec![] }, 3);
        assert!(lines.contains("leader: none"), "{lines}");
        assert!(lines.contains("i-0abc:spot-interruption:9  cannot be read: fails its integrity check"));
    }
}
