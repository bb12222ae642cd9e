//! The pod list of the world's snapshots ([`World::view`]), row by row: a
//! new snapshot builds only the rows of the pods that changed since the
//! last one and takes every other row from it.
//!
//! A row is a function of a few of its pod's fields (whether it is listed,
//! its generation, workload, node, readiness and volume): node names,
//! volume ids and zones and the workloads' fields a row shows never change
//! during a run. So two pods with the same [`RowKey`] have the same row,
//! and comparing keys (a few integers per pod) finds the changed rows
//! without building any. Only the keys of the pods the world touched
//! since the last snapshot ([`PodRows::touch`]) are compared: over a
//! month the world holds twice as many pod slots as pods, and most
//! snapshots change a handful of them; one in four changes none and
//! reissues the last list whole.

use super::{Pod, PodState, World};
use costop_core::listed::Pods;
use costop_core::{PodView, VolumeView};
use std::sync::Arc;

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

/// The keys of the rows of the last snapshot's pod list, by pod, and the
/// pods touched since.
#[derive(Debug, Default)]
pub(super) struct PodRows {
    /// Key of each pod's row in the last list (pods past its end: not listed).
    keys: Vec<RowKey>,
    /// The pod of each row of the last list, ascending.
    pods: Vec<u32>,
    /// Pods whose rows may have changed since the last list.
    touched: Vec<u32>,
    /// Whether any pod's row may have changed: every key is looked at.
    touched_all: bool,
    /// The pods whose rows changed, found by the snapshot being made
    /// (kept to reuse the buffer).
    changes: Vec<Change>,
}

impl PodRows {
    /// Note that `pod`'s row may have changed (the world calls it wherever
    /// it changes a field a row shows; debug builds check every snapshot
    /// against a fresh list).
    pub(super) fn touch(&mut self, pod: u32) {
        if !self.touched_all {
            self.touched.push(pod);
            // A world whose views nobody reads would grow the list all run long.
            if self.touched.len() > self.keys.len().max(1024) {
                self.touch_all();
            }
        }
    }

    /// Note that any pod's row may have changed (a node's lost pods are
    /// listed while its Node object lingers).
    pub(super) fn touch_all(&mut self) {
        self.touched_all = true;
        self.touched.clear();
    }
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
                rows.pods.clear();
                rows.pods.extend((0..rows.keys.len() as u32).filter(|&i| rows.keys[i as usize].listed));
                (rows.touched_all, rows.touched) = (false, Vec::new());
                (self.fresh_pod_list().into(), false)
            }
            Some(last) => {
                self.find_changes(&mut rows);
                let (keys, changes) = (&rows.keys, &rows.changes);
                if changes.is_empty() {
                    (last.reissue(), true)
                } else if changes.iter().all(|c| c.was_listed && keys[c.pod as usize].listed) {
                    // No pod came or went: the rows stay where they were.
                    let replaced = changes
                        .iter()
                        .map(|c| (c.at as usize, Arc::new(self.pod_row(&self.pods[c.pod as usize]))));
                    (last.with_rows(replaced.collect()), false)
                } else {
                    (self.edited_list(last, &mut rows), false)
                }
            }
        };
        self.pod_rows = rows;
        list
    }

    /// Note in `rows.changes` the pods whose rows changed since the keys in
    /// `rows.keys` were taken, in the world's order, and take their new
    /// keys: of the pods touched since, or of all when all were.
    fn find_changes(&self, rows: &mut PodRows) {
        rows.keys.resize(self.pods.len(), RowKey::default());
        rows.changes.clear();
        if std::mem::take(&mut rows.touched_all) {
            rows.touched.clear();
            let mut at = 0;
            for (i, (pod, kept)) in self.pods.iter().zip(rows.keys.iter_mut()).enumerate() {
                let (key, was_listed) = (self.row_key(pod), kept.listed);
                if key != *kept {
                    rows.changes.push(Change { pod: i as u32, at, was_listed });
                    *kept = key;
                }
                at += u32::from(was_listed);
            }
            return;
        }
        rows.touched.sort_unstable();
        rows.touched.dedup();
        for &i in &rows.touched {
            let (key, kept) = (self.row_key(&self.pods[i as usize]), &mut rows.keys[i as usize]);
            if key != *kept {
                let at = rows.pods.partition_point(|&p| p < i) as u32;
                rows.changes.push(Change { pod: i, at, was_listed: kept.listed });
                *kept = key;
            }
        }
        rows.touched.clear();
    }

    /// `last` with the rows of the changed pods in `rows` built anew
    /// (added, replaced or dropped), its lookups carried over.
    fn edited_list(&self, last: &Pods, rows: &mut PodRows) -> Pods {
        let mut items = Vec::with_capacity(last.len() + rows.changes.len());
        let mut pods = Vec::with_capacity(items.capacity());
        let (mut dropped, mut added) = (Vec::new(), Vec::new());
        // The first row of `last` not yet copied or dropped.
        let mut from = 0;
        for c in &rows.changes {
            let at = c.at as usize;
            items.extend_from_slice(&last[from..at]);
            pods.extend_from_slice(&rows.pods[from..at]);
            if c.was_listed {
                dropped.push(c.at);
                from = at + 1;
            } else {
                from = at;
            }
            if rows.keys[c.pod as usize].listed {
                added.push(items.len() as u32);
                items.push(Arc::new(self.pod_row(&self.pods[c.pod as usize])));
                pods.push(c.pod);
            }
        }
        items.extend_from_slice(&last[from..]);
        pods.extend_from_slice(&rows.pods[from..]);
        rows.pods = pods;
        last.edited(items, &dropped, &added)
    }
}
