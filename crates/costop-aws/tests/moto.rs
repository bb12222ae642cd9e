//! Every cloud action against moto_server (a third-party AWS emulator).

use aws_sdk_ec2::types as ec2t;
use aws_sdk_elasticloadbalancingv2::types as elbt;
use costop_aws::credits::BalanceSource;
use costop_aws::moto::MotoServer;
use costop_aws::queue::QueueConsumer;
use costop_aws::{
    AwsCloud, AwsSettings, Bridge, CLUSTER_TAG_VALUE, EBS_CSI_TAG, MANAGED_TAG, MANAGED_VALUE, RESTORE_TAG,
    STANDBY_TAG,
};
use costop_core::ports::{CloudPort, StandbyStage, WarmPoolPort};
use costop_core::PoolId;
use costop_facts::catalog::CreditMode;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

async fn cloud(settings: AwsSettings) -> (MotoServer, AwsCloud) {
    let moto = MotoServer::start().expect("moto_server (scripts/test installs it)");
    let config = moto.sdk_config().await;
    (moto, AwsCloud::new(&config, settings))
}

async fn instance(c: &AwsCloud, zone: &str, itype: &str) -> String {
    costop_aws::moto::run_instance(&c.ec2, zone, itype).await.unwrap()
}

async fn volume(c: &AwsCloud, zone: &str) -> String {
    let out = c.ec2.create_volume().availability_zone(zone).size(20).send().await.unwrap();
    out.volume_id.unwrap()
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_from_a_cloned_template_is_stopped_retyped_and_started() {
    let (_moto, c) = cloud(AwsSettings::default()).await;
    let spot_node = instance(&c, "us-east-1a", "m5.xlarge").await;
    let template = c.clone_launch_template(&spot_node, "costop-standby").await.unwrap();
    // A second clone of the same name becomes a new version of the template.
    assert_eq!(c.clone_launch_template(&spot_node, "costop-standby").await.unwrap(), template);
    let standby = c.launch_standby(&template, "us-east-1a", None, None).await.unwrap();
    c.stop(&standby, soon()).await.unwrap();
    c.retype(&standby, "r5.xlarge").await.unwrap();
    let (state, itype) = c.instance(&standby).await.unwrap();
    assert_eq!((state, itype.as_str()), (ec2t::InstanceStateName::Stopped, "r5.xlarge"));
    // Through the Cloud port, as a response wakes it: re-typed to the lost node's type.
    let node = costop_core::NodeView {
        name: "standby-1".into(),
        instance_id: standby.as_str().into(),
        pool: PoolId::new("r5.xlarge", "us-east-1a"),
        capacity_type: costop_core::CapacityType::StandbyStopped,
        allocatable: Default::default(),
        price_per_hour: 0.0,
        unschedulable: false,
        taints: vec![],
        ready: false,
        in_load_balancer: false,
        fallback: false,
    };
    let done = c.wake_standby(&node, Some("m5.xlarge")).await.unwrap();
    assert!(done.contains("started"), "{done}");
    assert_eq!(
        c.instance(&standby).await.unwrap(),
        (ec2t::InstanceStateName::Running, "m5.xlarge".to_string())
    );
    let err = c.stop("i-0000000000000dead", soon()).await.unwrap_err().to_string();
    assert!(err.starts_with("aws StopInstances i-0000000000000dead"), "{err}");
}

/// Issue 16's acceptance: a burstable standby launched with `unlimited`
/// CPU credits and switched to `standard`. No moto_server keeps a credit
/// specification: every release up to 5.2.5 (the newest on PyPI on
/// 2026-11-27; its `moto/ec2/responses/instances.py`) answers `standard`
/// for every instance and does not implement
/// ModifyInstanceCreditSpecification, so this test fails against it,
/// saying so; it is not made to pass. It is ignored so that the suite can
/// run; `cargo test -p costop-aws --test moto -- --ignored` runs it against
/// a moto that keeps credit options. Until then
/// `the_credit_option_is_sent_at_launch_and_switched_as_ec2_documents`
/// checks the requests the adapter sends and how it reads EC2's answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "moto_server (up to 5.2.5) keeps no CPU credit option and does not implement ModifyInstanceCreditSpecification"]
async fn a_burstable_standby_launched_unlimited_is_switched_to_standard() {
    let (_moto, c) = cloud(AwsSettings::default()).await;
    let spot_node = instance(&c, "us-east-1a", "m5.xlarge").await;
    let template = c.clone_launch_template(&spot_node, "costop-standby").await.unwrap();
    let standby = c
        .launch_burstable_standby(&template, "us-east-1a", None, "t3.large", CreditMode::Unlimited)
        .await
        .unwrap();
    assert_eq!(c.instance(&standby).await.unwrap().1, "t3.large");
    let launched = c.credit_mode(&standby).await.unwrap();
    assert_eq!(
        launched,
        CreditMode::Unlimited,
        "launched with CpuCredits=unlimited, DescribeInstanceCreditSpecifications reads {launched:?} \
         (moto_server keeps no credit specification: it answers standard for every instance)"
    );
    c.set_credit_mode(&standby, CreditMode::Standard)
        .await
        .unwrap_or_else(|e| panic!("switching {standby} to standard: {e}"));
    assert_eq!(c.credit_mode(&standby).await.unwrap(), CreditMode::Standard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_move_within_a_zone_and_across_by_snapshot() {
    let (_moto, c) = cloud(AwsSettings { volume_device: "/dev/xvdf".into(), ..Default::default() }).await;
    let a = instance(&c, "us-east-1a", "m5.xlarge").await;
    let b = instance(&c, "us-east-1a", "m5.xlarge").await;
    let vol = volume(&c, "us-east-1a").await;
    c.attach(&vol, &a, soon()).await.unwrap();
    c.detach(&vol, false, soon()).await.unwrap();
    c.attach(&vol, &b, soon()).await.unwrap();
    let copy = c.copy_to_zone(&vol, "us-east-1b", soon()).await.unwrap();
    let v = c.ec2.describe_volumes().volume_ids(&copy).send().await.unwrap();
    assert_eq!(v.volumes()[0].availability_zone(), Some("us-east-1b"));

    // Through the Cloud port: two volumes move to one node at once, each
    // under its own device name.
    let second = volume(&c, "us-east-1a").await;
    c.attach(&second, &b, soon()).await.unwrap();
    let to = node_view("replacement", &a, "us-east-1a");
    let (one, two) =
        tokio::join!(c.move_volume(&vol, &to, false, false), c.move_volume(&second, &to, false, false));
    assert!(one.unwrap().contains(&format!("{vol} detached and attached to {a}")));
    assert!(two.unwrap().contains("detached and attached"));
    let d = c.ec2.describe_volumes().volume_ids(&vol).volume_ids(&second).send().await.unwrap();
    let mut devices: Vec<_> = d
        .volumes()
        .iter()
        .map(|v| {
            let at = &v.attachments()[0];
            assert_eq!(at.instance_id(), Some(a.as_str()));
            at.device().unwrap().to_string()
        })
        .collect();
    devices.sort();
    assert_eq!(devices, ["/dev/xvdf", "/dev/xvdg"]);
    // Moving again is a no-op; across zones the volume is copied, not attached.
    let again = c.move_volume(&vol, &to, false, false).await.unwrap();
    assert!(again.contains("already attached"), "{again}");
    let far = node_view("far", &instance(&c, "us-east-1b", "m5.xlarge").await, "us-east-1b");
    let copied = c.move_volume(&second, &far, true, true).await.unwrap_err().to_string();
    assert!(
        copied.contains("force-detached, and copied to vol-") && copied.contains("bind a PersistentVolume"),
        "{copied}"
    );
    let copy = copied.split("copied to ").nth(1).and_then(|r| r.split(' ').next()).unwrap();
    let v = c.ec2.describe_volumes().volume_ids(copy).send().await.unwrap();
    assert_eq!(v.volumes()[0].availability_zone(), Some("us-east-1b"));
}

fn node_view(name: &str, instance: &str, zone: &str) -> costop_core::NodeView {
    costop_core::NodeView {
        name: name.into(),
        instance_id: instance.into(),
        pool: PoolId::new("m5.xlarge", zone),
        capacity_type: costop_core::CapacityType::OnDemand,
        allocatable: Default::default(),
        price_per_hour: 0.0,
        unschedulable: false,
        taints: vec![],
        ready: true,
        in_load_balancer: false,
        fallback: false,
    }
}

async fn network(c: &AwsCloud) -> (String, Vec<String>) {
    let vpc = c.ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.unwrap().vpc.unwrap().vpc_id.unwrap();
    let mut subnets = Vec::new();
    for (i, z) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
        let s = c
            .ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.0.{i}.0/24"))
            .availability_zone(*z)
            .send()
            .await
            .unwrap();
        subnets.push(s.subnet.unwrap().subnet_id.unwrap());
    }
    (vpc, subnets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_are_deregistered_and_traffic_shifts_to_the_function_and_back() {
    let (_moto, c) = cloud(AwsSettings::default()).await;
    let (vpc, subnets) = network(&c).await;
    let node = instance(&c, "us-east-1a", "m5.xlarge").await;
    let tg = c
        .elb
        .create_target_group()
        .name("web")
        .protocol(elbt::ProtocolEnum::Http)
        .port(80)
        .vpc_id(&vpc)
        .target_type(elbt::TargetTypeEnum::Instance)
        .send()
        .await
        .unwrap()
        .target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_string();
    c.elb
        .register_targets()
        .target_group_arn(&tg)
        .targets(elbt::TargetDescription::builder().id(&node).build())
        .send()
        .await
        .unwrap();
    assert_eq!(c.target_groups_of(&node).await.unwrap(), vec![tg.clone()]);
    let groups = c.deregister(&node, 120).await.unwrap();
    assert_eq!(groups, vec![tg.clone()]);
    assert!(c.target_groups_of(&node).await.unwrap().is_empty());

    let function_tg = c
        .elb
        .create_target_group()
        .name("web-fn")
        .target_type(elbt::TargetTypeEnum::Lambda)
        .send()
        .await
        .unwrap()
        .target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_string();
    let lb = c.elb.create_load_balancer().name("costop").set_subnets(Some(subnets)).send().await.unwrap();
    let lb_arn = lb.load_balancers()[0].load_balancer_arn().unwrap().to_string();
    let forward = |arn: &str| {
        elbt::Action::builder().r#type(elbt::ActionTypeEnum::Forward).target_group_arn(arn).build()
    };
    let listener = c
        .elb
        .create_listener()
        .load_balancer_arn(&lb_arn)
        .protocol(elbt::ProtocolEnum::Http)
        .port(80)
        .default_actions(forward(&tg))
        .send()
        .await
        .unwrap();
    let listener_arn = listener.listeners()[0].listener_arn().unwrap().to_string();
    let rule = c
        .elb
        .create_rule()
        .listener_arn(&listener_arn)
        .priority(10)
        .conditions(elbt::RuleCondition::builder().field("path-pattern").values("/*").build())
        .actions(forward(&tg))
        .send()
        .await
        .unwrap();
    let rule_arn = rule.rules()[0].rule_arn().unwrap().to_string();
    let bridge = Bridge {
        rule_arn: rule_arn.clone(),
        service_target_group: tg.clone(),
        function_target_group: function_tg.clone(),
        function_weight: 600,
    };
    let weights = |rules: &aws_sdk_elasticloadbalancingv2::operation::describe_rules::DescribeRulesOutput| -> Vec<(String, i32)> {
        rules.rules()[0].actions()[0]
            .forward_config()
            .map(|f| f.target_groups().iter().map(|t| (t.target_group_arn().unwrap_or("").to_string(), t.weight().unwrap_or(0))).collect())
            .unwrap_or_default()
    };
    c.shift(&bridge, true).await.unwrap();
    let rules = c.elb.describe_rules().rule_arns(&rule_arn).send().await.unwrap();
    assert_eq!(weights(&rules), vec![(tg.clone(), 399), (function_tg.clone(), 600)]);
    c.shift(&bridge, false).await.unwrap();
    let rules = c.elb.describe_rules().rule_arns(&rule_arn).send().await.unwrap();
    assert_eq!(weights(&rules), vec![(tg, 999), (function_tg, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_is_restored_by_desired_capacity_or_an_instant_fleet() {
    let (_moto, probe) = cloud(AwsSettings::default()).await;
    let spot_node = instance(&probe, "us-east-1a", "m5.xlarge").await;
    let template = probe.clone_launch_template(&spot_node, "costop-fleet").await.unwrap();
    costop_aws::moto::create_group(&probe.asg, "pool-b", &template, "us-east-1b", 2).await.unwrap();
    let mut asg_by_pool = std::collections::BTreeMap::new();
    asg_by_pool.insert(PoolId::new("m5.xlarge", "us-east-1b"), "pool-b".to_string());
    let c = AwsCloud::new(
        &_moto.sdk_config().await,
        AwsSettings { asg_by_pool, launch_template_id: Some(template), ..Default::default() },
    );
    let done = c
        .restore_capacity(
            "restore:i-1",
            &[(PoolId::new("m5.xlarge", "us-east-1b"), 1), (PoolId::new("m6i.xlarge", "us-east-1c"), 2)],
        )
        .await
        .unwrap();
    assert!(done.contains("pool-b desired 3") && done.contains("fleet"), "{done}");
    let g = c.asg.describe_auto_scaling_groups().auto_scaling_group_names("pool-b").send().await.unwrap();
    assert_eq!(g.auto_scaling_groups()[0].desired_capacity(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_consumer_takes_every_event_kind_and_moves_junk_aside() {
    let (_moto, c) = cloud(AwsSettings::default()).await;
    let queue = c.sqs.create_queue().queue_name("costop-events").send().await.unwrap().queue_url.unwrap();
    let dlq = c.sqs.create_queue().queue_name("costop-events-dead").send().await.unwrap().queue_url.unwrap();
    // Every event fixture of the repository (sources in testdata/README.md).
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/eventbridge");
    let mut bodies: Vec<String> = std::fs::read_dir(&fixtures)
        .unwrap_or_else(|e| panic!("fixtures {}: {e}", fixtures.display()))
        .map(|e| {
            let path = e.unwrap_or_else(|e| panic!("fixtures {}: {e}", fixtures.display())).path();
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
        })
        .collect();
    assert_eq!(bodies.len(), 5, "one fixture per event kind in {}", fixtures.display());
    bodies.push("{not json".into());
    bodies.push(r#"{"detail-type": "Mystery", "source": "aws.ec2", "time": "2026-11-24T08:20:00Z"}"#.into());
    for b in &bodies {
        c.sqs.send_message().queue_url(&queue).message_body(b).send().await.unwrap();
    }
    let consumer = QueueConsumer::new(c.clone(), &queue, Some(&dlq), 0);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut total = costop_aws::queue::PollStats::default();
    for _ in 0..10 {
        let s = seen.clone();
        let stats = consumer
            .poll_once(1_000, move |n| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().push(n);
                    Ok(())
                }
            })
            .await
            .unwrap();
        total.received += stats.received;
        total.recorded += stats.recorded;
        total.moved_aside += stats.moved_aside;
        total.lifecycle.extend(stats.lifecycle);
        if stats.received == 0 {
            break;
        }
    }
    assert_eq!(total.received, bodies.len());
    assert_eq!(total.recorded, 5, "one notice per fixture: {:?}", seen.lock().unwrap());
    assert_eq!(total.moved_aside, 2);
    assert_eq!(total.lifecycle.len(), 1);
    let dead = c.sqs.receive_message().queue_url(&dlq).max_number_of_messages(10).send().await.unwrap();
    assert_eq!(dead.messages().len(), 2, "junk moved to the dead-letter queue");
    let left = c.sqs.receive_message().queue_url(&queue).max_number_of_messages(10).send().await.unwrap();
    assert!(left.messages().is_empty(), "every handled message deleted");
    // The lifecycle hook is completed through the adapter (moto accepts it for a known group).
    let err = c.complete_lifecycle(&total.lifecycle[0]).await;
    assert!(
        err.is_ok() || err.as_ref().unwrap_err().to_string().contains("CompleteLifecycleAction"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_failure_leaves_the_message_for_later() {
    let (_moto, c) = cloud(AwsSettings::default()).await;
    let queue = c.sqs.create_queue().queue_name("q").send().await.unwrap().queue_url.unwrap();
    let body = r#"{"detail-type": "EC2 Instance Rebalance Recommendation", "source": "aws.ec2", "time": "2026-11-24T08:20:00Z", "detail": {"instance-id": "i-12345678"}}"#;
    c.sqs.send_message().queue_url(&queue).message_body(body).send().await.unwrap();
    let consumer = QueueConsumer::new(c.clone(), &queue, None, 0);
    let stats = consumer.poll_once(0, |_| async { Err("store down".to_string()) }).await.unwrap();
    assert_eq!((stats.received, stats.retried, stats.recorded), (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_pool_launches_twins_parks_them_and_terminates_surplus() {
    let (_moto, c) = cloud(AwsSettings::default()).await;
    let spot = instance(&c, "us-east-1b", "m5.xlarge").await;
    let twin = costop_core::NodeView {
        name: "spot-1".into(),
        instance_id: spot.as_str().into(),
        pool: PoolId::new("m5.xlarge", "us-east-1b"),
        capacity_type: costop_core::CapacityType::Spot,
        allocatable: Default::default(),
        price_per_hour: 0.0,
        unschedulable: false,
        taints: vec![],
        ready: true,
        in_load_balancer: true,
        fallback: false,
    };
    // Two launches clone the template once (a second clone would add a version).
    let a = WarmPoolPort::launch_standby(&c, &twin, "us-east-1b", "m5.2xlarge").await.unwrap();
    let b = WarmPoolPort::launch_standby(&c, &twin, "us-east-1b", "m5.2xlarge").await.unwrap();
    let versions = c
        .ec2
        .describe_launch_template_versions()
        .launch_template_name("costop-standby")
        .send()
        .await
        .unwrap();
    assert_eq!(versions.launch_template_versions().len(), 1);
    assert_eq!(c.instance(&a).await.unwrap().1, "m5.2xlarge");
    let subnet = |id: String| {
        let c = c.clone();
        async move {
            let d = c.ec2.describe_instances().instance_ids(id).send().await.unwrap();
            d.reservations()[0].instances()[0].subnet_id().map(str::to_string)
        }
    };
    assert!(subnet(spot.clone()).await.is_some());
    assert_eq!(subnet(a.clone()).await, subnet(spot.clone()).await, "a standby lands in its twin's subnet");
    let mut standbys = c.standby_instances().await.unwrap();
    standbys.sort_by(|x, y| x.instance_id.cmp(&y.instance_id));
    let mut ids = vec![a.clone(), b.clone()];
    ids.sort();
    assert_eq!(standbys.iter().map(|s| s.instance_id.clone()).collect::<Vec<_>>(), ids);
    assert!(standbys.iter().all(|s| s.stage == StandbyStage::New && s.zone == "us-east-1b"));
    assert!(standbys.iter().all(|s| s.launched_at > 1_600_000_000_000), "{standbys:?}");
    // Parked: stopped and recorded as kept; the Spot node is no standby.
    c.park_standby(&a, true).await.unwrap();
    assert_eq!(c.instance(&a).await.unwrap().0, ec2t::InstanceStateName::Stopped);
    let standbys = c.standby_instances().await.unwrap();
    assert_eq!(standbys.iter().find(|s| s.instance_id == a).unwrap().stage, StandbyStage::Kept);
    assert!(standbys.iter().all(|s| s.instance_id != spot));
    // Surplus: terminated, and no longer listed.
    c.terminate_standby(&b).await.unwrap();
    let left: Vec<_> = c.standby_instances().await.unwrap().into_iter().map(|s| s.instance_id).collect();
    assert_eq!(left, [a]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_prices_are_read_per_pool() {
    let (_moto, c) = cloud(AwsSettings::default()).await;
    let pools = [PoolId::new("m5.xlarge", "us-east-1a"), PoolId::new("c5.xlarge", "us-east-1b")];
    let prices = c.spot_prices(&pools).await.unwrap();
    // moto reports a price for every type and zone; only the asked pools come back.
    assert_eq!(prices.keys().cloned().collect::<Vec<_>>(), {
        let mut p = pools.to_vec();
        p.sort();
        p
    });
    assert!(prices.values().all(|p| *p > 0.0), "{prices:?}");
}

/// The tags of a resource as (key, value) pairs.
fn tag_pairs(tags: &[ec2t::Tag]) -> BTreeSet<(String, String)> {
    tags.iter().map(|t| (t.key().unwrap_or("").to_string(), t.value().unwrap_or("").to_string())).collect()
}

/// Everything created carries `costop.io/managed-by=costop` and the
/// cluster tag, which deploy/iam-policy.json requires in the request.
fn assert_created_by_costop(what: &str, tags: &BTreeSet<(String, String)>) {
    for want in [(MANAGED_TAG, MANAGED_VALUE), ("kubernetes.io/cluster/prod", CLUSTER_TAG_VALUE)] {
        assert!(tags.contains(&(want.0.to_string(), want.1.to_string())), "{what} lacks {want:?}: {tags:?}");
    }
}

/// Every EC2 request body the adapter sends (form fields, decoded): the
/// tags IAM sees as `aws:RequestTag`, whether or not the emulator keeps them.
#[derive(Debug, Clone, Default)]
struct Requests(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

impl aws_sdk_ec2::config::Intercept for Requests {
    fn name(&self) -> &'static str {
        "requests"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_ec2::config::RuntimeComponents,
        _: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let body = context.request().body().bytes().unwrap_or_default();
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            let mut out = Vec::new();
            let mut bytes = s.bytes();
            while let Some(b) = bytes.next() {
                if b == b'%' {
                    let hex: String = bytes.by_ref().take(2).map(char::from).collect();
                    out.push(u8::from_str_radix(&hex, 16).unwrap_or(b'?'));
                } else {
                    out.push(b);
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        };
        let fields = String::from_utf8_lossy(body)
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect();
        self.0.lock().unwrap().push(fields);
        Ok(())
    }
}

impl Requests {
    /// The tag specifications of every `action` request: resource type → tags.
    fn tag_specifications(&self, action: &str) -> Vec<BTreeMap<String, BTreeSet<(String, String)>>> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|f| f.get("Action").map(String::as_str) == Some(action))
            .map(|f| {
                let mut specs = BTreeMap::new();
                for n in 1.. {
                    let Some(kind) = f.get(&format!("TagSpecification.{n}.ResourceType")) else { break };
                    let mut tags = BTreeSet::new();
                    for t in 1.. {
                        let Some(k) = f.get(&format!("TagSpecification.{n}.Tag.{t}.Key")) else { break };
                        let v = f
                            .get(&format!("TagSpecification.{n}.Tag.{t}.Value"))
                            .cloned()
                            .unwrap_or_default();
                        tags.insert((k.clone(), v));
                    }
                    specs.insert(kind.clone(), tags);
                }
                specs
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_costop_creates_is_tagged_at_creation() {
    let settings = AwsSettings { cluster_name: Some("prod".into()), ..Default::default() };
    let (moto, mut c) = cloud(settings.clone()).await;
    let sdk = moto.sdk_config().await;
    // What the test itself makes goes through a client of its own.
    let plain = aws_sdk_ec2::Client::new(&sdk);
    let requests = Requests::default();
    c.ec2 = aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(&sdk).interceptor(requests.clone()).build(),
    );
    let spot = costop_aws::moto::run_instance(&plain, "us-east-1a", "m5.xlarge").await.unwrap();

    // The cloned template.
    let template = c.clone_launch_template(&spot, "costop-standby").await.unwrap();
    let t = c.ec2.describe_launch_templates().launch_template_ids(&template).send().await.unwrap();
    assert_created_by_costop("the launch template", &tag_pairs(t.launch_templates()[0].tags()));

    // A standby and its volumes (moto keeps no tags on network interfaces;
    // the request's are checked below).
    let standby = c.launch_standby(&template, "us-east-1a", None, Some("m5.large")).await.unwrap();
    let d = c.ec2.describe_instances().instance_ids(&standby).send().await.unwrap();
    let tags = tag_pairs(d.reservations()[0].instances()[0].tags());
    assert_created_by_costop("the standby", &tags);
    assert!(tags.contains(&(STANDBY_TAG.into(), "new".into())), "{tags:?}");
    let volumes = c
        .ec2
        .describe_volumes()
        .filters(ec2t::Filter::builder().name("attachment.instance-id").values(&standby).build())
        .send()
        .await
        .unwrap();
    assert!(!volumes.volumes().is_empty(), "the standby has a root volume");
    for v in volumes.volumes() {
        let tags = tag_pairs(v.tags());
        assert_created_by_costop("the standby's volume", &tags);
        assert!(tags.iter().all(|(k, _)| k != STANDBY_TAG), "only the instance is a standby: {tags:?}");
    }

    // Standbys are this cluster's only: one of another cluster is not listed.
    let other = plain
        .run_instances()
        .image_id(costop_aws::moto::any_image(&plain).await.unwrap())
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            ec2t::TagSpecification::builder()
                .resource_type(ec2t::ResourceType::Instance)
                .tags(ec2t::Tag::builder().key(STANDBY_TAG).value("kept").build())
                .tags(ec2t::Tag::builder().key("kubernetes.io/cluster/staging").value("owned").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let other = other.instances()[0].instance_id().unwrap().to_string();
    let listed: Vec<String> =
        c.standby_instances().await.unwrap().into_iter().map(|s| s.instance_id).collect();
    assert_eq!(listed, std::slice::from_ref(&standby), "{other} is another cluster's");
    // With no cluster named, nothing is filtered (as before).
    let unnamed = AwsCloud::new(&sdk, AwsSettings::default());
    assert_eq!(unnamed.standby_instances().await.unwrap().len(), 2);

    // A volume copied across zones: the snapshot and the copy.
    let csi = plain
        .create_volume()
        .availability_zone("us-east-1a")
        .size(20)
        .tag_specifications(
            ec2t::TagSpecification::builder()
                .resource_type(ec2t::ResourceType::Volume)
                .tags(ec2t::Tag::builder().key(EBS_CSI_TAG).value("true").build())
                .build(),
        )
        .send()
        .await
        .unwrap()
        .volume_id
        .unwrap();
    let copy = c.copy_to_zone(&csi, "us-east-1b", soon()).await.unwrap();
    let v = c.ec2.describe_volumes().volume_ids(&copy).send().await.unwrap();
    let tags = tag_pairs(v.volumes()[0].tags());
    assert_created_by_costop("the copy", &tags);
    assert!(tags.contains(&(EBS_CSI_TAG.into(), "true".into())), "{tags:?}");
    let snap = v.volumes()[0].snapshot_id().unwrap().to_string();
    let s = c.ec2.describe_snapshots().snapshot_ids(&snap).send().await.unwrap();
    assert_created_by_costop("the snapshot", &tag_pairs(s.snapshots()[0].tags()));

    // An instant fleet: its instances carry the restore token too.
    let mut f = AwsCloud::new(&sdk, AwsSettings { launch_template_id: Some(template.clone()), ..settings });
    f.ec2 = c.ec2.clone();
    let done =
        f.restore_capacity("restore:i-1", &[(PoolId::new("m5.xlarge", "us-east-1c"), 1)]).await.unwrap();
    assert!(done.starts_with("fleet i-"), "{done}");
    let launched = f.restored_instances("restore:i-1").await.unwrap();
    assert_eq!(launched.len(), 1);
    let d = c.ec2.describe_instances().instance_ids(&launched[0]).send().await.unwrap();
    let tags = tag_pairs(d.reservations()[0].instances()[0].tags());
    assert_created_by_costop("the fleet's instance", &tags);
    assert!(tags.contains(&(RESTORE_TAG.into(), costop_aws::restore_token("restore:i-1"))), "{tags:?}");

    // What IAM sees: every create call names the tags for each resource it
    // makes (deploy/iam-policy.json requires them as aws:RequestTag).
    let kinds = |list: &[&str]| list.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>();
    for (action, tagged) in [
        ("CreateLaunchTemplate", kinds(&["launch-template"])),
        ("RunInstances", kinds(&["instance", "network-interface", "volume"])),
        ("CreateSnapshot", kinds(&["snapshot"])),
        ("CreateVolume", kinds(&["volume"])),
        ("CreateFleet", kinds(&["fleet", "instance"])),
    ] {
        let sent = requests.tag_specifications(action);
        assert_eq!(sent.len(), 1, "one {action}");
        assert_eq!(sent[0].keys().cloned().collect::<BTreeSet<_>>(), tagged, "{action} tags");
        for (kind, tags) in &sent[0] {
            assert_created_by_costop(&format!("{action} {kind}"), tags);
        }
    }
}

/// EC2's answers to the two credit actions moto_server lacks, as the EC2
/// API Reference documents them (ModifyInstanceCreditSpecification and
/// DescribeInstanceCreditSpecifications, "Response Elements" and examples),
/// given in place of moto's "not implemented" (or its fixed `standard`):
/// the request still goes to moto, the answer read is EC2's.
/// The answer to give next, and whether the request in flight is a credit
/// action (the request is gone by the time its answer is read: the HTTP
/// client took it; the test sends one request at a time).
#[derive(Debug, Clone, Default)]
struct CreditAnswers(Arc<Mutex<(Option<String>, bool)>>);

impl CreditAnswers {
    fn next(&self, xml: String) {
        self.0.lock().unwrap().0 = Some(xml);
    }

    fn modified(ok: &[&str], failed: &[(&str, &str, &str)]) -> String {
        let ok: String = ok.iter().map(|id| format!("<item><instanceId>{id}</instanceId></item>")).collect();
        let failed: String = failed
            .iter()
            .map(|(id, code, message)| {
                format!(
                    "<item><instanceId>{id}</instanceId><error><code>{code}</code>\
                     <message>{message}</message></error></item>"
                )
            })
            .collect();
        format!(
            "<ModifyInstanceCreditSpecificationResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
             <requestId>1b2c3d4e-0000-4000-8000-000000000001</requestId>\
             <successfulInstanceCreditSpecificationSet>{ok}</successfulInstanceCreditSpecificationSet>\
             <unsuccessfulInstanceCreditSpecificationSet>{failed}</unsuccessfulInstanceCreditSpecificationSet>\
             </ModifyInstanceCreditSpecificationResponse>"
        )
    }

    fn described(id: &str, credits: &str) -> String {
        format!(
            "<DescribeInstanceCreditSpecificationsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
             <requestId>1b2c3d4e-0000-4000-8000-000000000002</requestId>\
             <instanceCreditSpecificationSet><item><instanceId>{id}</instanceId>\
             <cpuCredits>{credits}</cpuCredits></item></instanceCreditSpecificationSet>\
             </DescribeInstanceCreditSpecificationsResponse>"
        )
    }
}

impl aws_sdk_ec2::config::Intercept for CreditAnswers {
    fn name(&self) -> &'static str {
        "credit-answers"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_ec2::config::RuntimeComponents,
        _: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let body = String::from_utf8_lossy(context.request().body().bytes().unwrap_or_default()).into_owned();
        self.0.lock().unwrap().1 = body.contains("Action=ModifyInstanceCreditSpecification&")
            || body.contains("Action=DescribeInstanceCreditSpecifications&");
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_ec2::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _: &aws_sdk_ec2::config::RuntimeComponents,
        _: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut state = self.0.lock().unwrap();
        if !std::mem::take(&mut state.1) {
            return Ok(());
        }
        let xml = state.0.take().ok_or("no answer prepared for a credit action")?;
        let response = context.response_mut();
        *response.status_mut() = 200u16.try_into()?;
        response.headers_mut().remove("content-length");
        *response.body_mut() = xml.into();
        Ok(())
    }
}

/// What moto cannot check of issue 16's acceptance (see
/// `a_burstable_standby_launched_unlimited_is_switched_to_standard`): the
/// launch asks EC2 for `unlimited` credits, the switch for `standard` on
/// that instance, and EC2's documented answers are read right (a refusal
/// or an answer that does not name the instance is an error, an unknown
/// option is refused by name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credit_option_is_sent_at_launch_and_switched_as_ec2_documents() {
    let (moto, mut c) = cloud(AwsSettings::default()).await;
    let sdk = moto.sdk_config().await;
    let requests = Requests::default();
    let answers = CreditAnswers::default();
    c.ec2 = aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(&sdk)
            .interceptor(requests.clone())
            .interceptor(answers.clone())
            .build(),
    );
    let spot_node = instance(&c, "us-east-1a", "m5.xlarge").await;
    let template = c.clone_launch_template(&spot_node, "costop-standby").await.unwrap();
    let standby = c
        .launch_burstable_standby(&template, "us-east-1a", None, "t3.large", CreditMode::Unlimited)
        .await
        .unwrap();
    assert_eq!(c.instance(&standby).await.unwrap().1, "t3.large");
    let sent = |action: &str| -> Vec<BTreeMap<String, String>> {
        let all = requests.0.lock().unwrap();
        all.iter().filter(|f| f.get("Action").map(String::as_str) == Some(action)).cloned().collect()
    };
    let run = sent("RunInstances");
    assert_eq!(run.len(), 2, "the Spot node's and the standby's");
    let launch = &run[1];
    assert_eq!(launch.get("InstanceType").map(String::as_str), Some("t3.large"), "{launch:?}");
    assert_eq!(
        launch.get("CreditSpecification.CpuCredits").map(String::as_str),
        Some("unlimited"),
        "{launch:?}"
    );
    assert_eq!(launch.get("LaunchTemplate.LaunchTemplateId"), Some(&template), "{launch:?}");
    // A plain standby names no credit option (the template's, or EC2's default).
    let plain = c.launch_standby(&template, "us-east-1a", None, Some("m5.large")).await.unwrap();
    assert!(!sent("RunInstances")[2].keys().any(|k| k.starts_with("CreditSpecification")), "{plain}");

    // EC2 reads back the launch's option.
    answers.next(CreditAnswers::described(&standby, "unlimited"));
    assert_eq!(c.credit_mode(&standby).await.unwrap(), CreditMode::Unlimited);
    let read = sent("DescribeInstanceCreditSpecifications");
    assert_eq!(read[0].get("InstanceId.1"), Some(&standby), "{read:?}");

    // The switch: one instance, to standard; EC2 names it as switched.
    answers.next(CreditAnswers::modified(&[&standby], &[]));
    c.set_credit_mode(&standby, CreditMode::Standard).await.unwrap();
    let switch = sent("ModifyInstanceCreditSpecification");
    assert_eq!(switch.len(), 1);
    assert_eq!(switch[0].get("InstanceCreditSpecification.1.InstanceId"), Some(&standby), "{switch:?}");
    assert_eq!(
        switch[0].get("InstanceCreditSpecification.1.CpuCredits").map(String::as_str),
        Some("standard"),
        "{switch:?}"
    );
    assert!(!switch[0].contains_key("InstanceCreditSpecification.2.InstanceId"), "{switch:?}");
    answers.next(CreditAnswers::described(&standby, "standard"));
    assert_eq!(c.credit_mode(&standby).await.unwrap(), CreditMode::Standard);

    // Refused: the error code and message are in the error.
    answers.next(CreditAnswers::modified(
        &[],
        &[(&standby, "IncorrectInstanceState", "The instance is not in a valid state")],
    ));
    let e = c.set_credit_mode(&standby, CreditMode::Unlimited).await.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("aws ModifyInstanceCreditSpecification {standby}"))
            && e.contains("IncorrectInstanceState: The instance is not in a valid state"),
        "{e}"
    );
    // An answer that switched another instance is no switch of this one.
    answers.next(CreditAnswers::modified(&["i-0123456789abcdef0"], &[]));
    let e = c.set_credit_mode(&standby, CreditMode::Unlimited).await.unwrap_err().to_string();
    assert!(e.contains("no successful credit specification for the instance"), "{e}");
    // An option costop does not know is refused, named.
    answers.next(CreditAnswers::described(&standby, "turbo"));
    let e = c.credit_mode(&standby).await.unwrap_err().to_string();
    assert!(e.contains("\"turbo\""), "{e}");
    // An answer about another instance is none about this one.
    answers.next(CreditAnswers::described("i-0123456789abcdef0", "unlimited"));
    let e = c.credit_mode(&standby).await.unwrap_err().to_string();
    assert!(e.contains("no credit specification for the instance"), "{e}");
}

async fn put_credit_balance(c: &AwsCloud, id: &str, at: SystemTime, credits: f64) {
    c.cloudwatch
        .put_metric_data()
        .namespace("AWS/EC2")
        .metric_data(
            aws_sdk_cloudwatch::types::MetricDatum::builder()
                .metric_name("CPUCreditBalance")
                .dimensions(
                    aws_sdk_cloudwatch::types::Dimension::builder().name("InstanceId").value(id).build(),
                )
                .timestamp(at.into())
                .value(credits)
                .unit(aws_sdk_cloudwatch::types::StandardUnit::Count)
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// A burstable node's credits: CloudWatch's `CPUCreditBalance` of that
/// instance (another's is not taken), brought forward to now; the
/// balance modeled from its uptime when there is no datapoint; a reading
/// that cannot be a balance is an error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credit_balance_is_read_from_cloudwatch_or_modeled_from_uptime() {
    let (_moto, c) = cloud(AwsSettings::default()).await;
    let node = instance(&c, "us-east-1a", "t3.large").await;
    let other = instance(&c, "us-east-1a", "t3.large").await;
    let now = SystemTime::now();
    let ago = |s: u64| now - Duration::from_secs(s);

    // No metrics: modeled. moto's instance was launched just now, in
    // standard mode (moto's answer), so an hour from now, idle, it has
    // earned an hour of a t3.large's 36 credits.
    let later = now + Duration::from_secs(3600);
    let b = c.credit_balance(&node, later, 0.0).await.unwrap();
    let BalanceSource::Modeled { uptime_s } = b.source else { panic!("{b:?}") };
    assert!((3590.0..3700.0).contains(&uptime_s), "{b:?}");
    assert_eq!(b.mode, CreditMode::Standard);
    assert!((b.credits - 36.0 * uptime_s / 3600.0).abs() < 1e-6, "{b:?}");
    // Kept busy at 2 vCPUs it has earned nothing to keep.
    assert_eq!(c.credit_balance(&node, later, 2.0).await.unwrap().credits, 0.0);

    // Measured: the last datapoint of this instance, brought forward.
    put_credit_balance(&c, &other, ago(60), 5.0).await;
    put_credit_balance(&c, &node, ago(840), 300.0).await;
    put_credit_balance(&c, &node, ago(240), 400.0).await;
    let b = c.credit_balance(&node, now, 2.0).await.unwrap();
    let BalanceSource::Measured { age_s } = b.source else { panic!("{b:?}") };
    // moto's statistics start their periods at the first datapoint: the
    // latest period's average (400) is timed 600 s after the first one,
    // at 240 s ago.
    assert!((age_s - 240.0).abs() < 2.0, "{b:?}");
    // 2 vCPUs asked, 0.6 earned: 1.4 credits a minute.
    assert!((b.credits - (400.0 - 1.4 * age_s / 60.0)).abs() < 1e-6, "{b:?}");
    // Older than the look-back: not a reading of now.
    let stale = c.credit_balance(&other, now + Duration::from_secs(1200), 0.0).await.unwrap();
    assert!(matches!(stale.source, BalanceSource::Modeled { .. }), "{stale:?}");

    // Junk is refused, named.
    let junk = instance(&c, "us-east-1a", "t3.large").await;
    put_credit_balance(&c, &junk, ago(60), 5000.0).await;
    let e = c.credit_balance(&junk, now, 0.0).await.unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("aws GetMetricStatistics {junk}"))
            && e.contains("more than a t3.large can hold"),
        "{e}"
    );
    // A type that earns no credits is not asked about.
    let m5 = instance(&c, "us-east-1a", "m5.large").await;
    let e = c.credit_balance(&m5, now, 0.0).await.unwrap_err().to_string();
    assert!(e.contains("'m5.large' is not a burstable type"), "{e}");
}
