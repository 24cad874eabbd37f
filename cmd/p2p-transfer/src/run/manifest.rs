//! `p2p-transfer manifest create FILE-OR-FOLDER [--server ADDR]... [-o PATH]`, and reading
//! manifest files for downloads.

use std::path::{Path, PathBuf};

use anyhow::Context;
use p2p_protocol::FileManifest;
use p2p_protocol::manifest_file::{
    AnyManifestFile, FolderManifestFile, IndexRef, ManifestFile, SUFFIX,
};
use p2p_storage::{SourceFile, Tree};

use crate::cli::ManifestCommand;

/// Runs a manifest tool.
pub async fn run(command: &ManifestCommand) -> anyhow::Result<()> {
    match command {
        ManifestCommand::Create {
            file,
            servers,
            server_id,
            identity,
            output,
        } => {
            let servers = index_refs(servers, *server_id, identity)?;
            let target = output.clone().unwrap_or_else(|| default_path(file));
            if file.is_dir() {
                let hashed = hash_folder(file).await?;
                let doc = folder_document(file, hashed, servers.clone())?;
                write_new(&target, &doc.to_json())?;
                println!("wrote {} ({} files)", target.display(), doc.files.len());
            } else {
                let path = file.clone();
                let hashed =
                    tokio::task::spawn_blocking(move || p2p_storage::build_manifest(&path))
                        .await
                        .context("hashing failed")?
                        .with_context(|| format!("cannot describe {}", file.display()))?;
                let doc = ManifestFile::new(hashed.manifest, servers.clone());
                write_new(&target, &doc.to_json())?;
                println!("wrote {} {}", target.display(), doc.file_id);
            }
            Ok(())
        }
    }
}

/// The servers to name, each with its node id where known: the one given with `--server-id`
/// (for a single `--server`), or the one this node met at that address.
fn index_refs(
    servers: &[std::net::SocketAddr],
    pinned: Option<p2p_protocol::NodeId>,
    identity: &crate::cli::IdentityArgs,
) -> anyhow::Result<Vec<IndexRef>> {
    if pinned.is_some() && servers.len() != 1 {
        anyhow::bail!("--server-id names the id of one --server; give exactly one");
    }
    let known = p2p_identity::KnownIndexes::load(&crate::run::id::dir(identity)?)?;
    Ok(servers
        .iter()
        .map(|&addr| IndexRef {
            addr,
            node_id: pinned.or_else(|| known.get(addr)),
        })
        .collect())
}

/// Every file of a folder with its manifest, by path inside the folder. The folder is walked
/// and its files opened through a handle on it, so links and FIFOs in it are skipped.
async fn hash_folder(dir: &Path) -> anyhow::Result<Vec<(PathBuf, FileManifest)>> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let tree = Tree::open(&dir)?;
        let walk = tree.walk();
        anyhow::ensure!(
            walk.complete,
            "cannot list every folder under {}",
            tree.root().display()
        );
        walk.files
            .into_iter()
            .map(|file| {
                let hashed = tree
                    .open_file(&file)
                    .and_then(SourceFile::hash)
                    .with_context(|| {
                        format!("cannot describe {}", tree.path_of(&file).display())
                    })?;
                Ok((file.rel, hashed.manifest().clone()))
            })
            .collect()
    })
    .await
    .context("hashing failed")?
}

/// The manifest file of folder `dir` from its files' manifests, by path inside the folder.
pub fn folder_document(
    dir: &Path,
    files: Vec<(PathBuf, FileManifest)>,
    servers: Vec<IndexRef>,
) -> anyhow::Result<FolderManifestFile> {
    let root =
        std::fs::canonicalize(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    let name = root
        .file_name()
        .and_then(|n| n.to_str())
        .context("the folder has no usable name")?
        .to_owned();
    let entries = files
        .into_iter()
        .map(|(rel, manifest)| {
            let parts = rel
                .components()
                .map(|c| c.as_os_str().to_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .with_context(|| format!("{} is not a UTF-8 path", rel.display()))?;
            Ok((parts, manifest))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(FolderManifestFile::new(name, entries, servers)?)
}

/// `FILE.p2pm` next to `file` (for a folder: beside it, named after it).
pub fn default_path(file: &Path) -> PathBuf {
    let trimmed = file.to_string_lossy();
    let trimmed = trimmed.trim_end_matches('/');
    PathBuf::from(format!("{trimmed}{SUFFIX}"))
}

/// Writes `text` to `target`, refusing to replace an existing file.
pub fn write_new(target: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    out.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", target.display()))
}

/// Reads and checks a manifest file of either kind.
pub fn read(path: &Path) -> anyhow::Result<AnyManifestFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    AnyManifestFile::parse(&text).with_context(|| format!("{}", path.display()))
}

/// Whether a `--download` argument names a manifest file rather than an id.
pub fn is_manifest_path(arg: &str) -> bool {
    arg.ends_with(SUFFIX) || Path::new(arg).is_file()
}
