//! What each subcommand does once its flags are parsed.

pub mod doctor;
pub mod id;
pub mod manifest;
pub mod peer;
pub mod receive;
pub mod search;
pub mod send;
pub mod server;
pub mod web;
