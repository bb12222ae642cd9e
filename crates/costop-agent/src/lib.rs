//! `costop agent`: one per Spot node. Polls instance metadata (IMDSv2) for
//! the interruption notice and the rebalance recommendation; hands each new
//! notice to Redis (a stream the server consumes) and to the server's HTTP
//! intake, whichever works first; keeps retrying, in memory, until both have
//! it. Never drops a notice while it runs.

pub mod imds;

use costop_core::ports::{Clock, StorePort};
use costop_core::{Notice, NoticeKey, NoticeKind, NoticeSource};
use costop_store::RedisStore;
use imds::{parse_instance_action, parse_rebalance, ImdsClient, ImdsError, INSTANCE_ACTION, REBALANCE};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
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

/// Where a notice has been delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delivered {
    /// The server answered 2xx.
    pub server: bool,
    /// Redis took it.
    pub redis: bool,
}

/// The agent.
pub struct Agent<C: Clock> {
    config: AgentConfig,
    clock: Arc<C>,
    http: reqwest::Client,
    deliveries: tokio::sync::mpsc::UnboundedSender<(NoticeKey, Delivered)>,
}

impl<C: Clock + 'static> Agent<C> {
    /// An agent. `deliveries` receives each notice's delivery state changes (for tests and metrics).
    pub fn new(
        config: AgentConfig,
        clock: Arc<C>,
        deliveries: tokio::sync::mpsc::UnboundedSender<(NoticeKey, Delivered)>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { config, clock, http, deliveries }
    }

    /// Poll until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut imds = ImdsClient::new(&self.config.imds_url, Duration::from_secs(1));
        let instance_id = loop {
            match imds.get("instance-id").await {
                Ok(Some(id)) if id.starts_with("i-") => break id,
                Ok(other) => tracing::error!(?other, "instance-id is not an instance id; retrying"),
                Err(e) => tracing::warn!(error = %e, "instance metadata not reachable yet"),
            }
            tokio::select! {
                _ = self.clock.sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
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
                _ = shutdown.wait_for(|s| *s) => return,
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

    /// Hand a notice to Redis and to the server until both have it.
    pub async fn deliver(&self, notice: Notice, mut shutdown: watch::Receiver<bool>) {
        let mut done =
            Delivered { server: self.config.server_url.is_none(), redis: self.config.redis_url.is_none() };
        let mut redis: Option<RedisStore> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            let before = done;
            let (server, to_redis) = tokio::join!(
                async {
                    if done.server {
                        return true;
                    }
                    self.post(&notice).await
                },
                async {
                    if done.redis {
                        return true;
                    }
                    if redis.is_none() {
                        redis = RedisStore::connect(self.config.redis_url.as_deref().unwrap_or_default())
                            .await
                            .ok();
                    }
                    match &redis {
                        Some(store) => match store.publish_notice(&notice).await {
                            Ok(()) => true,
                            Err(e) => {
                                tracing::warn!(error = %e, "redis did not take the notice; retrying");
                                false
                            }
                        },
                        None => false,
                    }
                }
            );
            done = Delivered { server: server || done.server, redis: to_redis || done.redis };
            if done != before {
                let _ = self.deliveries.send((notice.key(), done));
            }
            if done.server && done.redis {
                return;
            }
            tokio::select! {
                _ = self.clock.sleep(backoff) => {}
                _ = shutdown.wait_for(|s| *s) => {
                    tracing::error!(key = %notice.key(), ?done, "shutting down with a notice not fully delivered");
                    return;
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// POST the notice to the server. `true` once it is taken (or refused
    /// for good: retrying a refusal cannot help; Redis still carries it).
    async fn post(&self, notice: &Notice) -> bool {
        let Some(base) = &self.config.server_url else { return true };
        let mut req = self.http.post(format!("{}/v1/notices", base.trim_end_matches('/'))).json(notice);
        if let Some(path) = &self.config.token_path {
            match std::fs::read_to_string(path) {
                Ok(token) => req = req.bearer_auth(token.trim()),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot read the service-account token")
                }
            }
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => true,
            Ok(r) if r.status().is_client_error() => {
                let code = r.status();
                let body = r.text().await.unwrap_or_default();
                tracing::error!(%code, body, "server refused the notice");
                true
            }
            Ok(r) => {
                tracing::warn!(code = %r.status(), "server could not take the notice; retrying");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "server not reachable; retrying");
                false
            }
        }
    }
}
