//! costop's Cloud port on aws-sdk-rust: warm standbys (launch templates
//! cloned from a Spot node, stop / re-type / start), EBS volumes, load
//! balancer deregistration and the weighted bridge to functions, capacity in
//! other pools (Auto Scaling groups or an instant fleet), lifecycle hooks,
//! and the EventBridge → SQS queue. Every call has a bounded timeout and
//! retries throttling (the SDK's standard retry mode); errors name the
//! action and the resource.

pub mod credits;
pub mod events;
pub mod moto;
pub mod queue;

use aws_sdk_autoscaling::Client as AsgClient;
use aws_sdk_ec2::types as ec2t;
use aws_sdk_ec2::Client as Ec2Client;
use aws_sdk_elasticloadbalancingv2::types as elbt;
use aws_sdk_elasticloadbalancingv2::Client as ElbClient;
use aws_sdk_sqs::Client as SqsClient;
use costop_core::ports::{CloudPort, StandbyInstance, StandbyStage, WarmPoolPort};
use costop_core::{NodeView, PoolId};
use costop_facts::catalog::CreditMode;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Every AWS action the adapter calls. The IAM policy in
/// `deploy/iam-policy.json` grants exactly these, plus `iam:PassRole` on
/// the node role only (standbys launched from a cloned template keep the
/// node's instance profile). Reads (`Describe*`, `Get*`) are granted on
/// every resource; every other EC2 action only under a tag condition:
/// what costop creates must carry [`MANAGED_TAG`] and the cluster tag
/// ([`cluster_tag`]) in the request, what it changes later must carry them
/// (or [`STANDBY_TAG`], or the EBS CSI driver's [`EBS_CSI_TAG`]) already.
/// Tests check the code, this list and the policy agree, and that every
/// mutating EC2 statement has a condition (`deploy/iam/README.md`).
pub const IAM_ACTIONS: &[&str] = &[
    "autoscaling:CompleteLifecycleAction",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:SetDesiredCapacity",
    "autoscaling:TerminateInstanceInAutoScalingGroup",
    "cloudwatch:GetMetricStatistics",
    "ec2:AttachVolume",
    "ec2:CreateFleet",
    "ec2:CreateLaunchTemplate",
    "ec2:CreateLaunchTemplateVersion",
    "ec2:CreateTags",
    "ec2:CreateSnapshot",
    "ec2:CreateVolume",
    "ec2:DescribeInstanceCreditSpecifications",
    "ec2:DescribeInstances",
    "ec2:DescribeSnapshots",
    "ec2:DescribeSpotPriceHistory",
    "ec2:DescribeVolumes",
    "ec2:DetachVolume",
    "ec2:GetLaunchTemplateData",
    "ec2:ModifyInstanceAttribute",
    "ec2:ModifyInstanceCreditSpecification",
    "ec2:RunInstances",
    "ec2:StartInstances",
    "ec2:StopInstances",
    "ec2:TerminateInstances",
    "elasticloadbalancing:DeregisterTargets",
    "elasticloadbalancing:DescribeTargetGroupAttributes",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:ModifyRule",
    "sqs:DeleteMessage",
    "sqs:ReceiveMessage",
    "sqs:SendMessage",
];

/// A failed AWS call: the action, the resource, and what AWS said.
#[derive(Debug, Clone, thiserror::Error)]
#[error("aws {action} {resource}: {message}")]
pub struct AwsError {
    /// API action, e.g. `StartInstances`.
    pub action: &'static str,
    /// The resource it was about.
    pub resource: String,
    /// The SDK's or the service's message.
    pub message: String,
}

fn aws_err<E: std::error::Error + 'static>(
    action: &'static str,
    resource: &str,
) -> impl FnOnce(E) -> AwsError {
    let resource = resource.to_string();
    move |e| AwsError { action, resource, message: aws_sdk_ec2::error::DisplayErrorContext(&e).to_string() }
}

fn missing(action: &'static str, resource: &str, what: &str) -> AwsError {
    AwsError { action, resource: resource.into(), message: format!("the answer has no {what}") }
}

/// A weighted route that can bridge a workload's traffic to a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// Listener rule ARN.
    pub rule_arn: String,
    /// The workload's own target group.
    pub service_target_group: String,
    /// The function's target group (target type `lambda`).
    pub function_target_group: String,
    /// Weight (0–999) given to the function while bridged.
    pub function_weight: i32,
}

/// Where the adapter looks for things it cannot discover.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// Spot pools costop may launch into (restored capacity).
    pub pools: Vec<PoolId>,
    /// Auto Scaling group of each pool, when capacity is restored by
    /// raising desired capacity; pools without one get an instant fleet.
    pub asg_by_pool: BTreeMap<PoolId, String>,
    /// Launch template used for instant fleets.
    pub launch_template_id: Option<String>,
    /// Launch template for standbys; none = a template cloned from a Spot
    /// node of the zone (named `standby_template_name`).
    pub standby_template_id: Option<String>,
    /// Name of the template cloned from a Spot node for standbys
    /// (default `costop-standby`).
    pub standby_template_name: String,
    /// Bridge routes by workload (`namespace/name`).
    pub bridges: BTreeMap<String, Bridge>,
    /// Device name volumes are attached under.
    pub volume_device: String,
    /// The cluster's name (the EKS cluster name). When set, everything
    /// costop creates is tagged `kubernetes.io/cluster/<name>=owned`
    /// ([`cluster_tag`]) and only standbys carrying that tag are this
    /// cluster's; `deploy/iam-policy.json` requires it.
    pub cluster_name: Option<String>,
}

/// Tag on standby instances; its value is the [`StandbyStage`]
/// ([`standby_tag_value`]).
pub const STANDBY_TAG: &str = "costop.io/standby";

/// Tag on everything costop creates: launch templates, instances (standbys
/// and instant fleets) with their volumes and network interfaces, fleets,
/// snapshots and volume copies. Its value is [`MANAGED_VALUE`].
pub const MANAGED_TAG: &str = "costop.io/managed-by";

/// The value of [`MANAGED_TAG`].
pub const MANAGED_VALUE: &str = "costop";

/// The value of the cluster tag on what costop creates.
pub const CLUSTER_TAG_VALUE: &str = "owned";

/// The tag the EBS CSI driver puts on every volume and snapshot it
/// manages (value `true`); volume copies carry it too, so the driver
/// manages a copy once a PersistentVolume is bound to it.
pub const EBS_CSI_TAG: &str = "ebs.csi.aws.com/cluster";

/// The cluster tag, `kubernetes.io/cluster/<cluster>`, which EKS managed
/// node groups, Karpenter and self-managed groups put on their nodes.
pub fn cluster_tag(cluster: &str) -> String {
    format!("kubernetes.io/cluster/{cluster}")
}

/// The value of [`STANDBY_TAG`] for a stage.
pub fn standby_tag_value(stage: StandbyStage) -> &'static str {
    match stage {
        StandbyStage::New => "new",
        StandbyStage::Kept => "kept",
    }
}

/// The AWS Cloud port.
#[derive(Clone)]
pub struct AwsCloud {
    /// EC2.
    pub ec2: Ec2Client,
    /// ELBv2.
    pub elb: ElbClient,
    /// Auto Scaling.
    pub asg: AsgClient,
    /// SQS.
    pub sqs: SqsClient,
    /// CloudWatch (burstable instances' credit balance, [`credits`]).
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    settings: AwsSettings,
    /// The standby template, once cloned (one clone per process).
    cloned_template: std::sync::Arc<tokio::sync::Mutex<Option<String>>>,
    /// Held while a device name is chosen and attached.
    attaching: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Where the absolute desired capacity of each (restore key, group) is
    /// kept: a repeated or resumed restore step sets the same target
    /// instead of adding again. In this process unless the caller gives a
    /// shared one ([`AwsCloud::with_ledger`]: the server keeps it in its store).
    ledger: std::sync::Arc<dyn RestoreLedger>,
}

/// A future of the ledger.
pub type LedgerFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(i32, bool), String>> + Send + 'a>>;

/// Keeps the absolute desired capacity a restore step chose for a group.
pub trait RestoreLedger: Send + Sync {
    /// The target recorded for (`key`, `group`); when there is none, record
    /// `proposed`. Returns the target and whether this call recorded it.
    fn target<'a>(&'a self, key: &'a str, group: &'a str, proposed: i32) -> LedgerFuture<'a>;
}

/// A ledger in this process's memory.
#[derive(Default)]
pub struct MemoryLedger(std::sync::Mutex<std::collections::HashMap<(String, String), i32>>);

impl RestoreLedger for MemoryLedger {
    fn target<'a>(&'a self, key: &'a str, group: &'a str, proposed: i32) -> LedgerFuture<'a> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let slot = (key.to_string(), group.to_string());
        let out = match map.get(&slot) {
            Some(t) => (*t, false),
            None => {
                map.insert(slot, proposed);
                (proposed, true)
            }
        };
        Box::pin(std::future::ready(Ok(out)))
    }
}

/// The tag an instant fleet's instances carry: the restore step's token.
pub const RESTORE_TAG: &str = "costop.io/restore";

/// The idempotency token of a restore step: the CreateFleet ClientToken and
/// the [`RESTORE_TAG`] value (ASCII, at most 64 characters, stable for a key).
pub fn restore_token(key: &str) -> String {
    let fnv =
        |seed: u64| key.bytes().fold(seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("costop-{:016x}{:016x}", fnv(0xcbf2_9ce4_8422_2325), fnv(0x6c62_272e_07bb_0142))
}

/// The SDK configuration: the standard chain (environment, profile, IRSA or
/// pod identity in a cluster), an optional endpoint override (tests), 10 s
/// per operation, standard retries (throttling included), 4 attempts.
pub async fn sdk_config(region: Option<&str>, endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(4))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(4))
                .build(),
        );
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_string()));
    }
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    loader.load().await
}

async fn poll_until<T, F, Fut>(
    deadline: Instant,
    what: &'static str,
    resource: &str,
    mut check: F,
) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, AwsError>>,
{
    let mut wait = Duration::from_millis(200);
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() + wait > deadline {
            return Err(AwsError {
                action: what,
                resource: resource.into(),
                message: "not reached before the deadline".into(),
            });
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

impl AwsCloud {
    /// Clients from one SDK configuration.
    pub fn new(config: &aws_config::SdkConfig, settings: AwsSettings) -> Self {
        Self {
            ec2: Ec2Client::new(config),
            elb: ElbClient::new(config),
            asg: AsgClient::new(config),
            sqs: SqsClient::new(config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
            settings,
            cloned_template: Default::default(),
            attaching: Default::default(),
            ledger: std::sync::Arc::new(MemoryLedger::default()),
        }
    }

    /// Settings in use.
    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    /// The tags everything costop creates carries: [`MANAGED_TAG`] and,
    /// when the cluster is named, its [`cluster_tag`].
    pub fn creation_tags(&self) -> Vec<ec2t::Tag> {
        let mut tags = vec![ec2t::Tag::builder().key(MANAGED_TAG).value(MANAGED_VALUE).build()];
        if let Some(cluster) = self.settings.cluster_name.as_deref().filter(|c| !c.is_empty()) {
            tags.push(ec2t::Tag::builder().key(cluster_tag(cluster)).value(CLUSTER_TAG_VALUE).build());
        }
        tags
    }

    /// A tag specification for a resource created: [`AwsCloud::creation_tags`]
    /// and `extra`.
    fn tagged(&self, resource: ec2t::ResourceType, extra: &[(&str, &str)]) -> ec2t::TagSpecification {
        let extra = extra.iter().map(|(k, v)| ec2t::Tag::builder().key(*k).value(*v).build());
        ec2t::TagSpecification::builder()
            .resource_type(resource)
            .set_tags(Some(self.creation_tags().into_iter().chain(extra).collect()))
            .build()
    }

    /// Clone a live instance into a launch template (a new version if the
    /// name exists), so a standby is its twin. Returns the template id.
    pub async fn clone_launch_template(&self, instance_id: &str, name: &str) -> Result<String, AwsError> {
        let data = self
            .ec2
            .get_launch_template_data()
            .instance_id(instance_id)
            .send()
            .await
            .map_err(aws_err("GetLaunchTemplateData", instance_id))?
            .launch_template_data
            .ok_or_else(|| missing("GetLaunchTemplateData", instance_id, "launch template data"))?;
        let mut req = ec2t::RequestLaunchTemplateData::builder();
        if let Some(v) = data.image_id() {
            req = req.image_id(v);
        }
        if let Some(v) = data.instance_type() {
            req = req.instance_type(v.clone());
        }
        if let Some(v) = data.key_name() {
            req = req.key_name(v);
        }
        if let Some(v) = data.user_data() {
            req = req.user_data(v);
        }
        // A VPC instance's groups are listed on its network interface.
        let interface_groups = data.network_interfaces().iter().flat_map(|n| n.groups());
        let mut groups: Vec<&str> = data.security_group_ids().iter().map(String::as_str).collect();
        groups.extend(interface_groups.map(String::as_str).filter(|g| g.starts_with("sg-")));
        groups.sort_unstable();
        groups.dedup();
        for g in groups {
            req = req.security_group_ids(g);
        }
        if let Some(p) = data.iam_instance_profile() {
            let mut spec = ec2t::LaunchTemplateIamInstanceProfileSpecificationRequest::builder();
            if let Some(arn) = p.arn() {
                spec = spec.arn(arn);
            }
            if let Some(n) = p.name() {
                spec = spec.name(n);
            }
            req = req.iam_instance_profile(spec.build());
        }
        let req = req.build();
        let created = self
            .ec2
            .create_launch_template()
            .launch_template_name(name)
            .launch_template_data(req.clone())
            .tag_specifications(self.tagged(ec2t::ResourceType::LaunchTemplate, &[]))
            .send()
            .await;
        match created {
            Ok(out) => out
                .launch_template
                .and_then(|t| t.launch_template_id)
                .ok_or_else(|| missing("CreateLaunchTemplate", name, "template id")),
            Err(e) if aws_sdk_ec2::error::DisplayErrorContext(&e).to_string().contains("AlreadyExists") => {
                self.ec2
                    .create_launch_template_version()
                    .launch_template_name(name)
                    .launch_template_data(req)
                    .send()
                    .await
                    .map_err(aws_err("CreateLaunchTemplateVersion", name))?
                    .launch_template_version
                    .and_then(|v| v.launch_template_id)
                    .ok_or_else(|| missing("CreateLaunchTemplateVersion", name, "template id"))
            }
            Err(e) => Err(aws_err("CreateLaunchTemplate", name)(e)),
        }
    }

    /// Launch an on-demand standby from a template in a zone (in `subnet`
    /// when given: the twin's, so it lands in the cluster's VPC), as
    /// `instance_type` when given; tagged `costop.io/standby=new` and with
    /// the creation tags, as are its volumes and network interface.
    pub async fn launch_standby(
        &self,
        template_id: &str,
        zone: &str,
        subnet: Option<&str>,
        instance_type: Option<&str>,
    ) -> Result<String, AwsError> {
        self.run_standby(template_id, zone, subnet, instance_type, None).await
    }

    /// Launch a burstable standby (a T-family `instance_type`) as
    /// [`AwsCloud::launch_standby`] does, with its CPU credit option set at
    /// launch (RunInstances' `CreditSpecification.CpuCredits`, which
    /// overrides the template's). Without one, EC2 launches T2 as
    /// `standard` and T3, T3a and T4g as `unlimited`.
    pub async fn launch_burstable_standby(
        &self,
        template_id: &str,
        zone: &str,
        subnet: Option<&str>,
        instance_type: &str,
        credits: CreditMode,
    ) -> Result<String, AwsError> {
        self.run_standby(template_id, zone, subnet, Some(instance_type), Some(credits)).await
    }

    async fn run_standby(
        &self,
        template_id: &str,
        zone: &str,
        subnet: Option<&str>,
        instance_type: Option<&str>,
        credits: Option<CreditMode>,
    ) -> Result<String, AwsError> {
        let spec = ec2t::LaunchTemplateSpecification::builder()
            .launch_template_id(template_id)
            .version("$Latest")
            .build();
        let mut req =
            self.ec2
                .run_instances()
                .launch_template(spec)
                .min_count(1)
                .max_count(1)
                .placement(ec2t::Placement::builder().availability_zone(zone).build())
                .tag_specifications(self.tagged(
                    ec2t::ResourceType::Instance,
                    &[(STANDBY_TAG, standby_tag_value(StandbyStage::New))],
                ))
                .tag_specifications(self.tagged(ec2t::ResourceType::Volume, &[]))
                .tag_specifications(self.tagged(ec2t::ResourceType::NetworkInterface, &[]));
        if let Some(t) = instance_type {
            req = req.instance_type(ec2t::InstanceType::from(t));
        }
        if let Some(subnet) = subnet {
            req = req.subnet_id(subnet);
        }
        if let Some(mode) = credits {
            let spec = ec2t::CreditSpecificationRequest::builder().cpu_credits(mode.as_str()).build();
            req = req.credit_specification(spec);
        }
        let out = req.send().await.map_err(aws_err("RunInstances", template_id))?;
        out.instances()
            .first()
            .and_then(|i| i.instance_id().map(str::to_string))
            .ok_or_else(|| missing("RunInstances", template_id, "instance"))
    }

    /// Switch a burstable instance's CPU credit option
    /// (ModifyInstanceCreditSpecification). A switch from `unlimited` to
    /// `standard` has EC2 charge the surplus credits spent so far. An
    /// answer that does not name the instance as switched is an error.
    pub async fn set_credit_mode(&self, id: &str, mode: CreditMode) -> Result<(), AwsError> {
        const ACTION: &str = "ModifyInstanceCreditSpecification";
        let spec = ec2t::InstanceCreditSpecificationRequest::builder()
            .instance_id(id)
            .cpu_credits(mode.as_str())
            .build();
        let out = self
            .ec2
            .modify_instance_credit_specification()
            .instance_credit_specifications(spec)
            .send()
            .await
            .map_err(aws_err(ACTION, id))?;
        if let Some(failed) = out.unsuccessful_instance_credit_specifications().first() {
            let error = failed.error();
            let code = error.and_then(|e| e.code()).map_or("no code".to_string(), |c| c.as_str().to_string());
            let message = error.and_then(|e| e.message()).unwrap_or("no message");
            return Err(AwsError {
                action: ACTION,
                resource: id.into(),
                message: format!("{code}: {message}"),
            });
        }
        if !out.successful_instance_credit_specifications().iter().any(|s| s.instance_id() == Some(id)) {
            return Err(missing(ACTION, id, "successful credit specification for the instance"));
        }
        Ok(())
    }

    /// A burstable instance's CPU credit option
    /// (DescribeInstanceCreditSpecifications); an option other than
    /// `standard` or `unlimited` is an error naming it.
    pub async fn credit_mode(&self, id: &str) -> Result<CreditMode, AwsError> {
        const ACTION: &str = "DescribeInstanceCreditSpecifications";
        let out = self
            .ec2
            .describe_instance_credit_specifications()
            .instance_ids(id)
            .send()
            .await
            .map_err(aws_err(ACTION, id))?;
        let spec = out
            .instance_credit_specifications()
            .iter()
            .find(|s| s.instance_id() == Some(id))
            .ok_or_else(|| missing(ACTION, id, "credit specification for the instance"))?;
        let raw = spec.cpu_credits().ok_or_else(|| missing(ACTION, id, "CpuCredits"))?;
        CreditMode::parse(raw).map_err(|message| AwsError { action: ACTION, resource: id.into(), message })
    }

    /// Every standby instance not terminated (tag `costop.io/standby`), of
    /// this cluster when it is named (its [`cluster_tag`]).
    pub async fn standbys(&self) -> Result<Vec<StandbyInstance>, AwsError> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        let cluster = self.settings.cluster_name.as_deref().filter(|c| !c.is_empty());
        loop {
            let mut request = self.ec2.describe_instances();
            if let Some(c) = cluster {
                request = request.filters(
                    ec2t::Filter::builder()
                        .name(format!("tag:{}", cluster_tag(c)))
                        .values(CLUSTER_TAG_VALUE)
                        .build(),
                );
            }
            let out = request
                .filters(ec2t::Filter::builder().name("tag-key").values(STANDBY_TAG).build())
                .filters(
                    ec2t::Filter::builder()
                        .name("instance-state-name")
                        .set_values(Some(
                            ["pending", "running", "stopping", "stopped"].map(String::from).to_vec(),
                        ))
                        .build(),
                )
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(aws_err("DescribeInstances", STANDBY_TAG))?;
            for i in out.reservations().iter().flat_map(|r| r.instances()) {
                let id = i.instance_id().unwrap_or_default();
                let tag = i.tags().iter().find(|t| t.key() == Some(STANDBY_TAG)).and_then(|t| t.value());
                let stage = match tag {
                    Some("new") => StandbyStage::New,
                    Some("kept") => StandbyStage::Kept,
                    other => {
                        tracing::warn!(instance = id, tag = ?other, "unknown {STANDBY_TAG} value; left alone");
                        continue;
                    }
                };
                found.push(StandbyInstance {
                    instance_id: id.to_string(),
                    zone: i.placement().and_then(|p| p.availability_zone()).unwrap_or_default().to_string(),
                    stage,
                    launched_at: i.launch_time().map_or(0, |t| t.to_millis().unwrap_or(0).max(0) as u64),
                });
            }
            token = out.next_token().filter(|t| !t.is_empty()).map(str::to_string);
            if token.is_none() {
                return Ok(found);
            }
        }
    }

    /// One instance as EC2 describes it.
    async fn describe_instance(&self, id: &str) -> Result<ec2t::Instance, AwsError> {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(aws_err("DescribeInstances", id))?;
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .next()
            .cloned()
            .ok_or_else(|| missing("DescribeInstances", id, "instance"))
    }

    /// The subnet an instance runs in.
    async fn subnet_of(&self, id: &str) -> Result<Option<String>, AwsError> {
        Ok(self.describe_instance(id).await?.subnet_id().map(str::to_string))
    }

    /// Record a standby's stage on its instance.
    pub async fn tag_standby(&self, id: &str, stage: StandbyStage) -> Result<(), AwsError> {
        let value = standby_tag_value(stage);
        self.ec2
            .create_tags()
            .resources(id)
            .tags(ec2t::Tag::builder().key(STANDBY_TAG).value(value).build())
            .send()
            .await
            .map_err(aws_err("CreateTags", id))?;
        Ok(())
    }

    /// Terminate an instance.
    pub async fn terminate(&self, id: &str) -> Result<(), AwsError> {
        self.ec2
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(aws_err("TerminateInstances", id))?;
        Ok(())
    }

    /// The latest Spot price (USD per hour, Linux) of each pool AWS
    /// reports; pools it does not report are left out.
    pub async fn spot_prices(&self, pools: &[PoolId]) -> Result<BTreeMap<PoolId, f64>, AwsError> {
        let mut types: Vec<&str> = pools.iter().map(|p| p.instance_type.as_str()).collect();
        types.sort_unstable();
        types.dedup();
        let mut latest: BTreeMap<PoolId, (i64, f64)> = BTreeMap::new();
        let mut token: Option<String> = None;
        let resource = types.join(",");
        loop {
            let out = self
                .ec2
                .describe_spot_price_history()
                .set_instance_types(Some(types.iter().map(|t| ec2t::InstanceType::from(*t)).collect()))
                .product_descriptions("Linux/UNIX")
                .start_time(aws_sdk_ec2::primitives::DateTime::from(std::time::SystemTime::now()))
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(aws_err("DescribeSpotPriceHistory", &resource))?;
            for h in out.spot_price_history() {
                let (Some(t), Some(zone), Some(price)) =
                    (h.instance_type(), h.availability_zone(), h.spot_price())
                else {
                    continue;
                };
                let id = PoolId::new(t.as_str(), zone);
                let (Ok(price), true) = (price.parse::<f64>(), pools.contains(&id)) else { continue };
                let at = h.timestamp().map_or(0, |t| t.secs());
                if latest.get(&id).is_none_or(|(seen, _)| at >= *seen) {
                    latest.insert(id, (at, price));
                }
            }
            token = out.next_token().filter(|t| !t.is_empty()).map(str::to_string);
            if token.is_none() {
                return Ok(latest.into_iter().map(|(k, (_, p))| (k, p)).collect());
            }
        }
    }

    /// The template standbys launch from: the configured one, or a clone of
    /// `twin_instance` made once per process.
    async fn standby_template(&self, twin_instance: &str) -> Result<String, AwsError> {
        if let Some(id) = &self.settings.standby_template_id {
            return Ok(id.clone());
        }
        let mut cached = self.cloned_template.lock().await;
        if let Some(id) = cached.as_ref() {
            return Ok(id.clone());
        }
        let name = if self.settings.standby_template_name.is_empty() {
            "costop-standby"
        } else {
            &self.settings.standby_template_name
        };
        let id = self.clone_launch_template(twin_instance, name).await?;
        *cached = Some(id.clone());
        Ok(id)
    }

    /// An instance's state and type.
    pub async fn instance(&self, id: &str) -> Result<(ec2t::InstanceStateName, String), AwsError> {
        let inst = self.describe_instance(id).await?;
        let state = inst
            .state()
            .and_then(|s| s.name().cloned())
            .ok_or_else(|| missing("DescribeInstances", id, "state"))?;
        Ok((state, inst.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default()))
    }

    async fn wait_state(
        &self,
        id: &str,
        want: ec2t::InstanceStateName,
        deadline: Instant,
    ) -> Result<(), AwsError> {
        poll_until(deadline, "DescribeInstances", id, || async {
            let (state, _) = self.instance(id).await?;
            Ok((state == want).then_some(()))
        })
        .await
    }

    /// Stop an instance and wait until it is stopped.
    pub async fn stop(&self, id: &str, deadline: Instant) -> Result<(), AwsError> {
        self.ec2.stop_instances().instance_ids(id).send().await.map_err(aws_err("StopInstances", id))?;
        self.wait_state(id, ec2t::InstanceStateName::Stopped, deadline).await
    }

    /// Re-type a stopped instance.
    pub async fn retype(&self, id: &str, instance_type: &str) -> Result<(), AwsError> {
        self.ec2
            .modify_instance_attribute()
            .instance_id(id)
            .instance_type(ec2t::AttributeValue::builder().value(instance_type).build())
            .send()
            .await
            .map_err(aws_err("ModifyInstanceAttribute", id))?;
        Ok(())
    }

    /// Start an instance and wait until it runs.
    pub async fn start(&self, id: &str, deadline: Instant) -> Result<(), AwsError> {
        self.ec2.start_instances().instance_ids(id).send().await.map_err(aws_err("StartInstances", id))?;
        self.wait_state(id, ec2t::InstanceStateName::Running, deadline).await
    }

    /// A volume's state, zone, and the instance it is attached to.
    async fn volume(&self, id: &str) -> Result<(ec2t::VolumeState, String, Option<String>), AwsError> {
        let out = self
            .ec2
            .describe_volumes()
            .volume_ids(id)
            .send()
            .await
            .map_err(aws_err("DescribeVolumes", id))?;
        let v = out.volumes().first().ok_or_else(|| missing("DescribeVolumes", id, "volume"))?;
        Ok((
            v.state().cloned().unwrap_or(ec2t::VolumeState::Error),
            v.availability_zone().unwrap_or("").to_string(),
            v.attachments().first().and_then(|a| a.instance_id()).map(str::to_string),
        ))
    }

    async fn volume_state(&self, id: &str) -> Result<(ec2t::VolumeState, String), AwsError> {
        let (state, zone, _) = self.volume(id).await?;
        Ok((state, zone))
    }

    /// Detach a volume and wait until it is available. `force` only as a
    /// last resort near the deadline.
    pub async fn detach(&self, volume: &str, force: bool, deadline: Instant) -> Result<(), AwsError> {
        let out = self
            .ec2
            .describe_volumes()
            .volume_ids(volume)
            .send()
            .await
            .map_err(aws_err("DescribeVolumes", volume))?;
        let attachment = out.volumes().first().and_then(|v| v.attachments().first()).cloned();
        let mut req = self.ec2.detach_volume().volume_id(volume);
        // Naming the attachment is optional in EC2's API, but some emulators need it.
        if let Some(a) = &attachment {
            req = req
                .set_instance_id(a.instance_id().map(str::to_string))
                .set_device(a.device().map(str::to_string));
        }
        if force {
            req = req.force(true);
        }
        req.send().await.map_err(aws_err("DetachVolume", volume))?;
        poll_until(deadline, "DescribeVolumes", volume, || async {
            Ok((self.volume_state(volume).await?.0 == ec2t::VolumeState::Available).then_some(()))
        })
        .await
    }

    /// The first device name from `volume_device` on (`…f` to `…z`) that
    /// the instance does not use.
    async fn free_device(&self, instance: &str) -> Result<String, AwsError> {
        let described = self.describe_instance(instance).await?;
        let used: Vec<&str> =
            described.block_device_mappings().iter().filter_map(|m| m.device_name()).collect();
        let first =
            if self.settings.volume_device.is_empty() { "/dev/xvdf" } else { &self.settings.volume_device };
        // `/dev/xvdf` → try `/dev/xvdf` … `/dev/xvdz`; a name not ending in a
        // letter is not a series: the EBS default series is used.
        let (prefix, from) = match first.chars().last() {
            Some(c) if c.is_ascii_lowercase() && first.len() > 1 => (&first[..first.len() - 1], c),
            _ => ("/dev/xvd", 'f'),
        };
        (from..='z')
            .map(|c| format!("{prefix}{c}"))
            .find(|d| !used.contains(&d.as_str()))
            .ok_or_else(|| missing("AttachVolume", instance, "free device name"))
    }

    /// Attach a volume under a free device name and wait until it is in use.
    pub async fn attach(&self, volume: &str, instance: &str, deadline: Instant) -> Result<(), AwsError> {
        // One attach at a time per process, held until the volume is in use:
        // only then does the instance list the device, so the next attach
        // cannot pick the same name.
        let _one = self.attaching.lock().await;
        let device = self.free_device(instance).await?;
        self.ec2
            .attach_volume()
            .volume_id(volume)
            .instance_id(instance)
            .device(&device)
            .send()
            .await
            .map_err(aws_err("AttachVolume", volume))?;
        poll_until(deadline, "DescribeVolumes", volume, || async {
            Ok((self.volume_state(volume).await?.0 == ec2t::VolumeState::InUse).then_some(()))
        })
        .await
    }

    /// Copy a volume into another zone: snapshot, then a new volume from it.
    /// Both carry the creation tags; the copy also the EBS CSI driver's
    /// [`EBS_CSI_TAG`], as the volume a PersistentVolume will name.
    pub async fn copy_to_zone(
        &self,
        volume: &str,
        zone: &str,
        deadline: Instant,
    ) -> Result<String, AwsError> {
        let snap = self
            .ec2
            .create_snapshot()
            .volume_id(volume)
            .description("costop: move across zones")
            .tag_specifications(self.tagged(ec2t::ResourceType::Snapshot, &[]))
            .send()
            .await
            .map_err(aws_err("CreateSnapshot", volume))?
            .snapshot_id
            .ok_or_else(|| missing("CreateSnapshot", volume, "snapshot id"))?;
        poll_until(deadline, "DescribeSnapshots", &snap, || async {
            let out = self
                .ec2
                .describe_snapshots()
                .snapshot_ids(&snap)
                .send()
                .await
                .map_err(aws_err("DescribeSnapshots", &snap))?;
            Ok(out
                .snapshots()
                .first()
                .and_then(|s| s.state())
                .is_some_and(|s| *s == ec2t::SnapshotState::Completed)
                .then_some(()))
        })
        .await?;
        let new = self
            .ec2
            .create_volume()
            .availability_zone(zone)
            .snapshot_id(&snap)
            .volume_type(ec2t::VolumeType::Gp3)
            .tag_specifications(self.tagged(ec2t::ResourceType::Volume, &[(EBS_CSI_TAG, "true")]))
            .send()
            .await
            .map_err(aws_err("CreateVolume", &snap))?
            .volume_id
            .ok_or_else(|| missing("CreateVolume", &snap, "volume id"))?;
        poll_until(deadline, "DescribeVolumes", &new, || async {
            Ok((self.volume_state(&new).await?.0 == ec2t::VolumeState::Available).then_some(()))
        })
        .await?;
        Ok(new)
    }

    /// Target groups holding an instance.
    pub async fn target_groups_of(&self, instance: &str) -> Result<Vec<String>, AwsError> {
        let mut groups = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .elb
                .describe_target_groups()
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(aws_err("DescribeTargetGroups", instance))?;
            for tg in out.target_groups() {
                let Some(arn) = tg.target_group_arn() else { continue };
                if tg.target_type() == Some(&elbt::TargetTypeEnum::Lambda) {
                    continue;
                }
                let health = self
                    .elb
                    .describe_target_health()
                    .target_group_arn(arn)
                    .send()
                    .await
                    .map_err(aws_err("DescribeTargetHealth", arn))?;
                if health
                    .target_health_descriptions()
                    .iter()
                    .any(|d| d.target().and_then(|t| t.id()) == Some(instance))
                {
                    groups.push(arn.to_string());
                }
            }
            marker = out.next_marker().map(str::to_string);
            if marker.is_none() {
                return Ok(groups);
            }
        }
    }

    /// Deregister an instance from every target group that holds it; warn
    /// where the group's deregistration delay outlasts `seconds_left`.
    pub async fn deregister(&self, instance: &str, seconds_left: u64) -> Result<Vec<String>, AwsError> {
        let groups = self.target_groups_of(instance).await?;
        for arn in &groups {
            let target = elbt::TargetDescription::builder().id(instance).build();
            self.elb
                .deregister_targets()
                .target_group_arn(arn)
                .targets(target)
                .send()
                .await
                .map_err(aws_err("DeregisterTargets", arn))?;
            let attrs = self
                .elb
                .describe_target_group_attributes()
                .target_group_arn(arn)
                .send()
                .await
                .map_err(aws_err("DescribeTargetGroupAttributes", arn))?;
            let delay = attrs
                .attributes()
                .iter()
                .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
                .and_then(|a| a.value())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(300);
            if delay > seconds_left {
                tracing::warn!(
                    target_group = arn,
                    delay,
                    seconds_left,
                    "deregistration delay outlasts the notice: connections will be cut"
                );
            }
        }
        Ok(groups)
    }

    /// Set a rule's weighted forward: the function gets `function_weight` (or 0).
    pub async fn shift(&self, bridge: &Bridge, on: bool) -> Result<(), AwsError> {
        let fw = if on { bridge.function_weight.clamp(0, 999) } else { 0 };
        let sw = 999 - fw;
        let forward = elbt::ForwardActionConfig::builder()
            .target_groups(
                elbt::TargetGroupTuple::builder()
                    .target_group_arn(&bridge.service_target_group)
                    .weight(sw)
                    .build(),
            )
            .target_groups(
                elbt::TargetGroupTuple::builder()
                    .target_group_arn(&bridge.function_target_group)
                    .weight(fw)
                    .build(),
            )
            .build();
        let action =
            elbt::Action::builder().r#type(elbt::ActionTypeEnum::Forward).forward_config(forward).build();
        self.elb
            .modify_rule()
            .rule_arn(&bridge.rule_arn)
            .actions(action)
            .send()
            .await
            .map_err(aws_err("ModifyRule", &bridge.rule_arn))?;
        Ok(())
    }

    /// Raise an Auto Scaling group's desired capacity by `more`.
    pub async fn raise_desired(&self, group: &str, more: i32) -> Result<i32, AwsError> {
        let (desired, max) = self.desired_of(group).await?;
        let target = (desired + more).min(max);
        self.set_desired(group, target).await?;
        Ok(target)
    }

    async fn desired_of(&self, group: &str) -> Result<(i32, i32), AwsError> {
        let out = self
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .map_err(aws_err("DescribeAutoScalingGroups", group))?;
        let g = out
            .auto_scaling_groups()
            .first()
            .ok_or_else(|| missing("DescribeAutoScalingGroups", group, "group"))?;
        Ok((g.desired_capacity().unwrap_or(0), g.max_size().unwrap_or(i32::MAX)))
    }

    async fn set_desired(&self, group: &str, target: i32) -> Result<(), AwsError> {
        self.asg
            .set_desired_capacity()
            .auto_scaling_group_name(group)
            .desired_capacity(target)
            .send()
            .await
            .map_err(aws_err("SetDesiredCapacity", group))?;
        Ok(())
    }

    /// Keep restore targets in `ledger` (shared by every server replica).
    pub fn with_ledger(mut self, ledger: std::sync::Arc<dyn RestoreLedger>) -> Self {
        self.ledger = ledger;
        self
    }

    /// Raise a group for the restore step `key`: the first time, to an
    /// absolute target (desired + `more`, within the maximum) recorded in
    /// the ledger before it is set; again (a retry, a resumed step), to that
    /// same target, and only if the group is below it: never adding twice.
    pub async fn raise_desired_once(&self, key: &str, group: &str, more: i32) -> Result<String, AwsError> {
        let (desired, max) = self.desired_of(group).await?;
        let (target, first) =
            self.ledger.target(key, group, (desired + more).min(max)).await.map_err(|message| AwsError {
                action: "SetDesiredCapacity",
                resource: group.into(),
                message: format!("cannot record the target of {key}: {message}"),
            })?;
        if desired >= target && !first {
            return Ok(format!("{group} desired {desired} (already raised for {key})"));
        }
        if desired < target {
            self.set_desired(group, target).await?;
        }
        Ok(if first {
            format!("{group} desired {target}")
        } else {
            format!("{group} desired {target} (again, for {key})")
        })
    }

    /// Instances an earlier attempt of restore step `key` launched (tagged
    /// with its token), pending or running.
    pub async fn restored_instances(&self, key: &str) -> Result<Vec<String>, AwsError> {
        let token = restore_token(key);
        let out = self
            .ec2
            .describe_instances()
            .filters(ec2t::Filter::builder().name(format!("tag:{RESTORE_TAG}")).values(&token).build())
            .filters(
                ec2t::Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .send()
            .await
            .map_err(aws_err("DescribeInstances", &token))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect())
    }

    /// An instant fleet, price-capacity-optimized over the given pools.
    pub async fn instant_fleet(
        &self,
        template_id: &str,
        pools: &[(PoolId, u32)],
    ) -> Result<Vec<String>, AwsError> {
        self.instant_fleet_for(None, template_id, pools).await
    }

    /// An instant fleet for restore step `key` (if any): sent with the
    /// step's ClientToken, its instances tagged [`RESTORE_TAG`] with it;
    /// the fleet and its instances carry the creation tags.
    async fn instant_fleet_for(
        &self,
        key: Option<&str>,
        template_id: &str,
        pools: &[(PoolId, u32)],
    ) -> Result<Vec<String>, AwsError> {
        let total: u32 = pools.iter().map(|(_, n)| n).sum();
        let mut config = ec2t::FleetLaunchTemplateConfigRequest::builder().launch_template_specification(
            ec2t::FleetLaunchTemplateSpecificationRequest::builder()
                .launch_template_id(template_id)
                .version("$Latest")
                .build(),
        );
        for (pool, _) in pools {
            config = config.overrides(
                ec2t::FleetLaunchTemplateOverridesRequest::builder()
                    .instance_type(ec2t::InstanceType::from(pool.instance_type.as_str()))
                    .availability_zone(&pool.zone)
                    .build(),
            );
        }
        let capacity = ec2t::TargetCapacitySpecificationRequest::builder()
            .total_target_capacity(total as i32)
            .default_target_capacity_type(ec2t::DefaultTargetCapacityType::Spot)
            .build();
        let mut request = self
            .ec2
            .create_fleet()
            .r#type(ec2t::FleetType::Instant)
            .launch_template_configs(config.build())
            .target_capacity_specification(capacity)
            .spot_options(
                ec2t::SpotOptionsRequest::builder()
                    .allocation_strategy(ec2t::SpotAllocationStrategy::PriceCapacityOptimized)
                    .build(),
            );
        // An instant fleet tags only itself and its instances at creation
        // (EC2 API reference, CreateFleet TagSpecifications).
        request = request.tag_specifications(self.tagged(ec2t::ResourceType::Fleet, &[]));
        match key {
            Some(key) => {
                let token = restore_token(key);
                request = request
                    .client_token(&token)
                    .tag_specifications(self.tagged(ec2t::ResourceType::Instance, &[(RESTORE_TAG, &token)]));
            }
            None => request = request.tag_specifications(self.tagged(ec2t::ResourceType::Instance, &[])),
        }
        let out = request.send().await.map_err(aws_err("CreateFleet", template_id))?;
        Ok(out.instances().iter().flat_map(|i| i.instance_ids()).cloned().collect())
    }

    /// End an instance and shrink its Auto Scaling group by one; an
    /// instance in no group is terminated (the IAM policy allows that only
    /// for instances costop launched: tagged [`MANAGED_TAG`] and the
    /// cluster tag).
    pub async fn retire(&self, id: &str) -> Result<String, AwsError> {
        let out = self
            .asg
            .describe_auto_scaling_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(aws_err("DescribeAutoScalingInstances", id))?;
        match out.auto_scaling_instances().first().and_then(|i| i.auto_scaling_group_name()) {
            Some(group) => {
                self.asg
                    .terminate_instance_in_auto_scaling_group()
                    .instance_id(id)
                    .should_decrement_desired_capacity(true)
                    .send()
                    .await
                    .map_err(aws_err("TerminateInstanceInAutoScalingGroup", id))?;
                Ok(format!("{id} terminated; {group} desired capacity lowered by one"))
            }
            None => {
                self.terminate(id).await?;
                Ok(format!("{id} terminated"))
            }
        }
    }

    /// Complete an Auto Scaling lifecycle hook (`CONTINUE`).
    pub async fn complete_lifecycle(&self, action: &events::LifecycleAction) -> Result<(), AwsError> {
        self.asg
            .complete_lifecycle_action()
            .auto_scaling_group_name(&action.group)
            .lifecycle_hook_name(&action.hook)
            .lifecycle_action_token(&action.token)
            .instance_id(&action.instance_id)
            .lifecycle_action_result("CONTINUE")
            .send()
            .await
            .map_err(aws_err("CompleteLifecycleAction", &action.instance_id))?;
        Ok(())
    }
}

/// Instance id of a node (from its providerID).
fn instance_of(node: &NodeView) -> Result<&str, AwsError> {
    if node.instance_id.is_empty() {
        Err(AwsError {
            action: "resolve",
            resource: node.name.to_string(),
            message: "the node has no aws:/// providerID".into(),
        })
    } else {
        Ok(&node.instance_id)
    }
}

impl CloudPort for AwsCloud {
    type Error = AwsError;

    async fn deregister_targets(&self, node: &NodeView) -> Result<String, AwsError> {
        let groups = self.deregister(instance_of(node)?, 120).await?;
        Ok(format!("deregistered {} from {} target groups", node.name, groups.len()))
    }

    async fn wake_standby(&self, node: &NodeView, retype_to: Option<&str>) -> Result<String, AwsError> {
        let id = instance_of(node)?;
        let deadline = Instant::now() + Duration::from_secs(90);
        let (state, current) = self.instance(id).await?;
        if state == ec2t::InstanceStateName::Running {
            return Ok(format!("{id} already running"));
        }
        if let Some(t) = retype_to.filter(|t| *t != current) {
            self.retype(id, t).await?;
        }
        self.start(id, deadline).await?;
        Ok(format!("{id} started{}", retype_to.map(|t| format!(" as {t}")).unwrap_or_default()))
    }

    async fn move_volume(
        &self,
        volume_id: &str,
        to: &NodeView,
        via_snapshot: bool,
        force: bool,
    ) -> Result<String, AwsError> {
        let target = instance_of(to)?;
        let (state, _, holder) = self.volume(volume_id).await?;
        if holder.as_deref() == Some(target) {
            return Ok(format!("{volume_id} already attached to {target}"));
        }
        if state == ec2t::VolumeState::InUse {
            self.detach(volume_id, force, Instant::now() + Duration::from_secs(60)).await?;
        }
        let how = if force { "force-detached" } else { "detached" };
        if via_snapshot {
            // The claim still names the old volume, in the old zone: the copy
            // is made, but the move is not done until a volume record is
            // bound to it, which costop does not do. Said as a failure.
            let copy = self
                .copy_to_zone(volume_id, &to.pool.zone, Instant::now() + Duration::from_secs(900))
                .await?;
            return Err(AwsError {
                action: "CreateVolume",
                resource: volume_id.into(),
                message: format!(
                    "{how}, and copied to {copy} in {}; bind a PersistentVolume to {copy} for the pod to use it",
                    to.pool.zone
                ),
            });
        }
        self.attach(volume_id, target, Instant::now() + Duration::from_secs(60)).await?;
        Ok(format!("{volume_id} {how} and attached to {target} ({})", to.name))
    }

    async fn bridge(&self, workloads: &[String], on: bool) -> Result<String, AwsError> {
        let mut shifted = 0;
        for w in workloads {
            if let Some(b) = self.settings.bridges.get(w) {
                self.shift(b, on).await?;
                shifted += 1;
            }
        }
        Ok(format!(
            "{} {shifted} of {} workloads",
            if on { "bridged" } else { "shifted back" },
            workloads.len()
        ))
    }

    /// Idempotent for one step key: a group is raised to an absolute target
    /// once per key (see [`AwsCloud::raise_desired_once`]); the instant
    /// fleet carries the key's ClientToken and tags its instances with it,
    /// and is not sent again while instances with that tag are pending or
    /// running.
    async fn restore_capacity(&self, key: &str, pools: &[(PoolId, u32)]) -> Result<String, AwsError> {
        let mut launched = Vec::new();
        let mut fleet = Vec::new();
        for (pool, n) in pools {
            match self.settings.asg_by_pool.get(pool) {
                Some(group) => launched.push(self.raise_desired_once(key, group, *n as i32).await?),
                None => fleet.push((pool.clone(), *n)),
            }
        }
        if !fleet.is_empty() {
            let template = self.settings.launch_template_id.as_deref().ok_or_else(|| AwsError {
                action: "CreateFleet",
                resource: key.into(),
                message: "no Auto Scaling group for the pool and no launch template configured".into(),
            })?;
            let earlier = self.restored_instances(key).await?;
            if earlier.is_empty() {
                let ids = self.instant_fleet_for(Some(key), template, &fleet).await?;
                launched.push(format!("fleet {}", ids.join(",")));
            } else {
                launched.push(format!("fleet {} (already launched for {key})", earlier.join(",")));
            }
        }
        Ok(launched.join("; "))
    }

    /// The fleet's instances tagged with the key (those an Auto Scaling
    /// group launched for it carry no key and are not listed).
    async fn launched_under(&self, key: &str) -> Result<Vec<String>, AwsError> {
        self.restored_instances(key).await
    }

    async fn retire_node(&self, node: &NodeView) -> Result<String, AwsError> {
        self.retire(instance_of(node)?).await
    }
}

impl WarmPoolPort for AwsCloud {
    type Error = AwsError;

    async fn standby_instances(&self) -> Result<Vec<StandbyInstance>, AwsError> {
        self.standbys().await
    }

    async fn launch_standby(
        &self,
        twin: &NodeView,
        zone: &str,
        instance_type: &str,
    ) -> Result<String, AwsError> {
        let twin_id = instance_of(twin)?;
        let template = self.standby_template(twin_id).await?;
        // A cloned template names no network; a configured one may (then a
        // subnet on the launch would conflict with it).
        let subnet = match self.settings.standby_template_id {
            Some(_) => None,
            None => self.subnet_of(twin_id).await?,
        };
        AwsCloud::launch_standby(self, &template, zone, subnet.as_deref(), Some(instance_type)).await
    }

    async fn park_standby(&self, instance_id: &str, stop: bool) -> Result<String, AwsError> {
        // Kept first: a stop that fails is retried by the keeper, while an
        // instance left `new` would be taken for one that never joined.
        self.tag_standby(instance_id, StandbyStage::Kept).await?;
        let (state, _) = self.instance(instance_id).await?;
        let stopped = matches!(state, ec2t::InstanceStateName::Stopped);
        if stop && !stopped {
            self.stop(instance_id, Instant::now() + Duration::from_secs(300)).await?;
        }
        Ok(format!("{instance_id} kept{}", if stop { " stopped" } else { " running" }))
    }

    async fn terminate_standby(&self, instance_id: &str) -> Result<(), AwsError> {
        self.terminate(instance_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::{
        cluster_tag, standby_tag_value, CLUSTER_TAG_VALUE, EBS_CSI_TAG, IAM_ACTIONS, MANAGED_TAG,
        MANAGED_VALUE, STANDBY_TAG,
    };
    use costop_core::ports::StandbyStage;
    use serde_json::Value;
    use std::collections::BTreeSet;

    /// `self.ec2.describe_instances()` → `ec2:DescribeInstances`, for every
    /// SDK call in the sources (whitespace removed, so calls split over lines count).
    fn actions_called() -> BTreeSet<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = BTreeSet::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let text: String =
                std::fs::read_to_string(entry.unwrap().path()).unwrap().split_whitespace().collect();
            for (client, service) in [
                ("ec2", "ec2"),
                ("elb", "elasticloadbalancing"),
                ("asg", "autoscaling"),
                ("sqs", "sqs"),
                ("cloudwatch", "cloudwatch"),
            ] {
                for part in text.split(&format!(".{client}.")).skip(1) {
                    let method: String =
                        part.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    if method.is_empty() || !part[method.len()..].starts_with("()") {
                        continue;
                    }
                    let camel: String = method.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect();
                    found.insert(format!("{service}:{camel}"));
                }
            }
        }
        found
    }

    fn repo_file(path: &str) -> String {
        let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path);
        std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
    }

    /// `deploy/iam-policy.json`, parsed as it is (placeholders and all).
    fn policy() -> Value {
        serde_json::from_str(&repo_file("deploy/iam-policy.json"))
            .unwrap_or_else(|e| panic!("deploy/iam-policy.json is not JSON: {e}"))
    }

    /// A policy element that is a string or a list of strings.
    fn strings(v: &Value) -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().map(|x| x.as_str().expect("a string").to_string()).collect(),
            other => panic!("not a string or a list of strings: {other}"),
        }
    }

    fn statements(policy: &Value) -> Vec<&Value> {
        policy["Statement"].as_array().expect("a Statement list").iter().collect()
    }

    fn sid(s: &Value) -> &str {
        s["Sid"].as_str().unwrap_or("(no Sid)")
    }

    /// `Describe*` and `Get*` only read.
    fn reads_only(action: &str) -> bool {
        let verb = action.split_once(':').map_or(action, |(_, v)| v);
        verb.starts_with("Describe") || verb.starts_with("Get")
    }

    #[test]
    fn the_iam_policy_grants_exactly_what_the_code_calls() {
        let called = actions_called();
        let listed: BTreeSet<String> = IAM_ACTIONS.iter().map(|s| s.to_string()).collect();
        assert_eq!(called, listed, "IAM_ACTIONS differs from the SDK calls in src/");
        let policy = policy();
        let granted: BTreeSet<String> = statements(&policy)
            .iter()
            .flat_map(|s| strings(&s["Action"]))
            .filter(|a| a != "iam:PassRole")
            .collect();
        assert_eq!(granted, listed, "deploy/iam-policy.json differs from IAM_ACTIONS");
    }

    #[test]
    fn every_mutating_ec2_action_is_granted_under_a_condition() {
        let policy = policy();
        assert_eq!(policy["Version"], "2012-10-17");
        let mut sids = BTreeSet::new();
        for s in statements(&policy) {
            let name = sid(s);
            assert!(sids.insert(name.to_string()), "Sid {name} twice");
            assert_eq!(s["Effect"], "Allow", "{name}: only Allow statements");
            assert!(s.get("NotAction").is_none() && s.get("NotResource").is_none(), "{name}: no Not*");
            let actions = strings(&s["Action"]);
            let resources = strings(&s["Resource"]);
            assert!(!actions.is_empty() && !resources.is_empty(), "{name}: actions and resources");
            assert!(actions.iter().all(|a| !a.contains('*')), "{name}: actions are named, not patterns");
            let mutating: Vec<&String> = actions.iter().filter(|a| !reads_only(a)).collect();
            if mutating.is_empty() {
                continue;
            }
            // Anything that changes something names its resources…
            assert!(
                resources.iter().all(|r| r != "*" && r.starts_with("arn:aws:")),
                "{name}: {mutating:?} on {resources:?}: not on every resource"
            );
            // …and every EC2 change is also bound by a condition (a tag, a VPC, the region).
            if mutating.iter().any(|a| a.starts_with("ec2:")) {
                let condition = s["Condition"].as_object();
                let filled = condition.is_some_and(|c| {
                    !c.is_empty() && c.values().all(|keys| keys.as_object().is_some_and(|k| !k.is_empty()))
                });
                assert!(filled, "{name}: {mutating:?} without a condition");
                for (op, keys) in condition.into_iter().flatten() {
                    for (key, value) in keys.as_object().into_iter().flatten() {
                        assert!(!strings(value).is_empty(), "{name}: {op} {key} has no value");
                    }
                }
            }
        }
        // No mutating EC2 action escapes through a statement without a condition.
        let unconditioned: Vec<String> = statements(&policy)
            .iter()
            .filter(|s| s.get("Condition").is_none())
            .flat_map(|s| strings(&s["Action"]))
            .filter(|a| a.starts_with("ec2:") && !reads_only(a))
            .collect();
        assert!(unconditioned.is_empty(), "{unconditioned:?}");
    }

    #[test]
    fn pass_role_is_for_the_node_role_and_ec2_only() {
        let policy = policy();
        let passing: Vec<&Value> = statements(&policy)
            .into_iter()
            .filter(|s| strings(&s["Action"]).iter().any(|a| a == "iam:PassRole"))
            .collect();
        assert_eq!(passing.len(), 1, "one statement passes a role");
        let s = passing[0];
        assert_eq!(strings(&s["Action"]), ["iam:PassRole"], "{}: PassRole alone", sid(s));
        assert_eq!(strings(&s["Resource"]), ["arn:aws:iam::ACCOUNT_ID:role/NODE_ROLE_NAME"]);
        assert_eq!(s["Condition"]["StringEquals"]["iam:PassedToService"], "ec2.amazonaws.com");
    }

    /// The tags the policy asks for are the ones the adapter puts on.
    #[test]
    fn the_policy_asks_for_the_tags_the_code_sets() {
        let policy = policy();
        let cluster = cluster_tag("CLUSTER_NAME");
        let stages: BTreeSet<String> =
            [StandbyStage::New, StandbyStage::Kept].map(|s| standby_tag_value(s).to_string()).into();
        let mut required_at_creation = BTreeSet::new();
        for s in statements(&policy) {
            for (op, keys) in s["Condition"].as_object().into_iter().flatten() {
                for (key, value) in keys.as_object().into_iter().flatten() {
                    let values: BTreeSet<String> = strings(value).into_iter().collect();
                    let tag = key
                        .strip_prefix("aws:RequestTag/")
                        .or_else(|| key.strip_prefix("aws:ResourceTag/"))
                        .or_else(|| key.strip_prefix("ec2:ResourceTag/"))
                        .or_else(|| key.strip_prefix("autoscaling:ResourceTag/"));
                    let Some(tag) = tag else { continue };
                    if key.starts_with("aws:RequestTag/") {
                        required_at_creation.insert(tag.to_string());
                    }
                    let want: BTreeSet<String> = if tag == MANAGED_TAG {
                        [MANAGED_VALUE.to_string()].into()
                    } else if tag == STANDBY_TAG {
                        stages.clone()
                    } else if tag == EBS_CSI_TAG {
                        ["true".to_string()].into()
                    } else if tag == cluster && key.starts_with("aws:RequestTag/") {
                        [CLUSTER_TAG_VALUE.to_string()].into()
                    } else if tag == cluster {
                        // Nodes and what costop created are `owned`; groups,
                        // target groups and rules may also be `shared`.
                        let shared = values.contains("shared").then(|| "shared".to_string());
                        [CLUSTER_TAG_VALUE.to_string()].into_iter().chain(shared).collect()
                    } else if tag == "elbv2.k8s.aws/cluster" {
                        ["CLUSTER_NAME".to_string()].into()
                    } else {
                        panic!("{}: {op} {key}: a tag the adapter knows nothing of", sid(s))
                    };
                    assert_eq!(values, want, "{}: {op} {key}", sid(s));
                }
            }
        }
        let want: BTreeSet<String> = [MANAGED_TAG.to_string(), cluster, STANDBY_TAG.to_string()].into();
        assert_eq!(required_at_creation, want);
    }

    /// Every placeholder (`ACCOUNT_ID`, `CLUSTER_NAME`, …) is explained in
    /// `deploy/iam/README.md`; the trust policies there are JSON; with the
    /// placeholders filled in, the policy fits IAM's 10,240-character limit
    /// of a role's inline policies (its managed-policy limit, 6,144, it does not).
    #[test]
    fn the_placeholders_are_documented_and_the_policy_fits() {
        let text = repo_file("deploy/iam-policy.json");
        let readme = repo_file("deploy/iam/README.md");
        let mut placeholders = BTreeSet::new();
        for word in text.split(|c: char| !(c.is_ascii_uppercase() || c == '_')) {
            if word.len() >= 3 && word.contains(|c: char| c.is_ascii_uppercase()) {
                placeholders.insert(word.to_string());
            }
        }
        let want: BTreeSet<String> = [
            "ACCOUNT_ID",
            "CLUSTER_NAME",
            "DEAD_LETTER_QUEUE_NAME",
            "NODE_ROLE_NAME",
            "QUEUE_NAME",
            "REGION",
            "VPC_ID",
        ]
        .map(String::from)
        .into();
        assert_eq!(placeholders, want, "placeholders in deploy/iam-policy.json");
        for p in &placeholders {
            assert!(readme.contains(&format!("`{p}`")), "deploy/iam/README.md does not explain `{p}`");
        }
        for trust in ["deploy/iam/trust-irsa.json", "deploy/iam/trust-pod-identity.json"] {
            let t: Value = serde_json::from_str(&repo_file(trust)).unwrap_or_else(|e| panic!("{trust}: {e}"));
            assert!(!statements(&t).is_empty(), "{trust}");
            assert!(readme.contains(trust.trim_start_matches("deploy/iam/")), "README names {trust}");
        }
        // The longest names EKS and IAM allow for the cluster and role.
        let filled = [
            ("DEAD_LETTER_QUEUE_NAME", "d".repeat(80)),
            ("QUEUE_NAME", "q".repeat(80)),
            ("NODE_ROLE_NAME", "r".repeat(64)),
            ("CLUSTER_NAME", "c".repeat(100)),
            ("ACCOUNT_ID", "123456789012".to_string()),
            ("REGION", "ap-southeast-2".to_string()),
            ("VPC_ID", "vpc-0123456789abcdef0".to_string()),
        ]
        .iter()
        .fold(text.clone(), |t, (p, v)| t.replace(p, v));
        let size = filled.chars().filter(|c| !c.is_whitespace()).count();
        assert!(size <= 10_240, "{size} characters: over IAM's inline limit");
        let arns: Value = serde_json::from_str(&filled).unwrap();
        for s in statements(&arns) {
            for r in strings(&s["Resource"]).iter().filter(|r| *r != "*") {
                assert!(r.splitn(6, ':').count() == 6, "{}: {r} is no ARN", sid(s));
            }
        }
    }
}
