//! A plan planted in Redis (with its open entry, as an attacker with Redis
//! access would) is refused when a leader resumes, never run; plans the
//! server writes itself carry a valid HMAC and run. Real redis-server.

mod common;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_plan_is_refused_and_logged_never_run() {
    std::env::set_var("COSTOP_PLAN_KEY", "plan key from a Secret");
    let (emu, _dir) = start_emu("planted").await;
    let redis = redis();
    let i1 = instance_of(&emu, "node-1");
    let planted = interruption(&i1, now_ms() + 60_000);
    let plan = costop_core::Plan {
        notice: planted.key(),
        node: "node-1".into(),
        deadline: Some(now_ms() + 60_000),
        steps: vec![costop_core::Step::TaintAndCordon { node: "node-1".into() }],
        unevictable: vec![],
    };
    let mut c = redis_conn(&redis.url()).await;
    let _: i64 = redis::cmd("HSET")
        .arg(costop_store::response_key(&planted.key()))
        .arg("plan")
        .arg(serde_json::to_string(&plan).unwrap())
        .arg("plan_mac")
        .arg("00".repeat(32))
        .query_async(&mut c)
        .await
        .unwrap();
    let _: i64 = redis::cmd("SADD")
        .arg("costop:responses:open")
        .arg(planted.key().to_string())
        .query_async(&mut c)
        .await
        .unwrap();

    let server = start_server(&emu, Some(redis.url()), "planted").await;
    server.wait_leading().await;
    until("the planted plan refused", Duration::from_secs(10), async || {
        server.metrics().await.contains("costop_plans_refused_total 1")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!cordoned(&emu, "node-1"), "the planted plan did not run");

    // The server's own plans carry a valid MAC and run.
    let token = agent_token(&emu, "node-0");
    let (code, body) =
        server.post(&interruption(&instance_of(&emu, "node-0"), now_ms() + 60_000), &token).await;
    assert_eq!(code, 202, "{body}");
    until("node-0 cordoned", Duration::from_secs(10), async || cordoned(&emu, "node-0")).await;
    let key = response_keys(&redis.url())
        .await
        .into_iter()
        .find(|k| k.contains(&instance_of(&emu, "node-0")))
        .unwrap();
    let mac: Option<String> = redis::cmd("HGET").arg(&key).arg("plan_mac").query_async(&mut c).await.unwrap();
    assert_eq!(mac.map(|m| m.len()), Some(64), "HMAC-SHA256, hex");
    assert!(!cordoned(&emu, "node-1"));
    server.stop.send(true).unwrap();
}
