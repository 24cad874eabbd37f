//! `docs/PROTOCOL.md` §11 tells third parties how to find the index server over mDNS: the
//! service type, the TXT keys and how long the reference client listens; §11.2, where the
//! records published in ordinary DNS are. These tests check that
//! what the document names is what this crate uses (nothing here touches the network).

use p2p_discovery::browse::SETTLE;
use p2p_discovery::unicast::{DNS_PORT, SERVICE_NAME};
use p2p_discovery::{SERVICE_TYPE, TXT_ID, TXT_VERSION};

/// The document with every run of whitespace made one space, so a phrase may wrap anywhere.
fn flat_document() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
    let text = std::fs::read_to_string(path).expect("docs/PROTOCOL.md is readable");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn assert_says(phrase: &str) {
    let phrase = phrase.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat_document().contains(&phrase),
        "docs/PROTOCOL.md should say {phrase:?}"
    );
}

#[test]
fn the_advertisement_is_as_documented() {
    assert_says(&format!("* the service type is `{SERVICE_TYPE}`;"));
    assert_says(&format!(
        "* the TXT record holds `{TXT_VERSION}` (the protocol version, in decimal) and \
         `{TXT_ID}`: the index server's node id in its text form (§2.5)"
    ));
    let settle = SETTLE.as_secs_f64();
    assert_says(&format!(
        "It browses for up to 5 s (`--discover-timeout`), and stops {settle} s after the first \
         answer."
    ));
}

#[test]
fn the_unicast_records_are_as_documented() {
    assert_says(&format!(
        "* the name asked is `{SERVICE_NAME}.DOMAIN`: its `PTR` records name one instance each, \
         `<instance>.{SERVICE_NAME}.DOMAIN`;"
    ));
    assert_says(&format!(
        "`{TXT_VERSION}` (the protocol version, in decimal) and `{TXT_ID}` (the index server's \
         node id, §2.5)"
    ));
    assert_says(&format!(
        "(`--dns-sd-server IP[:PORT]`, port {DNS_PORT} by default, over UDP and over TCP for long \
         answers)"
    ));
    assert_says(&format!(
        "is the error `{}`",
        p2p_discovery::DiscoveryError::NothingPublished {
            name: format!("{SERVICE_NAME}.DOMAIN")
        }
    ));
}
