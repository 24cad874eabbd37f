//! Which hosts a `Found` lists when a file has more than it can carry: chosen so that the
//! client who registers can't steer the choice.
//!
//! Peer ids are random but a client can draw as many as it likes, so ordering by id let one
//! address that registered often enough hide every real host behind dead ones. Instead:
//!
//! 1. Hosts are grouped by the source address their registration came from, each group oldest
//!    registration first.
//! 2. Groups are ordered: the half of the slots' worth of groups whose oldest registration is
//!    oldest come first (long-lived hosts are always offered, and newcomers can't push them
//!    out), then every other group in random order (each lookup a new sample, so no newcomer
//!    is hidden for good either).
//! 3. Hosts are taken round-robin over the groups: every group's first host, then every
//!    group's second, and so on, until the answer is full. No address gets a second host in
//!    the answer before every address with a host has one.
//!
//! So to crowd a host out, a client needs more source addresses than an answer has slots,
//! all registered before that host, or luck on every lookup.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use p2p_protocol::{HostInfo, NodeId, PeerId};
use rand::Rng;
use rand::seq::SliceRandom;

/// A host of the file, with what the choice looks at.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    /// Its registration.
    pub peer_id: PeerId,
    /// The node that registered it.
    pub node_id: NodeId,
    /// Its chunk server.
    pub addr: SocketAddr,
    /// Where its registration came from.
    pub source: IpAddr,
    /// When it registered.
    pub registered: Instant,
}

/// Up to `max` of `candidates`, chosen as the module docs say; all of them if they fit.
pub fn choose(candidates: Vec<Candidate>, max: usize, rng: &mut impl Rng) -> Vec<HostInfo> {
    let info = |c: &Candidate| HostInfo {
        peer_id: c.peer_id,
        addr: c.addr,
        node_id: c.node_id,
    };
    if candidates.len() <= max {
        return candidates.iter().map(info).collect();
    }
    let mut groups: HashMap<IpAddr, Vec<Candidate>> = HashMap::new();
    for c in candidates {
        groups.entry(c.source).or_default().push(c);
    }
    let mut groups: Vec<Vec<Candidate>> = groups.into_values().collect();
    for group in &mut groups {
        group.sort_by_key(|c| (c.registered, c.peer_id));
    }
    groups.sort_by_key(|g| (g[0].registered, g[0].peer_id));
    let settled = groups.len().min(max / 2);
    groups[settled..].shuffle(rng);
    let mut chosen = Vec::with_capacity(max);
    for round in 0.. {
        let mut any = false;
        for group in &groups {
            if let Some(c) = group.get(round) {
                any = true;
                chosen.push(info(c));
                if chosen.len() == max {
                    return chosen;
                }
            }
        }
        if !any {
            break;
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn candidate(id: u64, source: [u8; 4], registered: Instant) -> Candidate {
        Candidate {
            peer_id: PeerId(id),
            node_id: NodeId([id as u8; 20]),
            addr: SocketAddr::from((source, 1)),
            source: IpAddr::from(source),
            registered,
        }
    }

    #[test]
    fn all_fit_all_listed() {
        let t = Instant::now();
        let list: Vec<_> = (0..5).map(|i| candidate(i, [10, 0, 0, 1], t)).collect();
        assert_eq!(choose(list, 5, &mut rand::rng()).len(), 5);
    }

    #[test]
    fn one_busy_address_cannot_crowd_out_another() {
        let t = Instant::now();
        let later = t + Duration::from_secs(60);
        // 1,000 hosts from one address, all with lower ids and some registered earlier.
        let mut list: Vec<_> = (0..1000)
            .map(|i| candidate(i, [10, 0, 0, 66], if i < 500 { t } else { later }))
            .collect();
        list.push(candidate(u64::MAX, [10, 0, 0, 1], later));
        for _ in 0..50 {
            let chosen = choose(list.clone(), 16, &mut rand::rng());
            assert_eq!(chosen.len(), 16);
            assert!(chosen.iter().any(|h| h.peer_id == PeerId(u64::MAX)));
        }
    }

    #[test]
    fn long_lived_hosts_stay_and_newcomers_get_a_chance() {
        let t = Instant::now();
        // 4 slots: the 2 oldest addresses always, 2 of the 10 newer ones at random.
        let mut list: Vec<_> = (0..2)
            .map(|i| candidate(i, [10, 0, 0, i as u8], t))
            .collect();
        for i in 2..12u8 {
            list.push(candidate(
                u64::from(i),
                [10, 0, 1, i],
                t + Duration::from_secs(9),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let chosen = choose(list.clone(), 4, &mut rand::rng());
            assert!(chosen.iter().any(|h| h.peer_id == PeerId(0)));
            assert!(chosen.iter().any(|h| h.peer_id == PeerId(1)));
            seen.extend(chosen.iter().map(|h| h.peer_id));
        }
        assert_eq!(seen.len(), 12, "every newcomer was offered at some point");
    }
}
