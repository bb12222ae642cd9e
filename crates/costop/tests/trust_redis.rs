//! Redis is a database, not an authority, with real processes only:
//! `redis-server`, `costop emu` and `costop server` replicas, and
//! `redis-cli` playing an attacker who can write to Redis.
//!
//! - Forged stream entries (no token, a made-up token, a workload pod's
//!   token, another node's agent token) are acknowledged, logged and
//!   counted, and their node is never cordoned; the same node's own agent
//!   token then gets it cordoned.
//! - Plans planted in Redis with their open-set entry (a made-up MAC, no
//!   MAC, a genuine plan's MAC on a re-targeted plan) are refused, logged
//!   and counted at every leader change and restart, and never run; a
//!   genuine notice for a planted node afterwards is acted on.

use std::time::Duration;

mod common;
#[path = "common/procs.rs"]
mod procs;
use procs::*;

const REFUSED: &str = "costop_stream_entries_refused_total";

fn refused(reason: &str) -> String {
    format!("{REFUSED}{{reason=\"{reason}\"}}")
}

const ACCEPTED: &str = "costop_notices_total{kind=\"spot-interruption\",source=\"agent\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stream_entries_are_never_acted_on_and_a_genuine_one_is() {
    let dir = test_dir("trust-redis-stream");
    let emu = emu(&dir, 3);
    let redis = costop_store::redis_server::RedisServer::start().expect("redis-server");
    let server = server(&dir, &emu, &redis.url(), "stream", &[]);
    let logs = [server.log.as_path()];
    wait("the server leads", Duration::from_secs(30), &logs, async || server.role().await == "leader").await;

    let target = emu.instance_of("node-2").await;
    let agent0 = emu.agent_token("node-0").await;
    let workload2 = emu.pod_token("default", "default", "workload-on-node-2", "node-2").await;
    let agent2 = emu.agent_token("node-2").await;
    let notice = || serde_json::to_string(&interruption(&target, now_ms() + 60_000)).unwrap();
    let xadd = |fields: &[&str]| {
        let mut args = vec!["XADD", "costop:notices", "*"];
        args.extend_from_slice(fields);
        redis_cli(redis.port, &args)
    };

    // Every forgery is about node-2; each would cordon it if acted on.
    xadd(&["notice", &notice()]);
    xadd(&["notice", &notice(), "token", "made-up"]);
    xadd(&["notice", &notice(), "token", &workload2]);
    xadd(&["notice", &notice(), "token", &agent0]);
    let reasons = ["no-credential", "unauthenticated", "not-the-agent", "other-node"];
    wait("four entries refused", Duration::from_secs(20), &logs, async || {
        let mut n = 0;
        for r in reasons {
            n += server.metric(&refused(r)).await;
        }
        n == 4
    })
    .await;
    for r in reasons {
        assert_eq!(server.metric(&refused(r)).await, 1, "{r}");
    }
    let log = server.log_text();
    for r in reasons {
        assert!(
            log.lines()
                .any(|l| l.contains("refused a stream entry") && l.contains(&format!("reason=\"{r}\""))),
            "the refusal ({r}) is logged with its reason:\n{log}"
        );
    }
    let pending = redis_cli(redis.port, &["XPENDING", "costop:notices", "costop-server"]);
    assert_eq!(pending.lines().next(), Some("0"), "refused entries are acknowledged: {pending}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!emu.cordoned("node-2").await, "no forged entry was acted on");
    assert_eq!(redis_cli(redis.port, &["KEYS", "costop:response:*"]), "", "no response was planned");
    assert_eq!(server.metric(ACCEPTED).await, 0);

    // The same node's own agent: acted on.
    xadd(&["notice", &notice(), "token", &agent2]);
    wait("node-2 cordoned", Duration::from_secs(20), &logs, async || emu.cordoned("node-2").await).await;
    assert_eq!(server.metric(ACCEPTED).await, 1);
    for r in reasons {
        assert_eq!(server.metric(&refused(r)).await, 1, "{r}: nothing more refused");
    }
    assert!(!emu.cordoned("node-0").await && !emu.cordoned("node-1").await);
}

/// Plant `plan` under its notice's response key with `mac` (or none), and
/// add it to the open responses, as a previous leader's unfinished
/// response would be.
fn plant(port: u16, plan: &costop_core::Plan, mac: Option<&str>) {
    let key = costop_store::response_key(&plan.notice);
    let body = serde_json::to_string(plan).unwrap();
    let mut args = vec!["HSET", key.as_str(), "plan", body.as_str()];
    if let Some(mac) = mac {
        args.extend(["plan_mac", mac]);
    }
    redis_cli(port, &args);
    let open = plan.notice.to_string();
    redis_cli(port, &["SADD", "costop:responses:open", &open]);
}

fn cordon_plan(instance: &str, node: &str) -> costop_core::Plan {
    let at = now_ms() + 90_000;
    costop_core::Plan {
        notice: interruption(instance, at).key(),
        node: node.into(),
        deadline: Some(at),
        steps: vec![costop_core::Step::TaintAndCordon { node: node.into() }],
        unevictable: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_plans_are_refused_at_every_leader_change_and_restart() {
    let dir = test_dir("trust-redis-planted");
    let emu = emu(&dir, 4);
    let redis = costop_store::redis_server::RedisServer::start().expect("redis-server");
    let url = redis.url();
    let mut a = server(&dir, &emu, &url, "a", &[]);
    wait("a leads", Duration::from_secs(30), &[a.log.as_path()], async || a.role().await == "leader").await;
    let mut b = server(&dir, &emu, &url, "b", &[]);
    wait("b follows", Duration::from_secs(30), &[b.log.as_path()], async || b.role().await == "follower")
        .await;

    // A genuine response (node-0), through the stream: its plan and MAC.
    let i0 = emu.instance_of("node-0").await;
    let genuine = serde_json::to_string(&interruption(&i0, now_ms() + 60_000)).unwrap();
    let agent0 = emu.agent_token("node-0").await;
    redis_cli(redis.port, &["XADD", "costop:notices", "*", "notice", &genuine, "token", &agent0]);
    wait("node-0 cordoned", Duration::from_secs(20), &[a.log.as_path()], async || {
        emu.cordoned("node-0").await
    })
    .await;
    let keys = redis_cli(redis.port, &["KEYS", "costop:response:*"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");
    let real_mac = redis_cli(redis.port, &["HGET", keys.trim(), "plan_mac"]);
    assert_eq!(real_mac.len(), 64, "HMAC-SHA256 in hex: {real_mac}");

    // The attacker's plans, each cordoning a node that had no notice:
    // node-1 with a made-up MAC, node-2 with none, node-3 with the genuine
    // plan's MAC (valid, for another plan).
    let planted = [
        (cordon_plan(&emu.instance_of("node-1").await, "node-1"), Some("00".repeat(32))),
        (cordon_plan(&emu.instance_of("node-2").await, "node-2"), None),
        (cordon_plan(&emu.instance_of("node-3").await, "node-3"), Some(real_mac.clone())),
    ];
    for (plan, mac) in &planted {
        plant(redis.port, plan, mac.as_deref());
    }
    let untouched = async || {
        for n in ["node-1", "node-2", "node-3"] {
            assert!(!emu.cordoned(n).await, "the planted plan for {n} never runs");
        }
    };

    // Leader change: a stops, b takes over and resumes the open responses.
    a.terminate();
    let logs = [b.log.as_path()];
    wait("b leads", Duration::from_secs(10), &logs, async || b.role().await == "leader").await;
    wait("b refuses the three planted plans", Duration::from_secs(15), &logs, async || {
        untouched().await;
        b.metric("costop_plans_refused_total").await == 3
    })
    .await;
    let log = b.log_text();
    assert_eq!(
        log.lines().filter(|l| l.contains("an open response's plan is not the server's: not run")).count(),
        3,
        "each refusal is logged:\n{log}"
    );
    for (plan, _) in &planted {
        assert!(log.contains(&plan.notice.to_string()), "the log names {}:\n{log}", plan.notice);
    }

    // Restart: a new process takes over from b.
    let a2 = server(&dir, &emu, &url, "a", &[]);
    wait("a is back, following", Duration::from_secs(30), &[a2.log.as_path()], async || {
        a2.role().await == "follower"
    })
    .await;
    b.terminate();
    let logs = [a2.log.as_path()];
    wait("a leads again", Duration::from_secs(10), &logs, async || a2.role().await == "leader").await;
    wait("the restarted server refuses them too", Duration::from_secs(15), &logs, async || {
        untouched().await;
        a2.metric("costop_plans_refused_total").await == 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    untouched().await;
    assert_eq!(a2.metric(ACCEPTED).await, 0, "nothing was accepted from Redis's planted state");

    // A genuine notice for a planted node is still answered.
    let i1 = emu.instance_of("node-1").await;
    let agent1 = emu.agent_token("node-1").await;
    let notice = serde_json::to_string(&interruption(&i1, now_ms() + 60_000)).unwrap();
    let (code, body) = a2.post(&notice, Some(&agent1)).await;
    assert_eq!(code, 202, "{body}");
    wait("node-1 cordoned", Duration::from_secs(20), &logs, async || emu.cordoned("node-1").await).await;
    assert!(!emu.cordoned("node-2").await && !emu.cordoned("node-3").await);
    assert_eq!(a2.metric(ACCEPTED).await, 1);
}
