//! The HTTP listener: hyper's HTTP/1 under the axum router, with the
//! limits a listener open to every pod needs.
//!
//! - a header-read timeout ([`Limits::header_read_timeout`]): a connection
//!   that does not send a whole request head in time (idle keep-alive ones
//!   included) is closed;
//! - a request timeout ([`Limits::request_timeout`]): a slow body or a
//!   stuck handler gets 408;
//! - a body limit ([`Limits::max_body_bytes`], 413 beyond it) and a header
//!   limit;
//! - a connection limit ([`Limits::max_connections`]): at the limit a new
//!   connection closes the oldest one that is not serving a request, so a
//!   flood of idle connections never locks out `/healthz` (nor the agents);
//!   when every connection is serving a request, the new one is closed.
//!
//! The process's soft limit of open files is raised to its hard limit at
//! start ([`raise_fd_limit`]).

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

/// The listener's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections held at once.
    pub max_connections: usize,
    /// Time to send a whole request head.
    pub header_read_timeout: Duration,
    /// Time to read the body and answer.
    pub request_timeout: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Time given to requests in flight at shutdown.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            drain: Duration::from_secs(5),
        }
    }
}

/// One connection: requests it is serving now, and the switch that closes it.
#[derive(Default)]
struct Conn {
    in_flight: AtomicUsize,
    close: Notify,
}

/// Connections open now, oldest first.
#[derive(Default)]
struct Conns {
    next: std::sync::atomic::AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
    /// Connections closed to make room (for tests and logs).
    evicted: AtomicUsize,
}

impl Conns {
    /// Room for a new connection: `None` when every held connection is
    /// serving a request (the new one is turned away).
    fn admit(&self, max: usize) -> Option<(u64, Arc<Conn>)> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while open.len() >= max.max(1) {
            let idle =
                open.iter().find(|(_, c)| c.in_flight.load(Ordering::SeqCst) == 0).map(|(id, _)| *id)?;
            if let Some(c) = open.remove(&idle) {
                // A stored permit: closes it even before its task waits.
                c.close.notify_one();
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::default());
        open.insert(id, conn.clone());
        Some((id, conn))
    }

    fn gone(&self, id: u64) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Counts a request in flight on its connection while alive.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn new(c: &Arc<Conn>) -> Self {
        c.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(c.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Raise this process's soft limit of open files to its hard limit; the
/// limit in force afterwards.
pub fn raise_fd_limit() -> Option<libc::rlim_t> {
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Some(lim.rlim_max);
            }
        }
        Some(lim.rlim_cur)
    }
}

/// Serve `app` on `listener` within `limits` until `shutdown` turns true;
/// then stop accepting and give requests in flight [`Limits::drain`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = app.layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes));
    let conns = Arc::new(Conns::default());
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors, most likely: let some close.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        // Reap finished connection tasks.
        while tasks.try_join_next().is_some() {}
        let Some((id, conn)) = conns.admit(limits.max_connections) else {
            tracing::warn!(
                max = limits.max_connections,
                "every connection is serving a request; turned one away"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, conns, limits) = (app.clone(), conns.clone(), limits.clone());
        let mut stop = shutdown.clone();
        tasks.spawn(async move {
            let served = conn.clone();
            let timeout = limits.request_timeout;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let guard = InFlight::new(&served);
                let app = app.clone();
                async move {
                    let _guard = guard;
                    match tokio::time::timeout(timeout, app.oneshot(req.map(Body::new))).await {
                        Ok(Ok(r)) => Ok::<Response<Body>, Infallible>(r),
                        Ok(Err(never)) => match never {},
                        Err(_) => Ok(Response::builder()
                            .status(StatusCode::REQUEST_TIMEOUT)
                            .body(Body::from("request timed out\n"))
                            .unwrap_or_default()),
                    }
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .max_headers(100);
            let http = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(http);
            let stopping = tokio::select! {
                _ = http.as_mut() => false,
                _ = conn.close.notified() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopping {
                http.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(limits.drain, http.as_mut()).await;
            }
            conns.gone(id);
        });
    }
    drop(listener);
    let open = conns.len();
    tracing::info!(open, evicted = conns.evicted.load(Ordering::Relaxed), "listener stopped; draining");
    let _ = tokio::time::timeout(limits.drain + Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_limit_the_oldest_idle_connection_makes_room() {
        let conns = Conns::default();
        let (a, ca) = conns.admit(2).unwrap();
        let (_b, cb) = conns.admit(2).unwrap();
        let busy = InFlight::new(&ca);
        // a is serving a request: b, the oldest idle one, goes.
        let (_c, _) = conns.admit(2).unwrap();
        assert_eq!(conns.len(), 2);
        assert_eq!(conns.evicted.load(Ordering::Relaxed), 1);
        let _ = cb;
        let (_d, cd) = conns.admit(2).unwrap();
        let busy_d = InFlight::new(&cd);
        // Both held connections serve requests: the new one is turned away.
        assert!(conns.admit(2).is_none());
        drop((busy, busy_d));
        conns.gone(a);
        assert!(conns.admit(2).is_some());
    }
}
