//! The deployed environment (`deploy/overlays/eks-managed` as `kubectl
//! kustomize` renders it) starts both binaries and they answer a notice:
//! Redis runs with the manifest's arguments (TLS only, the
//! default user off, the agents' user limited to `XADD` on the notice
//! stream, the servers' user), two `costop server` replicas and a `costop
//! agent` run with the manifest's environment (passwords and plan key from
//! "Secrets", `$(VAR)` expanded as the kubelet does, the CA file mounted, the
//! ConfigMap's costop.toml). Only what a cluster provides is swapped: hosts
//! become loopback ports, the cluster is `costop emu`, the cloud is the
//! emulator instead of AWS. Without the plan key's Secret the server
//! refuses to start.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{bin, free_port, Proc};

/// One container of the manifest: its arguments and environment, in order
/// (`value`, `valueFrom: {secretKeyRef: {name, key}}` as `secret:NAME/KEY`,
/// or `valueFrom: {fieldRef: {fieldPath}}` as `field:PATH`).
struct Container {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// The container `name` of the `kind` named `object` in the rendered
/// overlay: its arguments and environment.
fn container(objects: &[Value], kind: &str, object: &str, name: &str) -> Container {
    let o = common::object(objects, kind, object);
    let c = o["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {kind} {object}"));
    let args = c["args"].as_array().map_or_else(Vec::new, |a| {
        a.iter().map(|v| v.as_str().expect("string arguments").to_string()).collect()
    });
    let mut env = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let var = e["name"].as_str().expect("env name").to_string();
        let from = &e["valueFrom"];
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if from["secretKeyRef"].is_object() {
            let r = &from["secretKeyRef"];
            format!("secret:{}/{}", r["name"].as_str().unwrap(), r["key"].as_str().unwrap())
        } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
            format!("field:{path}")
        } else {
            panic!("{kind} {object}: env {var} is neither a value, a Secret nor a field: {e}")
        };
        env.push((var, value));
    }
    Container { args, env }
}

/// `count` random bytes as hex, as `openssl rand -hex` gives them.
fn random_hex(count: usize) -> String {
    use std::io::Read;
    let mut bytes = vec![0u8; count];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The environment as the kubelet gives it: Secrets read, the downward API
/// filled in (the pod's IP is loopback here), `$(VAR)` of earlier variables
/// expanded, then the cluster's names and mounts mapped onto this machine.
fn resolve(
    env: &[(String, String)],
    secrets: &HashMap<String, String>,
    map: &[(String, String)],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (var, value) in env {
        let mut value = match (value.strip_prefix("secret:"), value.strip_prefix("field:")) {
            (Some(s), _) => secrets.get(s).unwrap_or_else(|| panic!("no Secret {s} for {var}")).clone(),
            (_, Some("status.podIP")) => "127.0.0.1".to_string(),
            (_, Some(f)) => panic!("the test gives no {f} for {var}"),
            _ => value.clone(),
        };
        for (earlier, v) in &out {
            value = value.replace(&format!("$({earlier})"), v);
        }
        for (from, to) in map {
            value = value.replace(from.as_str(), to);
        }
        out.push((var.clone(), value));
    }
    out
}

fn openssl(dir: &Path, args: &[&str]) {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (makes the test CA)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, and Redis's certificate for `redis.costop-system` and 127.0.0.1
/// signed by it, as the `costop-redis-tls` Secret holds them.
fn tls_secret(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=costop test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=redis.costop-system",
            "-keyout",
            "tls.key",
            "-out",
            "tls.csr",
        ],
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:redis.costop-system,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "tls.crt",
            "-extfile",
            "ext",
        ],
    );
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap()
}

async fn text(url: &str) -> String {
    match http().get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn wait(what: &str, timeout: Duration, logs: &Path, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > timeout {
            let mut tails = String::new();
            for name in ["server-0.log", "server-1.log", "agent.log"] {
                let log = std::fs::read_to_string(logs.join(name)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(12).collect();
                tails += &format!("\n== {name}\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            }
            panic!("timed out waiting for {what}{tails}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_environment_starts_both_binaries_and_they_answer_a_notice() {
    let dir =
        std::env::temp_dir().join(format!("costop-trust-deploy-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let objects = common::overlay_objects("eks-managed");
    let redis_c = container(&objects, "StatefulSet", "redis", "redis");
    let server_c = container(&objects, "Deployment", "costop-server", "server");
    let agent_c = container(&objects, "DaemonSet", "costop-agent", "agent");

    // The Secrets the manifest's header says to create.
    let secrets: HashMap<String, String> = [
        ("costop-redis/server-password", random_hex(32)),
        ("costop-redis/agent-password", random_hex(32)),
        ("costop-plan-key/plan-key", random_hex(32)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let tls = dir.join("tls");
    tls_secret(&tls);

    // Redis with the manifest's arguments: its port and mounts mapped here.
    let redis_env = resolve(&redis_c.env, &secrets, &[]);
    let mut redis_args = vec!["--dir".to_string(), dir.to_string_lossy().into_owned()];
    let mut args = redis_c.args.iter();
    while let Some(a) = args.next() {
        let mut a = a.clone();
        for (var, v) in &redis_env {
            a = a.replace(&format!("$({var})"), v);
        }
        redis_args.push(a.replace("/tls/", &format!("{}/", tls.display())));
        if redis_args.last().unwrap() == "--dir" {
            // The volume claim's mount: the test's directory.
            assert_eq!(
                args.next().map(String::as_str),
                Some("/data"),
                "Redis's data directory in the manifest"
            );
            redis_args.push(dir.to_string_lossy().into_owned());
        }
        if redis_args.last().unwrap() == "--tls-port" {
            assert_eq!(args.next().map(String::as_str), Some("6379"), "Redis's TLS port in the manifest");
            redis_args.push("{port}".into());
        }
    }
    assert!(
        redis_args.windows(2).any(|w| w[0] == "--port" && w[1] == "0"),
        "Redis serves TLS only: {redis_args:?}"
    );
    let redis_refs: Vec<&str> = redis_args.iter().map(String::as_str).collect();
    let redis = costop_store::redis_server::RedisServer::start_with(&redis_refs)
        .expect("redis-server with the manifest's arguments");

    // The cluster: `costop emu`, and the ConfigMap's costop.toml.
    let (emu, kubeconfig) = common::start_emu(&dir, 2, 1);
    let kc = std::fs::read_to_string(&kubeconfig).unwrap();
    let emu_url = kc.lines().find_map(|l| l.trim().strip_prefix("server:")).unwrap().trim().to_string();
    let config_dir = dir.join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let toml = common::object(&objects, "ConfigMap", "costop-config")["data"]["costop.toml"]
        .as_str()
        .expect("the ConfigMap's costop.toml")
        .to_string();
    std::fs::write(config_dir.join("costop.toml"), toml).unwrap();

    // Two server replicas with the manifest's environment and arguments.
    // `port` is the replica's (its pod's IP:8480), `service` the replica
    // the Service routes to.
    let ports = [free_port(), free_port()];
    let server_url = format!("http://127.0.0.1:{}", ports[0]);
    let map_to = |port: u16, service: u16| -> Vec<(String, String)> {
        vec![
            ("redis.costop-system:6379".into(), format!("127.0.0.1:{}", redis.port)),
            ("http://costop-server.costop-system:8480".into(), format!("http://127.0.0.1:{service}")),
            ("/etc/costop-redis/".into(), format!("{}/", tls.display())),
            ("/etc/costop/".into(), format!("{}/", config_dir.display())),
            ("0.0.0.0:8480".into(), format!("127.0.0.1:{port}")),
            ("127.0.0.1:8480".into(), format!("127.0.0.1:{port}")),
        ]
    };
    let map = |port: u16| map_to(port, ports[0]);
    let server_env = |port: u16| resolve(&server_c.env, &secrets, &map(port));
    let server_args = |port: u16| -> Vec<String> {
        let mut out = Vec::new();
        for a in &server_c.args {
            let mut a = a.clone();
            for (from, to) in map(port) {
                a = a.replace(&from, &to);
            }
            if a == "--aws" {
                // The cloud: the emulator (no AWS here); the cluster: its kubeconfig.
                out.extend(["--emu-url".to_string(), emu_url.clone(), "--kubeconfig".into()]);
                out.push(kubeconfig.to_string_lossy().into_owned());
            } else {
                out.push(a);
            }
        }
        out
    };
    for name in [
        "COSTOP_REDIS_URL",
        "COSTOP_REDIS_CA_FILE",
        "COSTOP_PLAN_KEY",
        "COSTOP_AGENT_SERVICE_ACCOUNT",
        "COSTOP_ADVERTISE_URL",
        "COSTOP_TOKEN_AUDIENCE",
    ] {
        assert!(server_c.env.iter().any(|(n, _)| n == name), "the server's environment sets {name}");
    }
    assert!(
        server_c.env.iter().any(|(n, v)| n == "POD_IP" && v == "field:status.podIP"),
        "the pod's IP from the downward API"
    );
    assert!(server_env(ports[1])
        .iter()
        .any(|(n, v)| n == "COSTOP_ADVERTISE_URL" && *v == format!("http://127.0.0.1:{}", ports[1])));
    assert!(server_env(ports[0])
        .iter()
        .any(|(n, v)| n == "COSTOP_REDIS_URL" && v.starts_with("rediss://costop-server:")));

    // Without the plan key's Secret the server does not start.
    let out = Command::new(bin())
        .args(server_args(free_port()))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(server_env(ports[0]).into_iter().filter(|(n, _)| n != "COSTOP_PLAN_KEY"))
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("COSTOP_PLAN_KEY"), "{err}");

    let mut procs: Vec<Proc> = vec![emu];
    for (i, port) in ports.iter().enumerate() {
        let child = Command::new(bin())
            .args(server_args(*port))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(server_env(*port))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("server-{i}.log"))).unwrap())
            .spawn()
            .unwrap();
        procs.push(Proc(child));
    }
    let urls: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    wait("one replica leads, the other follows", Duration::from_secs(30), &dir, async || {
        let mut roles = Vec::new();
        for u in &urls {
            roles.push(text(&format!("{u}/readyz")).await);
        }
        roles.sort();
        roles == ["follower", "leader"]
    })
    .await;
    // The Service routes the agent to the follower, which forwards.
    let follower = if text(&format!("{}/readyz", urls[0])).await == "follower" { 0 } else { 1 };

    // The agent of node-0: a pod of the agent's service account, its token
    // mounted; the manifest's environment, plus what the node provides
    // (instance metadata) and the token's mount path.
    let http = http();
    let _ = http
        .post(format!("{emu_url}/api/v1/namespaces"))
        .json(&json!({"metadata": {"name": "costop-system"}}))
        .send()
        .await;
    let pod = json!({"metadata": {"name": "costop-agent-node-0"},
        "spec": {"nodeName": "node-0", "serviceAccountName": "costop-agent", "tolerations": [{"operator": "Exists"}],
                 "containers": [{"name": "agent", "image": "costop:dev"}]}});
    let r =
        http.post(format!("{emu_url}/api/v1/namespaces/costop-system/pods")).json(&pod).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
    let token: Value = serde_json::from_str(
        &text(&format!("{emu_url}/admin/tokens/costop-system/costop-agent-node-0")).await,
    )
    .unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, token["token"].as_str().unwrap()).unwrap();
    let agent_env = resolve(&agent_c.env, &secrets, &map_to(ports[0], ports[follower]));
    assert!(agent_env
        .iter()
        .any(|(n, v)| n == "COSTOP_REDIS_URL" && v.starts_with("rediss://costop-agent:")));
    let agent = Command::new(bin())
        .args(&agent_c.args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(agent_env)
        .env("COSTOP_IMDS_URL", format!("{emu_url}/imds/node-0"))
        .env("COSTOP_TOKEN_PATH", &token_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    procs.push(Proc(agent));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let r = http
        .post(format!("{emu_url}/admin/nodes/node-0/notice"))
        .json(&json!({"interruption": {"action": "terminate", "in_seconds": 120}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    wait("node-0 cordoned", Duration::from_secs(20), &dir, async || {
        let n: Value =
            serde_json::from_str(&text(&format!("{emu_url}/api/v1/nodes/node-0")).await).unwrap_or_default();
        n["spec"]["unschedulable"] == true
    })
    .await;
    // Redis took it (TLS, the agents' ACL user that may only XADD), and so
    // did the Service's replica, the follower: it forwarded the notice to
    // the leader (whichever path came second got "duplicate", also taken).
    wait("the agent's delivery through Redis and the server", Duration::from_secs(20), &dir, async || {
        let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
        log.contains("redis: Taken") && log.contains("server: Taken")
    })
    .await;
    let forwarded = text(&format!("{}/metrics", urls[follower])).await;
    assert!(forwarded.contains("costop_notices_forwarded_total{outcome=\"answered\"} 1"), "{forwarded}");

    // The plan in Redis carries a MAC made with the Secret's key (read as
    // the servers' user, over TLS): it reads back with that key only.
    let node: Value = serde_json::from_str(&text(&format!("{emu_url}/api/v1/nodes/node-0")).await).unwrap();
    let instance = node["spec"]["providerID"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    let server_redis = server_env(ports[0]).into_iter().find(|(n, _)| n == "COSTOP_REDIS_URL").unwrap().1;
    std::env::set_var(costop_store::redis_store::REDIS_CA_ENV, tls.join("ca.crt"));
    let key = secrets["costop-plan-key/plan-key"].clone();
    let store = costop_store::RedisStore::connect(&server_redis).await.expect("the servers' user over TLS");
    let of_node =
        costop_core::NoticeKey { instance_id: instance, kind: "spot-interruption".into(), stated_time: 0 };
    let held = store.claim_holder(&of_node).await.unwrap().expect("node-0's interruption is claimed");
    let store = store.with_plan_key(Some(key.as_bytes()));
    let record =
        costop_core::ports::StorePort::response(&store, &held).await.expect("the MAC checks").unwrap();
    assert_eq!(record.plan.node, "node-0");
    let other = store.with_plan_key(Some(b"some other key of 32 bytes......"));
    assert!(costop_core::ports::StorePort::response(&other, &held).await.is_err(), "another key refuses it");
    let metrics = text(&format!("{server_url}/metrics")).await + &text(&format!("{}/metrics", urls[1])).await;
    assert!(
        metrics.contains("costop_notices_total{kind=\"spot-interruption\",source=\"agent\"} 1"),
        "{metrics}"
    );
    drop(procs);
}
