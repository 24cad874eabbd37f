//! `p2p-transfer peer`: register the given files, download the given id or manifest file, then
//! exit (download only), open the shell (`-i`), or keep serving until Ctrl-C.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use p2p_peer::download::MAX_REPORTED;
use p2p_peer::downloads;
use p2p_peer::share_dir::{ShareDir, ShareDirConfig};
use p2p_peer::{DownloadRequest, JobUpdate, Peer, PeerConfig, PeerError, PeerHandle, Shared};
use p2p_protocol::manifest_file::IndexRef;
use p2p_protocol::manifest_file::{AnyManifestFile, ManifestFile};
use p2p_protocol::printable;
use p2p_storage::StorageError;
use tokio_util::sync::CancellationToken;

use crate::cli::PeerArgs;
use crate::discovery::{Finder, ServerOrigin};
use crate::progress;
use crate::run::manifest;
use crate::shell::{self, peer::PeerShell};
use crate::trust::IndexTrust;

/// Rescan of a shared folder when the watcher reported nothing.
const SHARE_DIR_RESCAN: std::time::Duration = std::time::Duration::from_secs(30);

/// Where manifests of shared-folder files are cached: `P2P_MANIFEST_CACHE`, or the user's
/// data directory.
fn manifest_cache() -> Option<std::path::PathBuf> {
    std::env::var_os("P2P_MANIFEST_CACHE")
        .map(Into::into)
        .or_else(|| dirs::data_dir().map(|d| d.join("p2p-transfer").join("manifest-cache.json")))
}

/// Runs a peer as the flags say.
pub async fn run(args: &PeerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (identity, tls) = crate::run::id::load_tls(&args.identity, p2p_identity::Role::Peer)?;
    let web = crate::run::web::bind_peer(args).await?;
    let mut config = PeerConfig::from(args);
    // A peer that exits once its download is done would announce the file only to withdraw
    // it a moment later.
    config.share_downloads = !exits_after_download(args);
    let mut origin = Arc::new(Mutex::new(ServerOrigin::Flag));
    // A manifest file is read (and checked) before anything starts; it may name the index.
    let manifest_file = match &args.download {
        Some(arg) if manifest::is_manifest_path(arg) => Some(manifest::read(arg.as_ref())?),
        _ => None,
    };
    config.allow_peers = crate::allow::load(args.allow_peers.as_deref(), &shutdown)?;
    let mut trust = IndexTrust::load(&args.identity, args.server_id)?;
    if let Some(doc) = &manifest_file
        && args.server.is_none()
        && !args.auto_discover
        && let Some(listed) = doc.servers().first()
    {
        config.server_addr = Some(listed.addr);
        if let (Some(id), Some(path)) = (listed.node_id, &args.download) {
            trust.pin_from(id, listed.addr, path.as_ref())?;
        }
    }
    // The node id an mDNS answer claimed, for the handshake to prove.
    let mut claimed = None;
    if args.auto_discover {
        let finder = Finder::new(args, trust.preference(), tls.clone());
        let (addr, id) = finder.find_claimed(true).await?;
        config.server_addr = Some(addr);
        claimed = id;
        origin = finder.origin.clone();
        config.rediscover = Some(Arc::new(finder));
    }
    config.server_id = config
        .server_addr
        .and_then(|addr| trust.expect_for(addr, claimed));
    let server_addr = config.server_addr;
    let peer = Peer::start(config, tls)
        .await
        .map_err(|e| trust.explain(e))?;
    // Before the address: scripts (and tests) read up to "listening on" and may stop reading.
    println!("peer node id {}", identity.node_id());
    if let (Some(addr), Some(seen)) = (server_addr, peer.index_node_id()) {
        println!("index server node id {seen}");
        if let Some(news) = trust.remember(addr, seen)? {
            println!("{news}");
        }
    }
    let found_index_by = crate::run::web::found_index_by(args, server_addr, &origin);
    let web = crate::run::web::start_peer(web, args, &peer, found_index_by, &shutdown);
    println!("peer listening on {}", peer.local_addr());
    // Every download job (the shell's, the web API's) asks the --from hosts too.
    for host in &args.from {
        peer.add_direct_host(*host);
    }
    let result = startup_actions(&peer, args, manifest_file, &shutdown).await;
    if args.interactive {
        // A failed startup action is reported, and the shell opens all the same.
        if let Err(err) = &result {
            eprintln!("error: {}", printable(&format!("{err:#}")));
        }
        let result = interactive(&peer, args, origin, &shutdown).await;
        crate::run::web::stop(web).await;
        peer.shutdown().await;
        return result;
    }
    if result.is_ok() && !exits_after_download(args) {
        shutdown.cancelled().await;
    }
    crate::run::web::stop(web).await;
    peer.shutdown().await;
    result
}

/// Whether this peer stops once its startup download is done: it has nothing to share and no
/// shell to open.
fn exits_after_download(args: &PeerArgs) -> bool {
    !args.interactive
        && args.download.is_some()
        && args.register.is_empty()
        && args.share_dirs.is_empty()
}

async fn interactive(
    peer: &PeerHandle,
    args: &PeerArgs,
    origin: Arc<Mutex<ServerOrigin>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let shell = PeerShell {
        peer: peer.clone(),
        rt: tokio::runtime::Handle::current(),
        origin,
        out_dir: args.out.clone(),
    };
    let messages = shell::peer::show_messages(peer);
    let outcomes = shell::transfers::show_outcomes(peer);
    let done = shell::spawn(&shell::peer::SPEC, move |command| shell.handle(command));
    let result = tokio::select! {
        result = done => result.context("shell thread ended unexpectedly").and_then(|r| r.context("terminal error")),
        _ = shutdown.cancelled() => Ok(()),
    };
    messages.abort();
    outcomes.abort();
    // The caller's shutdown stops running downloads; their .part files stay for a later run.
    result
}

async fn startup_actions(
    peer: &PeerHandle,
    args: &PeerArgs,
    manifest_file: Option<AnyManifestFile>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    // Hashing waits on the disk (a huge file, a hung network file system): a signal stops it.
    let sharing = async {
        register(peer, &args.register, args.write_manifest).await?;
        for dir in &args.share_dirs {
            let config = ShareDirConfig {
                dir: dir.clone(),
                cache_file: manifest_cache(),
                rescan_every: SHARE_DIR_RESCAN,
            };
            let (_, shared) = ShareDir::start(peer, config)
                .await
                .with_context(|| format!("cannot share {}", dir.display()))?;
            print_registered(&shared);
        }
        anyhow::Ok(())
    };
    tokio::select! {
        result = sharing => result?,
        () = shutdown.cancelled() => anyhow::bail!("interrupted before every file was shared"),
    }
    if let Some(arg) = &args.download {
        let request = match manifest_file {
            Some(doc) => DownloadRequest::for_manifest_file(doc, &args.from),
            None => DownloadRequest {
                id: arg.clone(),
                hosts: args.from.clone(),
                ..DownloadRequest::default()
            },
        };
        download(peer, arg, request, &args.out, shutdown).await?;
    }
    Ok(())
}

/// The startup download, as a job of the node's registry like every other download (so the
/// dashboard and the event stream show it): its progress bar, then what it did. A file:
/// `downloaded PATH ID ...` or `already downloaded PATH ID`. A folder: one line per conflict
/// or failed file (at most [`MAX_REPORTED`] of each), then
/// `folder NAME ID: F fetched, A already there, C conflicts, X failed (B bytes in T s)`.
/// Anything missing is an error (exit 1), and the same command run again completes it. A
/// signal cancels the job; its `.part` files stay for the next run. (`receive` runs its
/// downloads through here too.)
pub(crate) async fn download(
    peer: &PeerHandle,
    arg: &str,
    request: DownloadRequest,
    out: &std::path::Path,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let failed = || format!("cannot download {arg}");
    let (observer, mut updates) = tokio::sync::mpsc::unbounded_channel();
    let id = peer
        .start_download_observed(arg.to_owned(), request, out.to_path_buf(), observer)
        .await
        .with_context(failed)?;
    let (events, view) = progress::start();
    let mut cancelled = false;
    let ended = loop {
        let update = tokio::select! {
            update = updates.recv() => update,
            () = shutdown.cancelled(), if !cancelled => {
                cancelled = true;
                // A job that has just ended is answered as it is; its end follows all the same.
                let _ = peer.cancel_download(id);
                continue;
            }
        };
        match update {
            Some(JobUpdate::Event(event)) => {
                let _ = events.send(event);
            }
            Some(JobUpdate::Ended(result)) => break result,
            // The run always says how it ended; only a runtime going down drops it unsaid.
            None => break Err(PeerError::Cancelled),
        }
    };
    // Let the bar show its last events and clear.
    drop(events);
    view.await.ok();
    let report = match ended {
        // A single file whose target holds something else: say what to do about it.
        Err(PeerError::Storage(StorageError::AlreadyExists(path))) => {
            return Err(anyhow::anyhow!(
                "{} already exists and is not this file; it was left as it is: move it away, or \
                 download into another folder",
                path.display()
            ))
            .with_context(failed);
        }
        ended => ended.with_context(failed)?,
    };
    let info = peer.download_info(id);
    let folder_id = info.as_ref().and_then(|i| i.folder_id);
    let shown = |path: &std::path::Path| printable(&path.display().to_string()).to_string();
    let Some(folder_id) = folder_id else {
        if !report.complete() {
            if cancelled {
                return Err(PeerError::Cancelled).with_context(failed);
            }
            let why = downloads::shortfall(&report, false).unwrap_or_default();
            return Err(anyhow::anyhow!(why)).with_context(failed);
        }
        let file_id = info
            .and_then(|i| i.file_id)
            .map_or_else(|| arg.to_owned(), |f| f.to_string());
        if report.already_there == report.files {
            println!("already downloaded {} {file_id}", shown(&report.path));
        } else {
            let secs = report.elapsed.as_secs_f64();
            println!(
                "downloaded {} {file_id} {} in {secs:.2}s ({:.1} MB/s)",
                shown(&report.path),
                report.size,
                report.size as f64 / secs.max(1e-9) / 1e6,
            );
        }
        return Ok(());
    };
    for (what, listed, total) in [
        ("conflict", &report.conflicts, report.conflicts_total),
        ("failed", &report.failed, report.failed_total),
    ] {
        for problem in listed.iter().take(MAX_REPORTED) {
            println!(
                "{what} {}: {}",
                shown(&problem.path),
                printable(&problem.reason)
            );
        }
        let more = total.saturating_sub(listed.len().min(MAX_REPORTED) as u64);
        if more > 0 {
            println!("… and {more} more ({what})");
        }
    }
    let name = info.and_then(|i| i.name).unwrap_or_default();
    println!(
        "folder {} {folder_id}: {} fetched, {} already there, {} conflicts, {} failed ({} bytes in {:.2} s)",
        printable(&name),
        report.fetched,
        report.already_there,
        report.conflicts_total,
        report.failed_total,
        report.bytes_fetched,
        report.elapsed.as_secs_f64(),
    );
    if !report.complete() {
        if cancelled {
            return Err(PeerError::Cancelled).with_context(failed);
        }
        let why = downloads::shortfall(&report, true).unwrap_or_default();
        anyhow::bail!("{why}; run the same command again to resume");
    }
    Ok(())
}

/// Shares every path (a file on its own, a folder as a whole), announced to the index in
/// batches; prints a line per file and one per folder; with `write_manifest`, writes each
/// one's manifest file.
async fn register(
    peer: &PeerHandle,
    paths: &[std::path::PathBuf],
    write_manifest: bool,
) -> anyhow::Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let shared = peer.share_paths(paths).await?;
    for item in &shared {
        print_registered(item);
    }
    if !write_manifest {
        return Ok(());
    }
    // The index as this peer met it: its address and the node id it proved.
    let servers: Vec<IndexRef> = peer
        .server_addr()
        .map(|addr| IndexRef {
            addr,
            node_id: peer.index_node_id(),
        })
        .into_iter()
        .collect();
    for item in shared {
        let (target, text) = match item {
            Shared::File { path, manifest } => (
                manifest::default_path(&path),
                ManifestFile::new(manifest, servers.clone()).to_json(),
            ),
            Shared::Folder {
                path, head, files, ..
            } => (
                manifest::folder_manifest_path(&path, &head.name),
                manifest::folder_document(&head.name, files, servers.clone())?.to_json(),
            ),
        };
        manifest::write_new(&target, &text)?;
        println!("wrote {}", target.display());
    }
    Ok(())
}

/// `registered <path> <id>` for a file; for a folder, one such line per file (its path as
/// given, then the file's in it), then `registered <folder as given> <folder id>`.
fn print_registered(shared: &Shared) {
    let line = |path: &std::path::Path, id: &dyn std::fmt::Display| {
        println!("registered {} {id}", printable(&path.display().to_string()));
    };
    match shared {
        Shared::File { path, manifest } => line(path, &manifest.id()),
        Shared::Folder {
            path,
            folder_id,
            files,
            ..
        } => {
            for (rel, manifest) in files {
                line(&path.join(rel), &manifest.id());
            }
            line(path, folder_id);
        }
    }
}
