//! Redis as a database, not an authority: plans carry an HMAC and a planted
//! or altered plan is refused; ACL users (the agent may only add to the
//! notice stream); a real redis-server each time.

use costop_core::notice::InstanceAction;
use costop_core::ports::StorePort;
use costop_core::{Notice, NoticeKind, NoticeSource, Plan, Step};
use costop_store::redis_server::RedisServer;
use costop_store::{RedisStore, StoreError};

fn notice(instance: &str) -> Notice {
    Notice {
        instance_id: instance.into(),
        kind: NoticeKind::SpotInterruption { action: InstanceAction::Terminate, effective_at: 1_000_000 },
        received_at: 880_000,
        source: NoticeSource::Agent,
    }
}

fn plan(n: &Notice) -> Plan {
    Plan {
        notice: n.key(),
        node: "node-1".into(),
        deadline: Some(1_000_000),
        steps: vec![Step::TaintAndCordon { node: "node-1".into() }],
        unevictable: vec![],
    }
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_without_a_valid_mac_are_refused() {
    let server = RedisServer::start().expect("redis-server");
    let key = b"a key from a Secret".as_slice();
    let store = RedisStore::connect(&server.url()).await.unwrap().with_plan_key(Some(key));
    assert!(store.signs_plans());
    let ours = notice("i-0aaa");
    assert!(store.save_plan(&plan(&ours)).await.unwrap());
    assert_eq!(
        store.response(&ours.key()).await.unwrap().unwrap().plan,
        plan(&ours),
        "its own plans read back"
    );

    // Planted by hand: a plan and its open entry, no MAC.
    let planted = notice("i-0bad");
    let mut c = raw(&server.url()).await;
    let body = serde_json::to_string(&plan(&planted)).unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg(costop_store::response_key(&planted.key()))
        .arg("plan")
        .arg(&body)
        .query_async(&mut c)
        .await
        .unwrap();
    let _: i64 = redis::cmd("SADD")
        .arg("costop:responses:open")
        .arg(planted.key().to_string())
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(store.unfinished().await.unwrap().contains(&planted.key()), "listed, to be refused when read");
    let err = store.response(&planted.key()).await.unwrap_err();
    assert!(matches!(err, StoreError::Forged { why: "no MAC", .. }), "{err}");
    assert!(err.to_string().contains("fails its integrity check"), "{err}");

    // A MAC copied from another plan, or a plan altered under its MAC.
    let ours_key = costop_store::response_key(&ours.key());
    let mac: String = redis::cmd("HGET").arg(&ours_key).arg("plan_mac").query_async(&mut c).await.unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg(costop_store::response_key(&planted.key()))
        .arg("plan_mac")
        .arg(&mac)
        .query_async(&mut c)
        .await
        .unwrap();
    let err = store.response(&planted.key()).await.unwrap_err();
    assert!(matches!(err, StoreError::Forged { why: "a wrong MAC", .. }), "{err}");
    let mut altered = plan(&ours);
    altered.steps.push(Step::TaintAndCordon { node: "node-2".into() });
    let _: i64 = redis::cmd("HSET")
        .arg(&ours_key)
        .arg("plan")
        .arg(serde_json::to_string(&altered).unwrap())
        .query_async(&mut c)
        .await
        .unwrap();
    let err = store.response(&ours.key()).await.unwrap_err();
    assert!(matches!(err, StoreError::Forged { why: "a wrong MAC", .. }), "{err}");

    // Another key cannot read them either.
    let other = RedisStore::connect(&server.url()).await.unwrap().with_plan_key(Some(b"another key"));
    let mine = notice("i-0ccc");
    assert!(store.save_plan(&plan(&mine)).await.unwrap());
    assert!(other.response(&mine.key()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_users_the_agent_may_only_add_notices() {
    let server = RedisServer::start_with(&[
        "--user",
        "default",
        "off",
        "--user",
        "costop-agent",
        "on",
        ">agent-secret",
        "~costop:notices",
        "+xadd",
        "+ping",
        "--user",
        "costop-server",
        "on",
        ">server-secret",
        "~costop:*",
        "+@all",
    ])
    .expect("redis-server");
    let port = server.port;
    let agent =
        RedisStore::connect(&format!("redis://costop-agent:agent-secret@127.0.0.1:{port}/")).await.unwrap();
    agent.publish_signed(&notice("i-0aaa"), Some("token")).await.unwrap();
    let err = agent.save_plan(&plan(&notice("i-0aaa"))).await.unwrap_err();
    assert!(err.to_string().contains("NOPERM"), "{err}");
    assert!(agent.read_notices("agent", 10).await.is_err(), "the agent cannot read the stream");
    assert!(agent.response(&notice("i-0aaa").key()).await.is_err(), "nor responses");

    let server_store =
        RedisStore::connect(&format!("redis://costop-server:server-secret@127.0.0.1:{port}/")).await.unwrap();
    let entries = server_store.read_signed("server", 100).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].token.as_deref(), Some("token"));
    assert!(server_store.save_plan(&plan(&notice("i-0aaa"))).await.unwrap());

    // No password, a wrong one: refused.
    let anonymous = async {
        let store = RedisStore::connect(&format!("redis://127.0.0.1:{port}/")).await?;
        store.publish_notice(&notice("i-0bbb")).await
    };
    assert!(anonymous.await.is_err());
    assert!(RedisStore::connect(&format!("redis://costop-agent:wrong@127.0.0.1:{port}/")).await.is_err());
}
