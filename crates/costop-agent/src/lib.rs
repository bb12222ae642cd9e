//! `costop agent`: one per Spot node. Polls instance metadata (IMDSv2) for
//! the interruption notice and the rebalance recommendation, and hands each
//! new notice to every configured sink: Redis (a stream the server
//! consumes) and the server's HTTP intake. It needs at least one sink and
//! refuses to start without one. Each sink is retried, in memory and on its
//! own, until it takes the notice or the notice's deadline passes (a notice
//! without a deadline, the rebalance recommendation, is retried while the
//! agent runs); a sink given up on is logged as an error and counted
//! ([`Agent::gave_up`]). Every failure is logged with the sink's URL.
//!
//! Both sinks carry the pod's service-account token (`token_path`): the
//! bearer token of the HTTP request, the `token` field of the stream entry.
//! The server acts on neither without it.

pub mod imds;

use costop_core::ports::Clock;
use costop_core::{Notice, NoticeKey, NoticeKind, NoticeSource};
use costop_store::RedisStore;
use imds::{parse_instance_action, parse_rebalance, ImdsClient, ImdsError, INSTANCE_ACTION, REBALANCE};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Instance metadata base URL (`http://169.254.169.254`).
    pub imds_url: String,
    /// The server's base URL, if the fast path is used.
    pub server_url: Option<String>,
    /// Redis URL, if the durable path is used.
    pub redis_url: Option<String>,
    /// The pod's projected service-account token file.
    pub token_path: Option<PathBuf>,
    /// Poll period (default 500 ms).
    pub poll: Duration,
}

/// Why the agent will not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// Neither a server URL nor a Redis URL: no notice could be delivered.
    #[error(
        "no sink for notices: set the server URL (--server-url, COSTOP_SERVER_URL) or the Redis URL \
         (--redis-url, COSTOP_REDIS_URL), or both; without one every notice would be lost"
    )]
    NoSink,
    /// A URL that cannot be used.
    #[error("{what} URL `{url}`: {why}")]
    BadUrl {
        /// Which URL (`server`, `redis`, `instance metadata`).
        what: &'static str,
        /// The URL, password hidden.
        url: String,
        /// What is wrong.
        why: String,
    },
}

impl AgentConfig {
    /// The server URL, if one is set (an empty value is none).
    pub fn server(&self) -> Option<&str> {
        self.server_url.as_deref().map(str::trim).filter(|u| !u.is_empty())
    }

    /// The Redis URL, if one is set (an empty value is none).
    pub fn redis(&self) -> Option<&str> {
        self.redis_url.as_deref().map(str::trim).filter(|u| !u.is_empty())
    }

    /// Refuse a configuration that could not deliver a notice: no sink at
    /// all, or a URL that is not one.
    pub fn check(&self) -> Result<(), AgentError> {
        let check = |what: &'static str, url: &str, schemes: &[&str]| {
            let bad = |why: String| AgentError::BadUrl { what, url: redacted(url), why };
            let parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
            if !schemes.contains(&parsed.scheme()) {
                return Err(bad(format!("the scheme must be one of {}", schemes.join(", "))));
            }
            Ok(())
        };
        check("instance metadata", self.imds_url.trim(), &["http", "https"])?;
        if let Some(url) = self.server() {
            check("server", url, &["http", "https"])?;
        }
        if let Some(url) = self.redis() {
            check("redis", url, &["redis", "rediss", "unix", "redis+unix"])?;
        }
        if self.server().is_none() && self.redis().is_none() {
            return Err(AgentError::NoSink);
        }
        Ok(())
    }
}

/// A URL fit for a log line: any password replaced by `***`.
pub fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(_) => url.to_string(),
        // Unparseable: keep only what precedes a possible `user:password@`.
        Err(_) => match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_string(),
        },
    }
}

/// What became of a notice at one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// The agent has no such sink: nothing was (or will be) delivered there.
    NotConfigured,
    /// Not taken yet; being retried.
    Pending,
    /// The sink took the notice (the server answered 2xx, Redis added the
    /// stream entry).
    Taken,
    /// The notice's deadline passed, or the agent stopped, before the sink
    /// took it: logged as an error and counted.
    GaveUp,
}

impl Sink {
    /// No more attempts will be made.
    pub fn is_final(self) -> bool {
        !matches!(self, Sink::Pending)
    }
}

/// Where a notice has been delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The server's HTTP intake.
    pub server: Sink,
    /// The Redis stream.
    pub redis: Sink,
}

impl Delivered {
    /// Some sink took the notice.
    pub fn taken(&self) -> bool {
        self.server == Sink::Taken || self.redis == Sink::Taken
    }

    /// No sink is being retried any more.
    pub fn is_final(&self) -> bool {
        self.server.is_final() && self.redis.is_final()
    }
}

/// The two sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SinkKind {
    Server,
    Redis,
}

impl SinkKind {
    fn name(self) -> &'static str {
        match self {
            SinkKind::Server => "server",
            SinkKind::Redis => "redis",
        }
    }
}

/// Wait until `shutdown` turns true. A dropped sender never asks for a stop.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The agent.
pub struct Agent<C: Clock> {
    config: AgentConfig,
    clock: Arc<C>,
    http: reqwest::Client,
    deliveries: tokio::sync::mpsc::UnboundedSender<(NoticeKey, Delivered)>,
    gave_up: AtomicU64,
}

impl<C: Clock + 'static> Agent<C> {
    /// An agent, or why its configuration could not deliver a notice (no
    /// sink, or a URL that is not one: [`AgentConfig::check`]). This is the
    /// only way to make one, so a running agent always has a sink.
    /// `deliveries` receives each notice's delivery state changes (for
    /// tests and metrics).
    pub fn try_new(
        config: AgentConfig,
        clock: Arc<C>,
        deliveries: tokio::sync::mpsc::UnboundedSender<(NoticeKey, Delivered)>,
    ) -> Result<Self, AgentError> {
        config.check()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Ok(Self { config, clock, http, deliveries, gave_up: AtomicU64::new(0) })
    }

    /// How many times a sink was given up on (a notice's deadline passed,
    /// or the agent stopped, before that sink took it).
    pub fn gave_up(&self) -> u64 {
        self.gave_up.load(Ordering::Relaxed)
    }

    /// Poll until `shutdown` turns true. The configuration was checked by
    /// [`Agent::try_new`]: an agent without a sink is never built.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(
            imds = self.config.imds_url,
            server = self.config.server().unwrap_or("none"),
            redis = self.config.redis().map(redacted).unwrap_or_else(|| "none".into()),
            "agent starting"
        );
        let mut imds = ImdsClient::new(&self.config.imds_url, Duration::from_secs(1));
        let instance_id = loop {
            match imds.get("instance-id").await {
                Ok(Some(id)) if id.starts_with("i-") => break id,
                Ok(other) => tracing::error!(?other, "instance-id is not an instance id; retrying"),
                Err(e) => {
                    tracing::warn!(error = %e, url = self.config.imds_url, "instance metadata not reachable yet")
                }
            }
            tokio::select! {
                _ = self.clock.sleep(Duration::from_secs(1)) => {}
                _ = stopped(&mut shutdown) => return,
            }
        };
        tracing::info!(instance_id, "agent polling instance metadata");
        let mut seen: HashSet<NoticeKey> = HashSet::new();
        let mut wait = self.config.poll;
        loop {
            let mut healthy = true;
            for path in [INSTANCE_ACTION, REBALANCE] {
                match self.poll_one(&mut imds, path, &instance_id).await {
                    Ok(Some(notice)) => {
                        if seen.insert(notice.key()) {
                            tracing::info!(key = %notice.key(), "notice from instance metadata");
                            let me = self.clone();
                            let stop = shutdown.clone();
                            tokio::spawn(async move { me.deliver(notice, stop).await });
                        }
                    }
                    Ok(None) => {}
                    Err(ImdsError::Malformed { path, message }) => {
                        tracing::error!(path, message, "malformed instance metadata; still polling");
                    }
                    Err(e) => {
                        healthy = false;
                        tracing::warn!(error = %e, "instance metadata read failed; backing off");
                    }
                }
            }
            wait = if healthy { self.config.poll } else { (wait * 2).min(Duration::from_secs(5)) };
            tokio::select! {
                _ = self.clock.sleep(wait) => {}
                _ = stopped(&mut shutdown) => return,
            }
        }
    }

    async fn poll_one(
        &self,
        imds: &mut ImdsClient,
        path: &str,
        instance: &str,
    ) -> Result<Option<Notice>, ImdsError> {
        let Some(body) = imds.get(path).await? else { return Ok(None) };
        let kind = if path == INSTANCE_ACTION {
            let (action, effective_at) = parse_instance_action(&body)?;
            NoticeKind::SpotInterruption { action, effective_at }
        } else {
            NoticeKind::RebalanceRecommendation { notice_time: parse_rebalance(&body)? }
        };
        Ok(Some(Notice {
            instance_id: instance.into(),
            kind,
            received_at: self.clock.now_ms(),
            source: NoticeSource::Agent,
        }))
    }

    /// Hand a notice to every configured sink, each retried until it takes
    /// the notice or the notice's deadline passes (no deadline: until
    /// `shutdown`). Returns where it ended up; every change is also sent on
    /// the deliveries channel.
    pub async fn deliver(&self, notice: Notice, shutdown: watch::Receiver<bool>) -> Delivered {
        let initial = |url: Option<&str>| if url.is_some() { Sink::Pending } else { Sink::NotConfigured };
        let state = Mutex::new(Delivered {
            server: initial(self.config.server()),
            redis: initial(self.config.redis()),
        });
        let key = notice.key();
        let report = |sink: SinkKind, to: Sink| {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            match sink {
                SinkKind::Server => s.server = to,
                SinkKind::Redis => s.redis = to,
            }
            let _ = self.deliveries.send((key.clone(), *s));
        };
        let server = async {
            if self.config.server().is_some() {
                report(SinkKind::Server, self.until_taken(SinkKind::Server, &notice, shutdown.clone()).await);
            }
        };
        let redis = async {
            if self.config.redis().is_some() {
                report(SinkKind::Redis, self.until_taken(SinkKind::Redis, &notice, shutdown.clone()).await);
            }
        };
        tokio::join!(server, redis);
        let done = *state.lock().unwrap_or_else(|e| e.into_inner());
        if !done.taken() {
            tracing::error!(key = %key, ?done, "no sink took the notice: it is lost");
        }
        done
    }

    /// Retry one sink until it takes the notice ([`Sink::Taken`]) or the
    /// notice's deadline passes or the agent stops ([`Sink::GaveUp`]).
    async fn until_taken(
        &self,
        sink: SinkKind,
        notice: &Notice,
        mut shutdown: watch::Receiver<bool>,
    ) -> Sink {
        let key = notice.key();
        let deadline = notice.deadline();
        let url = match sink {
            SinkKind::Server => self.config.server().map(str::to_string),
            SinkKind::Redis => self.config.redis().map(redacted),
        }
        .unwrap_or_default();
        let mut redis: Option<RedisStore> = None;
        let mut backoff = Duration::from_millis(100);
        let mut attempts = 0u32;
        let mut last_error: Option<String> = None;
        loop {
            attempts += 1;
            let outcome = match sink {
                SinkKind::Server => self.post(notice).await,
                SinkKind::Redis => self.publish(notice, &mut redis).await,
            };
            match outcome {
                Ok(()) => {
                    tracing::info!(key = %key, sink = sink.name(), url, attempts, "sink took the notice");
                    return Sink::Taken;
                }
                Err(e) => {
                    // Each new reason once, not every retry.
                    if last_error.as_deref() != Some(e.as_str()) {
                        if e.contains("refused the notice") {
                            tracing::error!(key = %key, sink = sink.name(), url, error = e, "sink refused the notice; retrying until its deadline");
                        } else {
                            tracing::warn!(key = %key, sink = sink.name(), url, error = e, "sink did not take the notice; retrying until its deadline");
                        }
                    }
                    last_error = Some(e);
                }
            }
            let now = self.clock.now_ms();
            let left = match deadline {
                Some(d) if now >= d => {
                    self.gave_up.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(key = %key, sink = sink.name(), url, attempts, error = last_error.as_deref().unwrap_or(""), "the notice's deadline passed before the sink took it; giving up on this sink");
                    return Sink::GaveUp;
                }
                Some(d) => Duration::from_millis(d - now),
                None => Duration::MAX,
            };
            tokio::select! {
                _ = self.clock.sleep(backoff.min(left)) => {}
                _ = stopped(&mut shutdown) => {
                    self.gave_up.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(key = %key, sink = sink.name(), url, attempts, error = last_error.as_deref().unwrap_or(""), "shutting down before the sink took the notice");
                    return Sink::GaveUp;
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// XADD the notice to the Redis stream, connecting first if needed.
    async fn publish(&self, notice: &Notice, redis: &mut Option<RedisStore>) -> Result<(), String> {
        let Some(url) = self.config.redis() else { return Err("no Redis URL".into()) };
        if redis.is_none() {
            let store = RedisStore::connect(url).await.map_err(|e| format!("cannot connect: {e}"))?;
            *redis = Some(store);
        }
        let Some(store) = redis.as_ref() else { return Err("no connection".into()) };
        // The server acts on a stream entry only with the agent's credential.
        let token = self.token()?;
        store
            .publish_signed(notice, token.as_deref())
            .await
            .map_err(|e| format!("did not add the stream entry: {e}"))
    }

    /// The pod's service-account token, read afresh (the kubelet rotates it).
    fn token(&self) -> Result<Option<String>, String> {
        let Some(path) = &self.config.token_path else { return Ok(None) };
        let token = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the service-account token {}: {e}", path.display()))?;
        Ok(Some(token.trim().to_string()))
    }

    /// POST the notice to the server: `Ok` once it answers 2xx (accepted,
    /// or a duplicate of one it has).
    async fn post(&self, notice: &Notice) -> Result<(), String> {
        let Some(base) = self.config.server() else { return Err("no server URL".into()) };
        let url = format!("{}/v1/notices", base.trim_end_matches('/'));
        let mut req = self.http.post(&url).json(notice);
        if let Some(token) = self.token()? {
            req = req.bearer_auth(token);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                let code = r.status();
                let body = r.text().await.unwrap_or_default();
                let body: String = body.chars().take(300).collect();
                let what = if code.is_client_error() { "refused" } else { "could not take" };
                Err(format!(
                    "POST {url}: HTTP {code} ({what} the notice): {body}{}",
                    token_hint(code.as_u16(), &body)
                ))
            }
            Err(e) => Err(format!("POST {url}: not reachable: {e}")),
        }
    }
}

/// How to fix a token the server refused because it names no pod: a legacy
/// service-account token (before Kubernetes 1.22 the default mount holds
/// one) instead of a bound one.
fn token_hint(code: u16, body: &str) -> &'static str {
    if code == 401 && body.contains("names no pod") {
        " (this is a legacy service-account token: mount a projected serviceAccountToken volume, \
         which binds the token to this pod, and point COSTOP_TOKEN_PATH at it, as deploy/base/agent.yaml does)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::token_hint;

    #[test]
    fn a_legacy_token_refusal_says_how_to_fix_it() {
        let body = r#"{"error":"system:serviceaccount:costop-system:costop-agent: the token names no pod on a node"}"#;
        assert!(token_hint(401, body).contains("COSTOP_TOKEN_PATH"));
        assert_eq!(token_hint(401, "bad token"), "");
        assert_eq!(token_hint(403, body), "");
    }
}
