//! What each subcommand does once its flags are parsed.

pub mod completions;
pub mod config;
pub mod doctor;
pub mod id;
pub mod man;
pub mod manifest;
pub mod optional_index;
pub mod peer;
pub mod peer_indexes;
pub mod peer_json;
pub mod receive;
pub mod search;
pub mod send;
pub mod server;
pub mod web;
