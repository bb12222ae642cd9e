//! A throwaway `moto_server` (PyPI `moto[server]`, an AWS API emulator) on
//! a free loopback port, for tests and benchmarks.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `moto_server`; stopped when dropped.
pub struct MotoServer {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl MotoServer {
    /// Start one. Fails clearly when `moto_server` is not installed
    /// (`scripts/test` installs it).
    pub fn start() -> std::io::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot start moto_server ({e}); run scripts/test, which installs it"),
                )
            })?;
        let server = Self { child, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(std::io::Error::other("moto_server did not listen within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// Its endpoint URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An SDK configuration pointing at it (region us-east-1, test credentials).
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(self.url())
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .load()
            .await
    }
}

/// An image moto serves (the first it lists), for test instances.
pub async fn any_image(ec2: &aws_sdk_ec2::Client) -> Result<String, crate::AwsError> {
    let images = ec2.describe_images().send().await.map_err(crate::aws_err("DescribeImages", "moto"))?;
    images
        .images()
        .first()
        .and_then(|i| i.image_id())
        .map(str::to_string)
        .ok_or_else(|| crate::missing("DescribeImages", "moto", "image"))
}

/// Launch one instance of `instance_type` in `zone` (a test node).
pub async fn run_instance(
    ec2: &aws_sdk_ec2::Client,
    zone: &str,
    instance_type: &str,
) -> Result<String, crate::AwsError> {
    let out = ec2
        .run_instances()
        .image_id(any_image(ec2).await?)
        .instance_type(aws_sdk_ec2::types::InstanceType::from(instance_type))
        .min_count(1)
        .max_count(1)
        .placement(aws_sdk_ec2::types::Placement::builder().availability_zone(zone).build())
        .send()
        .await
        .map_err(crate::aws_err("RunInstances", zone))?;
    out.instances()
        .first()
        .and_then(|i| i.instance_id())
        .map(str::to_string)
        .ok_or_else(|| crate::missing("RunInstances", zone, "instance"))
}

/// Create the Auto Scaling group `name` in `zone` from the launch template
/// `template`, with `desired` instances (at most 10): a test's Spot pool.
pub async fn create_group(
    asg: &aws_sdk_autoscaling::Client,
    name: &str,
    template: &str,
    zone: &str,
    desired: i32,
) -> Result<(), crate::AwsError> {
    asg.create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_id(template)
                .build(),
        )
        .min_size(0)
        .max_size(10)
        .desired_capacity(desired)
        .availability_zones(zone)
        .send()
        .await
        .map_err(crate::aws_err("CreateAutoScalingGroup", name))?;
    Ok(())
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
