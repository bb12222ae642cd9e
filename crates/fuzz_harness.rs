//! The fuzz harness every crate's `tests/fuzz.rs` includes (`#[path]`):
//! case count from `COSTOP_FUZZ_CASES`, arbitrary bytes, and byte- and
//! JSON-level mutations of valid inputs. One copy, so the campaigns agree.
#![allow(dead_code)]

pub use proptest::prelude::*;
pub use proptest::sample::Index;
pub use proptest::test_runner::{Config as ProptestConfig, TestRunner};
pub use serde_json::Value;
pub use std::sync::atomic::{AtomicU64, Ordering};

/// Cases per parser: `COSTOP_FUZZ_CASES` (`scripts/fuzz` sets 100000), a
/// few thousand by default so `cargo test` stays fast.
pub fn cases() -> u32 {
    std::env::var("COSTOP_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000)
}

/// Run `check` on `cases()` inputs of `strategy`; a panic fails with the
/// shrunk input. Prints `fuzz <parser>: N cases`.
pub fn fuzz<S: Strategy>(parser: &str, strategy: S, check: impl Fn(S::Value)) {
    let mut config = ProptestConfig::with_cases(cases());
    config.failure_persistence = None;
    let mut runner = TestRunner::new(config);
    let ran = AtomicU64::new(0);
    let result = runner.run(&strategy, |input| {
        check(input);
        ran.fetch_add(1, Ordering::Relaxed);
        Ok(())
    });
    if let Err(e) = result {
        panic!("fuzz {parser}: {e}");
    }
    eprintln!("fuzz {parser}: {} cases", ran.load(Ordering::Relaxed));
}

/// Values a number or string is replaced by: huge, negative, NaN-like,
/// of the wrong type, invalid JSON.
pub const NASTY: &[&str] = &[
    "1e309",
    "-1e309",
    "-1",
    "-9223372036854775809",
    "18446744073709551616",
    "340282366920938463463374607431768211457",
    "1.5",
    "1e300",
    "4294967296",
    "0",
    "-0",
    "NaN",
    "\"NaN\"",
    "\"inf\"",
    "\"-inf\"",
    "\"-1\"",
    "\"1e300\"",
    "null",
    "true",
    "[]",
    "{}",
    "\"\"",
    "\"%€\\u0000\"",
    "\"9999-99-99T99:99:99Z\"",
    "\"2026-11-24T08:22:00.999999999999Z\"",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
];

pub const MARKER: &str = "__costop_fuzz_marker__";

/// Every path of a JSON value (object keys and array indices), root first.
pub fn paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                at.push(k.clone());
                paths(x, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(i.to_string());
                paths(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

pub fn at_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |cur, seg| match cur {
        Value::Object(m) => m.get_mut(seg),
        Value::Array(a) => a.get_mut(seg.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A structured mutation of a JSON fixture: a field removed, a value
/// replaced by a nasty one, or a field duplicated.
pub fn json_mutation(fixture: &str, which: Index, nasty: usize, op: u8) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_str::<Value>(fixture) else { return fixture.into() };
    let mut all = Vec::new();
    paths(&v, &mut Vec::new(), &mut all);
    let path = which.get(&all).clone();
    let nasty = NASTY[nasty % NASTY.len()];
    match (op % 3, path.split_last()) {
        (0, Some((last, parent))) => {
            match at_mut(&mut v, parent) {
                Some(Value::Object(m)) => {
                    m.remove(last);
                }
                Some(Value::Array(a)) => {
                    if let Ok(i) = last.parse::<usize>() {
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                }
                _ => {}
            }
            v.to_string().into_bytes()
        }
        (2, Some((last, _))) if last.parse::<usize>().is_err() => {
            // The field twice: the nasty value first, then the original.
            let key = format!("{}:", Value::String(last.clone()));
            v.to_string().replacen(&key, &format!("{key}{nasty},{key}"), 1).into_bytes()
        }
        _ => {
            if let Some(x) = at_mut(&mut v, &path) {
                *x = Value::String(MARKER.into());
            }
            v.to_string().replacen(&format!("\"{MARKER}\""), nasty, 1).into_bytes()
        }
    }
}

/// A byte-level mutation: a byte changed, inserted or deleted, or the
/// text cut short.
pub fn byte_mutation(fixture: &[u8], at: Index, byte: u8, op: u8) -> Vec<u8> {
    let mut b = fixture.to_vec();
    if b.is_empty() {
        return vec![byte];
    }
    let i = at.index(b.len());
    match op % 4 {
        0 => b[i] ^= byte.max(1),
        1 => b.insert(i, byte),
        2 => {
            b.remove(i);
        }
        _ => b.truncate(i),
    }
    b
}

/// Input bytes, shown as text when a case fails.
#[derive(Clone)]
pub struct Input(pub Vec<u8>);

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl std::ops::Deref for Input {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Input {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Arbitrary bytes, JSON-looking text, and byte and structured mutations of
/// the fixtures.
pub fn inputs(fixtures: Vec<String>) -> impl Strategy<Value = Input> {
    let (f1, f2) = (fixtures.clone(), fixtures.clone());
    let n = fixtures.len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        "[\\[\\]{}\":,0-9a-zA-Z.eE+\\- \\\\]{0,64}".prop_map(String::into_bytes),
        (0..n, any::<Index>(), any::<u8>(), any::<u8>()).prop_map(move |(f, at, byte, op)| byte_mutation(
            f1[f].as_bytes(),
            at,
            byte,
            op
        )),
        (0..n, any::<Index>(), any::<usize>(), any::<u8>())
            .prop_map(move |(f, which, nasty, op)| json_mutation(&f2[f], which, nasty, op)),
        (0..n, proptest::collection::vec((any::<Index>(), any::<usize>(), any::<u8>()), 1..4)).prop_map(
            move |(f, ms)| {
                let mut text = fixtures[f].clone();
                for (which, nasty, op) in ms {
                    text = String::from_utf8_lossy(&json_mutation(&text, which, nasty, op)).into_owned();
                }
                text.into_bytes()
            }
        ),
    ]
    .prop_map(Input)
}

/// Junk: arbitrary bytes after a `}`, which no JSON or TOML document starts with.
pub fn junk() -> impl Strategy<Value = Input> {
    proptest::collection::vec(any::<u8>(), 0..128).prop_map(|mut b| {
        b.insert(0, b'}');
        Input(b)
    })
}

#[allow(dead_code)]
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
