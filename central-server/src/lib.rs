//! The p2p-transfer central index server: it knows which peer hosts which file, and never
//! touches file data (this crate depends on the protocol crate only, so it can't).
//!
//! Its state is soft: peers register, add files and heartbeat; a peer silent for longer than
//! the heartbeat timeout is dropped with its files; after a restart, peers' next heartbeat gets
//! `unknown_peer` and they register again, so the index is whole within one interval.
//!
//! # Layout
//! * [`server`]: [`Server`], its connection caps and timeouts for the transport's connection
//!   loop, and the handler that answers each connection's requests.
//! * [`index`]: [`Index`], the pure state (peers, files, folders, hosts, byte budgets),
//!   unit-tested with synthetic time.
//! * [`folders`]: the folders the index knows, their hosts and the files inside them, and
//!   what they cost (pure; [`index`] owns one).
//! * [`stored`]: the compact form a manifest or a folder's head is stored in, and what it
//!   costs.
//! * [`hosts`]: which hosts a `Found` lists, so that registrants can't steer the choice.
//! * [`rate`]: per-address rate limits (registrations, searches, probes).
//! * [`probe`]: `Probe`, the connection back to a node that asks whether it can be reached.
//! * [`budget`]: bytes of large frames buffered across connections.
//! * `search_queue`: the turn to run a search, and which searches may wait for it.
//! * `backlog`: requests received but not yet applied, so the reaper never blames a peer for
//!   the server's own delay.
//! * `reaper`: drops peers whose heartbeats stopped.
//! * [`config`]: [`ServerConfig`] with its defaults.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backlog;
pub mod budget;
pub mod config;
pub mod folders;
pub mod hosts;
pub mod index;
pub mod probe;
pub mod rate;
mod reaper;
mod search_queue;
pub mod server;
pub mod stored;

pub use config::ServerConfig;
pub use index::{Index, IndexError};
pub use server::{Server, ServerHandle, ServerStatus};

/// A TLS set-up with a new identity, for tests.
#[cfg(test)]
pub(crate) fn test_tls() -> p2p_transport::Tls {
    let dir = tempfile::tempdir().unwrap();
    let (identity, _) =
        p2p_identity::Identity::load_or_create(dir.path(), p2p_identity::Role::Server).unwrap();
    p2p_transport::Tls::new(&identity).unwrap()
}
