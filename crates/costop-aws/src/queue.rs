//! Queue mode: EventBridge → SQS. Each message becomes notices for the
//! server's intake; a message is deleted only after every notice in it is
//! durably recorded. Messages that cannot be read are moved aside (to the
//! dead-letter queue when one is configured) and never stop the consumer.

use crate::events::{parse_message, LifecycleAction, QueueEvent};
use crate::{AwsCloud, AwsError};
use costop_core::time::Millis;
use costop_core::Notice;
use std::future::Future;

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollStats {
    /// Messages received.
    pub received: usize,
    /// Notices handed to the intake and recorded.
    pub recorded: usize,
    /// Known events needing nothing.
    pub ignored: usize,
    /// Messages moved aside as unreadable.
    pub moved_aside: usize,
    /// Messages left on the queue because the intake could not take them (retried later).
    pub retried: usize,
    /// Lifecycle hooks to complete once their node is drained.
    pub lifecycle: Vec<LifecycleAction>,
}

/// The consumer of one queue.
pub struct QueueConsumer {
    cloud: AwsCloud,
    queue_url: String,
    dead_letter_url: Option<String>,
    wait_seconds: i32,
}

impl QueueConsumer {
    /// A consumer; `wait_seconds` is the long-poll wait (20 at most).
    pub fn new(cloud: AwsCloud, queue_url: &str, dead_letter_url: Option<&str>, wait_seconds: i32) -> Self {
        Self {
            cloud,
            queue_url: queue_url.into(),
            dead_letter_url: dead_letter_url.map(str::to_string),
            wait_seconds: wait_seconds.clamp(0, 20),
        }
    }

    /// Receive up to 10 messages and hand their notices to `intake`, which
    /// returns once a notice is durably recorded (or an error to retry later).
    pub async fn poll_once<F, Fut>(&self, now: Millis, intake: F) -> Result<PollStats, AwsError>
    where
        F: Fn(Notice) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let out = self
            .cloud
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(self.wait_seconds)
            .send()
            .await
            .map_err(crate::aws_err("ReceiveMessage", &self.queue_url))?;
        let mut stats = PollStats::default();
        for msg in out.messages() {
            stats.received += 1;
            let body = msg.body().unwrap_or("");
            let handle = msg.receipt_handle().unwrap_or("");
            let done = match parse_message(body, now) {
                Ok(QueueEvent::Notices { notices, lifecycle }) => {
                    let mut all = true;
                    for n in notices {
                        match intake(n).await {
                            Ok(()) => stats.recorded += 1,
                            Err(e) => {
                                tracing::warn!(
                                    error = e,
                                    "intake could not take a queued notice; it stays queued"
                                );
                                all = false;
                            }
                        }
                    }
                    if all {
                        stats.lifecycle.extend(lifecycle);
                    } else {
                        stats.retried += 1;
                    }
                    all
                }
                Ok(QueueEvent::Ignored(why)) => {
                    tracing::debug!(why, "queued event needs nothing");
                    stats.ignored += 1;
                    true
                }
                Err(e) => {
                    tracing::error!(error = %e, "unreadable queue message; moved aside");
                    if let Some(dlq) = &self.dead_letter_url {
                        self.cloud
                            .sqs
                            .send_message()
                            .queue_url(dlq)
                            .message_body(body)
                            .send()
                            .await
                            .map_err(crate::aws_err("SendMessage", dlq))?;
                    }
                    stats.moved_aside += 1;
                    true
                }
            };
            if done {
                self.cloud
                    .sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .map_err(crate::aws_err("DeleteMessage", &self.queue_url))?;
            }
        }
        Ok(stats)
    }
}
