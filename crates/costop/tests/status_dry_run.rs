//! `costop server --dry-run` and `costop status`, with real processes:
//! `costop emu`, `redis-server`, a dry-run `costop server`, and `costop
//! status` run as an operator would.
//!
//! - A notice reaches the dry-run server: the response is planned and
//!   recorded with every step's outcome `dry run: …` and an Event per step
//!   on the node, and nothing changes: the node is neither cordoned nor
//!   tainted and its pods stay.
//! - `costop status --json` shows the leader with its URL and that
//!   response with its steps; the plain output says the same in lines.
//! - Without a Redis URL it fails saying why; with an API server that
//!   cannot be reached it still prints the responses and says why the
//!   leader is unknown; an unreachable Redis is named (password hidden).

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;
#[path = "common/procs.rs"]
mod procs;
use procs::*;

/// `costop status ARGS…` with `kubeconfig` and `redis_url` (when given):
/// whether it succeeded, its stdout and its stderr.
fn status(kubeconfig: &Path, redis_url: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(common::bin());
    cmd.arg("status").arg("--kubeconfig").arg(kubeconfig).args(args);
    cmd.env_remove("COSTOP_REDIS_URL").env("COSTOP_PLAN_KEY", PLAN_KEY);
    if let Some(url) = redis_url {
        cmd.args(["--redis-url", url]);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `costop status --json`, parsed.
fn status_json(kubeconfig: &Path, redis_url: &str) -> Value {
    let (ok, out, err) = status(kubeconfig, Some(redis_url), &["--json"]);
    assert!(ok, "costop status --json fails: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("costop status --json prints JSON ({e}): {out}"))
}

/// Names of the pods bound to `node` that are not being deleted.
async fn pods_on(emu: &Emu, node: &str) -> Vec<String> {
    let pods = emu.get("/api/v1/pods").await;
    let mut names: Vec<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["spec"]["nodeName"] == node && p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            format!(
                "{}/{}",
                p["metadata"]["namespace"].as_str().unwrap(),
                p["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_records_the_plan_changes_nothing_and_status_shows_it() {
    let dir = test_dir("status-dry-run");
    let emu = emu(&dir, 3);
    let redis = costop_store::redis_server::RedisServer::start().expect("redis-server");
    let server = server(&dir, &emu, &redis.url(), "dry", &[("COSTOP_DRY_RUN", "true")]);
    let logs = [server.log.as_path()];
    wait("the server leads", Duration::from_secs(30), &logs, async || server.role().await == "leader").await;
    assert_eq!(server.metric("costop_dry_run").await, 1, "{}", server.text("/metrics").await);
    assert!(
        server.log_text().contains("dry run: responses are planned and recorded"),
        "{}",
        server.log_text()
    );

    let node = "node-1";
    let instance = emu.instance_of(node).await;
    let token = emu.agent_token(node).await;
    let before = pods_on(&emu, node).await;
    assert!(before.iter().any(|p| p.starts_with("default/")), "the node runs pods to evict: {before:?}");
    let notice = interruption(&instance, now_ms() + 90_000);
    let key = notice.key().to_string();
    let (code, body) = server.post(&serde_json::to_string(&notice).unwrap(), Some(&token)).await;
    assert!((200..300).contains(&code), "the notice is taken: {code} {body}");

    // The response is recorded as finished, at once: nothing is waited for.
    let mut shown = Value::Null;
    wait("the dry-run response is finished", Duration::from_secs(30), &logs, async || {
        shown = status_json(&emu.kubeconfig, &redis.url());
        shown["recent"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["notice"] == key && x["finished"] == true))
    })
    .await;

    // Nothing changed.
    let n = emu.get(&format!("/api/v1/nodes/{node}")).await;
    assert!(!emu.cordoned(node).await, "a dry run does not cordon: {n}");
    let taints = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
    assert!(
        taints.iter().all(|t| t["key"] != costop_core::model::INTERRUPTION_TAINT),
        "a dry run does not taint: {taints:?}"
    );
    assert_eq!(pods_on(&emu, node).await, before, "a dry run evicts no pod");

    // What `costop status --json` shows.
    let leader = &shown["leader"];
    assert_eq!(leader["identity"], "dry", "{shown}");
    assert_eq!(leader["url"], server.url.as_str(), "{shown}");
    assert!(leader["renewed_ms_ago"].as_u64().is_some_and(|ms| ms < 15_000), "{shown}");
    assert_eq!(shown["open"], Value::Array(vec![]), "nothing is left open: {shown}");
    let response = shown["recent"].as_array().unwrap().iter().find(|r| r["notice"] == key).unwrap();
    assert_eq!(response["node"], node);
    assert!(response["started_at"].as_u64().is_some(), "{response}");
    let steps = response["steps"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "taint-and-cordon", "{kinds:?}");
    assert!(kinds.contains(&"evict"), "{kinds:?}");
    for s in steps {
        let outcome = s["outcome"].as_str().unwrap_or_default();
        assert!(outcome.starts_with("dry run: would "), "every step is a dry run: {s}");
        assert!(s["duration_ms"].as_u64().is_some_and(|ms| ms < 5_000), "{s}");
        assert!(s["started_at"].as_u64().is_some() && s["done_at"].as_u64().is_some(), "{s}");
    }
    assert_eq!(
        steps[0]["outcome"],
        format!(
            "dry run: would taint {node} with {}:NoSchedule and cordon it",
            costop_core::model::INTERRUPTION_TAINT
        )
    );
    let evict = steps.iter().find(|s| s["kind"] == "evict").unwrap();
    let said = evict["outcome"].as_str().unwrap();
    assert!(before.iter().any(|p| said.contains(p.as_str())), "the pods it would evict are named: {evict}");

    // The same in the store, as the server recorded it.
    let store = costop_store::RedisStore::connect(&redis.url()).await.unwrap();
    let record = costop_core::ports::StorePort::response(&store, &notice.key()).await.unwrap().unwrap();
    assert_eq!(record.steps.len(), steps.len());
    assert!(record.done_at.is_some());
    assert!(record.steps.iter().all(|s| s.outcome.as_deref().is_some_and(|o| o.starts_with("dry run: "))));

    // One Event per step on the node, with the step's outcome.
    let mut events: Vec<Value> = Vec::new();
    wait("an Event per step", Duration::from_secs(10), &logs, async || {
        events = emu.get("/api/v1/namespaces/default/events").await["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                e["involvedObject"]["name"] == node
                    && e["reason"].as_str().is_some_and(|r| r.starts_with("Costop"))
            })
            .collect();
        events.len() >= steps.len()
    })
    .await;
    assert!(
        events.iter().all(|e| e["message"].as_str().is_some_and(|m| m.starts_with("dry run: would "))),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e["reason"] == "CostopTaintAndCordon"), "{events:?}");

    // The plain output says the same in lines.
    let (ok, text, err) = status(&emu.kubeconfig, Some(&redis.url()), &["--last", "5"]);
    assert!(ok, "{err}");
    assert!(text.starts_with(&format!("leader: dry at {}", server.url)), "{text}");
    assert!(text.contains("open responses: none"), "{text}");
    assert!(
        text.contains(&key) && text.contains(&format!("node {node}")) && text.contains("finished"),
        "{text}"
    );
    assert!(text.contains("taint-and-cordon") && text.contains("dry run: would evict"), "{text}");

    // Without Redis: a clear refusal.
    let (ok, _, err) = status(&emu.kubeconfig, None, &[]);
    assert!(!ok);
    assert!(err.contains("--redis-url or COSTOP_REDIS_URL"), "{err}");
    assert!(err.contains("no other process can read"), "{err}");

    // An API server that cannot be reached: the responses, and why the leader is unknown.
    let dead = format!("https://127.0.0.1:{}", common::free_port());
    let kc = std::fs::read_to_string(&emu.kubeconfig).unwrap();
    let api = kc.lines().find_map(|l| l.trim().strip_prefix("server:")).unwrap().trim().to_string();
    let unreachable = dir.join("unreachable-kubeconfig");
    std::fs::write(&unreachable, kc.replace(&api, &dead)).unwrap();
    let (ok, out, err) = status(&unreachable, Some(&redis.url()), &["--json"]);
    assert!(ok, "the store's part is still printed: {err}");
    let partial: Value = serde_json::from_str(&out).unwrap();
    assert!(partial["leader"].is_null(), "{partial}");
    let why = partial["leader_error"].as_str().unwrap_or_default();
    assert!(why.contains(&dead) && why.contains("costop-system/costop-server"), "{why}");
    assert!(partial["recent"].as_array().unwrap().iter().any(|r| r["notice"] == key), "{partial}");
    let (ok, text, _) = status(&unreachable, Some(&redis.url()), &[]);
    assert!(ok && text.starts_with("leader: unknown (") && text.contains(&key), "{text}");

    // An unreachable Redis is named, its password hidden.
    let gone = format!("redis://:hunter2@127.0.0.1:{}/0", common::free_port());
    let (ok, _, err) = status(&emu.kubeconfig, Some(&gone), &[]);
    assert!(!ok);
    assert!(err.contains("127.0.0.1") && err.contains(":***@") && !err.contains("hunter2"), "{err}");
}
