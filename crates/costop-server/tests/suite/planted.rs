//! A plan planted in Redis (with its open entry, as an attacker with Redis
//! access would) is refused when a leader resumes, never run; plans the
//! server writes itself carry a valid HMAC and run. A server on Redis
//! without a plan key does not start unless told to run unsigned plans.
//! Real redis-server.

use crate::common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_plan_is_refused_and_logged_never_run() {
    let (emu, _dir) = start_emu("planted").await;
    let redis = redis();
    let mut c = redis_conn(&redis.url()).await;
    // node-1: a plan with a made-up MAC; node-2: one with none at all.
    for (node, mac) in [("node-1", Some("00".repeat(32))), ("node-2", None)] {
        let planted = interruption(&instance_of(&emu, node), now_ms() + 60_000);
        let plan = costop_core::Plan {
            notice: planted.key(),
            node: node.into(),
            deadline: Some(now_ms() + 60_000),
            steps: vec![costop_core::Step::TaintAndCordon { node: node.into() }],
            unevictable: vec![],
        };
        let mut hset = redis::cmd("HSET");
        hset.arg(costop_store::response_key(&planted.key()))
            .arg("plan")
            .arg(serde_json::to_string(&plan).unwrap());
        if let Some(mac) = mac {
            hset.arg("plan_mac").arg(mac);
        }
        let _: i64 = hset.query_async(&mut c).await.unwrap();
        let _: i64 = redis::cmd("SADD")
            .arg("costop:responses:open")
            .arg(planted.key().to_string())
            .query_async(&mut c)
            .await
            .unwrap();
    }

    let server = start_server(&emu, Some(redis.url()), "planted").await;
    server.wait_leading().await;
    until("both planted plans refused", Duration::from_secs(10), async || {
        server.metrics().await.contains("costop_plans_refused_total 2")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!cordoned(&emu, "node-1"), "the planted plan with a made-up MAC did not run");
    assert!(!cordoned(&emu, "node-2"), "the planted plan without a MAC did not run");

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
    assert!(!cordoned(&emu, "node-1") && !cordoned(&emu, "node-2"));
    server.stop.send(true).unwrap();
}

/// With Redis, no plan key means a planted plan would run: the server
/// refuses to start, saying why and how to opt out; a key too short to be
/// a secret is refused too; the explicit opt-out starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_store_without_a_plan_key_refuses_to_start() {
    let (emu, _dir) = start_emu("no-plan-key").await;
    let redis = redis();
    let mut config = server_config(&emu, Some(redis.url()), "no-key");
    config.plan_key = None;
    let started = start_configured(config.clone()).await;
    let err = tokio::time::timeout(Duration::from_secs(5), started.task)
        .await
        .expect("the server ends at once")
        .unwrap()
        .expect_err("no plan key with Redis");
    let err = err.to_string();
    assert!(err.contains("COSTOP_PLAN_KEY") && err.contains("--allow-unsigned-plans"), "{err}");

    config.plan_key = Some("short".into());
    config.listen = free_addr();
    let started = start_configured(config.clone()).await;
    let err = tokio::time::timeout(Duration::from_secs(5), started.task).await.unwrap().unwrap().unwrap_err();
    assert!(err.to_string().contains("at least 16"), "{err}");

    // In memory there is nothing to plant into: no key needed.
    let mut memory = server_config(&emu, None, "memory");
    memory.plan_key = None;
    let server = start_configured(memory).await;
    assert!(!server.task.is_finished(), "the in-memory server runs without a key");
    server.stop.send(true).unwrap();
    let _ = server.task.await;

    config.plan_key = None;
    config.allow_unsigned_plans = true;
    config.listen = free_addr();
    let server = start_configured(config).await;
    server.wait_leading().await;
    server.stop.send(true).unwrap();
    server.task.await.unwrap().expect("the opted-out server ran and stopped cleanly");
}
