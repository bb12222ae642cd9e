//! Fuzzing the notice parsers of the server's two intakes on stable Rust:
//! the HTTP body (`serde_json::from_slice::<Notice>` and the time window,
//! [`costop_server::check_times`]) and the Redis stream entry (its `notice`
//! field is read with `serde_json::from_str::<Notice>`; the claim values
//! with [`costop_store::parse_notice_key`]). Arbitrary bytes and mutations
//! of valid notices never panic, and junk is refused.
//! `COSTOP_FUZZ_CASES` sets the cases (`scripts/fuzz`).

use costop_core::notice::InstanceAction;
use costop_core::{Notice, NoticeKind, NoticeSource};
use costop_server::check_times;
use costop_store::parse_notice_key;

// The shared fuzz harness (one copy for every crate).
#[path = "../../fuzz_harness.rs"]
mod harness;
use harness::*;

const NOW: u64 = 1_795_000_000_000;

/// Valid notices, one of each kind, as the agent and the queue send them.
fn notices() -> Vec<String> {
    let kinds = [
        NoticeKind::SpotInterruption { action: InstanceAction::Terminate, effective_at: NOW + 100_000 },
        NoticeKind::RebalanceRecommendation { notice_time: NOW - 1_000 },
        NoticeKind::ScheduledEvent { code: "instance-retirement".into(), not_before: NOW + 3_600_000 },
    ];
    kinds
        .into_iter()
        .zip([NoticeSource::Agent, NoticeSource::Queue, NoticeSource::Agent])
        .map(|(kind, source)| {
            let n = Notice { instance_id: "i-0123456789abcdef0".into(), kind, received_at: NOW, source };
            serde_json::to_string(&n).unwrap()
        })
        .collect()
}

fn check_notice(n: &Notice) {
    let _ = check_times(n, NOW);
    let _ = check_times(n, 0);
    let _ = check_times(n, u64::MAX);
    let key = n.key();
    // The key's display form reads back (the claims store it).
    if !key.instance_id.is_empty() {
        let _ = parse_notice_key(&key.to_string());
    }
}

#[test]
fn http_intake_bodies() {
    fuzz("http intake body", inputs(notices()), |b| {
        if let Ok(n) = serde_json::from_slice::<Notice>(&b) {
            check_notice(&n);
        }
    });
    fuzz("http intake body (junk)", junk(), |b| {
        assert!(serde_json::from_slice::<Notice>(&b).is_err());
    });
}

#[test]
fn stream_entries() {
    fuzz("redis stream entry notice", inputs(notices()), |b| {
        if let Ok(n) = serde_json::from_str::<Notice>(&text(&b)) {
            check_notice(&n);
        }
    });
    fuzz("redis claim value", "\\PC{0,60}|[a-z0-9:-]{0,40}", |s: String| {
        if let Some(k) = parse_notice_key(&s) {
            assert_eq!(parse_notice_key(&k.to_string()), Some(k));
        }
    });
}
