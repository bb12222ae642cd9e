//! The same behaviour from both stores: in memory and in a real redis-server.

use costop_core::notice::InstanceAction;
use costop_core::ports::StorePort;
use costop_core::{Notice, NoticeKind, NoticeSource, Plan, Step};
use costop_store::redis_server::RedisServer;
use costop_store::{MemoryStore, RedisStore};

fn notice(instance: &str, at: u64) -> Notice {
    Notice {
        instance_id: instance.into(),
        kind: NoticeKind::SpotInterruption { action: InstanceAction::Terminate, effective_at: at },
        received_at: at.saturating_sub(120_000),
        source: NoticeSource::Agent,
    }
}

async fn contract<S: StorePort>(store: &S) {
    // Notices: recorded once, duplicates recognised.
    let n = notice("i-0aaa", 1_000_000);
    assert!(store.record_notice(&n).await.unwrap());
    assert!(!store.record_notice(&n).await.unwrap());
    let mut via_server = n.clone();
    via_server.source = NoticeSource::Queue;
    via_server.received_at += 5;
    assert!(!store.record_notice(&via_server).await.unwrap(), "same notice by another path is a duplicate");
    assert!(store.record_notice(&notice("i-0bbb", 1_000_000)).await.unwrap());

    // Stream: published, read once, acknowledged.
    store.publish_notice(&n).await.unwrap();
    store.publish_notice(&notice("i-0ccc", 2_000_000)).await.unwrap();
    let read = store.read_notices("server-a", 100).await.unwrap();
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].1.as_ref().unwrap(), &n);
    for (id, _) in &read {
        store.ack_notice(id).await.unwrap();
    }
    assert!(store.read_notices("server-a", 50).await.unwrap().is_empty());

    // Responses: plan saved once, steps recorded, unfinished listed until done.
    let plan = Plan {
        notice: n.key(),
        node: "node-1".into(),
        deadline: Some(1_000_000),
        steps: vec![
            Step::TaintAndCordon { node: "node-1".into() },
            Step::DeregisterTargets { node: "node-1".into() },
        ],
        unevictable: vec![],
    };
    assert!(store.save_plan(&plan).await.unwrap());
    let mut other = plan.clone();
    other.steps.clear();
    assert!(!store.save_plan(&other).await.unwrap());
    assert_eq!(store.response(&n.key()).await.unwrap().unwrap().plan, plan, "the first plan stays");
    store.step_started(&n.key(), 0, 10).await.unwrap();
    store.step_done(&n.key(), 0, 12, "ok").await.unwrap();
    store.step_started(&n.key(), 1, 13).await.unwrap();
    let r = store.response(&n.key()).await.unwrap().unwrap();
    assert_eq!(
        (r.steps[0].started_at, r.steps[0].done_at, r.steps[0].outcome.as_deref()),
        (Some(10), Some(12), Some("ok"))
    );
    assert_eq!((r.steps[1].started_at, r.steps[1].done_at), (Some(13), None));
    assert_eq!(store.unfinished().await.unwrap(), vec![n.key()]);
    store.response_done(&n.key(), 20).await.unwrap();
    assert!(store.unfinished().await.unwrap().is_empty());
    assert_eq!(store.response(&n.key()).await.unwrap().unwrap().done_at, Some(20));
    assert!(store.response(&notice("i-0zzz", 1).key()).await.unwrap().is_none());

    store.mirror("nodes", &[("node-1".into(), "{}".into())]).await.unwrap();
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(&MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_keeps_the_contract() {
    let server = RedisServer::start().expect("redis-server");
    let store = RedisStore::connect(&server.url()).await.unwrap();
    contract(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_redelivers_unacknowledged_entries_and_survives_an_outage() {
    let mut server = RedisServer::start().expect("redis-server");
    let store = RedisStore::connect(&server.url()).await.unwrap();
    store.publish_notice(&notice("i-0aaa", 1_000_000)).await.unwrap();
    assert_eq!(store.read_notices("server-a", 50).await.unwrap().len(), 1);
    // Not acknowledged (the reader died): another consumer takes it over once it is stale.
    let again = RedisStore::connect(&server.url()).await.unwrap();
    assert!(again.read_notices("server-b", 50).await.unwrap().is_empty(), "not stale yet");
    tokio::time::sleep(std::time::Duration::from_millis(costop_store::redis_store::CLAIM_IDLE_MS + 200))
        .await;
    let pending = again.read_notices("server-b", 50).await.unwrap();
    assert_eq!(pending.len(), 1, "unacknowledged entries are taken over");

    // Redis down: a clear error, not a hang; back up: works again.
    server.stop();
    let started = std::time::Instant::now();
    let err = store.record_notice(&notice("i-0bbb", 5)).await.unwrap_err();
    assert!(err.to_string().starts_with("redis "), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    server.restart().unwrap();
    let mut ok = false;
    for _ in 0..50 {
        if store.record_notice(&notice("i-0bbb", 5)).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "the store reconnects after Redis comes back");

    // Junk in the stream is reported, not fatal.
    let raw = redis::Client::open(server.url()).unwrap();
    let mut c = raw.get_multiplexed_async_connection().await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg("costop:notices")
        .arg("*")
        .arg("notice")
        .arg("{junk")
        .query_async(&mut c)
        .await
        .unwrap();
    let fresh = RedisStore::connect(&server.url()).await.unwrap();
    let entries = fresh.read_notices("server-b", 50).await.unwrap();
    assert!(
        entries.iter().any(|(_, n)| n.as_ref().is_err_and(|e| e.contains("stream entry"))),
        "{entries:?}"
    );
}

/// One response per (instance, kind): whatever time a notice states, the
/// first claim holds it; a failed claimer's claim can be taken over, only
/// from that holder; a released claim is free again.
async fn claims(store: &costop_store::AnyStore) {
    use costop_store::Claim;
    let first = notice("i-0aaa", 1_000_000).key();
    assert_eq!(store.claim(&first, None).await.unwrap(), Claim::Claimed);
    for t in 1..300 {
        let again = notice("i-0aaa", 1_000_000 + t).key();
        assert_eq!(store.claim(&again, None).await.unwrap(), Claim::Held(first.clone()));
    }
    let mut rebalance = first.clone();
    rebalance.kind = "rebalance-recommendation".into();
    assert_eq!(store.claim(&rebalance, None).await.unwrap(), Claim::Claimed, "another kind");
    let mut any_time = first.clone();
    any_time.stated_time = 0;
    assert_eq!(
        store.claim_holder(&any_time).await.unwrap(),
        Some(first.clone()),
        "the holder, whatever the time"
    );
    assert_eq!(store.claim_holder(&notice("i-0none", 1).key()).await.unwrap(), None);
    assert_eq!(store.claim(&notice("i-0bbb", 5).key(), None).await.unwrap(), Claim::Claimed);
    // Taking over: only from the holder named.
    let later = notice("i-0aaa", 2_000_000).key();
    let stranger = notice("i-0aaa", 3_000_000).key();
    assert_eq!(store.claim(&later, Some(&stranger)).await.unwrap(), Claim::Held(first.clone()));
    assert_eq!(store.claim(&later, Some(&first)).await.unwrap(), Claim::Claimed);
    store.release_claim(&first).await.unwrap();
    assert_eq!(
        store.claim(&stranger, None).await.unwrap(),
        Claim::Held(later.clone()),
        "not first's to release"
    );
    store.release_claim(&later).await.unwrap();
    assert_eq!(store.claim(&stranger, None).await.unwrap(), Claim::Claimed);
}

#[tokio::test]
async fn memory_store_keeps_one_claim_per_instance_and_kind() {
    claims(&costop_store::AnyStore::Memory(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_keeps_one_claim_per_instance_and_kind() {
    let server = RedisServer::start().expect("redis-server");
    let store = costop_store::AnyStore::open(Some(&server.url())).await.unwrap();
    claims(&store).await;
    // The claim expires (a day) and names its holder.
    let raw = redis::Client::open(server.url()).unwrap();
    let mut c = raw.get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 =
        redis::cmd("PTTL").arg("costop:claim:i-0bbb:spot-interruption").query_async(&mut c).await.unwrap();
    assert!(ttl > 0 && ttl as u64 <= costop_store::CLAIM_TTL_MS, "{ttl}");
}

/// A plan for `instance`'s notice at `at`, of one step.
fn plan_of(instance: &str, at: u64) -> Plan {
    Plan {
        notice: notice(instance, at).key(),
        node: format!("node-{instance}"),
        deadline: Some(at),
        steps: vec![Step::TaintAndCordon { node: format!("node-{instance}") }],
        unevictable: vec![],
    }
}

/// The responses saved last are listed newest first, finished or not, up
/// to the limit; a plan saved again does not move.
async fn recent(store: &costop_store::AnyStore) {
    assert!(store.recent(10).await.unwrap().is_empty());
    let plans: Vec<Plan> = ["i-01", "i-02", "i-03"].iter().map(|i| plan_of(i, 1_000_000)).collect();
    for p in &plans {
        assert!(store.save_plan(p).await.unwrap());
        // Redis orders by the saving time in ms.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    store.response_done(&plans[0].notice, 7).await.unwrap();
    assert!(!store.save_plan(&plans[0]).await.unwrap());
    let keys = |ps: &[&Plan]| ps.iter().map(|p| p.notice.clone()).collect::<Vec<_>>();
    assert_eq!(store.recent(10).await.unwrap(), keys(&[&plans[2], &plans[1], &plans[0]]));
    assert_eq!(store.recent(2).await.unwrap(), keys(&[&plans[2], &plans[1]]));
    assert!(store.recent(0).await.unwrap().is_empty());
    assert_eq!(store.unfinished().await.unwrap(), keys(&[&plans[1], &plans[2]]), "listing changes nothing");
}

#[tokio::test]
async fn memory_store_lists_recent_responses() {
    recent(&costop_store::AnyStore::Memory(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_lists_recent_responses_and_keeps_the_latest_only() {
    use costop_store::redis_store::{RECENT, RECENT_KEPT};
    let server = RedisServer::start().expect("redis-server");
    let store = costop_store::AnyStore::open(Some(&server.url())).await.unwrap();
    recent(&store).await;
    // Beyond RECENT_KEPT the oldest go from the list (their records stay).
    for i in 0..RECENT_KEPT {
        assert!(store.save_plan(&plan_of(&format!("i-1{i:04}"), 2_000_000)).await.unwrap());
    }
    let raw = redis::Client::open(server.url()).unwrap();
    let mut c = raw.get_multiplexed_async_connection().await.unwrap();
    let kept: usize = redis::cmd("ZCARD").arg(RECENT).query_async(&mut c).await.unwrap();
    assert_eq!(kept, RECENT_KEPT);
    let listed = store.recent(RECENT_KEPT + 10).await.unwrap();
    assert_eq!(listed.len(), RECENT_KEPT);
    assert!(!listed.contains(&plan_of("i-01", 1_000_000).notice), "the oldest left the list");
    assert!(store.response(&plan_of("i-01", 1_000_000).notice).await.unwrap().is_some());
}

/// A mirror written a batch at a time replaces the whole mirror (what the
/// old one had and the new one lacks is gone); one written from no
/// entries is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_replaces_a_mirror_written_in_batches() {
    let server = RedisServer::start().expect("redis-server");
    let store = costop_store::AnyStore::open(Some(&server.url())).await.unwrap();
    let entries = |range: std::ops::Range<u32>| -> Vec<(String, String)> {
        range.map(|i| (format!("pod-{i}"), format!("{{\"n\":{i}}}"))).collect()
    };
    store.mirror("pods", &entries(0..10)).await.unwrap();
    let mut batches = vec![entries(100..600), entries(600..1100), entries(1100..1150)].into_iter();
    store.mirror_in_batches("pods", || batches.next().unwrap_or_default()).await.unwrap();
    let raw = redis::Client::open(server.url()).unwrap();
    let mut c = raw.get_multiplexed_async_connection().await.unwrap();
    let all: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg("costop:mirror:pods").query_async(&mut c).await.unwrap();
    assert_eq!(all.len(), 1_050);
    assert_eq!(all["pod-1149"], "{\"n\":1149}");
    assert!(!all.contains_key("pod-0"), "the old mirror's entries are gone");
    store.mirror_in_batches("pods", Vec::new).await.unwrap();
    let left: i64 = redis::cmd("HLEN").arg("costop:mirror:pods").query_async(&mut c).await.unwrap();
    assert_eq!(left, 0);
}
