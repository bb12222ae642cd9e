//! Fuzzing the queue-mode parser on stable Rust: EventBridge events, raw
//! and in an SNS envelope. Arbitrary bytes and mutations of
//! `testdata/eventbridge/` never panic, and junk is refused.
//! `COSTOP_FUZZ_CASES` sets the cases (`scripts/fuzz`).

use costop_aws::events::{parse_http_date, parse_message, QueueEvent};

// The shared fuzz harness (one copy for every crate).
#[path = "../../fuzz_harness.rs"]
mod harness;
use harness::*;

#[allow(dead_code)]
fn fixture(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

const NOW: u64 = 1_795_000_000_000;

fn events() -> Vec<String> {
    [
        "spot-interruption-warning.json",
        "rebalance-recommendation.json",
        "instance-state-change.json",
        "asg-terminate-lifecycle-action.json",
        "health-scheduled-change.json",
    ]
    .iter()
    .map(|f| fixture(&format!("testdata/eventbridge/{f}")))
    .collect()
}

/// An event in the SNS envelope SQS delivers from a topic.
fn in_sns(event: &str) -> String {
    serde_json::json!({
        "Type": "Notification",
        "MessageId": "6f2a1c9e-0b7d-4e58-9f55-2f6c0c8e1d11",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:costop",
        "Message": event,
        "Timestamp": "2026-11-24T08:20:00.000Z",
        "SignatureVersion": "1",
    })
    .to_string()
}

fn check(b: &[u8]) {
    if let Ok(QueueEvent::Notices { notices, .. }) = parse_message(&text(b), NOW) {
        for n in notices {
            assert!(n.instance_id.starts_with("i-"), "{:?} from {:?}", n.instance_id, text(b));
        }
    }
}

#[test]
fn eventbridge_messages() {
    fuzz("eventbridge message", inputs(events()), |b| check(&b));
    fuzz("eventbridge message (junk)", junk(), |b| assert!(parse_message(&text(&b), NOW).is_err()));
}

#[test]
fn sns_envelopes() {
    let wrapped: Vec<String> = events().iter().map(|e| in_sns(e)).collect();
    // The envelope mutated, and the event inside it mutated.
    fuzz("sns envelope", inputs(wrapped), |b| check(&b));
    fuzz("sns message", inputs(events()), |b| check(in_sns(&text(&b)).as_bytes()));
}

#[test]
fn health_dates() {
    fuzz(
        "aws health date",
        prop_oneof!["[A-Za-z]{3}, [0-9]{1,3} [A-Za-z]{3} -?[0-9]{1,6} [0-9:]{1,10} GMT", "\\PC{0,40}",],
        |s: String| {
            let _ = parse_http_date(&s);
        },
    );
}
