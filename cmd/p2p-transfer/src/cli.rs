//! Command-line flags, and the one place they become library configuration.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, error::ErrorKind};
use p2p_central_server::ServerConfig;
use p2p_central_server::config::MIB;
use p2p_peer::{IndexSpec, PeerConfig};
use p2p_protocol::NodeId;
use p2p_web::WebConfig;
use p2p_web::config::{DEFAULT_MAX_UPLOAD_MIB, DEFAULT_PEER_WEB, DEFAULT_SERVER_WEB};

use crate::address::{DEFAULT_INDEX_PORT, ServerAddr};

/// Share files directly between machines on a local network.
#[derive(Debug, Parser)]
#[command(name = "p2p-transfer", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// Say more on stderr: -v adds routine events (info), -vv debug events, -vvv everything.
    /// RUST_LOG overrides it.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors and results: no progress, no warnings. RUST_LOG overrides it for logs.
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Read settings from this file instead of $XDG_CONFIG_HOME/p2p-transfer/config.toml
    /// (which may be missing; this one may not). Flags and environment variables beat it.
    #[arg(long, global = true, env = crate::config::CONFIG_ENV, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// The roles, and the one-shot tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Share files or folders with one other machine, no index needed: prints a ticket and
    /// the command to run there, serves until it has arrived, then exits.
    Send(SendArgs),
    /// Fetch what a ticket from `send` names (or an id or prefix, with an index), verified,
    /// resumable, then exit.
    Receive(ReceiveArgs),
    /// Run the central index server, which knows which peer hosts which file.
    Server(ServerArgs),
    /// Run a peer: share files, serve their chunks, download files from other peers.
    Peer(Box<PeerArgs>),
    /// Find files on the network whose name contains every word (ignoring case).
    Search(SearchArgs),
    /// Work with manifest files (.p2pm), which describe a file for downloading elsewhere.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Print this node's id (creating its identity on first use), to give to others so they
    /// can check who they talk to.
    Id(IdArgs),
    /// Print a completion script for a shell on stdout (see README, "Install").
    Completions(CompletionsArgs),
    /// Write a man page for each command into a folder (`make man`, `make install`).
    #[command(hide = true)]
    Man(ManArgs),
    /// Print the settings in effect and where each comes from: a flag, an environment
    /// variable, the config file, or the default.
    Config(ConfigArgs),
    /// Check what stands between this machine and a transfer (network interfaces, mDNS, the
    /// index server, whether others reach this peer, local folders and keys): one line per
    /// check, the cause and the fix for each problem; exits 1 if it found one.
    Doctor(DoctorArgs),
}

/// `p2p-transfer completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `p2p-transfer man` (hidden: a build step, not something a user runs).
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Folder to write the pages into (created if missing; pages there are replaced).
    #[arg(value_name = "DIR")]
    pub out: PathBuf,
}

/// `p2p-transfer config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print each setting as a JSON object, one a line (see README, "Configuration").
    #[arg(long)]
    pub json: bool,
    /// The settings of this command line instead of every section's, as in
    /// `p2p-transfer config peer --workers 4`.
    #[arg(
        value_name = "COMMAND",
        num_args = 0..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<OsString>,
}

/// `p2p-transfer doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The index server to check: HOST, HOST:PORT, IP or IP:PORT [default: the ones that
    /// answer over mDNS; else 127.0.0.1:8000 and the ones this machine met before].
    #[arg(short = 's', long, env = "P2P_SERVER", value_name = "HOST[:PORT]")]
    pub server: Option<ServerAddr>,
    /// The index server's node id: any other there is a problem.
    #[arg(long, env = "P2P_SERVER_ID", value_name = "NODE-ID")]
    pub server_id: Option<NodeId>,
    /// Address a peer would listen on (as `peer --addr`): the index connects back to its
    /// port to check that others reach this machine there (port 0: one the system picks).
    #[arg(
        short = 'a',
        long,
        default_value = "0.0.0.0:0",
        env = "P2P_PEER_LISTEN"
    )]
    pub addr: SocketAddr,
    /// Address other peers are told to reach this one at, as `peer --advertise-addr`: the
    /// index connects back to its port, and a warning says so when it can only check another
    /// address (it connects to this machine's source address, never to one it is given).
    #[arg(long, value_name = "ADDR")]
    pub advertise_addr: Option<SocketAddr>,
    /// Folder downloads are written to: its free space and partial downloads are checked.
    #[arg(short = 'o', long, default_value = ".", value_name = "DIR")]
    pub out: PathBuf,
    /// Don't query mDNS. P2P_NO_MDNS takes 1/0, true/false, yes/no, on/off.
    #[arg(long, env = "P2P_NO_MDNS", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_mdns: bool,
    /// How long the mDNS query on each interface waits for answers.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub discover_timeout: Duration,
    /// Query mDNS only on this network interface (repeatable).
    #[arg(long = "mdns-interface", value_name = "NAME")]
    pub mdns_interfaces: Vec<String>,
    /// Also check the index servers published in this DNS domain (see `search`).
    #[command(flatten)]
    pub dns_sd: DnsSdArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Print each check as a JSON object, one a line (see README, "When it doesn't work:
    /// doctor").
    #[arg(long)]
    pub json: bool,
}

/// Where a node keeps its key pair.
#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// Folder of this node's key files [default: $XDG_DATA_HOME/p2p-transfer/identity].
    /// Several nodes on one machine each need their own.
    #[arg(long, env = "P2P_IDENTITY_DIR", value_name = "DIR")]
    pub identity_dir: Option<PathBuf>,
}

/// `p2p-transfer id`.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The index server's id instead of the peer's.
    #[arg(long = "server")]
    pub server: bool,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Print the id as a JSON object (see README, "Scripting with --json").
    #[arg(long)]
    pub json: bool,
}

/// Where a one-shot tool finds the index server.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Address of a central index server: HOST, HOST:PORT, IP or IP:PORT (an IPv6 one in
    /// brackets when a port follows); the port defaults to 8000 [default: 127.0.0.1:8000].
    /// `search` takes it several times and asks every one; the other commands use one.
    #[arg(
        short = 's',
        long = "server",
        env = "P2P_SERVER",
        value_name = "HOST[:PORT]"
    )]
    pub servers: Vec<ServerAddr>,
    /// Find the index servers over mDNS instead: every one that answers is asked. As a flag
    /// it beats a server from P2P_SERVER or the config file.
    #[arg(long)]
    pub auto_discover: bool,
    /// How long --auto-discover waits for an answer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub discover_timeout: Duration,
    /// With --auto-discover, ask only the index server whose name contains NAME.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// The index server's node id: any other is refused (see `peer --server-id`).
    #[arg(long, env = "P2P_SERVER_ID", value_name = "NODE-ID")]
    pub server_id: Option<NodeId>,
    #[command(flatten)]
    pub dns_sd: DnsSdArgs,
}

/// Index servers published in the site's DNS (unicast DNS-SD; README, "Publishing the index
/// in DNS").
#[derive(Clone, Debug, Default, Args)]
pub struct DnsSdArgs {
    /// Find the index servers published in this DNS domain (records under
    /// _p2p-transfer._tcp.DOMAIN), for routed sites mDNS can't reach. `search` asks every one
    /// as well as any other index given; the others use the first that answers instead of
    /// --server or --auto-discover, whichever was said louder.
    #[arg(id = "dns_sd_domain", long = "dns-sd-domain", value_name = "DOMAIN", value_parser = crate::dns_sd::parse_domain)]
    pub domain: Option<String>,
    /// With --dns-sd-domain: ask this DNS server (an IP address; port 53 by default) instead
    /// of the system's (/etc/resolv.conf).
    #[arg(id = "dns_sd_server", long = "dns-sd-server", value_name = "IP[:PORT]", value_parser = crate::dns_sd::parse_nameserver)]
    pub server: Option<SocketAddr>,
}

/// `p2p-transfer search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Words the file name must contain.
    #[arg(required = true, num_args = 1..)]
    pub words: Vec<String>,
    #[command(flatten)]
    pub index: IndexArgs,
    /// The search connects as this machine's peer identity.
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Print each index asked and each match as a JSON object, one a line (see README,
    /// "Scripting with --json").
    #[arg(long)]
    pub json: bool,
}

/// `p2p-transfer send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Files or folders to send (each folder as a whole), at most 16.
    #[arg(required = true, num_args = 1..=p2p_protocol::ticket::MAX_TICKET_ITEMS, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Keep serving after the first complete delivery, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// Address to listen on (port 0 picks a free one). The ticket lists this machine's
    /// addresses on that port.
    #[arg(short = 'a', long, default_value = "0.0.0.0:0", value_name = "ADDR")]
    pub addr: SocketAddr,
    /// Put this address in the ticket instead of the ones found on this machine
    /// (repeatable, at most 8): for a sender behind NAT or in a container.
    #[arg(long = "advertise-addr", value_name = "HOST:PORT")]
    pub advertise_addrs: Vec<SocketAddr>,
    /// Register with an index too (--server or --auto-discover), so other machines can find
    /// it by id or name and help serve it.
    #[command(flatten)]
    pub index: IndexArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Print the ticket and each delivery as JSON objects on stdout, one a line, instead of
    /// text (see README, "Scripting with --json").
    #[arg(long)]
    pub json: bool,
}

/// `p2p-transfer receive`.
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// The ticket `send` printed, or (with --server or --auto-discover) a file or folder id
    /// or a unique prefix of at least 6 characters.
    #[arg(value_name = "TICKET")]
    pub ticket: String,
    /// Folder to write into (created if missing).
    #[arg(short = 'o', long, default_value = ".", value_name = "DIR")]
    pub out: PathBuf,
    /// Chunks in flight at once, as `peer --workers`.
    #[arg(short = 'w', long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// An index to ask for more hosts of the ticket's items, or to look an id up at.
    #[command(flatten)]
    pub index: IndexArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Print events (progress, downloaded, failed) as JSON objects on stdout, one a line,
    /// instead of text (see README, "Scripting with --json").
    #[arg(long)]
    pub json: bool,
}

/// `p2p-transfer manifest ...`.
#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Hash a file and write its manifest file (FILE.p2pm, or -o PATH).
    Create {
        /// The file to describe.
        file: PathBuf,
        /// Index server(s) to name in the manifest file (repeatable), each with the node id
        /// this machine's peer met there, if any.
        #[arg(short = 's', long = "server", value_name = "HOST[:PORT]")]
        servers: Vec<ServerAddr>,
        /// The node id of the (one) --server, recorded in the manifest file: whoever
        /// downloads with it refuses any other index there.
        #[arg(long, value_name = "NODE-ID", requires = "servers")]
        server_id: Option<NodeId>,
        #[command(flatten)]
        identity: IdentityArgs,
        /// Where to write it.
        #[arg(short = 'o', long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Print what was written as a JSON object (see README, "Scripting with --json").
        #[arg(long)]
        json: bool,
    },
}

/// The variable that stands for `server --web ADDR`.
const SERVER_WEB_ENV: &str = "P2P_SERVER_WEB";
/// The variable that stands for `peer --web ADDR` (not the server's: both on one machine
/// would otherwise bind the same address).
const PEER_WEB_ENV: &str = "P2P_PEER_WEB";

/// The largest file a manifest can describe, in MiB: the most `--max-upload-mib` allows.
const MAX_UPLOAD_MIB: u32 = (p2p_protocol::MAX_CHUNKS_PER_FILE as u64
    * p2p_protocol::CHUNK_SIZE as u64
    / MIB as u64) as u32;

/// The index server a peer uses when given neither --server, --auto-discover nor --from.
pub const DEFAULT_SERVER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    DEFAULT_INDEX_PORT,
);

/// `p2p-transfer server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Accept registrations only from the nodes listed in FILE (node ids, one a line, each
    /// optionally followed by a name; `#` comments). Reloaded when it changes or on SIGHUP.
    /// Anyone may still search and look files up.
    #[arg(long, env = "P2P_ALLOW_PEERS", value_name = "FILE")]
    pub allow_peers: Option<PathBuf>,
    /// Address to listen on.
    #[arg(
        short = 'p',
        long,
        default_value = "0.0.0.0:8000",
        env = "P2P_SERVER_LISTEN"
    )]
    pub addr: SocketAddr,
    /// How often peers must heartbeat.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// Peers silent for this long are dropped with their files.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Duration,
    /// Client connections served at once. When all are taken, the longest-idle one is
    /// closed for a newcomer (registered peers' connections last).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Connections that send no request this long after the handshake are closed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub first_request_timeout: Duration,
    /// Connections one source address may hold at once (several peers behind one NAT share
    /// it); more are refused with `limit_exceeded`.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_ip: u32,
    /// Registrations one source address may hold at once (one per peer process).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_peers_per_ip: u32,
    /// MiB of manifests the index may store in all; `AddFile` beyond it is refused.
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub max_index_mib: u32,
    /// MiB of manifests the peers of one source address may store (a NAT shares it).
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub max_index_mib_per_ip: u32,
    /// MiB of manifests one peer may store.
    #[arg(long, value_name = "MIB", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub max_index_mib_per_peer: u32,
    /// Folders one peer may share; `AddFolder` beyond that is refused.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_folders_per_peer: u32,
    /// Files the folders of one peer may hold in all (the byte budgets bind too).
    #[arg(long, value_name = "N", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_folder_files_per_peer: u64,
    /// Registrations one source address may make per second, after a burst of
    /// --max-peers-per-ip.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub register_rate_per_ip: u32,
    /// Searches one source address may make per second, after a burst of twice that (at most
    /// 1,000,000: one search runs at a time, so a higher rate means nothing).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub search_rate_per_ip: u32,
    /// Start an interactive shell (status, list peers, list files) while serving.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Don't advertise the server over mDNS (peers then need --server). The variable takes
    /// 1/0, true/false, yes/no, on/off.
    #[arg(long, env = "P2P_NO_MDNS", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_mdns: bool,
    /// Don't answer `Probe`, the request `doctor` checks reachability with (it is refused,
    /// and the index connects nowhere). For an index behind a TCP proxy or port forwarder,
    /// where every connection seems to come from the proxy's address.
    #[arg(long)]
    pub no_probe: bool,
    /// Advertise only on this network interface (repeatable). Default: every interface, or
    /// loopback only when listening on a loopback address.
    #[arg(long = "mdns-interface", value_name = "NAME")]
    pub mdns_interfaces: Vec<String>,
    /// Serve the web dashboard and REST API on ADDR (127.0.0.1:8100 when ADDR is left out;
    /// port 0 picks a free one). Every API request needs the key kept in the identity folder
    /// as `api-key` (P2P_API_KEY overrides it); startup prints a URL that logs a browser in.
    /// Its variable is the server's own, so a server and a peer on one machine never share
    /// an address.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = DEFAULT_SERVER_WEB, env = SERVER_WEB_ENV)]
    pub web: Option<SocketAddr>,
}

/// `p2p-transfer peer`.
#[derive(Debug, Args)]
pub struct PeerArgs {
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Serve files and take messages only from the nodes listed in FILE (node ids, one a
    /// line, each optionally followed by a name shown with its messages; `#` comments).
    /// Reloaded when it changes or on SIGHUP.
    #[arg(long, env = "P2P_ALLOW_PEERS", value_name = "FILE")]
    pub allow_peers: Option<PathBuf>,
    /// Address this peer's chunk server listens on: every interface and a port the system
    /// picks by default, so peers on one machine never collide (the index learns the port).
    #[arg(
        short = 'a',
        long,
        default_value = "0.0.0.0:0",
        env = "P2P_PEER_LISTEN"
    )]
    pub addr: SocketAddr,
    /// Address of a central index server: HOST, HOST:PORT, IP or IP:PORT (an IPv6 one in
    /// brackets when a port follows); the port defaults to 8000. Repeatable: the peer
    /// registers with every one, and one down changes nothing while another answers
    /// [default: 127.0.0.1:8000, or none with --from].
    #[arg(
        short = 's',
        long = "server",
        env = "P2P_SERVER",
        value_name = "HOST[:PORT]"
    )]
    pub servers: Vec<ServerAddr>,
    /// The index server's node id (`p2p-transfer id --server` on its machine): any other is
    /// refused, and over mDNS only a server with this id is used. Also accepts a new id for
    /// an index whose key changed on purpose.
    #[arg(long, env = "P2P_SERVER_ID", value_name = "NODE-ID")]
    pub server_id: Option<NodeId>,
    /// Download directly from this peer (repeatable); without --server, no index is used.
    #[arg(long = "from", value_name = "HOST:PORT")]
    pub from: Vec<SocketAddr>,
    /// Share this folder as one (every file in it, recursively, skipping hidden and partial
    /// files), and follow it as files are added, changed or removed: its folder id follows
    /// (repeatable).
    #[arg(long = "share-dir", value_name = "DIR")]
    pub share_dirs: Vec<PathBuf>,
    /// With --register: also write FILE.p2pm next to each file, and NAME.p2pm next to each
    /// folder NAME (naming this index server).
    #[arg(long, requires = "register")]
    pub write_manifest: bool,
    /// Find the index servers on the local network with mDNS instead of --server: the peer
    /// registers with every one that answers (only the one chosen, with --server-name or
    /// --server-id), and finds the first again if it moves. As a flag it beats a server from
    /// P2P_SERVER or the config file.
    #[arg(long)]
    pub auto_discover: bool,
    /// Don't also register with the index servers this node remembers (the `known-indexes`
    /// file beside its key): only those given, found or named now.
    #[arg(long)]
    pub no_known_indexes: bool,
    /// Take part in the site's DHT (a private Mainline DHT): announce every file and folder
    /// shared, and find the hosts of a full id there when no index knows it or none answers.
    #[arg(long)]
    pub dht: bool,
    /// With --dht: the UDP address of the DHT node (IPv4) [default: the --addr IP (0.0.0.0
    /// for an IPv6 one), port 8010].
    #[arg(long, value_name = "IP:PORT", requires = "dht")]
    pub dht_listen: Option<std::net::SocketAddrV4>,
    /// With --dht: a DHT node to join through, HOST:PORT (repeatable). Besides these, a peer
    /// joins through the nodes it remembers and the peers its indexes list; never through
    /// public nodes.
    #[arg(long, value_name = "HOST:PORT", requires = "dht")]
    pub dht_bootstrap: Vec<String>,
    /// How long --auto-discover waits for an answer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub discover_timeout: Duration,
    /// With several index servers on the network, use the one whose name contains NAME.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// With --auto-discover, browse mDNS only on this network interface (repeatable).
    #[arg(long = "mdns-interface", value_name = "NAME")]
    pub mdns_interfaces: Vec<String>,
    /// Index servers published in the site's DNS.
    #[command(flatten)]
    pub dns_sd: DnsSdArgs,
    /// Address other peers should use to reach this one, if not the listen address.
    #[arg(long)]
    pub advertise_addr: Option<SocketAddr>,
    /// Share this file, or this folder as a whole (repeatable). Prints `registered <path>
    /// <file-id>` for each file, then `registered <folder> <folder-id>` for a folder, and
    /// keeps serving until Ctrl-C.
    #[arg(short = 'r', long = "register", value_name = "PATH")]
    pub register: Vec<PathBuf>,
    /// Download the file or folder with this id (or a unique prefix of at least 6
    /// characters), or what a manifest file (.p2pm) describes. Running it again completes it:
    /// files already there (checked by hash) are kept, `.part` files resume.
    #[arg(short = 'd', long, value_name = "ID")]
    pub download: Option<String>,
    /// Folder downloads are written to.
    #[arg(short = 'o', long, default_value = ".", value_name = "DIR")]
    pub out: PathBuf,
    /// Bounds each download job (a file or a whole folder), across all its hosts: at most N x
    /// 4 MiB of chunks in flight (N whole chunks of a big file) and 32 x N requests (many small
    /// files' chunks in the same bytes). Memory is about 2 x N x 4 MiB.
    #[arg(short = 'w', long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// With every host gone, how long a download keeps asking the index for hosts before it
    /// gives up (its .part file stays; run it again to resume).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub stall_timeout: Duration,
    /// Start an interactive shell after the startup actions (--register, --download).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Time one chunk request may take before it is retried on another host.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Serve the web dashboard and REST API on ADDR (127.0.0.1:8101 when ADDR is left out;
    /// port 0 picks a free one). Every API request needs the key kept in the identity folder
    /// as `api-key` (P2P_API_KEY overrides it); startup prints a URL that logs a browser in.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = DEFAULT_PEER_WEB, env = PEER_WEB_ENV)]
    pub web: Option<SocketAddr>,
    /// With --web: folder files uploaded through the page or the API are written to, then
    /// shared from [default: $XDG_DATA_HOME/p2p-transfer/uploads, created with mode 0700].
    #[arg(long, env = "P2P_UPLOAD_DIR", value_name = "DIR")]
    pub upload_dir: Option<PathBuf>,
    /// With --web: the largest upload accepted, in MiB (at most 131072, the largest file a
    /// manifest can describe).
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MAX_UPLOAD_MIB, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_UPLOAD_MIB)))]
    pub max_upload_mib: u32,
    /// Print events (listening, registered, progress, downloaded, failed...) as JSON objects
    /// on stdout, one a line, instead of text (see README, "Scripting with --json").
    #[arg(long, conflicts_with = "interactive")]
    pub json: bool,
}

impl Command {
    /// Whether an interactive shell will run (logs then go above its prompt).
    pub fn interactive(&self) -> bool {
        match self {
            Command::Server(args) => args.interactive,
            Command::Peer(args) => args.interactive,
            Command::Search(_)
            | Command::Manifest(_)
            | Command::Id(_)
            | Command::Completions(_)
            | Command::Man(_)
            | Command::Doctor(_)
            | Command::Send(_)
            | Command::Receive(_)
            | Command::Config(_) => false,
        }
    }
}

impl ServerArgs {
    /// Checks flag combinations clap can't express.
    pub fn validate(&self) {
        if self.heartbeat_timeout <= self.heartbeat_interval {
            Cli::command()
                .error(
                    ErrorKind::InvalidValue,
                    "--heartbeat-timeout must be longer than --heartbeat-interval",
                )
                .exit();
        }
        if self.first_request_timeout.is_zero() {
            Cli::command()
                .error(
                    ErrorKind::InvalidValue,
                    "--first-request-timeout must be longer than 0s",
                )
                .exit();
        }
    }
}

impl From<&ServerArgs> for ServerConfig {
    fn from(args: &ServerArgs) -> Self {
        ServerConfig {
            heartbeat_interval: args.heartbeat_interval,
            heartbeat_timeout: args.heartbeat_timeout,
            max_connections: args.max_connections as usize,
            max_connections_per_ip: args.max_connections_per_ip as usize,
            max_peers_per_ip: args.max_peers_per_ip as usize,
            first_request_timeout: args.first_request_timeout,
            max_index_bytes: args.max_index_mib as usize * MIB,
            max_index_bytes_per_ip: args.max_index_mib_per_ip as usize * MIB,
            max_index_bytes_per_peer: args.max_index_mib_per_peer as usize * MIB,
            max_folders_per_peer: args.max_folders_per_peer as usize,
            max_folder_files_per_peer: args.max_folder_files_per_peer,
            register_rate_per_ip: args.register_rate_per_ip,
            search_rate_per_ip: args.search_rate_per_ip,
            probes: !args.no_probe,
            ..ServerConfig::default()
        }
    }
}

impl PeerArgs {
    /// The web server's config, once its key and upload folder are known.
    pub fn web_config(&self, api_key: String, upload_dir: PathBuf) -> WebConfig {
        WebConfig {
            max_upload_bytes: u64::from(self.max_upload_mib) * MIB as u64,
            ..WebConfig::new(api_key, upload_dir)
        }
    }
}

impl From<&PeerArgs> for PeerConfig {
    fn from(args: &PeerArgs) -> Self {
        PeerConfig {
            listen_addr: args.addr,
            // A host name is looked up when the peer starts (`run::peer`), not here.
            indexes: match args.servers.as_slice() {
                [] => (args.from.is_empty() && !args.auto_discover && args.dns_sd.domain.is_none())
                    .then(|| IndexSpec::at(DEFAULT_SERVER))
                    .into_iter()
                    .collect(),
                servers => servers
                    .iter()
                    .filter_map(|s| s.socket_addr().map(IndexSpec::at))
                    .collect(),
            },
            advertise_addr: args.advertise_addr,
            workers: usize::from(args.workers),
            request_timeout: args.request_timeout,
            stall_timeout: args.stall_timeout,
            // Where it remembers its routing table is set once the identity folder is known.
            dht: args.dht.then(|| p2p_peer::DhtSettings {
                config: p2p_dht::DhtConfig {
                    listen: args.dht_listen.unwrap_or_else(|| {
                        let ip = match args.addr.ip() {
                            std::net::IpAddr::V4(ip) => ip,
                            std::net::IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
                        };
                        std::net::SocketAddrV4::new(ip, p2p_dht::DEFAULT_PORT)
                    }),
                    bootstrap: args.dht_bootstrap.clone(),
                    ..p2p_dht::DhtConfig::default()
                },
                cache_dir: None,
            }),
            ..PeerConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_addrs(config: &PeerConfig) -> Vec<std::net::SocketAddr> {
        config.indexes.iter().map(|i| i.addr).collect()
    }

    /// The flags as `main` parses them (no config file): clap's rules, then the ones
    /// `config::settle` applies.
    fn parse(argv: &[&str]) -> Result<Cli, crate::config::LoadError> {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        crate::config::parse(&argv, None)
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn server_limits_become_config() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["p2p-transfer", "server"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
        };
        let Command::Server(args) = parse(&[]).unwrap().command else {
            panic!("not server")
        };
        let defaults = ServerConfig::from(&args);
        assert_eq!(defaults.max_connections_per_ip, 64);
        assert_eq!(defaults.max_peers_per_ip, 64);
        assert_eq!(
            defaults.first_request_timeout,
            ServerConfig::default().first_request_timeout
        );
        // The flags' defaults are the library's.
        let library = ServerConfig::default();
        assert_eq!(defaults.max_index_bytes, library.max_index_bytes);
        assert_eq!(
            defaults.max_index_bytes_per_ip,
            library.max_index_bytes_per_ip
        );
        assert_eq!(
            defaults.max_index_bytes_per_peer,
            library.max_index_bytes_per_peer
        );
        assert_eq!(defaults.register_rate_per_ip, library.register_rate_per_ip);
        assert_eq!(defaults.search_rate_per_ip, library.search_rate_per_ip);
        assert_eq!(defaults.max_folders_per_peer, library.max_folders_per_peer);
        assert_eq!(
            defaults.max_folder_files_per_peer,
            library.max_folder_files_per_peer
        );
        let Command::Server(args) = parse(&[
            "--max-connections-per-ip",
            "500",
            "--max-peers-per-ip",
            "300",
            "--first-request-timeout",
            "3s",
            "--max-index-mib",
            "1024",
            "--max-index-mib-per-ip",
            "100",
            "--search-rate-per-ip",
            "20",
            "--max-folders-per-peer",
            "3",
            "--max-folder-files-per-peer",
            "5000",
        ])
        .unwrap()
        .command
        else {
            panic!("not server")
        };
        let config = ServerConfig::from(&args);
        assert_eq!(config.max_connections_per_ip, 500);
        assert_eq!(config.max_peers_per_ip, 300);
        assert_eq!(config.first_request_timeout, Duration::from_secs(3));
        assert_eq!(config.max_index_bytes, 1024 * MIB);
        assert_eq!(config.max_index_bytes_per_ip, 100 * MIB);
        assert_eq!(config.search_rate_per_ip, 20);
        assert_eq!(config.max_folders_per_peer, 3);
        assert_eq!(config.max_folder_files_per_peer, 5000);
        // No limit of zero: that would refuse everyone.
        let err = parse(&["--max-peers-per-ip", "0"]).unwrap_err().to_string();
        assert!(err.contains("--max-peers-per-ip"), "{err}");
        // Nor an absurd rate.
        let err = parse(&["--search-rate-per-ip", "4294967295"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--search-rate-per-ip"), "{err}");
    }

    #[test]
    fn peer_flags_become_config() {
        let cli = Cli::try_parse_from([
            "p2p-transfer",
            "peer",
            "--addr",
            "127.0.0.1:0",
            "--server",
            "127.0.0.1:9",
            "-w",
            "3",
            "-r",
            "a",
            "-r",
            "b",
        ])
        .unwrap();
        let Command::Peer(args) = cli.command else {
            panic!("not peer")
        };
        let config = PeerConfig::from(&*args);
        assert_eq!(config.workers, 3);
        assert_eq!(index_addrs(&config), ["127.0.0.1:9".parse().unwrap()]);
        assert_eq!(args.register.len(), 2);
        let direct =
            Cli::try_parse_from(["p2p-transfer", "peer", "--from", "127.0.0.1:7", "-d", "ab"])
                .unwrap();
        let Command::Peer(args) = direct.command else {
            panic!("not peer")
        };
        assert_eq!(
            index_addrs(&PeerConfig::from(&*args)).first().copied(),
            None,
            "--from alone uses no index"
        );
        assert!(Cli::try_parse_from(["p2p-transfer", "peer", "-w", "0"]).is_err());
        assert!(
            parse(&[
                "p2p-transfer",
                "peer",
                "--auto-discover",
                "--server",
                "1.2.3.4:5"
            ])
            .is_err()
        );
        assert!(parse(&["p2p-transfer", "peer", "--server-name", "x"]).is_err());
    }

    #[test]
    fn peer_defaults_to_every_interface_and_a_free_port() {
        let Command::Peer(args) = Cli::try_parse_from(["p2p-transfer", "peer"])
            .unwrap()
            .command
        else {
            panic!("not peer")
        };
        assert_eq!(args.addr, "0.0.0.0:0".parse().unwrap());
        assert_eq!(index_addrs(&PeerConfig::from(&*args)), [DEFAULT_SERVER]);
    }

    #[test]
    fn server_takes_host_forms_with_the_default_port() {
        let server = |value: &str| match Cli::try_parse_from(["p2p-transfer", "peer", "-s", value])
            .map(|cli| cli.command)
        {
            Ok(Command::Peer(args)) => Ok(args.servers[0].to_string()),
            Ok(_) => panic!("not peer"),
            Err(err) => Err(err.to_string()),
        };
        assert_eq!(server("10.1.2.3").unwrap(), "10.1.2.3:8000");
        assert_eq!(server("::1").unwrap(), "[::1]:8000");
        assert_eq!(server("[::1]:9").unwrap(), "[::1]:9");
        assert_eq!(server("index.lan").unwrap(), "index.lan:8000");
        assert_eq!(server("localhost:9").unwrap(), "localhost:9");
        let err = server("index.lan:x").unwrap_err();
        assert!(err.contains("\"x\" is not a port"), "{err}");
        // A name is looked up when the peer starts.
        let Command::Peer(args) = Cli::try_parse_from(["p2p-transfer", "peer", "-s", "box"])
            .unwrap()
            .command
        else {
            panic!("not peer")
        };
        assert_eq!(index_addrs(&PeerConfig::from(&*args)), []);
        let Command::Search(args) =
            Cli::try_parse_from(["p2p-transfer", "search", "-s", "box:1", "x"])
                .unwrap()
                .command
        else {
            panic!("not search")
        };
        assert_eq!(args.index.servers[0].to_string(), "box:1");
    }

    #[test]
    fn verbosity_flags_are_global() {
        let cli = Cli::try_parse_from(["p2p-transfer", "peer", "-vv"]).unwrap();
        assert_eq!((cli.verbose, cli.quiet), (2, false));
        let cli = Cli::try_parse_from(["p2p-transfer", "-q", "search", "x"]).unwrap();
        assert!(cli.quiet);
        assert!(Cli::try_parse_from(["p2p-transfer", "peer", "-q", "-v"]).is_err());
    }

    #[test]
    fn web_takes_an_optional_address_with_a_default_per_role() {
        let web = |argv: &[&str]| match Cli::try_parse_from(argv).unwrap().command {
            Command::Server(args) => args.web,
            Command::Peer(args) => args.web,
            _ => panic!("not a node"),
        };
        assert_eq!(web(&["p2p-transfer", "server"]), None);
        assert_eq!(
            web(&["p2p-transfer", "server", "--web"]),
            Some(p2p_web::config::DEFAULT_SERVER_WEB_ADDR)
        );
        assert_eq!(
            web(&["p2p-transfer", "peer", "--web"]),
            Some(p2p_web::config::DEFAULT_PEER_WEB_ADDR)
        );
        assert_eq!(
            web(&["p2p-transfer", "peer", "--web", "127.0.0.1:0", "-r", "f"]),
            Some("127.0.0.1:0".parse().unwrap())
        );
        // A flag after a bare --web is not taken for its address.
        assert_eq!(
            web(&["p2p-transfer", "server", "--web", "--no-mdns"]),
            Some(p2p_web::config::DEFAULT_SERVER_WEB_ADDR)
        );
        assert!(Cli::try_parse_from(["p2p-transfer", "server", "--web", "nowhere"]).is_err());
    }

    #[test]
    fn each_role_has_its_own_web_variable() {
        let env = |role: &str| {
            let command = Cli::command();
            let sub = command.find_subcommand(role).unwrap();
            let web = sub.get_arguments().find(|a| a.get_id() == "web").unwrap();
            web.get_env().map(|e| e.to_str().unwrap().to_owned())
        };
        assert_eq!(env("server").as_deref(), Some("P2P_SERVER_WEB"));
        assert_eq!(env("peer").as_deref(), Some("P2P_PEER_WEB"));
    }

    #[test]
    fn upload_flags_become_web_config() {
        let Command::Peer(args) = Cli::try_parse_from(["p2p-transfer", "peer", "--web"])
            .unwrap()
            .command
        else {
            panic!("not peer")
        };
        let config = args.web_config("k".into(), "/up".into());
        assert_eq!(config.max_upload_bytes, 64 << 30);
        assert_eq!(
            config.max_upload_bytes,
            WebConfig::new(String::new(), PathBuf::new()).max_upload_bytes,
            "the flag's default is the library's"
        );
        let Command::Peer(args) =
            Cli::try_parse_from(["p2p-transfer", "peer", "--max-upload-mib", "3"])
                .unwrap()
                .command
        else {
            panic!("not peer")
        };
        assert_eq!(
            args.web_config("k".into(), "/up".into()).max_upload_bytes,
            3 * MIB as u64
        );
        for bad in ["0", "131073"] {
            assert!(
                Cli::try_parse_from(["p2p-transfer", "peer", "--max-upload-mib", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(
            Cli::try_parse_from(["p2p-transfer", "peer", "--max-upload-mib", "131072"]).is_ok()
        );
    }

    #[test]
    fn search_takes_several_servers_or_a_name_and_json() {
        let parse = |argv: &[&str]| {
            parse(&[&["p2p-transfer", "search", "w"], argv].concat()).map(|cli| match cli.command {
                Command::Search(args) => args,
                _ => panic!("not search"),
            })
        };
        let args = parse(&["-s", "127.0.0.1:1", "--server", "127.0.0.1:2", "--json"]).unwrap();
        assert_eq!(args.index.servers.len(), 2);
        assert!(args.json);
        let args = parse(&["--auto-discover", "--server-name", "lab"]).unwrap();
        assert_eq!(args.index.server_name.as_deref(), Some("lab"));
        // A name picks among answers over mDNS only.
        assert!(parse(&["--server-name", "lab"]).is_err());
        assert!(parse(&["--auto-discover", "-s", "127.0.0.1:1"]).is_err());
        // A peer's events are either a shell's or a script's.
        assert!(Cli::try_parse_from(["p2p-transfer", "peer", "--json", "-i"]).is_err());
    }
}
