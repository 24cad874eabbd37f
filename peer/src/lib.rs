//! A p2p-transfer peer: it registers files with the index server as 4 MiB SHA-256-hashed
//! chunks, serves those chunks to other peers, and downloads files and folders by pulling chunks
//! from every host at once, pipelined on a few connections per host, verifying each chunk
//! before it is written.
//!
//! The peer takes the index server's address; finding it (mDNS) is the binary's job, so every
//! peer test runs on loopback.
//!
//! # Layout
//! * [`node`]: [`Peer::start`] and [`PeerHandle`], the API the CLI and shells call.
//! * [`chunk_server`]: answers chunk and manifest requests from other peers.
//! * [`index`]: the index servers: a client for each ([`index::IndexClient`]: register /
//!   heartbeat / lookup), one heartbeat task each (re-registering after an index restart),
//!   and their answers merged.
//! * [`shared_files`]: the files and folders this peer serves, by id.
//! * `shared_folders`: a folder shared as a whole, served without an open file per file.
//! * `sharing`: hashing, serving and announcing files and folders (in batches).
//! * [`deliveries`]: which client has fetched every chunk of a shared file or folder.
//! * [`dht`]: the peer in the DHT (`--dht`): its shares announced, hosts looked up.
//! * [`inbox`]: text messages from other peers.
//! * [`share_dir`]: a folder kept shared as it changes.
//! * [`download`]: one download job (a file or a folder): its engine, scheduler, connections
//!   and disk work.
//! * [`downloads`]: the registry of download jobs every front end lists, cancels and resumes.
//! * `manifest_jobs`: what a manifest file stands for: its download requests, and whether
//!   this running peer's index can fetch it.
//! * `reach`: reaching a node known by its id and several addresses (a ticket's sender).
//! * [`config`]: [`PeerConfig`] with its defaults.
//! * [`error`][mod@error]: [`PeerError`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chunk_server;
pub mod config;
pub mod deliveries;
pub mod dht;
pub mod download;
pub mod downloads;
pub mod error;
pub mod inbox;
pub mod index;
mod manifest_jobs;
pub mod node;
mod reach;
pub mod share_dir;
pub mod shared_files;
mod shared_folders;
mod sharing;

pub use config::{IndexSpec, PeerConfig, Rediscover};
pub use deliveries::Delivery;
pub use dht::DhtSettings;
pub use download::{DownloadEvent, DownloadReport};
pub use downloads::{DownloadId, DownloadInfo, DownloadState, JobUpdate, PeerChange, PeerStatus};
pub use error::{IndexConflict, PeerError};
pub use inbox::ReceivedMessage;
pub use index::{IndexState, IndexStatus};
pub use node::{DownloadRequest, Peer, PeerHandle};
pub use shared_files::SharedFileInfo;
pub use sharing::Shared;
