//! Which sockets on this machine listen on a TCP port, from `/proc/net/tcp` and
//! `/proc/net/tcp6` (this network namespace's): when the index's probe went somewhere other
//! than doctor's own listener, this names the program's address that took it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The kernel's tables of TCP sockets, IPv4 then IPv6.
const TABLES: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];

/// `st` of a listening socket (`TCP_LISTEN`).
const LISTEN: &str = "0A";

/// The local addresses of every socket listening on `port` (empty when the tables can't be
/// read: then nothing is claimed).
pub fn on_port(port: u16) -> Vec<SocketAddr> {
    TABLES
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| listening(&text))
        .filter(|addr| addr.port() == port)
        .collect()
}

/// The local addresses of the listening sockets in one table's text.
fn listening(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            (state == LISTEN).then(|| local_addr(local)).flatten()
        })
        .collect()
}

/// `0100007F:1B59` (127.0.0.1:7001). The kernel prints each 32-bit word of the address as a
/// native-endian number, and the port as a plain one.
fn local_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words as this machine prints them (the tables are native-endian).
    fn hex4(bytes: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(bytes))
    }

    #[test]
    fn listening_sockets_are_read_with_their_addresses() {
        let v4 = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             \x20  0: {}:1B59 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0\n\
             \x20  1: {}:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 100 0 0 10 0\n\
             \x20  2: {}:9C40 {}:1F40 01 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 100 0 0 10 0\n",
            hex4([192, 168, 1, 20]),
            hex4([0, 0, 0, 0]),
            hex4([127, 0, 0, 1]),
            hex4([127, 0, 0, 1]),
        );
        assert_eq!(
            listening(&v4),
            [
                "192.168.1.20:7001".parse::<SocketAddr>().unwrap(),
                "0.0.0.0:8000".parse().unwrap(),
            ],
            "an established connection (state 01) is no listener"
        );
        let loopback6: String = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
            .into_iter()
            .map(hex4)
            .collect();
        let v6 = format!(
            "  sl  local_address                         remote_address                        st\n\
             \x20  0: {loopback6}:1B59 00000000000000000000000000000000:0000 0A 0\n"
        );
        assert_eq!(listening(&v6), ["[::1]:7001".parse().unwrap()]);
        assert_eq!(listening("header\n  0: nonsense\n"), []);
    }

    #[test]
    fn this_processs_own_listener_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(on_port(addr.port()).contains(&addr));
    }
}
