//! The Redis store (see the key layout in the crate doc).

use crate::{claim_key, notice_key, parse_notice_key, response_key, Claim, StoreError, CLAIM_TTL_MS};
use costop_core::ports::{ResponseRecord, StepRecord, StorePort, StreamEntry};
use costop_core::time::Millis;
use costop_core::{Notice, NoticeKey, Plan};
use redis::aio::ConnectionManager;
use redis::Value;
use std::collections::HashMap;
use std::time::Duration;

/// The stream of notices.
pub const STREAM: &str = "costop:notices";
/// The server's consumer group.
pub const GROUP: &str = "costop-server";
/// Open responses.
pub const OPEN: &str = "costop:responses:open";
/// Notice keys of responses by when their plans were saved (sorted set,
/// score: Unix ms), the latest [`RECENT_KEPT`] only.
pub const RECENT: &str = "costop:responses:recent";
/// How many responses [`RECENT`] keeps.
pub const RECENT_KEPT: usize = 1000;
/// Entries unacknowledged this long are taken over by the reading consumer.
pub const CLAIM_IDLE_MS: u64 = 5_000;
/// Every command gives up after this, so a dead Redis never hangs a caller.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The environment variable naming a PEM file of the CA that signed Redis's
/// certificate, for `rediss://` (default: the system's roots).
pub const REDIS_CA_ENV: &str = "COSTOP_REDIS_CA_FILE";

/// The environment variable holding the key plans are signed with
/// (any string; 32 random bytes or more, from a Secret).
pub const PLAN_KEY_ENV: &str = "COSTOP_PLAN_KEY";

/// A store in Redis.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    reader: ConnectionManager,
    /// Plans saved carry an HMAC with this key, and plans read are refused
    /// without a valid one. None: plans are neither signed nor checked.
    plan_key: Option<std::sync::Arc<Vec<u8>>>,
}

type PlanMac = hmac::Hmac<sha2::Sha256>;

fn plan_mac(key: &[u8], notice: &NoticeKey, plan_json: &str) -> Result<PlanMac, StoreError> {
    use hmac::{KeyInit, Mac};
    let mut mac = <PlanMac as KeyInit>::new_from_slice(key)
        .map_err(|e| StoreError::Corrupt { what: "plan key".into(), message: e.to_string() })?;
    mac.update(notice.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(plan_json.as_bytes());
    Ok(mac)
}

fn redis_err(action: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |source| StoreError::Redis { action, source }
}

fn timeout_err(action: &'static str) -> StoreError {
    StoreError::Redis {
        action,
        source: redis::RedisError::from((
            redis::ErrorKind::IoError,
            "timed out",
            "no answer within 2 s".to_string(),
        )),
    }
}

impl RedisStore {
    /// Connect (`redis://host:port/db`). Reconnects on its own after failures.
    /// A failure names the URL (password hidden).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_unnamed(url).await.map_err(|e| match e {
            StoreError::Redis { action, source } => StoreError::Connect {
                url: crate::redact_url(url),
                action,
                message: if source.kind() == redis::ErrorKind::InvalidClientConfig {
                    "not a valid Redis URL (redis://[USER:PASSWORD@]HOST:PORT/DB, rediss:// for TLS, \
                     or unix:///PATH)"
                        .to_string()
                } else {
                    crate::error_chain(&source)
                },
            },
            StoreError::Corrupt { what, message } => StoreError::Connect {
                url: crate::redact_url(url),
                action: "open",
                message: format!("{what}: {message}"),
            },
            other => other,
        })
    }

    async fn connect_unnamed(url: &str) -> Result<Self, StoreError> {
        let ca_file = std::env::var(REDIS_CA_ENV).ok().filter(|f| !f.is_empty());
        let client = match (url.starts_with("rediss:"), ca_file) {
            (true, ca) => {
                // More than one rustls provider is compiled into the binary: pick one.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let root_cert = match ca {
                    Some(path) => Some(std::fs::read(&path).map_err(|e| StoreError::Corrupt {
                        what: format!("{REDIS_CA_ENV} {path}"),
                        message: e.to_string(),
                    })?),
                    None => None,
                };
                match root_cert {
                    Some(root) => redis::Client::build_with_tls(
                        url,
                        redis::TlsCertificates { client_tls: None, root_cert: Some(root) },
                    ),
                    None => redis::Client::open(url),
                }
            }
            (false, _) => redis::Client::open(url),
        }
        .map_err(redis_err("open"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(COMMAND_TIMEOUT)
            .set_number_of_retries(1);
        let connect = |c: redis::Client, cfg: redis::aio::ConnectionManagerConfig| async move {
            tokio::time::timeout(COMMAND_TIMEOUT * 2, ConnectionManager::new_with_config(c, cfg))
                .await
                .map_err(|_| timeout_err("connect"))?
                .map_err(redis_err("connect"))
        };
        let conn = connect(client.clone(), config.clone()).await?;
        let reader = connect(client, config).await?;
        Ok(Self { conn, reader, plan_key: None })
    }

    /// Sign plans saved and check plans read with `key` (see [`PLAN_KEY_ENV`]).
    pub fn with_plan_key(mut self, key: Option<&[u8]>) -> Self {
        self.plan_key = key.filter(|k| !k.is_empty()).map(|k| std::sync::Arc::new(k.to_vec()));
        self
    }

    /// Whether plans are signed and checked.
    pub fn signs_plans(&self) -> bool {
        self.plan_key.is_some()
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        action: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async::<T>(&mut conn))
            .await
            .map_err(|_| timeout_err(action))?
            .map_err(redis_err(action))
    }

    async fn ensure_group(&self) -> Result<(), StoreError> {
        let created: Result<Value, StoreError> = self
            .run(
                "create group",
                redis::cmd("XGROUP").arg("CREATE").arg(STREAM).arg(GROUP).arg("0").arg("MKSTREAM"),
            )
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(StoreError::Redis { source, .. }) if source.to_string().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn read_group(
        &self,
        consumer: &str,
        from: &str,
        block_ms: Option<u64>,
    ) -> Result<Vec<SignedEntry>, StoreError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(consumer).arg("COUNT").arg(100);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(STREAM).arg(from);
        let mut conn = self.reader.clone();
        let wait = COMMAND_TIMEOUT + Duration::from_millis(block_ms.unwrap_or(0));
        let reply: Value = tokio::time::timeout(wait, cmd.query_async(&mut conn))
            .await
            .map_err(|_| timeout_err("read notices"))?
            .map_err(redis_err("read notices"))?;
        Ok(entries_from_read(&reply))
    }

    /// Take over entries pending longer than [`CLAIM_IDLE_MS`] (`XAUTOCLAIM`).
    async fn claim_stale(&self, consumer: &str) -> Result<Vec<SignedEntry>, StoreError> {
        let reply: Value = self
            .run(
                "claim stale notices",
                redis::cmd("XAUTOCLAIM")
                    .arg(STREAM)
                    .arg(GROUP)
                    .arg(consumer)
                    .arg(CLAIM_IDLE_MS)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(100),
            )
            .await?;
        // [next-id, [[id, [field, value, …]], …], [deleted ids]]
        let Value::Array(parts) = reply else { return Ok(Vec::new()) };
        let Some(Value::Array(entries)) = parts.get(1) else { return Ok(Vec::new()) };
        Ok(entries_from_list(entries))
    }

    /// Append a notice to the stream with the writer's credential (the
    /// agent's service-account token): the server acts only on entries
    /// whose credential it verified.
    pub async fn publish_signed(&self, notice: &Notice, token: Option<&str>) -> Result<(), StoreError> {
        let body = serde_json::to_string(notice)
            .map_err(|e| StoreError::Corrupt { what: "notice".into(), message: e.to_string() })?;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(STREAM).arg("*").arg("notice").arg(body);
        if let Some(t) = token {
            cmd.arg("token").arg(t);
        }
        let _: String = self.run("publish notice", &cmd).await?;
        Ok(())
    }

    /// New stream entries (first those another consumer left unacknowledged
    /// for [`CLAIM_IDLE_MS`]) with their credentials.
    pub async fn read_signed(&self, consumer: &str, block_ms: u64) -> Result<Vec<SignedEntry>, StoreError> {
        self.ensure_group().await?;
        let stale = self.claim_stale(consumer).await?;
        if !stale.is_empty() {
            return Ok(stale);
        }
        self.read_group(consumer, ">", Some(block_ms)).await
    }

    /// Claim the one response of `key`'s (instance, kind) for `key`, for
    /// [`CLAIM_TTL_MS`] (`SET NX PX` in one script with the read of the
    /// holder); `replacing`: take it over only from that holder.
    pub async fn claim(&self, key: &NoticeKey, replacing: Option<&NoticeKey>) -> Result<Claim, StoreError> {
        let script = "local held = redis.call('GET', KEYS[1]) \
                      if (not held) or (ARGV[3] ~= '' and held == ARGV[3]) then \
                      redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return '' end \
                      return held";
        let held: String = self
            .run(
                "claim response",
                redis::cmd("EVAL")
                    .arg(script)
                    .arg(1)
                    .arg(claim_key(key))
                    .arg(key.to_string())
                    .arg(CLAIM_TTL_MS)
                    .arg(replacing.map(ToString::to_string).unwrap_or_default()),
            )
            .await?;
        if held.is_empty() {
            return Ok(Claim::Claimed);
        }
        parse_notice_key(&held).map(Claim::Held).ok_or_else(|| StoreError::Corrupt {
            what: claim_key(key),
            message: format!("`{held}` is not a notice key"),
        })
    }

    /// The absolute target a restore step (`key`) chose for `group`; when
    /// none is recorded, record `proposed` (kept two days). Returns the
    /// target and whether this call recorded it.
    pub async fn restore_target(
        &self,
        key: &str,
        group: &str,
        proposed: i32,
    ) -> Result<(i32, bool), StoreError> {
        let script = "local new = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) \
                      redis.call('PEXPIRE', KEYS[1], ARGV[3]) \
                      return {new, redis.call('HGET', KEYS[1], ARGV[1])}";
        let (new, target): (i64, String) = self
            .run(
                "record restore target",
                redis::cmd("EVAL")
                    .arg(script)
                    .arg(1)
                    .arg(format!("costop:restore:{key}"))
                    .arg(group)
                    .arg(proposed)
                    .arg(2 * CLAIM_TTL_MS),
            )
            .await?;
        let target = target.parse().map_err(|_| StoreError::Corrupt {
            what: format!("costop:restore:{key} {group}"),
            message: format!("`{target}` is not a number"),
        })?;
        Ok((target, new == 1))
    }

    /// The notice holding the one response of `key`'s (instance, kind), if any.
    pub async fn claim_holder(&self, key: &NoticeKey) -> Result<Option<NoticeKey>, StoreError> {
        let held: Option<String> = self.run("read claim", redis::cmd("GET").arg(claim_key(key))).await?;
        Ok(held.as_deref().and_then(parse_notice_key))
    }

    /// Give up the claim of `key`, if it still holds it.
    pub async fn release_claim(&self, key: &NoticeKey) -> Result<(), StoreError> {
        let script = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 0";
        let _: i64 = self
            .run(
                "release claim",
                redis::cmd("EVAL").arg(script).arg(1).arg(claim_key(key)).arg(key.to_string()),
            )
            .await?;
        Ok(())
    }

    /// The notice keys of the `limit` responses whose plans were saved
    /// last, newest first (finished or not; see [`RECENT`]).
    pub async fn recent(&self, limit: usize) -> Result<Vec<NoticeKey>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = self
            .run("list recent responses", redis::cmd("ZREVRANGE").arg(RECENT).arg(0).arg(limit - 1))
            .await?;
        Ok(keys.iter().filter_map(|k| parse_notice_key(k)).collect())
    }

    /// Delete every costop key (tests and `costop` resets).
    pub async fn flush_costop_keys(&self) -> Result<(), StoreError> {
        let keys: Vec<String> = self.run("scan keys", redis::cmd("KEYS").arg("costop:*")).await?;
        for k in keys {
            let _: i64 = self.run("delete key", redis::cmd("DEL").arg(k)).await?;
        }
        Ok(())
    }
}

/// A stream entry with the credential its writer attached (the agent's
/// service-account token), to be verified before the notice is acted on.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedEntry {
    /// Stream id.
    pub id: String,
    /// The notice, or why it could not be read.
    pub notice: Result<Notice, String>,
    /// The `token` field, if any.
    pub token: Option<String>,
}

/// Read one stream entry's fields (as Redis gives them: any bytes): the
/// `notice` field as a [`Notice`] (anything else, or no such field, is the
/// reason it cannot be read) and the `token` field, which must be text to
/// count. Other fields are ignored. Never fails: a bad entry carries its
/// reason, so the server acknowledges it, counts it and logs why.
pub fn entry_from_fields(id: String, fields: &[(Vec<u8>, Vec<u8>)]) -> SignedEntry {
    let field = |name: &str| fields.iter().find(|(k, _)| k.as_slice() == name.as_bytes()).map(|(_, v)| v);
    let notice = match field("notice") {
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str::<Notice>(text).map_err(|e| format!("stream entry {id}: {e}")),
            Err(_) => Err(format!("stream entry {id}: the `notice` field is not UTF-8")),
        },
        None => Err(format!("stream entry {id} has no `notice` field")),
    };
    let token = field("token").and_then(|t| String::from_utf8(t.clone()).ok());
    SignedEntry { notice, token, id }
}

/// The entries of an `XAUTOCLAIM` or `XREADGROUP` list, read from the raw
/// reply (`[[id, [field, value, …]], …]`) so that no entry, whatever bytes
/// it holds, can make the whole read fail: a bad one becomes a
/// [`SignedEntry`] with its reason (acknowledged by the server).
fn entries_from_list(list: &[Value]) -> Vec<SignedEntry> {
    list.iter()
        .filter_map(|e| match e {
            Value::Array(pair) if pair.len() == 2 => {
                let id: String = redis::from_redis_value(&pair[0]).ok()?;
                let flat: Vec<Vec<u8>> = match &pair[1] {
                    Value::Array(items) => {
                        items.iter().map(|v| redis::from_redis_value(v).unwrap_or_default()).collect()
                    }
                    _ => Vec::new(),
                };
                let fields: Vec<(Vec<u8>, Vec<u8>)> = flat
                    .chunks(2)
                    .filter(|kv| kv.len() == 2)
                    .map(|kv| (kv[0].clone(), kv[1].clone()))
                    .collect();
                Some(entry_from_fields(id, &fields))
            }
            _ => None,
        })
        .collect()
}

/// The entries of an `XREADGROUP` reply: nil (nothing new), or per stream
/// its name and its list (an array of pairs, or a map under RESP3).
fn entries_from_read(reply: &Value) -> Vec<SignedEntry> {
    let lists: Vec<&Value> = match reply {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(pair) if pair.len() == 2 => Some(&pair[1]),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.iter().map(|(_, list)| list).collect(),
        _ => Vec::new(),
    };
    lists
        .into_iter()
        .flat_map(|l| match l {
            Value::Array(list) => entries_from_list(list),
            _ => Vec::new(),
        })
        .collect()
}

impl RedisStore {
    /// Change the mirror of `kind` in place: write the entries that
    /// changed, delete those gone (in chunks of 500, so no one command
    /// holds Redis, or the connection the responses share, for long).
    pub async fn mirror_changes(
        &self,
        kind: &str,
        changed: &[(String, String)],
        removed: &[String],
    ) -> Result<(), StoreError> {
        let key = format!("costop:mirror:{kind}");
        self.hset_in_chunks(&key, changed).await?;
        for chunk in removed.chunks(500) {
            let _: i64 = self.run("mirror", redis::cmd("HDEL").arg(&key).arg(chunk)).await?;
        }
        Ok(())
    }

    /// Replace the mirror of `kind` with the entries `next_batch` gives, a
    /// batch at a time until it gives none, into a hash of its own renamed
    /// over the mirror at the end (see `AnyStore::mirror_in_batches`).
    pub async fn mirror_in_batches(
        &self,
        kind: &str,
        mut next_batch: impl FnMut() -> Vec<(String, String)> + Send,
    ) -> Result<(), StoreError> {
        let key = format!("costop:mirror:{kind}");
        let tmp = format!("{key}:next");
        let _: i64 = self.run("mirror", redis::cmd("DEL").arg(&tmp)).await?;
        let mut written = 0usize;
        loop {
            let batch = next_batch();
            if batch.is_empty() {
                break;
            }
            written += batch.len();
            self.hset_in_chunks(&tmp, &batch).await?;
        }
        if written == 0 {
            let _: i64 = self.run("mirror", redis::cmd("DEL").arg(&key)).await?;
        } else {
            let _: String = self.run("mirror", redis::cmd("RENAME").arg(&tmp).arg(&key)).await?;
        }
        Ok(())
    }

    /// Write `entries` into the hash `key`, 500 fields per HSET.
    async fn hset_in_chunks(&self, key: &str, entries: &[(String, String)]) -> Result<(), StoreError> {
        for chunk in entries.chunks(500) {
            let mut cmd = redis::cmd("HSET");
            cmd.arg(key);
            for (name, json) in chunk {
                cmd.arg(name).arg(json);
            }
            let _: i64 = self.run("mirror", &cmd).await?;
        }
        Ok(())
    }
}

impl StorePort for RedisStore {
    type Error = StoreError;

    async fn record_notice(&self, notice: &Notice) -> Result<bool, StoreError> {
        let body = serde_json::to_string(notice)
            .map_err(|e| StoreError::Corrupt { what: "notice".into(), message: e.to_string() })?;
        let key = notice_key(&notice.key());
        let new: i64 =
            self.run("record notice", redis::cmd("HSETNX").arg(&key).arg("notice").arg(body)).await?;
        if new == 1 {
            let _: i64 = self
                .run("record notice", redis::cmd("HSET").arg(&key).arg("first_seen").arg(notice.received_at))
                .await?;
        }
        Ok(new == 1)
    }

    async fn publish_notice(&self, notice: &Notice) -> Result<(), StoreError> {
        self.publish_signed(notice, None).await
    }

    async fn read_notices(&self, consumer: &str, block_ms: u64) -> Result<Vec<StreamEntry>, StoreError> {
        Ok(self.read_signed(consumer, block_ms).await?.into_iter().map(|e| (e.id, e.notice)).collect())
    }

    async fn ack_notice(&self, id: &str) -> Result<(), StoreError> {
        let _: i64 = self.run("ack notice", redis::cmd("XACK").arg(STREAM).arg(GROUP).arg(id)).await?;
        Ok(())
    }

    async fn save_plan(&self, plan: &Plan) -> Result<bool, StoreError> {
        let body = serde_json::to_string(plan)
            .map_err(|e| StoreError::Corrupt { what: "plan".into(), message: e.to_string() })?;
        let mac = match &self.plan_key {
            Some(key) => {
                use hmac::Mac;
                hex::encode(plan_mac(key, &plan.notice, &body)?.finalize().into_bytes())
            }
            None => String::new(),
        };
        // The plan, its MAC and its place in the open set in one atomic
        // step: a crash between them would leave a plan nobody runs.
        let script = "if redis.call('HSETNX', KEYS[1], 'plan', ARGV[1]) == 1 then \
                      if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'plan_mac', ARGV[3]) end \
                      redis.call('SADD', KEYS[2], ARGV[2]) \
                      redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2]) \
                      redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -1 - tonumber(ARGV[5])) \
                      return 1 else return 0 end";
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let new: i64 = self
            .run(
                "save plan",
                redis::cmd("EVAL")
                    .arg(script)
                    .arg(3)
                    .arg(response_key(&plan.notice))
                    .arg(OPEN)
                    .arg(RECENT)
                    .arg(body)
                    .arg(plan.notice.to_string())
                    .arg(mac)
                    .arg(now)
                    .arg(RECENT_KEPT),
            )
            .await?;
        Ok(new == 1)
    }

    async fn step_started(&self, key: &NoticeKey, index: usize, at: Millis) -> Result<(), StoreError> {
        let _: i64 = self
            .run(
                "record step",
                redis::cmd("HSET").arg(response_key(key)).arg(format!("step:{index}:started")).arg(at),
            )
            .await?;
        Ok(())
    }

    async fn step_done(
        &self,
        key: &NoticeKey,
        index: usize,
        at: Millis,
        outcome: &str,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .run(
                "record step",
                redis::cmd("HSET")
                    .arg(response_key(key))
                    .arg(format!("step:{index}:done"))
                    .arg(at)
                    .arg(format!("step:{index}:outcome"))
                    .arg(outcome),
            )
            .await?;
        Ok(())
    }

    async fn response_done(&self, key: &NoticeKey, at: Millis) -> Result<(), StoreError> {
        let _: i64 = self
            .run("finish response", redis::cmd("HSETNX").arg(response_key(key)).arg("done_at").arg(at))
            .await?;
        let _: i64 = self.run("finish response", redis::cmd("SREM").arg(OPEN).arg(key.to_string())).await?;
        Ok(())
    }

    async fn response(&self, key: &NoticeKey) -> Result<Option<ResponseRecord>, StoreError> {
        let fields: HashMap<String, String> =
            self.run("read response", redis::cmd("HGETALL").arg(response_key(key))).await?;
        let Some(plan) = fields.get("plan") else { return Ok(None) };
        if let Some(k) = &self.plan_key {
            use hmac::Mac;
            let forged = |why| StoreError::Forged { key: key.to_string(), why };
            let given = fields.get("plan_mac").ok_or_else(|| forged("no MAC"))?;
            let given = hex::decode(given).map_err(|_| forged("a MAC that is not hex"))?;
            plan_mac(k, key, plan)?.verify_slice(&given).map_err(|_| forged("a wrong MAC"))?;
        }
        let plan: Plan = serde_json::from_str(plan)
            .map_err(|e| StoreError::Corrupt { what: format!("plan of {key}"), message: e.to_string() })?;
        let num = |f: String| fields.get(&f).and_then(|v| v.parse::<Millis>().ok());
        let steps = (0..plan.steps.len())
            .map(|i| StepRecord {
                started_at: num(format!("step:{i}:started")),
                done_at: num(format!("step:{i}:done")),
                outcome: fields.get(&format!("step:{i}:outcome")).cloned(),
            })
            .collect();
        Ok(Some(ResponseRecord { plan, steps, done_at: num("done_at".into()) }))
    }

    async fn unfinished(&self) -> Result<Vec<NoticeKey>, StoreError> {
        let keys: Vec<String> = self.run("list open responses", redis::cmd("SMEMBERS").arg(OPEN)).await?;
        let mut keys: Vec<NoticeKey> = keys.iter().filter_map(|k| parse_notice_key(k)).collect();
        keys.sort();
        Ok(keys)
    }

    async fn mirror(&self, kind: &str, entries: &[(String, String)]) -> Result<(), StoreError> {
        let mut whole = Some(entries.to_vec());
        self.mirror_in_batches(kind, || whole.take().unwrap_or_default()).await
    }
}
