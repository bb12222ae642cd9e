//! Intake: one response per (instance, kind), times checked; against a
//! real redis-server, the emulated cluster and the real server.

use crate::common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_response_per_instance_and_kind_whatever_time_is_stated() {
    let (emu, _dir) = start_emu("intake-dedupe").await;
    let redis = redis();
    let server = start_server(&emu, Some(redis.url()), "intake").await;
    server.wait_leading().await;
    let token = agent_token(&emu, "node-0");
    let instance = instance_of(&emu, "node-0");

    // 300 rebalance recommendations from one node, each stating another time.
    let base = now_ms() - 3_600_000;
    let (mut accepted, mut duplicates) = (0, 0);
    for i in 0..300u64 {
        let (code, body) = server.post(&rebalance(&instance, base + i * 1_000), &token).await;
        match code {
            202 => accepted += 1,
            200 => duplicates += 1,
            _ => panic!("notice {i}: {code} {body}"),
        }
    }
    assert_eq!((accepted, duplicates), (1, 299));
    assert_eq!(response_keys(&redis.url()).await.len(), 1, "one response");

    // An interruption is another kind: one response of its own, and only one.
    let first = now_ms() + 60_000;
    let (code, body) = server.post(&interruption(&instance, first), &token).await;
    assert_eq!(code, 202, "{body}");
    for i in 1..20 {
        let (code, body) = server.post(&interruption(&instance, first + i * 1_000), &token).await;
        assert_eq!((code, body.contains("duplicate")), (200, true), "{body}");
    }
    assert_eq!(response_keys(&redis.url()).await.len(), 2);

    // An interruption that took effect six days ago, or three minutes ago
    // (longer than the two-minute notice): refused, saying why.
    let token1 = agent_token(&emu, "node-1");
    let instance1 = instance_of(&emu, "node-1");
    for ago in [6 * 24 * 3_600_000, 180_000] {
        let (code, body) = server.post(&interruption(&instance1, now_ms() - ago), &token1).await;
        assert_eq!(code, 422, "{body}");
        assert!(body.contains("longer ago than its 120 s notice lasts"), "{body}");
    }
    // ... or one an hour ahead (a notice is given two minutes ahead), or a
    // recommendation a month old.
    let (code, body) = server.post(&interruption(&instance1, now_ms() + 3_600_000), &token1).await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("s ahead; an interruption notice is given 120 s ahead; refused"), "{body}");
    let (code, body) = server.post(&rebalance(&instance1, now_ms() - 30 * 24 * 3_600_000), &token1).await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("ago, more than a week from now; refused"), "{body}");
    // ... and a refused time does not hold the instance's one response.
    let (code, body) = server.post(&interruption(&instance1, now_ms() + 60_000), &token1).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(response_keys(&redis.url()).await.len(), 3);
    until("node-1 cordoned", Duration::from_secs(10), async || cordoned(&emu, "node-1")).await;
    let metrics = server.metrics().await;
    assert!(metrics.contains("costop_notice_duplicates_total 318"), "{metrics}");
    server.stop.send(true).unwrap();
}

/// Redis answers the plan save after 3 s (the server gives up after 2 s and
/// asks the agent to retry, but the plan and its open entry are written):
/// the retry finds the open response that runs nowhere and starts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_save_answered_late_still_gives_one_response_that_runs() {
    let (emu, _dir) = start_emu("intake-slow-save").await;
    let redis = redis();
    let upstream: std::net::SocketAddr = format!("127.0.0.1:{}", redis.port).parse().unwrap();
    let proxy = DelayProxy::start(upstream, b"'HSETNX', KEYS[1], 'plan'", Duration::from_secs(3)).await;
    let server = start_server(&emu, Some(proxy.url()), "slow-save").await;
    server.wait_leading().await;
    let token = agent_token(&emu, "node-0");
    let notice = interruption(&instance_of(&emu, "node-0"), now_ms() + 60_000);

    // The agent's first attempt: the save's answer is late.
    let (code, body) = server.post(&notice, &token).await;
    assert!(proxy.fired.load(std::sync::atomic::Ordering::SeqCst), "the save went through the proxy");
    assert_eq!(code, 503, "{body}");
    // The plan and its open entry are in Redis all the same.
    assert_eq!(response_keys(&redis.url()).await.len(), 1);
    // The agent retries until the server takes it.
    let mut answers = vec![];
    loop {
        let (code, body) = server.post(&notice, &token).await;
        answers.push(code);
        if code / 100 == 2 {
            assert!(body.contains("duplicate"), "{body}");
            break;
        }
        assert_eq!(code, 503, "{body}");
        assert!(answers.len() < 20, "{answers:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    until("node-0 cordoned", Duration::from_secs(10), async || cordoned(&emu, "node-0")).await;
    let store = costop_store::RedisStore::connect(&redis.url()).await.unwrap();
    until("the response finished", Duration::from_secs(30), async || {
        use costop_core::ports::StorePort;
        store.unfinished().await.unwrap().is_empty()
    })
    .await;
    assert_eq!(response_keys(&redis.url()).await.len(), 1, "exactly one response");
    let record = {
        use costop_core::ports::StorePort;
        store.response(&notice.key()).await.unwrap().unwrap()
    };
    assert!(record.done_at.is_some());
    // Each step ran once: started and done recorded, none failed.
    for (step, rec) in record.plan.steps.iter().zip(&record.steps) {
        assert!(rec.done_at.is_some(), "{step:?}");
    }
    server.stop.send(true).unwrap();
}
