//! `--allow-peers FILE`: the allow-list a server or peer checks, read at start and read again
//! whenever the file changes or the process gets `SIGHUP`. A list that can't be read at start
//! is an error; one that turns bad later is reported and the last good one stays in force.

use std::path::{Path, PathBuf};

use anyhow::Context;
use notify::Watcher;
use p2p_identity::{AllowList, Allowed};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Everyone, without `path`; else only the nodes listed in it, kept current until `shutdown`.
pub fn load(path: Option<&Path>, shutdown: &CancellationToken) -> anyhow::Result<Allowed> {
    let Some(path) = path else {
        return Ok(Allowed::everyone());
    };
    let list = AllowList::load(path)?;
    info!(path = %path.display(), nodes = list.len(), "allow-list in force");
    let allowed = Allowed::only(list);
    spawn_reloader(path.to_owned(), allowed.clone(), shutdown.clone())
        .with_context(|| format!("cannot watch the allow-list {}", path.display()))?;
    Ok(allowed)
}

/// Reloads `allowed` from `path` when the file changes (watched through its folder, since
/// editors replace files rather than write them in place) or on `SIGHUP`.
fn spawn_reloader(
    path: PathBuf,
    allowed: Allowed,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let name = path.file_name().map(ToOwned::to_owned);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event.paths.iter().any(|p| p.file_name() == name.as_deref())
        {
            let _ = changed.send(());
        }
    })?;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    watcher.watch(&folder, notify::RecursiveMode::NonRecursive)?;
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        // Dropped with the task: the watcher lives as long as the reloading does.
        let _watcher = watcher;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = changes.recv() => {}
                Some(()) = hangups.recv() => {}
            }
            match AllowList::load(&path) {
                Ok(list) => {
                    info!(path = %path.display(), nodes = list.len(), "allow-list reloaded");
                    allowed.replace(list);
                }
                Err(err) => warn!(%err, "allow-list not reloaded; the previous one stays in force"),
            }
        }
    });
    Ok(())
}
