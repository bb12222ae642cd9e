//! Fuzzing the emulator's parsers of outside input on stable Rust, through
//! its real entry point (`api::handle`, as the HTTP listener calls it):
//! Kubernetes objects (create, replace and the three patch kinds, on every
//! kind's path), list queries (label and field selectors, limits,
//! resourceVersions, percent-encoded arbitrary bytes), the admin API's
//! scenarios and instance-metadata injections. Arbitrary bytes and
//! mutations of valid objects never panic, and junk is refused (4xx).
//! `COSTOP_FUZZ_CASES` sets the cases (`scripts/fuzz`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};
use costop_emu::admin::{generated_scenario, load, Scenario};
use costop_emu::{api, EmuConfig, EmuState};
use std::sync::Arc;

// The shared fuzz harness (one copy for every crate).
#[path = "../../fuzz_harness.rs"]
mod harness;
use harness::*;

#[allow(dead_code)]
fn fixture(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Valid objects of each kind, as clients send them.
fn objects() -> Vec<String> {
    [
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"team-a","labels":{"env":"prod"}}}"#,
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"node-x","labels":{"topology.kubernetes.io/zone":"us-east-1a","node.kubernetes.io/instance-type":"m5.xlarge"}},"spec":{"providerID":"aws:///us-east-1a/i-0123456789abcdef0","taints":[{"key":"k","value":"v","effect":"NoSchedule"}]},"status":{"capacity":{"cpu":"4","memory":"16Gi","pods":"110"},"allocatable":{"cpu":"3920m","memory":"15Gi","pods":"110"}}}"#,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-","namespace":"default","labels":{"app":"web"},"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-1","uid":"u1","controller":true}]},"spec":{"priority":10,"priorityClassName":"costop-placeholder","nodeSelector":{"a":"b"},"tolerations":[{"key":"k","operator":"Exists","effect":"NoSchedule","tolerationSeconds":30}],"terminationGracePeriodSeconds":30,"containers":[{"name":"c","image":"nginx","resources":{"requests":{"cpu":"250m","memory":"256Mi"},"limits":{"cpu":"1","memory":"1Gi"}}}]}}"#,
        r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"replicas":3,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"c","image":"nginx","resources":{"requests":{"cpu":"100m","memory":"64Mi"}}}]}}}}"#,
        r#"{"apiVersion":"policy/v1","kind":"PodDisruptionBudget","metadata":{"name":"web"},"spec":{"minAvailable":"50%","selector":{"matchLabels":{"app":"web"},"matchExpressions":[{"key":"tier","operator":"In","values":["a","b"]}]}}}"#,
        r#"{"apiVersion":"scheduling.k8s.io/v1","kind":"PriorityClass","metadata":{"name":"high"},"value":1000000,"globalDefault":false}"#,
        r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"costop"},"spec":{"holderIdentity":"a","leaseDurationSeconds":15,"acquireTime":"2026-11-24T08:00:00.000000Z","renewTime":"2026-11-24T08:00:05.000000Z","leaseTransitions":0}}"#,
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"abc","audiences":["costop"]}}"#,
        r#"{"apiVersion":"v1","kind":"Event","metadata":{"generateName":"node-0."},"involvedObject":{"kind":"Node","name":"node-0"},"reason":"SpotInterruption","message":"m","type":"Warning","count":1}"#,
        r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"p","namespace":"default"},"deleteOptions":{"gracePeriodSeconds":0}}"#,
        r#"[{"op":"add","path":"/metadata/labels/x","value":"y"},{"op":"replace","path":"/spec/unschedulable","value":true},{"op":"remove","path":"/metadata/annotations"}]"#,
        r#"{"metadata":{"labels":{"x":null}},"spec":{"taints":[{"key":"costop.io/draining","effect":"NoSchedule"}],"unschedulable":true}}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Collection and object paths of every kind.
const PATHS: &[&str] = &[
    "/api/v1/namespaces",
    "/api/v1/namespaces/team-a",
    "/api/v1/nodes",
    "/api/v1/nodes/node-0",
    "/api/v1/nodes/node-0/status",
    "/api/v1/namespaces/default/pods",
    "/api/v1/pods",
    "/api/v1/namespaces/default/events",
    "/apis/events.k8s.io/v1/namespaces/default/events",
    "/apis/apps/v1/namespaces/default/deployments",
    "/apis/apps/v1/namespaces/default/deployments/web/scale",
    "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
    "/apis/scheduling.k8s.io/v1/priorityclasses",
    "/apis/coordination.k8s.io/v1/namespaces/default/leases",
    "/apis/coordination.k8s.io/v1/namespaces/default/leases/costop",
    "/apis/authentication.k8s.io/v1/tokenreviews",
    "/api/v1/namespaces/default/persistentvolumeclaims",
    "/api/v1/persistentvolumes",
    "/admin/scenario",
    "/admin/nodes/node-2/terminate",
    "/admin/nodes/node-1/deregister",
];

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
    "application/apply-patch+yaml",
    "text/plain",
];

struct Emu {
    rt: tokio::runtime::Runtime,
    st: Arc<EmuState>,
}

impl Emu {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let st = EmuState::new(EmuConfig::default());
        load(&st, &generated_scenario(3, 2)).unwrap();
        Self { rt, st }
    }

    /// One request through the API's entry point; the status code.
    fn call(&self, method: Method, uri: &str, content_type: &str, body: &[u8]) -> u16 {
        let Ok(uri) = uri.parse::<Uri>() else { return 0 };
        let mut headers = HeaderMap::new();
        let auth = format!("Bearer {}", self.st.admin_token);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&auth).unwrap());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        let body = Bytes::copy_from_slice(body);
        let resp = self.rt.block_on(api::handle(State(self.st.clone()), method, uri, headers, body));
        resp.status().as_u16()
    }
}

fn method(i: u8) -> Method {
    [Method::POST, Method::PUT, Method::PATCH, Method::POST, Method::DELETE][i as usize % 5].clone()
}

#[test]
fn kubernetes_objects() {
    let emu = Emu::new();
    let strategy = (inputs(objects()), 0..PATHS.len(), any::<u8>(), 0..CONTENT_TYPES.len());
    fuzz("emu kubernetes object", strategy, |(body, path, m, ct)| {
        let code = emu.call(method(m), PATHS[path], CONTENT_TYPES[ct], &body);
        assert!(code < 500, "{code} for {} {}: {body:?}", method(m), PATHS[path]);
    });
    // The admin node actions read no body; every other path refuses junk.
    let reads_body: Vec<&str> = PATHS.iter().copied().filter(|p| !p.starts_with("/admin/nodes/")).collect();
    fuzz("emu kubernetes object (junk)", (junk(), proptest::sample::select(reads_body)), |(body, path)| {
        let code = emu.call(Method::POST, path, "application/json", &body);
        assert!((400..500).contains(&code), "{code} for junk on {path}");
    });
}

/// Every byte percent-encoded except unreserved ones.
fn percent(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

#[test]
fn list_queries() {
    let emu = Emu::new();
    let param = prop_oneof![
        Just("labelSelector"),
        Just("fieldSelector"),
        Just("limit"),
        Just("continue"),
        Just("resourceVersion"),
        Just("timeoutSeconds"),
        Just("gracePeriodSeconds"),
    ];
    let value = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        "[a-z=!,()in notx.-]{0,30}".prop_map(String::into_bytes),
        "(app|spec.nodeName|metadata.name|status.phase)(=|==|!=| in | notin )\\(?[a-z0-9,-]{0,10}\\)?"
            .prop_map(String::into_bytes),
        (0..NASTY.len()).prop_map(|i| NASTY[i].as_bytes().to_vec()),
    ];
    let raw = proptest::collection::vec(any::<u8>(), 0..40);
    let strategy = (0..PATHS.len(), proptest::collection::vec((param, value), 0..3), raw, any::<bool>());
    fuzz("emu list query", strategy, |(path, params, raw, table)| {
        let mut q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", percent(v))).collect();
        // Bytes that are not percent-encoding: `%€`, `%G1`, a lone `%`.
        q.push(percent(&raw).replace("%25", "%"));
        let uri = format!("{}?{}", PATHS[path], q.join("&"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", emu.st.admin_token)).unwrap(),
        );
        if table {
            headers.insert(
                header::ACCEPT,
                HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io"),
            );
        }
        let Ok(uri) = uri.parse::<Uri>() else { return };
        let code =
            emu.rt.block_on(api::handle(State(emu.st.clone()), Method::GET, uri, headers, Bytes::new()));
        // A resourceVersion that is not a number gets 500, as from the real
        // API server (1.20); nothing else may.
        let bad_rv = params.iter().any(|(k, _)| *k == "resourceVersion");
        assert!(code.status().as_u16() < 500 || bad_rv, "{} for {}", code.status(), PATHS[path]);
    });
}

const SCENARIO: &str = r#"{"nodes":[{"count":2,"instance_type":"m5.xlarge","zone":"us-east-1a"},{"count":1,"instance_type":"c5.large","zone":"us-east-1b","capacity_type":"on-demand"}],"deployments":[{"name":"web","namespace":"shop","replicas":3,"cpu":"250m","memory":"256Mi","min_available":2}],"placeholders":{"count":1,"cpu":"500m","memory":"512Mi"}}"#;

#[test]
fn scenarios() {
    // Objects are only created (no controllers run here); a fresh state
    // every hundred loads keeps the store small.
    let st = std::cell::RefCell::new((EmuState::new(EmuConfig::default()), 0u32));
    fuzz("emu scenario", inputs(vec![SCENARIO.into()]), |b| {
        if let Ok(s) = serde_json::from_slice::<Scenario>(&b) {
            let mut st = st.borrow_mut();
            if st.1 >= 100 {
                *st = (EmuState::new(EmuConfig::default()), 0);
            }
            st.1 += 1;
            let _ = load(&st.0, &s);
        }
    });
    fuzz("emu scenario (junk)", junk(), |b| assert!(serde_json::from_slice::<Scenario>(&b).is_err()));
}

const INJECTION: &str = r#"{"rebalance":true,"interruption":{"action":"terminate","in_seconds":120}}"#;

#[test]
fn imds_injections() {
    let emu = Emu::new();
    let paths = [
        "/admin/nodes/node-0/notice",
        "/admin/nodes/node-1/start",
        "/admin/nodes/node-9/notice",
        "/admin/nodes/node-1/credits",
    ];
    let fixtures = vec![
        INJECTION.to_string(),
        r#"{"interruption":{"action":"stop","in_seconds":0.5}}"#.to_string(),
        r#"{"instance_type":"m5.2xlarge"}"#.to_string(),
        r#"{"mode":"standard","balance":0}"#.to_string(),
    ];
    fuzz("emu imds injection", (inputs(fixtures), 0..paths.len()), |(b, p)| {
        let code = emu.call(Method::POST, paths[p], "application/json", &b);
        assert!(code < 500, "{code}: {b:?}");
    });
}
