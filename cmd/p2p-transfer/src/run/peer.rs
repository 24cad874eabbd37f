//! `p2p-transfer peer`: register the given files, download the given id or manifest file, then
//! exit (download only), open the shell (`-i`), or keep serving until Ctrl-C.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use p2p_peer::download::MAX_REPORTED;
use p2p_peer::downloads;
use p2p_peer::share_dir::{ShareDir, ShareDirConfig};
use p2p_peer::{
    DownloadRequest, IndexState, JobUpdate, Peer, PeerConfig, PeerError, PeerHandle, Shared,
};
use p2p_protocol::manifest_file::AnyManifestFile;
use p2p_protocol::manifest_file::IndexRef;
use p2p_protocol::printable;
use p2p_storage::StorageError;
use tokio_util::sync::CancellationToken;

use crate::cli::PeerArgs;
use crate::discovery::ServerOrigin;
use crate::json::{self, Event};
use crate::progress;
use crate::run::{manifest, peer_json};
use crate::shell::{self, peer::PeerShell};
use crate::trust::IndexTrust;
use crate::units;

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
    // A manifest file is read (and checked) before anything starts; it may name the index.
    let manifest_file = match &args.download {
        Some(arg) if manifest::is_manifest_path(arg) => Some(manifest::read(arg.as_ref())?),
        _ => None,
    };
    config.allow_peers = crate::allow::load(args.allow_peers.as_deref(), &shutdown)?;
    let mut trust = IndexTrust::load(&args.identity, args.server_id)?;
    let chosen = crate::run::peer_indexes::choose(
        args,
        std::mem::take(&mut config.indexes),
        manifest_file.as_ref(),
        &mut trust,
        &tls,
        &shutdown,
    )
    .await?;
    let origin = chosen.origin;
    let passing = chosen.passing;
    config.indexes = chosen.specs;
    if let Some(dht) = &mut config.dht {
        dht.cache_dir = Some(crate::run::id::dir(&args.identity)?);
    }
    let server_addr = crate::run::peer_indexes::first(&config.indexes);
    let peer = Peer::start(config, tls)
        .await
        .map_err(|e| trust.explain(e))?;
    // Before the web API can start a job.
    let reports = args.json.then(|| JsonReports::start(&peer));
    // Before the address: scripts (and tests) read up to "listening on" and may stop reading.
    if !args.json {
        println!("peer node id {}", identity.node_id());
    }
    // Every index that registered us proved its id: remember each (trust on first use), so
    // the next start tries it too and refuses another node at its address.
    for (at, index) in peer.indexes().into_iter().enumerate() {
        let (IndexState::Registered, Some(seen)) = (&index.state, index.node_id) else {
            continue;
        };
        if passing.contains(&index.addr) {
            continue;
        }
        if at == 0 && !args.json {
            println!("index server node id {seen}");
        }
        if let Some(news) = trust.remember(index.addr, seen)? {
            if args.json {
                eprintln!("{news}");
            } else {
                println!("{news}");
            }
        }
    }
    let found_index_by = crate::run::web::found_index_by(args, server_addr, &origin);
    let web = crate::run::web::start_peer(web, args, &peer, found_index_by, &shutdown);
    let reach = crate::reach::reach(peer.local_addr());
    if args.json {
        json::emit(&Event::Listening {
            address: peer.local_addr().to_string(),
            reach: reach.addrs.iter().map(ToString::to_string).collect(),
            node_id: identity.node_id().to_string(),
            index: server_addr.map(|a| a.to_string()),
            index_node_id: peer.index_node_id().map(|id| id.to_string()),
        });
    } else {
        for line in crate::reach::peer_lines(&reach, peer.local_addr()) {
            println!("{line}");
        }
        println!("peer listening on {}", peer.local_addr());
    }
    // Every download job (the shell's, the web API's) asks the --from hosts too.
    for host in &args.from {
        peer.add_direct_host(*host);
    }
    let folder_changes = reports.as_ref().map(|r| r.folder_changes.clone());
    let result = startup_actions(&peer, args, manifest_file, folder_changes, &shutdown).await;
    let result = if args.interactive {
        // A failed startup action is reported, and the shell opens all the same.
        if let Err(err) = &result {
            eprintln!("error: {}", crate::errors::one_line(err));
        }
        interactive(&peer, args, origin, &shutdown).await
    } else {
        if result.is_ok() && !exits_after_download(args) {
            shutdown.cancelled().await;
        }
        result
    };
    crate::run::web::stop(web).await;
    peer.shutdown().await;
    if let Some(reports) = reports {
        reports.finish().await;
    }
    result
}

/// With `--json`, the events of what happens after start: download jobs other front ends
/// started (the web API), and `--share-dir` folders' new records.
struct JsonReports {
    /// For each `--share-dir` folder: where its new records go.
    folder_changes: tokio::sync::mpsc::UnboundedSender<p2p_peer::share_dir::FolderChange>,
    /// Tells the job printer that the peer has shut down (every run has ended).
    stop: CancellationToken,
    jobs: tokio::task::JoinHandle<()>,
    folders: tokio::task::JoinHandle<()>,
}

impl JsonReports {
    fn start(peer: &PeerHandle) -> Self {
        let stop = CancellationToken::new();
        let jobs = tokio::spawn(peer_json::report_other_jobs(
            peer.clone(),
            peer.observe_other_jobs(),
            stop.clone(),
        ));
        let (folder_changes, changes) = tokio::sync::mpsc::unbounded_channel();
        let folders = tokio::spawn(peer_json::report_reshared(changes));
        Self {
            folder_changes,
            stop,
            jobs,
            folders,
        }
    }

    /// Once the peer has shut down: prints what is left, and returns.
    async fn finish(self) {
        self.stop.cancel();
        // The folders' senders went with the peer's tasks; this one goes now.
        drop(self.folder_changes);
        let _ = self.jobs.await;
        let _ = self.folders.await;
    }
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
    // The shell's downloads go there unless told otherwise.
    create_out_dir(&args.out).await?;
    let mut shell = PeerShell::new(
        peer.clone(),
        tokio::runtime::Handle::current(),
        origin,
        args.out.clone(),
    );
    let messages = shell::peer::show_messages(peer);
    let outcomes = shell::transfers::show_outcomes(peer, shell.reported.clone());
    let words = Some(shell.words());
    let done = shell::spawn(&shell::peer::SPEC, words, move |command| {
        shell.handle(command)
    });
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
    folder_changes: Option<tokio::sync::mpsc::UnboundedSender<p2p_peer::share_dir::FolderChange>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    // Hashing waits on the disk (a huge file, a hung network file system): a signal stops it.
    let sharing = async {
        register(peer, &args.register, args.write_manifest, args.json).await?;
        for dir in &args.share_dirs {
            let config = ShareDirConfig {
                dir: dir.clone(),
                cache_file: manifest_cache(),
                rescan_every: SHARE_DIR_RESCAN,
                changes: folder_changes.clone(),
            };
            let (_, shared) = ShareDir::start(peer, config)
                .await
                .with_context(|| format!("cannot share {}", dir.display()))?;
            print_registered(&shared, args.json);
        }
        anyhow::Ok(())
    };
    tokio::select! {
        // Sharing that is done (nothing to share, say) is not "interrupted".
        biased;
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
        download(peer, arg, request, &args.out, args.json, shutdown).await?;
    }
    Ok(())
}

/// The startup download, as a job of the node's registry like every other download (so the
/// dashboard and the event stream show it): its progress bar, then what it did. A file:
/// `downloaded PATH ID ...` or `already downloaded PATH ID`. A folder: one line per conflict
/// or failed file (at most [`MAX_REPORTED`] of each), then
/// `folder NAME ID: F fetched, A already there, C conflicts, X failed (B bytes in T s)`.
/// Anything missing is an error (exit 1), and the same command run again completes it. A
/// signal cancels the job; its `.part` files stay for the next run. With `json`: `progress`
/// events, then `conflict`/`file_failed` and `downloaded` events, and `failed` when it fails.
/// (`receive` runs its downloads through here too.)
pub(crate) async fn download(
    peer: &PeerHandle,
    arg: &str,
    request: DownloadRequest,
    out: &std::path::Path,
    json: bool,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let failed = || format!("cannot download {arg}");
    let (observer, updates) = tokio::sync::mpsc::unbounded_channel();
    let started = match create_out_dir(out).await.with_context(failed) {
        Ok(()) => peer
            .start_download_observed(arg.to_owned(), request, out.to_path_buf(), observer)
            .await
            .with_context(failed),
        Err(err) => Err(err),
    };
    let id = match started {
        Ok(id) => id,
        Err(err) => {
            if json {
                peer_json::emit_failed(arg, None, &err);
            }
            return Err(err);
        }
    };
    let result = follow(peer, id, updates, arg, json, shutdown).await;
    if json && let Err(err) = &result {
        peer_json::emit_failed(arg, peer.download_info(id).as_ref(), err);
    }
    result
}

/// Shows job `id`'s progress until it ends, then what it did (see [`download`]). Errors say
/// `cannot download ARG: ...`, but a folder's shortfall, whose summary was just printed.
async fn follow(
    peer: &PeerHandle,
    id: p2p_peer::DownloadId,
    mut updates: tokio::sync::mpsc::UnboundedReceiver<JobUpdate>,
    arg: &str,
    json: bool,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    // With --json, progress events on stdout; else the bar or plain lines.
    let (events, view) = if json {
        (None, None)
    } else {
        let (events, view) = progress::start();
        (Some(events), Some(view))
    };
    let mut throttle = json::Throttle::default();
    // A stalled job still says where it stands once a second.
    let mut tick = tokio::time::interval(json::PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cancelled = false;
    let ended = loop {
        let update = tokio::select! {
            update = updates.recv() => update,
            _ = tick.tick(), if json => {
                peer_json::progress_due(peer, id, &mut throttle);
                continue;
            }
            () = shutdown.cancelled(), if !cancelled => {
                cancelled = true;
                // A job that has just ended is answered as it is; its end follows all the same.
                let _ = peer.cancel_download(id);
                continue;
            }
        };
        match update {
            Some(JobUpdate::Event(event)) => match &events {
                Some(events) => {
                    let _ = events.send(event);
                }
                None => peer_json::job_event(peer, id, &event, &mut throttle),
            },
            Some(JobUpdate::Ended(result)) => break result,
            // The run always says how it ended; only a runtime going down drops it unsaid.
            None => break Err(PeerError::Cancelled),
        }
    };
    // Let the bar show its last events and clear.
    drop(events);
    if let Some(view) = view {
        view.await.ok();
    }
    let failed = || format!("cannot download {arg}");
    let report = match ended {
        // A single file whose target holds something else: say what to do about it.
        Err(PeerError::Storage(StorageError::AlreadyExists(path))) => {
            let wanted = peer
                .download_info(id)
                .and_then(|i| i.file_id)
                .map_or_else(String::new, |f| format!(" ({})", f.fmt_short()));
            return Err(anyhow::anyhow!(
                "{} already exists and is not this file{wanted}; it was left as it is: move it \
                 away, or download into another folder with --out DIR",
                printable(&path.display().to_string())
            ))
            .with_context(failed);
        }
        // Interrupted: what is kept, and how to go on.
        Err(PeerError::Cancelled) if cancelled => {
            return Err(interrupted(peer.download_info(id)).await).with_context(failed);
        }
        ended => ended.with_context(failed)?,
    };
    let info = peer.download_info(id);
    // Interrupted with files missing: what is kept, and how to go on.
    let kept = if cancelled && !report.complete() {
        Some(interrupted(info.clone()).await)
    } else {
        None
    };
    let folder_id = info.as_ref().and_then(|i| i.folder_id);
    if json {
        peer_json::emit_report(&report, info.as_ref(), arg);
        return incomplete(&report, kept, folder_id.is_some(), arg);
    }
    let shown = |path: &std::path::Path| printable(&path.display().to_string()).to_string();
    let Some(folder_id) = folder_id else {
        incomplete(&report, kept, false, arg)?;
        let file_id = info
            .and_then(|i| i.file_id)
            .map_or_else(|| arg.to_owned(), |f| f.to_string());
        if report.already_there == report.files {
            println!("already downloaded {} {file_id}", shown(&report.path));
        } else {
            let secs = report.elapsed.as_secs_f64();
            println!(
                "downloaded {} {file_id} {} in {secs:.2}s {}",
                shown(&report.path),
                report.size,
                units::transfer_summary(report.bytes_fetched, report.bytes_resumed, report.elapsed),
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
        "folder {} {folder_id}: {} fetched, {} already there, {} conflicts, {} failed ({} bytes in {:.2} s, {})",
        printable(&name),
        report.fetched,
        report.already_there,
        report.conflicts_total,
        report.failed_total,
        report.bytes_fetched,
        report.elapsed.as_secs_f64(),
        units::rate(report.bytes_fetched, report.elapsed),
    );
    incomplete(&report, kept, true, arg)
}

/// The error for a job that left files missing, if it did: `kept` says what an interrupted
/// one left and how to go on.
fn incomplete(
    report: &p2p_peer::download::JobReport,
    kept: Option<anyhow::Error>,
    folder: bool,
    arg: &str,
) -> anyhow::Result<()> {
    if report.complete() {
        return Ok(());
    }
    let failed = || format!("cannot download {arg}");
    if let Some(kept) = kept {
        return Err(kept).with_context(failed);
    }
    let why = downloads::shortfall(report, folder).unwrap_or_default();
    if folder {
        // The summary line above names the folder.
        anyhow::bail!("{why}; run the same command again to resume");
    }
    Err(anyhow::anyhow!(why)).with_context(failed)
}

/// What a signal during a download left, from the job's last state: a file's `.part` (kept,
/// with the chunks verified so far), a folder's files in place and partial ones, and that the
/// same command resumes it.
async fn interrupted(info: Option<p2p_peer::DownloadInfo>) -> anyhow::Error {
    let again = "the same command run again resumes it";
    let Some(info) = info else {
        return anyhow::anyhow!("interrupted; {again}");
    };
    if info.folder_id.is_some() {
        return anyhow::anyhow!(
            "interrupted with {} of {} files in place; the partial ones were kept (as .part \
             files), and {again}",
            info.files_done,
            info.files_total
        );
    }
    let Some(name) = &info.name else {
        return anyhow::anyhow!(
            "interrupted before anything was written; run the same command again to download it"
        );
    };
    let mut part = info.out.join(name).into_os_string();
    part.push(p2p_storage::path::PART_SUFFIX);
    let part = std::path::PathBuf::from(part);
    if tokio::fs::try_exists(&part).await.unwrap_or(false) {
        anyhow::anyhow!(
            "interrupted; the partial file {} was kept, and {again}",
            printable(&part.display().to_string())
        )
    } else {
        anyhow::anyhow!(
            "interrupted before anything was written; run the same command again to download it"
        )
    }
}

/// Creates the `--out` folder and its parents if missing (`mkdir -p`). Downloads never
/// create it themselves: the web API names folders too, and a typo there should fail. (The
/// shell's `download ID DIR` creates its DIR through here too.)
pub(crate) async fn create_out_dir(out: &std::path::Path) -> anyhow::Result<()> {
    let shown = || printable(&out.display().to_string()).to_string();
    match tokio::fs::metadata(out).await {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => anyhow::bail!(
            "--out {} is a file, not a folder; give --out a folder to download into (a missing \
             one is created)",
            shown()
        ),
        Err(_) => {}
    }
    tokio::fs::create_dir_all(out)
        .await
        .with_context(|| format!("cannot create the download folder {}", shown()))
}

/// Shares every path (a file on its own, a folder as a whole), announced to the index in
/// batches; prints a line per file and one per folder; with `write_manifest`, writes each
/// one's manifest file.
async fn register(
    peer: &PeerHandle,
    paths: &[std::path::PathBuf],
    write_manifest: bool,
    json: bool,
) -> anyhow::Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let shared = peer.share_paths(paths).await?;
    for item in &shared {
        print_registered(item, json);
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
        let (target, source, doc) = match item {
            Shared::File { path, manifest } => (
                manifest::default_path(&path),
                path,
                manifest::Document::file(manifest, servers.clone()),
            ),
            Shared::Folder {
                path, head, files, ..
            } => (
                manifest::folder_manifest_path(&path, &head.name),
                path,
                manifest::Document::folder(&head.name, files, servers.clone())?,
            ),
        };
        let outcome = manifest::write_manifest(
            &target,
            &doc.text,
            "move it away and run the same command again",
        )
        .with_context(|| format!("cannot write the manifest of {}", source.display()))?;
        if json {
            json::emit(&doc.written(&target));
        } else {
            println!("{} {}", outcome.verb(), target.display());
        }
    }
    Ok(())
}

/// `registered <path> <id>` for a file; for a folder, one such line per file (its path as
/// given, then the file's in it), then `registered <folder as given> <folder id>`; with
/// `--json`, the same as `registered` events.
fn print_registered(shared: &Shared, json: bool) {
    if json {
        for event in json::registered(shared) {
            json::emit(&event);
        }
        return;
    }
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
