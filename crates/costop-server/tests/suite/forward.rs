//! A follower forwards agents' notices to the URL the leader publishes in
//! the Lease. A leader that publishes none (it listens on all addresses and
//! was given no `--advertise-url`) gets nothing forwarded: its followers
//! answer 503 saying so, and count it. After a hand-over to a leader that
//! publishes one, a new follower forwards the notice there.

use crate::common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_a_published_url_gets_nothing_forwarded_and_the_follower_says_why() {
    let (emu, _dir) = start_emu("forward-no-url").await;
    let redis = redis();
    let mut config = server_config(&emu, Some(redis.url()), "all-addresses");
    let port = config.listen.port();
    config.listen = format!("0.0.0.0:{port}").parse().unwrap();
    let a = start_configured(config).await;
    a.wait_leading().await;
    let b = start_server(&emu, Some(redis.url()), "follower").await;
    until("b follows", Duration::from_secs(20), async || b.role().await == "follower").await;
    let token = agent_token(&emu, "node-0");
    let notice = interruption(&instance_of(&emu, "node-0"), now_ms() + 60_000);
    let (code, body) = b.post(&notice, &token).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("the leader all-addresses publishes no URL (--advertise-url)"), "{body}");
    assert!(b.metrics().await.contains("costop_notices_forwarded_total{outcome=\"failed\"} 1"));
    assert!(!cordoned(&emu, "node-0"));

    // The leader hands over to one that publishes its URL; a third replica
    // follows it and forwards.
    a.stop.send(true).unwrap();
    a.task.await.unwrap().unwrap();
    b.wait_leading().await;
    let c = start_server(&emu, Some(redis.url()), "third").await;
    until("c follows", Duration::from_secs(20), async || c.role().await == "follower").await;
    let (code, body) = c.post(&notice, &token).await;
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("\"forwarded_to\":\"follower\""), "{body}");
    until("node-0 cordoned", Duration::from_secs(10), async || cordoned(&emu, "node-0")).await;
    b.stop.send(true).unwrap();
    c.stop.send(true).unwrap();
}
