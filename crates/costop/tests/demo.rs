//! `costop demo` end to end, shorter than the documented run: the real
//! binary starts the emulated cluster and cloud, the server, an agent per
//! Spot node and the load generator, replays the shipped trace's first
//! reclaim, and its JSON summary must show the interruption handled end to
//! end with no failed request.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn demo_handles_a_reclaim_end_to_end_without_failed_requests() {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_costop"))
        .args(["demo", "--for", "60s", "--json", "--time-scale", "0.25", "--rps", "150"])
        .env_remove("COSTOP_REDIS_URL")
        .env_remove("COSTOP_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run costop demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "costop demo failed: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(100), "the demo outlived --for by far");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("summary is not JSON ({e}): {}\n{stderr}", String::from_utf8_lossy(&out.stdout))
    });
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} missing: {s}"));
    // The lines: a notice, the server's response and its steps, the recovery.
    for line in ["RECLAIM", "server responds to", "taint-and-cordon: ok", "cordoned", "whole again"] {
        assert!(stderr.contains(line), "no `{line}` line:\n{stderr}");
    }
    assert!(n("notices") >= 1 && n("responses") >= 1, "{s}");
    assert_eq!(n("steps_failed"), 0, "{s}");
    assert!(
        n("standbys_woken") + n("capacity_restored") >= 1,
        "neither a standby woken nor capacity restored: {s}"
    );
    assert!(n("volumes_moved") >= 1 && n("volume_moves_in_cloud") >= 1, "no volume moved: {s}");
    assert_eq!(s["bridge_used"], true, "{s}");
    assert!(n("requests_by_function") > 0, "{s}");
    assert!(n("requests_sent") > 3000, "{s}");
    assert_eq!(n("requests_failed"), 0, "{s}");
    assert!(n("recovered") >= 1, "{s}");
    let cordon = s["p50_notice_to_cordon_ms"].as_f64().unwrap();
    assert!(cordon > 0.0 && cordon < 5000.0, "{s}");
    let share = s["cost_vs_on_demand"].as_f64().unwrap();
    assert!(share > 0.0 && share < 1.0, "{s}");
}

#[test]
fn demo_refuses_bad_options() {
    for args in [["--for", "soon"], ["--time-scale", "0"], ["--speed", "-1"], ["--nodes", "2"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_costop"))
            .arg("demo")
            .arg(format!("{}={}", args[0], args[1]))
            .stdin(Stdio::null())
            .output()
            .expect("run costop demo");
        assert!(!out.status.success(), "{args:?} was taken");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(args[0]) || stderr.contains("duration"), "{args:?}: {stderr}");
    }
}
