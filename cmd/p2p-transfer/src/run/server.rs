//! `p2p-transfer server`.

use anyhow::Context;
use p2p_central_server::{Server, ServerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::ServerArgs;
use crate::discovery;
use crate::run;
use crate::shell::{self, server::ServerShell};

/// Binds, prints the address, advertises, serves until `shutdown` (or the shell's `exit`).
pub async fn run(args: &ServerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    args.validate();
    let (identity, tls) = run::id::load_tls(&args.identity, p2p_identity::Role::Server)?;
    let web = run::web::bind_server(args).await?;
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let config = ServerConfig {
        allow_peers: crate::allow::load(args.allow_peers.as_deref(), &shutdown)?,
        ..ServerConfig::from(args)
    };
    let server = Server::new(listener, config, tls);
    let addr = server.local_addr()?;
    // Before the address: scripts (and tests) read up to "listening on" and may stop reading.
    println!("server node id {}", identity.node_id());
    if let Some(web) = &web {
        web.announce();
    }
    let reach = crate::reach::reach(addr);
    for line in crate::reach::server_lines(&reach, addr, &identity.node_id().to_string()) {
        println!("{line}");
    }
    println!("server listening on {addr}");
    let advertisement = discovery::advertise(args, addr, identity.node_id()).await;
    if let Some(ad) = &advertisement {
        println!("advertising over mDNS as {:?}", ad.instance_name());
    }
    let handle = server.handle()?;
    let mdns_name = advertisement.as_ref().map(|a| a.instance_name().to_owned());
    let web =
        web.map(|web| web.serve_server(handle.clone(), identity.node_id(), mdns_name, &shutdown));
    let serving = tokio::spawn(server.run(shutdown.clone()));
    if args.interactive {
        let shell = ServerShell {
            server: handle,
            node_id: identity.node_id(),
            mdns: advertisement.as_ref().map(|a| a.instance_name().to_owned()),
        };
        let done = shell::spawn(&shell::server::SPEC, None, move |command| {
            shell.handle(command)
        });
        tokio::select! {
            result = done => result??,
            _ = shutdown.cancelled() => {}
        }
        shutdown.cancel();
    }
    serving.await.context("server task failed")?;
    run::web::stop(web).await;
    discovery::withdraw(advertisement).await;
    Ok(())
}
