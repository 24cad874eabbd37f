//! Certificates: the one a node presents (made from its key at start-up, never stored) and the
//! checks on the one the other side presents, which yield that side's [`NodeId`].
//!
//! Nothing chains to an authority: a certificate only carries an Ed25519 public key, and the
//! TLS handshake proves the other side holds its private key. Who that is, is the node id, a
//! hash of the key; whether to trust it is for the caller to decide (pinned, remembered,
//! named by the index, allow-listed).

use p2p_identity::Identity;
use p2p_protocol::NodeId;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};

/// The DER bytes every Ed25519 `SubjectPublicKeyInfo` starts with (RFC 8410: a SEQUENCE of
/// the algorithm `1.3.101.112` and a 33-byte BIT STRING), followed by the 32-byte key.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The `subjectAltName` in every node's certificate. Nobody checks it (a node is known by its
/// key, not a name); it is there because some TLS libraries refuse a certificate without one.
pub const CERT_NAME: &str = "p2p-transfer";

/// Why a node's own certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make a TLS certificate from the key in {path}: {reason}")]
pub struct CertificateError {
    path: String,
    reason: String,
}

/// This node's certificate and the key it signs with.
pub(crate) struct OwnCertificate {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

impl OwnCertificate {
    /// A self-signed certificate for `identity`'s key, with the node id as its common name so
    /// that tools that show certificates (`openssl s_client`) show it too. Valid from 1975 to
    /// 4096: the certificate proves nothing by its dates, and a node's clock may be wrong.
    pub fn new(identity: &Identity) -> Result<Self, CertificateError> {
        let fail = |reason: String| CertificateError {
            path: identity.path().display().to_string(),
            reason,
        };
        let pkcs8 = identity.private_key_pkcs8_der();
        let key = PrivatePkcs8KeyDer::from(pkcs8.as_slice());
        let key_pair = rcgen::KeyPair::try_from(&key).map_err(|e| fail(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec![CERT_NAME.to_owned()])
            .map_err(|e| fail(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, identity.node_id().to_string());
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(key.clone_key()),
        })
    }
}

/// Checks a certificate the other side presented and returns its node id. The certificate
/// must be a well-formed X.509 certificate holding an Ed25519 key, signed by that key (as
/// every node's is), and valid at `now`. The handshake itself then checks that the other side
/// holds the key.
pub fn node_id_of(cert: &CertificateDer<'_>, now: UnixTime) -> Result<NodeId, rustls::Error> {
    let bad = |e: webpki::Error| rustls::Error::InvalidCertificate(webpki_error(e));
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(bad)?;
    let spki = rustls::server::ParsedCertificate::try_from(cert)?.subject_public_key_info();
    if !spki.as_ref().starts_with(&ED25519_SPKI_PREFIX) || spki.as_ref().len() != 44 {
        return Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(std::sync::Arc::new(NotEd25519))),
        ));
    }
    // Its own trust anchor: this checks the self-signature and the dates, nothing more.
    let anchor = webpki::anchor_from_trusted_cert(cert).map_err(bad)?;
    let algorithms = [ed25519_algorithm()];
    parsed
        .verify_for_usage(&algorithms, &[anchor], &[], now, AnyUsage, None, None)
        .map_err(bad)?;
    Ok(NodeId::of_public_key(spki.as_ref()))
}

/// The webpki algorithm that checks Ed25519 signatures, from the crypto provider in use.
fn ed25519_algorithm() -> &'static dyn rustls::pki_types::SignatureVerificationAlgorithm {
    crate::tls::provider()
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == rustls::SignatureScheme::ED25519)
        .map(|(_, algs)| algs[0])
        .expect("the crypto provider verifies Ed25519")
}

/// Accepts a certificate whatever extended key usage it names: a node is both a TLS client
/// and a server, and its key is what counts.
struct AnyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        // Still refuse a malformed extension.
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}

/// The key in a certificate is not an Ed25519 key.
#[derive(Debug, thiserror::Error)]
#[error("the certificate's key is not an Ed25519 key (node certificates must carry one)")]
struct NotEd25519;

/// rustls's name for a webpki error, as rustls's own verifiers map them.
fn webpki_error(e: webpki::Error) -> rustls::CertificateError {
    use rustls::CertificateError as C;
    match e {
        webpki::Error::BadDer | webpki::Error::BadDerTime | webpki::Error::TrailingData(_) => {
            C::BadEncoding
        }
        webpki::Error::CertNotValidYet { .. } => C::NotValidYet,
        webpki::Error::CertExpired { .. } => C::Expired,
        webpki::Error::InvalidSignatureForPublicKey
        | webpki::Error::UnsupportedSignatureAlgorithmContext(_)
        | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => C::BadSignature,
        webpki::Error::UnknownIssuer => C::UnknownIssuer,
        other => C::Other(rustls::OtherError(std::sync::Arc::new(WebpkiError(other)))),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct WebpkiError(webpki::Error);

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> (tempfile::TempDir, Identity) {
        let dir = tempfile::tempdir().unwrap();
        let (identity, _) =
            Identity::load_or_create(&dir.path().join("id"), p2p_identity::Role::Peer).unwrap();
        (dir, identity)
    }

    #[test]
    fn a_nodes_certificate_yields_its_node_id() {
        let (_dir, identity) = identity();
        let own = OwnCertificate::new(&identity).unwrap();
        assert_eq!(
            node_id_of(&own.cert, UnixTime::now()).unwrap(),
            identity.node_id()
        );
    }

    #[test]
    fn garbage_and_truncated_certificates_are_refused() {
        let (_dir, identity) = identity();
        let own = OwnCertificate::new(&identity).unwrap();
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff]);
        assert!(node_id_of(&garbage, UnixTime::now()).is_err());
        let truncated = CertificateDer::from(own.cert[..own.cert.len() - 10].to_vec());
        assert!(node_id_of(&truncated, UnixTime::now()).is_err());
    }

    #[test]
    fn a_certificate_whose_signature_was_tampered_with_is_refused() {
        let (_dir, identity) = identity();
        let mut der = OwnCertificate::new(&identity).unwrap().cert.to_vec();
        let last = der.len() - 1;
        der[last] ^= 1;
        let err = node_id_of(&CertificateDer::from(der), UnixTime::now()).unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
        );
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut params = rcgen::CertificateParams::new(vec![CERT_NAME.to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2001, 1, 1);
        params.not_after = rcgen::date_time_ymd(2002, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let err = node_id_of(cert.der(), UnixTime::now()).unwrap_err();
        assert_eq!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
        );
    }

    #[test]
    fn a_certificate_with_another_kind_of_key_is_refused() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec![CERT_NAME.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let err = node_id_of(cert.der(), UnixTime::now()).unwrap_err();
        assert!(err.to_string().contains("Ed25519"), "{err}");
    }
}
