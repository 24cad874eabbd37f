//! `p2p-transfer peer`: register the given files, download the given id, then exit (download
//! only), open the shell (`-i`), or keep serving until Ctrl-C.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use p2p_peer::{Peer, PeerConfig, PeerHandle};
use tokio_util::sync::CancellationToken;

use crate::cli::PeerArgs;
use crate::discovery::{Finder, ServerOrigin};
use crate::progress;
use crate::shell::{self, Transfers, peer::PeerShell};

/// Runs a peer as the flags say.
pub async fn run(args: &PeerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut config = PeerConfig::from(args);
    let mut origin = Arc::new(Mutex::new(ServerOrigin::Flag));
    if args.auto_discover {
        let finder = Finder::new(args);
        config.server_addr = finder.find(true).await?;
        origin = finder.origin.clone();
        config.rediscover = Some(Arc::new(finder));
    }
    let peer = Peer::start(config).await?;
    println!("peer listening on {}", peer.local_addr());
    let result = startup_actions(&peer, args, &shutdown).await;
    if args.interactive {
        // A failed startup action is reported, and the shell opens all the same.
        if let Err(err) = &result {
            eprintln!("error: {err:#}");
        }
        let result = interactive(&peer, args, origin, &shutdown).await;
        peer.shutdown().await;
        return result;
    }
    let keep_serving = result.is_ok() && (!args.register.is_empty() || args.download.is_none());
    if keep_serving {
        shutdown.cancelled().await;
    }
    peer.shutdown().await;
    result
}

async fn interactive(
    peer: &PeerHandle,
    args: &PeerArgs,
    origin: Arc<Mutex<ServerOrigin>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let downloads = shutdown.child_token();
    let transfers = Transfers::default();
    let shell = PeerShell {
        peer: peer.clone(),
        rt: tokio::runtime::Handle::current(),
        origin,
        out_dir: args.out.clone(),
        transfers: transfers.clone(),
        downloads: downloads.clone(),
    };
    let done = shell::spawn(&shell::peer::SPEC, move |command| shell.handle(command));
    let result = tokio::select! {
        result = done => result.context("shell thread ended unexpectedly").and_then(|r| r.context("terminal error")),
        _ = shutdown.cancelled() => Ok(()),
    };
    // Running downloads stop; their .part files stay for a later run.
    downloads.cancel();
    transfers.wait().await;
    result
}

async fn startup_actions(
    peer: &PeerHandle,
    args: &PeerArgs,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    for path in &args.register {
        let file_id = peer
            .register(path)
            .await
            .with_context(|| format!("cannot register {}", path.display()))?;
        println!("registered {} {file_id}", path.display());
    }
    if let Some(id) = &args.download {
        let (events, reporter) = progress::start();
        let report = peer
            .download(id, &args.out, Some(events), shutdown.child_token())
            .await;
        reporter.await.ok();
        let report = report.with_context(|| format!("cannot download {id}"))?;
        let secs = report.elapsed.as_secs_f64();
        println!(
            "downloaded {} {} {} in {secs:.2}s ({:.1} MB/s)",
            report.path.display(),
            report.file_id,
            report.bytes,
            report.bytes as f64 / secs.max(1e-9) / 1e6,
        );
    }
    Ok(())
}
