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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_gets_a_full_response_through_aws_and_kubernetes() {
    // AWS: the Spot node in a target group, a stopped standby.
    let moto = MotoServer::start().expect("moto_server (scripts/test installs it)");
    let aws = moto.sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&aws);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&aws);
    let image = ec2.describe_images().send().await.unwrap().images()[0].image_id().unwrap().to_string();
    let launch = |zone: &'static str| {
        ec2.run_instances()
            .image_id(&image)
            .instance_type(ec2t::InstanceType::M5Xlarge)
            .min_count(1)
            .max_count(1)
            .placement(ec2t::Placement::builder().availability_zone(zone).build())
            .send()
    };
    let spot = launch("us-east-1a").await.unwrap().instances()[0].instance_id().unwrap().to_string();
    let standby = launch("us-east-1a").await.unwrap().instances()[0].instance_id().unwrap().to_string();
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

    // The cluster: the Spot node with a Deployment on it, the standby node, an agent pod.
    let dir = std::env::temp_dir().join(format!("costop-aws-response-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let emu = Emulator::start(EmuConfig {
        kubeconfig: dir.join("kubeconfig"),
        time_scale: 0.02,
        tick: Duration::from_millis(20),
        ..Default::default()
    })
    .await
    .unwrap();
    let group = |capacity: &str| NodeGroup {
        count: 1,
        instance_type: "m5.xlarge".into(),
        zone: "us-east-1a".into(),
        capacity_type: capacity.into(),
    };
    emu.state.create(idx::NODES, "", node_object("spot-node", &spot, &group("spot")).unwrap()).unwrap();
    emu.state
        .create(idx::NODES, "", node_object("standby-node", &standby, &group("standby-stopped")).unwrap())
        .unwrap();
    let scenario = costop_emu::admin::Scenario {
        deployments: vec![costop_emu::admin::DeploymentSpec {
            name: "web".into(),
            namespace: None,
            replicas: 4,
            cpu: "500m".into(),
            memory: "256Mi".into(),
            min_available: Some(2),
        }],
        ..Default::default()
    };
    costop_emu::admin::load(&emu.state, &scenario).unwrap();
    let agent_pod = json!({"metadata": {"name": "costop-agent-spot", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
        "name": "costop-agent", "uid": "ds", "controller": true}]},
        "spec": {"nodeName": "spot-node", "tolerations": [{"operator": "Exists"}], "containers": [{"name": "agent", "image": "costop:dev"}]}});
    emu.state.create(idx::PODS, "kube-system", agent_pod).unwrap();
    let token = emu.state.pod_token("kube-system", "costop-agent-spot").unwrap();
    let ready_web = |emu: &Emulator| {
        let (pods, _) = emu.state.store.list(idx::PODS, Some("default"), |p| {
            p["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                && p["metadata"]["deletionTimestamp"].is_null()
        });
        pods
    };
    until("web running on the Spot node", Duration::from_secs(20), async || ready_web(&emu).len() == 4).await;

    // The server, with AWS as its cloud.
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
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
            settings: costop_aws::AwsSettings::default(),
            keep_warm_pool: false,
        }),
        policy: costop_core::Policy::default(),
        identity: "aws-test".into(),
    };
    tokio::spawn(costop_server::run(config, stop));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{listen}");
    until("the server leads", Duration::from_secs(20), async || {
        match http.get(format!("{base}/readyz")).send().await {
            Ok(r) => r.text().await.unwrap_or_default() == "leader",
            Err(_) => false,
        }
    })
    .await;

    let notice = costop_core::Notice {
        instance_id: spot.clone(),
        kind: costop_core::NoticeKind::SpotInterruption {
            action: costop_core::notice::InstanceAction::Terminate,
            effective_at: now_ms() + 120_000,
        },
        received_at: now_ms(),
        source: costop_core::NoticeSource::Agent,
    };
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
    until("web Ready on the standby", Duration::from_secs(30), async || {
        let pods = ready_web(&emu);
        pods.len() == 4 && pods.iter().all(|p| p["spec"]["nodeName"] == "standby-node")
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
    let _ = stop_tx.send(true);
}
