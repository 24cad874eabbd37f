//! The addresses others reach a listener at, for the server's and the peer's startup lines. A
//! listener on every interface (`0.0.0.0`, `[::]`) can't be reached at `0.0.0.0`: other
//! machines use one of this machine's interface addresses, so those are listed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Where a listener can be reached from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    /// The addresses to give to others, the most likely first (IPv4 before IPv6). Never empty.
    pub addrs: Vec<SocketAddr>,
    /// Whether other machines can use them; `false`: this machine only (a loopback listener,
    /// or no network interface up besides loopback).
    pub lan: bool,
}

impl Reach {
    /// `192.168.1.5:8000, 10.0.0.7:8000`.
    pub fn list(&self) -> String {
        let all: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        all.join(", ")
    }
}

/// What the server says about reaching it, before its `server listening on` line: where peers
/// reach it and the command to paste on another machine (with the node id to expect, so that
/// peer refuses any other index at that address).
pub fn server_lines(reach: &Reach, listen: SocketAddr, node_id: &str) -> Vec<String> {
    let first = reach.addrs[0];
    let command = format!("p2p-transfer peer --server {first} --server-id {node_id} -i");
    if reach.lan {
        vec![
            format!("peers reach this server at {}", reach.list()),
            format!("on another machine, run: {command}"),
        ]
    } else {
        let why = if listen.ip().is_unspecified() {
            "no network interface is up besides loopback".to_owned()
        } else {
            format!(
                "it listens on {listen}; --addr 0.0.0.0:{} opens it to the network",
                listen.port()
            )
        };
        vec![
            format!("only this machine can reach this server ({why})"),
            format!("on this machine, run: {command}"),
        ]
    }
}

/// What a peer listening on every interface says about reaching it (nothing for a peer given
/// one address: that is the address).
pub fn peer_lines(reach: &Reach, listen: SocketAddr) -> Vec<String> {
    if !listen.ip().is_unspecified() {
        return Vec::new();
    }
    if reach.lan {
        vec![format!("peers reach this peer at {}", reach.list())]
    } else {
        vec![format!(
            "only this machine can reach this peer (no network interface is up besides \
             loopback): {}",
            reach.list()
        )]
    }
}

/// Where a listener bound to `listen` can be reached, from this machine's interfaces as they
/// are now.
pub fn reach(listen: SocketAddr) -> Reach {
    let interfaces = if listen.ip().is_unspecified() {
        match if_addrs::get_if_addrs() {
            Ok(list) => list
                .into_iter()
                .filter(|i| {
                    !matches!(
                        i.oper_status,
                        if_addrs::IfOperStatus::Down | if_addrs::IfOperStatus::NotPresent
                    )
                })
                .map(|i| i.ip())
                .collect(),
            Err(err) => {
                tracing::debug!(%err, "cannot list the network interfaces");
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    reach_from(listen, &interfaces)
}

/// [`reach`] for the interface addresses `interfaces` (of interfaces that are up).
fn reach_from(listen: SocketAddr, interfaces: &[IpAddr]) -> Reach {
    let ip = listen.ip();
    if !ip.is_unspecified() {
        return Reach {
            addrs: vec![listen],
            lan: !ip.is_loopback(),
        };
    }
    // A `[::]` listener takes IPv4 too (Linux's default dual stack); a `0.0.0.0` one only IPv4.
    let takes_v6 = ip.is_ipv6();
    let usable = |ip: &&IpAddr| match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        // A link-local address needs a scope that a plain address can't carry.
        IpAddr::V6(v6) => {
            takes_v6 && !v6.is_loopback() && !v6.is_unicast_link_local() && !v6.is_unspecified()
        }
    };
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for want_v4 in [true, false] {
        for ip in interfaces.iter().filter(usable) {
            let addr = SocketAddr::new(*ip, listen.port());
            if ip.is_ipv4() == want_v4 && !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
    }
    if addrs.is_empty() {
        let loopback = if takes_v6 {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        };
        return Reach {
            addrs: vec![SocketAddr::new(loopback, listen.port())],
            lan: false,
        };
    }
    Reach { addrs, lan: true }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn every_interface_means_each_lan_address() {
        let here = ips(&[
            "127.0.0.1",
            "::1",
            "fe80::1",
            "192.168.1.5",
            "fd00::2",
            "169.254.3.3",
            "10.0.0.7",
        ]);
        let v4 = reach_from("0.0.0.0:8000".parse().unwrap(), &here);
        assert_eq!(v4.addrs, addrs(&["192.168.1.5:8000", "10.0.0.7:8000"]));
        assert!(v4.lan);
        assert_eq!(v4.list(), "192.168.1.5:8000, 10.0.0.7:8000");
        let dual = reach_from("[::]:9".parse().unwrap(), &here);
        assert_eq!(
            dual.addrs,
            addrs(&["192.168.1.5:9", "10.0.0.7:9", "[fd00::2]:9"])
        );
    }

    #[test]
    fn loopback_only_says_so() {
        let only_lo = ips(&["127.0.0.1", "::1"]);
        let r = reach_from("0.0.0.0:8000".parse().unwrap(), &only_lo);
        assert_eq!((r.addrs, r.lan), (addrs(&["127.0.0.1:8000"]), false));
        let r = reach_from("127.0.0.1:5".parse().unwrap(), &[]);
        assert_eq!((r.addrs, r.lan), (addrs(&["127.0.0.1:5"]), false));
        let r = reach_from("[::]:5".parse().unwrap(), &only_lo);
        assert_eq!(r.addrs, addrs(&["[::1]:5"]));
    }

    #[test]
    fn the_server_gives_a_command_to_paste() {
        let listen = "0.0.0.0:8000".parse().unwrap();
        let lan = reach_from(listen, &ips(&["192.168.1.5", "10.0.0.7"]));
        assert_eq!(
            server_lines(&lan, listen, "ID"),
            [
                "peers reach this server at 192.168.1.5:8000, 10.0.0.7:8000",
                "on another machine, run: p2p-transfer peer --server 192.168.1.5:8000 \
                 --server-id ID -i"
            ]
        );
        let listen = "127.0.0.1:9".parse().unwrap();
        let local = reach_from(listen, &[]);
        assert_eq!(
            server_lines(&local, listen, "ID"),
            [
                "only this machine can reach this server (it listens on 127.0.0.1:9; --addr \
                 0.0.0.0:9 opens it to the network)",
                "on this machine, run: p2p-transfer peer --server 127.0.0.1:9 --server-id ID -i"
            ]
        );
        assert_eq!(
            peer_lines(&lan, "0.0.0.0:8000".parse().unwrap()),
            ["peers reach this peer at 192.168.1.5:8000, 10.0.0.7:8000"]
        );
        assert!(peer_lines(&local, listen).is_empty());
    }

    #[test]
    fn a_named_address_is_itself() {
        let r = reach_from("192.168.1.5:8000".parse().unwrap(), &ips(&["10.0.0.7"]));
        assert_eq!((r.addrs, r.lan), (addrs(&["192.168.1.5:8000"]), true));
    }
}
