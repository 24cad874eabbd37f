//! The download requests a manifest file stands for: one per file, a folder's files each in
//! its own folder under the output folder. The command line, the shells and the web API all
//! turn a `.p2pm` into a job here, so they fetch the same files into the same places.

use std::net::SocketAddr;

use p2p_protocol::manifest_file::AnyManifestFile;

use crate::node::DownloadRequest;

impl DownloadRequest {
    /// The requests of manifest file `doc`, each also asking `hosts` directly: one for a file;
    /// for a folder, one per file, placed under the folder's name and its path inside it.
    pub fn for_manifest_file(doc: AnyManifestFile, hosts: &[SocketAddr]) -> Vec<Self> {
        match doc {
            AnyManifestFile::File(f) => vec![Self {
                id: f.file_id.to_string(),
                manifest: Some(f.manifest),
                hosts: hosts.to_vec(),
                subdir: Vec::new(),
            }],
            AnyManifestFile::Folder(folder) => folder
                .files
                .into_iter()
                .map(|entry| {
                    let mut subdir = vec![folder.name.clone()];
                    subdir.extend(entry.path[..entry.path.len() - 1].iter().cloned());
                    Self {
                        id: entry.file_id.to_string(),
                        manifest: Some(entry.manifest),
                        hosts: hosts.to_vec(),
                        subdir,
                    }
                })
                .collect(),
        }
    }
}
