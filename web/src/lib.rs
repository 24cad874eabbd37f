//! The p2p-transfer web dashboard and REST API: one HTTP server per node (`--web`), over the
//! same [`p2p_peer::PeerHandle`] and [`p2p_central_server::ServerHandle`] the shells call.
//! It never touches the wire protocol or the disk on its own: every action is a handle call,
//! so the API can do nothing the command line could not.
//!
//! # Layout
//! * [`config`]: [`WebConfig`]: API key, upload folder, limits (the caller binds the
//!   address and passes the listener).
//! * `guard`: who may call: the API key (header or login cookie), the `Host` check against
//!   DNS rebinding, the `Origin`/`Sec-Fetch-Site` check against cross-site requests.
//! * `login`: `GET /login?token=KEY`, the cookie the page then carries.
//! * [`error`]: [`ApiError`], every error reply as `{"error": {"code", "message"}}`.
//! * [`views`]: every JSON shape the API sends or takes, kept apart from library types so
//!   the API stays stable when the libraries change.
//! * `peer_api` / `server_api`: the routes of each role.
//! * `events`: the server-sent event stream: a snapshot, then changes, throttled.
//! * `upload`: a request body streamed to disk through `p2p_storage::Upload`.
//! * `serve`: [`serve_peer`] / [`serve_server`]: the role's routes behind the guards, and
//!   shutdown within [`SHUTDOWN_GRACE`].
//! * `assets`: the page (HTML, CSS, JavaScript), embedded in the binary.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod assets;
pub mod config;
pub mod error;
mod events;
mod guard;
mod login;
mod peer_api;
mod serve;
mod server_api;
mod upload;
pub mod views;

pub use config::WebConfig;
pub use error::ApiError;
pub use guard::CONTENT_SECURITY_POLICY;
pub use serve::{
    HEADER_READ_TIMEOUT, MAX_CONNECTIONS, SHUTDOWN_GRACE, api_url, login_url, serve_peer,
    serve_server,
};
