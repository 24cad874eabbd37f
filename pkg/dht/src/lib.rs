//! A private Mainline DHT node (BEP 5, KRPC over UDP) for finding the hosts of a file id when
//! no index knows it or none is reachable. The engine is the `mainline` crate; this crate
//! decides how p2p-transfer uses it.
//!
//! # Layout
//! * [`config`]: [`DhtConfig`]: listen address, bootstrap nodes, lookup bounds.
//! * [`node`]: [`Dht`]: start, [`announce`](Dht::announce), [`lookup`](Dht::lookup),
//!   [`bootstrap_nodes`](Dht::bootstrap_nodes).
//! * [`announcer`]: [`Announcer`]: keeps a set of ids announced (add on share, remove on
//!   unshare).
//! * [`routing_cache`]: [`RoutingCache`]: the nodes to rejoin through after a restart.
//! * [`info_hash`](mod@info_hash): [`info_hash()`]: a file id's DHT key.
//! * `bootstrap`: `HOST:PORT` entries to addresses; `schedule`: when each id is due.
//! * [`error`][mod@error]: [`DhtError`].
//!
//! # Private by default
//! A node bootstraps only from [`DhtConfig::bootstrap`]; an empty list means no bootstrap at
//! all (it waits to be contacted). mainline's own default, the public BitTorrent bootstrap
//! routers, is never used: [`DhtConfig`] always hands mainline an explicit list.
//!
//! # What is stored, and for how long
//! [`Dht::announce`] stores, at the nodes closest to the info-hash, the announcing node's
//! source IP as each storing node sees it, with the port given explicitly (the chunk server's
//! port, not the DHT port). Each storing node keeps up to 500 hosts per info-hash and 2,000
//! info-hashes in an LRU, in memory, **with no expiry time**: an announcement stays until the
//! storing node restarts or the LRU pushes it out, so a stopped peer may still be returned. And
//! each put is stored under a fresh random requester id, so a re-announcement adds an entry
//! rather than refreshing one (lookups deduplicate; a node answers a random 10 of its entries).
//! [`Announcer`] re-announces every 15 minutes so that ids stay findable when storing nodes
//! restart or new nodes become the closest.
//!
//! # Private addresses, BEP 42 and server mode (what a routed private site needs)
//! * BEP 42 ("secure node ids") does not reject or rank down nodes on private addresses:
//!   mainline's `Id::is_valid_for_ip` treats every private (10/8, 172.16/12, 192.168/16),
//!   link-local and loopback address as valid for any id, so such nodes count as "secure" in
//!   the routing table and in queries, and a node never rotates its id because of one.
//! * Several nodes on one IP are kept apart as long as their ids differ in the first 21 bits
//!   (random ids: practically always), so many nodes on 127.0.0.1 work, as the tests show.
//! * mainline's sybil measure counts "subnets" by the top 6 bits of the IPv4 address, so every
//!   10.x node is one subnet; it then never considers its closest set diverse enough and stores
//!   (puts) at every node that answered the query, not only the closest 20. Harmless at a site's
//!   size (more copies), more traffic in a very large single-/6 network.
//! * A node answers requests (routes and stores) only in server mode. mainline's default is
//!   "adaptive": a client that switches to server mode after 15 minutes if it confirmed its
//!   public address by pinging itself. A new private DHT would then have nobody to store
//!   anything for its first 15 minutes, so this crate always starts nodes in server mode.
//! * A node with an empty bootstrap list adds whoever sends it a `find_node` to its routing
//!   table (how the first node of a network gets to know the others); a node with a bootstrap
//!   list adds only nodes that answered its own queries.
//! * Through a router without NAT, storing nodes see the announcer's real address, which is
//!   what lookups return. Bind the DHT socket to the address the chunk server is reached on:
//!   on a multi-homed host bound to 0.0.0.0 the source address is the route's.
//! * mainline speaks IPv4 only.
//!
//! Hosts found in the DHT are claims of other nodes: a downloader verifies every chunk, so a
//! lying node can waste time but never deliver wrong bytes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod announcer;
mod bootstrap;
pub mod config;
pub mod error;
pub mod info_hash;
pub mod node;
pub mod routing_cache;
mod schedule;

pub use announcer::{AnnounceEvent, Announcer, REANNOUNCE_EVERY};
pub use config::{DEFAULT_PORT, DhtConfig};
pub use error::DhtError;
pub use info_hash::info_hash;
pub use node::Dht;
pub use routing_cache::RoutingCache;
