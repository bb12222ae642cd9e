//! The real clock (the `Clock` port for production).

use costop_core::ports::Clock;
use costop_core::time::Millis;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time and tokio sleeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }
}
