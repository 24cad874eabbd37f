//! `p2p-transfer manifest create FILE [--server ADDR]... [-o PATH]`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use p2p_protocol::manifest_file::{ManifestFile, SUFFIX};

use crate::cli::ManifestCommand;

/// Runs a manifest tool.
pub async fn run(command: &ManifestCommand) -> anyhow::Result<()> {
    match command {
        ManifestCommand::Create {
            file,
            servers,
            output,
        } => {
            let path = file.clone();
            let hashed = tokio::task::spawn_blocking(move || p2p_storage::build_manifest(&path))
                .await
                .context("hashing failed")?
                .with_context(|| format!("cannot describe {}", file.display()))?;
            let doc = ManifestFile::new(hashed.manifest, servers.clone());
            let target = output.clone().unwrap_or_else(|| default_path(file));
            write_new(&target, &doc)?;
            println!("wrote {} {}", target.display(), doc.file_id);
            Ok(())
        }
    }
}

/// `FILE.p2pm` next to `file`.
pub fn default_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(SUFFIX);
    PathBuf::from(name)
}

/// Writes `doc` to `target`, refusing to replace an existing file.
pub fn write_new(target: &Path, doc: &ManifestFile) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    out.write_all(doc.to_json().as_bytes())
        .with_context(|| format!("cannot write {}", target.display()))
}

/// Reads and checks a manifest file.
pub fn read(path: &Path) -> anyhow::Result<ManifestFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    ManifestFile::parse(&text).with_context(|| format!("{}", path.display()))
}

/// Whether a `--download` argument names a manifest file rather than an id.
pub fn is_manifest_path(arg: &str) -> bool {
    arg.ends_with(SUFFIX) || Path::new(arg).is_file()
}
