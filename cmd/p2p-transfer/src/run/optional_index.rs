//! An index that `send` and `receive TICKET` can do without: the ticket alone connects the
//! two machines, the index only lets others find the items and adds hosts. So an index given
//! (`--server`, `P2P_SERVER`, the config file, `--auto-discover`) that can't be found or
//! reached is a warning, and the command goes on without it. An index that answers as
//! another node than the one expected stays an error: someone may be answering in its place.
//! The index servers a ticket names are the sender's, not the user's: none answering, for
//! whatever reason, is a warning.

use std::net::SocketAddr;

use p2p_peer::{Peer, PeerConfig, PeerError, PeerHandle};
use p2p_protocol::{NodeId, ProtocolError};
use p2p_transport::Tls;
use tokio_util::sync::CancellationToken;

use crate::cli::IndexArgs;
use crate::trust::IndexTrust;

/// The index to use, if any was given and it can be found; `without` says what the command
/// does without one, for the warning.
pub async fn find(
    args: &IndexArgs,
    trust: &IndexTrust,
    tls: &Tls,
    without: &str,
    shutdown: &CancellationToken,
) -> Option<(SocketAddr, Option<NodeId>)> {
    match crate::run::search::one_index(args, trust, tls, shutdown).await {
        Ok(found) => found,
        Err(err) => {
            warn(&crate::errors::one_line(&err), without);
            None
        }
    }
}

/// Starts the peer with `config`; if its index can't be reached, warns and starts it again
/// without one.
pub async fn start(
    config: PeerConfig,
    tls: Tls,
    trust: &IndexTrust,
    without: &str,
) -> anyhow::Result<PeerHandle> {
    if config.indexes.is_empty() {
        return Peer::start(config, tls).await.map_err(|e| trust.explain(e));
    }
    match Peer::start(config.clone(), tls.clone()).await {
        Ok(peer) => Ok(peer),
        Err(
            err @ PeerError::IndexUnreachable {
                cause: ProtocolError::WrongNode { .. },
                ..
            },
        ) => Err(trust.explain(err)),
        Err(err @ PeerError::IndexUnreachable { .. }) => {
            warn(&crate::errors::one_line(&err.into()), without);
            let alone = PeerConfig {
                indexes: Vec::new(),
                ..config
            };
            Peer::start(alone, tls).await.map_err(|e| trust.explain(e))
        }
        Err(err) => Err(trust.explain(err)),
    }
}

/// Starts the peer with `config`, whose indexes nobody here chose (a ticket names them): if
/// none can be registered with, whatever the cause (unreachable, or another node answering
/// where the ticket said), warns and starts it again without them. A wrong index can't do
/// harm there: every byte is checked against the id it is fetched by.
pub async fn start_named(
    config: PeerConfig,
    tls: Tls,
    without: &str,
) -> anyhow::Result<PeerHandle> {
    match Peer::start(config.clone(), tls.clone()).await {
        Ok(peer) => Ok(peer),
        Err(err @ PeerError::IndexUnreachable { .. }) => {
            warn(&crate::errors::one_line(&err.into()), without);
            let alone = PeerConfig {
                indexes: Vec::new(),
                ..config
            };
            Ok(Peer::start(alone, tls).await?)
        }
        Err(err) => Err(err.into()),
    }
}

/// `warning: <why>; <what happens instead>`.
fn warn(why: &str, without: &str) {
    note!("warning: {why}; {without}");
}
