//! One store type for callers that pick memory or Redis at run time.

use crate::{Claim, MemoryStore, RedisStore, StoreError};
use costop_core::ports::{ResponseRecord, StorePort, StreamEntry};
use costop_core::time::Millis;
use costop_core::{Notice, NoticeKey, Plan};

/// Memory (embedded default) or Redis. One per process: the size of the
/// memory variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum AnyStore {
    /// In this process.
    Memory(MemoryStore),
    /// In Redis.
    Redis(RedisStore),
}

impl AnyStore {
    /// Redis when a URL is given, else memory.
    pub async fn open(redis_url: Option<&str>) -> Result<Self, StoreError> {
        Ok(match redis_url {
            Some(url) => AnyStore::Redis(RedisStore::connect(url).await?),
            None => AnyStore::Memory(MemoryStore::new()),
        })
    }

    /// Sign and check plans in Redis with `key` (memory needs none: nothing
    /// outside the process writes it).
    pub fn with_plan_key(self, key: Option<&[u8]>) -> Self {
        match self {
            AnyStore::Redis(s) => AnyStore::Redis(s.with_plan_key(key)),
            other => other,
        }
    }
}

impl AnyStore {
    /// Change the mirror of `kind` in place: write `changed`, delete
    /// `removed` (after a first [`StorePort::mirror`] of everything).
    pub async fn mirror_changes(
        &self,
        kind: &str,
        changed: &[(String, String)],
        removed: &[String],
    ) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => {
                s.mirror_changes(kind, changed, removed);
                Ok(())
            }
            AnyStore::Redis(s) => s.mirror_changes(kind, changed, removed).await,
        }
    }

    /// Replace the mirror of `kind` with the entries `next_batch` gives,
    /// a batch at a time, until it gives none: only one batch is held at
    /// once (every pod's JSON at once was 45 MB on 150,000 pods). Readers
    /// see the old mirror until the new one is whole.
    pub async fn mirror_in_batches(
        &self,
        kind: &str,
        mut next_batch: impl FnMut() -> Vec<(String, String)> + Send,
    ) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => {
                let mut all = Vec::new();
                loop {
                    let batch = next_batch();
                    if batch.is_empty() {
                        break;
                    }
                    all.extend(batch);
                }
                s.mirror(kind, &all).await
            }
            AnyStore::Redis(s) => s.mirror_in_batches(kind, next_batch).await,
        }
    }

    /// Claim the one response of `key`'s (instance, kind) for `key`;
    /// `replacing`: take it over only from that holder (it failed before
    /// saving a plan).
    pub async fn claim(&self, key: &NoticeKey, replacing: Option<&NoticeKey>) -> Result<Claim, StoreError> {
        match self {
            AnyStore::Memory(s) => Ok(s.claim(key, replacing)),
            AnyStore::Redis(s) => s.claim(key, replacing).await,
        }
    }

    /// New stream entries with their credentials. The in-memory stream
    /// carries none (nothing outside this process writes it).
    pub async fn read_signed(
        &self,
        consumer: &str,
        block_ms: u64,
    ) -> Result<Vec<crate::redis_store::SignedEntry>, StoreError> {
        match self {
            AnyStore::Memory(s) => Ok(s
                .read_notices(consumer, block_ms)
                .await?
                .into_iter()
                .map(|(id, notice)| crate::redis_store::SignedEntry { id, notice, token: None })
                .collect()),
            AnyStore::Redis(s) => s.read_signed(consumer, block_ms).await,
        }
    }

    /// The absolute target a restore step (`key`) chose for `group`; when
    /// none is recorded, record `proposed`. Returns it and whether this call
    /// recorded it.
    pub async fn restore_target(
        &self,
        key: &str,
        group: &str,
        proposed: i32,
    ) -> Result<(i32, bool), StoreError> {
        match self {
            AnyStore::Memory(s) => Ok(s.restore_target(key, group, proposed)),
            AnyStore::Redis(s) => s.restore_target(key, group, proposed).await,
        }
    }

    /// The notice holding the one response of `key`'s (instance, kind), if any.
    pub async fn claim_holder(&self, key: &NoticeKey) -> Result<Option<NoticeKey>, StoreError> {
        match self {
            AnyStore::Memory(s) => Ok(s.claim_holder(key)),
            AnyStore::Redis(s) => s.claim_holder(key).await,
        }
    }

    /// The notice keys of the `limit` responses whose plans were saved
    /// last, newest first (finished or not).
    pub async fn recent(&self, limit: usize) -> Result<Vec<NoticeKey>, StoreError> {
        match self {
            AnyStore::Memory(s) => Ok(s.recent(limit)),
            AnyStore::Redis(s) => s.recent(limit).await,
        }
    }

    /// Give up the claim of `key`, if it still holds it.
    pub async fn release_claim(&self, key: &NoticeKey) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => {
                s.release_claim(key);
                Ok(())
            }
            AnyStore::Redis(s) => s.release_claim(key).await,
        }
    }
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Memory($s) => $e,
            AnyStore::Redis($s) => $e,
        }
    };
}

impl StorePort for AnyStore {
    type Error = StoreError;

    async fn record_notice(&self, notice: &Notice) -> Result<bool, StoreError> {
        both!(self, s => s.record_notice(notice).await)
    }
    async fn publish_notice(&self, notice: &Notice) -> Result<(), StoreError> {
        both!(self, s => s.publish_notice(notice).await)
    }
    async fn read_notices(&self, consumer: &str, block_ms: u64) -> Result<Vec<StreamEntry>, StoreError> {
        both!(self, s => s.read_notices(consumer, block_ms).await)
    }
    async fn ack_notice(&self, id: &str) -> Result<(), StoreError> {
        both!(self, s => s.ack_notice(id).await)
    }
    async fn save_plan(&self, plan: &Plan) -> Result<bool, StoreError> {
        both!(self, s => s.save_plan(plan).await)
    }
    async fn step_started(&self, key: &NoticeKey, index: usize, at: Millis) -> Result<(), StoreError> {
        both!(self, s => s.step_started(key, index, at).await)
    }
    async fn step_done(
        &self,
        key: &NoticeKey,
        index: usize,
        at: Millis,
        outcome: &str,
    ) -> Result<(), StoreError> {
        both!(self, s => s.step_done(key, index, at, outcome).await)
    }
    async fn response_done(&self, key: &NoticeKey, at: Millis) -> Result<(), StoreError> {
        both!(self, s => s.response_done(key, at).await)
    }
    async fn response(&self, key: &NoticeKey) -> Result<Option<ResponseRecord>, StoreError> {
        both!(self, s => s.response(key).await)
    }
    async fn unfinished(&self) -> Result<Vec<NoticeKey>, StoreError> {
        both!(self, s => s.unfinished().await)
    }
    async fn mirror(&self, kind: &str, entries: &[(String, String)]) -> Result<(), StoreError> {
        both!(self, s => s.mirror(kind, entries).await)
    }
}
