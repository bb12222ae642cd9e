//! costop-server's integration tests against real things (redis-server,
//! moto_server, the emulated API server, the server itself), in one test
//! binary: each of these links the AWS SDK, and one link instead of seven
//! saves about 0.8 GB of disk and minutes of link time. `fuzz.rs` stays its
//! own binary for `scripts/fuzz`.
//!
//! Run one file's tests with a filter: `cargo test -p costop-server --test
//! suite intake::`.

mod common;

mod aws_response;
mod aws_restore;
mod forward;
mod intake;
mod leader;
mod planted;
mod stream_auth;
