//! `costop server --dashboard`: the real server process over the emulator,
//! one interruption notice posted through the agents' authenticated path,
//! and the dashboard page, loaded in headless Chromium (Debian's
//! `chromium`, which scripts/deps installs), must show the handled response
//! with its steps done and the nodes of the server's cluster view, without
//! the demo-only request and cost charts. Without Chromium the test fails,
//! saying so.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{bin, free_port, Proc};

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The page as Chromium renders it (after its scripts ran); Chromium is
/// stopped after 30 s (the page keeps a server-sent events stream open).
fn rendered(url: &str) -> String {
    let mut child = Command::new("chromium")
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run chromium, which this test needs (scripts/deps installs Debian's chromium): {e}"
            )
        });
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut dom);
        dom
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap_or_default()
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    let r = http.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    r.json().await.unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_dashboard_shows_a_handled_response_and_its_cluster_view() {
    let dir = std::env::temp_dir().join(format!("costop-server-dash-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_emu, kubeconfig, emu_url) = common::start_emu_scaled(&dir, 3, 2, 1.0);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    let server_url = format!("http://127.0.0.1:{}", free_port());
    let mut server = Command::new(bin())
        .args(["server", "--listen", server_url.trim_start_matches("http://"), "--identity", "dash"])
        .args(["--dashboard", "127.0.0.1:0", "--emu-url", &emu_url, "--kubeconfig"])
        .arg(&kubeconfig)
        .env_remove("COSTOP_REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The dashboard's address, from its line; the rest of the log kept for failures.
    let stderr = server.stderr.take().unwrap();
    let _server = Proc(server);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let all = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(url) = line.split("dashboard at ").nth(1) {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let dashboard = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("the server printed no dashboard address:\n{}", log.lock().unwrap()));

    let started = Instant::now();
    loop {
        let r = http.get(format!("{server_url}/readyz")).send().await;
        let text = match r {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        if text == "leader" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server did not lead ({text}):\n{}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // node-0's agent pod, its token, and its instance.
    let node = "node-0";
    let nodes = get(&http, &format!("{emu_url}/api/v1/nodes")).await;
    let instance = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["metadata"]["name"] == node)
        .and_then(|n| n["spec"]["providerID"].as_str())
        .and_then(|p| p.rsplit('/').next())
        .unwrap()
        .to_string();
    let name = format!("costop-agent-{node}");
    let pod = json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
            "name": "costop-agent", "uid": "costop-agent-ds", "controller": true}]},
        "spec": {"nodeName": node, "serviceAccountName": "costop-agent", "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "agent", "image": "costop:dev"}]}});
    let r =
        http.post(format!("{emu_url}/api/v1/namespaces/costop-system/pods")).json(&pod).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
    let token = get(&http, &format!("{emu_url}/admin/tokens/costop-system/{name}")).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let notice = serde_json::to_value(costop_core::Notice {
        instance_id: instance,
        kind: costop_core::NoticeKind::SpotInterruption {
            action: costop_core::notice::InstanceAction::Terminate,
            effective_at: now_ms() + 120_000,
        },
        received_at: now_ms(),
        source: costop_core::NoticeSource::Agent,
    })
    .unwrap();
    let r =
        http.post(format!("{server_url}/v1/notices")).bearer_auth(&token).json(&notice).send().await.unwrap();
    assert!(r.status().is_success(), "notice refused: {} {}", r.status(), r.text().await.unwrap_or_default());

    // The page shows node-0's response with its cordon done (DOM content, not only a 200).
    let mut page = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        page = tokio::task::spawn_blocking({
            let url = dashboard.clone();
            move || rendered(&url)
        })
        .await
        .unwrap();
        if page.contains(&format!("{node} — notice at")) && page.contains("taint-and-cordon</td><td>done at")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(page.contains("<h1 id=\"title\">costop server</h1>"), "not the server's page:\n{page}");
    assert!(page.contains(&format!("{node} — notice at")), "no response for {node} shown:\n{page}");
    assert!(page.contains("taint-and-cordon</td><td>done at"), "the cordon is not shown done:\n{page}");
    // node-0 from the server's cluster view, cordoned; the others too.
    assert!(page.contains("nodes and pods from its cluster view"), "the cluster view never synced:\n{page}");
    assert!(page.contains(&format!("cordoned\" title=\"{node}:")), "{node} is not shown cordoned:\n{page}");
    assert!(page.contains("title=\"node-2:"), "not every node is shown:\n{page}");
    // The demo-only charts are hidden.
    assert!(page.contains("id=\"load\" style=\"display: none;\""), "the request charts are shown:\n{page}");
    let _ = std::fs::remove_dir_all(&dir);
}
