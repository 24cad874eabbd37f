//! `p2p-transfer manifest create FILE-OR-FOLDER [--server ADDR]... [-o PATH]`, and reading
//! manifest files for downloads.

use std::path::{Path, PathBuf};

use anyhow::Context;
use p2p_protocol::FileManifest;
use p2p_protocol::manifest_file::{
    AnyManifestFile, FolderManifestFile, IndexRef, ManifestFile, SUFFIX,
};
use p2p_storage::Tree;

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
            if file.is_dir() {
                let (name, hashed) = hash_folder(file).await?;
                let target = output
                    .clone()
                    .unwrap_or_else(|| folder_manifest_path(file, &name));
                let doc = folder_document(&name, hashed, servers.clone())?;
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
                let target = output.clone().unwrap_or_else(|| default_path(file));
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

/// A folder's name ([`p2p_storage::path::folder_name`]) and every file in it with its
/// manifest, by path inside the folder. The folder is walked and its files opened through a
/// handle on it, so links and FIFOs in it are skipped; they are hashed side by side.
async fn hash_folder(dir: &Path) -> anyhow::Result<(String, Vec<(String, FileManifest)>)> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let tree = Tree::open(&dir)?;
        let name = p2p_storage::path::folder_name(&tree)?;
        let walk = tree.walk();
        // A subfolder this user can't list is left out, by name; the rest is described.
        for (rel, why) in &walk.unlisted {
            anyhow::ensure!(
                !rel.as_os_str().is_empty(),
                "cannot list {}: {why}",
                dir.display()
            );
            eprintln!(
                "warning: cannot list {} ({why}); the manifest describes the rest of {} without it",
                dir.join(rel).display(),
                dir.display()
            );
        }
        let rels: Vec<PathBuf> = walk.files.iter().map(|f| f.rel.clone()).collect();
        let files = tree
            .hash_files(walk.files)
            .into_iter()
            .zip(rels)
            .map(|(hashed, rel)| {
                let (_, manifest) = hashed.with_context(|| {
                    format!("cannot describe {}", tree.root().join(&rel).display())
                })?;
                let path = rel
                    .to_str()
                    .with_context(|| format!("{} is not a UTF-8 path", rel.display()))?
                    .to_owned();
                Ok((path, manifest))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok((name, files))
    })
    .await
    .context("hashing failed")?
}

/// The manifest file of the folder named `name` ([`p2p_storage::path::folder_name`]) from its
/// files' manifests, by path inside the folder (parts joined by `/`).
pub fn folder_document(
    name: &str,
    files: Vec<(String, FileManifest)>,
    servers: Vec<IndexRef>,
) -> anyhow::Result<FolderManifestFile> {
    let entries = files
        .into_iter()
        .map(|(path, manifest)| (path.split('/').map(str::to_owned).collect(), manifest))
        .collect();
    Ok(FolderManifestFile::new(name.to_owned(), entries, servers)?)
}

/// `FILE.p2pm` next to `file`.
pub fn default_path(file: &Path) -> PathBuf {
    let trimmed = file.to_string_lossy();
    let trimmed = trimmed.trim_end_matches('/');
    PathBuf::from(format!("{trimmed}{SUFFIX}"))
}

/// Where a folder's manifest file goes: `<name>.p2pm` beside the folder as it was given
/// (`album`, `album/`, `./album` → `album.p2pm`; `/abs/album` → `/abs/album.p2pm`), or in the
/// current folder when it was given as `.` or `..` (then inside or beside it, named after
/// it, never `..p2pm`). `name` is the folder's own name ([`p2p_storage::path::folder_name`]).
pub fn folder_manifest_path(dir: &Path, name: &str) -> PathBuf {
    let file = format!("{name}{SUFFIX}");
    let mut parts: Vec<std::path::Component<'_>> = dir.components().collect();
    match parts.last() {
        Some(std::path::Component::Normal(_)) => {
            parts.pop();
            parts.iter().collect::<PathBuf>().join(file)
        }
        _ => PathBuf::from(file),
    }
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
