//! Prometheus metrics, in the text exposition format.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Bucket bounds (seconds) of the notice → cordon histogram.
const BUCKETS: [f64; 10] = [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0];

#[derive(Default)]
struct Inner {
    notices: BTreeMap<(String, String), u64>,
    duplicates: u64,
    refused: u64,
    stream_refused: BTreeMap<String, u64>,
    plans_refused: u64,
    forwarded: BTreeMap<String, u64>,
    pods_left: u64,
    steps: BTreeMap<String, (u64, f64)>,
    cordon_buckets: [u64; BUCKETS.len()],
    cordon_count: u64,
    cordon_sum: f64,
    dry_run: bool,
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics(Mutex<Inner>);

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A notice accepted, by kind and path.
    pub fn notice(&self, kind: &str, source: &str) {
        *self.lock().notices.entry((kind.into(), source.into())).or_default() += 1;
    }

    /// Whether the server runs in dry-run mode (gauge `costop_dry_run`).
    pub fn set_dry_run(&self, on: bool) {
        self.lock().dry_run = on;
    }

    /// A duplicate notice.
    pub fn duplicate(&self) {
        self.lock().duplicates += 1;
    }

    /// A notice refused (authentication or authorization).
    pub fn refused(&self) {
        self.lock().refused += 1;
    }

    /// A stream entry refused (never acted on), by reason.
    pub fn stream_refused(&self, reason: &str) {
        *self.lock().stream_refused.entry(reason.into()).or_default() += 1;
    }

    /// A stored plan refused: its integrity check failed (planted or altered).
    pub fn plan_refused(&self) {
        self.lock().plans_refused += 1;
    }

    /// A follower forwarded a notice to the leader: `answered` (2xx),
    /// `refused` (the leader's other answers), `failed` (no answer).
    pub fn forwarded(&self, outcome: &str) {
        *self.lock().forwarded.entry(outcome.into()).or_default() += 1;
    }

    /// Pods left on a doomed node (their budget allowed no eviction).
    pub fn pods_left(&self, count: usize) {
        self.lock().pods_left += count as u64;
    }

    /// A step finished after `seconds`.
    pub fn step(&self, kind: &str, seconds: f64) {
        let mut inner = self.lock();
        let e = inner.steps.entry(kind.into()).or_default();
        e.0 += 1;
        e.1 += seconds;
    }

    /// Seconds from a notice's arrival to its node being cordoned.
    pub fn notice_to_cordon(&self, seconds: f64) {
        let mut inner = self.lock();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                inner.cordon_buckets[i] += 1;
            }
        }
        inner.cordon_count += 1;
        inner.cordon_sum += seconds;
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        out.push_str(&format!(
            "# HELP costop_dry_run 1 when the server runs in dry-run mode (records plans, changes nothing).\n# TYPE costop_dry_run gauge\ncostop_dry_run {}\n",
            u8::from(inner.dry_run)
        ));
        out.push_str("# HELP costop_notices_total Notices accepted, by kind and path.\n# TYPE costop_notices_total counter\n");
        for ((kind, source), n) in &inner.notices {
            out.push_str(&format!("costop_notices_total{{kind=\"{kind}\",source=\"{source}\"}} {n}\n"));
        }
        out.push_str(&format!("# HELP costop_notice_duplicates_total Notices seen again.\n# TYPE costop_notice_duplicates_total counter\ncostop_notice_duplicates_total {}\n", inner.duplicates));
        out.push_str(&format!("# HELP costop_notices_refused_total Notices refused by authentication or authorization.\n# TYPE costop_notices_refused_total counter\ncostop_notices_refused_total {}\n", inner.refused));
        out.push_str("# HELP costop_stream_entries_refused_total Stream entries acknowledged and not acted on, by reason.\n# TYPE costop_stream_entries_refused_total counter\n");
        for (reason, n) in &inner.stream_refused {
            out.push_str(&format!("costop_stream_entries_refused_total{{reason=\"{reason}\"}} {n}\n"));
        }
        out.push_str(&format!("# HELP costop_plans_refused_total Stored plans refused: no valid HMAC (planted or altered).\n# TYPE costop_plans_refused_total counter\ncostop_plans_refused_total {}\n", inner.plans_refused));
        out.push_str("# HELP costop_notices_forwarded_total Notices a follower forwarded to the leader, by outcome (answered, refused, failed).\n# TYPE costop_notices_forwarded_total counter\n");
        for (outcome, n) in &inner.forwarded {
            out.push_str(&format!("costop_notices_forwarded_total{{outcome=\"{outcome}\"}} {n}\n"));
        }
        out.push_str(&format!("# HELP costop_pods_left_total Pods left on a doomed node: their disruption budget allowed no eviction before the deadline.\n# TYPE costop_pods_left_total counter\ncostop_pods_left_total {}\n", inner.pods_left));
        out.push_str("# HELP costop_step_duration_seconds Time steps took.\n# TYPE costop_step_duration_seconds summary\n");
        for (kind, (count, sum)) in &inner.steps {
            out.push_str(&format!("costop_step_duration_seconds_sum{{step=\"{kind}\"}} {sum}\ncostop_step_duration_seconds_count{{step=\"{kind}\"}} {count}\n"));
        }
        let (lists, bytes) = costop_core::listed::live();
        out.push_str(&format!("# HELP costop_view_lists_live Node and pod lists of cluster snapshots alive (the current one, and those responses and notices still read).\n# TYPE costop_view_lists_live gauge\ncostop_view_lists_live {lists}\n"));
        out.push_str(&format!("# HELP costop_view_list_bytes Bytes of those lists' own items: node rows, and pod row pointers (pod rows are shared between lists and not counted; nor are names or lookups).\n# TYPE costop_view_list_bytes gauge\ncostop_view_list_bytes {bytes}\n"));
        out.push_str("# HELP costop_notice_to_cordon_seconds From notice arrival to cordon.\n# TYPE costop_notice_to_cordon_seconds histogram\n");
        for (i, b) in BUCKETS.iter().enumerate() {
            out.push_str(&format!(
                "costop_notice_to_cordon_seconds_bucket{{le=\"{b}\"}} {}\n",
                inner.cordon_buckets[i]
            ));
        }
        out.push_str(&format!(
            "costop_notice_to_cordon_seconds_bucket{{le=\"+Inf\"}} {c}\ncostop_notice_to_cordon_seconds_sum {}\ncostop_notice_to_cordon_seconds_count {c}\n",
            inner.cordon_sum,
            c = inner.cordon_count
        ));
        out
    }
}

impl costop_executor::ResponseObserver for Metrics {
    fn step(&self, kind: &str, seconds: f64) {
        Metrics::step(self, kind, seconds);
    }

    fn notice_to_cordon(&self, seconds: f64) {
        Metrics::notice_to_cordon(self, seconds);
    }

    fn pods_left(&self, count: usize) {
        Metrics::pods_left(self, count);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = super::Metrics::default();
        m.notice("spot-interruption", "agent");
        m.notice_to_cordon(0.15);
        m.notice_to_cordon(3.0);
        m.step("taint-and-cordon", 0.01);
        let text = m.render();
        assert!(text.contains("costop_notices_total{kind=\"spot-interruption\",source=\"agent\"} 1"));
        assert!(text.contains("costop_notice_to_cordon_seconds_bucket{le=\"0.2\"} 1"));
        assert!(text.contains("costop_notice_to_cordon_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("costop_notice_to_cordon_seconds_count 2"));
        assert!(text.contains("costop_step_duration_seconds_count{step=\"taint-and-cordon\"} 1"));
        assert!(text.contains("costop_view_lists_live "));
    }
}
