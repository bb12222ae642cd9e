//! costop's Store port, twice: in memory (the embedded default, one
//! process) and in Redis (shared by agents and server replicas).
//!
//! Redis key layout (every key under the `costop:` prefix):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `costop:notice:{instance}:{kind}:{time}` | hash | `notice` (JSON), `first_seen` (Unix ms) |
//! | `costop:notices` | stream | fields `notice` (JSON) and `token` (the agent's service-account token, verified before acting); consumer group `costop-server` |
//! | `costop:response:{notice key}` | hash | `plan` (JSON), `plan_mac` (HMAC-SHA256 of the key and the plan, with [`redis_store::PLAN_KEY_ENV`]'s key), `step:{i}:started`, `step:{i}:done`, `step:{i}:outcome`, `done_at` |
//! | `costop:responses:open` | set | notice keys of responses not finished |
//! | `costop:responses:recent` | sorted set | notice keys of responses by when their plan was saved (Unix ms), the latest 1000 (`costop status`) |
//! | `costop:claim:{instance}:{kind}` | string (TTL [`CLAIM_TTL_MS`]) | the notice key holding the one response of that instance and kind |
//! | `costop:restore:{step key}` | hash (TTL two days) | Auto Scaling group → the absolute desired capacity the restore step set |
//! | `costop:mirror:{nodes,pods,pools}` | hash | name → JSON of the object |

pub mod any;
pub mod clock;
pub mod memory;
pub mod redis_server;
pub mod redis_store;

pub use any::AnyStore;
pub use clock::SystemClock;
pub use memory::MemoryStore;
pub use redis_store::RedisStore;

/// A store error, naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis failed or is unreachable.
    #[error("redis {action}: {source}")]
    Redis {
        /// What was being done.
        action: &'static str,
        /// The client's error.
        source: redis::RedisError,
    },
    /// Redis could not be reached or its URL is not valid: names the URL
    /// (password hidden) once.
    #[error("redis at {url}: cannot {action}: {message}")]
    Connect {
        /// The URL, without its password.
        url: String,
        /// open (parse the URL, read the CA) or connect.
        action: &'static str,
        /// The client's error, its causes joined once.
        message: String,
    },
    /// A stored plan whose integrity check fails: not written by a server
    /// holding the plan key (planted), or altered. Never run.
    #[error("the stored plan of {key} fails its integrity check ({why}): refused")]
    Forged {
        /// The response's notice key.
        key: String,
        /// Missing or wrong MAC.
        why: &'static str,
    },
    /// A stored value could not be read back.
    #[error("stored {what} is not valid: {message}")]
    Corrupt {
        /// Which value.
        what: String,
        /// The parser's complaint.
        message: String,
    },
}

/// `url` with its password replaced by `***` (for messages and logs).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { format!("{user}:***") } else { "***".to_string() };
            format!("{}{hidden}{}", &url[..scheme_end], &rest[at..])
        }
        None => url.to_string(),
    }
}

/// An error's message followed by those of its causes, each said once: a
/// cause whose text the message already holds is left out.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// How long the one response of an (instance, kind) is held: a day. A
/// reclaimed instance is gone long before; a rebalance recommendation
/// retires its node within the day.
pub const CLAIM_TTL_MS: u64 = 24 * 3600 * 1000;

/// The Redis key of the claim on the one response of (instance, kind).
pub fn claim_key(key: &costop_core::NoticeKey) -> String {
    format!("costop:claim:{}:{}", key.instance_id, key.kind)
}

/// What came of claiming the one response of a notice's (instance, kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This notice holds it now.
    Claimed,
    /// Another notice (or this one, earlier) holds it: its key.
    Held(costop_core::NoticeKey),
}

/// The Redis hash key of a notice.
pub fn notice_key(key: &costop_core::NoticeKey) -> String {
    format!("costop:notice:{key}")
}

/// The Redis hash key of a response.
pub fn response_key(key: &costop_core::NoticeKey) -> String {
    format!("costop:response:{key}")
}

/// Parse a notice key back from its display form `instance:kind:time`.
pub fn parse_notice_key(s: &str) -> Option<costop_core::NoticeKey> {
    let mut parts = s.rsplitn(3, ':');
    let time = parts.next()?.parse().ok()?;
    let kind = parts.next()?.to_string();
    let instance = parts.next()?.to_string();
    Some(costop_core::NoticeKey { instance_id: instance, kind, stated_time: time })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notice_keys_round_trip() {
        let k = costop_core::NoticeKey {
            instance_id: "i-0abc".into(),
            kind: "spot-interruption".into(),
            stated_time: 42,
        };
        assert_eq!(parse_notice_key(&k.to_string()), Some(k));
        assert_eq!(parse_notice_key("junk"), None);
    }

    #[test]
    fn passwords_are_hidden_in_urls() {
        assert_eq!(
            redact_url("rediss://costop-server:s3cret@redis.x:6379/"),
            "rediss://costop-server:***@redis.x:6379/"
        );
        assert_eq!(redact_url("redis://:s3cret@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact_url("redis://token@h:1"), "redis://***@h:1");
        assert_eq!(redact_url("redis://h:1/a@b"), "redis://h:1/a@b");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn causes_already_said_are_left_out() {
        let io =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused (os error 111)");
        #[derive(Debug)]
        struct Wrap(std::io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "connect: {}", self.0)
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(error_chain(&Wrap(io)), "connect: Connection refused (os error 111)");
    }
}
