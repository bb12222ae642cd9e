//! A throwaway `redis-server` on a free loopback port, for tests and benchmarks.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`; stopped when dropped.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    /// More `redis-server` arguments (users, TLS).
    extra: Vec<String>,
}

impl RedisServer {
    /// Start one (no persistence). Fails with a clear message when
    /// `redis-server` is not installed (`scripts/test` installs it).
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(&[])
    }

    /// Start one with more arguments, e.g. ACL users (`--user …`) or TLS
    /// (`--tls-port {port} --port 0 …`: `{port}` is replaced by its port).
    pub fn start_with(extra: &[&str]) -> std::io::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let extra = extra.iter().map(|a| a.replace("{port}", &port.to_string())).collect();
        let mut server = Self { child: None, port, extra };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot start redis-server ({e}); run scripts/test, which installs it"),
                )
            })?;
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(std::io::Error::other("redis-server did not listen within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stop it (its data is lost: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
