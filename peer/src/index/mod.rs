//! The index servers a peer uses: several at once, each registered, heartbeaten and asked on
//! its own, their answers combined. One index dying or restarting changes nothing a user
//! sees while another answers.
//!
//! * [`client`]: [`IndexClient`], requests to one index server.
//! * `link`: `IndexLink`, this peer's standing with one index (session, state).
//! * `set`: `Indexes`, every index, told and asked as one.
//! * `heartbeat`: one task per index keeping its registration alive.
//! * [`merge`]: one answer from what several indexes said.

pub mod client;
pub(crate) mod heartbeat;
pub mod link;
pub mod merge;
pub(crate) mod set;

pub use client::{Found, IndexClient, Located, Session};
pub(crate) use link::IndexLink;
pub use link::{IndexState, IndexStatus};
pub(crate) use set::Indexes;
