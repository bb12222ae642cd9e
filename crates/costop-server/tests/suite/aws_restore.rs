//! RestoreCapacity is idempotent per step key (moto_server as AWS): a
//! resumed or repeated step launches no instant fleet twice (ClientToken,
//! instances tagged with the step's token) and sets a group's desired
//! capacity to the same absolute target instead of adding again.

use aws_sdk_ec2::types as ec2t;
use costop_aws::moto::MotoServer;
use costop_aws::{AwsCloud, AwsSettings};
use costop_core::ports::CloudPort;
use costop_core::PoolId;

async fn restored(ec2: &aws_sdk_ec2::Client, token: &str) -> Vec<String> {
    let d = ec2
        .describe_instances()
        .filters(
            ec2t::Filter::builder().name(format!("tag:{}", costop_aws::RESTORE_TAG)).values(token).build(),
        )
        .send()
        .await
        .unwrap();
    d.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_or_resumed_restore_launches_nothing_twice() {
    crate::common::moto_credentials();
    let moto = MotoServer::start().expect("moto_server (scripts/test installs it)");
    let sdk = moto.sdk_config().await;
    let probe = AwsCloud::new(&sdk, AwsSettings::default());
    let spot = costop_aws::moto::run_instance(&probe.ec2, "us-east-1a", "m5.xlarge").await.unwrap();
    let template = probe.clone_launch_template(&spot, "costop-fleet").await.unwrap();
    costop_aws::moto::create_group(&probe.asg, "pool-b", &template, "us-east-1b", 2).await.unwrap();
    let pool_b = PoolId::new("m5.xlarge", "us-east-1b");
    let pool_c = PoolId::new("m6i.xlarge", "us-east-1c");
    let settings = AwsSettings {
        asg_by_pool: [(pool_b.clone(), "pool-b".to_string())].into_iter().collect(),
        launch_template_id: Some(template),
        ..Default::default()
    };
    let key = "restore:i-0abc:spot-interruption:1795686863871";
    let token = costop_aws::restore_token(key);
    assert!(token.len() <= 64 && token.is_ascii(), "a valid ClientToken: {token}");
    assert_eq!(token, costop_aws::restore_token(key), "stable");
    assert_ne!(token, costop_aws::restore_token("restore:other"));
    let pools = [(pool_b.clone(), 1), (pool_c.clone(), 2)];
    let desired = async || {
        let g =
            probe.asg.describe_auto_scaling_groups().auto_scaling_group_names("pool-b").send().await.unwrap();
        g.auto_scaling_groups()[0].desired_capacity().unwrap()
    };

    let cloud = AwsCloud::new(&sdk, settings.clone());
    let first = cloud.restore_capacity(key, &pools).await.unwrap();
    assert!(first.contains("pool-b desired 3") && first.contains("fleet i-"), "{first}");
    assert_eq!(
        restored(&probe.ec2, &token).await.len(),
        2,
        "the fleet's two instances carry the step's token"
    );
    assert_eq!(desired().await, 3);

    // The same step again (a retry in this process): nothing added.
    let again = cloud.restore_capacity(key, &pools).await.unwrap();
    assert!(again.contains("already raised") && again.contains("already launched"), "{again}");
    assert_eq!(restored(&probe.ec2, &token).await.len(), 2);
    assert_eq!(desired().await, 3);

    // Resumed by another server process: the fleet is not launched again.
    let resumed = AwsCloud::new(&sdk, AwsSettings { asg_by_pool: Default::default(), ..settings.clone() });
    let out = resumed.restore_capacity(key, &[(pool_c.clone(), 2)]).await.unwrap();
    assert!(out.contains("already launched"), "{out}");
    assert_eq!(restored(&probe.ec2, &token).await.len(), 2, "no second fleet");

    // The server keeps the targets in its store: another process (another
    // connection to the same Redis) resuming the step raises nothing.
    let redis = costop_store::redis_server::RedisServer::start().expect("redis-server");
    let ledger = async || {
        let store = costop_store::AnyStore::open(Some(&redis.url())).await.unwrap();
        std::sync::Arc::new(costop_server::cloud::StoreLedger(std::sync::Arc::new(store)))
    };
    let key2 = "restore:i-0bbb:spot-interruption:1795686863999";
    let one = AwsCloud::new(&sdk, settings.clone()).with_ledger(ledger().await);
    let out = one.restore_capacity(key2, &[(pool_b.clone(), 1)]).await.unwrap();
    assert_eq!(out, "pool-b desired 4");
    let two = AwsCloud::new(&sdk, settings.clone()).with_ledger(ledger().await);
    let out = two.restore_capacity(key2, &[(pool_b.clone(), 1)]).await.unwrap();
    assert!(out.contains("already raised"), "{out}");
    assert_eq!(desired().await, 4, "a resumed step does not add again");
    // Lowered meanwhile (a node retired): the step's target is set again, absolutely.
    probe
        .asg
        .set_desired_capacity()
        .auto_scaling_group_name("pool-b")
        .desired_capacity(2)
        .send()
        .await
        .unwrap();
    let out = two.restore_capacity(key2, &[(pool_b.clone(), 1)]).await.unwrap();
    assert!(out.contains("desired 4 (again"), "{out}");
    assert_eq!(desired().await, 4);

    // Another step's key launches its own.
    let other = cloud.restore_capacity("restore:i-0def", &[(pool_c, 1)]).await.unwrap();
    assert!(other.contains("fleet i-") && !other.contains("already"), "{other}");
    assert_eq!(restored(&probe.ec2, &costop_aws::restore_token("restore:i-0def")).await.len(), 1);
}
