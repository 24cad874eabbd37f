//! mDNS wiring: the server's advertisement, the peer's `--auto-discover`, and finding the
//! server again when it moves. The libraries only see socket addresses.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use p2p_discovery::{AdvertiseConfig, Advertisement, Interfaces, browse, choose};
use p2p_peer::Rediscover;
use tracing::{info, warn};

use crate::cli::{PeerArgs, ServerArgs};
use crate::trust::Preference;

/// How a peer learned its index server's address; shown by `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerOrigin {
    /// Given with `--server`.
    Flag,
    /// Found over mDNS, under this instance name.
    Mdns {
        /// DNS-SD instance name.
        instance: String,
    },
}

impl fmt::Display for ServerOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerOrigin::Flag => f.write_str("given with --server"),
            ServerOrigin::Mdns { instance } => write!(f, "found over mDNS as {instance:?}"),
        }
    }
}

/// How long checking that an mDNS answer proves its claimed id may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

fn interfaces(names: &[String], listen: Option<SocketAddr>) -> Interfaces {
    if !names.is_empty() {
        Interfaces::Named(names.to_vec())
    } else if listen.is_some_and(|a| a.ip().is_loopback()) {
        // Nobody else can reach a loopback listener: don't announce it to the network.
        Interfaces::LoopbackOnly
    } else {
        Interfaces::All
    }
}

/// Starts the server's advertisement unless `--no-mdns`, with its node id in the TXT record.
/// A failure is logged, not fatal: the server still works for peers given `--server`.
pub async fn advertise(
    args: &ServerArgs,
    listen: SocketAddr,
    node_id: p2p_protocol::NodeId,
) -> Option<Advertisement> {
    if args.no_mdns {
        return None;
    }
    let config = AdvertiseConfig {
        port: listen.port(),
        ip: (!listen.ip().is_unspecified()).then_some(listen.ip()),
        server_id: node_id.to_string(),
        protocol_version: p2p_protocol::PROTOCOL_VERSION,
        interfaces: interfaces(&args.mdns_interfaces, Some(listen)),
    };
    match tokio::task::spawn_blocking(move || Advertisement::start(&config)).await {
        Ok(Ok(ad)) => Some(ad),
        Ok(Err(err)) => {
            warn!(%err, "cannot advertise over mDNS; peers need --server");
            None
        }
        Err(err) => {
            warn!(%err, "cannot advertise over mDNS; peers need --server");
            None
        }
    }
}

/// Withdraws an advertisement (waits for the goodbye packet, off the reactor).
pub async fn withdraw(ad: Option<Advertisement>) {
    if let Some(ad) = ad {
        let _ = tokio::task::spawn_blocking(move || drop(ad)).await;
    }
}

/// What `--auto-discover` needs.
#[derive(Clone, Debug)]
pub struct Finder {
    timeout: Duration,
    wanted: Option<String>,
    interfaces: Interfaces,
    /// Which answers win over name order.
    preference: Preference,
    /// This node's TLS set-up, to check that an answer's server proves the id it claims.
    tls: p2p_transport::Tls,
    /// Shared with `status`: updated when the server is found again.
    pub origin: Arc<Mutex<ServerOrigin>>,
    /// Whether what answered is reported on stderr rather than stdout (`--json`: stdout is
    /// for events only).
    announce_on_stderr: bool,
}

impl Finder {
    /// For one-shot tools: any interface, no name preference.
    pub fn with(timeout: Duration, preference: Preference, tls: p2p_transport::Tls) -> Self {
        Self {
            timeout,
            wanted: None,
            interfaces: Interfaces::All,
            preference,
            tls,
            origin: Arc::new(Mutex::new(ServerOrigin::Flag)),
            announce_on_stderr: false,
        }
    }

    pub fn new(args: &PeerArgs, preference: Preference, tls: p2p_transport::Tls) -> Self {
        Self {
            timeout: args.discover_timeout,
            wanted: args.server_name.clone(),
            interfaces: interfaces(&args.mdns_interfaces, None),
            preference,
            tls,
            origin: Arc::new(Mutex::new(ServerOrigin::Flag)),
            announce_on_stderr: false,
        }
    }

    /// Chooses the index whose instance name contains `name` (`--server-name`), if given.
    pub fn wanting(mut self, name: Option<String>) -> Self {
        self.wanted = name;
        self
    }

    /// Reports what answered on stderr (for `--json`, where stdout carries events only).
    pub fn announcing_on_stderr(mut self) -> Self {
        self.announce_on_stderr = true;
        self
    }

    /// Browses and returns every index server that answered (sorted by instance name), or
    /// the "none answered" error. Nothing is checked yet: each claims its id, and whoever
    /// connects must have the handshake prove it.
    pub async fn browse_all(&self) -> anyhow::Result<Vec<p2p_discovery::FoundServer>> {
        let (timeout, interfaces) = (self.timeout, self.interfaces.clone());
        let found = tokio::task::spawn_blocking(move || browse(timeout, &interfaces))
            .await
            .context("mDNS browser failed")??;
        if found.is_empty() {
            return Err(p2p_discovery::DiscoveryError::NotFound(timeout).into());
        }
        Ok(found)
    }

    /// Browses, reports what answered on stdout, and returns the chosen server's address.
    pub async fn find(&self, announce: bool) -> anyhow::Result<SocketAddr> {
        self.find_claimed(announce).await.map(|(addr, _)| addr)
    }

    /// As [`Finder::find`], with the node id the chosen server claims in its TXT record.
    pub async fn find_claimed(
        &self,
        announce: bool,
    ) -> anyhow::Result<(SocketAddr, Option<p2p_protocol::NodeId>)> {
        let (chosen, _) = self.find_every(announce, false).await?;
        let claimed = chosen.server_id.as_deref().and_then(|id| id.parse().ok());
        Ok((chosen.addr(), claimed))
    }

    /// Browses and returns the chosen server (the one that proved its claimed id, by the
    /// rules of `choose`) and every other that answered, unchecked (whoever connects must
    /// have the handshake prove each one's claim). With `all`, what is reported says every
    /// one is used.
    pub async fn find_every(
        &self,
        announce: bool,
        use_all: bool,
    ) -> anyhow::Result<(p2p_discovery::FoundServer, Vec<p2p_discovery::FoundServer>)> {
        let (timeout, interfaces) = (self.timeout, self.interfaces.clone());
        let found = tokio::task::spawn_blocking(move || browse(timeout, &interfaces))
            .await
            .context("mDNS browser failed")??;
        let prefer = |s: &p2p_discovery::FoundServer| self.preference.prefers(s);
        // The choice must prove the id it claims (anyone can claim any id over mDNS): one
        // that does not is passed over for the next, by the same rules.
        let mut left = found;
        let (chosen, others) = loop {
            let (chosen, others) = choose(left, self.wanted.as_deref(), prefer, timeout)?;
            self.preference.check_choice(&chosen, &others)?;
            let claimed = chosen.server_id.as_deref().and_then(|id| id.parse().ok());
            let Some(claimed) = claimed else {
                break (chosen, others);
            };
            match self
                .tls
                .connect(chosen.addr(), Some(claimed), PROBE_TIMEOUT)
                .await
            {
                Ok(_) => break (chosen, others),
                Err(err) if others.is_empty() || self.wanted.is_some() => {
                    anyhow::bail!(
                        "the index server {:?} at {} claims node id {claimed} over mDNS, but: \
                         {err}",
                        chosen.instance,
                        chosen.addr()
                    )
                }
                Err(err) => {
                    warn!(
                        instance = %chosen.instance,
                        addr = %chosen.addr(),
                        %err,
                        "passed over an mDNS answer that does not prove the id it claims"
                    );
                    left = others;
                }
            }
        };
        if announce {
            let say = |line: String| {
                if self.announce_on_stderr {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            };
            if others.is_empty() {
                say(format!(
                    "found index server {:?} at {}",
                    chosen.instance,
                    chosen.addr()
                ));
            } else {
                let all: Vec<String> = std::iter::once(&chosen)
                    .chain(&others)
                    .map(|s| format!("{:?} at {}", s.instance, s.addr()))
                    .collect();
                say(format!(
                    "found {} index servers: {}",
                    all.len(),
                    all.join(", ")
                ));
                if use_all {
                    say(format!(
                        "registering with every one, {:?} at {} first",
                        chosen.instance,
                        chosen.addr()
                    ));
                } else {
                    say(format!(
                        "using {:?} at {} (pick another with --server-name)",
                        chosen.instance,
                        chosen.addr()
                    ));
                }
            }
        }
        *self.origin.lock().unwrap_or_else(|e| e.into_inner()) = ServerOrigin::Mdns {
            instance: chosen.instance.clone(),
        };
        Ok((chosen, others))
    }
}

impl Rediscover for Finder {
    fn rediscover(&self) -> Pin<Box<dyn Future<Output = Option<SocketAddr>> + Send + '_>> {
        Box::pin(async move {
            match self.find(false).await {
                Ok(addr) => {
                    info!(%addr, "found the index server again over mDNS");
                    Some(addr)
                }
                Err(err) => {
                    warn!(err = %format!("{err:#}"), "index server not found over mDNS; will retry");
                    None
                }
            }
        })
    }
}
