//! Fuzzing the parsers of the instance-metadata bodies on stable Rust:
//! arbitrary bytes and mutations of `testdata/imds/` never panic, and junk
//! is refused. `COSTOP_FUZZ_CASES` sets the cases (`scripts/fuzz`).

use costop_agent::imds::{parse_instance_action, parse_rebalance};

// The shared fuzz harness (one copy for every crate).
#[path = "../../fuzz_harness.rs"]
mod harness;
use harness::*;

#[allow(dead_code)]
fn fixture(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

fn fixtures() -> Vec<String> {
    ["spot-instance-action.json", "spot-instance-action-stop.json", "rebalance-recommendation.json"]
        .iter()
        .map(|f| fixture(&format!("testdata/imds/{f}")))
        .collect()
}

#[test]
fn imds_instance_action() {
    fuzz("imds spot/instance-action", inputs(fixtures()), |b| {
        if let Ok((_, time)) = parse_instance_action(&text(&b)) {
            // A time AWS could have written: after 1970, before 10000.
            assert!(time < 253_402_300_800_000, "time {time} from {:?}", text(&b));
        }
    });
    fuzz("imds spot/instance-action (junk)", junk(), |b| {
        assert!(parse_instance_action(&text(&b)).is_err());
    });
}

#[test]
fn imds_rebalance() {
    fuzz("imds events/recommendations/rebalance", inputs(fixtures()), |b| {
        let _ = parse_rebalance(&text(&b));
    });
    fuzz("imds events/recommendations/rebalance (junk)", junk(), |b| {
        assert!(parse_rebalance(&text(&b)).is_err());
    });
}
