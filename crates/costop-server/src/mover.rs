//! Moving capacity back to cheap Spot pools, while this replica leads:
//! a round every [`costop_executor::MOVE_ROUND`] asks the executor for the
//! moves worth making (`costop_core::move_back`: on-demand fallbacks, or
//! a node in a dear Spot pool) and runs each as a response,
//! recorded like one, so a new leader resumes it and leadership loss stops it.

use crate::ServerState;
use costop_core::ports::Clock;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;

/// The loop: nothing moves during a dry run, before the responses a
/// previous leader left are resumed, or while a notice is being answered.
pub(crate) async fn move_back(st: Arc<ServerState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let ready = st.is_leader() && st.resumed.load(Ordering::SeqCst) && !st.dry_run;
        if ready && !st.responding() {
            for plan in st.exec.next_moves(&st.policy).await {
                tracing::info!(node = %plan.node, "moving a node to a cheaper Spot pool");
                let now = st.exec.clock.now_ms();
                st.spawn_response(plan, now, true);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(costop_executor::MOVE_ROUND) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
