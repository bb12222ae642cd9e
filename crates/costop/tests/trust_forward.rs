//! Agents reach the server through a Service that routes to any replica; a
//! follower forwards the notice to the leader, which checks the token and
//! acts. Real processes: `redis-server`, `costop emu`, three `costop server`
//! replicas. The leader publishes its URL in the Lease; a follower's answer
//! is the leader's, saying it was forwarded; a forwarded request is never
//! forwarded again; after a hand-over the followers forward to the new
//! leader; a leader that died answers nothing, and the follower says so
//! (503) within the agent's 2 s.

use serde_json::Value;
use std::time::Duration;

mod common;
#[path = "common/procs.rs"]
mod procs;
use procs::*;

const ACCEPTED: &str = "costop_notices_total{kind=\"spot-interruption\",source=\"agent\"}";

fn forwarded(outcome: &str) -> String {
    format!("costop_notices_forwarded_total{{outcome=\"{outcome}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_a_notice_to_the_leader_which_acts_on_it() {
    let dir = test_dir("trust-forward");
    let emu = emu(&dir, 3);
    let redis = costop_store::redis_server::RedisServer::start().expect("redis-server");
    let url = redis.url();
    // a advertises a name for itself (in a pod, its IP); b and c the default.
    let mut a = server(&dir, &emu, &url, "a", &[("COSTOP_ADVERTISE_URL", "http://localhost:{port}/")]);
    let advertised = a.url.replace("127.0.0.1", "localhost");
    let logs = |s: &[&Server]| s.iter().map(|s| s.log.clone()).collect::<Vec<_>>();
    let all = logs(&[&a]);
    let paths: Vec<&std::path::Path> = all.iter().map(|p| p.as_path()).collect();
    wait("a leads", Duration::from_secs(30), &paths, async || a.role().await == "leader").await;
    let b = server(&dir, &emu, &url, "b", &[]);
    let c = server(&dir, &emu, &url, "c", &[]);
    let all = logs(&[&a, &b, &c]);
    let paths: Vec<&std::path::Path> = all.iter().map(|p| p.as_path()).collect();
    wait("b and c follow", Duration::from_secs(30), &paths, async || {
        b.role().await == "follower" && c.role().await == "follower"
    })
    .await;
    let lease = emu.get("/apis/coordination.k8s.io/v1/namespaces/costop-system/leases/costop-server").await;
    assert_eq!(lease["spec"]["holderIdentity"], "a");
    assert_eq!(lease["metadata"]["annotations"]["costop.io/leader-url"], Value::String(advertised.clone()));

    // node-0's agent posts to a follower: forwarded, and the leader acts.
    let i0 = emu.instance_of("node-0").await;
    let notice = serde_json::to_string(&interruption(&i0, now_ms() + 60_000)).unwrap();
    let agent0 = emu.agent_token("node-0").await;
    let (code, body) = b.post(&notice, Some(&agent0)).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "accepted", "{body}");
    assert_eq!(body["forwarded_to"], "a", "the follower says it forwarded: {body}");
    wait("node-0 cordoned", Duration::from_secs(20), &paths, async || emu.cordoned("node-0").await).await;
    assert_eq!(a.metric(ACCEPTED).await, 1, "the leader took it");
    assert_eq!(b.metric(ACCEPTED).await, 0, "the follower did not act");
    assert_eq!(b.metric(&forwarded("answered")).await, 1);
    // Again, by the other follower: the leader's answer, a duplicate.
    let (code, body) = c.post(&notice, Some(&agent0)).await;
    assert_eq!(
        (code, &body["status"], &body["forwarded_to"]),
        (200, &"duplicate".into(), &"a".into()),
        "{body}"
    );

    // A workload pod's token through a follower: the leader refuses it.
    let workload = emu.pod_token("default", "default", "workload-on-node-1", "node-1").await;
    let i1 = emu.instance_of("node-1").await;
    let notice1 = serde_json::to_string(&interruption(&i1, now_ms() + 60_000)).unwrap();
    let (code, body) = c.post(&notice1, Some(&workload)).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["forwarded_to"], "a", "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("may not report notices"), "{body}");
    assert_eq!(a.metric("costop_notices_refused_total").await, 1, "counted by the leader, which checked it");
    assert_eq!(c.metric(&forwarded("refused")).await, 1);
    // Without a token, a follower refuses at once (nothing to forward).
    let (code, body) = c.post(&notice1, None).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.get("forwarded_to").is_none(), "{body}");

    // A request already forwarded is not forwarded again (no loops).
    let r = http()
        .post(format!("{}/v1/notices", b.url))
        .bearer_auth(&agent0)
        .header("x-costop-forwarded-by", "c")
        .header("content-type", "application/json")
        .body(notice.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let text = r.text().await.unwrap();
    assert!(text.contains("forwarded by c"), "{text}");
    assert_eq!(b.metric(&forwarded("answered")).await, 1, "not forwarded");
    assert!(!emu.cordoned("node-1").await);

    // Hand-over: a stops; whichever of b and c follows forwards to the new leader.
    a.terminate();
    let handed = std::time::Instant::now();
    let (leader, follower) = loop {
        assert!(handed.elapsed() < Duration::from_secs(20), "neither b nor c took the Lease over");
        if b.role().await == "leader" {
            break (&b, &c);
        }
        if c.role().await == "leader" {
            break (&c, &b);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let agent1 = emu.agent_token("node-1").await;
    let (code, body) = follower.post(&notice1, Some(&agent1)).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["forwarded_to"], Value::String(leader.identity.clone()), "{body}");
    wait("node-1 cordoned", Duration::from_secs(20), &paths, async || emu.cordoned("node-1").await).await;
    assert_eq!(leader.metric(ACCEPTED).await, 1);
    assert_eq!(follower.metric(ACCEPTED).await, 0);

    // The leader dies without releasing the Lease: the follower cannot
    // reach it, says so within the agent's 2 s, and counts it.
    let status =
        std::process::Command::new("kill").args(["-KILL", &leader.proc.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let i2 = emu.instance_of("node-2").await;
    let notice2 = serde_json::to_string(&interruption(&i2, now_ms() + 60_000)).unwrap();
    let agent2 = emu.agent_token("node-2").await;
    let sent = std::time::Instant::now();
    let (code, body) = follower.post(&notice2, Some(&agent2)).await;
    let took = sent.elapsed();
    assert_eq!(code, 503, "{body}");
    let error = body["error"].as_str().unwrap_or("");
    assert!(
        error.contains(&format!("the leader {} at", leader.identity)) && error.contains("did not answer"),
        "{body}"
    );
    assert!(took < Duration::from_secs(2), "answered in {took:?}, within the agent's 2 s");
    assert_eq!(follower.metric(&forwarded("failed")).await, 1);
    assert!(!emu.cordoned("node-2").await);
}
