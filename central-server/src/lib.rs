//! The p2p-transfer central index server: it knows which peer hosts which file, and never
//! touches file data (this crate depends on the protocol crate only, so it can't).
//!
//! Its state is soft: peers register, add files and heartbeat; a peer silent for longer than
//! the heartbeat timeout is dropped with its files; after a restart, peers' next heartbeat gets
//! `unknown_peer` and they register again, so the index is whole within one interval.
//!
//! # Layout
//! * [`server`]: [`Server`] accept loop and per-connection handler.
//! * [`index`]: [`Index`], the pure state (peers, files, hosts), unit-tested with synthetic time.
//! * `reaper`: drops peers whose heartbeats stopped.
//! * [`config`]: [`ServerConfig`] with its defaults.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod index;
mod reaper;
pub mod server;

pub use config::ServerConfig;
pub use index::{Index, IndexError};
pub use server::{Server, ServerHandle, ServerStatus};
