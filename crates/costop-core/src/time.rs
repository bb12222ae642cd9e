//! Time as plain milliseconds, so the core never reads a clock.

/// A point in time or a duration, in milliseconds. In production it counts
/// from the Unix epoch; in the simulator it counts from the start of the run.
pub type Millis = u64;

/// Milliseconds in one second.
pub const SECOND: Millis = 1_000;
/// Milliseconds in one minute.
pub const MINUTE: Millis = 60 * SECOND;
/// Milliseconds in one hour.
pub const HOUR: Millis = 60 * MINUTE;
/// Milliseconds in one day.
pub const DAY: Millis = 24 * HOUR;

/// The warning AWS gives before it reclaims a Spot instance: "a warning that
/// is issued two minutes before Amazon EC2 stops or terminates your Spot
/// Instance" (EC2 User Guide, Spot Instance interruption notices).
pub const SPOT_NOTICE_LEAD: Millis = 2 * MINUTE;
