//! [`DhtError`]: what can go wrong, by step.

use std::net::SocketAddrV4;
use std::path::PathBuf;

/// An error of the DHT node. Each variant names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    /// The UDP socket could not be opened (address in use, not an address of this machine...).
    #[error("cannot open the DHT socket on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddrV4,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A bootstrap entry is not `HOST:PORT`.
    #[error("bad DHT bootstrap node {entry:?}: {reason}")]
    InvalidBootstrap {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The node's thread is gone (it panicked); nothing more can be asked of it.
    #[error("the DHT node has stopped")]
    NodeStopped,
    /// No node stored the announcement.
    #[error("cannot announce {id} in the DHT")]
    Announce {
        /// The file id (short form).
        id: String,
        /// What the DHT answered.
        #[source]
        source: mainline::errors::PutQueryError,
    },
    /// The routing cache could not be written.
    #[error("cannot write the DHT routing cache {path}")]
    CacheWrite {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
