//! `p2p-transfer search WORDS... [--server ADDR | --auto-discover]`.

use std::time::Duration;

use anyhow::Context;
use p2p_peer::index_client::IndexClient;

use crate::cli::{DEFAULT_SERVER, IndexArgs, SearchArgs};
use crate::discovery::Finder;
use crate::tables::{Ids, print_files};
use crate::trust::IndexTrust;

/// Limit on the search request.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the index and prints the matching files.
pub async fn run(args: &SearchArgs) -> anyhow::Result<()> {
    let mut trust = IndexTrust::load(&args.identity, args.index.server_id)?;
    let tls = crate::run::id::client_tls(&args.identity)?;
    let (server, claimed) = index_addr(&args.index, &trust, &tls).await?;
    let query = args.words.join(" ");
    let client =
        IndexClient::new(server, SEARCH_TIMEOUT, tls).expecting(trust.expect_for(server, claimed));
    let (files, total) = client
        .search(&query)
        .await
        .map_err(|e| trust.explain(e))
        .with_context(|| format!("cannot search for {query:?}"))?;
    if let Some(seen) = client.server_node_id() {
        // Remembered quietly: the output is the search's.
        trust.remember(server, seen)?;
    }
    let none = format!("no file on the network matches {query:?}");
    print_files(&files, total, Ids::Full, &none);
    Ok(())
}

/// `--server`, or what `--auto-discover` finds (with the node id it claims), or the default.
pub async fn index_addr(
    args: &IndexArgs,
    trust: &IndexTrust,
    tls: &p2p_transport::Tls,
) -> anyhow::Result<(std::net::SocketAddr, Option<p2p_protocol::NodeId>)> {
    if args.auto_discover {
        return Finder::with(args.discover_timeout, trust.preference(), tls.clone())
            .find_claimed(false)
            .await;
    }
    let addr = match &args.server {
        Some(server) => server.resolve().await?,
        None => DEFAULT_SERVER,
    };
    Ok((addr, None))
}
