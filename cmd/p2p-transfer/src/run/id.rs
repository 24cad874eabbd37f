//! `p2p-transfer id`, and loading a node's identity at start.

use anyhow::Context;
use p2p_identity::{Identity, Role};
use p2p_transport::Tls;

use crate::cli::{IdArgs, IdentityArgs};

/// Prints the node id on stdout (the one line scripts read).
pub fn run(args: &IdArgs) -> anyhow::Result<()> {
    let role = if args.server {
        Role::Server
    } else {
        Role::Peer
    };
    let identity = load(&args.identity, role)?;
    if args.json {
        crate::json::emit(&crate::json::Event::NodeId {
            role: if args.server { "server" } else { "peer" },
            node_id: identity.node_id().to_string(),
        });
    } else {
        println!("{}", identity.node_id());
    }
    Ok(())
}

/// The identity of a `role` node, from `--identity-dir` (or `P2P_IDENTITY_DIR`, or the data
/// folder), created on first use; says so on stderr when it is new.
pub fn load(args: &IdentityArgs, role: Role) -> anyhow::Result<Identity> {
    load_quietly(args, role, true)
}

/// The folder of this node's identity (and of the index servers it knows).
pub fn dir(args: &IdentityArgs) -> anyhow::Result<std::path::PathBuf> {
    args.identity_dir
        .clone()
        .or_else(|| p2p_identity::default_dir(dirs::data_dir()))
        .context("no folder for this node's identity: give --identity-dir or set P2P_IDENTITY_DIR")
}

fn load_quietly(args: &IdentityArgs, role: Role, announce: bool) -> anyhow::Result<Identity> {
    let dir = dir(args)?;
    let (identity, created) = Identity::load_or_create(&dir, role)?;
    if created && announce && !crate::logging::quiet() {
        eprintln!(
            "created a new identity for this node in {}",
            identity.path().display()
        );
    }
    Ok(identity)
}

/// The identity of a `role` node and its TLS set-up.
pub fn load_tls(args: &IdentityArgs, role: Role) -> anyhow::Result<(Identity, Tls)> {
    let identity = load(args, role)?;
    let tls = Tls::new(&identity)?;
    Ok((identity, tls))
}

/// The TLS set-up of this machine's peer identity for a one-shot client (`search`), created
/// without a word if there is none yet: its output is the command's own.
pub fn client_tls(args: &IdentityArgs) -> anyhow::Result<Tls> {
    let identity = load_quietly(args, Role::Peer, false)?;
    Ok(Tls::new(&identity)?)
}
