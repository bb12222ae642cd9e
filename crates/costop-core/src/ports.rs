//! Ports: what the decisions need from the outside world, as traits. Each
//! has a real adapter (kube-rs, aws-sdk, Redis) and a simulated one.

use crate::model::ClusterView;
use crate::time::Millis;
use std::future::Future;

/// What came of an eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    /// The API server accepted it.
    Accepted {
        /// Requests made, the first included.
        attempts: u32,
    },
    /// The pod was already gone.
    AlreadyGone,
}

/// The Kubernetes side: observe the cluster and change it, never bypassing
/// the scheduler or disruption budgets.
pub trait ClusterPort {
    /// The adapter's error; it names the action and the object.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The cluster as last observed (watch-backed).
    fn view(&self) -> ClusterView;

    /// Cordon the node and add the `costop.io/interruption:NoSchedule` taint.
    fn taint_and_cordon(&self, node: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Take the `costop.io/standby` taint off a node (and uncordon it).
    fn untaint_standby(&self, node: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Put a node back on standby: cordon off, standby taint on.
    fn taint_standby(&self, node: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Evict a pod (`namespace/name`) through the eviction API, retrying
    /// with backoff while a budget refuses, until `deadline` (Unix ms).
    fn evict(&self, pod: &str, deadline: Millis)
        -> impl Future<Output = Result<Evicted, Self::Error>> + Send;

    /// Make the placeholder Deployment hold `count` pods (creating its
    /// negative PriorityClass and the Deployment when missing).
    fn scale_placeholders(&self, count: u32) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Delete these placeholder pods now and shrink the Deployment by as many.
    fn claim_placeholders(&self, pods: &[String]) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Delete a node object.
    fn delete_node(&self, node: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Record a Kubernetes Event on the node.
    fn node_event(
        &self,
        node: &str,
        reason: &str,
        message: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
