//! What a download request means: which file or folder, checked against the id asked for,
//! and who hosts it.
//!
//! * A `.p2pm` folder: its files are in hand (checked by the reader); its hosts are the
//!   direct ones and, when the index knows the folder, the index's.
//! * A `.p2pm` file: the manifest is in hand; hosts as for a folder.
//! * An id or a unique prefix, with an index: whatever the index says it is: a file (its
//!   manifest comes with the answer), a folder (its head comes with the answer; the file list
//!   is read from the hosts, [`FolderRecord::from_hosts`]) or a file inside a folder (its
//!   manifest comes from a host, `GetManifest`, checked against the id).
//! * A full id with direct hosts only (`--from`, no index): each host in turn is asked for a
//!   file's manifest, then for a folder's head, under that id.
//!
//! Where the indexes know nothing (or none answers) and the peer is in the DHT (`--dht`), a
//! full id's hosts are looked up there: unpinned hosts, asked like `--from` ones.
//!
//! The job also gets a [`Refresh`]: while it has no host left, it asks the indexes (and the
//! DHT) again for the current hosts of the same file or folder.

use std::net::SocketAddr;
use std::sync::Arc;

use p2p_protocol::folder::FolderError;
use p2p_protocol::manifest_file::FolderManifestFile;
use p2p_protocol::{
    ErrorCode, FileId, FileManifest, FolderHead, FolderId, HostInfo, NodeId, PeerConversation,
    PeerRequest, PeerResponse, ProtocolError,
};
use p2p_transport::ClientConnection;
use tracing::{info, warn};

use super::record::{FolderFile, FolderRecord, RecordTimeouts};
use super::{HostSpec, JobSource, Refresh};
use crate::error::PeerError;
use crate::index::Located;
use crate::node::{Node, PeerHandle};

/// What to download, and where besides the index to look for it: one request, one job.
#[derive(Clone, Debug, Default)]
pub struct DownloadRequest {
    /// The file or folder id, or (with an index) a unique prefix of one.
    pub id: String,
    /// A file's manifest, if the caller has it already (from a manifest file); it must hash
    /// to `id`, which must then be the full id.
    pub manifest: Option<FileManifest>,
    /// A folder's manifest file, if the caller has it (its files are then in hand).
    pub folder: Option<Arc<FolderManifestFile>>,
    /// Peers to fetch from directly, whether or not the index knows them.
    pub hosts: Vec<SocketAddr>,
    /// Peers to fetch from directly that must prove the node id given with each in their TLS
    /// handshake (a ticket's sender): any other node there is refused before anything is
    /// asked of it. An address also in `hosts` is pinned all the same.
    pub pinned_hosts: Vec<(SocketAddr, NodeId)>,
}

impl DownloadRequest {
    /// A download by id or prefix, through the index.
    pub fn by_id(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            ..Self::default()
        }
    }

    /// The folder's name, for a request made from a folder's manifest file.
    pub fn folder_name(&self) -> Option<&str> {
        self.folder.as_deref().map(|f| f.name.as_str())
    }
}

impl PeerHandle {
    /// What `request` fetches and from whom, checked against the id it names; and how the
    /// job finds hosts again once it has lost them all (with an index).
    pub(crate) async fn resolve(
        &self,
        request: &DownloadRequest,
    ) -> Result<(JobSource, Option<Refresh>), PeerError> {
        let node = &self.node;
        let direct = direct_hosts(&request.hosts, &request.pinned_hosts);
        let source = match (&request.folder, &request.manifest) {
            (Some(doc), _) => self.resolve_folder_file(doc, direct).await?,
            (None, Some(manifest)) => self.resolve_manifest(request, manifest, direct).await?,
            (None, None) if !node.indexes.is_empty() => {
                self.resolve_by_index(request, direct).await?
            }
            (None, None) => {
                let mut hosts = direct;
                add_specs(&mut hosts, self.dht_hosts(&request.id).await);
                self.resolve_direct(request, hosts).await?
            }
        };
        let source = without_me(node, source);
        let asks = !node.indexes.is_empty() || node.dht.get().is_some();
        let refresh = asks.then(|| refresh(node.clone(), &source));
        Ok((source, refresh))
    }

    /// A `.p2pm` folder: the list is in hand; hosts are the direct ones and the index's.
    async fn resolve_folder_file(
        &self,
        doc: &FolderManifestFile,
        direct: Vec<HostSpec>,
    ) -> Result<JobSource, PeerError> {
        // The reader checked the id against the files (or computed it, for an older file).
        let (head, folder_id) = doc.head_and_id();
        let files = doc
            .files
            .iter()
            .map(|e| FolderFile {
                path: e.path.clone(),
                manifest: e.manifest.clone(),
            })
            .collect();
        let record = FolderRecord::from_files(&head, files);
        let mut hosts = direct;
        // The index knowing the folder is a bonus: the list is in hand.
        if !self.node.indexes.is_empty() {
            match self.node.indexes.locate(&folder_id.to_string()).await {
                Ok(Located::Folder {
                    folder_id: found,
                    hosts: listed,
                    ..
                }) if found == folder_id => add_hosts(&mut hosts, listed),
                Ok(_) => {}
                Err(err) => {
                    warn!(%err, folder = %folder_id.fmt_short(), "the index does not know this folder; using the hosts given")
                }
            }
        }
        if hosts.is_empty() {
            add_specs(&mut hosts, self.dht_hosts(&folder_id.to_string()).await);
        }
        Ok(JobSource::Folder {
            folder_id,
            head,
            hosts,
            record,
        })
    }

    /// A `.p2pm` file: the manifest is in hand and must hash to the id.
    async fn resolve_manifest(
        &self,
        request: &DownloadRequest,
        manifest: &FileManifest,
        direct: Vec<HostSpec>,
    ) -> Result<JobSource, PeerError> {
        let file_id: FileId = request.id.parse()?;
        if manifest.id() != file_id || manifest.validate().is_err() {
            return Err(PeerError::ManifestMismatch(file_id));
        }
        let mut hosts = direct;
        if !self.node.indexes.is_empty() {
            match self.node.indexes.locate(&request.id).await {
                Ok(Located::File(found)) if found.file_id == file_id => {
                    add_hosts(&mut hosts, found.hosts)
                }
                Ok(Located::InFolder {
                    file_id: found,
                    hosts: listed,
                    ..
                }) if found == file_id => add_hosts(&mut hosts, listed),
                Ok(_) => {}
                // The manifest is in hand: the index not knowing the file is no error.
                Err(PeerError::IndexRefused { .. }) => {}
                Err(err) => warn!(%err, "index lookup failed; using the hosts given"),
            }
        }
        if hosts.is_empty() {
            add_specs(&mut hosts, self.dht_hosts(&request.id).await);
        }
        Ok(JobSource::File {
            file_id,
            manifest: manifest.clone(),
            hosts,
        })
    }

    /// An id or prefix the index resolves.
    async fn resolve_by_index(
        &self,
        request: &DownloadRequest,
        direct: Vec<HostSpec>,
    ) -> Result<JobSource, PeerError> {
        let located = match self.node.indexes.locate(&request.id).await {
            Ok(located) => located,
            Err(err) => {
                // No index knows it (or none answered): the DHT may, for a full id.
                let found = self.dht_hosts(&request.id).await;
                if direct.is_empty() && found.is_empty() {
                    return Err(err);
                }
                if found.is_empty() {
                    warn!(%err, "index lookup failed; using the hosts given");
                } else {
                    info!(%err, hosts = found.len(), "index lookup failed; using the hosts the DHT knows");
                }
                let mut hosts = direct;
                add_specs(&mut hosts, found);
                return self.resolve_direct(request, hosts).await;
            }
        };
        let mut hosts = direct;
        match located {
            Located::File(found) => {
                add_hosts(&mut hosts, found.hosts);
                Ok(JobSource::File {
                    file_id: found.file_id,
                    manifest: found.manifest,
                    hosts,
                })
            }
            Located::Folder {
                folder_id,
                head,
                hosts: listed,
            } => {
                if head.id() != folder_id {
                    return Err(FolderError::IdMismatch(folder_id).into());
                }
                add_hosts(&mut hosts, listed);
                let hosts = self.others(hosts);
                let record = self.record(folder_id, head.clone(), hosts.clone());
                Ok(JobSource::Folder {
                    folder_id,
                    head,
                    hosts,
                    record,
                })
            }
            Located::InFolder {
                file_id,
                hosts: listed,
                ..
            } => {
                add_hosts(&mut hosts, listed);
                let hosts = self.others(hosts);
                let manifest = self.manifest_from_hosts(file_id, &hosts).await?;
                Ok(JobSource::File {
                    file_id,
                    manifest,
                    hosts,
                })
            }
        }
    }

    /// A full id asked of the direct hosts only: a file's manifest, or else a folder's head.
    async fn resolve_direct(
        &self,
        request: &DownloadRequest,
        direct: Vec<HostSpec>,
    ) -> Result<JobSource, PeerError> {
        let file_id: FileId = request.id.parse()?;
        let folder_id = FolderId(file_id.0);
        let hosts = self.others(direct);
        let mut last = String::from("no host given");
        for host in &hosts {
            match self.ask_either(host, file_id).await {
                Ok(Either::File(manifest)) => {
                    return Ok(JobSource::File {
                        file_id,
                        manifest,
                        hosts,
                    });
                }
                Ok(Either::Folder(head)) => {
                    let record = self.record(folder_id, head.clone(), hosts.clone());
                    return Ok(JobSource::Folder {
                        folder_id,
                        head,
                        hosts,
                        record,
                    });
                }
                Err(reason) => last = format!("{}: {reason}", host.addr),
            }
        }
        Err(PeerError::NoManifest {
            id: file_id,
            reason: last,
        })
    }

    /// Asks `host` for the manifest of `id` as a file, then (if it shares no such file) for
    /// the head of `id` as a folder; either must hash to `id`.
    async fn ask_either(&self, host: &HostSpec, id: FileId) -> Result<Either, String> {
        let config = &self.node.config;
        let (mut conn, _) = self.connect(host).await.map_err(|e| e.to_string())?;
        match ask_manifest(&mut conn, id, config.request_timeout).await {
            Ok(manifest) if manifest.id() == id && manifest.validate().is_ok() => {
                return Ok(Either::File(manifest));
            }
            Ok(_) => return Err("sent a manifest that does not match the id".into()),
            Err(ProtocolError::Remote {
                code: ErrorCode::UnknownFile,
                ..
            }) => {}
            Err(err) => return Err(err.to_string()),
        }
        let folder_id = FolderId(id.0);
        let request = PeerRequest::GetFolder { folder_id };
        match conn.request(&request, config.request_timeout).await {
            Ok(PeerResponse::Folder { head, .. }) if head.id() == folder_id => {
                Ok(Either::Folder(head))
            }
            Ok(PeerResponse::Folder { .. }) => Err(FolderError::IdMismatch(folder_id).to_string()),
            Ok(PeerResponse::Error { message, .. }) => {
                Err(p2p_protocol::printable(&message).to_string())
            }
            Ok(_) => Err("answered GetFolder with another reply".into()),
            Err(err) => Err(err.to_string()),
        }
    }

    /// Asks each host in turn for the manifest of `file_id` and checks it against the id.
    async fn manifest_from_hosts(
        &self,
        file_id: FileId,
        hosts: &[HostSpec],
    ) -> Result<FileManifest, PeerError> {
        let mut last = String::from("no host given");
        let timeout = self.node.config.request_timeout;
        for host in hosts {
            let asked = match self.connect(host).await {
                Ok((mut conn, _)) => ask_manifest(&mut conn, file_id, timeout).await,
                Err(err) => Err(err),
            };
            match asked {
                Ok(manifest) if manifest.id() == file_id && manifest.validate().is_ok() => {
                    return Ok(manifest);
                }
                Ok(_) => last = format!("{} sent a manifest that does not match the id", host.addr),
                Err(err) => last = format!("{}: {err}", host.addr),
            }
        }
        Err(PeerError::NoManifest {
            id: file_id,
            reason: last,
        })
    }

    /// A connection to `host`, which must be the node the index named (if it named one).
    async fn connect(
        &self,
        host: &HostSpec,
    ) -> Result<(ClientConnection<PeerConversation>, NodeId), ProtocolError> {
        let node = &self.node;
        p2p_transport::connect::<PeerConversation>(
            &node.tls,
            host.addr,
            host.node_id,
            node.config.connect_timeout,
        )
        .await
    }

    /// The hosts the DHT knows for `id`.
    async fn dht_hosts(&self, id: &str) -> Vec<HostSpec> {
        dht_hosts_of(&self.node, id).await
    }

    /// A folder's record, read from `hosts`.
    fn record(&self, folder_id: FolderId, head: FolderHead, hosts: Vec<HostSpec>) -> FolderRecord {
        let config = &self.node.config;
        FolderRecord::from_hosts(
            folder_id,
            head,
            hosts,
            self.node.tls.clone(),
            RecordTimeouts {
                connect: config.connect_timeout,
                request: config.request_timeout,
                stall: config.stall_timeout,
            },
        )
    }

    /// `hosts` without this peer itself.
    fn others(&self, hosts: Vec<HostSpec>) -> Vec<HostSpec> {
        hosts
            .into_iter()
            .filter(|h| !is_me(&self.node, h))
            .collect()
    }
}

enum Either {
    File(FileManifest),
    Folder(FolderHead),
}

/// Asks for the manifest of `file_id` on `conn` (not checked yet).
async fn ask_manifest(
    conn: &mut ClientConnection<PeerConversation>,
    file_id: FileId,
    timeout: std::time::Duration,
) -> Result<FileManifest, ProtocolError> {
    match conn
        .request(&PeerRequest::GetManifest { file_id }, timeout)
        .await?
    {
        PeerResponse::Manifest { manifest, .. } => Ok(manifest),
        PeerResponse::Error { code, message } => Err(ProtocolError::Remote {
            code,
            message: message.into(),
        }),
        _ => Err(ProtocolError::Unexpected("expected Manifest")),
    }
}

/// Hosts named by address have no registration; they get ids no index hands out to anyone
/// we would also meet (the top of the range). A pinned one must prove its node id.
fn direct_hosts(addrs: &[SocketAddr], pinned: &[(SocketAddr, NodeId)]) -> Vec<HostSpec> {
    let mut hosts: Vec<HostSpec> = Vec::with_capacity(addrs.len() + pinned.len());
    let named = addrs.iter().map(|addr| (*addr, None));
    let pinned = pinned.iter().map(|(addr, id)| (*addr, Some(*id)));
    for (addr, node_id) in named.chain(pinned) {
        match hosts.iter_mut().find(|h| h.addr == addr) {
            Some(host) => host.node_id = node_id.or(host.node_id),
            None => hosts.push(HostSpec { addr, node_id }),
        }
    }
    hosts
}

/// Adds `found` to `hosts`, except those already named by address.
fn add_specs(hosts: &mut Vec<HostSpec>, found: Vec<HostSpec>) {
    for spec in found {
        if !hosts.iter().any(|h| h.addr == spec.addr) {
            hosts.push(spec);
        }
    }
}

/// The hosts the DHT knows for `id` (a full id), unpinned: none without a DHT, or for a
/// prefix (the DHT is keyed by full ids).
async fn dht_hosts_of(node: &Node, id: &str) -> Vec<HostSpec> {
    let (Some(dht), Ok(file_id)) = (node.dht.get(), id.parse::<FileId>()) else {
        return Vec::new();
    };
    dht.hosts(&file_id)
        .await
        .into_iter()
        .map(|addr| HostSpec {
            addr,
            node_id: None,
        })
        .collect()
}

/// Adds the index's hosts to `hosts`, except those already named by address.
fn add_hosts(hosts: &mut Vec<HostSpec>, listed: Vec<HostInfo>) {
    for info in listed {
        if !hosts.iter().any(|h| h.addr == info.addr) {
            hosts.push(HostSpec::from(info));
        }
    }
}

/// Whether `host` is this peer (by node id: peer ids are each index's own).
fn is_me(node: &Node, host: &HostSpec) -> bool {
    host.node_id == Some(node.tls.node_id())
}

/// `source` without this peer among its hosts: it never serves its own downloads.
fn without_me(node: &Node, source: JobSource) -> JobSource {
    let keep = |hosts: Vec<HostSpec>| -> Vec<HostSpec> {
        hosts.into_iter().filter(|h| !is_me(node, h)).collect()
    };
    match source {
        JobSource::File {
            file_id,
            manifest,
            hosts,
        } => JobSource::File {
            file_id,
            manifest,
            hosts: keep(hosts),
        },
        JobSource::Folder {
            folder_id,
            head,
            hosts,
            record,
        } => JobSource::Folder {
            folder_id,
            head,
            hosts: keep(hosts),
            record,
        },
    }
}

/// Asks the index for the current hosts of the job's file or folder.
fn refresh(node: Arc<Node>, source: &JobSource) -> Refresh {
    let id = match source {
        JobSource::File { file_id, .. } => file_id.to_string(),
        JobSource::Folder { folder_id, .. } => folder_id.to_string(),
    };
    Arc::new(move || {
        let node = node.clone();
        let id = id.clone();
        Box::pin(async move {
            let mut hosts: Vec<HostSpec> = if node.indexes.is_empty() {
                Vec::new()
            } else {
                match node.indexes.hosts(&id).await {
                    Ok(listed) => listed.into_iter().map(HostSpec::from).collect(),
                    Err(err) if node.dht.get().is_none() => return Err(err),
                    Err(_) => Vec::new(),
                }
            };
            add_specs(&mut hosts, dht_hosts_of(&node, &id).await);
            Ok(hosts)
        })
    })
}
