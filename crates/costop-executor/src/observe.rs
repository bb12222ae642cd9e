//! What the executor reports as it runs: the server turns it into
//! Prometheus metrics, the simulator into its statistics.

/// Receives the executor's measurements.
pub trait ResponseObserver: Send + Sync {
    /// A step of kind `kind` finished after `seconds`.
    fn step(&self, kind: &str, seconds: f64);
    /// A node was tainted and cordoned `seconds` after its notice arrived.
    fn notice_to_cordon(&self, seconds: f64);
    /// `count` pods were left on a doomed node: their budget allowed no
    /// disruption (the plan left them) or refused every eviction until the
    /// deadline.
    fn pods_left(&self, count: usize) {
        let _ = count;
    }
}

/// An observer that keeps nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl ResponseObserver for NoObserver {
    fn step(&self, _kind: &str, _seconds: f64) {}
    fn notice_to_cordon(&self, _seconds: f64) {}
}
