//! `p2p-transfer peer --interactive`: share, search and download while the peer serves.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::HumanBytes;
use p2p_peer::{DownloadId, DownloadRequest, DownloadState, PeerChange, PeerHandle};
use p2p_protocol::printable;
use tokio::runtime::Handle;

use super::{Flow, ShellSpec, Words, transfers};
use crate::discovery::ServerOrigin;
use crate::tables::{Ids, more, print_files};

/// What Tab completes.
pub const SPEC: ShellSpec = ShellSpec {
    role: "peer",
    commands: &[
        "status",
        "list files",
        "list peers",
        "register",
        "unregister",
        "search",
        "download",
        "transfers",
        "connect",
        "disconnect",
        "hosts",
        "msg",
        "messages",
        "help",
        "exit",
    ],
    path_commands: &["register", "download"],
};

/// The peer shell's commands.
#[derive(Debug, Parser)]
#[command(multicall = true)]
pub enum PeerCommand {
    /// This peer's address, its index server and how it was found, shared files, downloads.
    Status,
    /// List this peer's shared files, or the peers the index knows.
    List {
        #[command(subcommand)]
        what: ListWhat,
    },
    /// Share a file, or a folder as a whole; prints its id (a folder: its folder id and file count).
    Register {
        /// The file or folder.
        path: PathBuf,
    },
    /// Stop sharing a file.
    Unregister {
        /// Its id, or a unique prefix of 6+ characters.
        id: String,
    },
    /// Find files on the network whose name contains every word (ignoring case).
    Search {
        /// Words to look for.
        #[arg(required = true, num_args = 1..)]
        words: Vec<String>,
    },
    /// Download a file in the background; `transfers` shows how it goes.
    Download {
        /// Its id, or a unique prefix of 6+ characters.
        id: String,
        /// Folder to write to, created if missing (default: the peer's --out).
        dir: Option<PathBuf>,
    },
    /// Downloads of this session: progress, speed, hosts in use, state.
    Transfers,
    /// Use this peer as a host for downloads, even if the index doesn't list it (checked
    /// first: something must answer there).
    Connect {
        /// Its chunk server, host:port.
        addr: std::net::SocketAddr,
    },
    /// Stop using a host added with `connect` (or --from).
    Disconnect {
        /// Its address, as `hosts` lists it.
        addr: std::net::SocketAddr,
    },
    /// The hosts added with `connect` (or --from), which every download also asks.
    Hosts,
    /// Send a short text message to another peer.
    Msg {
        /// Its address (host:port) or its peer id as `list peers` shows it.
        to: String,
        /// The message.
        #[arg(required = true, num_args = 1..)]
        words: Vec<String>,
    },
    /// Messages received during this session.
    Messages,
    /// Unregister from the index and leave (running downloads stop; their .part files stay).
    /// With downloads running, it says so first, and leaves when given again.
    #[command(alias = "quit")]
    Exit,
}

/// What `list` shows.
#[derive(Debug, Subcommand)]
pub enum ListWhat {
    /// This peer's shared files: short id, name, size.
    Files,
    /// Peers the index knows.
    Peers,
}

/// How long `download` waits for the lookup before it says the download started: a wrong id
/// or prefix is then its own error, at once, not a line above a later prompt.
const LOOKUP_WAIT: Duration = Duration::from_secs(5);

/// What the commands work with.
pub struct PeerShell {
    pub peer: PeerHandle,
    pub rt: Handle,
    pub origin: Arc<Mutex<ServerOrigin>>,
    pub out_dir: PathBuf,
    /// Failed jobs `download` told of itself.
    pub reported: transfers::Reported,
    /// What the last `search` and `list peers` showed, for Tab.
    seen: Arc<Mutex<Seen>>,
    /// `exit` said downloads are running; the next one leaves.
    exit_warned: bool,
}

/// Ids and names the last `search` showed, and the peers the last `list peers` showed.
#[derive(Default)]
struct Seen {
    files: Vec<(String, String)>,
    peers: Vec<String>,
}

/// Prints messages from other peers above the prompt as they arrive (their `from` and `text`
/// are [`p2p_protocol::RemoteText`]: they show themselves escaped). Messages this peer sent
/// are in the same feed; `msg` has told of those already.
pub fn show_messages(peer: &PeerHandle) -> tokio::task::JoinHandle<()> {
    let mut incoming = peer.subscribe_messages();
    tokio::spawn(async move {
        loop {
            let m = match incoming.recv().await {
                Ok(m) => m,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if m.sent {
                continue;
            }
            crate::logging::print_above_prompt(format!(
                "message from {} at {}: {}",
                sender(&m),
                clock(m.at),
                m.text
            ));
        }
    })
}

/// Who a sent message went to: the node id that took it, and the address it was sent to.
fn recipient(m: &p2p_peer::ReceivedMessage) -> String {
    let named = m.name.as_ref().map_or(String::new(), |n| format!(" {n:?}"));
    format!("{}{named} (at {})", m.node, m.remote)
}

/// Who sent a message: first the node id its connection proved (the one part nobody can
/// fake), then the name it gave itself and the address it came from.
fn sender(m: &p2p_peer::ReceivedMessage) -> String {
    // The name this user gave the node in the allow-list, if any: the user's own words.
    let named = m.name.as_ref().map_or(String::new(), |n| format!(" {n:?}"));
    format!(
        "{}{named} (calls itself \"{}\", from {})",
        m.node, m.from, m.remote
    )
}

/// `HH:MM:SS` (UTC) of a time, for message lines.
fn clock(at: std::time::SystemTime) -> String {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

impl PeerShell {
    pub fn new(
        peer: PeerHandle,
        rt: Handle,
        origin: Arc<Mutex<ServerOrigin>>,
        out_dir: PathBuf,
    ) -> Self {
        Self {
            peer,
            rt,
            origin,
            out_dir,
            reported: Arc::default(),
            seen: Arc::default(),
            exit_warned: false,
        }
    }

    /// What Tab completes after `download` (ids the last search showed), `unregister` (this
    /// peer's shared files) and `msg` (peers listed, and those who sent messages).
    pub fn words(&self) -> Words {
        let (peer, seen) = (self.peer.clone(), self.seen.clone());
        Arc::new(move |command: &str| {
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            match command {
                "download" => seen.files.clone(),
                "unregister" => peer
                    .files()
                    .into_iter()
                    .map(|f| (f.file_id.to_string(), f.name))
                    .collect(),
                "msg" => seen
                    .peers
                    .iter()
                    .cloned()
                    .chain(peer.messages().into_iter().map(|m| m.remote.to_string()))
                    .map(|p| (p, String::new()))
                    .collect(),
                _ => Vec::new(),
            }
        })
    }

    /// Runs one command; errors print one line and keep the prompt.
    pub fn handle(&mut self, command: PeerCommand) -> Flow {
        let result = match command {
            PeerCommand::Exit => return self.exit(),
            PeerCommand::Status => {
                self.status();
                Ok(())
            }
            PeerCommand::List {
                what: ListWhat::Files,
            } => {
                self.list_files();
                Ok(())
            }
            PeerCommand::List {
                what: ListWhat::Peers,
            } => self.list_peers().map_err(Into::into),
            PeerCommand::Register { path } => self.register(path).map_err(Into::into),
            PeerCommand::Unregister { id } => self.unregister(&id).map_err(Into::into),
            PeerCommand::Search { words } => self.search(&words.join(" ")).map_err(Into::into),
            PeerCommand::Download { id, dir } => self.download(id, dir),
            PeerCommand::Transfers => {
                transfers::print(&self.peer);
                Ok(())
            }
            PeerCommand::Connect { addr } => self.connect(addr),
            PeerCommand::Disconnect { addr } => {
                if self.peer.remove_direct_host(addr) {
                    println!("downloads no longer ask {addr}");
                    Ok(())
                } else {
                    Err(anyhow::anyhow!(
                        "{addr} is not a connected host; 'hosts' lists them"
                    ))
                }
            }
            PeerCommand::Hosts => {
                let hosts = self.peer.direct_hosts();
                if hosts.is_empty() {
                    println!("no connected hosts ('connect <host:port>' adds one)");
                }
                for host in hosts {
                    println!("{host}");
                }
                Ok(())
            }
            PeerCommand::Msg { to, words } => self.message(&to, &words.join(" ")),
            PeerCommand::Messages => {
                let messages = self.peer.messages();
                if messages.is_empty() {
                    println!("no messages yet");
                }
                for m in messages {
                    if m.sent {
                        println!("{} to {}: {}", clock(m.at), recipient(&m), m.text);
                    } else {
                        println!("{} {}: {}", clock(m.at), sender(&m), m.text);
                    }
                }
                Ok(())
            }
        };
        if let Err(err) = result {
            println!("error: {}", crate::errors::one_line(&err));
        }
        Flow::Continue
    }

    /// Leaves, unless downloads are running and this is the first `exit` to meet them: then
    /// it says what leaving does, once.
    fn exit(&mut self) -> Flow {
        let running = self.peer.status().downloads_active;
        if running == 0 || self.exit_warned {
            return Flow::Exit;
        }
        self.exit_warned = true;
        println!(
            "{running} download(s) running: 'exit' again stops them and leaves (their .part \
             files stay; the same download resumes them later)"
        );
        Flow::Continue
    }

    /// Adds `addr` as a host once something answers there.
    fn connect(&self, addr: std::net::SocketAddr) -> anyhow::Result<()> {
        // A p2p-transfer peer must answer there (TLS, Hello, Welcome), not just anything.
        let node = match self.rt.block_on(self.peer.probe_peer(addr)) {
            Ok(node) => node,
            Err(p2p_peer::PeerError::PeerUnreachable { cause, .. }) => {
                return Err(anyhow::Error::new(cause)
                    .context(format!("cannot connect to {addr} as a p2p-transfer peer")));
            }
            Err(err) => return Err(err.into()),
        };
        if self.peer.add_direct_host(addr) {
            println!("downloads will also ask {addr} (node {node})");
        } else {
            println!("{addr} is already a connected host (node {node})");
        }
        Ok(())
    }

    fn status(&self) {
        let origin = self
            .origin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let status = self.peer.status();
        println!("listening on  {}", status.listen_addr);
        println!("node id       {}", status.node_id);
        if status.indexes.is_empty() {
            println!("index server  none (direct downloads only)");
        }
        for (at, index) in status.indexes.iter().enumerate() {
            let how = if at == 0 {
                format!(" ({origin})")
            } else {
                String::new()
            };
            println!("index server  {}{how}", index.addr);
            if let Some(id) = index.node_id {
                println!("  node id     {id}");
            }
            match (&index.state, index.peer_id, index.advertised_addr) {
                (p2p_peer::IndexState::Registered, Some(peer_id), Some(addr)) => {
                    println!("  registered  yes, as {peer_id} at {addr}")
                }
                (p2p_peer::IndexState::Down(why), _, _) => {
                    println!("  registered  no: {why} (retrying)")
                }
                _ => println!("  registered  not yet"),
            }
        }
        println!("sharing       {} file(s)", status.files_shared);
        println!("served        {} chunk(s)", status.chunks_served);
        println!("downloads     {} running", status.downloads_active);
        if !status.direct_hosts.is_empty() {
            let hosts: Vec<String> = status.direct_hosts.iter().map(|h| h.to_string()).collect();
            println!("direct hosts  {}", hosts.join(", "));
        }
    }

    fn list_files(&self) {
        let files = self.peer.files();
        if files.is_empty() {
            println!("not sharing any file yet ('register <path>')");
            return;
        }
        println!("{:<12}  {:>10}  {:>6}  NAME", "ID", "SIZE", "FILES");
        for f in files {
            // A folder: its file count, and its name with a `/`.
            let (count, name) = match f.files {
                Some(n) => (n.to_string(), format!("{}/", f.name)),
                None => (String::new(), f.name.clone()),
            };
            println!(
                "{:<12}  {:>10}  {count:>6}  {}",
                f.file_id.fmt_short(),
                HumanBytes(f.size).to_string(),
                printable(&name)
            );
        }
    }

    fn download(&self, id: String, dir: Option<PathBuf>) -> Result<(), anyhow::Error> {
        let dir = dir.unwrap_or_else(|| self.out_dir.clone());
        // The peer adds its direct hosts (`connect`, `--from`) to every request.
        let request = if crate::run::manifest::is_manifest_path(&id) {
            let doc = crate::run::manifest::read(id.as_ref())?;
            // A running peer can't change its index: refused as the web API refuses it.
            self.peer.check_manifest_index(&doc)?;
            DownloadRequest::for_manifest_file(doc, &[])
        } else {
            DownloadRequest::by_id(&id)
        };
        // A missing folder is created, as `--out` is (the default one already was, at start).
        self.rt
            .block_on(crate::run::peer::create_out_dir(&dir))
            .with_context(|| format!("cannot download {id}"))?;
        // Subscribed before the start: the lookup's end can't be missed.
        let mut changes = self.peer.subscribe_changes();
        // Its failure is this command's to report, even one that comes before `start_download`
        // has returned.
        let job = self.reported.start(|| {
            self.rt
                .block_on(self.peer.start_download(id.clone(), request, dir.clone()))
        })?;
        let looked_up = self.rt.block_on(lookup_end(&self.peer, job, &mut changes));
        if let Some(DownloadState::Failed(why)) = looked_up {
            return Err(anyhow::anyhow!(why).context(format!("cannot download {id}")));
        }
        // From here on its end is printed above the prompt.
        self.reported.release(job);
        println!(
            "downloading {id} into {} in the background ('transfers' shows progress)",
            dir.display()
        );
        Ok(())
    }

    fn message(&self, to: &str, text: &str) -> Result<(), anyhow::Error> {
        let (addr, recipient) = self.rt.block_on(self.peer.send_message_to(to, text))?;
        println!("sent to {addr} ({recipient})");
        Ok(())
    }

    fn list_peers(&self) -> Result<(), p2p_peer::PeerError> {
        let (peers, total) = self.rt.block_on(self.peer.network_peers())?;
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).peers =
            peers.iter().map(|p| p.addr.to_string()).collect();
        if peers.is_empty() {
            println!("no peers registered");
            return Ok(());
        }
        let me = self.peer.node_id();
        println!("{:<24} {:<40} {:>6}", "ADDRESS", "NODE ID", "FILES");
        for p in &peers {
            let mark = if p.node_id == me { "  (this peer)" } else { "" };
            println!(
                "{:<24} {:<40} {:>6}{mark}",
                p.addr.to_string(),
                p.node_id.to_string(),
                p.files
            );
        }
        more(peers.len(), total);
        Ok(())
    }

    fn register(&self, path: PathBuf) -> Result<(), p2p_peer::PeerError> {
        for file in self.rt.block_on(self.peer.share_path(&path))? {
            let count = file
                .files
                .map_or_else(String::new, |n| format!(" ({n} files)"));
            println!(
                "registered {} {}{count}",
                printable(&file.path.display().to_string()),
                file.file_id
            );
        }
        Ok(())
    }

    fn unregister(&self, id: &str) -> Result<(), p2p_peer::PeerError> {
        let file_id = self.rt.block_on(self.peer.unshare(id))?;
        println!("unregistered {file_id}");
        Ok(())
    }

    fn search(&self, query: &str) -> Result<(), p2p_peer::PeerError> {
        let (files, total) = self.rt.block_on(self.peer.search(query))?;
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).files = files
            .iter()
            .map(|f| (f.file_id.to_string(), f.name.clone()))
            .collect();
        let none = format!("no file on the network matches {query:?}");
        print_files(&files, total, Ids::Short, &none);
        Ok(())
    }
}

/// The state `job` is in once its lookup has ended, or `None` if it takes longer than
/// [`LOOKUP_WAIT`] (it goes on in the background).
async fn lookup_end(
    peer: &PeerHandle,
    job: DownloadId,
    changes: &mut tokio::sync::broadcast::Receiver<PeerChange>,
) -> Option<DownloadState> {
    let deadline = tokio::time::Instant::now() + LOOKUP_WAIT;
    loop {
        if let Some(info) = peer.download_info(job)
            && info.state != DownloadState::LookingUp
        {
            return Some(info.state);
        }
        match tokio::time::timeout_at(deadline, changes.recv()).await {
            Err(_) | Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
            Ok(_) => {}
        }
    }
}
