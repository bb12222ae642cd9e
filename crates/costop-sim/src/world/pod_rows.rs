//! The pod list of the world's snapshots ([`World::view`]), row by row: a
//! new snapshot builds only the rows of the pods that changed since the
//! last one and takes every other row from it.
//!
//! A row is a function of a few of its pod's fields (whether it is listed,
//! its generation, workload, node, readiness and volume): node names,
//! volume ids and zones and the workloads' fields a row shows never change
//! during a run. So two pods with the same [`RowKey`] have the same row,
//! and comparing keys (a few integers per pod) finds the changed rows
//! without building any. Most snapshots change a handful of the thousands
//! of pods; one in four changes none and reissues the last list whole.

use super::{Pod, PodState, World};
use costop_core::listed::Pods;
use costop_core::{PodView, VolumeView};

/// What one pod's row in a snapshot is made of. A pod not listed has the
/// default key, whatever its other fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RowKey {
    listed: bool,
    gen: u32,
    workload: u32,
    node: Option<u32>,
    ready: bool,
    volume: Option<u32>,
}

/// The keys of the rows of the last snapshot's pod list, by pod.
#[derive(Debug, Default)]
pub(super) struct PodRows {
    /// Key of each pod's row in the last list (pods past its end: not listed).
    keys: Vec<RowKey>,
    /// The pods whose rows changed, found by the snapshot being made
    /// (kept to reuse the buffer).
    changes: Vec<Change>,
}

/// A pod whose row changed since the last snapshot.
#[derive(Debug, Clone, Copy)]
struct Change {
    /// The pod.
    pod: u32,
    /// Position of its row in the last list, or of the row after it when
    /// it had none.
    at: u32,
    /// Whether it had a row in the last list.
    was_listed: bool,
}

impl World {
    /// The key of `pod`'s row: listed as the API lists pods, bound, running
    /// or pending, and the pods of a node gone without notice while its
    /// Node object lingers.
    #[inline]
    fn row_key(&self, pod: &Pod) -> RowKey {
        let shown = matches!(pod.state, PodState::Starting | PodState::Ready | PodState::Pending);
        let lingering = pod.state == PodState::Lost && pod.node.is_some_and(|n| self.lingering.contains(&n));
        if !shown && !lingering {
            return RowKey::default();
        }
        RowKey {
            listed: true,
            gen: pod.gen,
            workload: pod.workload,
            node: pod.node,
            ready: pod.state == PodState::Ready,
            volume: pod.volume,
        }
    }

    /// `pod`'s row, as the API shows it.
    fn pod_row(&self, pod: &Pod) -> PodView {
        let w = &self.workloads[pod.workload as usize];
        let node_name = pod.node.map(|n| self.nodes[n as usize].name.clone());
        PodView {
            name: pod.name.clone(),
            workload: Some(w.name.clone()),
            node: node_name.clone(),
            requests: w.requests,
            priority: w.priority,
            ready: pod.state == PodState::Ready,
            placeholder: w.placeholder,
            daemon: false,
            volumes: pod
                .volume
                .map(|v| VolumeView {
                    volume_id: self.volumes[v as usize].id.clone(),
                    zone: self.zones[self.volumes[v as usize].zone].clone(),
                    attached_to: node_name,
                })
                .into_iter()
                .collect(),
        }
    }

    /// The pods as the API lists them now, every row built.
    pub(super) fn fresh_pod_list(&self) -> Vec<PodView> {
        self.pods.iter().filter(|p| self.row_key(p).listed).map(|p| self.pod_row(p)).collect()
    }

    /// The pod list of a new snapshot, in the order of the world's pods,
    /// given `last`, the last snapshot's (built by this function, or none
    /// yet); and whether it is `last` reissued (no row changed). Only the
    /// changed rows are built; the runs of rows between them are copied
    /// from `last`.
    pub(super) fn pod_list(&mut self, last: Option<&Pods>) -> (Pods, bool) {
        let mut rows = std::mem::take(&mut self.pod_rows);
        let list = match last {
            None => {
                rows.keys.clear();
                rows.keys.extend(self.pods.iter().map(|p| self.row_key(p)));
                (self.fresh_pod_list().into(), false)
            }
            Some(last) => {
                self.find_changes(&mut rows);
                let (keys, changes) = (&rows.keys, &rows.changes);
                if changes.is_empty() {
                    (last.reissue(), true)
                } else if changes.iter().all(|c| c.was_listed && keys[c.pod as usize].listed) {
                    // No pod came or went: the rows stay where they were.
                    let replaced =
                        changes.iter().map(|c| (c.at as usize, self.pod_row(&self.pods[c.pod as usize])));
                    (last.with_rows(replaced.collect()), false)
                } else {
                    (self.edited_list(last, &rows), false)
                }
            }
        };
        self.pod_rows = rows;
        list
    }

    /// Note in `rows.changes` the pods whose rows changed since the keys in
    /// `rows.keys` were taken, in the world's order, and take their new keys.
    fn find_changes(&self, rows: &mut PodRows) {
        rows.keys.resize(self.pods.len(), RowKey::default());
        rows.changes.clear();
        let mut at = 0;
        for (i, (pod, kept)) in self.pods.iter().zip(rows.keys.iter_mut()).enumerate() {
            let (key, was_listed) = (self.row_key(pod), kept.listed);
            if key != *kept {
                rows.changes.push(Change { pod: i as u32, at, was_listed });
                *kept = key;
            }
            at += u32::from(was_listed);
        }
    }

    /// `last` with the rows of the changed pods in `rows` built anew
    /// (added, replaced or dropped), its lookups carried over.
    fn edited_list(&self, last: &Pods, rows: &PodRows) -> Pods {
        let mut items = Vec::with_capacity(last.len() + rows.changes.len());
        let (mut dropped, mut added) = (Vec::new(), Vec::new());
        // The first row of `last` not yet copied or dropped.
        let mut from = 0;
        for c in &rows.changes {
            let at = c.at as usize;
            items.extend_from_slice(&last[from..at]);
            if c.was_listed {
                dropped.push(c.at);
                from = at + 1;
            } else {
                from = at;
            }
            if rows.keys[c.pod as usize].listed {
                added.push(items.len() as u32);
                items.push(self.pod_row(&self.pods[c.pod as usize]));
            }
        }
        items.extend_from_slice(&last[from..]);
        last.edited(items, &dropped, &added)
    }
}
