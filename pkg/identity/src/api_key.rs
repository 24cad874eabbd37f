//! [`ApiKey`]: the secret a node's web API (`--web`) asks of every caller, kept beside the
//! node's identity as `<dir>/api-key`.
//!
//! # The key file
//! 32 random bytes as 64 hex digits and a newline, created on first use and written the way
//! identity keys are (mode 0600, whole, never over an existing file). A key file other users
//! can read is refused, as for identities: anyone who can read it can drive the node. Deleting
//! it makes a new key on the next start, which logs every browser out.
//!
//! A key given some other way (the binary reads `P2P_API_KEY`) goes through [`ApiKey::parse`]:
//! it ends up in a login URL, so only characters a URL carries as they are are allowed.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::{IdentityError, fill_random, read_secret_file, write_secret_file};

/// The key file's name in the identity folder.
pub const API_KEY_FILE: &str = "api-key";

/// Random bytes in a new key (shown as twice as many hex digits).
const NEW_KEY_BYTES: usize = 32;

/// The shortest key accepted: shorter ones can be guessed.
pub const MIN_API_KEY_LEN: usize = 16;

/// The longest key accepted.
pub const MAX_API_KEY_LEN: usize = 256;

/// A key file is one line; anything longer is not one.
const MAX_API_KEY_FILE_LEN: u64 = 1024;

/// The web API's key.
#[derive(Clone)]
pub struct ApiKey {
    key: Zeroizing<String>,
    /// The file it came from, if any.
    path: Option<PathBuf>,
}

impl std::fmt::Debug for ApiKey {
    /// Never shows the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Why an API key could not be loaded, created or taken.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    /// The key file could not be read or written, or other users can read it.
    #[error(transparent)]
    File(#[from] IdentityError),
    /// The key (from a file or elsewhere) is not one this program accepts.
    #[error(
        "the API key {origin} is not a key: {reason} (a key is {MIN_API_KEY_LEN} to \
         {MAX_API_KEY_LEN} characters from A-Z a-z 0-9 - . _ ~)"
    )]
    Invalid {
        /// Where it came from: `in FILE`, `in P2P_API_KEY`.
        origin: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ApiKey {
    /// The key kept in `dir` (the node's identity folder): loaded if its file is there,
    /// created (and the folder with it, 0700) otherwise. Returns whether it was just created.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), ApiKeyError> {
        let path = dir.join(API_KEY_FILE);
        match Self::load(&path) {
            Err(ApiKeyError::File(IdentityError::Io { cause, .. }))
                if cause.kind() == std::io::ErrorKind::NotFound => {}
            loaded => return loaded.map(|key| (key, false)),
        }
        let mut secret = Zeroizing::new([0u8; NEW_KEY_BYTES]);
        fill_random(&mut secret[..], &path)?;
        let mut text = Zeroizing::new(hex::encode(&secret[..]));
        text.push('\n');
        if write_secret_file(dir, &path, text.as_bytes())? {
            Ok((Self::from_file(text.trim_end(), &path)?, true))
        } else {
            Self::load(&path).map(|key| (key, false))
        }
    }

    /// Loads the key file at `path` (only its owner may be able to read it).
    pub fn load(path: &Path) -> Result<Self, ApiKeyError> {
        let text = Zeroizing::new(read_secret_file(path, MAX_API_KEY_FILE_LEN)?.map_err(|_| {
            ApiKeyError::Invalid {
                origin: format!("in {}", path.display()),
                reason: "the file is not one line of text",
            }
        })?);
        Self::from_file(text.trim_end(), path)
    }

    fn from_file(text: &str, path: &Path) -> Result<Self, ApiKeyError> {
        let mut key = Self::parse(text, &format!("in {}", path.display()))?;
        key.path = Some(path.to_owned());
        Ok(key)
    }

    /// A key given as text; `origin` names where it came from in the error (`in P2P_API_KEY`).
    pub fn parse(text: &str, origin: &str) -> Result<Self, ApiKeyError> {
        let invalid = |reason| ApiKeyError::Invalid {
            origin: origin.to_owned(),
            reason,
        };
        if text.len() < MIN_API_KEY_LEN {
            return Err(invalid("it is too short"));
        }
        if text.len() > MAX_API_KEY_LEN {
            return Err(invalid("it is too long"));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            return Err(invalid("it holds a character a URL can't carry as it is"));
        }
        Ok(Self {
            key: Zeroizing::new(text.to_owned()),
            path: None,
        })
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The file it was loaded from or written to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_once_0600_then_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("id");
        let (first, created) = ApiKey::load_or_create(&home).unwrap();
        assert!(created);
        assert_eq!(first.as_str().len(), 2 * NEW_KEY_BYTES);
        assert!(first.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        let path = home.join(API_KEY_FILE);
        assert_eq!(first.path(), Some(path.as_path()));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&home), 0o700);
        let (again, created) = ApiKey::load_or_create(&home).unwrap();
        assert!(!created);
        assert_eq!(again.as_str(), first.as_str());
        assert!(
            !format!("{first:?}").contains(first.as_str()),
            "Debug hides it"
        );
        // Another node's key is another key.
        let (other, _) = ApiKey::load_or_create(&dir.path().join("other")).unwrap();
        assert_ne!(other.as_str(), first.as_str());
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = ApiKey::load_or_create(dir.path()).unwrap();
        let path = key.path().unwrap().to_owned();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = ApiKey::load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(err, ApiKeyError::File(IdentityError::TooOpen { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        // It is not replaced by a new key either.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(ApiKey::load(&path).unwrap().as_str(), key.as_str());
    }

    #[test]
    fn a_hand_written_key_is_taken_and_a_bad_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(API_KEY_FILE);
        fs::write(&path, "my-own.key_0123456789~\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let (key, created) = ApiKey::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(key.as_str(), "my-own.key_0123456789~");

        fs::write(&path, "short\n").unwrap();
        let err = ApiKey::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("too short"), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "short\n", "left alone");
    }

    #[test]
    fn a_given_key_must_fit_in_a_url() {
        assert_eq!(
            ApiKey::parse("0123456789abcdef", "in P2P_API_KEY")
                .unwrap()
                .as_str(),
            "0123456789abcdef"
        );
        for bad in [
            "",
            "0123456789abcde",
            "0123456789abcdef&x=1",
            "key with spaces ok?",
        ] {
            let err = ApiKey::parse(bad, "in P2P_API_KEY").unwrap_err();
            assert!(err.to_string().contains("in P2P_API_KEY"), "{err}");
        }
        assert!(ApiKey::parse(&"a".repeat(MAX_API_KEY_LEN + 1), "x").is_err());
    }
}
