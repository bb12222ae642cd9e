//! `costop sim --report` as a browser draws it: the real binary writes the
//! report of the built-in week, headless Chromium (Debian's `chromium`,
//! which scripts/deps installs) runs the page's uPlot charts, and the
//! page's own layout check (what uPlot laid out: every tick label's box,
//! the plot, the legend) must find nothing overlapping, at a wide and a
//! narrow window. Without Chromium the test fails, saying so.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

/// The DOM of `file` after its scripts ran, in a `width`×`height` window.
fn rendered(file: &Path, width: u32, height: u32) -> String {
    let out = Command::new("chromium")
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .arg(format!("--window-size={width},{height}"))
        .arg("--dump-dom")
        .arg(format!("file://{}", file.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run chromium, which this test needs (scripts/deps installs Debian's chromium): {e}"
            )
        });
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("</html>"),
        "chromium rendered nothing (exit {}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// The page's layout check, `#layout-check`'s JSON.
fn layout_check(dom: &str) -> Value {
    let text = dom
        .split("id=\"layout-check\"")
        .nth(1)
        .and_then(|rest| rest.split_once('>'))
        .and_then(|(_, rest)| rest.split("</pre>").next())
        .unwrap_or_else(|| panic!("no #layout-check in the page:\n{dom}"));
    let text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the page's layout check did not run (its script failed?): {e}: `{text}`"))
}

#[test]
fn sim_report_renders_in_headless_chromium_without_overlapping_labels() {
    let report = std::env::temp_dir().join(format!("costop-sim-report-{}.html", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_costop"))
        .args(["sim", "--days", "7", "--nodes", "30", "--report"])
        .arg(&report)
        .env_remove("COSTOP_LOG")
        .env_remove("COSTOP_DATA_DIR")
        .env_remove("COSTOP_SIM_DATA_DIR")
        .output()
        .expect("run costop sim");
    assert!(out.status.success(), "costop sim failed: {}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        !html.contains("src=\"http") && !html.contains("<link"),
        "the report loads something from outside"
    );

    for (width, height) in [(1100, 2000), (720, 2400)] {
        let dom = rendered(&report, width, height);
        let check = layout_check(&dom);
        assert_eq!(check["ok"], true, "at {width} px: {}", check["problems"]);
        assert!(dom.contains("data-layout=\"ok\""), "at {width} px: body not marked ok");
        let charts = check["charts"].as_array().unwrap();
        let ids: Vec<&str> = charts.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["cost", "share", "failed"], "at {width} px");
        for c in charts {
            let id = c["id"].as_str().unwrap();
            let n = |k: &str| c[k].as_array().map_or(0, |a| a.len());
            // Labels that say something, on both axes.
            assert!(n("x_labels") >= 3 && n("y_labels") >= 3, "at {width} px, {id}: {c}");
            // The legend: one entry per line, below the plot, not on it.
            let lines = if id == "share" { 5 } else { 6 };
            assert_eq!(c["legend_entries"], lines, "at {width} px, {id}: {c}");
            assert!(c["legend"]["top"].as_f64() >= c["plot"]["bottom"].as_f64(), "at {width} px, {id}: {c}");
            // Each label's box is in the check, so "ok" was not vacuous.
            assert_eq!(n("x_boxes"), n("x_labels"), "{c}");
        }
        // On the built-in week spot-naive fails thousands of times more
        // than costop: the failed-requests panel is on a log scale.
        assert_eq!(charts[2]["log"], true, "{}", charts[2]);
        assert!(charts[2]["y_labels"].as_array().unwrap().iter().any(|l| l == "1000"), "{}", charts[2]);
        // Every column of the table is explained.
        for column in ["cost USD", "vs on-demand", "served %", "reclaims", "open", "p99 s"] {
            assert!(dom.contains(&format!("<dt>{column}</dt>")), "{column} is not explained");
        }
    }
    let _ = std::fs::remove_file(&report);
}
