//! `--web`: bind the web server's address, load its API key, print where to open it, then
//! serve the node's API and page until the node stops.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use anyhow::Context;
use p2p_identity::ApiKey;
use p2p_web::WebConfig;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::{IdentityArgs, PeerArgs, ServerArgs};
use crate::discovery::ServerOrigin;

/// The variable whose value replaces the key file's.
const API_KEY_ENV: &str = "P2P_API_KEY";

/// A bound web server, its key loaded, not serving yet.
pub struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
    key: ApiKey,
    /// The peer's upload folder, created.
    upload_dir: PathBuf,
}

/// A serving web server; [`Serving::stop`] ends it.
pub struct Serving {
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

/// With `peer --web`: as [`bind`], and the upload folder made ready. Called before the peer
/// starts, so a bad address or key stops it before it registers anywhere.
pub async fn bind_peer(args: &PeerArgs) -> anyhow::Result<Option<Bound>> {
    let Some(addr) = args.web else {
        return Ok(None);
    };
    let upload_dir = upload_dir(args.upload_dir.as_deref())?;
    Ok(Some(bind(addr, &args.identity, upload_dir).await?))
}

/// With `server --web`: as [`bind`].
pub async fn bind_server(args: &ServerArgs) -> anyhow::Result<Option<Bound>> {
    match args.web {
        Some(addr) => Ok(Some(bind(addr, &args.identity, PathBuf::new()).await?)),
        None => Ok(None),
    }
}

/// Loads the API key (`P2P_API_KEY`, or `api-key` in the identity folder, created on first
/// use) and binds `addr`. Nothing is printed yet (see [`Bound::announce`]).
async fn bind(
    addr: SocketAddr,
    identity: &IdentityArgs,
    upload_dir: PathBuf,
) -> anyhow::Result<Bound> {
    let key = match std::env::var(API_KEY_ENV) {
        Ok(text) => ApiKey::parse(&text, &format!("in {API_KEY_ENV}"))?,
        Err(_) => {
            let dir = crate::run::id::dir(identity)?;
            let (key, created) = ApiKey::load_or_create(&dir)?;
            if created {
                eprintln!(
                    "created a new API key for the web dashboard in {}",
                    dir.join(p2p_identity::api_key::API_KEY_FILE).display()
                );
            }
            key
        }
    };
    let listener = TcpListener::bind(addr).await.map_err(|err| {
        let why = if err.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "{addr} is in use (another node's dashboard?): give another address with \
                 --web ADDR, or port 0 for a free one"
            )
        } else {
            format!("{err}")
        };
        anyhow::anyhow!("cannot serve the web dashboard on {addr}: {why}")
    })?;
    let addr = listener
        .local_addr()
        .with_context(|| format!("cannot serve the web dashboard on {addr}"))?;
    Ok(Bound {
        listener,
        addr,
        key,
        upload_dir,
    })
}

/// Prints the web lines and serves `peer`'s API and page (see [`Bound::serve_peer`]).
pub fn start_peer(
    bound: Option<Bound>,
    args: &PeerArgs,
    peer: &p2p_peer::PeerHandle,
    found_index_by: Option<String>,
    shutdown: &CancellationToken,
) -> Option<Serving> {
    let bound = bound?;
    if args.json {
        bound.announce_json();
    } else {
        bound.announce();
    }
    let config = WebConfig {
        found_index_by,
        ..args.web_config(bound.key.as_str().to_owned(), bound.upload_dir.clone())
    };
    Some(bound.serve_peer(peer.clone(), config, shutdown))
}

/// How a peer found its index, for its status: `None` without one.
pub fn found_index_by(
    args: &PeerArgs,
    server_addr: Option<SocketAddr>,
    origin: &std::sync::Mutex<ServerOrigin>,
) -> Option<String> {
    let addr = server_addr?;
    Some(if args.auto_discover {
        origin.lock().unwrap_or_else(|e| e.into_inner()).to_string()
    } else if !args.servers.is_empty() {
        ServerOrigin::Flag.to_string()
    } else if addr == crate::cli::DEFAULT_SERVER {
        "the default address".to_owned()
    } else {
        "named in the manifest file".to_owned()
    })
}

impl Bound {
    /// Prints the lines a user (or a script) reads before `... listening on`: the login URL,
    /// the API's URL and where its key is, and for an address others can reach, a warning.
    pub fn announce(&self) {
        let addr = self.addr;
        println!(
            "web dashboard: {}",
            p2p_web::login_url(addr, self.key.as_str())
        );
        let key_from = match self.key.path() {
            Some(path) => format!("API key in {}", path.display()),
            None => format!("API key from {API_KEY_ENV}"),
        };
        println!("web api: {} ({key_from})", p2p_web::api_url(addr));
        if !addr.ip().is_loopback() {
            println!(
                "web warning: {addr} is not a loopback address: every request needs the API key, \
                 and the traffic (the key with it) is plain HTTP that others on the network can \
                 read"
            );
        }
    }

    /// As [`Bound::announce`] for `--json`: a `web` event on stdout, the warning on stderr.
    fn announce_json(&self) {
        let addr = self.addr;
        crate::json::emit(&crate::json::Event::Web {
            url: p2p_web::login_url(addr, self.key.as_str()),
            api: p2p_web::api_url(addr),
            api_key_file: self.key.path().map(crate::json::path),
        });
        if !addr.ip().is_loopback() {
            eprintln!(
                "web warning: {addr} is not a loopback address: every request needs the API key, \
                 and the traffic (the key with it) is plain HTTP that others on the network can \
                 read"
            );
        }
    }

    /// Serves `peer`'s API and page until `shutdown` or [`Serving::stop`].
    fn serve_peer(
        self,
        peer: p2p_peer::PeerHandle,
        config: WebConfig,
        shutdown: &CancellationToken,
    ) -> Serving {
        let stop = shutdown.child_token();
        let task = tokio::spawn(p2p_web::serve_peer(
            self.listener,
            peer,
            config,
            stop.clone(),
        ));
        Serving { stop, task }
    }

    /// Serves the index server's API and page until `shutdown` or [`Serving::stop`].
    pub fn serve_server(
        self,
        server: p2p_central_server::ServerHandle,
        node_id: p2p_protocol::NodeId,
        mdns_name: Option<String>,
        shutdown: &CancellationToken,
    ) -> Serving {
        let stop = shutdown.child_token();
        let config = WebConfig::new(self.key.as_str().to_owned(), self.upload_dir);
        let task = tokio::spawn(p2p_web::serve_server(
            self.listener,
            server,
            node_id,
            mdns_name,
            config,
            stop.clone(),
        ));
        Serving { stop, task }
    }
}

/// Stops the web server, if there is one, and waits until it has answered the requests it
/// took, at most [`p2p_web::SHUTDOWN_GRACE`] (then it closes the connections still open).
/// Its failure is logged: the node's own work is done by then.
pub async fn stop(serving: Option<Serving>) {
    let Some(serving) = serving else {
        return;
    };
    serving.stop.cancel();
    match serving.task.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(%err, "the web server failed"),
        Err(err) => tracing::warn!(%err, "the web server task failed"),
    }
}

/// The peer's upload folder: `--upload-dir`, or `$XDG_DATA_HOME/p2p-transfer/uploads`;
/// created with mode 0700 when missing.
pub fn upload_dir(flag: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    let dir = match flag {
        Some(dir) => dir.to_owned(),
        None => dirs::data_dir()
            .map(|d| d.join("p2p-transfer").join("uploads"))
            .context("no folder for uploads: give --upload-dir or set P2P_UPLOAD_DIR")?,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create the upload folder {}", dir.display()))?;
    Ok(dir)
}
