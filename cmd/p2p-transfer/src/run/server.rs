//! `p2p-transfer server`.

use anyhow::Context;
use p2p_central_server::{Server, ServerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::ServerArgs;
use crate::discovery;

/// Binds, prints the address, serves until `shutdown`.
pub async fn run(args: &ServerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    args.validate();
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let server = Server::new(listener, ServerConfig::from(args));
    let addr = server.local_addr()?;
    println!("server listening on {addr}");
    let advertisement = discovery::advertise(args, addr).await;
    if let Some(ad) = &advertisement {
        println!("advertising over mDNS as {:?}", ad.instance_name());
    }
    server.run(shutdown).await;
    discovery::withdraw(advertisement).await;
    Ok(())
}
