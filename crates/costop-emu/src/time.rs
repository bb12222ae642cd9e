//! Wall-clock timestamps in the RFC 3339 form Kubernetes uses (the
//! conversions themselves are the core's).

use costop_core::time::{format_rfc3339, parse_rfc3339 as parse_ms};
use std::time::{SystemTime, UNIX_EPOCH};

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_rfc3339() -> String {
    rfc3339(now_secs())
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    format_rfc3339(secs * 1000)
}

/// Parse an RFC 3339 time back to seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    parse_ms(s).map(|ms| ms / 1000)
}

/// Age as kubectl prints it: `42s`, `7m`, `3h`, `2d`.
pub fn age(created: &str) -> String {
    let Some(t) = parse_rfc3339(created) else { return "<unknown>".into() };
    let s = now_secs().saturating_sub(t);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_764_000_000), "2025-11-24T16:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        for t in [0, 951_782_400, 1_764_000_000, 1_764_086_399] {
            assert_eq!(super::parse_rfc3339(&super::rfc3339(t)), Some(t));
        }
        assert_eq!(super::parse_rfc3339("junk"), None);
        assert_eq!(super::age("junk"), "<unknown>");
    }
}
