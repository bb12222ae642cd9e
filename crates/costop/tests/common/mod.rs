//! What the process-level tests share: the binary, a free port, and a child
//! process that is killed when the test lets go of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// `text` without terminal colours (CSI sequences: ESC [ parameters final-letter).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A child process, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `costop` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_costop")
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `costop emu` with `nodes` nodes of `pods` pods each, writing its
/// kubeconfig into `dir`; returns once it listens (its first line).
pub fn start_emu(dir: &Path, nodes: u32, pods: u32) -> (Proc, PathBuf) {
    let (proc, kubeconfig, _) = start_emu_scaled(dir, nodes, pods, 1.0);
    (proc, kubeconfig)
}

/// [`start_emu`] with its clock at `time_scale`; also returns its URL.
pub fn start_emu_scaled(dir: &Path, nodes: u32, pods: u32, time_scale: f64) -> (Proc, PathBuf, String) {
    let kubeconfig = dir.join("kubeconfig");
    let mut emu = Command::new(bin())
        .args(["emu", "--nodes", &nodes.to_string(), "--pods-per-node", &pods.to_string()])
        .args(["--time-scale", &time_scale.to_string(), "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(emu.stdout.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    let url = line.split_whitespace().last().unwrap_or_default().to_string();
    std::thread::spawn(move || for _ in lines.lines() {});
    (Proc(emu), kubeconfig, url)
}

/// The Kustomize overlays in `deploy/overlays`, one per kind of node group.
pub const OVERLAYS: [&str; 3] = ["eks-managed", "karpenter", "self-managed"];

/// `kubectl ARGS…`'s output; a panic with its error if it fails.
pub fn kubectl<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl (scripts/deps installs kubernetes-client)");
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    assert!(out.status.success(), "kubectl {}: {}", shown.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("kubectl prints UTF-8")
}

/// `kubectl kustomize deploy/overlays/<overlay>`: the YAML a user applies.
pub fn render_overlay(overlay: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/overlays").join(overlay);
    kubectl(&[Path::new("kustomize"), &dir])
}

/// The objects of a rendered overlay, as JSON.
pub fn overlay_objects(overlay: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let text = render_overlay(overlay);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            serde_json::Value::deserialize(doc).unwrap_or_else(|e| panic!("{overlay} renders bad YAML: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The object of `kind` named `name` among `objects`.
pub fn object<'a>(objects: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered overlay"))
}

/// Rendered YAML for an API server before 1.21, which serves
/// PodDisruptionBudgets only as policy/v1beta1 (the same fields the base
/// sets): the real API server of the tests is 1.20.
pub fn with_policy_v1beta1(yaml: &str) -> String {
    yaml.replace("apiVersion: policy/v1\n", "apiVersion: policy/v1beta1\n")
}
