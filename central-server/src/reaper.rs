//! The background task that drops peers whose last heartbeat is older than the timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::server::Shared;

/// Checks often enough that a peer is gone at most a quarter of the timeout after it expired.
fn period(timeout: Duration) -> Duration {
    (timeout / 4).max(Duration::from_millis(50))
}

/// Runs until `shutdown` is cancelled.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let timeout = shared.config.heartbeat_timeout;
    let period = period(timeout);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_tick = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // tokio's clock, so tests can pause and advance it; it is monotonic either way.
        let now = Instant::now();
        let late = now
            .saturating_duration_since(last_tick)
            .saturating_sub(period);
        last_tick = now;
        if late > period {
            // This task could not run for a while, so neither could the handlers: heartbeats
            // may be waiting unread in their sockets. Give them a period to be applied.
            warn!(
                ?late,
                "the index fell behind; not dropping silent peers this round"
            );
            continue;
        }
        // Judge silence only up to the moment every heartbeat received has been applied.
        let caught_up = shared.backlog.caught_up_to(now.into_std());
        let dropped = shared.index().expire(caught_up, timeout);
        for (peer_id, addr) in dropped {
            info!(%peer_id, %addr, ?timeout, "dropped peer: no heartbeat");
        }
        shared.prune(now.into_std());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    use crate::{Server, ServerConfig};

    /// Expiry runs on tokio's (monotonic, here paused) clock: nothing expires before the
    /// timeout, whatever the wall clock does, and a silent peer is gone soon after it.
    #[tokio::test(start_paused = true)]
    async fn silent_peer_expires_on_the_monotonic_clock() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = ServerConfig::default();
        let server = Server::new(listener, config.clone(), crate::test_tls());
        let handle = server.handle().unwrap();
        let now = tokio::time::Instant::now().into_std();
        handle
            .shared()
            .index()
            .register(
                "127.0.0.1:9".parse().unwrap(),
                std::net::Ipv4Addr::LOCALHOST.into(),
                p2p_protocol::NodeId([1; 20]),
                now,
            )
            .unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(super::run(handle.shared(), shutdown.clone()));

        tokio::time::sleep(config.heartbeat_timeout - Duration::from_secs(1)).await;
        assert_eq!(handle.status().peers, 1, "expired early");
        tokio::time::sleep(config.heartbeat_timeout / 2).await;
        assert_eq!(handle.status().peers, 0, "not expired after the timeout");
        shutdown.cancel();
        task.await.unwrap();
    }
}
