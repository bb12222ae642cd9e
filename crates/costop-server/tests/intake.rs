//! Intake: one response per (instance, kind), times checked; against a
//! real redis-server, the emulated cluster and the real server.

mod common;
use common::*;
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
    // ... and a refused time does not hold the instance's one response.
    let (code, body) = server.post(&interruption(&instance1, now_ms() + 60_000), &token1).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(response_keys(&redis.url()).await.len(), 3);
    until("node-1 cordoned", Duration::from_secs(10), async || cordoned(&emu, "node-1")).await;
    let metrics = server.metrics().await;
    assert!(metrics.contains("costop_notice_duplicates_total 318"), "{metrics}");
    server.stop.send(true).unwrap();
}
