//! The in-memory store: the embedded default when no Redis is configured.

use crate::{Claim, StoreError};
use costop_core::ports::{ResponseRecord, StepRecord, StorePort, StreamEntry};
use costop_core::time::Millis;
use costop_core::{Notice, NoticeKey, Plan};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

#[derive(Default)]
struct Inner {
    notices: HashMap<NoticeKey, Notice>,
    stream: VecDeque<(u64, Notice)>,
    next_id: u64,
    delivered: u64,
    responses: BTreeMap<NoticeKey, ResponseRecord>,
    /// Notice keys of the responses in the order their plans were saved.
    saved: Vec<NoticeKey>,
    mirror: HashMap<String, HashMap<String, String>>,
    claims: HashMap<(String, String), NoticeKey>,
    restore_targets: HashMap<(String, String), i32>,
}

/// A store in this process's memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    new_entry: tokio::sync::Notify,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claim the one response of `key`'s (instance, kind) for `key` (see
    /// [`crate::Claim`]); `replacing`: take it over from that holder only.
    /// Claims in memory live as long as the process.
    pub fn claim(&self, key: &NoticeKey, replacing: Option<&NoticeKey>) -> Claim {
        let mut inner = self.lock();
        let slot = (key.instance_id.clone(), key.kind.clone());
        match (inner.claims.get(&slot), replacing) {
            (None, _) => {
                inner.claims.insert(slot, key.clone());
                Claim::Claimed
            }
            (Some(held), Some(prev)) if held == prev => {
                inner.claims.insert(slot, key.clone());
                Claim::Claimed
            }
            (Some(held), _) => Claim::Held(held.clone()),
        }
    }

    /// The absolute target a restore step (`key`) chose for `group`, or
    /// `proposed` recorded now (then `true`).
    pub fn restore_target(&self, key: &str, group: &str, proposed: i32) -> (i32, bool) {
        let mut inner = self.lock();
        match inner.restore_targets.get(&(key.to_string(), group.to_string())) {
            Some(t) => (*t, false),
            None => {
                inner.restore_targets.insert((key.to_string(), group.to_string()), proposed);
                (proposed, true)
            }
        }
    }

    /// The notice holding the one response of `key`'s (instance, kind), if any.
    pub fn claim_holder(&self, key: &NoticeKey) -> Option<NoticeKey> {
        self.lock().claims.get(&(key.instance_id.clone(), key.kind.clone())).cloned()
    }

    /// Give up the claim of `key`, if it still holds it.
    pub fn release_claim(&self, key: &NoticeKey) {
        let mut inner = self.lock();
        let slot = (key.instance_id.clone(), key.kind.clone());
        if inner.claims.get(&slot) == Some(key) {
            inner.claims.remove(&slot);
        }
    }

    /// The notice keys of the `limit` responses whose plans were saved
    /// last, newest first (finished or not).
    pub fn recent(&self, limit: usize) -> Vec<NoticeKey> {
        self.lock().saved.iter().rev().take(limit).cloned().collect()
    }

    /// Change the mirror of `kind` in place: write `changed`, delete `removed`.
    pub fn mirror_changes(&self, kind: &str, changed: &[(String, String)], removed: &[String]) {
        let mut inner = self.lock();
        let m = inner.mirror.entry(kind.to_string()).or_default();
        m.extend(changed.iter().cloned());
        for name in removed {
            m.remove(name);
        }
    }

    /// Mirrored entries of a kind.
    pub fn mirrored(&self, kind: &str) -> HashMap<String, String> {
        self.lock().mirror.get(kind).cloned().unwrap_or_default()
    }
}

fn with_step(r: &mut ResponseRecord, index: usize, f: impl FnOnce(&mut StepRecord)) {
    if r.steps.len() <= index {
        r.steps.resize_with(index + 1, StepRecord::default);
    }
    f(&mut r.steps[index]);
}

impl StorePort for MemoryStore {
    type Error = StoreError;

    async fn record_notice(&self, notice: &Notice) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let key = notice.key();
        if inner.notices.contains_key(&key) {
            return Ok(false);
        }
        inner.notices.insert(key, notice.clone());
        Ok(true)
    }

    async fn publish_notice(&self, notice: &Notice) -> Result<(), StoreError> {
        {
            let mut inner = self.lock();
            inner.next_id += 1;
            let id = inner.next_id;
            inner.stream.push_back((id, notice.clone()));
        }
        self.new_entry.notify_waiters();
        Ok(())
    }

    async fn read_notices(&self, _consumer: &str, block_ms: u64) -> Result<Vec<StreamEntry>, StoreError> {
        let take = |inner: &mut Inner| -> Vec<StreamEntry> {
            let from = inner.delivered;
            let out: Vec<StreamEntry> = inner
                .stream
                .iter()
                .filter(|(id, _)| *id > from)
                .map(|(id, n)| (id.to_string(), Ok(n.clone())))
                .collect();
            if let Some((last, _)) = inner.stream.back() {
                inner.delivered = inner.delivered.max(*last);
            }
            out
        };
        let notified = self.new_entry.notified();
        let first = take(&mut self.lock());
        if !first.is_empty() || block_ms == 0 {
            return Ok(first);
        }
        let _ = tokio::time::timeout(std::time::Duration::from_millis(block_ms), notified).await;
        Ok(take(&mut self.lock()))
    }

    async fn ack_notice(&self, id: &str) -> Result<(), StoreError> {
        let id: u64 = id.parse().unwrap_or(0);
        self.lock().stream.retain(|(x, _)| *x != id);
        Ok(())
    }

    async fn save_plan(&self, plan: &Plan) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if inner.responses.contains_key(&plan.notice) {
            return Ok(false);
        }
        inner.saved.push(plan.notice.clone());
        inner.responses.insert(
            plan.notice.clone(),
            ResponseRecord {
                plan: plan.clone(),
                steps: vec![StepRecord::default(); plan.steps.len()],
                done_at: None,
            },
        );
        Ok(true)
    }

    async fn step_started(&self, key: &NoticeKey, index: usize, at: Millis) -> Result<(), StoreError> {
        if let Some(r) = self.lock().responses.get_mut(key) {
            with_step(r, index, |s| s.started_at = Some(at));
        }
        Ok(())
    }

    async fn step_done(
        &self,
        key: &NoticeKey,
        index: usize,
        at: Millis,
        outcome: &str,
    ) -> Result<(), StoreError> {
        if let Some(r) = self.lock().responses.get_mut(key) {
            with_step(r, index, |s| {
                s.done_at = Some(at);
                s.outcome = Some(outcome.to_string());
            });
        }
        Ok(())
    }

    async fn response_done(&self, key: &NoticeKey, at: Millis) -> Result<(), StoreError> {
        if let Some(r) = self.lock().responses.get_mut(key) {
            r.done_at.get_or_insert(at);
        }
        Ok(())
    }

    async fn response(&self, key: &NoticeKey) -> Result<Option<ResponseRecord>, StoreError> {
        Ok(self.lock().responses.get(key).cloned())
    }

    async fn unfinished(&self) -> Result<Vec<NoticeKey>, StoreError> {
        Ok(self
            .lock()
            .responses
            .iter()
            .filter(|(_, r)| r.done_at.is_none())
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn mirror(&self, kind: &str, entries: &[(String, String)]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let m = inner.mirror.entry(kind.to_string()).or_default();
        m.clear();
        m.extend(entries.iter().cloned());
        Ok(())
    }
}
