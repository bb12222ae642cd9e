//! EventBridge events (as SQS message bodies, raw or in an SNS envelope)
//! into the core's notices. Formats: `testdata/README.md` (copies of the AWS documentation examples).
//!
//! Read field by field from a JSON value: fields AWS adds later (in the
//! envelope, the event or its `detail`) are ignored, while a field we need
//! that is missing, of the wrong type or with an unknown value is refused.

use costop_core::notice::InstanceAction;
use costop_core::time::{parse_rfc3339, Millis, SPOT_NOTICE_LEAD};
use costop_core::{Notice, NoticeKind, NoticeSource};
use serde_json::Value;

/// An Auto Scaling lifecycle hook to complete once the node is drained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleAction {
    /// Group name.
    pub group: String,
    /// Hook name.
    pub hook: String,
    /// Token to complete it with.
    pub token: String,
    /// Instance.
    pub instance_id: String,
    /// The notice this hook belongs to: complete the hook once its response is done.
    pub notice: costop_core::NoticeKey,
}

/// What one queue message carries.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueEvent {
    /// Notices for the server's intake (one per affected instance).
    Notices {
        /// The notices.
        notices: Vec<Notice>,
        /// A lifecycle hook to complete, if any.
        lifecycle: Option<LifecycleAction>,
    },
    /// A known event that needs no action (e.g. an instance starting), and why.
    Ignored(String),
}

/// Why a message could not be read; such messages are moved aside.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("queue message: {0}")]
pub struct EventError(pub String);

fn err(s: impl Into<String>) -> EventError {
    EventError(s.into())
}

fn text<'a>(v: &'a Value, path: &str) -> Result<&'a str, EventError> {
    let mut cur = v;
    for seg in path.split('.') {
        cur = &cur[seg];
    }
    cur.as_str().ok_or_else(|| err(format!("`{path}` missing or not a string")))
}

fn instance_id(s: &str) -> Result<String, EventError> {
    let ok = s
        .strip_prefix("i-")
        .is_some_and(|h| (8..=17).contains(&h.len()) && h.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(s.to_string())
    } else {
        Err(err(format!("`{s}` is not an instance id")))
    }
}

/// `Thu, 26 Nov 2026 05:00:00 GMT` (the AWS Health date form) to Unix ms.
pub fn parse_http_date(s: &str) -> Option<Millis> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let m = months.iter().position(|x| x == month)? + 1;
    let day: u32 = day.parse().ok()?;
    parse_rfc3339(&format!("{year}-{m:02}-{day:02}T{time}Z"))
}

/// Parse one SQS message body received at `now`.
pub fn parse_message(body: &str, now: Millis) -> Result<QueueEvent, EventError> {
    let mut v: Value = serde_json::from_str(body).map_err(|e| err(format!("not JSON: {e}")))?;
    // An SNS envelope carries the event as a string in `Message`.
    if v["Type"] == "Notification" {
        let inner = v["Message"].as_str().ok_or_else(|| err("SNS envelope without a `Message` string"))?;
        v = serde_json::from_str(inner).map_err(|e| err(format!("SNS `Message` is not JSON: {e}")))?;
    }
    let detail_type = text(&v, "detail-type")?;
    let time = parse_rfc3339(text(&v, "time")?).ok_or_else(|| err("`time` is not RFC 3339"))?;
    let notice = |instance: String, kind: NoticeKind| Notice {
        instance_id: instance,
        kind,
        received_at: now,
        source: NoticeSource::Queue,
    };
    let detail = &v["detail"];
    match (text(&v, "source")?, detail_type) {
        ("aws.ec2", "EC2 Spot Instance Interruption Warning") => {
            let action = match text(detail, "instance-action")? {
                "terminate" => InstanceAction::Terminate,
                "stop" => InstanceAction::Stop,
                "hibernate" => InstanceAction::Hibernate,
                other => return Err(err(format!("unknown instance-action `{other}`"))),
            };
            let kind = NoticeKind::SpotInterruption { action, effective_at: time + SPOT_NOTICE_LEAD };
            Ok(QueueEvent::Notices {
                notices: vec![notice(instance_id(text(detail, "instance-id")?)?, kind)],
                lifecycle: None,
            })
        }
        ("aws.ec2", "EC2 Instance Rebalance Recommendation") => {
            let kind = NoticeKind::RebalanceRecommendation { notice_time: time };
            Ok(QueueEvent::Notices {
                notices: vec![notice(instance_id(text(detail, "instance-id")?)?, kind)],
                lifecycle: None,
            })
        }
        ("aws.ec2", "EC2 Instance State-change Notification") => {
            let id = instance_id(text(detail, "instance-id")?)?;
            match text(detail, "state")? {
                state @ ("shutting-down" | "terminated" | "stopping" | "stopped") => {
                    let kind =
                        NoticeKind::ScheduledEvent { code: format!("instance-{state}"), not_before: time };
                    Ok(QueueEvent::Notices { notices: vec![notice(id, kind)], lifecycle: None })
                }
                state @ ("pending" | "running") => Ok(QueueEvent::Ignored(format!("{id} is {state}"))),
                other => Err(err(format!("unknown instance state `{other}`"))),
            }
        }
        ("aws.autoscaling", "EC2 Instance-terminate Lifecycle Action") => {
            let id = instance_id(text(detail, "EC2InstanceId")?)?;
            let kind =
                NoticeKind::ScheduledEvent { code: "asg-terminate-lifecycle".into(), not_before: time };
            let n = notice(id.clone(), kind);
            let lifecycle = LifecycleAction {
                group: text(detail, "AutoScalingGroupName")?.into(),
                hook: text(detail, "LifecycleHookName")?.into(),
                token: text(detail, "LifecycleActionToken")?.into(),
                instance_id: id,
                notice: n.key(),
            };
            Ok(QueueEvent::Notices { notices: vec![n], lifecycle: Some(lifecycle) })
        }
        ("aws.health", "AWS Health Event") => {
            if detail["eventTypeCategory"] != "scheduledChange" {
                return Ok(QueueEvent::Ignored(format!(
                    "health event category {}",
                    detail["eventTypeCategory"]
                )));
            }
            let code = text(detail, "eventTypeCode")?.to_string();
            let start = detail["startTime"].as_str().and_then(parse_http_date).unwrap_or(time);
            let entities = detail["affectedEntities"]
                .as_array()
                .ok_or_else(|| err("`detail.affectedEntities` missing"))?;
            let notices = entities
                .iter()
                .filter_map(|e| e["entityValue"].as_str())
                .filter(|e| e.starts_with("i-"))
                .map(|e| {
                    Ok(notice(
                        instance_id(e)?,
                        NoticeKind::ScheduledEvent { code: code.clone(), not_before: start },
                    ))
                })
                .collect::<Result<Vec<_>, EventError>>()?;
            if notices.is_empty() {
                return Ok(QueueEvent::Ignored("health event names no instance".into()));
            }
            Ok(QueueEvent::Notices { notices, lifecycle: None })
        }
        (source, other) => Err(err(format!("unknown event `{other}` from `{source}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event AWS documents, from the repository's `testdata/eventbridge`
    /// (sources in `testdata/README.md`); a missing file fails the test.
    fn fixture(name: &str) -> String {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/eventbridge").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
    }

    #[test]
    fn every_event_kind_from_the_fixtures() {
        let spot = fixture("spot-interruption-warning.json");
        let t = parse_rfc3339("2026-11-24T08:20:00Z").unwrap();
        match parse_message(&spot, 7).unwrap() {
            QueueEvent::Notices { notices, lifecycle: None } => {
                assert_eq!(notices[0].instance_id, "i-1234567890abcdef0");
                assert_eq!(
                    notices[0].kind,
                    NoticeKind::SpotInterruption {
                        action: InstanceAction::Terminate,
                        effective_at: t + 120_000
                    }
                );
                assert_eq!((notices[0].received_at, notices[0].source), (7, NoticeSource::Queue));
            }
            other => panic!("{other:?}"),
        }
        let rebalance = parse_message(&fixture("rebalance-recommendation.json"), 0).unwrap();
        assert!(
            matches!(rebalance, QueueEvent::Notices { ref notices, .. } if matches!(notices[0].kind, NoticeKind::RebalanceRecommendation { .. }))
        );
        let state = parse_message(&fixture("instance-state-change.json"), 0).unwrap();
        assert!(
            matches!(state, QueueEvent::Notices { ref notices, .. } if notices[0].kind.label() == "scheduled-event" && notices[0].instance_id == "i-abcd1111")
        );
        match parse_message(&fixture("asg-terminate-lifecycle-action.json"), 0).unwrap() {
            QueueEvent::Notices { lifecycle: Some(l), .. } => {
                assert_eq!(
                    (l.group.as_str(), l.hook.as_str(), l.token.as_str()),
                    ("my-asg", "my-lifecycle-hook", "87654321-4321-4321-4321-210987654321")
                );
            }
            other => panic!("{other:?}"),
        }
        match parse_message(&fixture("health-scheduled-change.json"), 0).unwrap() {
            QueueEvent::Notices { notices, .. } => {
                assert_eq!(notices[0].instance_id, "i-abcd1111");
                assert_eq!(notices[0].kind.stated_time(), parse_rfc3339("2026-11-26T05:00:00Z").unwrap());
            }
            other => panic!("{other:?}"),
        }
        // The same event inside an SNS envelope.
        let sns = serde_json::json!({"Type": "Notification", "Message": spot}).to_string();
        assert!(matches!(parse_message(&sns, 0).unwrap(), QueueEvent::Notices { .. }));
    }

    /// Extra fields anywhere (envelope, event, `detail`) change nothing;
    /// a malformed field is still refused when extra ones come with it.
    #[test]
    fn unknown_fields_are_tolerated() {
        let names = [
            "spot-interruption-warning.json",
            "rebalance-recommendation.json",
            "instance-state-change.json",
            "asg-terminate-lifecycle-action.json",
            "health-scheduled-change.json",
        ];
        for name in names {
            let body = fixture(name);
            let plain = parse_message(&body, 7).unwrap();
            let mut v: Value = serde_json::from_str(&body).unwrap();
            v["fieldAwsAddsLater"] = serde_json::json!({"nested": [1, "two", null]});
            v["detail"]["anotherNewField"] = serde_json::json!(42);
            let extra = v.to_string();
            assert_eq!(parse_message(&extra, 7).unwrap(), plain, "{name} with extra fields");
            // In an SNS envelope with the fields SNS really sends.
            let sns = serde_json::json!({
                "Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:aws:sns:us-east-1:1:t",
                "Message": extra, "Timestamp": "2026-11-24T08:20:01.000Z", "SignatureVersion": "1",
                "Signature": "c2ln", "SigningCertURL": "https://sns/cert.pem", "UnsubscribeURL": "https://sns/u",
                "MessageAttributes": {"x": {"Type": "String", "Value": "y"}}
            });
            assert_eq!(parse_message(&sns.to_string(), 7).unwrap(), plain, "{name} in SNS");
        }
        let spot = fixture(names[0]);
        let mut v: Value = serde_json::from_str(&spot).unwrap();
        v["fieldAwsAddsLater"] = serde_json::json!(true);
        for (field, bad, want) in [
            ("instance-id", serde_json::json!("bogus"), "instance id"),
            ("instance-id", serde_json::json!(12), "instance-id"),
            ("instance-action", serde_json::json!("melt"), "instance-action"),
            ("instance-action", Value::Null, "instance-action"),
        ] {
            let mut broken = v.clone();
            broken["detail"][field] = bad;
            let e = parse_message(&broken.to_string(), 0).unwrap_err().to_string();
            assert!(e.contains(want), "{field}: {e}");
        }
        let mut broken = v.clone();
        broken["time"] = serde_json::json!("yesterday");
        assert!(parse_message(&broken.to_string(), 0).unwrap_err().to_string().contains("RFC 3339"));
    }

    #[test]
    fn junk_is_an_error_that_says_why() {
        let cases = [
            ("", "not JSON"),
            ("{}", "detail-type"),
            (
                r#"{"detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2", "time": "x"}"#,
                "RFC 3339",
            ),
            (
                r#"{"detail-type": "Nope", "source": "aws.ec2", "time": "2026-11-24T08:20:00Z"}"#,
                "unknown event",
            ),
            (
                r#"{"detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2", "time": "2026-11-24T08:20:00Z", "detail": {"instance-id": "bogus", "instance-action": "terminate"}}"#,
                "instance id",
            ),
            (
                r#"{"detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2", "time": "2026-11-24T08:20:00Z", "detail": {"instance-id": "i-12345678", "instance-action": "melt"}}"#,
                "instance-action",
            ),
            (r#"{"Type": "Notification", "Message": 5}"#, "SNS"),
        ];
        for (body, want) in cases {
            let e = parse_message(body, 0).unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
        let running = r#"{"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2", "time": "2026-11-24T08:20:00Z", "detail": {"instance-id": "i-12345678", "state": "running"}}"#;
        assert!(matches!(parse_message(running, 0).unwrap(), QueueEvent::Ignored(_)));
        assert_eq!(parse_http_date("Thu, 26 Nov 2026 05:00:00 GMT"), parse_rfc3339("2026-11-26T05:00:00Z"));
        assert_eq!(parse_http_date("someday"), None);
    }
}
