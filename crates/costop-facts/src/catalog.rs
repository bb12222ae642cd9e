//! Facts about instance types and AWS prices, shared by the server, the
//! emulator and the simulator.
//!
//! On-demand prices: Linux, us-east-1, USD per hour, from the AWS Pricing API
//! as generated into aws/karpenter-provider-aws
//! `pkg/providers/pricing/zz_generated.pricing_aws.go` (generated 2026-01-19).
//! Other regions are priced as us-east-1 (an approximation, said in the output).
//! The T-family rows are from the same file as generated 2026-07-20.
//!
//! Burstable types' CPU credit facts: [`burstable`], sources on [`Burstable`].

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
    // Burstable (T family); their credit facts are in `BURSTABLE`.
    InstanceType { name: "t2.medium", vcpu: 2, memory_gib: 4, on_demand_usd_hr: 0.0464 },
    InstanceType { name: "t2.large", vcpu: 2, memory_gib: 8, on_demand_usd_hr: 0.0928 },
    InstanceType { name: "t2.xlarge", vcpu: 4, memory_gib: 16, on_demand_usd_hr: 0.1856 },
    InstanceType { name: "t2.2xlarge", vcpu: 8, memory_gib: 32, on_demand_usd_hr: 0.3712 },
    InstanceType { name: "t3.medium", vcpu: 2, memory_gib: 4, on_demand_usd_hr: 0.0416 },
    InstanceType { name: "t3.large", vcpu: 2, memory_gib: 8, on_demand_usd_hr: 0.0832 },
    InstanceType { name: "t3.xlarge", vcpu: 4, memory_gib: 16, on_demand_usd_hr: 0.1664 },
    InstanceType { name: "t3.2xlarge", vcpu: 8, memory_gib: 32, on_demand_usd_hr: 0.3328 },
    InstanceType { name: "t3a.medium", vcpu: 2, memory_gib: 4, on_demand_usd_hr: 0.0376 },
    InstanceType { name: "t3a.large", vcpu: 2, memory_gib: 8, on_demand_usd_hr: 0.0752 },
    InstanceType { name: "t3a.xlarge", vcpu: 4, memory_gib: 16, on_demand_usd_hr: 0.1504 },
    InstanceType { name: "t3a.2xlarge", vcpu: 8, memory_gib: 32, on_demand_usd_hr: 0.3008 },
    InstanceType { name: "t4g.medium", vcpu: 2, memory_gib: 4, on_demand_usd_hr: 0.0336 },
    InstanceType { name: "t4g.large", vcpu: 2, memory_gib: 8, on_demand_usd_hr: 0.0672 },
    InstanceType { name: "t4g.xlarge", vcpu: 4, memory_gib: 16, on_demand_usd_hr: 0.1344 },
    InstanceType { name: "t4g.2xlarge", vcpu: 8, memory_gib: 32, on_demand_usd_hr: 0.2688 },
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

/// Whether the type carries GPUs or other accelerators (P, G, Inf, Trn,
/// DL, F and VT families: Amazon EC2 User Guide, "Accelerated computing
/// instances"). Pods made for them cannot run on a burstable or any
/// general-purpose node.
pub fn has_accelerators(name: &str) -> bool {
    let family = name.split('.').next().unwrap_or(name);
    let letters: String = family.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    matches!(letters.as_str(), "p" | "g" | "inf" | "trn" | "dl" | "f" | "vt")
}

/// A burstable type's CPU credit option (`CreditSpecification.CpuCredits`
/// in RunInstances and launch templates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreditMode {
    /// Bursts on accrued credits only; held to the baseline once they run out.
    Standard,
    /// Bursts on surplus credits once accrued ones run out; surplus not paid
    /// back by later earnings is billed per vCPU-hour.
    Unlimited,
}

impl CreditMode {
    /// The EC2 API's spelling: `standard` or `unlimited`.
    pub fn as_str(self) -> &'static str {
        match self {
            CreditMode::Standard => "standard",
            CreditMode::Unlimited => "unlimited",
        }
    }

    /// Parse the EC2 API's spelling; anything else is refused, naming it.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "standard" => Ok(CreditMode::Standard),
            "unlimited" => Ok(CreditMode::Unlimited),
            other => Err(format!("CPU credit option {other:?}: expected \"standard\" or \"unlimited\"")),
        }
    }
}

/// One burstable (T-family) type's CPU credit facts. One CPU credit is one
/// vCPU at 100 % for one minute.
///
/// Source: Amazon EC2 User Guide, "Key concepts and definitions for
/// burstable performance instances" (`burstable-credits-baseline-concepts`,
/// the credit table: credits earned per hour, maximum earned credits that
/// can be accrued, vCPUs, baseline utilization per vCPU; how long a
/// stopped instance keeps them), "Standard mode concepts"
/// (`burstable-performance-instances-standard-mode-concepts`: launch
/// credits, T2 Standard only, 30 per vCPU) and "Unlimited mode concepts"
/// (`burstable-performance-instances-unlimited-mode-concepts`: surplus
/// credits and when they are charged), as published in
/// awsdocs/amazon-ec2-user-guide.
///
/// Surplus price, Linux, per vCPU-hour: 0.05 USD for T2, T3 and T3a (the
/// Unlimited mode concepts page's break-even table, column G, for
/// `t3.large` in us-east-1). For T4g the pricing page itself
/// (aws.amazon.com/ec2/pricing/on-demand, "T2/T3/T4g Unlimited Mode
/// Pricing") could not be read from here; 0.04 USD is what the AWS Price
/// List's usage type `CPUCredits:t4g` is billed at in the public billing
/// exports and price tables we could read (against 0.05 for
/// `CPUCredits:t3`). Check it against the pricing page before relying on
/// T4g surplus figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burstable {
    /// EC2 name (also in the instance catalog).
    pub name: &'static str,
    /// vCPUs.
    pub vcpu: u32,
    /// Baseline utilisation per vCPU, a fraction (0.2 = 20 %).
    pub baseline_per_vcpu: f64,
    /// CPU credits earned per hour while running.
    pub credits_per_hour: f64,
    /// The most earned credits the balance can hold (24 hours' earnings).
    pub max_credits: f64,
    /// Credits given at launch or start in standard mode (T2 only; T3, T3a
    /// and T4g get none).
    pub launch_credits: f64,
    /// Unlimited mode: USD per vCPU-hour of surplus credits charged (Linux).
    pub surplus_usd_per_vcpu_hr: f64,
    /// RunInstances' credit option when none is given: `standard` for T2,
    /// `unlimited` for T3, T3a and T4g (account defaults aside).
    pub default_mode: CreditMode,
    /// How long a stopped instance keeps its accrued credits, seconds: none
    /// for T2 (lost at stop), seven days for T3, T3a and T4g.
    pub credits_kept_stopped_s: f64,
}

impl Burstable {
    /// The vCPUs' worth of CPU it can use forever on earnings alone.
    pub fn baseline_vcpu(&self) -> f64 {
        self.credits_per_hour / 60.0
    }

    /// USD for `credits` surplus credits (60 credits are one vCPU-hour).
    pub fn surplus_usd(&self, credits: f64) -> f64 {
        credits / 60.0 * self.surplus_usd_per_vcpu_hr
    }
}

const fn t(
    name: &'static str,
    vcpu: u32,
    baseline_per_vcpu: f64,
    credits_per_hour: f64,
    max_credits: f64,
    family: Family,
) -> Burstable {
    const WEEK_S: f64 = 7.0 * 24.0 * 3600.0;
    let (launch_per_vcpu, surplus, default_mode, kept) = match family {
        Family::T2 => (30.0, 0.05, CreditMode::Standard, 0.0),
        Family::T3 => (0.0, 0.05, CreditMode::Unlimited, WEEK_S),
        Family::T4g => (0.0, 0.04, CreditMode::Unlimited, WEEK_S),
    };
    Burstable {
        name,
        vcpu,
        baseline_per_vcpu,
        credits_per_hour,
        max_credits,
        launch_credits: launch_per_vcpu * vcpu as f64,
        surplus_usd_per_vcpu_hr: surplus,
        default_mode,
        credits_kept_stopped_s: kept,
    }
}

/// Which credit rules a row follows (T3a's are T3's).
#[derive(Clone, Copy)]
enum Family {
    T2,
    T3,
    T4g,
}

const BURSTABLE: &[Burstable] = &[
    t("t2.medium", 2, 0.20, 24.0, 576.0, Family::T2),
    t("t2.large", 2, 0.30, 36.0, 864.0, Family::T2),
    t("t2.xlarge", 4, 0.225, 54.0, 1296.0, Family::T2),
    t("t2.2xlarge", 8, 0.17, 81.6, 1958.4, Family::T2),
    t("t3.medium", 2, 0.20, 24.0, 576.0, Family::T3),
    t("t3.large", 2, 0.30, 36.0, 864.0, Family::T3),
    t("t3.xlarge", 4, 0.40, 96.0, 2304.0, Family::T3),
    t("t3.2xlarge", 8, 0.40, 192.0, 4608.0, Family::T3),
    t("t3a.medium", 2, 0.20, 24.0, 576.0, Family::T3),
    t("t3a.large", 2, 0.30, 36.0, 864.0, Family::T3),
    t("t3a.xlarge", 4, 0.40, 96.0, 2304.0, Family::T3),
    t("t3a.2xlarge", 8, 0.40, 192.0, 4608.0, Family::T3),
    t("t4g.medium", 2, 0.20, 24.0, 576.0, Family::T4g),
    t("t4g.large", 2, 0.30, 36.0, 864.0, Family::T4g),
    t("t4g.xlarge", 4, 0.40, 96.0, 2304.0, Family::T4g),
    t("t4g.2xlarge", 8, 0.40, 192.0, 4608.0, Family::T4g),
];

/// The credit facts of a burstable type, or `None` for a fixed-performance one.
pub fn burstable(name: &str) -> Option<&'static Burstable> {
    BURSTABLE.iter().find(|b| b.name == name)
}

/// Every burstable type the catalog knows.
pub fn burstable_types() -> &'static [Burstable] {
    BURSTABLE
}

/// EBS gp3 storage, USD per GB-month (us-east-1; AWS EBS pricing page).
pub const EBS_GP3_USD_PER_GB_MONTH: f64 = 0.08;
/// Root volume size assumed for every node, GB.
pub const ROOT_VOLUME_GB: f64 = 100.0;
/// Hours in the month AWS bills storage by (730 h).
pub const HOURS_PER_MONTH: f64 = 730.0;
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

    #[test]
    fn accelerated_families_are_told_from_general_purpose_ones() {
        for gpu in ["p3.2xlarge", "p2.xlarge", "g5.xlarge", "inf2.xlarge", "trn1.2xlarge", "dl1.24xlarge"] {
            assert!(has_accelerators(gpu), "{gpu}");
        }
        for cpu in ["m5.xlarge", "t3.xlarge", "c6i.xlarge", "r5.16xlarge", "t4g.large"] {
            assert!(!has_accelerators(cpu), "{cpu}");
        }
    }

    #[test]
    fn burstable_rows_agree_with_themselves_and_the_catalog() {
        for b in burstable_types() {
            let it = instance_type(b.name).unwrap_or_else(|| panic!("{} not in the catalog", b.name));
            assert_eq!(it.vcpu, b.vcpu, "{}", b.name);
            // AWS: baseline % = (credits earned / vCPUs) / 60 minutes.
            let baseline = b.credits_per_hour / f64::from(b.vcpu) / 60.0;
            assert!((baseline - b.baseline_per_vcpu).abs() < 1e-9, "{}: {baseline}", b.name);
            assert!((b.baseline_vcpu() - b.baseline_per_vcpu * f64::from(b.vcpu)).abs() < 1e-9);
            // The accrual limit is 24 hours' earnings.
            assert!((b.max_credits - 24.0 * b.credits_per_hour).abs() < 1e-9, "{}", b.name);
            let t2 = b.name.starts_with("t2.");
            assert_eq!(b.launch_credits, if t2 { 30.0 * f64::from(b.vcpu) } else { 0.0 }, "{}", b.name);
            let mode = if t2 { CreditMode::Standard } else { CreditMode::Unlimited };
            assert_eq!(b.default_mode, mode, "{}", b.name);
            assert_eq!(b.credits_kept_stopped_s, if t2 { 0.0 } else { 7.0 * 86_400.0 }, "{}", b.name);
        }
        let large = burstable("t3.large").unwrap();
        assert_eq!((large.credits_per_hour, large.max_credits, large.baseline_per_vcpu), (36.0, 864.0, 0.30));
        assert_eq!(burstable("t2.xlarge").map(|b| b.launch_credits), Some(120.0));
        assert!(burstable("m5.xlarge").is_none());
        for family in ["t3.", "t3a.", "t4g."] {
            for size in ["medium", "large", "xlarge", "2xlarge"] {
                assert!(burstable(&format!("{family}{size}")).is_some(), "{family}{size}");
            }
        }
        // A full vCPU-hour of surplus on a t3: 0.05 USD.
        assert!((large.surplus_usd(60.0) - 0.05).abs() < 1e-12);
    }

    #[test]
    fn credit_options_parse_as_the_api_spells_them() {
        for m in [CreditMode::Standard, CreditMode::Unlimited] {
            assert_eq!(CreditMode::parse(m.as_str()), Ok(m));
        }
        let err = CreditMode::parse("Unlimited").unwrap_err();
        assert!(err.contains("\"Unlimited\"") && err.contains("standard"), "{err}");
    }
}
