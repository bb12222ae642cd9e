//! `costop sim --sweep`: every trace the repository ships, one command.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository's public data (`data/`), which the binary reads by default.
fn repo_data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

fn costop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_costop"))
        .args(args)
        .env_remove("COSTOP_LOG")
        .env_remove("COSTOP_DATA_DIR")
        .env_remove("COSTOP_SIM_DATA_DIR")
        .output()
        .expect("run costop")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_sweep_runs_every_shipped_trace_with_every_strategy() {
    let root = repo_data().join("skypilot-spot-traces/raw");
    let o = costop(&["sim", "--sweep", root.to_str().unwrap(), "--nodes", "10", "--days", "1", "--json"]);
    assert!(o.status.success(), "costop failed: {}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let runs = v["runs"].as_array().expect("runs");
    let traces: Vec<&str> = runs.iter().map(|r| r["trace"].as_str().expect("trace")).collect();
    assert_eq!(
        traces,
        [
            "availability/1-node/aws-02-15-2023",
            "availability/1-node/aws-10-26-2022",
            "preemption/1-node/aws-04-19-2023",
            "preemption/1-node/aws-04-22-2023",
        ]
    );
    let all: Vec<&str> = costop_sim::Strategy::DEFAULT.iter().map(|s| s.name()).collect();
    for run in runs {
        assert_eq!(run["nodes"], 10, "{run}");
        assert_eq!(run["days"], 1.0, "{run}");
        let strategies = run["strategies"].as_array().expect("strategies");
        let names: Vec<&str> = strategies.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, all, "{}", run["trace"]);
        assert!(names.contains(&"oracle"), "no oracle in {}: {names:?}", run["trace"]);
        for s in strategies {
            for key in [
                "cost_usd",
                "requests_total",
                "requests_failed",
                "success_rate",
                "interruptions",
                "incidents",
                "unfinished_incidents",
                "p50_recovery_s",
                "p90_recovery_s",
                "p99_recovery_s",
                "max_recovery_s",
                "requests_bridged",
            ] {
                assert!(s[key].is_number(), "{key} missing in {s}");
            }
            let p = |k: &str| s[k].as_f64().unwrap();
            assert!(p("p50_recovery_s") <= p("p90_recovery_s"), "{s}");
            assert!(p("p90_recovery_s") <= p("p99_recovery_s"), "{s}");
            assert!(p("p99_recovery_s") <= p("max_recovery_s"), "{s}");
        }
    }
}

#[test]
fn the_sweep_table_has_a_row_per_trace_and_strategy() {
    let root = repo_data().join("skypilot-spot-traces/raw/preemption");
    let o = costop(&[
        "sim",
        "--sweep",
        root.to_str().unwrap(),
        "--nodes",
        "4",
        "--days",
        "0.2",
        "--strategies",
        "on-demand,spot-naive",
    ]);
    assert!(o.status.success(), "costop failed: {}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("1-node/aws-")).collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(rows[0].contains("aws-04-19-2023") && rows[0].contains("on-demand"), "{table}");
    assert!(rows[3].contains("aws-04-22-2023") && rows[3].contains("spot-naive"), "{table}");
    assert!(table.contains("nearest-rank"), "{table}");
}

#[test]
fn a_missing_data_directory_or_sweep_root_is_one_clear_line() {
    let trace = repo_data().join("skypilot-spot-traces/raw/preemption/1-node/aws-04-19-2023");
    let o = Command::new(env!("CARGO_BIN_EXE_costop"))
        .args(["sim", "--trace", trace.to_str().unwrap(), "--days", "0.1"])
        .env("COSTOP_DATA_DIR", "/nonexistent/costop-data")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("/nonexistent/costop-data") && err.contains("COSTOP_DATA_DIR"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let o = costop(&["sim", "--sweep", "/nonexistent/costop-traces"]);
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("/nonexistent/costop-traces") && err.contains("cannot read"), "{err}");
    assert_eq!(err.matches("os error").count(), 1, "OS error printed once: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
