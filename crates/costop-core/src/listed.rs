//! [`Listed`]: the nodes and pods of a [`crate::ClusterView`], shared
//! between snapshots, with lookups built once per snapshot.
//!
//! A server's view of a 150,000-pod cluster is read by every notice of a
//! burst and by every response's wait loop. Copying it (to add the pools
//! or the claims of the open responses) and scanning every pod for each
//! question (which pods are on this node, how much room is left on each
//! node, how many pods of this workload are Ready) made one plan cost tens
//! of milliseconds. A `Listed` is shared behind a reference count, so a
//! copy is free; its lookups ([`PodIndex`], [`NodeIndex`]) are built on
//! first use and shared by every copy; and a change (any `&mut` access)
//! first makes the list its own (copy on write) and drops its lookups, so
//! they can never describe a list they were not built from.
//!
//! A list is also one snapshot's list ([`Listed::same`]): caches keyed on
//! it hold while the snapshot does. A new snapshot that finds nothing
//! changed takes a [`Listed::reissue`] of the last one's list: the items
//! and lookups are shared, not made again, but it is a list of its own.

use crate::model::{NodeView, PodView, Resources};
use crate::name::Name;
use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Lists alive in this process, and the bytes of their items when made.
static LIVE_LISTS: AtomicUsize = AtomicUsize::new(0);
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
/// The last identity given to a list (see [`Listed::same`]).
static LAST_IDENTITY: AtomicU64 = AtomicU64::new(0);

fn new_identity() -> u64 {
    LAST_IDENTITY.fetch_add(1, Ordering::Relaxed) + 1
}

/// How many lists (of any snapshot or copy, nodes and pods) are alive in
/// this process, and the bytes their items took when each was made (a
/// server's gauge): for a pod list, its row pointers only, not the rows
/// that lists share ([`Pods`]); what the snapshots kept alive by their
/// readers cost on top of one set of rows.
pub fn live() -> (usize, usize) {
    (LIVE_LISTS.load(Ordering::Relaxed), LIVE_BYTES.load(Ordering::Relaxed))
}

/// Lookups derived from a list, built in one pass over it.
pub trait Lookups<T>: Sized {
    /// The lookups of `items`.
    fn build(items: &[T]) -> Self;
}

/// A list shared between copies, with lookups of type `I` built on first
/// use (see the module's documentation).
pub struct Listed<T, I> {
    inner: Arc<Inner<T, I>>,
    /// Which list this is: shared by its copies ([`Clone`]), new for a
    /// [`Listed::reissue`] and for a list changed out of a shared one.
    /// Copies with one identity always share `inner`.
    identity: u64,
}

struct Inner<T, I> {
    items: Vec<T>,
    lookups: OnceLock<I>,
    /// The bytes counted in [`live`] for it.
    counted: usize,
}

impl<T, I> Inner<T, I> {
    fn new(items: Vec<T>) -> Self {
        let counted = items.len() * std::mem::size_of::<T>();
        LIVE_LISTS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(counted, Ordering::Relaxed);
        Self { items, lookups: OnceLock::new(), counted }
    }
}

impl<T, I> Drop for Inner<T, I> {
    fn drop(&mut self) {
        LIVE_LISTS.fetch_sub(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(self.counted, Ordering::Relaxed);
    }
}

impl<T: Clone, I> Clone for Inner<T, I> {
    /// Only [`Arc::make_mut`] clones an `Inner`, to change it: the lookups
    /// are not carried over.
    fn clone(&self) -> Self {
        Self::new(self.items.clone())
    }
}

impl<T, I: Lookups<T>> Listed<T, I> {
    /// The lookups, built now if no copy of this list has built them yet.
    pub fn lookups(&self) -> &I {
        self.inner.lookups.get_or_init(|| I::build(&self.inner.items))
    }
}

impl<T, I> Listed<T, I> {
    /// Whether `other` is a copy of this list (shares it), not only equal
    /// (a [`Listed::reissue`] is not).
    pub fn same(&self, other: &Self) -> bool {
        self.identity == other.identity
    }

    /// Which list this is ([`Listed::same`] lists have one id, and no two
    /// lists alive at once share one): kept where only "is it still that
    /// list?" is asked, so an old snapshot's items are not kept alive.
    pub fn id(&self) -> u64 {
        self.identity
    }

    /// A list of its own (not [`Listed::same`] as this one) with this
    /// one's items and lookups, shared rather than copied: what a new
    /// snapshot in which nothing of the list changed holds.
    pub fn reissue(&self) -> Self {
        Self { inner: self.inner.clone(), identity: new_identity() }
    }

    /// Whether the lookups are built (a snapshot's publisher builds them
    /// before handing it out, so no reader pays for them).
    pub fn has_lookups(&self) -> bool {
        self.inner.lookups.get().is_some()
    }
}

impl<T, I> Clone for Listed<T, I> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), identity: self.identity }
    }
}

impl<T, I> Default for Listed<T, I> {
    fn default() -> Self {
        Vec::new().into()
    }
}

impl<T, I> From<Vec<T>> for Listed<T, I> {
    fn from(items: Vec<T>) -> Self {
        Self { inner: Arc::new(Inner::new(items)), identity: new_identity() }
    }
}

impl From<Vec<PodView>> for Pods {
    /// Each pod behind a reference count of its own (see [`Pods`]).
    fn from(pods: Vec<PodView>) -> Self {
        pods.into_iter().collect()
    }
}

impl FromIterator<PodView> for Pods {
    /// Each pod behind a reference count of its own (see [`Pods`]).
    fn from_iter<It: IntoIterator<Item = PodView>>(iter: It) -> Self {
        iter.into_iter().map(Arc::new).collect::<Vec<_>>().into()
    }
}

impl<T, I> FromIterator<T> for Listed<T, I> {
    fn from_iter<It: IntoIterator<Item = T>>(iter: It) -> Self {
        iter.into_iter().collect::<Vec<T>>().into()
    }
}

impl<T, I> Deref for Listed<T, I> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.inner.items
    }
}

impl<T: Clone, I> DerefMut for Listed<T, I> {
    /// The list to change: copied first if another snapshot shares it; its
    /// lookups are dropped (they are built again on next use).
    fn deref_mut(&mut self) -> &mut Vec<T> {
        let inner = self.make_own();
        inner.lookups = OnceLock::new();
        &mut inner.items
    }
}

impl<T: Clone, I> Listed<T, I> {
    /// The items and lookups to change, copied first (as a new list) if
    /// another list shares them.
    fn make_own(&mut self) -> &mut Inner<T, I> {
        if Arc::get_mut(&mut self.inner).is_none() {
            self.identity = new_identity();
        }
        Arc::make_mut(&mut self.inner)
    }
}

impl<'a, T, I> IntoIterator for &'a Listed<T, I> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.inner.items.iter()
    }
}

impl<T: PartialEq, I> PartialEq for Listed<T, I> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.items == other.inner.items
    }
}

impl<T: std::fmt::Debug, I> std::fmt::Debug for Listed<T, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.items.fmt(f)
    }
}

impl<T: Serialize, I> Serialize for Listed<T, I> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.items.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>, I> Deserialize<'de> for Listed<T, I> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(d).map(Into::into)
    }
}

/// Lookups of a node list: by name and by instance id.
#[derive(Debug, Default)]
pub struct NodeIndex {
    by_name: HashMap<Name, u32>,
    by_instance: HashMap<Name, u32>,
}

impl Lookups<NodeView> for NodeIndex {
    fn build(nodes: &[NodeView]) -> Self {
        let mut index = NodeIndex::default();
        // The first of two nodes of one name (or instance) wins, as a scan would find it.
        for (i, n) in nodes.iter().enumerate().rev() {
            index.by_name.insert(n.name.clone(), i as u32);
            if !n.instance_id.is_empty() {
                index.by_instance.insert(n.instance_id.clone(), i as u32);
            }
        }
        index
    }
}

impl NodeIndex {
    /// Position of the node of this name.
    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).map(|i| *i as usize)
    }

    /// Position of the node of this instance id.
    pub fn by_instance(&self, instance_id: &str) -> Option<usize> {
        self.by_instance.get(instance_id).map(|i| *i as usize)
    }
}

/// Lookups of a pod list: pods by node with each node's requested
/// resources, Ready pods per workload, pods bound nowhere, placeholders;
/// and pods by name (built on its first use: only some readers want it).
#[derive(Debug, Default)]
pub struct PodIndex {
    on_node: HashMap<Name, (Vec<u32>, Resources)>,
    ready: HashMap<Name, usize>,
    unbound: Vec<u32>,
    placeholders: Vec<u32>,
    /// Shared by the copies a change makes while no name changes.
    by_name: OnceLock<ByName>,
}

/// How a pod list finds a pod by name: a binary search when the list is in
/// name order (the server's snapshots are: its cache keeps pods by name, and
/// a map of 151,000 names was 6.5 MB for each snapshot alive), a map of
/// names to positions otherwise.
#[derive(Debug, Clone)]
enum ByName {
    Sorted,
    Map(Arc<HashMap<Name, u32>>),
}

impl Lookups<Arc<PodView>> for PodIndex {
    fn build(pods: &[Arc<PodView>]) -> Self {
        let mut index = PodIndex::default();
        for (i, p) in pods.iter().enumerate() {
            let i = i as u32;
            match &p.node {
                Some(node) => match index.on_node.get_mut(node.as_str()) {
                    Some((on, used)) => {
                        on.push(i);
                        *used = used.plus(&p.requests);
                    }
                    None => {
                        index.on_node.insert(node.clone(), (vec![i], p.requests));
                    }
                },
                None => index.unbound.push(i),
            }
            if p.placeholder {
                index.placeholders.push(i);
            }
            if let Some(w) = p.workload.as_ref().filter(|_| p.ready) {
                match index.ready.get_mut(w.as_str()) {
                    Some(n) => *n += 1,
                    None => {
                        index.ready.insert(w.clone(), 1);
                    }
                }
            }
        }
        index
    }
}

impl PodIndex {
    /// Position of the first pod of this name in `pods`, the list these
    /// lookups were built from.
    pub fn by_name(&self, pods: &[Arc<PodView>], name: &str) -> Option<usize> {
        let by_name = self.by_name.get_or_init(|| {
            if pods.windows(2).all(|w| w[0].name <= w[1].name) {
                return ByName::Sorted;
            }
            let mut map: HashMap<Name, u32> = HashMap::default();
            map.reserve(pods.len());
            for (i, p) in pods.iter().enumerate() {
                map.entry(p.name.clone()).or_insert(i as u32);
            }
            ByName::Map(Arc::new(map))
        });
        match by_name {
            ByName::Sorted => {
                let first = pods.partition_point(|p| p.name.as_str() < name);
                pods.get(first).is_some_and(|p| p.name == name).then_some(first)
            }
            ByName::Map(map) => map.get(name).map(|i| *i as usize),
        }
    }

    /// Positions of the pods bound to `node`, in list order.
    pub fn on_node(&self, node: &str) -> &[u32] {
        self.on_node.get(node).map_or(&[], |(on, _)| on.as_slice())
    }

    /// Requests of the pods bound to `node`, added up.
    pub fn used(&self, node: &str) -> Resources {
        self.on_node.get(node).map_or_else(Resources::default, |(_, used)| *used)
    }

    /// Ready pods of `workload`.
    pub fn ready(&self, workload: &str) -> usize {
        self.ready.get(workload).copied().unwrap_or(0)
    }

    /// Positions of the pods bound to no node, in list order.
    pub fn unbound(&self) -> &[u32] {
        &self.unbound
    }

    /// Positions of the placeholders, in list order.
    pub fn placeholders(&self) -> &[u32] {
        &self.placeholders
    }
}

impl Pods {
    /// Unbind the pods of these names, as their evictions do (bound to no
    /// node, not Ready, their volumes detached), keeping the lookups up to
    /// date instead of dropping them: planning on a view with the other
    /// responses' evictions applied costs a copy of the list, not a new
    /// pass over it. A list with none of these pods bound or Ready is not
    /// copied at all.
    pub fn unbind(&mut self, names: &rustc_hash::FxHashSet<&str>) {
        let found: Vec<usize> = match self.inner.lookups.get() {
            Some(index) => names.iter().filter_map(|n| index.by_name(&self.inner.items, n)).collect(),
            None => (0..self.len()).filter(|i| names.contains(self[*i].name.as_str())).collect(),
        };
        let changes =
            |p: &PodView| p.node.is_some() || p.ready || p.volumes.iter().any(|v| v.attached_to.is_some());
        let found: Vec<usize> = found.into_iter().filter(|i| changes(&self[*i])).collect();
        if found.is_empty() {
            return;
        }
        let index = self.inner.lookups.get().map(PodIndex::copy);
        let inner = self.make_own();
        let mut index = index;
        // Newly unbound positions, merged into the sorted list once (one
        // insertion each moved the list for every pod: the plan bench's
        // 1,700 open responses, 51,000 evictions, took 151 ms, now 67 ms).
        let mut unbound: Vec<u32> = Vec::new();
        for i in found {
            // Only these pods are copied (the others stay shared).
            let pod = Arc::make_mut(&mut inner.items[i]);
            if let (Some(node), Some(index)) = (pod.node.as_ref(), index.as_mut()) {
                if let Some((on, used)) = index.on_node.get_mut(node.as_str()) {
                    on.retain(|p| *p as usize != i);
                    *used = used.minus(&pod.requests);
                }
                unbound.push(i as u32);
            }
            if let (true, Some(w), Some(index)) = (pod.ready, pod.workload.as_ref(), index.as_mut()) {
                if let Some(n) = index.ready.get_mut(w.as_str()) {
                    *n = n.saturating_sub(1);
                }
            }
            pod.node = None;
            pod.ready = false;
            for v in &mut pod.volumes {
                v.attached_to = None;
            }
        }
        if let Some(index) = index.as_mut() {
            // Two sorted runs: the stable sort finds them and merges them.
            index.unbound.extend(unbound);
            index.unbound.sort();
        }
        inner.lookups = index.map(OnceLock::from).unwrap_or_default();
    }
}

impl Pods {
    /// A list of its own (not [`Listed::same`] as this one) with the rows
    /// at these positions replaced: what a new snapshot holds when some
    /// pods changed but none came or went. The items are copied; lookups
    /// this list has built are patched for the replaced rows, not built
    /// again (one snapshot after another changes a few of thousands of
    /// pods, and every waiting response reads the lookups of each).
    pub fn with_rows(&self, rows: Vec<(usize, Arc<PodView>)>) -> Self {
        let mut items = self.inner.items.clone();
        let mut index = self.inner.lookups.get().map(PodIndex::copy);
        for (i, row) in rows {
            if let Some(index) = index.as_mut() {
                index.replace(i as u32, &items[i], &row);
            }
            items[i] = row;
        }
        let inner = Inner::new(items);
        if let Some(index) = index {
            let _ = inner.lookups.set(index);
        }
        Self { inner: Arc::new(inner), identity: new_identity() }
    }
}

impl Pods {
    /// A list of its own made of `items`, which are this list's rows but
    /// for those at `dropped` (positions in this list) and with those at
    /// `added` (positions in `items`) put in, both ascending; every other
    /// row kept, in its order. Lookups this list has built are carried over
    /// (positions renumbered, the dropped and added rows' share patched),
    /// not built again: what a new snapshot holds when pods came or went.
    pub fn edited(&self, items: Vec<Arc<PodView>>, dropped: &[u32], added: &[u32]) -> Self {
        let index = self.inner.lookups.get().map(|index| {
            let mut index = index.copy();
            for &d in dropped {
                index.take_out(d, &self.inner.items[d as usize]);
            }
            index.renumber(&new_positions(self.len(), items.len(), dropped, added));
            for &a in added {
                index.put_in(a, &items[a as usize]);
            }
            index.by_name = OnceLock::new();
            index
        });
        let inner = Inner::new(items);
        if let Some(index) = index {
            let _ = inner.lookups.set(index);
        }
        Self { inner: Arc::new(inner), identity: new_identity() }
    }
}

/// Where each row of a list of `old_len` rows is in the list made from it
/// by dropping the rows at `dropped` and putting rows in at `added` (see
/// [`Listed::edited`]); dropped rows map to `u32::MAX`.
fn new_positions(old_len: usize, new_len: usize, dropped: &[u32], added: &[u32]) -> Vec<u32> {
    let mut map = vec![u32::MAX; old_len];
    let (mut dropped, mut added) = (dropped.iter().peekable(), added.iter().peekable());
    let mut new = 0u32;
    for (old, slot) in map.iter_mut().enumerate() {
        if dropped.next_if(|&&d| d as usize == old).is_some() {
            continue;
        }
        while added.next_if(|&&a| a == new).is_some() {
            new += 1;
        }
        *slot = new;
        new += 1;
    }
    debug_assert!(new as usize + added.count() == new_len);
    map
}

impl PodIndex {
    /// A copy to change (pods by name are looked up again on first use).
    fn copy(&self) -> Self {
        PodIndex {
            on_node: self.on_node.clone(),
            ready: self.ready.clone(),
            unbound: self.unbound.clone(),
            placeholders: self.placeholders.clone(),
            by_name: self.by_name.clone(),
        }
    }
}

impl PodIndex {
    /// Take the share of `pod`, the row at `i`, out of the lookups (pods by
    /// name aside).
    fn take_out(&mut self, i: u32, pod: &PodView) {
        match &pod.node {
            Some(node) => {
                if let Some((on, used)) = self.on_node.get_mut(node.as_str()) {
                    remove_sorted(on, i);
                    *used = used.minus(&pod.requests);
                    if on.is_empty() {
                        self.on_node.remove(node.as_str());
                    }
                }
            }
            None => remove_sorted(&mut self.unbound, i),
        }
        if let Some(w) = pod.workload.as_ref().filter(|_| pod.ready) {
            if let Some(n) = self.ready.get_mut(w.as_str()) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.ready.remove(w.as_str());
                }
            }
        }
        if pod.placeholder {
            remove_sorted(&mut self.placeholders, i);
        }
    }

    /// Put the share of `pod`, the row at `i`, into the lookups (pods by
    /// name aside).
    fn put_in(&mut self, i: u32, pod: &PodView) {
        match &pod.node {
            Some(node) => match self.on_node.get_mut(node.as_str()) {
                Some((on, used)) => {
                    insert_sorted(on, i);
                    *used = used.plus(&pod.requests);
                }
                None => {
                    self.on_node.insert(node.clone(), (vec![i], pod.requests));
                }
            },
            None => insert_sorted(&mut self.unbound, i),
        }
        if let Some(w) = pod.workload.as_ref().filter(|_| pod.ready) {
            *self.ready.entry(w.clone()).or_default() += 1;
        }
        if pod.placeholder {
            insert_sorted(&mut self.placeholders, i);
        }
    }

    /// Move every position `p` held to `to[p]` (an order-keeping map).
    fn renumber(&mut self, to: &[u32]) {
        let lists = self.on_node.values_mut().map(|(on, _)| on);
        for list in lists.chain([&mut self.unbound, &mut self.placeholders]) {
            for p in list.iter_mut() {
                *p = to[*p as usize];
            }
        }
    }

    /// Patch the lookups for the row at `i` going from `old` to `new`, as
    /// a build on the list with `new` at `i` would make them.
    fn replace(&mut self, i: u32, old: &PodView, new: &PodView) {
        self.take_out(i, old);
        self.put_in(i, new);
        if old.name != new.name {
            self.by_name = OnceLock::new();
        }
    }
}

/// Take `i` out of the ascending `list`, if there.
fn remove_sorted(list: &mut Vec<u32>, i: u32) {
    if let Ok(at) = list.binary_search(&i) {
        list.remove(at);
    }
}

/// Put `i` into the ascending `list`, if not there.
fn insert_sorted(list: &mut Vec<u32>, i: u32) {
    if let Err(at) = list.binary_search(&i) {
        list.insert(at, i);
    }
}

/// The pods of a view, each row behind a reference count of its own:
/// snapshots share the rows of the pods that did not change between them
/// (the server's and the simulator's builders keep them), so the few
/// snapshots alive at once in a burst hold one row per pod between them,
/// not one each (a row is 120 bytes: 18 MB a list at 151,000 pods). A
/// change copies only the rows it changes ([`Arc::make_mut`]).
pub type Pods = Listed<Arc<PodView>, PodIndex>;
/// The nodes of a view.
pub type Nodes = Listed<NodeView, NodeIndex>;

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, workload: &str, ready: bool) -> PodView {
        PodView {
            name: name.into(),
            workload: Some(workload.into()),
            node: node.map(Into::into),
            requests: Resources::new(100, 10),
            priority: 0,
            ready,
            placeholder: false,
            daemon: false,
            volumes: vec![],
        }
    }

    #[test]
    fn copies_share_lookups_and_a_change_drops_them() {
        let pods: Pods = vec![pod("a", Some("n1"), "w", true), pod("b", Some("n1"), "w", false)].into();
        assert_eq!(pods.lookups().used("n1"), Resources::new(200, 20));
        let copy = pods.clone();
        assert!(copy.has_lookups(), "a copy shares the built lookups");
        let mut changed = copy.clone();
        Arc::make_mut(&mut changed[0]).node = None;
        assert!(!changed.has_lookups());
        assert_eq!(changed.lookups().used("n1"), Resources::new(100, 10));
        assert_eq!(changed.lookups().unbound(), &[0]);
        // The others are untouched.
        assert_eq!(copy.lookups().used("n1"), Resources::new(200, 20));
        assert_eq!(pods[0].node.as_deref(), Some("n1"));
        assert_eq!(pods.lookups().ready("w"), 1);
        assert_eq!(pods.lookups().on_node("n1"), &[0, 1]);
        assert_eq!(pods.lookups().by_name(&pods, "b"), Some(1));
    }

    #[test]
    fn pods_are_found_by_name_in_name_order_and_out_of_it() {
        let names =
            |names: &[&str]| -> Pods { names.iter().map(|n| pod(n, Some("n1"), "w", true)).collect() };
        // In name order (as the server's snapshots are), repeats included:
        // the first of a name, and no map.
        let sorted = names(&["a", "b", "b", "d"]);
        let found = |pods: &Pods, n| pods.lookups().by_name(pods, n);
        assert_eq!(
            ["a", "b", "c", "d", "e", ""].map(|n| found(&sorted, n)),
            [Some(0), Some(1), None, Some(3), None, None]
        );
        assert!(matches!(sorted.lookups().by_name.get(), Some(ByName::Sorted)));
        // Out of order: a map, with the same answers.
        let unsorted = names(&["d", "b", "a", "b"]);
        assert_eq!(
            ["a", "b", "c", "d", "e", ""].map(|n| found(&unsorted, n)),
            [Some(2), Some(1), None, Some(0), None, None]
        );
        assert!(matches!(unsorted.lookups().by_name.get(), Some(ByName::Map(_))));
    }

    #[test]
    fn a_reissue_shares_items_and_lookups_but_is_a_list_of_its_own() {
        let pods: Pods = vec![pod("a", Some("n1"), "w", true)].into();
        pods.lookups();
        let again = pods.reissue();
        assert!(!again.same(&pods) && again.same(&again.clone()));
        assert!(again.has_lookups() && Arc::ptr_eq(&again.inner, &pods.inner), "nothing copied");
        assert_eq!(again, pods);
        // A change copies it, and leaves the first untouched.
        let mut changed = again.clone();
        Arc::make_mut(&mut changed[0]).ready = false;
        assert!(!changed.same(&again) && !changed.same(&pods));
        assert!(pods[0].ready && again[0].ready && pods.has_lookups());
        // A list no other shares changes in place and stays itself.
        let before = changed.clone();
        drop(before);
        let mut alone = changed;
        let id = alone.identity;
        Arc::make_mut(&mut alone[0]).ready = true;
        assert_eq!(alone.identity, id);
    }

    #[test]
    fn unbinding_keeps_the_lookups_as_a_new_build_would_make_them() {
        let pods: Pods = vec![
            pod("a", Some("n1"), "w", true),
            pod("b", Some("n1"), "w", true),
            pod("c", None, "w", false),
            pod("d", Some("n2"), "v", true),
        ]
        .into();
        pods.lookups();
        let names: rustc_hash::FxHashSet<&str> = ["b", "d", "missing"].into_iter().collect();
        let mut changed = pods.clone();
        changed.unbind(&names);
        assert!(changed.has_lookups(), "kept up to date, not dropped");
        let fresh = PodIndex::build(&changed);
        let kept = changed.lookups();
        same_lookups(&changed, kept, &fresh);
        assert_eq!(kept.unbound(), &[1, 2, 3]);
        assert_eq!((kept.ready("w"), kept.ready("v")), (1, 0));
        assert_eq!(pods[1].node.as_deref(), Some("n1"), "the list it was copied from is untouched");
        // Nothing left to change: no copy.
        let mut again = changed.clone();
        again.unbind(&names);
        assert!(Arc::ptr_eq(&again.inner, &changed.inner));
        // Without lookups, the same pods change.
        let mut plain: Pods = pods.iter().cloned().collect::<Vec<_>>().into();
        plain.unbind(&names);
        assert_eq!(plain, changed);
    }

    /// The lookups `kept` answer as `fresh` do, for these nodes and workloads.
    fn same_lookups(pods: &Pods, kept: &PodIndex, fresh: &PodIndex) {
        for node in ["n1", "n2", "n3"] {
            assert_eq!(kept.on_node(node), fresh.on_node(node), "{node}");
            assert_eq!(kept.used(node), fresh.used(node), "{node}");
        }
        for w in ["w", "v"] {
            assert_eq!(kept.ready(w), fresh.ready(w), "{w}");
        }
        assert_eq!(kept.unbound(), fresh.unbound());
        assert_eq!(kept.placeholders(), fresh.placeholders());
        for p in pods.iter() {
            assert_eq!(kept.by_name(pods, &p.name), fresh.by_name(pods, &p.name), "{}", p.name);
        }
    }

    #[test]
    fn replaced_rows_keep_the_lookups_as_a_new_build_would_make_them() {
        let pods: Pods = vec![
            pod("a", Some("n1"), "w", true),
            pod("b", Some("n1"), "w", false),
            pod("c", None, "w", false),
            pod("d", Some("n2"), "v", true),
        ]
        .into();
        pods.lookups().by_name(&pods, "a");
        let mut placeholder = pod("c", Some("n3"), "w", true);
        placeholder.placeholder = true;
        let rows = vec![
            (0, pod("a", None, "w", false)),
            (1, pod("b", Some("n1"), "w", true)),
            (2, placeholder),
            (3, pod("e", Some("n2"), "v", false)),
        ];
        let changed = pods.with_rows(rows.iter().map(|(i, p)| (*i, Arc::new(p.clone()))).collect());
        assert!(changed.has_lookups(), "patched, not dropped");
        assert!(!changed.same(&pods));
        let expected: Vec<PodView> = rows.into_iter().map(|(_, p)| p).collect();
        assert!(changed.iter().map(|p| &**p).eq(expected.iter()));
        same_lookups(&changed, changed.lookups(), &PodIndex::build(&changed));
        assert_eq!(changed.lookups().on_node("n1"), &[1]);
        assert_eq!(pods[0].node.as_deref(), Some("n1"), "the list it was copied from is untouched");
        same_lookups(&pods, pods.lookups(), &PodIndex::build(&pods));
        // Without lookups built, none are made.
        let plain: Pods = pods.iter().cloned().collect::<Vec<_>>().into();
        assert!(!plain.with_rows(vec![(0, Arc::new(pod("a", None, "w", false)))]).has_lookups());
    }

    proptest::proptest! {
        #[test]
        fn any_replaced_rows_keep_the_lookups_right(
            start in proptest::collection::vec((0..4usize, proptest::bool::ANY, 0..2usize), 1..30),
            changes in proptest::collection::vec((0..30usize, 0..4usize, proptest::bool::ANY, 0..2usize), 0..20),
        ) {
            let nodes = [None, Some("n1"), Some("n2"), Some("n3")];
            let row = |i: usize, node: usize, ready: bool, w: usize| {
                pod(&format!("p{i}"), nodes[node], ["w", "v"][w], ready)
            };
            let pods: Pods = start.iter().enumerate().map(|(i, &(n, r, w))| row(i, n, r, w)).collect();
            pods.lookups();
            // Each position once, ascending, as a snapshot hands them.
            let rows: std::collections::BTreeMap<usize, PodView> = changes
                .iter()
                .filter(|c| c.0 < pods.len())
                .map(|&(i, n, r, w)| (i, row(i, n, r, w)))
                .collect();
            let changed = pods.with_rows(rows.into_iter().map(|(i, p)| (i, Arc::new(p))).collect());
            same_lookups(&changed, changed.lookups(), &PodIndex::build(&changed));
        }
    }

    proptest::proptest! {
        #[test]
        fn lists_with_rows_dropped_and_added_keep_the_lookups_right(
            start in proptest::collection::vec((0..4usize, proptest::bool::ANY, 0..2usize, proptest::bool::ANY), 0..30),
            new_rows in proptest::collection::vec((0..4usize, proptest::bool::ANY, 0..2usize, proptest::bool::ANY, 0..40usize), 0..10),
        ) {
            let nodes = [None, Some("n1"), Some("n2"), Some("n3")];
            let row = |name: String, node: usize, ready: bool, w: usize, placeholder: bool| PodView {
                placeholder,
                ..pod(&name, nodes[node], ["w", "v"][w], ready)
            };
            let pods: Pods =
                start.iter().enumerate().map(|(i, &(n, r, w, ph))| row(format!("p{i}"), n, r, w, ph)).collect();
            pods.lookups().by_name(&pods, "p0");
            // Rows whose readiness flag is set are dropped; new rows go in
            // before the old row their last field names (or at the end).
            let dropped: Vec<u32> = (0..pods.len() as u32).filter(|&i| start[i as usize].1 && i % 3 == 0).collect();
            let (mut items, mut added) = (Vec::new(), Vec::new());
            for old in 0..=pods.len() {
                for (k, &(n, r, w, ph, before)) in new_rows.iter().enumerate() {
                    if before.min(pods.len()) == old {
                        added.push(items.len() as u32);
                        items.push(Arc::new(row(format!("new{k}"), n, r, w, ph)));
                    }
                }
                if old < pods.len() && !dropped.contains(&(old as u32)) {
                    items.push(pods[old].clone());
                }
            }
            let edited = pods.edited(items.clone(), &dropped, &added);
            proptest::prop_assert_eq!(&*edited, &items);
            proptest::prop_assert!(edited.has_lookups() && !edited.same(&pods));
            same_lookups(&edited, edited.lookups(), &PodIndex::build(&edited));
        }
    }

    #[test]
    fn live_lists_are_counted_with_their_bytes() {
        // Other tests' lists come and go meanwhile, but they are small:
        // these 8 MB, then a copy of them, show whatever else lives.
        const MB8: usize = 1 << 20;
        let big: Listed<u64, ()> = vec![7u64; MB8].into();
        assert!(live().1 >= 8 * MB8, "{:?}", live());
        let mut copy = big.clone();
        copy[0] = 8; // copied on write: a second list
        assert!(live().1 >= 16 * MB8, "{:?}", live());
        assert!(live().0 >= 2);
    }

    #[test]
    fn a_list_serializes_as_its_items() {
        let pods: Pods = vec![pod("a", None, "w", true)].into();
        let text = serde_json::to_string(&pods).unwrap();
        assert_eq!(text, serde_json::to_string(&*pods).unwrap());
        let back: Pods = serde_json::from_str(&text).unwrap();
        assert_eq!(back, pods);
    }
}
