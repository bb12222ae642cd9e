//! The HTTP listeners against a flood of idle connections, slow headers and
//! large bodies: real `costop emu` and `costop server` processes. 20,000
//! idle connections, held by helper processes, stop neither one's `/healthz`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{bin, free_port, Proc};

/// The idle connections of a flood.
const FLOOD: usize = 20_000;
/// Connections per holder process: small enough for any open-file limit a
/// test machine has, so no holder needs its limit raised far.
const PER_HOLDER: usize = 2_500;

/// This process's open-file limits (soft, hard), from `/proc/self/limits`.
fn fd_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a Max open files line");
    let num = |i: usize| match line.split_whitespace().nth(i) {
        Some("unlimited") => u64::MAX,
        v => v.and_then(|v| v.parse().ok()).unwrap_or(0),
    };
    (num(3), num(4))
}

/// Idle connections held open by child processes (bash, `/dev/tcp`), each
/// within its own open-file limit: one process could not hold 20,000
/// sockets under a hard limit of 20,000 (this machine's), and none may be
/// raised above the hard limit without privileges. Dropped: the holders are
/// killed and their connections closed.
struct IdleFlood {
    holders: Vec<Proc>,
    held: usize,
}

impl IdleFlood {
    /// Open `total` idle connections to `addr` in holders of at most
    /// [`PER_HOLDER`], calling `between` with the count held so far after
    /// each holder has all of its own open. Fails saying why when a holder
    /// cannot raise its limit or cannot connect.
    fn open(addr: &str, total: usize, mut between: impl FnMut(usize)) -> IdleFlood {
        let (_, hard) = fd_limits();
        // A holder needs its connections, stdio and bash's own few files.
        let per = (PER_HOLDER as u64).min(hard.saturating_sub(64)) as usize;
        assert!(
            per >= 100,
            "the open-file hard limit is {hard}: a holder process cannot keep even 100 connections open"
        );
        let (host, port) = addr.rsplit_once(':').unwrap();
        let script = r#"
            need=$(( $1 + 32 ))
            if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
              ulimit -n "$need" 2>/dev/null || { echo "cannot raise the open-file limit from $(ulimit -n) to $need (hard limit $(ulimit -Hn))"; exit 1; }
            fi
            for ((i = 0; i < $1; i++)); do
              exec {fd}<>"/dev/tcp/$2/$3" || { echo "connection $i of $1 failed"; exit 1; }
            done
            echo "held $1"
            read -r _ || true
        "#;
        // Every holder connects at once (a burst, as a flood is); each
        // reports once it holds all of its connections.
        let mut flood = IdleFlood { holders: Vec::new(), held: 0 };
        let mut waiting = Vec::new();
        let mut spawned = 0;
        while spawned < total {
            let n = per.min(total - spawned);
            let mut child = Command::new("bash")
                .args(["-c", script, "holder", &n.to_string(), host, port])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("bash (holds the idle connections)");
            let out = BufReader::new(child.stdout.take().unwrap());
            waiting.push((Proc(child), out, n));
            spawned += n;
        }
        for (mut child, mut out, n) in waiting {
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            if line.trim() != format!("held {n}") {
                let _ = child.0.kill();
                let mut err = String::new();
                let _ = child.0.stderr.take().unwrap().read_to_string(&mut err);
                panic!(
                    "a holder of {n} connections failed ({} held by the others so far): {} {}",
                    flood.held,
                    line.trim(),
                    err.lines().last().unwrap_or("")
                );
            }
            flood.holders.push(child);
            flood.held += n;
            between(flood.held);
        }
        flood
    }
}

/// `/healthz` answers 200 while `total` idle connections are opened (a
/// burst) and within a second each while they are held; returns the
/// slowest answer during the burst and once held.
fn healthz_through_a_flood(addr: &str, total: usize) -> (IdleFlood, Duration, Duration) {
    let started = Instant::now();
    let mut during = Duration::ZERO;
    let flood = IdleFlood::open(addr, total, |held| {
        let (code, took) = get(addr, "/healthz");
        assert_eq!(code, 200, "/healthz during the flood, {held} idle connections held");
        during = during.max(took);
    });
    println!(
        "{} idle connections held by {} processes in {:?}",
        flood.held,
        flood.holders.len(),
        started.elapsed()
    );
    let mut held = Duration::ZERO;
    for _ in 0..20 {
        let (code, took) = get(addr, "/healthz");
        assert_eq!(code, 200, "/healthz with {} idle connections", flood.held);
        held = held.max(took);
    }
    assert_eq!(flood.held, total);
    assert!(held < Duration::from_secs(1), "slowest /healthz with the connections held: {held:?}");
    (flood, during, held)
}

/// Floods run one at a time (two at once would share the port range).
static ONE_FLOOD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One request on a fresh connection: status code and the time it took.
fn get(addr: &str, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let Ok(mut s) = TcpStream::connect(addr) else { return (0, started.elapsed()) };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, started.elapsed())
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn idle_connections_slow_headers_and_large_bodies_do_not_stop_healthz() {
    let dir =
        std::env::temp_dir().join(format!("costop-trust-listener-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_emu, kubeconfig) = common::start_emu(&dir, 1, 1);
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Proc(
        Command::new(bin())
            .args(["server", "--listen", &addr, "--identity", "listener", "--kubeconfig"])
            .arg(&kubeconfig)
            .env("COSTOP_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while get(&addr, "/healthz").0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(30), "the server never answered");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A request head that never ends: closed after the header-read timeout.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let sent = Instant::now();
    let mut buf = [0u8; 256];
    let n = slow.read(&mut buf).unwrap_or(0);
    let closed_after = sent.elapsed();
    println!(
        "slow header: closed after {closed_after:?} ({n} bytes: {:?})",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(closed_after < Duration::from_secs(8), "{closed_after:?}");

    // A body over the limit: 413 before any handler reads it.
    let mut big = TcpStream::connect(&addr).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = vec![b'x'; 1 << 20];
    let head = format!(
        "POST /v1/notices HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    big.write_all(head.as_bytes()).unwrap();
    let _ = big.write_all(&body);
    let mut out = String::new();
    let _ = big.read_to_string(&mut out);
    // Not the leader yet, maybe: 503 comes before the body is read. Either way not 2xx.
    let code: u16 = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    println!("1 MiB body: HTTP {code}");
    assert!(code == 413 || code == 503, "{out}");

    // The flood: 20,000 idle connections.
    let _one = ONE_FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    let (flood, during, held) = healthz_through_a_flood(&addr, FLOOD);
    let fds = open_fds(server.0.id());
    println!(
        "server: {} idle connections; slowest /healthz {during:?} during the burst, {held:?} once held; it holds {fds} files",
        flood.held
    );
    assert!(fds < 1_200, "the server holds at most its connection limit: {fds} files");
    drop(flood);
}

/// The emulator's listener has the server's limits: 20,000 idle
/// connections to `costop emu` do not stop its `/healthz` either.
#[test]
fn idle_connections_do_not_stop_the_emulators_healthz() {
    let dir = std::env::temp_dir().join(format!(
        "costop-trust-listener-emu-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (emu, kubeconfig) = common::start_emu(&dir, 1, 1);
    let config = std::fs::read_to_string(&kubeconfig).unwrap();
    let server = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .expect("the kubeconfig names the emulator's URL")
        .trim()
        .trim_matches('"');
    let addr = server.trim_start_matches("http://").trim_end_matches('/').to_string();
    assert_eq!(get(&addr, "/healthz").0, 200, "the emulator answers at {addr}");
    let _one = ONE_FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    let (flood, during, held) = healthz_through_a_flood(&addr, FLOOD);
    let fds = open_fds(emu.0.id());
    println!(
        "emulator: {} idle connections; slowest /healthz {during:?} during the burst, {held:?} once held; it holds {fds} files",
        flood.held
    );
    assert!(fds < 1_200, "the emulator holds at most its connection limit: {fds} files");
    drop(flood);
}
