//! The server with the AWS adapter runs a full response: moto_server as
//! AWS, `costop emu` as the cluster.

use aws_sdk_ec2::types as ec2t;
use aws_sdk_elasticloadbalancingv2::types as elbt;
use costop_aws::moto::MotoServer;
use costop_emu::admin::{node_object, NodeGroup};
use costop_emu::kinds::idx;
use costop_emu::{EmuConfig, Emulator};
use serde_json::json;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn until(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `costop emu` at 50× speed, its files under a fresh directory.
async fn start_emu(name: &str) -> Emulator {
    let dir = std::env::temp_dir().join(format!("costop-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Emulator::start(EmuConfig {
        kubeconfig: dir.join("kubeconfig"),
        time_scale: 0.02,
        tick: Duration::from_millis(20),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn group(capacity: &str, zone: &str) -> NodeGroup {
    NodeGroup {
        count: 1,
        instance_type: "m5.xlarge".into(),
        zone: zone.into(),
        capacity_type: capacity.into(),
    }
}

fn web(replicas: u32) -> costop_emu::admin::Scenario {
    costop_emu::admin::Scenario {
        deployments: vec![costop_emu::admin::DeploymentSpec {
            name: "web".into(),
            namespace: None,
            replicas,
            cpu: "500m".into(),
            memory: "256Mi".into(),
            min_available: Some(2),
        }],
        ..Default::default()
    }
}

/// Ready, not terminating pods of the default namespace.
fn ready_web(emu: &Emulator) -> Vec<serde_json::Value> {
    let (pods, _) = emu.state.store.list(idx::PODS, Some("default"), |p| {
        p["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            && p["metadata"]["deletionTimestamp"].is_null()
    });
    pods
}

/// The server with AWS (moto) as its cloud and emu as its cluster; its
/// base URL, once it leads, and the switch that stops it.
async fn start_server(
    emu: &Emulator,
    moto: &MotoServer,
    settings: costop_aws::AwsSettings,
    keep_warm_pool: bool,
    policy: costop_core::Policy,
) -> (String, tokio::sync::watch::Sender<bool>) {
    crate::common::moto_credentials();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let config = costop_server::ServerConfig {
        listen,
        redis_url: None,
        kubeconfig: Some(emu.kubeconfig.clone()),
        emu_url: None,
        aws: Some(costop_server::AwsOptions {
            region: Some("us-east-1".into()),
            endpoint: Some(moto.url()),
            queue_url: None,
            dead_letter_url: None,
            settings,
            keep_warm_pool,
            warm_pool_every: Duration::from_millis(300),
        }),
        policy,
        identity: "aws-test".into(),
        plan_key: None,
        allow_unsigned_plans: false,
        advertise_url: None,
        dry_run: false,
    };
    tokio::spawn(costop_server::run(config, stop));
    let base = format!("http://{listen}");
    until("the server leads", Duration::from_secs(20), async || {
        match http().get(format!("{base}/readyz")).send().await {
            Ok(r) => r.text().await.unwrap_or_default() == "leader",
            Err(_) => false,
        }
    })
    .await;
    (base, stop_tx)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// An agent pod on `node` (service account `costop-agent` in
/// `costop-system`, as deployed), and its token.
fn agent_on(emu: &Emulator, node: &str) -> String {
    let ns = costop_kube::COSTOP_NAMESPACE;
    if emu.state.store.get(idx::NAMESPACES, "", ns).is_err() {
        let _ = emu.state.create(idx::NAMESPACES, "", json!({"metadata": {"name": ns}}));
    }
    let name = format!("costop-agent-{node}");
    let pod = json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
        "name": "costop-agent", "uid": "ds", "controller": true}]},
        "spec": {"nodeName": node, "serviceAccountName": "costop-agent", "tolerations": [{"operator": "Exists"}],
                 "containers": [{"name": "agent", "image": "costop:dev"}]}});
    emu.state.create(idx::PODS, ns, pod).unwrap();
    emu.state.pod_token(ns, &name).unwrap()
}

fn interruption(instance: &str) -> costop_core::Notice {
    costop_core::Notice {
        instance_id: instance.into(),
        kind: costop_core::NoticeKind::SpotInterruption {
            action: costop_core::notice::InstanceAction::Terminate,
            effective_at: now_ms() + 120_000,
        },
        received_at: now_ms(),
        source: costop_core::NoticeSource::Agent,
    }
}

async fn state_of(ec2: &aws_sdk_ec2::Client, id: &str) -> ec2t::InstanceStateName {
    let d = ec2.describe_instances().instance_ids(id).send().await.unwrap();
    d.reservations()[0].instances()[0].state().and_then(|s| s.name()).cloned().unwrap()
}

fn taints_of(emu: &Emulator, node: &str) -> Vec<String> {
    let n = emu.state.store.get(idx::NODES, "", node).unwrap();
    n["spec"]["taints"]
        .as_array()
        .map(|t| t.iter().map(|t| t["key"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_gets_a_full_response_through_aws_and_kubernetes() {
    // AWS: the Spot node in a target group, a stopped standby.
    let moto = MotoServer::start().expect("moto_server (scripts/test installs it)");
    let aws = moto.sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&aws);
    let spot = run_instance(&ec2, "us-east-1a").await;
    let standby = run_instance(&ec2, "us-east-1a").await;
    ec2.stop_instances().instance_ids(&standby).send().await.unwrap();
    let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.unwrap().vpc.unwrap().vpc_id.unwrap();
    let tg = elb
        .create_target_group()
        .name("web")
        .protocol(elbt::ProtocolEnum::Http)
        .port(80)
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap()
        .target_groups()[0]
        .target_group_arn()
        .unwrap()
        .to_string();
    elb.register_targets()
        .target_group_arn(&tg)
        .targets(elbt::TargetDescription::builder().id(&spot).build())
        .send()
        .await
        .unwrap();
    // A database's EBS volume, attached to the Spot node.
    let volume =
        ec2.create_volume().availability_zone("us-east-1a").size(10).send().await.unwrap().volume_id.unwrap();
    ec2.attach_volume().volume_id(&volume).instance_id(&spot).device("/dev/xvdf").send().await.unwrap();

    // The cluster: the Spot node with a Deployment on it, the standby node, an agent pod.
    let emu = start_emu("aws-response").await;
    emu.state
        .create(idx::NODES, "", node_object("spot-node", &spot, &group("spot", "us-east-1a")).unwrap())
        .unwrap();
    emu.state
        .create(
            idx::NODES,
            "",
            node_object("standby-node", &standby, &group("standby-stopped", "us-east-1a")).unwrap(),
        )
        .unwrap();
    costop_emu::admin::load(&emu.state, &web(4)).unwrap();
    // The database: one replica whose claim is bound to the EBS volume.
    let zone_affinity = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "topology.ebs.csi.aws.com/zone", "operator": "In", "values": ["us-east-1a"]}]}]}});
    let pv = json!({"metadata": {"name": "pv-data"}, "spec": {"capacity": {"storage": "10Gi"},
        "accessModes": ["ReadWriteOnce"], "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": volume},
        "nodeAffinity": zone_affinity}});
    emu.state.create(idx::PVS, "", pv).unwrap();
    let pvc = json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "10Gi"}}, "volumeName": "pv-data"}});
    emu.state.create(idx::PVCS, "default", pvc).unwrap();
    let db = json!({"metadata": {"name": "db", "labels": {"app": "db"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                "containers": [{"name": "db", "image": "postgres:17", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
                "terminationGracePeriodSeconds": 30}}}});
    emu.state.create(idx::DEPLOYMENTS, "default", db).unwrap();
    let token = agent_on(&emu, "spot-node");
    until("web and db running on the Spot node", Duration::from_secs(20), async || {
        ready_web(&emu).len() == 5
    })
    .await;

    // The server, with AWS as its cloud.
    let (base, stop_tx) =
        start_server(&emu, &moto, Default::default(), false, costop_core::Policy::default()).await;
    let http = http();
    let notice = interruption(&spot);
    let r = http.post(format!("{base}/v1/notices")).bearer_auth(&token).json(&notice).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap_or_default());

    // Kubernetes: cordoned; AWS: deregistered, standby started; the pods run on the standby.
    until("spot-node cordoned", Duration::from_secs(10), async || {
        emu.state.store.get(idx::NODES, "", "spot-node").unwrap()["spec"]["unschedulable"] == true
    })
    .await;
    until("the spot instance out of its target group", Duration::from_secs(10), async || {
        let h = elb.describe_target_health().target_group_arn(&tg).send().await.unwrap();
        h.target_health_descriptions().iter().all(|d| d.target().and_then(|t| t.id()) != Some(spot.as_str()))
    })
    .await;
    until("the standby running", Duration::from_secs(20), async || {
        let d = ec2.describe_instances().instance_ids(&standby).send().await.unwrap();
        d.reservations()[0].instances()[0].state().and_then(|s| s.name())
            == Some(&ec2t::InstanceStateName::Running)
    })
    .await;
    until("web and db Ready on the standby", Duration::from_secs(30), async || {
        let pods = ready_web(&emu);
        pods.len() == 5 && pods.iter().all(|p| p["spec"]["nodeName"] == "standby-node")
    })
    .await;
    // The volume followed its pod: detached from the Spot node once the pod
    // stopped, attached to the standby.
    until("the volume on the standby", Duration::from_secs(30), async || {
        let v = ec2.describe_volumes().volume_ids(&volume).send().await.unwrap();
        v.volumes()[0].attachments().iter().any(|a| a.instance_id() == Some(standby.as_str()))
    })
    .await;
    let standby_node = emu.state.store.get(idx::NODES, "", "standby-node").unwrap();
    assert!(standby_node["spec"]["taints"]
        .as_array()
        .is_none_or(|t| t.iter().all(|t| t["key"] != "costop.io/standby")));
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("costop_step_duration_seconds_count{step=\"deregister-targets\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("costop_step_duration_seconds_count{step=\"wake-standby\"} 1"), "{metrics}");
    assert!(metrics.contains("costop_step_duration_seconds_count{step=\"move-volume\"} 1"), "{metrics}");
    let (events, _) = emu.state.store.list(idx::EVENTS, None, |e| e["reason"] == "CostopMoveVolume");
    let said = events[0]["message"].as_str().unwrap_or("");
    assert!(said.contains(&format!("{volume} detached and attached to {standby}")), "{said}");
    let _ = stop_tx.send(true);
}

async fn run_instance(ec2: &aws_sdk_ec2::Client, zone: &str) -> String {
    costop_aws::moto::run_instance(ec2, zone, "m5.xlarge").await.unwrap()
}

/// Standby instances (tag `costop.io/standby`) with their tag value.
async fn standbys(ec2: &aws_sdk_ec2::Client) -> Vec<(String, String)> {
    let d = ec2
        .describe_instances()
        .filters(ec2t::Filter::builder().name("tag-key").values("costop.io/standby").build())
        .send()
        .await
        .unwrap();
    d.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| {
            !matches!(
                i.state().and_then(|s| s.name()),
                Some(ec2t::InstanceStateName::Terminated | ec2t::InstanceStateName::ShuttingDown)
            )
        })
        .map(|i| {
            let tag = i.tags().iter().find(|t| t.key() == Some("costop.io/standby")).and_then(|t| t.value());
            (i.instance_id().unwrap().to_string(), tag.unwrap_or("").to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_pool_is_kept_used_replenished_and_returned() {
    // RUST_LOG=costop_server=info shows each warm-pool round.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let moto = MotoServer::start().expect("moto_server (scripts/test installs it)");
    let aws = moto.sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let asg = aws_sdk_autoscaling::Client::new(&aws);
    let spot = run_instance(&ec2, "us-east-1a").await;
    // Capacity is restored into a pool of another zone, through its Auto Scaling group.
    let image = costop_aws::moto::any_image(&ec2).await.unwrap();
    let template = ec2
        .create_launch_template()
        .launch_template_name("spot-b")
        .launch_template_data(
            ec2t::RequestLaunchTemplateData::builder()
                .image_id(image)
                .instance_type(ec2t::InstanceType::M5Xlarge)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .launch_template
        .unwrap()
        .launch_template_id
        .unwrap();
    costop_aws::moto::create_group(&asg, "spot-b", &template, "us-east-1b", 0).await.unwrap();
    let pool_b = costop_core::PoolId::new("m5.xlarge", "us-east-1b");
    let settings = costop_aws::AwsSettings {
        pools: vec![pool_b.clone()],
        asg_by_pool: [(pool_b, "spot-b".to_string())].into_iter().collect(),
        ..Default::default()
    };

    let emu = start_emu("warm-pool").await;
    emu.state
        .create(idx::NODES, "", node_object("spot-node", &spot, &group("spot", "us-east-1a")).unwrap())
        .unwrap();
    costop_emu::admin::load(&emu.state, &web(4)).unwrap();
    let token = agent_on(&emu, "spot-node");
    until("web running on the Spot node", Duration::from_secs(20), async || ready_web(&emu).len() == 4).await;
    // Stopped standbys, one per Spot node of the zone's worst pool (the defaults).
    // Standbys are kept only when the policy asks (none by default).
    let policy = costop_core::Policy { standby_share_of_shortfall: 1.0, ..Default::default() };
    let (base, stop_tx) = start_server(&emu, &moto, settings, true, policy).await;

    // 1. The keeper launches the Spot node's twin in its zone.
    let mut first = String::new();
    until("a standby launched", Duration::from_secs(20), async || {
        let s = standbys(&ec2).await;
        first = s.first().map(|(id, _)| id.clone()).unwrap_or_default();
        s.len() == 1 && s[0].1 == "new"
    })
    .await;
    let d = ec2.describe_instances().instance_ids(&first).send().await.unwrap();
    let i = &d.reservations()[0].instances()[0];
    assert_eq!(i.instance_type(), Some(&ec2t::InstanceType::M5Xlarge));
    assert_eq!(i.placement().and_then(|p| p.availability_zone()), Some("us-east-1a"));
    assert!(i.instance_lifecycle().is_none(), "a standby is on-demand");

    // 2. It joins, labelled like the Spot node it is a twin of; the keeper
    //    taints it, stops it and records it as kept.
    emu.state
        .create(idx::NODES, "", node_object("standby-1", &first, &group("spot", "us-east-1a")).unwrap())
        .unwrap();
    until("the standby parked", Duration::from_secs(20), async || {
        let node = emu.state.store.get(idx::NODES, "", "standby-1").unwrap();
        taints_of(&emu, "standby-1").contains(&"costop.io/standby".to_string())
            && node["metadata"]["labels"]["costop.io/capacity-type"] == "standby-stopped"
            && state_of(&ec2, &first).await == ec2t::InstanceStateName::Stopped
            && standbys(&ec2).await == [(first.clone(), "kept".to_string())]
    })
    .await;

    // 3. A notice: the standby is started and takes the pods; capacity is
    //    restored in the other zone's pool.
    let r = http()
        .post(format!("{base}/v1/notices"))
        .bearer_auth(&token)
        .json(&interruption(&spot))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap_or_default());
    until("web Ready on the woken standby", Duration::from_secs(30), async || {
        let pods = ready_web(&emu);
        pods.len() == 4
            && pods.iter().all(|p| p["spec"]["nodeName"] == "standby-1")
            && state_of(&ec2, &first).await == ec2t::InstanceStateName::Running
    })
    .await;
    let mut restored = String::new();
    until("the Auto Scaling group raised", Duration::from_secs(20), async || {
        let g = asg.describe_auto_scaling_groups().auto_scaling_group_names("spot-b").send().await.unwrap();
        let g = &g.auto_scaling_groups()[0];
        restored = g.instances().first().and_then(|i| i.instance_id()).unwrap_or("").to_string();
        g.desired_capacity() == Some(1) && !restored.is_empty()
    })
    .await;

    // 4. With the pods on the woken standby no Spot load is at risk in the
    //    zone, so the keeper keeps no second standby (one it launched while
    //    the response ran is surplus and terminated).
    until("no second standby kept", Duration::from_secs(20), async || {
        standbys(&ec2).await.iter().all(|(id, _)| *id == first)
    })
    .await;

    // 5. The restored Spot node joins; the woken standby goes back (its pods
    //    move within their budget) and is stopped again.
    emu.state
        .create(idx::NODES, "", node_object("spot-b", &restored, &group("spot", "us-east-1b")).unwrap())
        .unwrap();
    until("web Ready on the restored Spot node", Duration::from_secs(40), async || {
        let pods = ready_web(&emu);
        pods.len() == 4 && pods.iter().all(|p| p["spec"]["nodeName"] == "spot-b")
    })
    .await;
    until("the standby back on standby, stopped", Duration::from_secs(30), async || {
        let node = emu.state.store.get(idx::NODES, "", "standby-1").unwrap();
        taints_of(&emu, "standby-1").contains(&"costop.io/standby".to_string())
            && node["metadata"]["labels"]["costop.io/capacity-type"] == "standby-stopped"
            && state_of(&ec2, &first).await == ec2t::InstanceStateName::Stopped
    })
    .await;
    until("the one standby kept", Duration::from_secs(30), async || {
        standbys(&ec2).await == [(first.clone(), "kept".to_string())]
    })
    .await;
    let metrics = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("costop_step_duration_seconds_count{step=\"restore-capacity\"} 1"), "{metrics}");
    let _ = stop_tx.send(true);
}
