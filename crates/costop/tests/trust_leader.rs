//! Leadership with real processes: `costop emu` and two `costop server`s.
//! SIGTERM hands the Lease over within 2 s; a second server with a live
//! server's identity refuses to start.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{bin, free_port, Proc};

fn emu(dir: &std::path::Path) -> (Proc, std::path::PathBuf) {
    common::start_emu(dir, 2, 2)
}

fn server(dir: &std::path::Path, kubeconfig: &std::path::Path, identity: &str) -> (Proc, String) {
    let port = free_port();
    let child = Command::new(bin())
        .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--identity", identity, "--kubeconfig"])
        .arg(kubeconfig)
        .env("COSTOP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("server-{identity}-{port}.log"))).unwrap())
        .spawn()
        .unwrap();
    (Proc(child), format!("http://127.0.0.1:{port}"))
}

fn role(base: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(base.trim_start_matches("http://")) else {
        return String::new();
    };
    use std::io::{Read, Write};
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.rsplit("\r\n\r\n").next().unwrap_or("").to_string()
}

fn wait(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("costop-{name}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn sigterm_hands_the_lease_over_within_two_seconds() {
    let dir = dir("trust-sigterm");
    let (_emu, kubeconfig) = emu(&dir);
    let (mut a, a_url) = server(&dir, &kubeconfig, "a");
    wait("a leads", Duration::from_secs(30), || role(&a_url) == "leader");
    let (_b, b_url) = server(&dir, &kubeconfig, "b");
    wait("b follows", Duration::from_secs(30), || role(&b_url) == "follower");
    let sent = Instant::now();
    let status = Command::new("kill").args(["-TERM", &a.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    wait("b leads", Duration::from_secs(20), || role(&b_url) == "leader");
    let handover = sent.elapsed();
    println!("SIGTERM to the next leader: {handover:?}");
    assert!(handover <= Duration::from_secs(2), "hand-over took {handover:?}");
    let exited = a.0.wait().unwrap();
    assert!(exited.success(), "a exits cleanly on SIGTERM: {exited:?}");
}

#[test]
fn a_second_server_with_a_live_identity_refuses_to_start() {
    let dir = dir("trust-identity");
    let (_emu, kubeconfig) = emu(&dir);
    let (_a, a_url) = server(&dir, &kubeconfig, "twin");
    wait("the first leads", Duration::from_secs(30), || role(&a_url) == "leader");
    let out = Command::new(bin())
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--identity",
            "twin",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("another live server holds"), "{stderr}");
    assert_eq!(role(&a_url), "leader");
}
