//! Notices: what the cloud says is about to happen to an instance.

use crate::time::{Millis, SPOT_NOTICE_LEAD};
use serde::{Deserialize, Serialize};

/// What the instance will undergo when a Spot interruption takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceAction {
    /// The instance is terminated (the common case).
    Terminate,
    /// The instance is stopped.
    Stop,
    /// The instance hibernates.
    Hibernate,
}

/// The kind of notice, with what it says about timing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum NoticeKind {
    /// `spot/instance-action`: the instance is reclaimed at `effective_at`.
    SpotInterruption {
        /// What happens to the instance.
        action: InstanceAction,
        /// When the action takes effect (the notice's `time`).
        effective_at: Millis,
    },
    /// `events/recommendations/rebalance`: elevated risk of interruption.
    RebalanceRecommendation {
        /// The recommendation's `noticeTime`.
        notice_time: Millis,
    },
    /// A scheduled maintenance event (AWS Health / `events/maintenance/scheduled`).
    ScheduledEvent {
        /// Event code, e.g. `instance-retirement`.
        code: String,
        /// Earliest start of the event.
        not_before: Millis,
    },
}

impl NoticeKind {
    /// A short stable label, used in keys and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            NoticeKind::SpotInterruption { .. } => "spot-interruption",
            NoticeKind::RebalanceRecommendation { .. } => "rebalance-recommendation",
            NoticeKind::ScheduledEvent { .. } => "scheduled-event",
        }
    }

    /// The time the notice names (effective time, notice time or start).
    pub fn stated_time(&self) -> Millis {
        match self {
            NoticeKind::SpotInterruption { effective_at, .. } => *effective_at,
            NoticeKind::RebalanceRecommendation { notice_time } => *notice_time,
            NoticeKind::ScheduledEvent { not_before, .. } => *not_before,
        }
    }

    /// Whether the notice says the instance is already going: an EC2 state
    /// change to `shutting-down`, `terminated`, `stopping` or `stopped`
    /// (the queue's `instance-<state>` scheduled events). Its kubelet no
    /// longer runs pods, whatever the API server still shows.
    pub fn instance_gone(&self) -> bool {
        matches!(self, NoticeKind::ScheduledEvent { code, .. } if matches!(code.as_str(),
            "instance-shutting-down" | "instance-terminated" | "instance-stopping" | "instance-stopped"))
    }

    /// When the instance is lost, if the notice says so.
    pub fn deadline(&self) -> Option<Millis> {
        match self {
            NoticeKind::SpotInterruption { effective_at, .. } => Some(*effective_at),
            NoticeKind::RebalanceRecommendation { .. } => None,
            NoticeKind::ScheduledEvent { not_before, .. } => Some(*not_before),
        }
    }
}

/// Where a notice came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeSource {
    /// The per-node agent polling instance metadata.
    Agent,
    /// The EventBridge → SQS queue.
    Queue,
    /// The simulated market.
    Simulator,
}

/// One notice about one instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Notice {
    /// EC2 instance id the notice is about.
    pub instance_id: String,
    /// What the notice says.
    pub kind: NoticeKind,
    /// When costop received it.
    pub received_at: Millis,
    /// Which path delivered it.
    pub source: NoticeSource,
}

/// Identity of a notice for de-duplication: the same notice arriving by two
/// paths, or twice by one, has the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NoticeKey {
    /// EC2 instance id.
    pub instance_id: String,
    /// Kind label, see [`NoticeKind::label`].
    pub kind: String,
    /// The time stated in the notice.
    pub stated_time: Millis,
}

impl std::fmt::Display for NoticeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.instance_id, self.kind, self.stated_time)
    }
}

impl Notice {
    /// The de-duplication key.
    pub fn key(&self) -> NoticeKey {
        NoticeKey {
            instance_id: self.instance_id.clone(),
            kind: self.kind.label().to_string(),
            stated_time: self.kind.stated_time(),
        }
    }

    /// When the instance is lost. A notice that states none (rebalance) gets
    /// none; an interruption notice without a usable time is assumed to take
    /// effect two minutes after it was received.
    pub fn deadline(&self) -> Option<Millis> {
        self.kind
            .deadline()
            .map(|d| if d == 0 { self.received_at.saturating_add(SPOT_NOTICE_LEAD) } else { d })
    }
}
