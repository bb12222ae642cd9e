//! What the process-level tests share: the binary, a free port, and a child
//! process that is killed when the test lets go of it.
#![allow(dead_code)]

use std::process::Child;

/// A child process, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `costop` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_costop")
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
