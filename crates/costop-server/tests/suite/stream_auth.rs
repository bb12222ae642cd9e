//! Every notice is authenticated whatever its path: stream entries carry
//! the agent's token and are verified exactly as HTTP requests; forged,
//! unsigned or foreign entries are acknowledged, counted and never acted
//! on. Real redis-server, the emulated cluster, the real server.

use crate::common::*;
use std::time::Duration;

async fn xadd(url: &str, fields: &[(&str, &str)]) -> String {
    let raw: Vec<(&[u8], &[u8])> = fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect();
    xadd_bytes(url, &raw).await
}

async fn xadd_bytes(url: &str, fields: &[(&[u8], &[u8])]) -> String {
    let mut c = redis_conn(url).await;
    let mut cmd = redis::cmd("XADD");
    cmd.arg("costop:notices").arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query_async(&mut c).await.unwrap()
}

async fn pending(url: &str) -> i64 {
    let mut c = redis_conn(url).await;
    let reply: redis::Value =
        redis::cmd("XPENDING").arg("costop:notices").arg("costop-server").query_async(&mut c).await.unwrap();
    match reply {
        redis::Value::Array(v) => redis::from_redis_value(&v[0]).unwrap_or(-1),
        _ => -1,
    }
}

async fn refused(server: &Server, reason: &str) -> u64 {
    let m = server.metrics().await;
    let line = format!("costop_stream_entries_refused_total{{reason=\"{reason}\"}} ");
    m.lines().find_map(|l| l.strip_prefix(&line)).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_agents_own_token_gets_a_notice_acted_on_by_either_path() {
    let (emu, _dir) = start_emu("stream-auth").await;
    let redis = redis();
    let server = start_server(&emu, Some(redis.url()), "stream-auth").await;
    server.wait_leading().await;
    let url = redis.url();
    let soon = || now_ms() + 60_000;
    let json = |n: &costop_core::Notice| serde_json::to_string(n).unwrap();
    let (i0, i1, i2) =
        (instance_of(&emu, "node-0"), instance_of(&emu, "node-1"), instance_of(&emu, "node-2"));
    let agent0 = agent_token(&emu, "node-0");
    let workload1 = pod_token(&emu, "default", "default", "workload-on-node-1", "node-1");

    // Forged: no token (what `redis-cli XADD` can do).
    xadd(&url, &[("notice", &json(&interruption(&i2, soon())))]).await;
    // A token that is no live pod's.
    xadd(&url, &[("notice", &json(&interruption(&i2, soon()))), ("token", "made-up")]).await;
    // A workload pod's token, for its own node.
    xadd(&url, &[("notice", &json(&interruption(&i1, soon()))), ("token", &workload1)]).await;
    // The agent of node-0 reporting for node-2.
    xadd(&url, &[("notice", &json(&interruption(&i2, soon()))), ("token", &agent0)]).await;
    // Not a notice.
    xadd(&url, &[("notice", "{junk"), ("token", &agent0)]).await;
    until("five entries refused", Duration::from_secs(15), async || {
        let mut n = 0;
        for r in ["no-credential", "unauthenticated", "not-the-agent", "other-node", "malformed"] {
            n += refused(&server, r).await;
        }
        n == 5
    })
    .await;
    for r in ["no-credential", "unauthenticated", "not-the-agent", "other-node", "malformed"] {
        assert_eq!(refused(&server, r).await, 1, "{r}");
    }
    assert_eq!(pending(&url).await, 0, "refused entries are acknowledged");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!cordoned(&emu, "node-1") && !cordoned(&emu, "node-2"), "nothing refused is acted on");
    assert!(response_keys(&url).await.is_empty());

    // The workload pod's token on HTTP: refused too.
    let (code, body) = server.post(&interruption(&i1, soon()), &workload1).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("system:serviceaccount:default:default may not report"), "{body}");
    assert!(!cordoned(&emu, "node-1"));

    // Entries no client library would write: a field name and a notice
    // that are not UTF-8, and no notice field at all. They neither stop the
    // consumer (the read does not fail on them) nor get acted on.
    xadd_bytes(&url, &[(b"\xff\xfe", b"\x80"), (b"notice", b"\xc3\x28{}"), (b"token", agent0.as_bytes())])
        .await;
    xadd(&url, &[("token", &agent0)]).await;
    // The agent's own credential, but an interruption six days in the past:
    // refused for its time, counted, never acted on.
    let stale = interruption(&i0, now_ms() - 6 * 24 * 3600 * 1000);
    xadd(&url, &[("notice", &json(&stale)), ("token", &agent0)]).await;
    until("the three entries refused", Duration::from_secs(15), async || {
        refused(&server, "malformed").await == 3 && refused(&server, "invalid").await == 1
    })
    .await;
    assert_eq!(pending(&url).await, 0, "refused entries are acknowledged");
    assert!(!cordoned(&emu, "node-0") && response_keys(&url).await.is_empty());

    // The agent's own entry for its own node: acted on.
    xadd(&url, &[("notice", &json(&interruption(&i0, soon()))), ("token", &agent0)]).await;
    until("node-0 cordoned", Duration::from_secs(10), async || cordoned(&emu, "node-0")).await;
    assert_eq!(response_keys(&url).await.len(), 1);
    until("all acknowledged", Duration::from_secs(5), async || pending(&url).await == 0).await;
    server.stop.send(true).unwrap();
}
