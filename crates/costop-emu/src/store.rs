//! The object store behind the emulated API server: JSON objects keyed by
//! kind, namespace and name, one resourceVersion counter, a history of
//! changes that watches replay from, and secondary indexes of pods (by
//! node, by controller, by label, by kubelet work) so that a field-selector
//! list, an eviction or a controller pass reads only the pods it concerns.
//!
//! An object is stored once, behind an `Arc`, and shared with the history
//! and with watch events.

use crate::kinds::{idx, Kind, KINDS};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// How many changes are kept for watches that resume from a resourceVersion.
const HISTORY: usize = 200_000;

/// One change, as a watch event.
#[derive(Debug, Clone)]
pub struct Change {
    /// resourceVersion after the change.
    pub rv: u64,
    /// Index into [`KINDS`].
    pub kind: usize,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub event: &'static str,
    /// The object after the change (before it, for `DELETED`).
    pub object: Arc<Value>,
}

/// What a secondary index of pods keys them by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexBy {
    /// `spec.nodeName`; "" for a pod not bound yet (what the scheduler
    /// lists with `spec.nodeName=`).
    NodeName,
    /// The uid of the pod's controller (`ownerReferences[controller]`).
    Owner,
    /// Each label, as `namespace/key=value`.
    Label,
    /// What its kubelet has to do: `starting` (bound, phase Pending, not
    /// terminating) or `stopping` (bound, terminating).
    Kubelet,
}

const INDEXES: [IndexBy; 4] = [IndexBy::NodeName, IndexBy::Owner, IndexBy::Label, IndexBy::Kubelet];

/// The values a pod is indexed under, for one index.
pub fn index_values(by: IndexBy, namespace: &str, pod: &Value) -> Vec<String> {
    let bound = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty());
    match by {
        IndexBy::NodeName => vec![bound.unwrap_or("").to_string()],
        IndexBy::Owner => pod["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|o| o.iter().find(|r| r["controller"] == true))
            .and_then(|r| r["uid"].as_str())
            .map(|u| vec![u.to_string()])
            .unwrap_or_default(),
        IndexBy::Label => pod["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| label_value(namespace, k, v.as_str().unwrap_or("")))
            .collect(),
        IndexBy::Kubelet => {
            let terminating = pod["metadata"]["deletionTimestamp"].is_string();
            match (bound, terminating) {
                (None, _) => vec![],
                (Some(_), true) => vec!["stopping".into()],
                (Some(_), false) if pod["status"]["phase"] == "Pending" => vec!["starting".into()],
                _ => vec![],
            }
        }
    }
}

/// The [`IndexBy::Label`] value of one label in one namespace.
pub fn label_value(namespace: &str, key: &str, value: &str) -> String {
    format!("{namespace}/{key}={value}")
}

/// One value of an index: the pods under it, and the resourceVersion of
/// the last change that added, changed or removed one of them.
#[derive(Debug, Default)]
struct Slot {
    keys: BTreeSet<(String, String)>,
    changed: u64,
}

/// The secondary indexes of pods.
#[derive(Debug, Default)]
struct Indexes {
    by: HashMap<IndexBy, HashMap<String, Slot>>,
}

impl Indexes {
    /// A pod went from `old` to `new` (`None`: absent) at `rv`: move its
    /// key between slots where its values changed, and mark every slot it
    /// was or is under as changed.
    fn change(&mut self, rv: u64, ns: &str, name: &str, old: Option<&Value>, new: Option<&Value>) {
        for by in INDEXES {
            let map = self.by.entry(by).or_default();
            let before = old.map(|o| index_values(by, ns, o)).unwrap_or_default();
            let after = new.map(|o| index_values(by, ns, o)).unwrap_or_default();
            for v in &before {
                // An emptied slot stays: its version tells readers that its
                // last pod left.
                if let Some(slot) = map.get_mut(v) {
                    if !after.contains(v) {
                        slot.keys.remove(&(ns.to_string(), name.to_string()));
                    }
                    slot.changed = rv;
                }
            }
            for v in after {
                let moved = !before.contains(&v);
                let slot = map.entry(v).or_default();
                if moved {
                    slot.keys.insert((ns.to_string(), name.to_string()));
                }
                slot.changed = rv;
            }
        }
    }
}

/// Why a store operation failed; maps onto a Kubernetes Status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// 404.
    #[error("{kind} \"{name}\" not found")]
    NotFound {
        /// Plural resource.
        kind: String,
        /// Object name.
        name: String,
    },
    /// 409 on create.
    #[error("{kind} \"{name}\" already exists")]
    AlreadyExists {
        /// Plural resource.
        kind: String,
        /// Object name.
        name: String,
    },
    /// 409 on update with a stale resourceVersion.
    #[error("Operation cannot be fulfilled on {kind} \"{name}\": the object has been modified; please apply your changes to the latest version and try again")]
    Conflict {
        /// Plural resource.
        kind: String,
        /// Object name.
        name: String,
    },
}

type Key = (usize, String, String);

struct Inner {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    indexes: Indexes,
    /// The resourceVersion of the last change of each kind.
    kind_changed: HashMap<usize, u64>,
    history: VecDeque<Arc<Change>>,
    /// Every change after this resourceVersion is still in `history`.
    complete_after: u64,
}

/// The store.
pub struct Store {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Arc<Change>>,
    history_len: usize,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::with_history(HISTORY)
    }

    /// An empty store keeping `history_len` changes for watches.
    pub fn with_history(history_len: usize) -> Self {
        let (changes, _) = broadcast::channel(65_536);
        Self {
            history_len,
            inner: Mutex::new(Inner {
                rv: 1,
                uid: 0,
                objects: BTreeMap::new(),
                indexes: Indexes::default(),
                kind_changed: HashMap::new(),
                history: VecDeque::new(),
                complete_after: 0,
            }),
            changes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribe to changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Store `object` under `key` (or remove it when `None`), keep the
    /// indexes, and record the change.
    fn put(
        &self,
        inner: &mut Inner,
        key: Key,
        object: Option<Arc<Value>>,
        event: &'static str,
        shown: Arc<Value>,
    ) {
        let rv = inner.rv;
        let kind = key.0;
        inner.kind_changed.insert(kind, rv);
        let old = match object {
            Some(o) => inner.objects.insert(key.clone(), o),
            None => inner.objects.remove(&key),
        };
        if kind == idx::PODS {
            let new = inner.objects.get(&key).cloned();
            inner.indexes.change(rv, &key.1, &key.2, old.as_deref(), new.as_deref());
        }
        self.record(inner, kind, event, shown);
    }

    fn record(&self, inner: &mut Inner, kind: usize, event: &'static str, object: Arc<Value>) {
        let change = Arc::new(Change { rv: inner.rv, kind, event, object });
        inner.history.push_back(change.clone());
        if inner.history.len() > self.history_len {
            if let Some(dropped) = inner.history.pop_front() {
                inner.complete_after = dropped.rv;
            }
        }
        let _ = self.changes.send(change);
    }

    /// Create an object; fills uid, creationTimestamp, resourceVersion.
    pub fn create(&self, kind: usize, namespace: &str, mut object: Value) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let name = name_of(&object).to_string();
        let key = (kind, namespace.to_string(), name.clone());
        if inner.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists { kind: KINDS[kind].plural.into(), name });
        }
        inner.rv += 1;
        inner.uid += 1;
        let (rv, uid) = (inner.rv, inner.uid);
        let meta = meta_mut(&mut object);
        meta.insert("uid".into(), json!(format!("00000000-0000-4000-8000-{uid:012x}")));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("creationTimestamp".into(), json!(crate::time::now_rfc3339()));
        if KINDS[kind].namespaced {
            meta.insert("namespace".into(), json!(namespace));
        } else {
            meta.remove("namespace");
        }
        set_type_meta(&mut object, &KINDS[kind]);
        let stored = Arc::new(object);
        self.put(&mut inner, key, Some(stored.clone()), "ADDED", stored.clone());
        Ok(Value::clone(&stored))
    }

    /// Get one object.
    pub fn get(&self, kind: usize, namespace: &str, name: &str) -> Result<Value, StoreError> {
        self.lock()
            .objects
            .get(&(kind, namespace.to_string(), name.to_string()))
            .map(|o| Value::clone(o))
            .ok_or_else(|| StoreError::NotFound { kind: KINDS[kind].plural.into(), name: name.into() })
    }

    /// List objects of a kind (all namespaces when `namespace` is `None`)
    /// that pass `keep`, with the resourceVersion of the snapshot.
    pub fn list(
        &self,
        kind: usize,
        namespace: Option<&str>,
        keep: impl Fn(&Value) -> bool,
    ) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .range((kind, String::new(), String::new())..)
            .take_while(|((k, _, _), _)| *k == kind)
            .filter(|((_, ns, _), _)| namespace.is_none_or(|n| n == ns))
            .filter(|(_, v)| keep(v))
            .map(|(_, v)| Value::clone(v))
            .collect();
        (items, inner.rv)
    }

    /// One page of [`Store::list`]: the objects after the one whose
    /// `namespace/name` is `after`, stopping once `limit` of them passed
    /// `keep` and one more is known to follow, so a paginated list copies
    /// only what each page returns.
    pub fn list_page(
        &self,
        kind: usize,
        namespace: Option<&str>,
        keep: impl Fn(&Value) -> bool,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let mut items = Vec::new();
        for ((_, ns, name), v) in inner
            .objects
            .range((kind, String::new(), String::new())..)
            .take_while(|((k, _, _), _)| *k == kind)
        {
            if namespace.is_some_and(|n| n != ns) {
                continue;
            }
            let key = ns.bytes().chain(std::iter::once(b'/')).chain(name.bytes());
            if after.is_some_and(|a| key.cmp(a.bytes()) != std::cmp::Ordering::Greater) {
                continue;
            }
            if keep(v) {
                items.push(Value::clone(v));
                if limit.is_some_and(|l| items.len() > l) {
                    break;
                }
            }
        }
        (items, inner.rv)
    }

    /// List the pods indexed under `value` by `by` (in namespace/name
    /// order, within `namespace` when given) that pass `keep`, with the
    /// resourceVersion of the snapshot. Reads only those pods.
    pub fn list_by(
        &self,
        by: IndexBy,
        value: &str,
        namespace: Option<&str>,
        keep: impl Fn(&Value) -> bool,
    ) -> (Vec<Value>, u64) {
        let mut items = Vec::new();
        let rv = self.scan_by(by, value, |ns, _, v| {
            if namespace.is_none_or(|n| n == ns) && keep(v) {
                items.push(v.clone());
            }
        });
        (items, rv)
    }

    /// Visit the pods indexed under `value` by `by` under the lock, without
    /// copying; returns the current resourceVersion.
    pub fn scan_by(&self, by: IndexBy, value: &str, mut visit: impl FnMut(&str, &str, &Value)) -> u64 {
        let inner = self.lock();
        if let Some(slot) = inner.indexes.by.get(&by).and_then(|m| m.get(value)) {
            for (ns, name) in &slot.keys {
                if let Some(v) = inner.objects.get(&(idx::PODS, ns.clone(), name.clone())) {
                    visit(ns, name, v);
                }
            }
        }
        inner.rv
    }

    /// The values an index holds pods under (e.g. every node some pod is
    /// bound to), each with the resourceVersion of its last change.
    pub fn index_values(&self, by: IndexBy) -> Vec<(String, u64)> {
        let inner = self.lock();
        inner.indexes.by.get(&by).into_iter().flatten().map(|(v, s)| (v.clone(), s.changed)).collect()
    }

    /// The resourceVersion of the last change to a pod under `value` of
    /// `by` (added, changed or removed); 0 when none was ever seen.
    pub fn changed_by(&self, by: IndexBy, value: &str) -> u64 {
        let inner = self.lock();
        inner.indexes.by.get(&by).and_then(|m| m.get(value)).map_or(0, |s| s.changed)
    }

    /// The resourceVersion of the last change to any object of a kind; 0
    /// when none.
    pub fn kind_changed(&self, kind: usize) -> u64 {
        self.lock().kind_changed.get(&kind).copied().unwrap_or(0)
    }

    /// How many objects of a kind are stored.
    pub fn count(&self, kind: usize) -> usize {
        let inner = self.lock();
        inner
            .objects
            .range((kind, String::new(), String::new())..)
            .take_while(|((k, _, _), _)| *k == kind)
            .count()
    }

    /// Visit every object of a kind under the lock, without copying.
    pub fn scan(&self, kind: usize, mut visit: impl FnMut(&str, &str, &Value)) {
        let inner = self.lock();
        for ((_, ns, name), v) in inner
            .objects
            .range((kind, String::new(), String::new())..)
            .take_while(|((k, _, _), _)| *k == kind)
        {
            visit(ns, name, v);
        }
    }

    /// Replace an object. With `expected_rv`, refuse if it is stale.
    pub fn replace(
        &self,
        kind: usize,
        namespace: &str,
        name: &str,
        mut object: Value,
        expected_rv: Option<&str>,
    ) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let key = (kind, namespace.to_string(), name.to_string());
        let Some(old) = inner.objects.get(&key) else {
            return Err(StoreError::NotFound { kind: KINDS[kind].plural.into(), name: name.into() });
        };
        if let Some(rv) = expected_rv {
            if old["metadata"]["resourceVersion"].as_str() != Some(rv) {
                return Err(StoreError::Conflict { kind: KINDS[kind].plural.into(), name: name.into() });
            }
        }
        let keep = ["uid", "creationTimestamp", "namespace", "name", "deletionTimestamp"];
        let old_meta = old["metadata"].clone();
        inner.rv += 1;
        let rv = inner.rv;
        let meta = meta_mut(&mut object);
        for k in keep {
            match old_meta.get(k) {
                Some(v) => meta.insert(k.into(), v.clone()),
                None => meta.remove(k),
            };
        }
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        set_type_meta(&mut object, &KINDS[kind]);
        let stored = Arc::new(object);
        self.put(&mut inner, key, Some(stored.clone()), "MODIFIED", stored.clone());
        Ok(Value::clone(&stored))
    }

    /// Change an object in place (controllers). Returns the new object; no
    /// event when `change` leaves it as it was.
    pub fn update(
        &self,
        kind: usize,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let key = (kind, namespace.to_string(), name.to_string());
        let Some(current) = inner.objects.get(&key) else {
            return Err(StoreError::NotFound { kind: KINDS[kind].plural.into(), name: name.into() });
        };
        let mut next = Value::clone(current);
        change(&mut next);
        if &next == current.as_ref() {
            return Ok(next);
        }
        inner.rv += 1;
        let rv = inner.rv;
        meta_mut(&mut next).insert("resourceVersion".into(), json!(rv.to_string()));
        let stored = Arc::new(next);
        self.put(&mut inner, key, Some(stored.clone()), "MODIFIED", stored.clone());
        Ok(Value::clone(&stored))
    }

    /// Delete an object now.
    pub fn delete(&self, kind: usize, namespace: &str, name: &str) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let key = (kind, namespace.to_string(), name.to_string());
        let Some(current) = inner.objects.get(&key) else {
            return Err(StoreError::NotFound { kind: KINDS[kind].plural.into(), name: name.into() });
        };
        let mut object = Value::clone(current);
        inner.rv += 1;
        let rv = inner.rv;
        meta_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
        let shown = Arc::new(object);
        self.put(&mut inner, key, None, "DELETED", shown.clone());
        Ok(Value::clone(&shown))
    }

    /// Changes after `rv` of a kind, or `None` when `rv` is older than the
    /// history (the caller answers 410 Gone).
    pub fn changes_since(&self, kind: usize, rv: u64) -> Option<Vec<Arc<Change>>> {
        let inner = self.lock();
        if rv < inner.complete_after {
            return None;
        }
        Some(inner.history.iter().filter(|c| c.rv > rv && c.kind == kind).cloned().collect())
    }
}

/// `metadata.name`, or "" when absent.
pub fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("")
}

/// `metadata` as a mutable map, created when missing.
pub fn meta_mut(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"].as_object_mut().expect("metadata is an object")
}

fn set_type_meta(object: &mut Value, kind: &Kind) {
    object["apiVersion"] = json!(kind.api_version());
    object["kind"] = json!(kind.kind);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::kind_index;

    #[test]
    fn create_get_replace_delete_and_history() {
        let store = Store::new();
        let pods = kind_index("", "pods").unwrap();
        let created = store.create(pods, "default", json!({"metadata": {"name": "a"}, "spec": {}})).unwrap();
        let rv = created["metadata"]["resourceVersion"].as_str().unwrap().to_string();
        assert!(matches!(
            store.create(pods, "default", json!({"metadata": {"name": "a"}})),
            Err(StoreError::AlreadyExists { .. })
        ));
        let stale = store.replace(pods, "default", "a", json!({"metadata": {"name": "a"}}), Some("1"));
        assert!(matches!(stale, Err(StoreError::Conflict { .. })));
        store
            .replace(pods, "default", "a", json!({"metadata": {"name": "a"}, "spec": {"x": 1}}), Some(&rv))
            .unwrap();
        assert_eq!(store.get(pods, "default", "a").unwrap()["spec"]["x"], 1);
        store.delete(pods, "default", "a").unwrap();
        assert!(store.get(pods, "default", "a").is_err());
        let since: Vec<_> = store.changes_since(pods, 0).unwrap().iter().map(|c| c.event).collect();
        assert_eq!(since, vec!["ADDED", "MODIFIED", "DELETED"]);
    }

    #[test]
    fn the_pod_indexes_follow_every_change() {
        let store = Store::new();
        let pods = idx::PODS;
        let pod = |node: Option<&str>, phase: &str| {
            json!({"metadata": {"name": "p", "labels": {"app": "web"},
                                "ownerReferences": [{"uid": "d1", "controller": true}]},
                   "spec": {"nodeName": node}, "status": {"phase": phase}})
        };
        let names = |by, v: &str| -> Vec<String> {
            store.list_by(by, v, None, |_| true).0.iter().map(|p| name_of(p).to_string()).collect()
        };
        store.create(pods, "default", pod(None, "Pending")).unwrap();
        assert_eq!(names(IndexBy::NodeName, ""), ["p"]);
        assert_eq!(names(IndexBy::Owner, "d1"), ["p"]);
        assert_eq!(names(IndexBy::Label, &label_value("default", "app", "web")), ["p"]);
        assert!(names(IndexBy::Label, &label_value("other", "app", "web")).is_empty());
        assert!(names(IndexBy::Kubelet, "starting").is_empty());
        let before = store.changed_by(IndexBy::NodeName, "n1");
        store.update(pods, "default", "p", |p| *p = pod(Some("n1"), "Pending")).unwrap();
        assert!(names(IndexBy::NodeName, "").is_empty());
        assert_eq!(names(IndexBy::NodeName, "n1"), ["p"]);
        assert_eq!(names(IndexBy::Kubelet, "starting"), ["p"]);
        assert!(store.changed_by(IndexBy::NodeName, "n1") > before);
        store.replace(pods, "default", "p", pod(Some("n1"), "Running"), None).unwrap();
        assert!(names(IndexBy::Kubelet, "starting").is_empty());
        assert_eq!(store.list_by(IndexBy::NodeName, "n1", Some("kube-system"), |_| true).0.len(), 0);
        let bound = store.changed_by(IndexBy::NodeName, "n1");
        store.delete(pods, "default", "p").unwrap();
        assert!(names(IndexBy::NodeName, "n1").is_empty());
        assert!(names(IndexBy::Owner, "d1").is_empty());
        // The emptied slot's version says its last pod left.
        assert!(store.changed_by(IndexBy::NodeName, "n1") > bound);
        assert_eq!(store.kind_changed(pods), store.resource_version());
        assert_eq!(store.count(pods), 0);
    }

    #[test]
    fn a_page_copies_only_what_it_returns() {
        let store = Store::new();
        let pods = idx::PODS;
        for name in ["a", "b", "c", "d"] {
            store.create(pods, "default", json!({"metadata": {"name": name}})).unwrap();
        }
        store.create(pods, "other", json!({"metadata": {"name": "e"}})).unwrap();
        let names = |(items, _): (Vec<Value>, u64)| -> Vec<String> {
            items.iter().map(|p| name_of(p).to_string()).collect()
        };
        assert_eq!(names(store.list_page(pods, None, |_| true, None, Some(2))), ["a", "b", "c"]);
        assert_eq!(names(store.list_page(pods, None, |_| true, Some("default/b"), Some(2))), ["c", "d", "e"]);
        assert_eq!(names(store.list_page(pods, Some("default"), |_| true, Some("default/c"), None)), ["d"]);
        assert_eq!(
            names(store.list_page(pods, None, |p| name_of(p) != "c", Some("default/a"), Some(1))),
            ["b", "d"]
        );
    }

    #[test]
    fn versions_older_than_the_history_are_gone() {
        let store = Store::with_history(2);
        let pods = kind_index("", "pods").unwrap();
        for name in ["a", "b", "c", "d"] {
            store.create(pods, "default", json!({"metadata": {"name": name}})).unwrap();
        }
        let now = store.resource_version();
        assert!(store.changes_since(pods, 1).is_none(), "410 Gone expected");
        assert_eq!(store.changes_since(pods, now - 1).unwrap().len(), 1);
        assert_eq!(store.changes_since(pods, now).unwrap().len(), 0);
    }
}
