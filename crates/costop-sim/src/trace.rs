//! Reading the public Spot traces (SkyPilot `spot-traces` JSON) and the Spot
//! Advisor snapshot into a [`Market`].
//!
//! Trace format: `{"metadata": {"gap_seconds": G}, "data": [v0, …]}`, with an
//! optional `"prices": [USD/h, …]` of the same length. File names start with
//! the zone (`us-east-1b_intel_64.json`). Value meaning (the data README):
//! in *preemption* traces the number of the collector's instances running; a
//! drop is a reclaim and a value below the maximum means the relaunch has not
//! succeeded yet (the pool cannot launch). In *availability* traces 1 means a
//! launch succeeded in that tick and 0 that it failed; there, as a model
//! choice, a 1 → 0 step is taken as a reclaim of the pool's running instances.
//!
//! Fairness rules of the reading:
//! - a preemption drop from `c` to `c' < c` running instances takes the share
//!   `(c - c') / c` of the pool, not all of it (an availability 1 → 0 step
//!   takes all of it);
//! - the files of a directory are cut at the end of the shortest one: past
//!   a file's last tick nothing is known of its pool, and a pool with no
//!   data must not pass for a pool that never reclaims.

use crate::catalog;
use crate::market::{Market, PoolMarket};
use costop_core::time::{Millis, SECOND};
use costop_core::PoolId;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// What went wrong reading a trace; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// File or directory missing or unreadable. The OS error is part of the
    /// message and deliberately not a `source`: a chain printer (`{:#}`)
    /// would print it twice.
    #[error("trace {path}: cannot read: {cause}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// Not the expected JSON.
    #[error("trace {path}: not a spot trace (expected {{\"metadata\": {{\"gap_seconds\": N}}, \"data\": [...]}}): {message}")]
    Format {
        /// The path.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// JSON fine but the values make no sense.
    #[error("trace {path}: {message}")]
    Invalid {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Which kind of trace a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceKind {
    /// Count of running instances; drops are reclaims.
    Preemption,
    /// Launch success per tick.
    Availability,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrace {
    metadata: RawMetadata,
    data: Vec<f64>,
    #[serde(default)]
    prices: Option<Vec<Option<f64>>>,
}

#[derive(Deserialize)]
struct RawMetadata {
    gap_seconds: f64,
}

/// Instance type the SkyPilot collector used for each file-name tag (from
/// the data README and the collector's script).
fn instance_type_for_tag(tag: &str) -> Option<&'static str> {
    match tag {
        "intel_64" => Some("r5.16xlarge"),
        "v100_1" => Some("p3.2xlarge"),
        "v100_8" => Some("p3.16xlarge"),
        "k80_1" => Some("p2.xlarge"),
        "k80_8" => Some("p2.8xlarge"),
        _ => None,
    }
}

/// Savings and interruption bands from the Spot Advisor snapshot.
#[derive(Debug, Clone, Default)]
pub struct SpotAdvisor {
    raw: serde_json::Value,
}

impl SpotAdvisor {
    /// Read `spot-advisor-data.json`.
    pub fn load(path: &Path) -> Result<Self, TraceError> {
        let text =
            std::fs::read_to_string(path).map_err(|cause| TraceError::Io { path: path.into(), cause })?;
        let raw: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| TraceError::Format { path: path.into(), message: e.to_string() })?;
        if !raw.get("spot_advisor").is_some_and(|v| v.is_object()) {
            return Err(TraceError::Invalid {
                path: path.into(),
                message: "no `spot_advisor` object".into(),
            });
        }
        Ok(Self { raw })
    }

    fn entry(&self, region: &str, instance_type: &str) -> Option<&serde_json::Value> {
        self.raw.get("spot_advisor")?.get(region)?.get("Linux")?.get(instance_type)
    }

    /// Savings off on-demand, as a fraction (`s` / 100).
    pub fn savings(&self, region: &str, instance_type: &str) -> Option<f64> {
        Some(self.entry(region, instance_type)?.get("s")?.as_f64()? / 100.0)
    }

    /// Interruptions per instance per day implied by the band (`r`): the
    /// band's upper bound of monthly frequency, over 30 days (`>20%` is taken as 30 %).
    pub fn interruptions_per_day(&self, region: &str, instance_type: &str) -> Option<f64> {
        let band = self.entry(region, instance_type)?.get("r")?.as_u64()?;
        band_interruptions_per_day(usize::try_from(band).ok()?)
    }
}

/// Upper bound of monthly interruption frequency of each Spot Advisor band
/// (`r` 0–4: `<5%`, `5-10%`, `10-15%`, `15-20%`, `>20%`; the open `>20%`
/// band is taken as 30 %).
pub const ADVISOR_BAND_MONTHLY: [f64; 5] = [0.05, 0.10, 0.15, 0.20, 0.30];

/// The Spot Advisor band (0–4) a monthly interruption frequency falls in.
pub fn advisor_band(monthly: f64) -> usize {
    ADVISOR_BAND_MONTHLY[..4].iter().position(|upper| monthly < *upper).unwrap_or(4)
}

/// Interruptions per instance per day a band stands for: its upper bound of
/// monthly frequency over 30 days. `None` for an unknown band.
pub fn band_interruptions_per_day(band: usize) -> Option<f64> {
    Some(ADVISOR_BAND_MONTHLY.get(band)? / 30.0)
}

/// The coarse public prior for a pool whose true rate is `per_day`
/// interruptions per instance per day: the per-day rate of the Spot Advisor
/// band that rate falls in. What a user could know, not the truth.
pub fn advisor_prior_per_day(per_day: f64) -> f64 {
    band_interruptions_per_day(advisor_band(per_day * 30.0)).unwrap_or(DEFAULT_PRIOR_PER_DAY)
}

pub use costop_facts::region_of;

/// Whether a file-name prefix looks like a zone (`us-east-1b`).
fn is_zone(zone: &str) -> bool {
    zone.contains('-') && zone.ends_with(|c: char| c.is_ascii_lowercase())
}

/// Whether a path is named like a trace file (`ZONE_TAG.json`).
fn is_trace_file(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "json")
        && path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.split_once('_'))
            .is_some_and(|(zone, _)| is_zone(zone))
}

/// Every trace directory under `root` (itself included): the directories
/// that directly hold trace files (`ZONE_TAG.json`), sorted, found
/// recursively. Hidden directories, and directories of other JSON (such as
/// the Spot Advisor snapshot), are skipped.
pub fn trace_dirs(root: &Path) -> Result<Vec<PathBuf>, TraceError> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut has_json = false;
        for entry in std::fs::read_dir(&dir).map_err(|cause| TraceError::Io { path: dir.clone(), cause })? {
            let path = entry.map_err(|cause| TraceError::Io { path: dir.clone(), cause })?.path();
            let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            if path.is_dir() && !hidden {
                stack.push(path);
            } else if path.is_file() && is_trace_file(&path) {
                has_json = true;
            }
        }
        if has_json {
            found.push(dir);
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(TraceError::Invalid {
            path: root.into(),
            message: "no directory under it holds trace files (ZONE_TAG.json)".into(),
        });
    }
    Ok(found)
}

/// Files of a trace path: the file itself, or the `.json` files of a directory, sorted.
fn trace_files(path: &Path) -> Result<Vec<PathBuf>, TraceError> {
    let meta = std::fs::metadata(path).map_err(|cause| TraceError::Io { path: path.into(), cause })?;
    if meta.is_file() {
        return Ok(vec![path.into()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|cause| TraceError::Io { path: path.into(), cause })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(TraceError::Invalid {
            path: path.into(),
            message: "directory holds no .json trace files".into(),
        });
    }
    Ok(files)
}

/// Load a trace file or directory into a market. `instance_type` overrides
/// the type inferred from file names; `advisor` supplies prices where the
/// trace has none, and the prior interruption rate.
pub fn load_market(
    path: &Path,
    instance_type: Option<&str>,
    advisor: Option<&SpotAdvisor>,
) -> Result<Market, TraceError> {
    let kind = if path.to_string_lossy().contains("availability") {
        TraceKind::Availability
    } else {
        TraceKind::Preemption
    };
    let mut pools = Vec::new();
    let mut duration = Millis::MAX;
    for file in trace_files(path)? {
        let (pool, span) = load_pool(&file, kind, instance_type, advisor)?;
        duration = duration.min(span);
        pools.push(pool);
    }
    // Cut every pool at the shortest file's end: past it some pool's history
    // is unknown.
    for pool in &mut pools {
        pool.reclaims.retain(|r| r.at < duration);
        pool.unavailable.retain(|(from, _)| *from < duration);
        for span in &mut pool.unavailable {
            span.1 = span.1.min(duration);
        }
        pool.prices.retain(|(from, _)| *from < duration);
    }
    let kind_name = match kind {
        TraceKind::Preemption => "preemption",
        TraceKind::Availability => "availability",
    };
    Ok(Market { pools, duration, source: format!("{kind_name} trace {}", path.display()) })
}

fn load_pool(
    file: &Path,
    kind: TraceKind,
    instance_type: Option<&str>,
    advisor: Option<&SpotAdvisor>,
) -> Result<(PoolMarket, Millis), TraceError> {
    let invalid = |message: String| TraceError::Invalid { path: file.into(), message };
    let text = std::fs::read_to_string(file).map_err(|cause| TraceError::Io { path: file.into(), cause })?;
    let raw: RawTrace = serde_json::from_str(&text)
        .map_err(|e| TraceError::Format { path: file.into(), message: e.to_string() })?;
    let gap = raw.metadata.gap_seconds;
    // A day between samples is already far coarser than any trace; more
    // would only overflow the time axis.
    if !(gap.is_finite() && (1.0..=86_400.0).contains(&gap)) {
        return Err(invalid(format!("gap_seconds must be between 1 and 86400, got {gap}")));
    }
    if raw.data.is_empty() {
        return Err(invalid("`data` is empty".into()));
    }
    if let Some(bad) = raw.data.iter().find(|v| !v.is_finite() || **v < 0.0) {
        return Err(invalid(format!("`data` holds {bad}, not a count")));
    }
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let (zone, tag) =
        stem.split_once('_').ok_or_else(|| invalid(format!("file name `{stem}` is not ZONE_TAG.json")))?;
    if !is_zone(zone) {
        return Err(invalid(format!("file name does not start with a zone: `{zone}`")));
    }
    let ty = match instance_type {
        Some(t) => t,
        None => instance_type_for_tag(tag)
            .ok_or_else(|| invalid(format!("unknown instance tag `{tag}`; pass --instance-type")))?,
    };
    let catalog = catalog::instance_type(ty).ok_or_else(|| {
        invalid(format!(
            "no on-demand price known for instance type `{ty}` (known: {})",
            catalog::known_type_names()
        ))
    })?;
    let region = region_of(zone);
    let gap_ms = (gap * SECOND as f64) as Millis;
    let duration = gap_ms
        .checked_mul(raw.data.len() as Millis)
        .filter(|d| *d <= 100 * 365 * 24 * 3600 * SECOND)
        .ok_or_else(|| {
            invalid(format!("{} samples {gap} s apart span more than a century", raw.data.len()))
        })?;

    let prices = match &raw.prices {
        Some(p) if p.len() != raw.data.len() => {
            return Err(invalid(format!("`prices` has {} values but `data` has {}", p.len(), raw.data.len())))
        }
        Some(p) if p.iter().any(|v| v.is_some_and(|x| !(x.is_finite() && x > 0.0))) => {
            return Err(invalid("`prices` holds a value that is not a positive price".into()))
        }
        Some(p) if p.iter().any(Option::is_some) => {
            let mut series: Vec<(Millis, f64)> = Vec::new();
            let mut last = p.iter().flatten().next().copied().unwrap_or(0.0);
            for (i, v) in p.iter().enumerate() {
                let price = v.unwrap_or(last);
                last = price;
                if series.last().is_none_or(|(_, prev)| *prev != price) {
                    series.push((if series.is_empty() { 0 } else { i as Millis * gap_ms }, price));
                }
            }
            series
        }
        _ => {
            let savings = advisor.and_then(|a| a.savings(region, ty)).unwrap_or(DEFAULT_SAVINGS);
            vec![(0, catalog.on_demand_usd_hr * (1.0 - savings))]
        }
    };

    let max = raw.data.iter().copied().fold(0.0, f64::max);
    let first_full = raw.data.iter().position(|v| *v >= max).unwrap_or(0);
    let mut reclaims = Vec::new();
    let mut unavailable: Vec<(Millis, Millis)> = Vec::new();
    for i in 1..raw.data.len() {
        let (prev, now) = (raw.data[i - 1], raw.data[i]);
        let t = i as Millis * gap_ms;
        if i > first_full && now < prev {
            let share = match kind {
                // A drop from c to c' running instances takes (c - c') / c of the pool.
                TraceKind::Preemption => (prev - now) / prev,
                // 1 → 0: the model choice takes the pool's running instances.
                TraceKind::Availability => 1.0,
            };
            reclaims.push(crate::market::Reclaim { at: t, share });
        }
        let blocked = match kind {
            TraceKind::Preemption => i >= first_full && now < max,
            TraceKind::Availability => now < 1.0,
        };
        if blocked {
            match unavailable.last_mut() {
                Some((_, end)) if *end == t => *end = t + gap_ms,
                _ => unavailable.push((t, t + gap_ms)),
            }
        }
    }
    let prior = advisor.and_then(|a| a.interruptions_per_day(region, ty)).unwrap_or(DEFAULT_PRIOR_PER_DAY);
    Ok((
        PoolMarket {
            id: PoolId::new(ty, zone),
            on_demand_usd_hr: catalog.on_demand_usd_hr,
            prices,
            reclaims,
            unavailable,
            prior_interruptions_per_day: prior,
        },
        duration,
    ))
}

/// Savings used when neither the trace nor the Spot Advisor gives a price:
/// the median saving over Linux pools in the Advisor snapshot (65 %, data README).
pub const DEFAULT_SAVINGS: f64 = 0.65;
/// Prior interruptions per day without an Advisor band: the `10-15%` band.
pub const DEFAULT_PRIOR_PER_DAY: f64 = 0.15 / 30.0;

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("costop-trace-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn preemption_drops_become_reclaims_and_gaps_unavailability() {
        let d = tmp("ok").join("preemption");
        std::fs::create_dir_all(&d).unwrap();
        let f = write(
            &d,
            "us-east-1b_intel_64.json",
            r#"{"metadata": {"gap_seconds": 10}, "data": [0, 1, 1, 0, 0, 1, 1], "prices": [1.0, 1.0, 1.5, 1.5, 2.0, 2.0, 2.0]}"#,
        );
        let m = load_market(&f, None, None).unwrap();
        let p = &m.pools[0];
        assert_eq!(p.id, PoolId::new("r5.16xlarge", "us-east-1b"));
        assert_eq!(p.reclaims.iter().map(|r| r.at).collect::<Vec<_>>(), vec![30_000]);
        assert_eq!(p.unavailable, vec![(30_000, 50_000)]);
        assert_eq!(p.prices, vec![(0, 1.0), (20_000, 1.5), (40_000, 2.0)]);
        assert_eq!(m.duration, 70_000);
    }

    #[test]
    fn junk_is_refused_with_the_file_named() {
        let d = tmp("junk");
        let cases = [
            ("us-east-1a_intel_64.json", "not json", "not a spot trace"),
            ("us-east-1a_intel_64.json", r#"{"metadata": {}, "data": [1]}"#, "gap_seconds"),
            (
                "us-east-1a_intel_64.json",
                r#"{"metadata": {"gap_seconds": 0}, "data": [1]}"#,
                "between 1 and 86400",
            ),
            (
                "us-east-1a_intel_64.json",
                r#"{"metadata": {"gap_seconds": 1e300}, "data": [1]}"#,
                "between 1 and 86400",
            ),
            ("us-east-1a_intel_64.json", r#"{"metadata": {"gap_seconds": 5}, "data": []}"#, "empty"),
            (
                "us-east-1a_intel_64.json",
                r#"{"metadata": {"gap_seconds": 5}, "data": [1, "x"]}"#,
                "not a spot trace",
            ),
            (
                "us-east-1a_intel_64.json",
                r#"{"metadata": {"gap_seconds": 5}, "data": [1, 1], "prices": [1]}"#,
                "`prices` has 1",
            ),
            (
                "us-east-1a_mystery.json",
                r#"{"metadata": {"gap_seconds": 5}, "data": [1]}"#,
                "unknown instance tag",
            ),
            ("nozone.json", r#"{"metadata": {"gap_seconds": 5}, "data": [1]}"#, "ZONE_TAG"),
        ];
        for (name, body, expect) in cases {
            let f = write(&d, name, body);
            let err = load_market(&f, None, None).unwrap_err().to_string();
            assert!(err.contains(expect), "{name}: {err}");
            assert!(err.contains(name), "error does not name the file: {err}");
            std::fs::remove_file(f).unwrap();
        }
        let err = load_market(&d.join("missing"), None, None).unwrap_err().to_string();
        assert!(err.contains("missing") && err.contains("cannot read"), "{err}");
        let err = load_market(&d, None, None).unwrap_err().to_string();
        assert!(err.contains("no .json"), "{err}");
    }

    #[test]
    fn a_preemption_drop_takes_its_share_of_the_pool() {
        let d = tmp("share").join("preemption");
        std::fs::create_dir_all(&d).unwrap();
        // 4 running: one reclaimed (a quarter), back to 4, three of the four
        // reclaimed, then the last one.
        let f = write(
            &d,
            "us-east-1b_intel_64.json",
            r#"{"metadata": {"gap_seconds": 10}, "data": [2, 4, 3, 4, 1, 1, 0, 4]}"#,
        );
        let p = &load_market(&f, None, None).unwrap().pools[0];
        let got: Vec<(Millis, f64)> = p.reclaims.iter().map(|r| (r.at, r.share)).collect();
        assert_eq!(got, vec![(20_000, 0.25), (40_000, 0.75), (60_000, 1.0)]);
        assert_eq!(p.unavailable, vec![(20_000, 30_000), (40_000, 70_000)]);
    }

    #[test]
    fn an_availability_step_down_takes_the_whole_pool() {
        let d = tmp("avail").join("availability");
        std::fs::create_dir_all(&d).unwrap();
        let f = write(
            &d,
            "us-west-2a_v100_1.json",
            r#"{"metadata": {"gap_seconds": 10}, "data": [1, 1, 0, 1, 0]}"#,
        );
        let p = &load_market(&f, None, None).unwrap().pools[0];
        let got: Vec<(Millis, f64)> = p.reclaims.iter().map(|r| (r.at, r.share)).collect();
        assert_eq!(got, vec![(20_000, 1.0), (40_000, 1.0)]);
        assert_eq!(p.unavailable, vec![(20_000, 30_000), (40_000, 50_000)]);
    }

    #[test]
    fn a_directory_is_cut_at_its_shortest_file() {
        let d = tmp("cut").join("preemption");
        std::fs::create_dir_all(&d).unwrap();
        // 1b runs 8 ticks and reclaims at ticks 2 and 6; 1c ends after 5.
        write(
            &d,
            "us-east-1b_intel_64.json",
            r#"{"metadata": {"gap_seconds": 10}, "data": [1, 1, 0, 1, 1, 1, 0, 0]}"#,
        );
        write(
            &d,
            "us-east-1c_intel_64.json",
            r#"{"metadata": {"gap_seconds": 10}, "data": [1, 1, 1, 1, 0], "prices": [1.0, 1.0, 1.0, 1.0, 2.0]}"#,
        );
        let m = load_market(&d, None, None).unwrap();
        assert_eq!(m.duration, 50_000, "the shortest file's span");
        let (b, c) = (&m.pools[0], &m.pools[1]);
        assert_eq!(b.reclaims.iter().map(|r| r.at).collect::<Vec<_>>(), vec![20_000]);
        assert_eq!(b.unavailable, vec![(20_000, 30_000)]);
        assert_eq!(c.reclaims.iter().map(|r| r.at).collect::<Vec<_>>(), vec![40_000]);
        assert_eq!(c.unavailable, vec![(40_000, 50_000)]);
        assert_eq!(c.prices, vec![(0, 1.0), (40_000, 2.0)]);
        // Unavailability running past the cut ends at it.
        let d = tmp("cut-span").join("preemption");
        std::fs::create_dir_all(&d).unwrap();
        write(
            &d,
            "us-east-1b_intel_64.json",
            r#"{"metadata": {"gap_seconds": 10}, "data": [1, 1, 0, 0, 0, 0]}"#,
        );
        write(&d, "us-east-1c_intel_64.json", r#"{"metadata": {"gap_seconds": 10}, "data": [1, 1, 1, 1]}"#);
        let m = load_market(&d, None, None).unwrap();
        assert_eq!(m.duration, 40_000);
        assert_eq!(m.pools[0].unavailable, vec![(20_000, 40_000)]);
    }

    #[test]
    fn a_missing_file_names_its_os_error_once() {
        let err = load_market(&tmp("gone").join("nothing-here"), None, None).unwrap_err();
        // Walk the chain as `{:#}` (anyhow) does.
        let mut text = err.to_string();
        let mut cause = std::error::Error::source(&err);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        assert!(text.contains("nothing-here") && text.contains("cannot read"), "{text}");
        assert_eq!(text.matches("os error").count(), 1, "{text}");
    }

    #[test]
    fn advisor_bands_of_rates() {
        assert_eq!(advisor_band(0.0), 0);
        assert_eq!(advisor_band(0.049), 0);
        assert_eq!(advisor_band(0.05), 1);
        assert_eq!(advisor_band(0.12), 2);
        assert_eq!(advisor_band(0.199), 3);
        assert_eq!(advisor_band(0.2), 4);
        assert_eq!(advisor_band(30.0), 4);
        assert_eq!(band_interruptions_per_day(2), Some(0.15 / 30.0));
        assert_eq!(band_interruptions_per_day(5), None);
        // 0.001 a day is 3 % a month: the `<5%` band, whose rate is its bound.
        assert_eq!(advisor_prior_per_day(0.001), 0.05 / 30.0);
        assert_eq!(advisor_prior_per_day(1.0), 0.30 / 30.0);
    }

    #[test]
    fn trace_dirs_finds_every_directory_with_traces() {
        let root = tmp("dirs");
        let body = r#"{"metadata": {"gap_seconds": 10}, "data": [1]}"#;
        for dir in ["preemption/1-node/a", "preemption/1-node/b", "availability/x", ".hidden"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            write(&root.join(dir), "us-east-1a_intel_64.json", body);
        }
        std::fs::create_dir_all(root.join("empty/deeper")).unwrap();
        std::fs::create_dir_all(root.join("advisor")).unwrap();
        write(&root.join("advisor"), "spot-advisor-data.json", "{}");
        let got: Vec<PathBuf> = trace_dirs(&root).unwrap();
        let want: Vec<PathBuf> = ["availability/x", "preemption/1-node/a", "preemption/1-node/b"]
            .iter()
            .map(|d| root.join(d))
            .collect();
        assert_eq!(got, want);
        let err = trace_dirs(&root.join("empty")).unwrap_err().to_string();
        assert!(err.contains("empty") && err.contains("no directory"), "{err}");
        assert!(trace_dirs(&root.join("nope")).unwrap_err().to_string().contains("cannot read"));
    }

    #[test]
    fn region_of_zone() {
        assert_eq!(region_of("us-east-1b"), "us-east-1");
        assert_eq!(region_of("eu-west-3c"), "eu-west-3");
    }
}
