//! `costop demo` end to end, shorter than the documented run: the real
//! binary starts the emulated cluster and cloud, the server, an agent per
//! Spot node and the load generator, replays the shipped trace's first
//! reclaim, and its JSON summary must show the interruption handled end to
//! end with no failed request. While it runs, its dashboard is loaded in
//! headless Chromium (Debian's `chromium`) and must show the response.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The page as Chromium renders it (after its script ran), or why not.
fn rendered(url: &str) -> Result<String, String> {
    let out = Command::new("chromium")
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--dump-dom", url])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run chromium (scripts/deps installs Debian's chromium): {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn demo_handles_a_reclaim_end_to_end_without_failed_requests() {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_costop"))
        .args(["demo", "--for", "75s", "--json", "--time-scale", "0.25", "--rps", "150"])
        .args(["--dashboard", "127.0.0.1:0"])
        .env_remove("COSTOP_REDIS_URL")
        .env_remove("COSTOP_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run costop demo");
    // The lines, as they come.
    let (tx, lines) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    let mut dashboard = None;
    let mut recovered = None;
    while recovered.is_none() {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(90)) else { break };
        if let Some(url) = line.split("dashboard at ").nth(1) {
            dashboard = Some(url.trim().to_string());
        }
        if line.contains("whole again on other nodes") {
            recovered = line
                .split_whitespace()
                .find(|w| w.ends_with("'s"))
                .map(|n| n.trim_end_matches("'s").to_string());
        }
    }
    let url = dashboard.expect("the demo printed no dashboard address");
    let node = recovered.expect("no notice handled within 90 s");
    // The page shows that node's response, its steps done (DOM content, not only a 200).
    let mut page = String::new();
    for _ in 0..10 {
        page = rendered(&url).unwrap();
        if page.contains(&format!("{node} — notice at")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        page.contains(&format!("{node} — notice at")),
        "the dashboard does not show {node}'s response:\n{page}"
    );
    assert!(page.contains("taint-and-cordon</td><td>done at"), "no step shown done:\n{page}");
    assert!(page.contains("class=\"node spot"), "no Spot node shown:\n{page}");
    assert!(page.contains("uplot"), "the charts did not render:\n{page}");

    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let status = child.wait().unwrap();
    let stderr = reader.join().unwrap();
    assert!(status.success(), "costop demo failed: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(120), "the demo outlived --for by far");
    let s: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {stdout}\n{stderr}"));
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
