//! `p2p-transfer doctor`: runs the checks of [`crate::doctor`] in order (local state,
//! interfaces, mDNS, the index, reachability), prints them, and fails if one is a problem.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use p2p_identity::{Identity, KnownIndexes, Role};
use p2p_protocol::NodeId;
use p2p_transport::Tls;

use crate::cli::{DEFAULT_SERVER, DoctorArgs};
use crate::config::{Origin, Settings};
use crate::doctor::index::{self, Reached};
use crate::doctor::{Check, Report, Status, dns_sd, interfaces, local, mdns, plural, reach};

/// Indexes this machine met before that are tried when neither `--server` nor mDNS gives
/// one, besides the default.
const MAX_KNOWN_TRIED: usize = 8;

/// Runs every check, prints them, and fails if any found a problem. `settings` says where
/// each value came from (the index given in the config file is named so).
pub async fn run(args: &DoctorArgs, settings: &Settings) -> anyhow::Result<()> {
    let mut report = Report::default();

    report.add(local::output_folder(&args.out));
    let identity_dir = crate::run::id::dir(&args.identity).ok();
    match &identity_dir {
        Some(dir) => local::identity(dir).into_iter().for_each(|c| report.add(c)),
        None => report.add(
            Check::new(
                "identity",
                "",
                Status::Problem,
                "no folder for this node's identity",
            )
            .cause("there is no home folder to keep it in")
            .fix("give --identity-dir DIR or set P2P_IDENTITY_DIR"),
        ),
    }
    local::partial_files(&args.out)
        .into_iter()
        .for_each(|c| report.add(c));

    let interfaces = interfaces::list();
    interfaces::checks(&interfaces)
        .into_iter()
        .for_each(|c| report.add(c));

    let heard = if args.no_mdns {
        report.add(Check::ok("mdns", "", "not queried (--no-mdns)"));
        None
    } else {
        let heard = mdns::query(&interfaces, &args.mdns_interfaces, args.discover_timeout).await;
        mdns::checks(&heard, args.discover_timeout)
            .into_iter()
            .for_each(|c| report.add(c));
        Some(heard)
    };
    let found = heard.as_deref().map(mdns::servers).unwrap_or_default();
    let published = match &args.dns_sd.domain {
        None => Vec::new(),
        Some(domain) => {
            let result = crate::dns_sd::find(&args.dns_sd).await;
            report.add(dns_sd::check(domain, &result));
            result.unwrap_or_default()
        }
    };

    let tls = DoctorTls::new(identity_dir.as_deref())?;
    let known = identity_dir
        .as_deref()
        .and_then(|dir| KnownIndexes::load(dir).ok());
    let expect = |addr: SocketAddr| {
        args.server_id
            .or_else(|| known.as_ref().and_then(|k| k.get(addr)))
    };
    let mut reached: Option<Reached> = None;
    let mut keep = |check: Check, answered: Option<Reached>, report: &mut Report| {
        let check = match &answered {
            Some(r) => check.command(peer_command(r.addr, r.node_id)),
            None => check,
        };
        report.add(check);
        if reached.is_none() {
            reached = answered;
        }
    };
    if let Some(server) = &args.server {
        match server.resolve().await {
            Ok(addr) => {
                let (check, answered) =
                    index::check(&tls.tls, addr, &given(settings), expect(addr)).await;
                keep(check, answered, &mut report);
            }
            Err(err) => report.add(
                Check::new(
                    "index",
                    server.to_string(),
                    Status::Problem,
                    format!("{err:#}"),
                )
                .fix("check the name, or give the index server's IP address"),
            ),
        }
    }
    for candidate in &published {
        let addr = candidate.addr;
        let (check, answered) = index::check(
            &tls.tls,
            addr,
            &candidate.label,
            expect(addr).or(candidate.claimed),
        )
        .await;
        keep(check, answered, &mut report);
    }
    // Without --server: what answered over mDNS, or else the default and the known ones.
    if args.server.is_none() && !found.is_empty() {
        for server in &found {
            let addr = server.addr();
            let claimed = server.server_id.as_deref().and_then(|id| id.parse().ok());
            let what = format!("found over mDNS as {:?}", server.instance);
            let (check, answered) =
                index::check(&tls.tls, addr, &what, expect(addr).or(claimed)).await;
            keep(check, answered, &mut report);
        }
    } else if args.server.is_none() && published.is_empty() {
        let mut candidates = vec![(DEFAULT_SERVER, "the default".to_owned())];
        if let Some(known) = &known {
            let mut met: Vec<SocketAddr> = known.entries().map(|(addr, _)| addr).collect();
            met.retain(|a| *a != DEFAULT_SERVER);
            met.truncate(MAX_KNOWN_TRIED);
            candidates.extend(
                met.into_iter()
                    .map(|a| (a, "met before by this machine".to_owned())),
            );
        }
        let mut tried = Vec::new();
        let mut any = false;
        for (addr, what) in candidates {
            let (check, answered) = index::check(&tls.tls, addr, &what, expect(addr)).await;
            if answered.is_some() {
                any = true;
                keep(check, answered, &mut report);
            } else {
                tried.push(format!("{addr} ({what})"));
            }
        }
        if !any {
            let how = if args.no_mdns {
                "mDNS was not queried"
            } else {
                "none answered over mDNS"
            };
            report.add(
                Check::new(
                    "index",
                    "",
                    Status::Problem,
                    format!("no index server found: {how}, and none answers at {}", tried.join(", ")),
                )
                .cause("no index server is running, or it is elsewhere and mDNS can't find it")
                .fix("start one with `p2p-transfer server`, or ask its operator for its address and run `p2p-transfer doctor --server ADDR`; `send` and `receive` need no index at all"),
            );
        }
    }

    if let Some(heard) = &heard
        && found.is_empty()
    {
        let unusable: Vec<String> = interfaces
            .iter()
            .filter(|i| i.mdns_uses() && !i.can_query())
            .map(|i| i.name.clone())
            .collect();
        let command = reached.as_ref().map(|r| peer_command(r.addr, r.node_id));
        let given_works = args.server.is_some() && reached.is_some();
        report.add(mdns::nothing_heard(heard, &unusable, command, given_works));
    }

    match reached {
        Some(reached) => reach::check(
            reached,
            args.addr,
            args.advertise_addr,
            &tls.tls,
            &interfaces,
        )
        .await
        .into_iter()
        .for_each(|c| report.add(c)),
        None => report.add(
            Check::new(
                "reachability",
                args.addr.to_string(),
                Status::Warning,
                "not checked: it needs an index server to connect back",
            )
            .fix("fix the index server first (above)"),
        ),
    }

    report.print(args.json);
    let (problems, warnings) = (report.count(Status::Problem), report.count(Status::Warning));
    if !args.json {
        println!(
            "doctor: {}, {}",
            plural(problems, "problem"),
            plural(warnings, "warning")
        );
    }
    if problems > 0 {
        anyhow::bail!("doctor found {} (see above)", plural(problems, "problem"));
    }
    Ok(())
}

/// Where the index checked was given: `given with --server`, `given by P2P_SERVER`, `given in
/// PATH:LINE` (the config file).
fn given(settings: &Settings) -> String {
    match settings.get("server").map(|s| &s.origin) {
        Some(Origin::Env(var)) => format!("given by {var}"),
        Some(Origin::File { path, line }) => format!("given in {}:{line}", path.display()),
        _ => "given with --server".to_owned(),
    }
}

/// The command that runs a peer with the index at `addr`, pinned to `node_id`.
fn peer_command(addr: SocketAddr, node_id: NodeId) -> String {
    format!("p2p-transfer peer --server {addr} --server-id {node_id}")
}

/// The TLS set-up doctor connects with: this machine's peer identity when it loads, or else a
/// throwaway one (doctor creates no identity, and a broken key is reported, not fatal).
struct DoctorTls {
    tls: Tls,
    /// The throwaway identity's folder, removed on drop.
    throwaway: Option<PathBuf>,
}

impl DoctorTls {
    fn new(identity_dir: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(dir) = identity_dir
            && let Ok(identity) = Identity::load(&dir.join("peer.key"))
        {
            return Ok(Self {
                tls: Tls::new(&identity)?,
                throwaway: None,
            });
        }
        let dir = private_temp_dir()?;
        let (identity, _) = Identity::load_or_create(&dir, Role::Peer)?;
        Ok(Self {
            tls: Tls::new(&identity)?,
            throwaway: Some(dir),
        })
    }
}

impl Drop for DoctorTls {
    fn drop(&mut self) {
        if let Some(dir) = &self.throwaway {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A folder under the temporary folder that this run made itself (mode 0700, never one that
/// was there already: another user could have planted a key in it).
fn private_temp_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut last = None;
    for attempt in 0..16u32 {
        let dir = base.join(format!(
            "p2p-transfer-doctor-{}-{nanos:x}-{attempt}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => last = Some(err),
            Err(err) => return Err(err.into()),
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no temporary folder"), Into::into))
}
