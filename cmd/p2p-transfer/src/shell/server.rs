//! `p2p-transfer server --interactive`: look at the index while it serves.

use std::time::Duration;

use clap::{Parser, Subcommand};
use indicatif::HumanDuration;
use p2p_central_server::ServerHandle;

use super::{Flow, ShellSpec};
use crate::tables::{Ids, more, print_files};

/// What Tab completes.
pub const SPEC: ShellSpec = ShellSpec {
    role: "server",
    commands: &["status", "list peers", "list files", "help", "exit"],
    path_commands: &[],
};

/// The server shell's commands.
#[derive(Debug, Parser)]
#[command(multicall = true)]
pub enum ServerCommand {
    /// Listen address, mDNS advertisement, uptime, peer and file counts.
    Status,
    /// List registered peers or files.
    List {
        #[command(subcommand)]
        what: ListWhat,
    },
    /// Stop the server and leave.
    #[command(alias = "quit")]
    Exit,
}

/// What `list` shows.
#[derive(Debug, Subcommand)]
pub enum ListWhat {
    /// Address, peer id, file count, time since the last heartbeat.
    Peers,
    /// Short id, name, size, number of hosts.
    Files,
}

/// What the commands look at.
pub struct ServerShell {
    pub server: ServerHandle,
    /// Who this server is.
    pub node_id: p2p_protocol::NodeId,
    /// The mDNS instance name, if advertising.
    pub mdns: Option<String>,
}

impl ServerShell {
    /// Runs one command.
    pub fn handle(&self, command: ServerCommand) -> Flow {
        match command {
            ServerCommand::Status => self.status(),
            ServerCommand::List {
                what: ListWhat::Peers,
            } => self.list_peers(),
            ServerCommand::List {
                what: ListWhat::Files,
            } => self.list_files(),
            ServerCommand::Exit => return Flow::Exit,
        }
        Flow::Continue
    }

    fn status(&self) {
        let status = self.server.status();
        println!("listening on  {}", status.local_addr);
        println!("node id       {}", self.node_id);
        match &self.mdns {
            Some(name) => println!("mDNS          advertised as {name:?}"),
            None => println!("mDNS          off"),
        }
        let uptime = Duration::from_secs(status.uptime.as_secs());
        println!("uptime        {}", HumanDuration(uptime));
        println!("peers         {}", status.peers);
        println!("files         {}", status.files);
        let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
        println!(
            "manifests     {:.1} MiB of {:.0} MiB",
            mib(status.stored_bytes),
            mib(status.max_stored_bytes)
        );
    }

    fn list_peers(&self) {
        let (peers, total) = self.server.list_peers();
        if peers.is_empty() {
            println!("no peers registered");
            return;
        }
        println!(
            "{:<24} {:<40} {:>6}  LAST HEARTBEAT",
            "ADDRESS", "NODE ID", "FILES"
        );
        for p in &peers {
            let age = Duration::from_millis(p.last_seen_ms).as_secs_f64();
            println!(
                "{:<24} {:<40} {:>6}  {age:.1}s ago",
                p.addr.to_string(),
                p.node_id.to_string(),
                p.files
            );
        }
        more(peers.len(), total);
    }

    fn list_files(&self) {
        let (files, total) = self.server.list_files();
        print_files(&files, total, Ids::Short, "no files registered");
    }
}
