//! The background task that drops peers whose last heartbeat is older than the timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::server::Shared;

/// Checks often enough that a peer is gone at most a quarter of the timeout after it expired.
fn period(timeout: Duration) -> Duration {
    (timeout / 4).max(Duration::from_millis(50))
}

/// Runs until `shutdown` is cancelled.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let timeout = shared.config.heartbeat_timeout;
    let mut ticks = tokio::time::interval(period(timeout));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // tokio's clock, so tests can pause and advance it; it is monotonic either way.
        let now = Instant::now().into_std();
        let dropped = shared.index().expire(now, timeout);
        for (peer_id, addr) in dropped {
            info!(%peer_id, %addr, ?timeout, "dropped peer: no heartbeat");
        }
    }
}
