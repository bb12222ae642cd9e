//! The object store behind the emulated API server: JSON objects keyed by
//! kind, namespace and name, one resourceVersion counter, and a history of
//! changes that watches replay from.

use crate::kinds::{Kind, KINDS};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
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
    pub object: Value,
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
    objects: BTreeMap<Key, Value>,
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

    fn record(&self, inner: &mut Inner, kind: usize, event: &'static str, object: Value) {
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
        inner.objects.insert(key, object.clone());
        self.record(&mut inner, kind, "ADDED", object.clone());
        Ok(object)
    }

    /// Get one object.
    pub fn get(&self, kind: usize, namespace: &str, name: &str) -> Result<Value, StoreError> {
        self.lock()
            .objects
            .get(&(kind, namespace.to_string(), name.to_string()))
            .cloned()
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
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
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
        inner.objects.insert(key, object.clone());
        self.record(&mut inner, kind, "MODIFIED", object.clone());
        Ok(object)
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
        let mut next = current.clone();
        change(&mut next);
        if &next == current {
            return Ok(next);
        }
        inner.rv += 1;
        let rv = inner.rv;
        meta_mut(&mut next).insert("resourceVersion".into(), json!(rv.to_string()));
        inner.objects.insert(key, next.clone());
        self.record(&mut inner, kind, "MODIFIED", next.clone());
        Ok(next)
    }

    /// Delete an object now.
    pub fn delete(&self, kind: usize, namespace: &str, name: &str) -> Result<Value, StoreError> {
        let mut inner = self.lock();
        let key = (kind, namespace.to_string(), name.to_string());
        let Some(mut object) = inner.objects.remove(&key) else {
            return Err(StoreError::NotFound { kind: KINDS[kind].plural.into(), name: name.into() });
        };
        inner.rv += 1;
        let rv = inner.rv;
        meta_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
        self.record(&mut inner, kind, "DELETED", object.clone());
        Ok(object)
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
