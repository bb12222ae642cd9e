//! Facts the server, the emulator and the simulator share: instance types
//! and prices (with their sources), how long things take in the world, and a
//! small seeded random source. Production depends on this crate, never on
//! the simulator.

pub mod catalog;
pub mod rng;
pub mod timings;

/// The region of an availability zone (`us-east-1a` → `us-east-1`).
pub fn region_of(zone: &str) -> &str {
    zone.trim_end_matches(|c: char| c.is_ascii_lowercase())
}
