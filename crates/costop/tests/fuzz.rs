//! Fuzzing the configuration loader on stable Rust: `Config::load` (the
//! binary's own module, compiled in here) on arbitrary TOML text written to
//! a file, on mutations of `costop.example.toml` (lines removed or
//! duplicated, values replaced by huge, negative, NaN and infinite ones or
//! ones of the wrong type) and on `COSTOP_<SECTION>_<KEY>` overrides with
//! such values. Never a panic; junk is refused; what loads passes
//! `validate`. `COSTOP_FUZZ_CASES` sets the cases (`scripts/fuzz`).

#[allow(dead_code)]
#[path = "../src/config.rs"]
mod config;

use config::Config;
use std::path::PathBuf;

// The shared fuzz harness (one copy for every crate).
#[path = "../../fuzz_harness.rs"]
mod harness;
use harness::*;

#[allow(dead_code)]
fn fixture(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// TOML values a value is replaced by.
const NASTY_TOML: &[&str] = &[
    "nan",
    "+nan",
    "-nan",
    "inf",
    "-inf",
    "-1",
    "-1.0",
    "-0.0",
    "0",
    "1e300",
    "1e309",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "0x7fffffffffffffff",
    "4294967296",
    "0.0000001",
    "\"x\"",
    "\"\"",
    "\"%€\"",
    "[]",
    "[1, \"a\"]",
    "{}",
    "{ a = 1 }",
    "true",
    "1979-05-27T07:32:00Z",
];

/// A line removed or duplicated, or its value replaced by a nasty one.
fn toml_mutation(text: &str, line: Index, nasty: usize, op: u8) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let i = line.index(lines.len());
    match op % 3 {
        0 => {
            lines.remove(i);
        }
        1 => {
            let l = lines[i].clone();
            lines.insert(i, l);
        }
        _ => {
            if let Some((key, _)) = lines[i].split_once('=') {
                lines[i] = format!("{key}= {}", NASTY_TOML[nasty % NASTY_TOML.len()]);
            }
        }
    }
    lines.join("\n")
}

fn example() -> String {
    fixture("costop.example.toml")
}

/// Every `section.key` of the example file, as `COSTOP_SECTION_KEY`.
fn env_keys() -> Vec<String> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in example().lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_uppercase();
        } else if let Some((key, _)) = line.split_once('=') {
            keys.push(format!("COSTOP_{section}_{}", key.trim().to_uppercase()));
        }
    }
    keys
}

fn file(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("costop-fuzz-config-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join("costop.toml")
}

fn load(path: &std::path::Path, text: &[u8], env: Vec<(String, String)>) -> bool {
    std::fs::write(path, text).unwrap();
    match Config::load(Some(path), env.into_iter()) {
        Ok(c) => {
            c.validate().unwrap_or_else(|e| panic!("loaded but invalid: {e:#}"));
            true
        }
        Err(_) => false,
    }
}

#[test]
fn config_files() {
    let path = file("files");
    assert!(load(&path, example().as_bytes(), vec![]), "the example file loads");
    let mutated = {
        let ex = example();
        proptest::collection::vec((any::<Index>(), any::<usize>(), any::<u8>()), 1..4).prop_map(move |ms| {
            let mut t = ex.clone();
            for (line, nasty, op) in ms {
                t = toml_mutation(&t, line, nasty, op);
            }
            Input(t.into_bytes())
        })
    };
    let strategy = prop_oneof![
        inputs(vec![example()]),
        mutated,
        "(\\[[a-z]{1,8}\\]\n)?[a-z_]{1,24} = [-+0-9.e\"a-z\\[\\]{},]{0,12}\n{0,2}"
            .prop_map(|s| Input(s.into_bytes())),
    ];
    fuzz("config file", strategy, |b| {
        load(&path, &b, vec![]);
    });
    fuzz("config file (junk)", junk(), |b| assert!(!load(&path, &b, vec![])));
}

#[test]
fn config_environment() {
    let path = file("env");
    let keys = env_keys();
    let n = keys.len();
    let value = prop_oneof![
        (0..NASTY_TOML.len()).prop_map(|i| NASTY_TOML[i].to_string()),
        "\\PC{0,16}",
        "[-+0-9.e]{1,12}",
    ];
    let overrides = proptest::collection::vec((0..n, value), 1..4)
        .prop_map(move |kv| kv.into_iter().map(|(k, v)| (keys[k].clone(), v)).collect::<Vec<_>>());
    let ex = example();
    fuzz("config environment", overrides, |env| {
        load(&path, ex.as_bytes(), env);
    });
}
