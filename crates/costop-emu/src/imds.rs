//! Instance metadata (IMDSv2) for every emulated node, at
//! `/imds/{node}/latest/…`, with the bodies AWS documents (see
//! `testdata/README.md`): session tokens, the Spot interruption
//! notice, the rebalance recommendation, and the instance's identity.

use crate::api::status;
use crate::kinds::idx;
use crate::EmuState;
use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use costop_core::time::{format_rfc3339, Millis};
use serde_json::json;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Notices pending on one instance.
#[derive(Debug, Clone, Default)]
pub struct InstanceNotices {
    /// `(action, when)` of the interruption, Unix ms.
    pub interruption: Option<(String, Millis)>,
    /// When the rebalance recommendation was emitted, Unix ms.
    pub rebalance: Option<Millis>,
}

fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

fn text(code: StatusCode, body: impl Into<String>) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain")], body.into()).into_response()
}

/// Serve one IMDS request for `node`.
pub fn handle(st: &EmuState, method: &Method, node: &str, rest: &[&str], headers: &HeaderMap) -> Response {
    let Ok(object) = st.store.get(idx::NODES, "", node) else {
        return text(StatusCode::NOT_FOUND, "no such instance");
    };
    match (method, rest) {
        (&Method::PUT, ["latest", "api", "token"]) => {
            if headers.contains_key("x-forwarded-for") {
                return text(StatusCode::FORBIDDEN, "Forbidden");
            }
            let ttl = headers
                .get("x-aws-ec2-metadata-token-ttl-seconds")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            match ttl {
                Some(t @ 1..=21_600) => {
                    let token = format!("AQAEA{}", crate::random_suffix().repeat(8));
                    st.cluster
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .imds_tokens
                        .insert(token.clone(), (node.to_string(), Instant::now() + Duration::from_secs(t)));
                    text(StatusCode::OK, token)
                }
                _ => text(StatusCode::BAD_REQUEST, "X-aws-ec2-metadata-token-ttl-seconds must be 1..21600"),
            }
        }
        (&Method::GET, ["latest", "meta-data", path @ ..]) => {
            let token = headers.get("x-aws-ec2-metadata-token").and_then(|v| v.to_str().ok()).unwrap_or("");
            let cs = st.cluster.lock().unwrap_or_else(|e| e.into_inner());
            let valid =
                cs.imds_tokens.get(token).is_some_and(|(n, until)| n == node && Instant::now() < *until);
            if !valid {
                return text(StatusCode::UNAUTHORIZED, "Unauthorized");
            }
            let notices = cs.notices.get(node).cloned().unwrap_or_default();
            drop(cs);
            let labels = &object["metadata"]["labels"];
            let provider = object["spec"]["providerID"].as_str().unwrap_or("");
            match path.join("/").as_str() {
                "instance-id" => text(StatusCode::OK, provider.rsplit('/').next().unwrap_or("")),
                "instance-type" => {
                    text(StatusCode::OK, labels["node.kubernetes.io/instance-type"].as_str().unwrap_or(""))
                }
                "placement/availability-zone" => {
                    text(StatusCode::OK, labels["topology.kubernetes.io/zone"].as_str().unwrap_or(""))
                }
                "instance-life-cycle" => {
                    let spot = labels["costop.io/capacity-type"] == "spot";
                    text(StatusCode::OK, if spot { "spot" } else { "on-demand" })
                }
                "spot/instance-action" => match notices.interruption {
                    Some((action, at)) => (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "text/plain")],
                        json!({"action": action, "time": format_rfc3339(at)}).to_string(),
                    )
                        .into_response(),
                    None => text(StatusCode::NOT_FOUND, "Not Found"),
                },
                "events/recommendations/rebalance" => match notices.rebalance {
                    Some(at) => (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "text/plain")],
                        json!({"noticeTime": format_rfc3339(at)}).to_string(),
                    )
                        .into_response(),
                    None => text(StatusCode::NOT_FOUND, "Not Found"),
                },
                "events/maintenance/scheduled" => text(StatusCode::OK, "[]"),
                _ => text(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// The latest an injected interruption may be announced for: one year ahead.
pub const MAX_NOTICE_S: f64 = 365.0 * 86_400.0;

/// Admin: inject notices for a node. Body: `{"rebalance": true, "interruption":
/// {"action": "terminate", "in_seconds": 120}}` (world seconds, scaled).
/// The instance is terminated when the interruption's time comes.
pub fn inject(st: &EmuState, node: &str, body: &Bytes) -> Response {
    if st.store.get(idx::NODES, "", node).is_err() {
        return status(404, "NotFound", format!("nodes \"{node}\" not found"));
    }
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return status(400, "BadRequest", format!("invalid notice request: {e}")),
    };
    // Read and check everything before changing anything.
    if !v.is_object() {
        return status(400, "BadRequest", "the notice request must be a JSON object");
    }
    if !(v["rebalance"].is_null() || v["rebalance"].is_boolean()) {
        return status(400, "BadRequest", format!("rebalance must be true or false, got {}", v["rebalance"]));
    }
    let interruption = match v.get("interruption") {
        None | Some(serde_json::Value::Null) => None,
        Some(i) if !i.is_object() => {
            return status(400, "BadRequest", format!("interruption must be an object, got {i}"));
        }
        Some(i) => {
            let action = match i.get("action") {
                None | Some(serde_json::Value::Null) => "terminate",
                Some(a) => a.as_str().unwrap_or(""),
            };
            if !matches!(action, "terminate" | "stop" | "hibernate") {
                return status(400, "BadRequest", format!("unknown instance action {}", i["action"]));
            }
            let in_s = match i.get("in_seconds") {
                None | Some(serde_json::Value::Null) => 120.0,
                Some(secs) => match secs.as_f64() {
                    Some(s) if s.is_finite() && (0.0..=MAX_NOTICE_S).contains(&s) => s,
                    _ => {
                        return status(
                            400,
                            "BadRequest",
                            format!(
                                "interruption.in_seconds must be a number of seconds in [0, {MAX_NOTICE_S}], got {secs}"
                            ),
                        )
                    }
                },
            };
            Some((action.to_string(), in_s))
        }
    };
    let now = now_ms();
    let mut cs = st.cluster.lock().unwrap_or_else(|e| e.into_inner());
    let entry = cs.notices.entry(node.to_string()).or_default();
    if v["rebalance"] == true {
        entry.rebalance.get_or_insert(now);
    }
    if let Some((action, in_s)) = interruption {
        let at = now.saturating_add(st.scaled(in_s).as_millis() as Millis);
        entry.interruption.get_or_insert((action, at));
    }
    let snapshot = entry.clone();
    drop(cs);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"node": node, "interruption_at": snapshot.interruption.map(|(_, t)| format_rfc3339(t)),
               "rebalance_at": snapshot.rebalance.map(format_rfc3339)})
        .to_string(),
    )
        .into_response()
}

/// Instances whose interruption time has come (Unix ms `now`).
pub fn due(st: &EmuState, now: Millis) -> Vec<String> {
    let cs = st.cluster.lock().unwrap_or_else(|e| e.into_inner());
    cs.notices
        .iter()
        .filter(|(n, x)| {
            x.interruption.as_ref().is_some_and(|(_, at)| *at <= now) && !cs.terminated.contains_key(*n)
        })
        .map(|(n, _)| n.clone())
        .collect()
}

/// Current Unix ms (for the controllers).
pub fn unix_now() -> Millis {
    now_ms()
}
