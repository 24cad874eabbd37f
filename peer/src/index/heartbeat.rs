//! The task that keeps this peer registered with one index server (one task per index): a
//! heartbeat every interval that index asked for, re-registration (with every shared file)
//! when it forgot us, and withdrawal of files that changed on disk.
//!
//! Everything this task sends is a registration request, which the [`IndexClient`] sends on
//! its session connection: a user's slow search or lookup, on the query connection, never
//! holds a beat back. Each index's task is its own: a dead index never delays another's
//! beats.
//!
//! [`IndexClient`]: super::client::IndexClient

use std::sync::Arc;
use std::time::Duration;

use p2p_protocol::ErrorCode;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::IndexLink;
use crate::error::PeerError;
use crate::node::Node;

/// Used until the index tells us its interval.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// Sleeps a random time up to half of `interval`.
async fn jitter(interval: Duration) {
    let max = (interval / 2).as_millis().max(1) as u64;
    tokio::time::sleep(Duration::from_millis(rand::random_range(0..max))).await;
}

fn ticker(interval: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks
}

/// Runs until `shutdown` is cancelled. With `register_first`, registers at once (an index
/// added while the peer runs); otherwise the peer's start did, and the first beat comes after
/// one interval.
pub(crate) async fn run(
    node: Arc<Node>,
    link: Arc<IndexLink>,
    register_first: bool,
    shutdown: CancellationToken,
) {
    // Whatever it is waiting for (an index that doesn't answer may hold a request for the
    // whole index timeout), shutdown ends it at once; a request dropped mid-way takes its
    // connection with it.
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = beat(node, link, register_first, shutdown.clone()) => {}
    }
}

async fn beat(
    node: Arc<Node>,
    link: Arc<IndexLink>,
    register_first: bool,
    shutdown: CancellationToken,
) {
    let index = &link.client;
    let mut interval = link
        .session()
        .map_or(DEFAULT_INTERVAL, |s| s.heartbeat_interval);
    let mut ticks = ticker(interval);
    // Log an outage once, not every beat.
    let mut reachable = true;
    let mut first = register_first;
    loop {
        let at_once = std::mem::take(&mut first);
        if !at_once {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            // The disk is checked once a beat, by the first index's task, not once per index.
            if node
                .indexes
                .first()
                .is_some_and(|first| Arc::ptr_eq(&first, &link))
            {
                let files = node.files.clone();
                let _ = tokio::task::spawn_blocking(move || files.withdraw_all_changed()).await;
            }
        }

        let beat = match link.session() {
            Some(session) => index.heartbeat(&session).await,
            None => Err(PeerError::IndexRefused {
                code: ErrorCode::UnknownPeer,
                message: "not registered yet".into(),
            }),
        };
        let result = match beat {
            Ok(()) if link.take_missed() => {
                // It missed a share or an unshare: leave and register afresh, with everything
                // shared now, so it lists exactly that.
                link.answered();
                if let Some(session) = link.session() {
                    let _ = index.unregister(&session).await;
                }
                link.forget_session();
                node.register_everything(&link).await.map(|session| {
                    info!(peer_id = %session.peer_id, server = %index.server(), "registered afresh with the index, which missed a change");
                })
            }
            Ok(()) => {
                link.answered();
                Ok(())
            }
            Err(PeerError::IndexRefused {
                code: ErrorCode::UnknownPeer | ErrorCode::Forbidden,
                ..
            }) => {
                link.forget_session();
                // The index restarted or expired us: register again, with every file. Every
                // peer learns this at about the same time after a restart, so wait a random
                // part of the interval first rather than all arriving at once (not for a
                // first registration).
                // Never register again once the peer is shutting down (it just unregistered).
                if !at_once {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = jitter(interval) => {}
                    }
                }
                if shutdown.is_cancelled() {
                    return;
                }
                node.register_everything(&link).await.map(|session| {
                    info!(peer_id = %session.peer_id, server = %index.server(), "registered with the index");
                })
            }
            Err(err @ PeerError::IndexUnreachable { .. }) => match &link.rediscover {
                // The index moved or restarted elsewhere: find it again and register there.
                Some(finder) => match finder.rediscover().await {
                    // Another link has that index already: not twice.
                    Some(addr)
                        if node
                            .indexes
                            .links()
                            .iter()
                            .any(|l| l.client.server() == addr && !Arc::ptr_eq(l, &link)) =>
                    {
                        Err(err)
                    }
                    Some(addr) => {
                        index.set_server(addr);
                        link.forget_session();
                        node.register_everything(&link).await.map(|session| {
                            info!(peer_id = %session.peer_id, server = %addr, "re-registered with the index found again");
                        })
                    }
                    None => Err(err),
                },
                None => Err(err),
            },
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => {
                // A new registration (maybe with another server) may ask for another pace.
                if let Some(session) = link.session()
                    && session.heartbeat_interval != interval
                {
                    interval = session.heartbeat_interval;
                    ticks = ticker(interval);
                }
                if !reachable {
                    info!(server = %index.server(), "index server reachable again");
                }
                reachable = true;
                node.withdraw_pending().await;
            }
            Err(err) => {
                link.failed(&err);
                if reachable {
                    warn!(server = %index.server(), %err, "heartbeat failed; still serving chunks, will retry");
                    reachable = false;
                }
            }
        }
    }
}
