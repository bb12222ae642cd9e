//! IMDSv2: session tokens, reads, and the parsers of the notice bodies.

use costop_core::notice::InstanceAction;
use costop_core::time::{parse_rfc3339, Millis};
use serde::Deserialize;
use std::time::{Duration, Instant};

/// What went wrong talking to instance metadata.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    /// Network failure or timeout.
    #[error("instance metadata {path}: {message}")]
    Transport {
        /// Path asked.
        path: String,
        /// What failed.
        message: String,
    },
    /// An unexpected status code.
    #[error("instance metadata {path}: HTTP {code}")]
    Status {
        /// Path asked.
        path: String,
        /// The code.
        code: u16,
    },
    /// A body that is not what AWS documents.
    #[error("instance metadata {path}: malformed body: {message}")]
    Malformed {
        /// Path asked.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// `spot/instance-action`.
pub const INSTANCE_ACTION: &str = "spot/instance-action";
/// `events/recommendations/rebalance`.
pub const REBALANCE: &str = "events/recommendations/rebalance";

// Fields AWS may add later are ignored (no `deny_unknown_fields`): a notice
// must never be dropped because its body says more than we read. The fields
// we read are still required and checked.
#[derive(Deserialize)]
struct RawAction {
    action: String,
    time: String,
}

#[derive(Deserialize)]
struct RawRebalance {
    #[serde(rename = "noticeTime")]
    notice_time: String,
}

fn malformed(path: &str, message: impl Into<String>) -> ImdsError {
    ImdsError::Malformed { path: path.into(), message: message.into() }
}

/// An RFC 3339 time as AWS writes it. Only ASCII is handed to the parser:
/// a time is ASCII, and the core's parser slices by byte offsets.
fn rfc3339(time: &str) -> Option<Millis> {
    time.is_ascii().then(|| parse_rfc3339(time))?
}

/// Parse `{"action": "terminate", "time": "2026-11-24T08:22:00Z"}`.
pub fn parse_instance_action(body: &str) -> Result<(InstanceAction, Millis), ImdsError> {
    let raw: RawAction = serde_json::from_str(body).map_err(|e| malformed(INSTANCE_ACTION, e.to_string()))?;
    let action = match raw.action.as_str() {
        "terminate" => InstanceAction::Terminate,
        "stop" => InstanceAction::Stop,
        "hibernate" => InstanceAction::Hibernate,
        other => return Err(malformed(INSTANCE_ACTION, format!("unknown action `{other}`"))),
    };
    let time = rfc3339(&raw.time)
        .ok_or_else(|| malformed(INSTANCE_ACTION, format!("`time` is not RFC 3339: `{}`", raw.time)))?;
    Ok((action, time))
}

/// Parse `{"noticeTime": "2026-11-24T08:17:00Z"}`.
pub fn parse_rebalance(body: &str) -> Result<Millis, ImdsError> {
    let raw: RawRebalance = serde_json::from_str(body).map_err(|e| malformed(REBALANCE, e.to_string()))?;
    rfc3339(&raw.notice_time)
        .ok_or_else(|| malformed(REBALANCE, format!("`noticeTime` is not RFC 3339: `{}`", raw.notice_time)))
}

/// An IMDSv2 client that refreshes its session token before it expires.
pub struct ImdsClient {
    base: String,
    http: reqwest::Client,
    token: Option<(String, Instant)>,
    ttl: Duration,
}

impl ImdsClient {
    /// A client for `base` (`http://169.254.169.254` on EC2).
    pub fn new(base: &str, request_timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(request_timeout)
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { base: base.trim_end_matches('/').into(), http, token: None, ttl: Duration::from_secs(21_600) }
    }

    /// Use a shorter token lifetime (tests).
    pub fn with_token_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    async fn token(&mut self) -> Result<String, ImdsError> {
        // Refresh at 80 % of the lifetime, so a read never carries an expired token.
        if let Some((t, got)) = &self.token {
            if got.elapsed() < self.ttl.mul_f64(0.8) {
                return Ok(t.clone());
            }
        }
        let path = "api/token";
        let resp = self
            .http
            .put(format!("{}/latest/api/token", self.base))
            .header("X-aws-ec2-metadata-token-ttl-seconds", self.ttl.as_secs().max(1).to_string())
            .send()
            .await
            .map_err(|e| ImdsError::Transport { path: path.into(), message: e.to_string() })?;
        if !resp.status().is_success() {
            return Err(ImdsError::Status { path: path.into(), code: resp.status().as_u16() });
        }
        let token = resp
            .text()
            .await
            .map_err(|e| ImdsError::Transport { path: path.into(), message: e.to_string() })?;
        self.token = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// Read a metadata path: `Ok(None)` on 404. A 401 fetches a new token and retries once.
    pub async fn get(&mut self, path: &str) -> Result<Option<String>, ImdsError> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let resp = self
                .http
                .get(format!("{}/latest/meta-data/{path}", self.base))
                .header("X-aws-ec2-metadata-token", token)
                .send()
                .await
                .map_err(|e| ImdsError::Transport { path: path.into(), message: e.to_string() })?;
            match resp.status().as_u16() {
                200 => {
                    return resp
                        .text()
                        .await
                        .map(Some)
                        .map_err(|e| ImdsError::Transport { path: path.into(), message: e.to_string() })
                }
                404 => return Ok(None),
                401 if attempt == 0 => self.token = None,
                code => return Err(ImdsError::Status { path: path.into(), code }),
            }
        }
        Err(ImdsError::Status { path: path.into(), code: 401 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body AWS documents (`testdata/imds`); a missing fixture fails the test.
    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/imds").join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("fixture {} (testdata/imds): {e}", p.display()))
    }

    /// The fixture's JSON object with one more field.
    fn with_extra_field(body: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["someFieldAwsAddsLater"] = serde_json::json!({"nested": [1, 2, 3]});
        v.to_string()
    }

    #[test]
    fn aws_bodies_parse() {
        let action = fixture("spot-instance-action.json");
        assert_eq!(parse_instance_action(&action).unwrap(), (InstanceAction::Terminate, 1_795_508_520_000));
        let stop = fixture("spot-instance-action-stop.json");
        assert_eq!(parse_instance_action(&stop).unwrap().0, InstanceAction::Stop);
        let rebalance = fixture("rebalance-recommendation.json");
        assert_eq!(parse_rebalance(&rebalance).unwrap(), 1_795_508_220_000);
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let action = with_extra_field(&fixture("spot-instance-action.json"));
        assert_eq!(parse_instance_action(&action).unwrap(), (InstanceAction::Terminate, 1_795_508_520_000));
        let stop = with_extra_field(&fixture("spot-instance-action-stop.json"));
        assert_eq!(parse_instance_action(&stop).unwrap().0, InstanceAction::Stop);
        let rebalance = with_extra_field(&fixture("rebalance-recommendation.json"));
        assert_eq!(parse_rebalance(&rebalance).unwrap(), 1_795_508_220_000);
        // An extra field does not excuse a missing or broken one.
        let broken = r#"{"action": "terminate", "time": "soon", "extra": 1}"#;
        assert!(parse_instance_action(broken).unwrap_err().to_string().contains("malformed"));
        let missing = r#"{"time": "2026-11-24T08:22:00Z", "extra": 1}"#;
        assert!(parse_instance_action(missing).unwrap_err().to_string().contains("action"));
        let missing = r#"{"noticetime": "2026-11-24T08:17:00Z"}"#;
        assert!(parse_rebalance(missing).unwrap_err().to_string().contains("noticeTime"));
    }

    #[test]
    fn junk_bodies_are_clear_errors() {
        for body in [
            "",
            "{",
            "[]",
            r#"{"action": "explode", "time": "2026-11-24T08:22:00Z"}"#,
            r#"{"action": "terminate", "time": "soon"}"#,
            r#"{"action": "terminate"}"#,
            r#"{"action": 7, "time": "2026-11-24T08:22:00Z"}"#,
            r#"{"action": "terminate", "time": "2026-11-24T08:22:00Z", "action": "stop"}"#,
            r#"{"action": "terminate", "time": "2026-11-24T08:22:00Z"} trailing"#,
            "\u{0}\u{ff}",
            r#"{"action": "terminate", "time": "2026-11-24T08:22:00+€ab"}"#,
            r#"{"action": "terminate", "time": "2026-11-24T08:22:00.5€"}"#,
            r#"{"action": "terminate", "time": "2026-11-24T08:22:0€"}"#,
        ] {
            let err = parse_instance_action(body).unwrap_err().to_string();
            assert!(err.contains("spot/instance-action") && err.contains("malformed"), "{body}: {err}");
        }
        for body in [
            "",
            r#"{"noticeTime": 5}"#,
            r#"{"noticeTime": "later"}"#,
            r#"{"noticeTime": null}"#,
            "[]",
            r#"{"noticeTime": "2026-11-24T08:17:00-€:0"}"#,
        ] {
            assert!(parse_rebalance(body).unwrap_err().to_string().contains("rebalance"), "{body}");
        }
    }
}
