//! Fuzzing the notice parsers of the server's two intakes on stable Rust:
//! the HTTP body (`serde_json::from_slice::<Notice>` and the time window,
//! [`costop_server::check_times`]) and the Redis stream entry (its fields,
//! any bytes, read by [`costop_store::redis_store::entry_from_fields`] as
//! the server reads them; the claim values with
//! [`costop_store::parse_notice_key`]). Arbitrary bytes and mutations of
//! valid notices never panic, and junk is refused.
//! `COSTOP_FUZZ_CASES` sets the cases (`scripts/fuzz`).

use costop_core::notice::InstanceAction;
use costop_core::{Notice, NoticeKind, NoticeSource};
use costop_server::check_times;
use costop_store::parse_notice_key;
use costop_store::redis_store::entry_from_fields;

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

/// A stream entry's fields: the notice (mutated or arbitrary bytes), a
/// token or none, other fields, in any order, with names that may be
/// mutated too (not UTF-8, duplicated, empty).
fn entry_fields() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    let name = prop_oneof![
        Just(b"notice".to_vec()),
        Just(b"token".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..12),
    ];
    let value = prop_oneof![
        inputs(notices()).prop_map(|i| i.to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ];
    let other = proptest::collection::vec((name, value), 0..4);
    (
        inputs(notices()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        other,
        any::<Index>(),
    )
        .prop_map(|(notice, token, other, at)| {
            let mut fields = vec![(b"notice".to_vec(), notice.to_vec())];
            if let Some(t) = token {
                fields.push((b"token".to_vec(), t));
            }
            for f in other {
                fields.insert(at.index(fields.len() + 1), f);
            }
            fields
        })
}

#[test]
fn stream_entries() {
    fuzz("redis stream entry", entry_fields(), |fields| {
        let entry = entry_from_fields("1-0".into(), &fields);
        let first = |name: &[u8]| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        match (&entry.notice, first(b"notice")) {
            (Ok(n), Some(text)) => {
                assert_eq!(serde_json::from_slice::<Notice>(&text).ok().as_ref(), Some(n));
                check_notice(n);
            }
            (Ok(n), None) => panic!("a notice read from an entry without one: {n:?}"),
            (Err(why), _) => assert!(why.contains("1-0"), "the reason names the entry: {why}"),
        }
        assert_eq!(entry.token, first(b"token").and_then(|t| String::from_utf8(t).ok()));
    });
    fuzz("redis stream entry (junk)", junk(), |b| {
        let entry = entry_from_fields("1-0".into(), &[(b"notice".to_vec(), b.to_vec())]);
        assert!(entry.notice.is_err());
    });
    fuzz("redis claim value", "\\PC{0,60}|[a-z0-9:-]{0,40}", |s: String| {
        if let Some(k) = parse_notice_key(&s) {
            assert_eq!(parse_notice_key(&k.to_string()), Some(k));
        }
    });
}
