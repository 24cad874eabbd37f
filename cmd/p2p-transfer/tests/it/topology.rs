//! A routed site built inside a test's private network namespace (see [`crate::netns`]): two
//! subnets, A (10.1.0.0/24) and B (10.2.0.0/24), each a network namespace of its own, joined
//! by a router, which is the test's own namespace (veth pairs, IP forwarding on, no multicast
//! routing: mDNS stays inside each subnet). A subnet's "hosts" are its addresses: each process
//! binds its own (`10.1.0.10`, `10.1.0.11`, ...), so the index sees them as other machines.
//!
//! Everything lives in the test's namespaces (network and mount): nothing is sent anywhere
//! else, and it all goes away with the test.

use std::net::Ipv4Addr;
use std::process::Command;

/// One subnet of the site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subnet {
    A,
    B,
}

impl Subnet {
    /// The network namespace's name.
    pub fn ns(self) -> &'static str {
        match self {
            Subnet::A => "site-a",
            Subnet::B => "site-b",
        }
    }

    fn octet(self) -> u8 {
        match self {
            Subnet::A => 1,
            Subnet::B => 2,
        }
    }

    /// The router's address on this subnet (the hosts' gateway; the test process binds here
    /// to play a host of the router's own).
    pub fn router(self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet(), 0, 1)
    }

    /// The address of host `n` (2 to 99) on this subnet.
    pub fn host(self, n: u8) -> Ipv4Addr {
        assert!((2..100).contains(&n), "host numbers are 2..100");
        Ipv4Addr::new(10, self.octet(), 0, n)
    }
}

/// Hosts each subnet gets addresses for: `host(2)` to `host(HOSTS_PER_SUBNET + 1)`.
pub const HOSTS_PER_SUBNET: u8 = 30;

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds the site. Call inside [`crate::netns::enter`]: it changes the namespace it runs in
/// (the router).
pub fn build() {
    // The namespaces' names live in a tmpfs of the test's own mount namespace: nothing is
    // left on the machine, and two runs never see each other's.
    std::fs::create_dir_all("/run/netns").unwrap();
    run(&["mount", "-t", "tmpfs", "netns", "/run/netns"]);
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    for subnet in [Subnet::A, Subnet::B] {
        let ns = subnet.ns();
        let (outside, inside) = match subnet {
            Subnet::A => ("to-a", "eth-a"),
            Subnet::B => ("to-b", "eth-b"),
        };
        run(&["ip", "netns", "add", ns]);
        run(&[
            "ip", "link", "add", outside, "type", "veth", "peer", "name", inside,
        ]);
        run(&["ip", "link", "set", inside, "netns", ns]);
        let router = format!("{}/24", subnet.router());
        run(&["ip", "addr", "add", &router, "dev", outside]);
        run(&["ip", "link", "set", outside, "up"]);
        run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        for n in 2..=HOSTS_PER_SUBNET + 1 {
            let addr = format!("{}/24", subnet.host(n));
            run(&["ip", "-n", ns, "addr", "add", &addr, "dev", inside]);
        }
        run(&["ip", "-n", ns, "link", "set", inside, "up"]);
        run(&["ip", "-n", ns, "link", "set", inside, "multicast", "on"]);
        let gateway = subnet.router().to_string();
        run(&["ip", "-n", ns, "route", "add", "default", "via", &gateway]);
    }
}

/// `command` run inside `subnet` (its network namespace), with the environment `bin()` set.
pub fn inside(subnet: Subnet, command: Command) -> Command {
    let mut wrapped = Command::new("ip");
    wrapped
        .args(["netns", "exec", subnet.ns()])
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}
