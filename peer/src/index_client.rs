//! [`IndexClient`]: requests to the index server over one reused connection, reconnecting
//! when it breaks.

use std::net::SocketAddr;
use std::time::Duration;

use p2p_protocol::{
    FileId, FileManifest, FileSummary, HostInfo, IndexClientConnection, IndexConversation,
    IndexRequest, IndexResponse, PeerId, PeerSummary, ProtocolError, Token, client_hello,
};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::error::PeerError;

/// What the index told us at registration.
#[derive(Clone, Debug)]
pub struct Session {
    /// Our id.
    pub peer_id: PeerId,
    /// Our secret.
    pub token: Token,
    /// The address the index gives to others for us.
    pub addr: SocketAddr,
    /// How often to heartbeat.
    pub heartbeat_interval: Duration,
}

/// A lookup's answer, checked: the manifest hashes to `file_id`.
#[derive(Clone, Debug)]
pub struct Lookup {
    /// Full id.
    pub file_id: FileId,
    /// Its manifest.
    pub manifest: FileManifest,
    /// Who hosts it.
    pub hosts: Vec<HostInfo>,
}

/// A client of one index server.
#[derive(Debug)]
pub struct IndexClient {
    /// Changes when the server is found again elsewhere (mDNS re-discovery).
    server: std::sync::Mutex<SocketAddr>,
    timeout: Duration,
    /// tokio Mutex: held across the request's await; one request at a time per connection.
    conn: Mutex<Option<IndexClientConnection<TcpStream>>>,
}

impl IndexClient {
    /// A client for `server`; connects lazily.
    pub fn new(server: SocketAddr, timeout: Duration) -> Self {
        Self {
            server: std::sync::Mutex::new(server),
            timeout,
            conn: Mutex::new(None),
        }
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        *self.server.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Talks to `server` from now on; the next request opens a new connection.
    pub async fn set_server(&self, server: SocketAddr) {
        let mut slot = self.conn.lock().await;
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = server;
        *slot = None;
    }

    async fn connect(&self) -> Result<IndexClientConnection<TcpStream>, ProtocolError> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(self.server()))
            .await
            .map_err(|_| ProtocolError::Timeout(self.timeout))??;
        stream.set_nodelay(true)?;
        let mut conn = IndexClientConnection::index_client(stream);
        client_hello::<IndexConversation, _>(&mut conn).await?;
        Ok(conn)
    }

    /// Sends `request` and returns the reply; an `Error` reply becomes
    /// [`PeerError::IndexRefused`]. A reused connection that turns out to be closed (the
    /// server restarted or timed it out) is replaced once.
    pub async fn call(&self, request: IndexRequest) -> Result<IndexResponse, PeerError> {
        let mut slot = self.conn.lock().await;
        let reused = slot.is_some();
        let result = self.call_on(&mut slot, &request).await;
        let result = match result {
            Err(ProtocolError::Io(_) | ProtocolError::Closed) if reused => {
                self.call_on(&mut slot, &request).await
            }
            other => other,
        };
        match result {
            Ok(IndexResponse::Error { code, message }) => Err(PeerError::IndexRefused {
                code,
                message: message.into(),
            }),
            Ok(reply) => Ok(reply),
            Err(err) => Err(PeerError::from_index(self.server(), err)),
        }
    }

    async fn call_on(
        &self,
        slot: &mut Option<IndexClientConnection<TcpStream>>,
        request: &IndexRequest,
    ) -> Result<IndexResponse, ProtocolError> {
        let conn = match slot {
            Some(conn) => conn,
            None => slot.insert(self.connect().await?),
        };
        let result = conn.request(request, self.timeout).await;
        if result.is_err() {
            // Whatever state the stream is in, it can't be trusted for the next request.
            *slot = None;
        }
        result
    }

    /// Registers a peer whose chunk server is at `addr`.
    pub async fn register(&self, addr: SocketAddr) -> Result<Session, PeerError> {
        match self.call(IndexRequest::Register { addr }).await? {
            IndexResponse::Registered {
                peer_id,
                token,
                addr,
                heartbeat_interval_ms,
                ..
            } => Ok(Session {
                peer_id,
                token,
                addr,
                heartbeat_interval: Duration::from_millis(heartbeat_interval_ms.max(100)),
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Keeps `session` alive.
    pub async fn heartbeat(&self, session: &Session) -> Result<(), PeerError> {
        let request = IndexRequest::Heartbeat {
            peer_id: session.peer_id,
            token: session.token,
        };
        match self.call(request).await? {
            IndexResponse::HeartbeatAck {} => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Announces that we host `manifest`.
    pub async fn add_file(
        &self,
        session: &Session,
        manifest: FileManifest,
    ) -> Result<FileId, PeerError> {
        let request = IndexRequest::AddFile {
            peer_id: session.peer_id,
            token: session.token,
            manifest,
        };
        match self.call(request).await? {
            IndexResponse::FileAdded { file_id } => Ok(file_id),
            other => Err(unexpected(other)),
        }
    }

    /// Withdraws a file.
    pub async fn remove_file(&self, session: &Session, file_id: FileId) -> Result<(), PeerError> {
        let request = IndexRequest::RemoveFile {
            peer_id: session.peer_id,
            token: session.token,
            file_id,
        };
        match self.call(request).await? {
            IndexResponse::FileRemoved { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Ends the registration.
    pub async fn unregister(&self, session: &Session) -> Result<(), PeerError> {
        let request = IndexRequest::Unregister {
            peer_id: session.peer_id,
            token: session.token,
        };
        match self.call(request).await? {
            IndexResponse::Unregistered {} => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Resolves an id or prefix and checks the manifest against the id.
    pub async fn lookup(&self, id: &str) -> Result<Lookup, PeerError> {
        let prefix: p2p_protocol::IdPrefix = id.parse()?;
        match self
            .call(IndexRequest::Lookup {
                id: prefix.to_string(),
            })
            .await?
        {
            IndexResponse::Found {
                file_id,
                manifest,
                hosts,
            } => {
                if manifest.id() != file_id
                    || !prefix.matches(&file_id)
                    || manifest.validate().is_err()
                {
                    return Err(PeerError::ManifestMismatch(file_id));
                }
                Ok(Lookup {
                    file_id,
                    manifest,
                    hosts,
                })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Files on the network, and how many there are in all.
    pub async fn list_files(&self) -> Result<(Vec<FileSummary>, u64), PeerError> {
        match self.call(IndexRequest::ListFiles {}).await? {
            IndexResponse::Files { files, total } => Ok((files, total)),
            other => Err(unexpected(other)),
        }
    }

    /// Files whose names contain every word of `query`, and how many match in all.
    pub async fn search(&self, query: &str) -> Result<(Vec<FileSummary>, u64), PeerError> {
        match self
            .call(IndexRequest::Search {
                query: query.to_owned(),
            })
            .await?
        {
            IndexResponse::Files { files, total } => Ok((files, total)),
            other => Err(unexpected(other)),
        }
    }

    /// Registered peers, and how many there are in all.
    pub async fn list_peers(&self) -> Result<(Vec<PeerSummary>, u64), PeerError> {
        match self.call(IndexRequest::ListPeers {}).await? {
            IndexResponse::Peers { peers, total } => Ok((peers, total)),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(reply: IndexResponse) -> PeerError {
    PeerError::Internal(format!(
        "the index server sent an unexpected reply: {reply:?}"
    ))
}
