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
use crate::json::{self, Event};

/// What to do when another manifest file is in the way of `manifest create`.
const WRITE_ELSEWHERE: &str = "move it away, or write elsewhere with -o PATH";

/// Runs a manifest tool.
pub async fn run(command: &ManifestCommand) -> anyhow::Result<()> {
    match command {
        ManifestCommand::Create {
            file,
            servers,
            server_id,
            identity,
            output,
            json,
        } => {
            // Every index listed must be found: the manifest names them for later downloads.
            let resolved = crate::address::ServerAddr::resolve_all(servers)
                .await
                .into_iter()
                .collect::<anyhow::Result<Vec<_>>>()?;
            let servers = index_refs(&resolved, *server_id, identity)?;
            let (default_target, doc) = if file.is_dir() {
                let (name, hashed) = hash_folder(file).await?;
                (
                    folder_manifest_path(file, &name),
                    Document::folder(&name, hashed, servers)?,
                )
            } else {
                let path = file.clone();
                let hashed =
                    tokio::task::spawn_blocking(move || p2p_storage::build_manifest(&path))
                        .await
                        .context("hashing failed")?
                        .with_context(|| format!("cannot describe {}", file.display()))?;
                (default_path(file), Document::file(hashed.manifest, servers))
            };
            let target = output.clone().unwrap_or(default_target);
            let written = write_manifest(&target, &doc.text, WRITE_ELSEWHERE)
                .with_context(|| format!("cannot write the manifest of {}", file.display()))?;
            if *json {
                json::emit(&doc.written(&target));
            } else if doc.kind == json::Kind::Folder {
                println!(
                    "{} {} ({} files)",
                    written.verb(),
                    target.display(),
                    doc.files
                );
            } else {
                println!("{} {} {}", written.verb(), target.display(), doc.id);
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
            note!(
                "warning: cannot list {} ({why}); the manifest describes the rest of {} without it",
                dir.join(rel).display(),
                dir.display()
            );
        }
        // So is a file it can't read (or that changes while it is read).
        let mut files = Vec::with_capacity(walk.files.len());
        for hashed in tree.hash_files(walk.files) {
            let (file, manifest) = match hashed {
                Ok(hashed) => hashed,
                Err(err) => {
                    note!(
                        "warning: {err}; the manifest describes the rest of {} without it",
                        dir.display()
                    );
                    continue;
                }
            };
            let path = file
                .rel
                .to_str()
                .with_context(|| format!("{} is not a UTF-8 path", file.rel.display()))?
                .to_owned();
            files.push((path, manifest));
        }
        Ok((name, files))
    })
    .await
    .context("hashing failed")?
}

/// A manifest file about to be written: its text, and what its `manifest_written` event says.
pub struct Document {
    /// A file's, or a folder's as a whole.
    pub kind: json::Kind,
    /// The file or folder id.
    pub id: String,
    /// Bytes in all.
    pub size: u64,
    /// 1 for a file.
    pub files: u64,
    /// The manifest file's text.
    pub text: String,
}

impl Document {
    /// A file's manifest file, naming `servers`.
    pub fn file(manifest: FileManifest, servers: Vec<IndexRef>) -> Self {
        let doc = ManifestFile::new(manifest, servers);
        Self {
            kind: json::Kind::File,
            id: doc.file_id.to_string(),
            size: doc.manifest.size,
            files: 1,
            text: doc.to_json(),
        }
    }

    /// The manifest file of the folder named `name` ([`p2p_storage::path::folder_name`]) from
    /// its files' manifests, by path inside the folder (parts joined by `/`), naming `servers`.
    pub fn folder(
        name: &str,
        files: Vec<(String, FileManifest)>,
        servers: Vec<IndexRef>,
    ) -> anyhow::Result<Self> {
        let doc = folder_document(name, files, servers)?;
        Ok(Self {
            kind: json::Kind::Folder,
            id: doc.folder_id().to_string(),
            size: doc.head().size,
            files: doc.files.len() as u64,
            text: doc.to_json(),
        })
    }

    /// Its `manifest_written` event, once written to `target`.
    pub fn written(&self, target: &Path) -> Event {
        Event::ManifestWritten {
            kind: self.kind,
            path: json::path(target),
            id: self.id.clone(),
            size: self.size,
            files: self.files,
        }
    }
}

/// The manifest file of the folder named `name` ([`p2p_storage::path::folder_name`]) from its
/// files' manifests, by path inside the folder (parts joined by `/`).
fn folder_document(
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

/// What [`write_manifest`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Wrote a new manifest file.
    New,
    /// The same manifest was there already (an earlier run wrote it): nothing written.
    AlreadyThere,
}

impl Written {
    /// The start of the line that reports it: `wrote` or `already written`.
    pub fn verb(self) -> &'static str {
        match self {
            Written::New => "wrote",
            Written::AlreadyThere => "already written",
        }
    }
}

/// Writes the manifest file `text` to `target`, never replacing anything there: the same
/// manifest there already (an earlier run of the same command) is success, anything else is an
/// error saying what is there, with `what_to_do`.
pub fn write_manifest(target: &Path, text: &str, what_to_do: &str) -> anyhow::Result<Written> {
    use std::io::Write;
    let shown = || target.display().to_string();
    let mut out = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
    {
        Ok(out) => out,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let there = what_is_there(target, text);
            return match there {
                There::Same => Ok(Written::AlreadyThere),
                There::Other(what) => Err(anyhow::anyhow!(
                    "{} already exists and {what}; it was left as it is: {what_to_do}",
                    shown()
                )),
            };
        }
        Err(err) => return Err(err).with_context(|| format!("cannot create {}", shown())),
    };
    out.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", shown()))?;
    Ok(Written::New)
}

/// What an existing manifest file holds, next to the one to write.
enum There {
    Same,
    /// What is there instead: `describes another file (id …), not this one (id …)`.
    Other(String),
}

/// Reads what is at `target` (not more than a manifest's worth) and compares it with
/// `text`, as manifests: the same file or folder with the same index servers is the same.
fn what_is_there(target: &Path, text: &str) -> There {
    let not_manifest = || There::Other("is not a manifest file".to_owned());
    let Ok(new) = AnyManifestFile::parse(text) else {
        return not_manifest();
    };
    // Written by us, it is the same size or close (another version of the format may space
    // it differently); far bigger is something else, not worth reading.
    let limit = text.len() as u64 * 2 + 4096;
    match std::fs::metadata(target) {
        Ok(meta) if meta.is_file() && meta.len() <= limit => {}
        Ok(meta) if meta.is_dir() => return There::Other("is a folder".to_owned()),
        _ => return not_manifest(),
    }
    let Some(old) = std::fs::read_to_string(target)
        .ok()
        .and_then(|t| AnyManifestFile::parse(&t).ok())
    else {
        return not_manifest();
    };
    if old == new {
        return There::Same;
    }
    let (old_id, new_id) = (id_of(&old), id_of(&new));
    There::Other(if old_id != new_id {
        format!(
            "describes another {} (id {old_id}), not this one (id {new_id})",
            kind_of(&old)
        )
    } else {
        format!("names other index servers for this {}", kind_of(&new))
    })
}

fn id_of(doc: &AnyManifestFile) -> String {
    match doc {
        AnyManifestFile::File(f) => f.file_id.fmt_short(),
        AnyManifestFile::Folder(f) => f.folder_id().fmt_short(),
    }
}

fn kind_of(doc: &AnyManifestFile) -> &'static str {
    match doc {
        AnyManifestFile::File(_) => "file",
        AnyManifestFile::Folder(_) => "folder",
    }
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
