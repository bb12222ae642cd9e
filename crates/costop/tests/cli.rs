//! The `costop` binary as a user runs it.

mod common;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

/// `costop` with the user's data directory overrides removed, so that it
/// reads the repository's `data/` as a fresh clone does.
fn costop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_costop"))
        .args(args)
        .env_remove("COSTOP_LOG")
        .env_remove("COSTOP_DATA_DIR")
        .env_remove("COSTOP_SIM_DATA_DIR")
        .output()
        .expect("run costop")
}

/// The public data the repository ships (`data/`, sources in
/// `data/README.md`); missing data fails the test that needs it.
fn data_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data");
    assert!(dir.is_dir(), "the repository's data directory {} is missing", dir.display());
    dir
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "costop failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("one JSON object")
}

fn strategy<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["strategies"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()
}

#[test]
fn trace_run_keeps_the_invariants_and_is_repeatable() {
    let trace = data_dir().join("skypilot-spot-traces/raw/preemption/1-node/aws-04-19-2023");
    assert!(trace.is_dir(), "trace {} is missing", trace.display());
    let trace = trace.to_str().unwrap();
    let args = ["sim", "--trace", trace, "--json"];
    let first = costop(&args);
    let v = json(&first);
    let names: Vec<&str> =
        v["strategies"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["on-demand", "spot-naive", "drain-on-notice", "replace-on-notice", "costop", "oracle"]
    );
    let od = strategy(&v, "on-demand");
    assert_eq!(od["interruptions"], 0);
    assert_eq!(od["cost_vs_on_demand"], 1.0);
    assert_eq!(od["requests_failed"], 0);
    let naive = strategy(&v, "spot-naive");
    assert!(naive["interruptions"].as_u64().unwrap() > 0);
    assert!(naive["requests_failed"].as_u64().unwrap() > 0, "naive Spot must lose requests on reclaims");
    for s in v["strategies"].as_array().unwrap() {
        for key in [
            "cost_usd",
            "cost_vs_on_demand",
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
        assert!(s["requests_failed"].as_u64() <= s["requests_total"].as_u64());
        let recovery: Vec<f64> = ["p50_recovery_s", "p90_recovery_s", "p99_recovery_s", "max_recovery_s"]
            .iter()
            .map(|k| s[k].as_f64().unwrap())
            .collect();
        assert!(recovery.windows(2).all(|w| w[0] <= w[1]), "p50 ≤ p90 ≤ p99 ≤ max: {s}");
    }
    for key in ["sim_days", "nodes", "seed"] {
        assert!(v[key].is_number(), "{key}");
    }
    assert!(v["pool_hit_model"].as_str().unwrap().contains("every node"));
    let again = costop(&args);
    assert_eq!(first.stdout, again.stdout, "same seed must give the same JSON");
    // The oracle knows the whole trace: it serves every request, and no
    // Spot strategy that serves (nearly) everything is cheaper. It is the
    // floor for serving everything: a strategy that leaves nodes
    // unreplaced and fails requests meanwhile can pay less.
    let oracle = strategy(&v, "oracle");
    assert_eq!(oracle["requests_failed"], 0, "the oracle loses no request: {oracle}");
    assert_eq!(oracle["success_rate"], 1.0, "{oracle}");
    let oracle_cost = oracle["cost_usd"].as_f64().unwrap();
    let cheaper: Vec<String> = v["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] != "on-demand" && s["name"] != "oracle")
        .filter(|s| s["success_rate"].as_f64().unwrap() >= 0.999)
        .filter(|s| s["cost_usd"].as_f64().unwrap() < oracle_cost)
        .map(|s| {
            format!("{} ${} (success {})", s["name"].as_str().unwrap(), s["cost_usd"], s["success_rate"])
        })
        .collect();
    assert!(cheaper.is_empty(), "cheaper than the oracle (${oracle_cost}): {}", cheaper.join(", "));
}

#[test]
fn builtin_run_needs_no_data_and_writes_a_report() {
    let report = std::env::temp_dir().join(format!("costop-report-{}.html", std::process::id()));
    let o = costop(&["sim", "--days", "1", "--nodes", "12", "--report", report.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("costop") && table.contains("on-demand"), "{table}");
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("Cumulative cost") && html.contains("id=\"report-data\"") && html.contains("uPlot")
    );
    let seeds: Vec<Value> = ["1", "2"]
        .iter()
        .map(|s| json(&costop(&["sim", "--days", "1", "--nodes", "12", "--seed", s, "--json"])))
        .collect();
    assert_ne!(seeds[0], seeds[1], "the seed must matter");
}

#[test]
fn bad_input_gets_one_clear_line_and_a_failing_exit() {
    let dir = std::env::temp_dir().join(format!("costop-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_trace = dir.join("us-east-1a_intel_64.json");
    std::fs::write(&bad_trace, "{\"metadata\": {\"gap_seconds\": 10}, \"data\": [1, 0, }").unwrap();
    let bad_config = dir.join("costop.toml");
    std::fs::write(&bad_config, "[sim]\nnodez = 3\n").unwrap();
    let missing = dir.join("nope.json");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["sim", "--trace", missing.to_str().unwrap()], "nope.json"),
        (vec!["sim", "--trace", bad_trace.to_str().unwrap()], "us-east-1a_intel_64.json"),
        (vec!["sim", "--strategies", "on-demand,yolo"], "unknown strategy `yolo`"),
        (vec!["--config", bad_config.to_str().unwrap(), "sim"], "sim.nodez"),
        (vec!["sim", "--pool-hit", "7"], "pool hit `7`"),
    ];
    for (args, expect) in cases {
        let o = costop(&args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line expected: {err}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_costop"))
        .args(["sim", "--days", "1"])
        .env("COSTOP_SIM_NODEZ", "3")
        .output()
        .unwrap();
    assert!(!o.status.success() && stderr(&o).contains("COSTOP_SIM_NODEZ"), "{}", stderr(&o));
}

/// The `COSTOP_*` variables the overlays give the containers (plain
/// values; those from Secrets and fields are left out).
fn deployed_environment() -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = Vec::new();
    for overlay in common::OVERLAYS {
        for o in common::overlay_objects(overlay) {
            for c in o["spec"]["template"]["spec"]["containers"].as_array().into_iter().flatten() {
                for e in c["env"].as_array().into_iter().flatten() {
                    let (Some(name), Some(value)) = (e["name"].as_str(), e["value"].as_str()) else {
                        continue;
                    };
                    if name.starts_with("COSTOP_") && !vars.iter().any(|(n, _)| n == name) {
                        vars.push((name.to_string(), value.to_string()));
                    }
                }
            }
        }
    }
    vars
}

#[test]
fn the_deployed_environment_is_not_read_as_configuration() {
    let vars = deployed_environment();
    for name in ["COSTOP_REDIS_URL", "COSTOP_SERVER_URL", "COSTOP_LOG"] {
        assert!(vars.iter().any(|(n, _)| n == name), "{name} not in the overlays: {vars:?}");
    }
    // Every flag's variable as well, pointing nowhere: none is a config key.
    let flags = [
        ("COSTOP_IMDS_URL", "http://127.0.0.1:9"),
        ("COSTOP_TOKEN_PATH", "/nonexistent/token"),
        ("COSTOP_QUEUE_URL", "http://127.0.0.1:9/queue/costop"),
        ("COSTOP_DEAD_LETTER_URL", "http://127.0.0.1:9/queue/costop-dead"),
    ];
    let o = Command::new(env!("CARGO_BIN_EXE_costop"))
        .args(["sim", "--days", "0.01", "--nodes", "2", "--json"])
        .envs(vars.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        .envs(flags)
        .output()
        .expect("run costop");
    let err = stderr(&o);
    assert!(!err.contains("unknown config") && !err.contains("environment COSTOP_"), "{err}");
    let v = json(&o);
    assert_eq!(v["nodes"], 2);

    // The agent with the same environment starts and keeps polling (its
    // sinks and instance metadata are unreachable here) instead of exiting.
    let mut agent = Command::new(env!("CARGO_BIN_EXE_costop"))
        .arg("agent")
        .envs(vars.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        .env("COSTOP_IMDS_URL", "http://127.0.0.1:9")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run costop agent");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let exited = agent.try_wait().expect("agent status");
    let _ = agent.kill();
    let out = agent.wait_with_output().expect("agent output");
    assert!(exited.is_none(), "the agent exited ({exited:?}): {}", stderr(&out));
    assert!(!stderr(&out).contains("unknown config"), "{}", stderr(&out));
}

#[test]
fn numbers_out_of_range_are_refused_before_anything_runs() {
    let dir = std::env::temp_dir().join(format!("costop-numbers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let nan = dir.join("nan.toml");
    std::fs::write(&nan, "[sim]\nrebalance_probability = nan\n").unwrap();
    type Case<'a> = (Vec<&'a str>, Option<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["sim", "--days", "0.01"],
            Some(("COSTOP_TIMINGS_NODE_READY_S", "inf")),
            "timings.node_ready_s = inf",
        ),
        (vec!["sim", "--days", "0.01"], Some(("COSTOP_SIM_DAYS", "-1")), "sim.days = -1"),
        (
            vec!["emu", "--nodes", "1"],
            Some(("COSTOP_TIMINGS_NODE_READY_S", "inf")),
            "timings.node_ready_s = inf",
        ),
        (vec!["--config", nan.to_str().unwrap(), "sim"], None, "sim.rebalance_probability = NaN"),
    ];
    for (args, var, expect) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_costop"));
        cmd.args(&args).env_remove("COSTOP_LOG").current_dir(&dir);
        if let Some((k, v)) = var {
            cmd.env(k, v);
        }
        let o = cmd.output().expect("run costop");
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} {var:?} should fail");
        assert!(err.contains(expect), "{args:?} {var:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line expected: {err}");
    }
}

/// Wait up to `limit` for a child to exit; kill it and fail if it does not.
fn exits_within(child: &mut std::process::Child, limit: std::time::Duration) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn an_agent_without_a_sink_refuses_to_start() {
    let mut agent = Command::new(env!("CARGO_BIN_EXE_costop"))
        .args(["agent", "--imds-url", "http://127.0.0.1:9"])
        .env_remove("COSTOP_SERVER_URL")
        .env_remove("COSTOP_REDIS_URL")
        .env_remove("COSTOP_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run costop agent");
    let status = exits_within(&mut agent, std::time::Duration::from_secs(10));
    let out = agent.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(status.code(), Some(1), "the CLI's error exit, not the library's: {err}");
    assert!(
        err.contains("no sink") && err.contains("COSTOP_SERVER_URL") && err.contains("COSTOP_REDIS_URL"),
        "{err}"
    );
    assert!(err.starts_with("costop: agent: refusing to start: "), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
    assert!(!err.contains("panicked"), "{err}");
    // A URL that is not one is refused the same way, naming it.
    let o = Command::new(env!("CARGO_BIN_EXE_costop"))
        .args(["agent", "--imds-url", "http://127.0.0.1:9", "--server-url", "ftp://server"])
        .env_remove("COSTOP_REDIS_URL")
        .env_remove("COSTOP_LOG")
        .output()
        .expect("run costop agent");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("refusing to start") && err.contains("ftp://server"), "{err}");
}

/// A free loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// POST a JSON body with no credentials (the emulator's admin), over plain HTTP.
fn post(url: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    write!(
        conn,
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn an_agent_names_the_sinks_it_cannot_reach_and_reports_no_delivery() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("costop-agent-sinks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut emu = Command::new(env!("CARGO_BIN_EXE_costop"))
        .args(["emu", "--nodes", "1", "--pods-per-node", "1"])
        .env_remove("COSTOP_LOG")
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run costop emu");
    let mut lines = std::io::BufReader::new(emu.stdout.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    let emu_url = line.split_whitespace().last().unwrap_or_default().to_string();
    std::thread::spawn(move || for _ in lines.lines() {});
    let answer = post(
        &format!("{emu_url}/admin/nodes/node-0/notice"),
        r#"{"interruption": {"action": "terminate", "in_seconds": 120}}"#,
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let redis_url = format!("redis://127.0.0.1:{}/", closed_port());
    let server_url = format!("http://127.0.0.1:{}", closed_port());
    let mut agent = Command::new(env!("CARGO_BIN_EXE_costop"))
        .args(["agent", "--imds-url", &format!("{emu_url}/imds/node-0"), "--poll-ms", "100"])
        .args(["--server-url", &server_url, "--redis-url", &redis_url, "--token-path", "/nonexistent"])
        .env("COSTOP_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run costop agent");
    let (tx, rx) = std::sync::mpsc::channel();
    let err = std::io::BufReader::new(agent.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let named =
        |log: &[String], url: &str, what: &str| log.iter().any(|l| l.contains(url) && l.contains(what));
    while !(named(&log, &redis_url, "cannot connect") && named(&log, &server_url, "token"))
        && std::time::Instant::now() < deadline
    {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            log.push(line);
        }
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = emu.kill();
    let _ = emu.wait();
    let log = log.join("\n");
    assert!(log.contains("notice from instance metadata"), "{log}");
    assert!(log.contains(&redis_url) && log.contains("cannot connect"), "the Redis URL is named: {log}");
    assert!(log.contains(&server_url), "the server URL is named: {log}");
    assert!(!log.contains("took the notice") && !log.contains("Taken"), "no delivery happened: {log}");
}
