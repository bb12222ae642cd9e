//! Facts about instance types and AWS prices, shared by the server, the
//! emulator and the simulator.
//!
//! On-demand prices: Linux, us-east-1, USD per hour, from the AWS Pricing API
//! as generated into aws/karpenter-provider-aws
//! `pkg/providers/pricing/zz_generated.pricing_aws.go` (generated 2026-01-19).
//! Other regions are priced as us-east-1 (an approximation, said in the output).

/// One instance type's shape and on-demand price.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceType {
    /// EC2 name.
    pub name: &'static str,
    /// vCPUs.
    pub vcpu: u32,
    /// Memory, GiB.
    pub memory_gib: u32,
    /// On-demand Linux price, us-east-1, USD/h.
    pub on_demand_usd_hr: f64,
}

const TYPES: &[InstanceType] = &[
    InstanceType { name: "m5.xlarge", vcpu: 4, memory_gib: 16, on_demand_usd_hr: 0.192 },
    InstanceType { name: "m5.2xlarge", vcpu: 8, memory_gib: 32, on_demand_usd_hr: 0.384 },
    InstanceType { name: "m5a.xlarge", vcpu: 4, memory_gib: 16, on_demand_usd_hr: 0.172 },
    InstanceType { name: "m6i.xlarge", vcpu: 4, memory_gib: 16, on_demand_usd_hr: 0.192 },
    InstanceType { name: "c5.xlarge", vcpu: 4, memory_gib: 8, on_demand_usd_hr: 0.17 },
    InstanceType { name: "c6i.xlarge", vcpu: 4, memory_gib: 8, on_demand_usd_hr: 0.17 },
    InstanceType { name: "r5.xlarge", vcpu: 4, memory_gib: 32, on_demand_usd_hr: 0.252 },
    InstanceType { name: "r5.16xlarge", vcpu: 64, memory_gib: 512, on_demand_usd_hr: 4.032 },
    InstanceType { name: "t3.xlarge", vcpu: 4, memory_gib: 16, on_demand_usd_hr: 0.1664 },
    InstanceType { name: "p3.2xlarge", vcpu: 8, memory_gib: 61, on_demand_usd_hr: 3.06 },
    InstanceType { name: "p3.16xlarge", vcpu: 64, memory_gib: 488, on_demand_usd_hr: 24.48 },
    InstanceType { name: "p2.xlarge", vcpu: 4, memory_gib: 61, on_demand_usd_hr: 0.90 },
    InstanceType { name: "p2.8xlarge", vcpu: 32, memory_gib: 488, on_demand_usd_hr: 7.20 },
];

/// Look up an instance type by name.
pub fn instance_type(name: &str) -> Option<&'static InstanceType> {
    TYPES.iter().find(|t| t.name == name)
}

/// The names of every type the catalog knows, comma-separated (for
/// messages about a type it does not).
pub fn known_type_names() -> String {
    TYPES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
}

/// EBS gp3 storage, USD per GB-month (us-east-1; AWS EBS pricing page).
pub const EBS_GP3_USD_PER_GB_MONTH: f64 = 0.08;
/// Root volume size assumed for every node, GB.
pub const ROOT_VOLUME_GB: f64 = 100.0;
/// Hours in the month AWS bills storage by (730 h).
pub const HOURS_PER_MONTH: f64 = 730.0;
/// T-family unlimited mode surplus credits, Linux: USD per vCPU-hour
/// (EC2 on-demand pricing page, "CPU Credits").
pub const T_UNLIMITED_USD_PER_VCPU_HR: f64 = 0.05;
/// Lambda, x86, us-east-1: USD per request ($0.20 per 1M; "How AWS Pricing Works").
pub const LAMBDA_USD_PER_REQUEST: f64 = 0.20 / 1_000_000.0;
/// Lambda, x86, us-east-1: USD per GB-second (first 6 billion GB-s a month).
pub const LAMBDA_USD_PER_GB_SECOND: f64 = 0.000_016_666_7;

/// What a stopped standby costs per hour: its root volume only.
pub fn stopped_standby_usd_hr() -> f64 {
    ROOT_VOLUME_GB * EBS_GP3_USD_PER_GB_MONTH / HOURS_PER_MONTH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_types() {
        assert_eq!(instance_type("r5.16xlarge").map(|t| t.on_demand_usd_hr), Some(4.032));
        assert!(instance_type("x9.huge").is_none());
        assert!((stopped_standby_usd_hr() - 0.010_958).abs() < 1e-5);
    }
}
