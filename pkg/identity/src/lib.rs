//! A p2p-transfer node's identity: its Ed25519 key pair, created on the node's first start and
//! kept on disk from then on, and the [`NodeId`] derived from its public key.
//!
//! # Layout
//! * this file: [`Identity`], [`Role`], [`IdentityError`].
//! * [`known`]: [`KnownIndexes`], the index servers this node has met and the ids they proved.
//! * [`allow`]: [`AllowList`] and [`Allowed`], the nodes a server lets in.
//! * [`api_key`]: [`ApiKey`], the secret the node's web API (`--web`) asks every caller for.
//!
//! # The key file
//! `<dir>/server.key` for an index server, `<dir>/peer.key` for a peer (so both can run from
//! one account), holding the private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), mode
//! 0600, in a folder created with mode 0700. It is written once, whole (a temporary file in
//! the same folder, then linked into place only if no key is there yet), so two nodes starting
//! at once end up with the same key and nobody ever reads half of one.
//!
//! A key file that can't be read, is damaged, or is readable by other users is an error that
//! says so: a node never quietly makes itself a new identity, since everyone who pinned the
//! old one would then refuse it (or, worse, learn to accept a new one).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use p2p_protocol::NodeId;
use rand::TryRngCore;
pub use zeroize::Zeroizing;

pub mod allow;
pub mod api_key;
pub mod known;
pub use allow::{AllowList, AllowListError, Allowed};
pub use api_key::{ApiKey, ApiKeyError};
pub use known::{KnownIndexes, KnownIndexesError};

/// A key file is a few hundred bytes; anything longer is not one.
const MAX_KEY_FILE_LEN: u64 = 16 * 1024;

/// Which kind of node a key belongs to; each has its own key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// An index server: `server.key`.
    Server,
    /// A peer: `peer.key`.
    Peer,
}

impl Role {
    fn file_name(self) -> &'static str {
        match self {
            Role::Server => "server.key",
            Role::Peer => "peer.key",
        }
    }
}

/// A node's key pair and its id.
pub struct Identity {
    key: SigningKey,
    node_id: NodeId,
    path: PathBuf,
}

impl std::fmt::Debug for Identity {
    /// Never shows the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.node_id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Why an identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file operation failed.
    #[error("{action} {}: {cause}", path.display())]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The key file exists but does not hold a key this program can read.
    #[error(
        "the key file {} is damaged ({reason}), so this node's identity can't be read; restore it \
         from a backup, or move it away to start over with a new identity (nodes that pinned the \
         old one will then refuse this node until they accept the new id)",
        path.display()
    )]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file can be read by other users.
    #[error(
        "the key file {} can be read by other users (mode {mode:o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError {
    let path = path.to_owned();
    move |cause| IdentityError::Io {
        action,
        path,
        cause,
    }
}

impl Identity {
    /// The identity of a `role` node kept in `dir`: loaded if its key file is there, created
    /// (and the folder with it) otherwise. Returns whether it was just created.
    pub fn load_or_create(dir: &Path, role: Role) -> Result<(Self, bool), IdentityError> {
        let path = dir.join(role.file_name());
        match Self::load(&path) {
            Err(IdentityError::Io { cause, .. }) if cause.kind() == ErrorKind::NotFound => {}
            loaded => return loaded.map(|identity| (identity, false)),
        }
        let mut secret = [0u8; 32];
        fill_random(&mut secret, &path)?;
        let key = SigningKey::from_bytes(&secret);
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| io("cannot encode the key", &path)(std::io::Error::other(e)))?;
        if write_secret_file(dir, &path, pem.as_bytes())? {
            Ok((Self::from_key(key, path), true))
        } else {
            Self::load(&path).map(|identity| (identity, false))
        }
    }

    /// Loads the key file at `path`.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let corrupt = |reason: String| IdentityError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let text = read_secret_file(path, MAX_KEY_FILE_LEN)?.map_err(corrupt)?;
        let key = SigningKey::from_pkcs8_pem(&text).map_err(|e| corrupt(e.to_string()))?;
        Ok(Self::from_key(key, path.to_owned()))
    }

    fn from_key(key: SigningKey, path: PathBuf) -> Self {
        let node_id = NodeId::of_public_key(&public_key_der(&key));
        Self { key, node_id, path }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The public key as a DER `SubjectPublicKeyInfo` (what the node id is a hash of).
    pub fn public_key_der(&self) -> Vec<u8> {
        public_key_der(&self.key)
    }

    /// The private key as PKCS#8 DER, for the TLS layer that signs with it. Zeroed when
    /// dropped.
    pub fn private_key_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(
            self.key
                .to_pkcs8_der()
                .expect("an Ed25519 private key always encodes")
                .as_bytes()
                .to_vec(),
        )
    }
}

/// Fills `buf` with random bytes from the operating system (for the secret at `path`).
fn fill_random(buf: &mut [u8], path: &Path) -> Result<(), IdentityError> {
    rand::rngs::OsRng
        .try_fill_bytes(buf)
        .map_err(|e| io("cannot get random bytes for a key", path)(std::io::Error::other(e)))
}

/// Writes a new secret file at `path` (in `dir`, created 0700 if missing): created 0600 under
/// a random name, written whole, then linked into place only if nothing is there yet. A reader
/// never sees half a secret, and of two nodes starting at once, the second keeps the first
/// one's. Returns `false` when a file was there already (the caller then loads it).
fn write_secret_file(dir: &Path, path: &Path, contents: &[u8]) -> Result<bool, IdentityError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("cannot create the identity folder", dir))?;
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(io("cannot create a key file in", dir))?;
    tmp.write_all(contents)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io("cannot write", path))?;
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(true),
        Err(e) if e.error.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io("cannot write", path)(e.error)),
    }
}

/// Reads a secret file of at most `max_len` bytes that only its owner may read. The outer
/// error is about the file (missing, unreadable, readable by others); the inner one says why
/// its contents are not a secret file at all.
fn read_secret_file(path: &Path, max_len: u64) -> Result<Result<String, String>, IdentityError> {
    let file = fs::File::open(path).map_err(io("cannot open", path))?;
    let meta = file.metadata().map_err(io("cannot read", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    if !meta.is_file() || meta.len() > max_len {
        return Ok(Err("not a key file".into()));
    }
    let mut text = String::new();
    Ok(file
        .take(max_len)
        .read_to_string(&mut text)
        .map(|_| text)
        .map_err(|e| e.to_string()))
}

fn public_key_der(key: &SigningKey) -> Vec<u8> {
    key.verifying_key()
        .to_public_key_der()
        .expect("an Ed25519 public key always encodes")
        .into_vec()
}

/// The folder identities are kept in when none is given: `$XDG_DATA_HOME/p2p-transfer/identity`
/// (`~/.local/share/...`), or `None` when there is no home.
pub fn default_dir(data_dir: Option<PathBuf>) -> Option<PathBuf> {
    data_dir.map(|d| d.join("p2p-transfer").join("identity"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_the_same_forever() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("id");
        let (first, created) = Identity::load_or_create(&home, Role::Peer).unwrap();
        assert!(created);
        let (again, created) = Identity::load_or_create(&home, Role::Peer).unwrap();
        assert!(!created);
        assert_eq!(first.node_id(), again.node_id());
        assert_eq!(
            first.node_id(),
            NodeId::of_public_key(&first.public_key_der())
        );
        // Each role its own key.
        let (server, _) = Identity::load_or_create(&home, Role::Server).unwrap();
        assert_ne!(server.node_id(), first.node_id());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(first.path()), 0o600);
        assert_eq!(mode(&home), 0o700);
        assert!(format!("{first:?}").contains("node_id"));
    }

    #[test]
    fn a_damaged_key_is_an_error_never_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, _) = Identity::load_or_create(dir.path(), Role::Peer).unwrap();
        let path = identity.path().to_owned();
        let mut text = fs::read_to_string(&path).unwrap();
        text.replace_range(40..44, "!!!!");
        fs::write(&path, &text).unwrap();
        let err = Identity::load_or_create(dir.path(), Role::Peer).unwrap_err();
        assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("is damaged"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), text, "left as it was");

        fs::write(&path, b"").unwrap();
        assert!(matches!(
            Identity::load_or_create(dir.path(), Role::Peer),
            Err(IdentityError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, _) = Identity::load_or_create(dir.path(), Role::Server).unwrap();
        fs::set_permissions(identity.path(), fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load_or_create(dir.path(), Role::Server).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn nodes_starting_at_once_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<NodeId> = std::thread::scope(|s| {
            let starts: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        Identity::load_or_create(dir.path(), Role::Peer)
                            .unwrap()
                            .0
                            .node_id()
                    })
                })
                .collect();
            starts.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    }
}
