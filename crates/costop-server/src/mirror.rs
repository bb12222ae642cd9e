//! The mirror: nodes, pods and pools written into the store for other
//! tools (`costop status`, dashboards), every [`MIRROR_ROUND`], by the
//! leader only.
//!
//! The first round writes everything; each later round writes what changed
//! since the round before and deletes what went. To know what changed, a
//! round keeps a [`Written`] digest of what it wrote (each object's name and
//! a hash of its JSON), not the snapshot it wrote from: on 150,000 pods a
//! snapshot's pod list is 18 MB, kept alive for the 10 s between rounds
//! while a burst makes new snapshots; the digest is 4.8 MB, its names
//! shared with the snapshots.

use crate::ServerState;
use costop_core::ports::{Clock, ClusterPort, StorePort};
use costop_core::{ClusterView, Name};
use costop_store::{AnyStore, StoreError};
use serde::Serialize;
use std::hash::Hasher;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// Time between mirror rounds.
pub const MIRROR_ROUND: Duration = Duration::from_secs(10);

/// Entries a changes round writes at once: a burst changes tens of
/// thousands of pods between two rounds, and their JSON (16 MB at 60,000
/// pods, measured with heaptrack in `costop bench burst`) is written a
/// batch at a time instead of held whole.
const MIRROR_BATCH: usize = 500;

/// What one kind's mirror holds after a round: each object's name with a
/// hash of the JSON written for it, in name order.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Written(Vec<(Name, u64)>);

impl Written {
    /// The digest of `hashed` (names and hashes, in any order).
    fn of(mut hashed: Vec<(Name, u64)>) -> Self {
        // Snapshots list their objects in name order already: one pass.
        hashed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Self(hashed)
    }

    /// The hash written for `name`, if it was written.
    fn get(&self, name: &str) -> Option<u64> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok().map(|i| self.0[i].1)
    }

    /// The names written.
    fn names(&self) -> impl Iterator<Item = &Name> {
        self.0.iter().map(|(n, _)| n)
    }
}

/// A hash of `value`'s JSON, computed as it is written out (no string is
/// built). Stable within the process, which is all a digest needs.
fn hash_json<T: Serialize>(value: &T) -> u64 {
    struct Hashing(std::collections::hash_map::DefaultHasher);
    impl std::io::Write for Hashing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut hashing = Hashing(std::collections::hash_map::DefaultHasher::new());
    // Our own types serialize without failing; a failure hashes what was
    // written so far, and the entry is written again next round at worst.
    let _ = serde_json::to_writer(&mut hashing, value);
    hashing.0.finish()
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The mirror loop: a round every [`MIRROR_ROUND`] while this replica
/// leads; after a failed round, or once leadership comes back, the next
/// round writes everything again.
pub(crate) async fn run(st: Arc<ServerState>, mut shutdown: watch::Receiver<bool>) {
    // The snapshot last written from, weakly (to skip a round when it is
    // still the current one), and the digests of what was written.
    let mut last: Option<(Weak<ClusterView>, Written, Written)> = None;
    loop {
        if st.is_leader() {
            let view = st.exec.cluster.view();
            let store = &st.exec.store;
            last = match last.take() {
                Some((seen, nodes, pods)) if std::ptr::eq(seen.as_ptr(), Arc::as_ptr(&view)) => {
                    Some((seen, nodes, pods))
                }
                before => {
                    let (nodes_before, pods_before) = match before {
                        Some((_, nodes, pods)) => (Some(nodes), Some(pods)),
                        None => (None, None),
                    };
                    let nodes =
                        write_kind(store, "nodes", &view.nodes, |n| &n.name, nodes_before.as_ref()).await;
                    let pods = write_kind(store, "pods", &view.pods, |p| &p.name, pods_before.as_ref()).await;
                    match (nodes, pods) {
                        (Ok(nodes), Ok(pods)) => Some((Arc::downgrade(&view), nodes, pods)),
                        (nodes, pods) => {
                            for (kind, e) in [("nodes", nodes.err()), ("pods", pods.err())] {
                                if let Some(e) = e {
                                    tracing::warn!(error = %e, kind, "mirror failed");
                                }
                            }
                            // After a failure, everything again.
                            None
                        }
                    }
                }
            };
            drop(view);
            let pools: Vec<(String, String)> =
                st.pools.views(st.exec.clock.now_ms()).iter().map(|p| (p.id.to_string(), json(p))).collect();
            if let Err(e) = store.mirror("pools", &pools).await {
                tracing::warn!(error = %e, kind = "pools", "mirror failed");
            }
        } else {
            last = None;
        }
        tokio::select! {
            _ = tokio::time::sleep(MIRROR_ROUND) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Mirror one kind of object (`items`, named by `name`): every entry when
/// nothing was written `before`, else the entries whose JSON changed since
/// (a batch at a time) and the deletion of the names gone. What the mirror
/// holds now.
pub(crate) async fn write_kind<T: Serialize + Sync>(
    store: &AnyStore,
    kind: &str,
    items: &[T],
    name: fn(&T) -> &Name,
    before: Option<&Written>,
) -> Result<Written, StoreError> {
    let hashes: Vec<u64> = items.iter().map(hash_json).collect();
    let now = Written::of(items.iter().zip(&hashes).map(|(x, h)| (name(x).clone(), *h)).collect());
    let Some(before) = before else {
        let mut chunks = items.chunks(MIRROR_BATCH);
        let next_batch = || {
            chunks
                .next()
                .map_or_else(Vec::new, |c| c.iter().map(|x| (name(x).to_string(), json(x))).collect())
        };
        store.mirror_in_batches(kind, next_batch).await?;
        return Ok(now);
    };
    let mut batch: Vec<(String, String)> = Vec::with_capacity(MIRROR_BATCH);
    for (x, h) in items.iter().zip(&hashes) {
        if before.get(name(x)) == Some(*h) {
            continue;
        }
        batch.push((name(x).to_string(), json(x)));
        if batch.len() == MIRROR_BATCH {
            store.mirror_changes(kind, &batch, &[]).await?;
            batch.clear();
        }
    }
    let gone: Vec<String> = before.names().filter(|n| now.get(n).is_none()).map(|n| n.to_string()).collect();
    store.mirror_changes(kind, &batch, &gone).await?;
    Ok(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Obj {
        name: Name,
        value: u32,
    }

    fn objs(range: std::ops::Range<u32>, value: impl Fn(u32) -> u32) -> Vec<Obj> {
        range.map(|i| Obj { name: format!("pod-{i:04}").into(), value: value(i) }).collect()
    }

    /// A changes round writes only what differs from the round before
    /// (1,100 changes: three batches) and deletes what is gone; the mirror
    /// ends equal to a full copy of the new state, and a round after it
    /// with nothing changed writes nothing.
    #[tokio::test]
    async fn a_changes_round_writes_what_changed_in_batches_and_deletes_what_went() {
        let store = AnyStore::Memory(costop_store::MemoryStore::new());
        let before = objs(0..1_200, |_| 1);
        let written = write_kind(&store, "pods", &before, |o| &o.name, None).await.unwrap();
        let AnyStore::Memory(memory) = &store else { unreachable!() };
        assert_eq!(memory.mirrored("pods").len(), 1_200);
        // Pods 0-1,099 change, 1,100-1,149 stay, 1,150-1,199 go; listed
        // out of name order, which the digest must not mind.
        let mut now = objs(0..1_150, |i| if i < 1_100 { 2 } else { 1 });
        now.reverse();
        let after = write_kind(&store, "pods", &now, |o| &o.name, Some(&written)).await.unwrap();
        let mirrored = memory.mirrored("pods");
        assert_eq!(mirrored.len(), 1_150);
        assert!(mirrored["pod-0000"].contains("\"value\":2"), "{}", mirrored["pod-0000"]);
        assert!(mirrored["pod-1099"].contains("\"value\":2"));
        assert!(mirrored["pod-1100"].contains("\"value\":1"));
        assert!(!mirrored.contains_key("pod-1150"));
        // The digest says what the store holds: a round with nothing
        // changed writes nothing (an entry changed behind its back stays).
        assert_eq!(after.0.len(), 1_150);
        memory.mirror_changes("pods", &[("pod-0000".into(), "tampered".into())], &[]);
        let unchanged = write_kind(&store, "pods", &now, |o| &o.name, Some(&after)).await.unwrap();
        assert_eq!(unchanged, after);
        assert_eq!(memory.mirrored("pods")["pod-0000"], "tampered");
    }

    /// Only the entries whose JSON differs are written again: an entry the
    /// mirror holds is overwritten in the store only when it changed.
    #[tokio::test]
    async fn an_unchanged_entry_is_not_written_again() {
        let store = AnyStore::Memory(costop_store::MemoryStore::new());
        let AnyStore::Memory(memory) = &store else { unreachable!() };
        let first = objs(0..3, |_| 1);
        let written = write_kind(&store, "pods", &first, |o| &o.name, None).await.unwrap();
        // Tamper with the stored copy of an unchanged entry: a round that
        // wrote it again would restore it.
        memory.mirror_changes("pods", &[("pod-0001".into(), "tampered".into())], &[]);
        let next = objs(0..3, |i| if i == 2 { 5 } else { 1 });
        write_kind(&store, "pods", &next, |o| &o.name, Some(&written)).await.unwrap();
        let mirrored = memory.mirrored("pods");
        assert_eq!(mirrored["pod-0001"], "tampered");
        assert!(mirrored["pod-0002"].contains("\"value\":5"));
    }
}
