//! Fuzzing the trace loader on stable Rust: arbitrary file contents and
//! mutations of a valid SkyPilot trace, written to a temporary directory and
//! read with `load_market` (preemption and availability traces), and of a
//! Spot Advisor snapshot read with `SpotAdvisor::load`, never panic; junk is
//! refused. `COSTOP_FUZZ_CASES` sets the cases (`scripts/fuzz`).

use costop_sim::trace::{load_market, SpotAdvisor};
use std::path::PathBuf;

// The shared fuzz harness (one copy for every crate).
#[path = "../../fuzz_harness.rs"]
mod harness;
use harness::*;

const TRACE: &str = r#"{"metadata": {"gap_seconds": 60}, "data": [2, 2, 1, 2, 0, 2, 2], "prices": [0.5, null, 0.6, 0.6, 0.5, null, 0.7]}"#;
const TRACE_NO_PRICES: &str = r#"{"metadata": {"gap_seconds": 600}, "data": [1, 1, 0, 1]}"#;
const ADVISOR: &str =
    r#"{"spot_advisor": {"us-east-1": {"Linux": {"r5.16xlarge": {"s": 70, "r": 1}}}}, "instance_types": {}}"#;

/// A fresh directory for this test.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("costop-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Found by this campaign (fixed in `trace.rs`): a huge `gap_seconds`
/// overflowed the time axis (`gap_seconds × ticks` in ms beyond `u64::MAX`).
#[test]
fn a_huge_gap_is_refused() {
    let d = dir("overflow");
    for body in [
        &br#"{"metadata": {"gap_seconds": 1e300}, "data": [1, 1]}"#[..],
        br#"{"metadata": {"gap_seconds": 18446744073709551616}, "data": [2, 2, 1, 2, 0, 2, 2]}"#,
    ] {
        assert!(!load(&d, body, None), "{} must be refused", text(body));
    }
}

/// Write `body` as a trace file under `dir` and load it (advisor given or not).
fn load(dir: &std::path::Path, body: &[u8], advisor: Option<&SpotAdvisor>) -> bool {
    let file = dir.join("us-east-1b_intel_64.json");
    std::fs::write(&file, body).unwrap();
    let loaded = load_market(&file, None, advisor);
    if let Ok(m) = &loaded {
        for p in &m.pools {
            assert!(p.prices.iter().all(|(_, usd)| usd.is_finite() && *usd > 0.0), "{:?}", text(body));
        }
    }
    loaded.is_ok()
}

#[test]
fn preemption_traces() {
    let d = dir("preemption");
    let advisor = {
        let f = d.join("advisor.json");
        std::fs::write(&f, ADVISOR).unwrap();
        SpotAdvisor::load(&f).unwrap()
    };
    let traces = || vec![TRACE.to_string(), TRACE_NO_PRICES.to_string()];
    let sub = d.join("traces");
    std::fs::create_dir_all(&sub).unwrap();
    fuzz("trace (preemption)", inputs(traces()), |b| {
        load(&sub, &b, Some(&advisor));
    });
    fuzz("trace (preemption, junk)", junk(), |b| assert!(!load(&sub, &b, None)));
}

#[test]
fn availability_traces() {
    let d = dir("availability").join("availability");
    std::fs::create_dir_all(&d).unwrap();
    fuzz("trace (availability)", inputs(vec![TRACE.into(), TRACE_NO_PRICES.into()]), |b| {
        load(&d, &b, None);
    });
}

#[test]
fn spot_advisor_snapshots() {
    let d = dir("advisor");
    let f = d.join("spot-advisor-data.json");
    fuzz("spot advisor snapshot", inputs(vec![ADVISOR.into()]), |b| {
        std::fs::write(&f, &b).unwrap();
        if let Ok(a) = SpotAdvisor::load(&f) {
            let _ =
                (a.savings("us-east-1", "r5.16xlarge"), a.interruptions_per_day("us-east-1", "r5.16xlarge"));
        }
    });
    fuzz("spot advisor snapshot (junk)", junk(), |b| {
        std::fs::write(&f, &b).unwrap();
        assert!(SpotAdvisor::load(&f).is_err());
    });
}
