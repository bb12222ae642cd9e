//! The emulator's HTTP listener keeps the server's limits: a request head
//! not finished within the header-read timeout closes the connection, an
//! oversized body gets 413, and a flood of idle connections does not lock
//! out the next client.

use costop_emu::{EmuConfig, Emulator, HttpLimits};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

async fn emulator(limits: HttpLimits) -> Emulator {
    let dir = std::env::temp_dir().join(format!(
        "costop-emu-limits-{}-{}",
        std::process::id(),
        costop_emu::random_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    Emulator::start(EmuConfig { kubeconfig: dir.join("kubeconfig"), http: limits, ..Default::default() })
        .await
        .unwrap()
}

/// Send `req` and read until the server closes: (status, whole answer).
fn exchange(emu: &Emulator, req: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(emu.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    (out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), out)
}

fn healthz(emu: &Emulator) -> u16 {
    exchange(emu, b"GET /healthz HTTP/1.1\r\nHost: emu\r\nConnection: close\r\n\r\n").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_request_head_is_closed_after_the_timeout() {
    let emu =
        emulator(HttpLimits { header_read_timeout: Duration::from_millis(300), ..Default::default() }).await;
    let addr = emu.addr;
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A head without its closing blank line, never finished.
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: emu\r\n").unwrap();
        let started = Instant::now();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        (started.elapsed(), String::from_utf8_lossy(&out).into_owned())
    })
    .await
    .unwrap();
    let (took, answer) = closed_after;
    assert!(took < Duration::from_secs(3), "closed after {took:?} (answer {answer:?})");
    // Closed without an answer, or with 408: never served.
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    // An idle keep-alive connection is closed the same way.
    let idle = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        started.elapsed()
    })
    .await
    .unwrap();
    assert!(idle < Duration::from_secs(3), "an idle connection stayed {idle:?}");
    assert_eq!(tokio::task::spawn_blocking(move || healthz(&emu)).await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_413() {
    let emu = emulator(HttpLimits { max_body_bytes: 1024, ..Default::default() }).await;
    let token = emu.state.admin_token.clone();
    let emu = std::sync::Arc::new(emu);
    let e = emu.clone();
    let (big, small) = tokio::task::spawn_blocking(move || {
        let send = |path: &str, body: &str| {
            exchange(
                &e,
                format!(
                    "POST {path} HTTP/1.1\r\nHost: emu\r\nAuthorization: Bearer {token}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
        };
        let padding = "x".repeat(4096);
        let big_pod = format!(r#"{{"metadata": {{"name": "big", "annotations": {{"a": "{padding}"}}}}}}"#);
        let big = [
            send("/api/v1/namespaces/default/pods", &big_pod).0,
            send("/admin/scenario", &format!(r#"{{"nodes": [], "x": "{padding}"}}"#)).0,
        ];
        let small = send("/admin/scenario", r#"{"nodes": []}"#);
        (big, small)
    })
    .await
    .unwrap();
    assert_eq!(big, [413, 413]);
    assert_eq!(small.0, 200, "{}", small.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_limit_do_not_lock_out_a_client() {
    let emu = emulator(HttpLimits { max_connections: 8, ..Default::default() }).await;
    let addr = emu.addr;
    let code = tokio::task::spawn_blocking(move || {
        let idle: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        let code = healthz(&emu);
        drop(idle);
        code
    })
    .await
    .unwrap();
    assert_eq!(code, 200);
}
