//! Reaching a node known by its id and several addresses (a ticket's sender): every address is
//! tried at once, and the first whose TLS handshake proves the id wins. And checking that an
//! address is a p2p-transfer peer at all (the shell's `connect`).

use std::net::SocketAddr;

use p2p_protocol::{NodeId, PeerConversation, ProtocolError};
use tokio::task::JoinSet;

use crate::error::PeerError;
use crate::node::PeerHandle;

impl PeerHandle {
    /// The node id of the p2p-transfer peer at `addr`: its TLS handshake and `Welcome` as a
    /// chunk server, within the connect timeout. The probe connection is closed again.
    pub async fn probe_peer(&self, addr: SocketAddr) -> Result<NodeId, PeerError> {
        let timeout = self.node.config.connect_timeout;
        p2p_transport::connect::<PeerConversation>(&self.node.tls, addr, None, timeout)
            .await
            .map(|(_, node)| node)
            .map_err(|cause| PeerError::PeerUnreachable { addr, cause })
    }

    /// The first of `addrs` at which `node` answers (its handshake proving that node id),
    /// trying them all at once, each within the connect timeout. The probe connection is
    /// closed again. When none answers, the most telling failure: a node with another id at
    /// one of them, or else the first address's.
    pub async fn reach_node(
        &self,
        addrs: &[SocketAddr],
        node: NodeId,
    ) -> Result<SocketAddr, PeerError> {
        let mut probes = JoinSet::new();
        for (order, &addr) in addrs.iter().enumerate() {
            let (tls, timeout) = (self.node.tls.clone(), self.node.config.connect_timeout);
            probes.spawn(async move {
                let probe =
                    p2p_transport::connect::<PeerConversation>(&tls, addr, Some(node), timeout)
                        .await;
                (order, addr, probe.map(|_| ()))
            });
        }
        let mut failures: Vec<(usize, SocketAddr, ProtocolError)> = Vec::new();
        while let Some(done) = probes.join_next().await {
            match done {
                Ok((_, addr, Ok(()))) => return Ok(addr),
                Ok((order, addr, Err(cause))) => failures.push((order, addr, cause)),
                // A probe task can only end by panicking or being aborted; neither happens.
                Err(_) => {}
            }
        }
        failures.sort_by_key(|(order, _, cause)| {
            (!matches!(cause, ProtocolError::WrongNode { .. }), *order)
        });
        match failures.into_iter().next() {
            Some((_, addr, cause)) => Err(PeerError::PeerUnreachable { addr, cause }),
            None => Err(PeerError::Internal("no address to reach".into())),
        }
    }
}
