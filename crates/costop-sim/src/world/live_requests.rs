//! The capacity requests a snapshot shows: those made for the live nodes
//! (a notice comes for a live node, so no other can matter to a plan; the
//! set of every launch ever made grows all run long).
//!
//! Looking each live node's key up among every request made cost a string
//! and a search per node per snapshot; the set changes only when a request
//! is made (requests are never taken back) or the live nodes change, so it
//! is kept until then.

use super::World;
use std::collections::BTreeSet;

/// The capacity requests of the live nodes, with what they were found from.
#[derive(Debug, Default)]
pub(super) struct LiveRequests {
    /// How many requests had been made.
    made: usize,
    /// The live nodes.
    live: Vec<u32>,
    /// The requests made for them ([`costop_core::respond::restore_key`]s).
    keys: BTreeSet<String>,
}

impl World {
    /// The capacity requests made for the live nodes.
    pub(super) fn live_capacity_requests(&mut self) -> BTreeSet<String> {
        let cached = &self.live_requests;
        if cached.made != self.capacity_requests.len() || cached.live != self.live {
            let keys = self.find_live_capacity_requests();
            self.live_requests =
                LiveRequests { made: self.capacity_requests.len(), live: self.live.clone(), keys };
        }
        self.live_requests.keys.clone()
    }

    /// The capacity requests made for the live nodes, looked up afresh.
    pub(super) fn find_live_capacity_requests(&self) -> BTreeSet<String> {
        self.live
            .iter()
            .map(|&i| costop_core::respond::restore_key(&self.nodes[i as usize].instance_id))
            .filter(|k| self.capacity_requests.contains(k))
            .collect()
    }
}
