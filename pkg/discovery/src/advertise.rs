//! [`Advertisement`]: the server's presence on the local network, withdrawn when dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};
use tracing::{debug, info};

use crate::{DiscoveryError, Interfaces, SERVICE_TYPE, TXT_ID, TXT_VERSION};

/// How long a drop waits for the goodbye packet to go out.
const GOODBYE_WAIT: Duration = Duration::from_secs(1);

/// What to advertise.
#[derive(Clone, Debug)]
pub struct AdvertiseConfig {
    /// The index server's TCP port.
    pub port: u16,
    /// The address it listens on, if a specific one; `None` advertises every address of the
    /// interfaces mDNS runs on, and follows them as they change.
    pub ip: Option<IpAddr>,
    /// The server's node id, put in the TXT record (`id`); its first 9 characters (two groups)
    /// end the instance name.
    pub server_id: String,
    /// The protocol version, put in the TXT record.
    pub protocol_version: u32,
    /// Where to advertise.
    pub interfaces: Interfaces,
}

/// A live advertisement. Dropping it sends the DNS-SD goodbye and stops the mDNS daemon.
pub struct Advertisement {
    daemon: ServiceDaemon,
    fullname: String,
    instance: String,
}

/// This host's name, cut to its first label and to characters safe in a DNS host name.
pub fn host_label() -> String {
    let raw = gethostname::gethostname().to_string_lossy().into_owned();
    let first = raw.split('.').next().unwrap_or_default();
    let clean: String = first
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    if clean.is_empty() {
        "host".to_owned()
    } else {
        clean
    }
}

impl Advertisement {
    /// Starts advertising.
    pub fn start(config: &AdvertiseConfig) -> Result<Self, DiscoveryError> {
        let host = host_label();
        // Host and port tell servers on different machines or ports apart; the id tells apart
        // two servers that reuse both.
        let short: String = config.server_id.chars().take(9).collect();
        let instance = format!("p2p-transfer on {host}:{} [{short}]", config.port);
        let daemon = ServiceDaemon::new()?;
        config.interfaces.apply(&daemon)?;
        let properties: HashMap<String, String> = [
            (TXT_VERSION.to_owned(), config.protocol_version.to_string()),
            (TXT_ID.to_owned(), config.server_id.clone()),
        ]
        .into();
        let host_name = format!("{host}.local.");
        let mut info = match config.ip {
            Some(ip) => ServiceInfo::new(
                SERVICE_TYPE,
                &instance,
                &host_name,
                ip,
                config.port,
                properties,
            )?,
            None => ServiceInfo::new(
                SERVICE_TYPE,
                &instance,
                &host_name,
                "",
                config.port,
                properties,
            )?
            .enable_addr_auto(),
        };
        match &config.interfaces {
            Interfaces::All => {}
            Interfaces::LoopbackOnly => {
                info.set_interfaces(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])
            }
            Interfaces::Named(names) => {
                info.set_interfaces(names.iter().map(|n| IfKind::Name(n.clone())).collect())
            }
        }
        let fullname = info.get_fullname().to_owned();
        daemon.register(info)?;
        info!(%instance, port = config.port, interfaces = ?config.interfaces, "advertising over mDNS");
        Ok(Self {
            daemon,
            fullname,
            instance,
        })
    }

    /// The instance name others see.
    pub fn instance_name(&self) -> &str {
        &self.instance
    }
}

impl std::fmt::Debug for Advertisement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advertisement")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Drop for Advertisement {
    fn drop(&mut self) {
        if let Ok(status) = self.daemon.unregister(&self.fullname) {
            let _ = status.recv_timeout(GOODBYE_WAIT);
        }
        if let Ok(status) = self.daemon.shutdown() {
            let _ = status.recv_timeout(GOODBYE_WAIT);
        }
        debug!(instance = %self.instance, "mDNS advertisement withdrawn");
    }
}
