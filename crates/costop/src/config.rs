//! Configuration: one TOML file plus `COSTOP_<SECTION>_<KEY>` environment
//! overrides, where SECTION is one of the file's sections (`SIM`, `TIMINGS`,
//! `POLICY`, `AWS`); other `COSTOP_*` variables (the flags' own, such as
//! `COSTOP_REDIS_URL`) are not config keys. Every key, its default and
//! meaning: `costop.example.toml`.

use anyhow::{anyhow, bail, Context, Result};
use costop_core::Policy;
use costop_sim::timings::Timings;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The `[sim]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimSection {
    /// Seed of every random draw.
    pub seed: u64,
    /// Days to simulate; 0 = the whole trace (or 7 days on the built-in market).
    pub days: f64,
    /// Worker nodes.
    pub nodes: u32,
    /// Pods per worker node.
    pub pods_per_node: u32,
    /// Requests per second each pod serves.
    pub requests_per_pod_s: f64,
    /// How much more than its design load a pod takes before failing requests.
    pub pod_capacity_factor: f64,
    /// `all`, `one` or a share in (0, 1]: nodes of a pool one reclaim hits.
    pub pool_hit: String,
    /// Chance a rebalance recommendation precedes a reclaim.
    pub rebalance_probability: f64,
    /// Seconds between a rebalance recommendation and the reclaim.
    pub rebalance_lead_s: f64,
    /// Strategies to compare.
    pub strategies: Vec<String>,
    /// Where the public data lives (traces' prices come from its Spot
    /// Advisor snapshot); empty = `$COSTOP_DATA_DIR`, else the repository's
    /// `data/`.
    pub data_dir: String,
}

impl Default for SimSection {
    fn default() -> Self {
        let d = costop_sim::SimConfig::default();
        Self {
            seed: d.seed,
            days: 0.0,
            nodes: d.nodes,
            pods_per_node: d.pods_per_node,
            requests_per_pod_s: d.requests_per_pod_s,
            pod_capacity_factor: d.pod_capacity_factor,
            pool_hit: "all".into(),
            rebalance_probability: d.rebalance_probability,
            rebalance_lead_s: d.rebalance_lead_s,
            strategies: d.strategies.iter().map(|s| s.name().to_string()).collect(),
            data_dir: String::new(),
        }
    }
}

/// The `[aws]` section: what the AWS adapter cannot discover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsSection {
    /// Spot pools restored capacity may go to: `TYPE@ZONE`, or
    /// `TYPE@ZONE=ASG` when that Auto Scaling group's desired capacity is raised.
    pub pools: Vec<String>,
    /// Launch template for instant fleets (pools without a group).
    pub launch_template_id: String,
    /// Launch template for standbys; empty = one cloned from a Spot node.
    pub standby_template_id: String,
    /// Name of the template cloned from a Spot node.
    pub standby_template_name: String,
    /// Device name moved volumes are attached under.
    pub volume_device: String,
    /// Keep the warm pool (launch, park, return, terminate standbys). Off
    /// by default: it launches on-demand instances.
    pub keep_warm_pool: bool,
    /// Function bridges: `NAMESPACE/NAME=RULE_ARN|SERVICE_TG_ARN|FUNCTION_TG_ARN|WEIGHT`.
    pub bridges: Vec<String>,
    /// The EKS cluster's name: what costop creates is tagged
    /// `kubernetes.io/cluster/NAME=owned`, and only that cluster's standbys
    /// are listed. `deploy/iam-policy.json` requires the tag; empty = untagged.
    pub cluster_name: String,
}

impl Default for AwsSection {
    fn default() -> Self {
        Self {
            pools: Vec::new(),
            launch_template_id: String::new(),
            standby_template_id: String::new(),
            standby_template_name: "costop-standby".into(),
            volume_device: "/dev/xvdf".into(),
            keep_warm_pool: false,
            bridges: Vec::new(),
            cluster_name: String::new(),
        }
    }
}

impl AwsSection {
    /// The adapter's settings; a malformed pool or bridge is named.
    pub fn settings(&self) -> Result<costop_aws::AwsSettings> {
        let mut settings = costop_aws::AwsSettings {
            launch_template_id: Some(self.launch_template_id.clone()).filter(|t| !t.is_empty()),
            standby_template_id: Some(self.standby_template_id.clone()).filter(|t| !t.is_empty()),
            standby_template_name: self.standby_template_name.clone(),
            volume_device: self.volume_device.clone(),
            cluster_name: Some(self.cluster_name.trim().to_string()).filter(|c| !c.is_empty()),
            ..Default::default()
        };
        for entry in &self.pools {
            let bad = |why: &str| {
                anyhow!("config: aws.pools entry `{entry}`: {why} (want TYPE@ZONE or TYPE@ZONE=ASG)")
            };
            let (pool, group) = match entry.split_once('=') {
                Some((p, g)) if !g.trim().is_empty() => (p, Some(g.trim())),
                Some(_) => return Err(bad("empty Auto Scaling group")),
                None => (entry.as_str(), None),
            };
            let (ty, zone) = pool.split_once('@').ok_or_else(|| bad("no `@`"))?;
            let (ty, zone) = (ty.trim(), zone.trim());
            if ty.is_empty() || !ty.contains('.') {
                return Err(bad("not an instance type"));
            }
            if zone.len() < 4 || !zone.ends_with(|c: char| c.is_ascii_lowercase()) {
                return Err(bad("not an availability zone"));
            }
            let id = costop_core::PoolId::new(ty, zone);
            if settings.pools.contains(&id) {
                return Err(bad("listed twice"));
            }
            if let Some(g) = group {
                settings.asg_by_pool.insert(id.clone(), g.to_string());
            }
            settings.pools.push(id);
        }
        for entry in &self.bridges {
            let bad = |why: &str| {
                anyhow!("config: aws.bridges entry `{entry}`: {why} (want NAMESPACE/NAME=RULE|SERVICE_TG|FUNCTION_TG|WEIGHT)")
            };
            let (workload, route) = entry.split_once('=').ok_or_else(|| bad("no `=`"))?;
            if !workload.contains('/') {
                return Err(bad("the workload is not NAMESPACE/NAME"));
            }
            let parts: Vec<&str> = route.split('|').map(str::trim).collect();
            let [rule, service, function, weight] = parts[..] else {
                return Err(bad("not four `|`-separated fields"));
            };
            let weight: i32 = weight.parse().map_err(|_| bad("the weight is not a number"))?;
            if !(0..=999).contains(&weight) {
                return Err(bad("the weight is outside 0–999"));
            }
            settings.bridges.insert(
                workload.trim().to_string(),
                costop_aws::Bridge {
                    rule_arn: rule.into(),
                    service_target_group: service.into(),
                    function_target_group: function.into(),
                    function_weight: weight,
                },
            );
        }
        Ok(settings)
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Simulation run.
    pub sim: SimSection,
    /// World durations.
    pub timings: Timings,
    /// costop's decision policy.
    pub policy: Policy,
    /// The AWS adapter.
    pub aws: AwsSection,
}

/// Prefix of environment overrides.
const ENV_PREFIX: &str = "COSTOP_";

impl Config {
    /// Load defaults, then the file (if any), then environment overrides.
    pub fn load(file: Option<&Path>, env: impl Iterator<Item = (String, String)>) -> Result<Self> {
        let mut table = toml::Table::try_from(Config::default()).context("default configuration")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("config {}: cannot read", path.display()))?;
            let from_file: toml::Table =
                text.parse().map_err(|e| anyhow!("config {}: {}", path.display(), one_line(&e)))?;
            merge(&mut table, from_file, path)?;
        }
        for (key, value) in env {
            // Only `COSTOP_<SECTION>_<KEY>` with a known section is a config
            // key. Every other `COSTOP_*` variable belongs to someone else:
            // the flags' variables (`COSTOP_REDIS_URL`, `COSTOP_SERVER_URL`,
            // …), `COSTOP_LOG`, `COSTOP_DATA_DIR`.
            let Some((section, field)) = key
                .strip_prefix(ENV_PREFIX)
                .and_then(|rest| rest.split_once('_'))
                .map(|(s, f)| (s.to_ascii_lowercase(), f.to_ascii_lowercase()))
            else {
                continue;
            };
            let Some(slot) = table.get_mut(&section).and_then(|s| s.as_table_mut()) else { continue };
            let old = slot
                .get(&field)
                .ok_or_else(|| anyhow!("environment {key}: unknown config key `{section}.{field}`"))?;
            let new = env_value(old, &value).with_context(|| format!("environment {key}"))?;
            slot.insert(field, new);
        }
        let config: Config =
            table.try_into().map_err(|e: toml::de::Error| anyhow!("config: {}", one_line(&e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Every value in its range; the first that is not is named
    /// (`section.key`), with the value and the range.
    pub fn validate(&self) -> Result<()> {
        self.sim.validate()?;
        validate_timings(&self.timings)?;
        // Every number of [policy]: finite, then the policy's own ranges.
        for (key, value) in &toml::Table::try_from(&self.policy).context("policy")? {
            if let Some(v) = value.as_float() {
                in_range(&format!("policy.{key}"), v, Range::at_least(0.0))?;
            }
        }
        self.policy.validate().map_err(|e| anyhow!("config: {e}"))?;
        let cooldown = self.policy.pool_cooldown_minutes;
        if cooldown > MAX_COOLDOWN_MINUTES {
            bail!("config: policy.pool_cooldown_minutes = {cooldown}: must be at most {MAX_COOLDOWN_MINUTES} (30 days)");
        }
        self.aws.settings()?;
        Ok(())
    }

    /// Where the public data lives: `[sim] data_dir` (also
    /// `COSTOP_SIM_DATA_DIR`), else `$COSTOP_DATA_DIR`, else the
    /// repository's `data/`, where the public traces ship.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir_with(std::env::var_os("COSTOP_DATA_DIR"))
    }

    /// [`Config::data_dir`] with `$COSTOP_DATA_DIR` given.
    fn data_dir_with(&self, env: Option<std::ffi::OsString>) -> PathBuf {
        if !self.sim.data_dir.is_empty() {
            return PathBuf::from(&self.sim.data_dir);
        }
        match env {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => default_data_dir(),
        }
    }
}

/// The repository's `data/` (beside `crates/`), resolved when `costop` is built.
fn default_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

/// A pool is avoided at most this long after a reclaim (30 days).
const MAX_COOLDOWN_MINUTES: u64 = 30 * 24 * 60;
/// The longest world duration accepted in `[timings]`: one day.
const MAX_TIMING_S: f64 = 86_400.0;
/// Timings that are retry or polling periods: zero would spin.
const POSITIVE_TIMINGS: &[&str] = &["pleg_relist_s", "launch_retry_s", "eviction_retry_s"];

/// The values a number may take.
#[derive(Debug, Clone, Copy)]
struct Range {
    min: f64,
    /// `min` itself is allowed.
    min_included: bool,
    max: f64,
}

impl Range {
    fn at_least(min: f64) -> Self {
        Self { min, min_included: true, max: f64::MAX }
    }
    fn within(min: f64, max: f64) -> Self {
        Self { min, min_included: true, max }
    }
    fn above(min: f64, max: f64) -> Self {
        Self { min, min_included: false, max }
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = if self.min_included { '[' } else { '(' };
        if self.max == f64::MAX {
            write!(f, "a finite number {}= {}", if self.min_included { ">" } else { "" }, self.min)
        } else {
            write!(f, "a number in {open}{}, {}]", self.min, self.max)
        }
    }
}

/// `v` is a finite number in `range`, or an error naming `key`.
fn in_range(key: &str, v: f64, range: Range) -> Result<()> {
    let low_ok = if range.min_included { v >= range.min } else { v > range.min };
    if v.is_finite() && low_ok && v <= range.max {
        Ok(())
    } else {
        bail!("config: {key} = {v}: must be {range}")
    }
}

impl SimSection {
    /// Every `[sim]` value in its range.
    pub fn validate(&self) -> Result<()> {
        in_range("sim.days", self.days, Range::within(0.0, 3_660.0))?;
        in_range("sim.nodes", f64::from(self.nodes), Range::within(1.0, 100_000.0))?;
        in_range("sim.pods_per_node", f64::from(self.pods_per_node), Range::within(1.0, 1_000.0))?;
        in_range("sim.requests_per_pod_s", self.requests_per_pod_s, Range::above(0.0, 1e6))?;
        in_range("sim.pod_capacity_factor", self.pod_capacity_factor, Range::above(0.0, 100.0))?;
        in_range("sim.rebalance_probability", self.rebalance_probability, Range::within(0.0, 1.0))?;
        in_range("sim.rebalance_lead_s", self.rebalance_lead_s, Range::within(0.0, 7.0 * MAX_TIMING_S))?;
        self.pool_hit.parse::<costop_sim::PoolHit>().map_err(|e| anyhow!("config: sim.pool_hit: {e}"))?;
        if self.strategies.is_empty() {
            bail!("config: sim.strategies is empty: name at least one strategy");
        }
        for name in &self.strategies {
            name.parse::<costop_sim::Strategy>().map_err(|e| anyhow!("config: sim.strategies: {e}"))?;
        }
        Ok(())
    }
}

/// Every `[timings]` value: a finite number of seconds in [0, one day]
/// (milliseconds for `_ms` keys), retry and polling periods above zero.
fn validate_timings(timings: &Timings) -> Result<()> {
    for (key, value) in &toml::Table::try_from(timings).context("timings")? {
        let v = match value {
            toml::Value::Float(v) => *v,
            toml::Value::Integer(i) => *i as f64,
            _ => continue,
        };
        let max = if key.ends_with("_ms") { MAX_TIMING_S * 1000.0 } else { MAX_TIMING_S };
        let range = if POSITIVE_TIMINGS.contains(&key.as_str()) {
            Range::above(0.0, max)
        } else {
            Range::within(0.0, max)
        };
        in_range(&format!("timings.{key}"), v, range)?;
    }
    Ok(())
}

/// Overlay the file's table on the defaults, refusing unknown sections and
/// keys with their names.
fn merge(base: &mut toml::Table, file: toml::Table, path: &Path) -> Result<()> {
    for (section, value) in file {
        let Some(base_section) = base.get_mut(&section).and_then(|v| v.as_table_mut()) else {
            bail!(
                "config {}: unknown section `{section}` (known: sim, timings, policy, aws)",
                path.display()
            );
        };
        let toml::Value::Table(entries) = value else {
            bail!("config {}: `{section}` must be a table", path.display());
        };
        for (key, v) in entries {
            if !base_section.contains_key(&key) {
                bail!("config {}: unknown key `{section}.{key}`", path.display());
            }
            base_section.insert(key, v);
        }
    }
    Ok(())
}

/// Parse an environment value to the type of the default it replaces.
fn env_value(old: &toml::Value, raw: &str) -> Result<toml::Value> {
    Ok(match old {
        toml::Value::Integer(_) => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| anyhow!("`{raw}` is not an integer"))?)
        }
        toml::Value::Float(_) => {
            toml::Value::Float(raw.trim().parse().map_err(|_| anyhow!("`{raw}` is not a number"))?)
        }
        toml::Value::Boolean(_) => {
            toml::Value::Boolean(raw.trim().parse().map_err(|_| anyhow!("`{raw}` is not true or false"))?)
        }
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(|s| toml::Value::String(s.trim().to_string()))
                .filter(|v| v.as_str() != Some(""))
                .collect(),
        ),
        _ => toml::Value::String(raw.to_string()),
    })
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config file of its own: tests run in parallel in one process.
    fn file(body: &str) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("costop-config-{}-{n}.toml", std::process::id()));
        std::fs::write(&p, body).unwrap();
        p
    }

    /// The repository's `data/` by default, then `$COSTOP_DATA_DIR`, then
    /// `[sim] data_dir` (or `COSTOP_SIM_DATA_DIR`) over both.
    #[test]
    fn data_dir_defaults_to_the_repository_data() {
        let default = Config::default();
        let dir = default.data_dir_with(None);
        assert!(
            dir.join("aws-spot-advisor/spot-advisor-data.json").is_file(),
            "the default {} holds the shipped data",
            dir.display()
        );
        assert_eq!(default.data_dir_with(Some("".into())), dir, "an empty $COSTOP_DATA_DIR is unset");
        assert_eq!(default.data_dir_with(Some("/env".into())), PathBuf::from("/env"));
        let from_file =
            Config::load(Some(&file("[sim]\ndata_dir = \"/file\"\n")), std::iter::empty()).unwrap();
        assert_eq!(from_file.data_dir_with(Some("/env".into())), PathBuf::from("/file"));
        let env = vec![("COSTOP_SIM_DATA_DIR".to_string(), "/sim-env".to_string())].into_iter();
        let from_env = Config::load(None, env).unwrap();
        assert_eq!(from_env.data_dir_with(Some("/env".into())), PathBuf::from("/sim-env"));
    }

    #[test]
    fn defaults_file_then_environment() {
        let f = file("[sim]\nnodes = 50\nseed = 9\n[policy]\nmax_pool_share = 0.5\n");
        let env = vec![("COSTOP_SIM_NODES".to_string(), "70".to_string()), ("HOME".into(), "/".into())];
        let c = Config::load(Some(&f), env.into_iter()).unwrap();
        assert_eq!(c.sim.nodes, 70);
        assert_eq!(c.sim.seed, 9);
        assert_eq!(c.policy.max_pool_share, 0.5);
        assert_eq!(c.timings, Timings::default());
    }

    #[test]
    fn the_example_file_lists_exactly_the_defaults() {
        let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../costop.example.toml");
        let text = std::fs::read_to_string(&example).unwrap();
        let listed: toml::Table = text.parse().unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        for (section, keys) in &defaults {
            let keys = keys.as_table().unwrap();
            let got = listed[section].as_table().unwrap();
            let mut a: Vec<_> = keys.keys().collect();
            let mut b: Vec<_> = got.keys().collect();
            a.sort();
            b.sort();
            assert_eq!(a, b, "keys of [{section}] in costop.example.toml");
        }
        assert_eq!(Config::load(Some(&example), std::iter::empty()).unwrap(), Config::default());
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let cases = [
            ("[sim]\nnodez = 5\n", "unknown key `sim.nodez`"),
            ("[simm]\nnodes = 5\n", "unknown section `simm`"),
            ("[sim]\nnodes = \"many\"\n", "nodes"),
            ("[policy]\nmax_pool_share = 3.0\n", "max_pool_share"),
            ("[sim\n", "config"),
        ];
        for (body, expect) in cases {
            let f = file(body);
            let err = format!("{:#}", Config::load(Some(&f), std::iter::empty()).unwrap_err());
            assert!(err.contains(expect), "{body:?}: {err}");
        }
        let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())].into_iter();
        let err = format!("{:#}", Config::load(None, env("COSTOP_SIM_NODEZ", "1")).unwrap_err());
        assert!(err.contains("COSTOP_SIM_NODEZ") && err.contains("sim.nodez"), "{err}");
        let err = format!("{:#}", Config::load(None, env("COSTOP_SIM_NODES", "lots")).unwrap_err());
        assert!(err.contains("COSTOP_SIM_NODES") && err.contains("not an integer"), "{err}");
        let err = format!("{:#}", Config::load(None, env("COSTOP_TIMINGS_NODE_READY", "1")).unwrap_err());
        assert!(err.contains("COSTOP_TIMINGS_NODE_READY") && err.contains("timings.node_ready"), "{err}");
        assert!(Config::load(None, env("COSTOP_DATA_DIR", "/x")).is_ok());
    }

    /// The variables of the deployed manifests (`deploy/`) and of every flag are not
    /// config keys: the loader leaves them alone.
    #[test]
    fn flag_variables_are_not_config_keys() {
        let deployed = [
            ("COSTOP_REDIS_URL", "redis://redis.costop-system:6379/"),
            ("COSTOP_SERVER_URL", "http://costop-server.costop-system:8480"),
            ("COSTOP_LOG", "info"),
            ("COSTOP_DATA_DIR", "/data"),
            ("COSTOP_NOPE", "1"),
        ];
        let env = deployed.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(Config::load(None, env).unwrap(), Config::default());
        // Every `env = "COSTOP_…"` of the binary's flags, read from its source
        // so a new flag cannot collide with a section unnoticed.
        let main = include_str!("main.rs");
        let flags: Vec<&str> = main
            .split("env = \"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|name| name.starts_with(ENV_PREFIX))
            .collect();
        for name in [
            "COSTOP_IMDS_URL",
            "COSTOP_SERVER_URL",
            "COSTOP_REDIS_URL",
            "COSTOP_TOKEN_PATH",
            "COSTOP_QUEUE_URL",
        ] {
            assert!(flags.contains(&name), "{name} not found among the flags' variables {flags:?}");
        }
        for name in flags {
            let c = Config::load(None, std::iter::once((name.to_string(), "x".to_string())));
            assert_eq!(c.ok().as_ref(), Some(&Config::default()), "{name} must not be read as a config key");
        }
        // A known section still refuses an unknown key, naming it.
        let err = format!(
            "{:#}",
            Config::load(None, std::iter::once(("COSTOP_POLICY_NOPE".to_string(), "1".to_string())))
                .unwrap_err()
        );
        assert!(err.contains("COSTOP_POLICY_NOPE") && err.contains("policy.nope"), "{err}");
    }

    /// Infinite, NaN, negative and out-of-range numbers are refused, from
    /// the file and from the environment, with the key named.
    #[test]
    fn numbers_out_of_range_are_refused_with_their_key() {
        let cases = [
            ("[timings]\nnode_ready_s = inf\n", "timings.node_ready_s = inf"),
            ("[timings]\nnode_ready_s = -inf\n", "timings.node_ready_s = -inf"),
            ("[timings]\nimage_pull_s = nan\n", "timings.image_pull_s = NaN"),
            ("[timings]\npod_shutdown_s = -1.0\n", "timings.pod_shutdown_s = -1"),
            ("[timings]\nforce_detach_s = 1e9\n", "timings.force_detach_s"),
            ("[timings]\napi_call_ms = 1e300\n", "timings.api_call_ms"),
            ("[timings]\nlaunch_retry_s = 0.0\n", "timings.launch_retry_s = 0"),
            ("[timings]\npleg_relist_s = 0.0\n", "timings.pleg_relist_s = 0"),
            ("[sim]\ndays = inf\n", "sim.days = inf"),
            ("[sim]\ndays = nan\n", "sim.days = NaN"),
            ("[sim]\ndays = -1.0\n", "sim.days = -1"),
            ("[sim]\nnodes = 0\n", "sim.nodes = 0"),
            ("[sim]\nnodes = -3\n", "nodes"),
            ("[sim]\npods_per_node = 0\n", "sim.pods_per_node = 0"),
            ("[sim]\nrequests_per_pod_s = nan\n", "sim.requests_per_pod_s = NaN"),
            ("[sim]\nrequests_per_pod_s = 0.0\n", "sim.requests_per_pod_s = 0"),
            ("[sim]\npod_capacity_factor = inf\n", "sim.pod_capacity_factor = inf"),
            ("[sim]\npod_capacity_factor = -1.5\n", "sim.pod_capacity_factor = -1.5"),
            ("[sim]\nrebalance_probability = 1.5\n", "sim.rebalance_probability = 1.5"),
            ("[sim]\nrebalance_probability = -0.1\n", "sim.rebalance_probability = -0.1"),
            ("[sim]\nrebalance_probability = nan\n", "sim.rebalance_probability = NaN"),
            ("[sim]\nrebalance_lead_s = -600.0\n", "sim.rebalance_lead_s = -600"),
            ("[sim]\nrebalance_lead_s = inf\n", "sim.rebalance_lead_s = inf"),
            ("[sim]\npool_hit = \"2\"\n", "sim.pool_hit"),
            ("[sim]\npool_hit = \"nan\"\n", "sim.pool_hit"),
            ("[sim]\nstrategies = []\n", "sim.strategies"),
            ("[sim]\nstrategies = [\"yolo\"]\n", "unknown strategy `yolo`"),
            ("[policy]\nmax_pool_share = nan\n", "max_pool_share"),
            ("[policy]\nmax_pool_share = 0.0\n", "max_pool_share"),
            ("[policy]\nrisk_weight = inf\n", "policy.risk_weight = inf"),
            ("[policy]\nrisk_weight = -0.5\n", "policy.risk_weight = -0.5"),
            ("[policy]\nheadroom_share_of_shortfall = nan\n", "headroom_share_of_shortfall"),
            ("[policy]\nstandby_share_of_shortfall = 1.5\n", "standby_share_of_shortfall"),
            ("[policy]\nbridge_threshold = -inf\n", "bridge_threshold"),
            ("[policy]\npool_cooldown_minutes = -1\n", "pool_cooldown_minutes"),
            ("[policy]\npool_cooldown_minutes = 9223372036854775807\n", "policy.pool_cooldown_minutes"),
        ];
        for (body, expect) in cases {
            let f = file(body);
            let err = format!("{:#}", Config::load(Some(&f), std::iter::empty()).unwrap_err());
            assert!(err.contains(expect), "{body:?}: {err}");
        }
        let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())].into_iter();
        for (key, value, expect) in [
            ("COSTOP_TIMINGS_NODE_READY_S", "inf", "timings.node_ready_s = inf"),
            ("COSTOP_TIMINGS_NODE_READY_S", "NaN", "timings.node_ready_s = NaN"),
            ("COSTOP_TIMINGS_NODE_READY_S", "-5", "timings.node_ready_s = -5"),
            ("COSTOP_SIM_DAYS", "inf", "sim.days = inf"),
            ("COSTOP_SIM_REBALANCE_PROBABILITY", "2", "sim.rebalance_probability = 2"),
            ("COSTOP_POLICY_RISK_WEIGHT", "nan", "policy.risk_weight = NaN"),
        ] {
            let err = format!("{:#}", Config::load(None, env(key, value)).unwrap_err());
            assert!(err.contains(expect), "{key}={value}: {err}");
        }
        // The edges of the ranges are accepted.
        let f = file(concat!(
            "[sim]\ndays = 0.0\nrebalance_probability = 1.0\nrebalance_lead_s = 0.0\npool_hit = \"0.25\"\n",
            "[timings]\nbridge_shift_s = 0.0\nforce_detach_s = 86400.0\n",
            "[policy]\nrisk_weight = 0.0\nbridge_threshold = 1.0\n"
        ));
        let c = Config::load(Some(&f), std::iter::empty()).unwrap();
        assert_eq!(c.sim.rebalance_probability, 1.0);
        assert_eq!(c.timings.force_detach_s, 86_400.0);
    }

    #[test]
    fn aws_pools_and_bridges_are_read_or_named() {
        let f = file(concat!(
            "[aws]\npools = [\"m5.xlarge@us-east-1a=spot-a\", \"c5.xlarge@us-east-1b\"]\n",
            "bridges = [\"default/web=arn:rule|arn:tg/web|arn:tg/fn|100\"]\n"
        ));
        let c = Config::load(Some(&f), std::iter::empty()).unwrap();
        let s = c.aws.settings().unwrap();
        let a = costop_core::PoolId::new("m5.xlarge", "us-east-1a");
        assert_eq!(s.pools, [a.clone(), costop_core::PoolId::new("c5.xlarge", "us-east-1b")]);
        assert_eq!(s.asg_by_pool[&a], "spot-a");
        assert_eq!(s.bridges["default/web"].function_weight, 100);
        assert_eq!(s.bridges["default/web"].function_target_group, "arn:tg/fn");
        // From the environment too.
        let env =
            vec![("COSTOP_AWS_POOLS".to_string(), "r5.xlarge@eu-west-1c, m5.xlarge@eu-west-1a".to_string())];
        let c = Config::load(None, env.into_iter()).unwrap();
        assert_eq!(c.aws.settings().unwrap().pools.len(), 2);
        // The cluster name the IAM policy's tag conditions need.
        assert_eq!(s.cluster_name, None);
        let env = vec![("COSTOP_AWS_CLUSTER_NAME".to_string(), "prod-eu".to_string())];
        let c = Config::load(None, env.into_iter()).unwrap();
        assert_eq!(c.aws.settings().unwrap().cluster_name.as_deref(), Some("prod-eu"));
        for (body, expect) in [
            ("[aws]\npools = [\"m5.xlarge\"]\n", "`m5.xlarge`: no `@`"),
            ("[aws]\npools = [\"m5.xlarge@us-east-1a=\"]\n", "empty Auto Scaling group"),
            ("[aws]\npools = [\"m5@us-east-1a\"]\n", "not an instance type"),
            ("[aws]\npools = [\"m5.xlarge@1\"]\n", "not an availability zone"),
            ("[aws]\npools = [\"m5.xlarge@us-east-1a\", \"m5.xlarge @ us-east-1a=g\"]\n", "listed twice"),
            ("[aws]\nbridges = [\"web=a|b|c|1\"]\n", "NAMESPACE/NAME"),
            ("[aws]\nbridges = [\"ns/web=a|b|c\"]\n", "four"),
            ("[aws]\nbridges = [\"ns/web=a|b|c|lots\"]\n", "weight is not a number"),
            ("[aws]\nbridges = [\"ns/web=a|b|c|1000\"]\n", "0–999"),
        ] {
            let f = file(body);
            let err = format!("{:#}", Config::load(Some(&f), std::iter::empty()).unwrap_err());
            assert!(err.contains(expect), "{body:?}: {err}");
        }
    }
}
