//! What each subcommand does once its flags are parsed.

pub mod peer;
pub mod server;
