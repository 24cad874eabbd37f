//! `p2p-transfer server`.

use anyhow::Context;
use p2p_central_server::{Server, ServerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::ServerArgs;

/// Binds, prints the address, serves until `shutdown`.
pub async fn run(args: &ServerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    args.validate();
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let server = Server::new(listener, ServerConfig::from(args));
    println!("server listening on {}", server.local_addr()?);
    server.run(shutdown).await;
    Ok(())
}
