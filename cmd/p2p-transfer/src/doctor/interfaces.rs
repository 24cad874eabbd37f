//! This machine's network interfaces: which are up, which have multicast, which look like a
//! VPN, a container bridge or loopback, and which ones mDNS uses.
//!
//! Addresses come from `if-addrs` (what mDNS itself enumerates); the multicast flag from
//! `/sys/class/net/<name>/flags` (Linux; unknown elsewhere). That shows the network namespace
//! sysfs was mounted in: right for a normal login, a container or `ip netns exec`, but a shell
//! entered with `unshare --net` alone still sees the host's flags there. mDNS (the `mdns-sd` crate) uses
//! every interface that is up and not point-to-point, loopback included.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{Check, Status};

/// `IFF_MULTICAST` in `/sys/class/net/<name>/flags`.
const IFF_MULTICAST: u32 = 0x1000;

/// Name prefixes of VPN interfaces (WireGuard, OpenVPN and other tun/tap, Tailscale,
/// ZeroTier, PPP).
const VPN_PREFIXES: &[&str] = &[
    "tun",
    "tap",
    "wg",
    "tailscale",
    "zt",
    "utun",
    "ppp",
    "ipsec",
    "nordlynx",
    "proton",
];

/// Name prefixes of container and virtual machine bridges.
const CONTAINER_PREFIXES: &[&str] = &[
    "docker", "br-", "veth", "virbr", "cni", "flannel", "podman", "lxc", "lxd", "vboxnet", "vmnet",
    "kube",
];

/// What an interface looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// This machine only.
    Loopback,
    /// A tunnel to another network.
    Vpn,
    /// A bridge to containers or virtual machines on this machine.
    Container,
    /// Anything else: most likely the local network.
    Lan,
}

/// One interface and its addresses.
#[derive(Clone, Debug)]
pub struct Interface {
    /// `eth0`, `wlan0`, `lo`.
    pub name: String,
    /// Its addresses, IPv4 first.
    pub addrs: Vec<IpAddr>,
    /// Up (operationally).
    pub up: bool,
    /// Point-to-point (mDNS skips those).
    pub point_to_point: bool,
    /// The multicast flag, where it can be read.
    pub multicast: Option<bool>,
    /// What it looks like.
    pub kind: Kind,
}

impl Interface {
    /// Whether mDNS sends and listens on it.
    pub fn mdns_uses(&self) -> bool {
        self.up && !self.point_to_point
    }

    /// Whether an mDNS query can go out on it: mDNS uses it and multicast is on.
    pub fn can_query(&self) -> bool {
        self.mdns_uses() && self.multicast != Some(false)
    }
}

/// The interfaces with an address, by name.
pub fn list() -> Vec<Interface> {
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    for i in if_addrs::get_if_addrs().unwrap_or_default() {
        let ip = i.ip();
        let entry = by_name.entry(i.name.clone()).or_insert_with(|| Interface {
            kind: kind_of(&i.name, i.is_loopback(), i.is_p2p()),
            multicast: multicast_flag(&i.name),
            up: i.is_oper_up(),
            point_to_point: i.is_p2p(),
            name: i.name.clone(),
            addrs: Vec::new(),
        });
        entry.addrs.push(ip);
    }
    by_name
        .into_values()
        .map(|mut i| {
            i.addrs.sort_by_key(|a| (a.is_ipv6(), *a));
            i
        })
        .collect()
}

fn kind_of(name: &str, loopback: bool, p2p: bool) -> Kind {
    if loopback {
        Kind::Loopback
    } else if p2p || VPN_PREFIXES.iter().any(|p| name.starts_with(p)) {
        Kind::Vpn
    } else if CONTAINER_PREFIXES.iter().any(|p| name.starts_with(p)) {
        Kind::Container
    } else {
        Kind::Lan
    }
}

fn multicast_flag(name: &str) -> Option<bool> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/flags")).ok()?;
    let flags = u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()?;
    Some(flags & IFF_MULTICAST != 0)
}

/// One line per interface.
pub fn checks(interfaces: &[Interface]) -> Vec<Check> {
    const CHECK: &str = "interface";
    if interfaces.is_empty() {
        return vec![
            Check::new(
                CHECK,
                "",
                Status::Problem,
                "no network interface has an address",
            )
            .fix("connect this machine to a network"),
        ];
    }
    interfaces
        .iter()
        .map(|i| {
            let addrs: Vec<String> = i.addrs.iter().map(ToString::to_string).collect();
            let addrs = addrs.join(", ");
            let what = match i.kind {
                Kind::Loopback => "loopback (this machine only)",
                Kind::Vpn => "looks like a VPN",
                Kind::Container => "looks like a container or VM bridge",
                Kind::Lan => "local network",
            };
            let multicast = match i.multicast {
                Some(true) => "multicast",
                Some(false) => "no multicast",
                None => "multicast unknown",
            };
            if !i.up {
                return Check::ok(CHECK, &i.name, format!("down ({what}, {addrs}): not used"));
            }
            let mdns = if i.can_query() {
                "mDNS uses it"
            } else {
                "mDNS can't use it"
            };
            let summary = format!("up, {what}, {multicast}, {addrs}; {mdns}");
            match (i.kind, i.multicast, i.point_to_point) {
                (Kind::Lan, Some(false), false) => {
                    Check::new(CHECK, &i.name, Status::Problem, summary)
                        .cause("multicast is off on this interface, so mDNS can't find an index server through it")
                        .fix(format!("turn it on with `sudo ip link set {} multicast on`, or give the index's address with --server", i.name))
                }
                (Kind::Vpn, _, _) => Check::new(CHECK, &i.name, Status::Warning, summary)
                    .cause("a peer whose route to the index goes through a VPN is registered with its VPN address, which other LAN hosts may not reach")
                    .fix("if peers can't reach this one, run it with --advertise-addr LAN-IP:PORT"),
                (Kind::Container, _, _) if i.can_query() => {
                    Check::new(CHECK, &i.name, Status::Warning, summary)
                        .cause("mDNS also asks here, where only containers or VMs of this machine answer")
                        .fix("to ask only the LAN, give `--mdns-interface` the LAN interface's name")
                }
                _ => Check::ok(CHECK, &i.name, summary),
            }
        })
        .collect()
}

/// The interface that has `ip`, if any.
pub fn owning(interfaces: &[Interface], ip: IpAddr) -> Option<&Interface> {
    let ip = ip.to_canonical();
    interfaces.iter().find(|i| i.addrs.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interface(name: &str, kind: Kind, multicast: Option<bool>) -> Interface {
        Interface {
            name: name.into(),
            addrs: vec!["10.0.0.5".parse().unwrap()],
            up: true,
            point_to_point: false,
            multicast,
            kind,
        }
    }

    #[test]
    fn kinds_are_told_by_flags_and_names() {
        assert_eq!(kind_of("lo", true, false), Kind::Loopback);
        assert_eq!(kind_of("wg0", false, false), Kind::Vpn);
        assert_eq!(kind_of("anything", false, true), Kind::Vpn);
        assert_eq!(kind_of("docker0", false, false), Kind::Container);
        assert_eq!(kind_of("enp3s0", false, false), Kind::Lan);
    }

    #[test]
    fn a_lan_interface_without_multicast_is_a_problem_with_the_command_to_fix_it() {
        let checks = checks(&[
            interface("eth0", Kind::Lan, Some(false)),
            interface("eth1", Kind::Lan, Some(true)),
        ]);
        assert_eq!(checks[0].status, Status::Problem);
        assert!(
            checks[0]
                .fix
                .as_deref()
                .unwrap()
                .contains("ip link set eth0 multicast on")
        );
        assert_eq!(checks[1].status, Status::Ok);
        assert!(checks[1].summary.contains("mDNS uses it"), "{checks:?}");
    }
}
