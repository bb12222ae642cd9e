//! The live dashboard of `costop demo` and `costop server --dashboard`:
//! one page (`assets/dashboard.html`) with
//! uPlot charts (uPlot 1.6.32, MIT licence; the files are in the binary,
//! the same bytes `costop sim --report` inlines: `costop_sim::report`), fed by server-sent events of the monitor's
//! snapshot every second (`/events`), or one snapshot (`/state`). What it
//! shows comes from a [`Source`]: the demo's [`Monitor`] (the emulated
//! world, the load generator, the server's responses) or the server's view
//! (`crate::server_dashboard`: its responses and its cluster view; the
//! page hides what only the demo knows).

use crate::demo_report::Monitor;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const PAGE: &str = include_str!("../assets/dashboard.html");
use costop_sim::report::{UPLOT_CSS, UPLOT_JS, UPLOT_LICENSE};

/// What the page shows, as one JSON object: `mode` (`demo` or `server`),
/// `t`, `nodes`, `pods`, `responses`, `history` and `summary`.
pub trait Source: Send + Sync + 'static {
    /// The state now.
    fn snapshot(&self) -> serde_json::Value;
}

impl Source for Monitor {
    fn snapshot(&self) -> serde_json::Value {
        Monitor::snapshot(self)
    }
}

/// Serve the dashboard on `listener` until `shutdown`.
pub async fn serve<S: Source>(
    listener: tokio::net::TcpListener,
    monitor: Arc<S>,
    shutdown: watch::Receiver<bool>,
) {
    let events_monitor = monitor.clone();
    let events_stop = shutdown.clone();
    let app = axum::Router::new()
        .route("/", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }))
        .route("/uplot.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], UPLOT_JS) }))
        .route("/uplot.css", get(|| async { ([(header::CONTENT_TYPE, "text/css")], UPLOT_CSS) }))
        .route(
            "/uplot-license.txt",
            get(|| async { ([(header::CONTENT_TYPE, "text/plain")], UPLOT_LICENSE) }),
        )
        .route(
            "/state",
            get(move || {
                let m = monitor.clone();
                async move { axum::Json(m.snapshot()).into_response() }
            }),
        )
        .route(
            "/events",
            get(move || {
                let (m, stop) = (events_monitor.clone(), events_stop.clone());
                async move { events(m, stop) }
            }),
        );
    let mut stop = shutdown.clone();
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
}

/// A snapshot every second until the demo stops.
fn events<S: Source>(
    monitor: Arc<S>,
    shutdown: watch::Receiver<bool>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold((monitor, shutdown, true), |(m, mut stop, first)| async move {
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
        let event = Event::default().data(m.snapshot().to_string());
        Some((Ok(event), (m, stop, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
