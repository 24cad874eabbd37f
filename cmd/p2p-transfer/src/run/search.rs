//! `p2p-transfer search WORDS... [--server ADDR]... | --auto-discover [--server-name NAME]
//! [--dns-sd-domain DOMAIN]`: asks every index server given (or every one that answers over
//! mDNS), and every one published in DNS, at once, and merges what they list: one line per
//! file or folder, saying which indexes have it. An index that does not answer (or a source
//! that finds none) is reported and the others' results are shown; only when none answers is
//! it an error.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use p2p_discovery::FoundServer;
use p2p_peer::index::client::IndexClient;
use p2p_peer::index::merge::{self, MergedFile};
use p2p_protocol::{FileSummary, NodeId, printable};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::address::ServerAddr;
use crate::cli::{DEFAULT_SERVER, IndexArgs, SearchArgs};
use crate::discovery::Finder;
use crate::json::{self, Event};
use crate::tables::{Ids, print_files};
use crate::trust::IndexTrust;

/// Limit on the search request.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One index server to ask.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// Its mDNS instance name, when found that way.
    pub name: Option<String>,
    /// The node id it claims over mDNS (the handshake must prove it).
    pub claimed: Option<NodeId>,
}

impl Target {
    /// `"name" at addr`, or the address alone.
    fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("{name:?} at {}", self.addr),
            None => self.addr.to_string(),
        }
    }
}

/// What one index said.
struct Answer {
    files: Vec<FileSummary>,
    total: u64,
    node_id: Option<NodeId>,
}

/// Asks the indexes and prints the matching files.
pub async fn run(args: &SearchArgs) -> anyhow::Result<()> {
    let mut trust = IndexTrust::load(&args.identity, args.index.server_id)?;
    let tls = crate::run::id::client_tls(&args.identity)?;
    let (targets, unfound) = targets(&args.index, &trust, &tls, args.json).await?;
    let query = args.words.join(" ");
    let mut asking = JoinSet::new();
    for (i, target) in targets.iter().enumerate() {
        let client = IndexClient::new(target.addr, SEARCH_TIMEOUT, tls.clone())
            .expecting(trust.expect_for(target.addr, target.claimed));
        let query = query.clone();
        asking.spawn(async move {
            let result = client.search(&query).await;
            (i, result, client.server_node_id())
        });
    }
    let mut answers: Vec<Option<anyhow::Result<Answer>>> = std::iter::repeat_with(|| None)
        .take(targets.len())
        .collect();
    while let Some(joined) = asking.join_next().await {
        let (i, result, node_id) = joined.context("search task failed")?;
        answers[i] = Some(
            result
                .map(|(files, total)| Answer {
                    files,
                    total,
                    node_id,
                })
                .map_err(|e| trust.explain(e)),
        );
    }
    let answers: Vec<anyhow::Result<Answer>> = answers
        .into_iter()
        .map(|a| a.expect("every search task reports its index"))
        .collect();
    for (target, answer) in targets.iter().zip(&answers) {
        if let Ok(Answer {
            node_id: Some(seen),
            ..
        }) = answer
        {
            // Remembered quietly: the output is the search's.
            trust.remember(target.addr, *seen)?;
        }
    }
    report(&targets, &unfound, answers, &query, args)
}

/// Prints the indexes asked and the merged matches; an error if no index answered.
fn report(
    targets: &[Target],
    unfound: &[Unfound],
    answers: Vec<anyhow::Result<Answer>>,
    query: &str,
    args: &SearchArgs,
) -> anyhow::Result<()> {
    // Several indexes (or ones found over mDNS or in DNS) are named; one given by address is
    // not.
    let asked = targets.len() + unfound.len();
    let name_indexes = asked > 1 || args.index.auto_discover || args.index.dns_sd.domain.is_some();
    let mut answered = Vec::new();
    // What failed (as the user named it), and why.
    let mut failures: Vec<(String, String)> = Vec::new();
    for Unfound { given, error } in unfound {
        let error = crate::errors::one_line(error);
        if args.json {
            json::emit(&Event::Index {
                address: given.clone(),
                name: None,
                node_id: None,
                matches: 0,
                total: 0,
                error: Some(error.clone()),
            });
        }
        failures.push((given.clone(), error));
    }
    for (i, (target, answer)) in targets.iter().zip(answers).enumerate() {
        match answer {
            Ok(answer) => {
                if args.json {
                    json::emit(&Event::Index {
                        address: target.addr.to_string(),
                        name: target.name.clone(),
                        node_id: answer.node_id.map(|id| id.to_string()),
                        matches: answer.files.len() as u64,
                        total: answer.total,
                        error: None,
                    });
                } else if name_indexes {
                    println!(
                        "index {}: {} of {} matches",
                        target.label(),
                        answer.files.len(),
                        answer.total
                    );
                }
                answered.push((i, answer));
            }
            Err(err) => {
                let err = crate::errors::one_line(&err);
                if args.json {
                    json::emit(&Event::Index {
                        address: target.addr.to_string(),
                        name: target.name.clone(),
                        node_id: None,
                        matches: 0,
                        total: 0,
                        error: Some(err.clone()),
                    });
                }
                failures.push((target.label(), err));
            }
        }
    }
    if answered.is_empty() {
        let [(_, err)] = failures.as_slice() else {
            let each: Vec<String> = failures
                .iter()
                .map(|(label, err)| format!("{label}: {err}"))
                .collect();
            anyhow::bail!(
                "cannot search for {query:?}: no index server answered ({})",
                each.join("; ")
            );
        };
        anyhow::bail!("cannot search for {query:?}: {err}");
    }
    for (label, err) in &failures {
        note!(
            "warning: index server {label} did not answer, so its files are not listed: {}",
            printable(err)
        );
    }
    let cut: Vec<(usize, u64)> = answered
        .iter()
        .map(|(i, a)| (*i, a.total.saturating_sub(a.files.len() as u64)))
        .collect();
    let single = asked == 1;
    let merged = merge::files(answered.into_iter().map(|(i, a)| (i, a.files)));
    if args.json {
        for m in merged {
            json::emit(&match_event(m, targets));
        }
        return Ok(());
    }
    let none = format!("no file on the network matches {query:?}");
    if single {
        let files: Vec<FileSummary> = merged.into_iter().map(|m| m.summary).collect();
        let total = cut[0].1 + files.len() as u64;
        print_files(&files, total, Ids::Full, &none);
        return Ok(());
    }
    crate::tables::print_merged(&merged, |i| targets[i].addr.to_string(), &none);
    for (i, more) in cut {
        if more > 0 {
            println!("... and {more} more at {}", targets[i].label());
        }
    }
    Ok(())
}

/// The `match` event of a merged line.
fn match_event(m: MergedFile, targets: &[Target]) -> Event {
    let f = m.summary;
    Event::Match {
        kind: if f.files.is_some() {
            json::Kind::Folder
        } else {
            json::Kind::File
        },
        id: f.file_id.to_string(),
        name: f.name,
        path: f.path,
        size: f.size,
        hosts: u64::from(f.hosts),
        files: f.files.unwrap_or(1),
        indexes: m
            .indexes
            .iter()
            .map(|&i| targets[i].addr.to_string())
            .collect(),
    }
}

/// A `--server` whose name could not be looked up: reported like an index that does not
/// answer, unless no index is left to ask.
pub struct Unfound {
    /// As given (`name:port`), or the name a discovery source asked
    /// (`_p2p-transfer._tcp.DOMAIN`).
    pub given: String,
    pub error: anyhow::Error,
}

/// The indexes to ask: every `--server` (the default without one, unless `--dns-sd-domain`
/// is given), or every one that answers over mDNS (only the one named with `--server-name`,
/// or proving `--server-id`, if given), and every one published under `--dns-sd-domain`;
/// and the `--server` names or the sources that found nothing, when others found some.
pub async fn targets(
    args: &IndexArgs,
    trust: &IndexTrust,
    tls: &p2p_transport::Tls,
    json: bool,
) -> anyhow::Result<(Vec<Target>, Vec<Unfound>)> {
    let Some(domain) = &args.dns_sd.domain else {
        return given_targets(args, trust, tls, json).await;
    };
    let (given, published) = tokio::join!(
        async {
            if args.auto_discover || !args.servers.is_empty() {
                Some(given_targets(args, trust, tls, json).await)
            } else {
                None
            }
        },
        crate::dns_sd::find(&args.dns_sd)
    );
    let (mut targets, mut unfound) = match given {
        None => (Vec::new(), Vec::new()),
        Some(Ok(found)) => found,
        Some(Err(error)) => {
            // A source that found nothing is named by what it asked: the mDNS service, or
            // (below) the DNS-SD name.
            let given = if args.auto_discover {
                p2p_discovery::SERVICE_TYPE.trim_end_matches('.').to_owned()
            } else {
                args.servers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            (Vec::new(), vec![Unfound { given, error }])
        }
    };
    match published {
        Ok(published) => {
            for candidate in published {
                if !targets.iter().any(|t| t.addr == candidate.addr) {
                    targets.push(Target {
                        addr: candidate.addr,
                        name: Some(candidate.instance),
                        claimed: candidate.claimed,
                    });
                }
            }
        }
        Err(error) => unfound.push(Unfound {
            given: p2p_discovery::unicast::service_name(domain)
                .map_or_else(|_| domain.clone(), |n| n.to_string())
                .trim_end_matches('.')
                .to_owned(),
            error,
        }),
    }
    if targets.is_empty() {
        if unfound.len() == 1 {
            return Err(unfound.remove(0).error);
        }
        let each: Vec<String> = unfound
            .iter()
            .map(|u| format!("{}: {}", u.given, crate::errors::one_line(&u.error)))
            .collect();
        anyhow::bail!("cannot find any index server ({})", each.join("; "));
    }
    Ok((targets, unfound))
}

/// [`targets`] of `--server` or `--auto-discover`.
async fn given_targets(
    args: &IndexArgs,
    trust: &IndexTrust,
    tls: &p2p_transport::Tls,
    json: bool,
) -> anyhow::Result<(Vec<Target>, Vec<Unfound>)> {
    if !args.auto_discover {
        if args.server_id.is_some() && args.servers.len() > 1 {
            anyhow::bail!(
                "--server-id names the id of one index server; give one --server with it"
            );
        }
        let mut servers = Vec::with_capacity(args.servers.len());
        let mut unfound = Vec::new();
        let resolved = ServerAddr::resolve_all(&args.servers).await;
        for (server, result) in args.servers.iter().zip(resolved) {
            match result {
                Ok(addr) => servers.push(addr),
                Err(error) => unfound.push(Unfound {
                    given: server.to_string(),
                    error,
                }),
            }
        }
        if servers.is_empty() && !unfound.is_empty() {
            if unfound.len() == 1 {
                return Err(unfound.remove(0).error);
            }
            let each: Vec<String> = unfound
                .iter()
                .map(|u| crate::errors::one_line(&u.error))
                .collect();
            anyhow::bail!("cannot find any index server given ({})", each.join("; "));
        }
        if servers.is_empty() {
            servers.push(DEFAULT_SERVER);
        }
        let mut unique: Vec<SocketAddr> = Vec::new();
        for addr in servers {
            if !unique.contains(&addr) {
                unique.push(addr);
            }
        }
        let targets = unique
            .into_iter()
            .map(|addr| Target {
                addr,
                name: None,
                claimed: None,
            })
            .collect();
        return Ok((targets, unfound));
    }
    let preference = trust.preference();
    let mut finder = Finder::with(args.discover_timeout, preference.clone(), tls.clone());
    if json {
        finder = finder.announcing_on_stderr();
    }
    let found = finder.browse_all().await?;
    let chosen: Vec<FoundServer> = if args.server_name.is_some() || args.server_id.is_some() {
        let prefer = |s: &FoundServer| preference.prefers(s);
        let (chosen, others) = p2p_discovery::choose(
            found,
            args.server_name.as_deref(),
            prefer,
            args.discover_timeout,
        )?;
        preference.check_choice(&chosen, &others)?;
        vec![chosen]
    } else {
        found
    };
    let targets = chosen
        .into_iter()
        .map(|s| Target {
            addr: s.addr(),
            claimed: s.server_id.as_deref().and_then(|id| id.parse().ok()),
            name: Some(s.instance),
        })
        .collect();
    Ok((targets, Vec::new()))
}

/// The one index `send` and `receive` use: what `--auto-discover` finds (with the node id it
/// claims), or the first index published under `--dns-sd-domain` that answers (with the id
/// it proved), or the `--server` given; `None` when none is given (the config file's
/// `settle` left at most one of them). A signal (`shutdown`) stops the search or the name
/// lookup.
pub async fn one_index(
    args: &IndexArgs,
    trust: &IndexTrust,
    tls: &p2p_transport::Tls,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<(SocketAddr, Option<p2p_protocol::NodeId>)>> {
    tokio::select! {
        found = find_one_index(args, trust, tls) => found,
        () = shutdown.cancelled() => anyhow::bail!("interrupted while looking for the index server"),
    }
}

async fn find_one_index(
    args: &IndexArgs,
    trust: &IndexTrust,
    tls: &p2p_transport::Tls,
) -> anyhow::Result<Option<(SocketAddr, Option<p2p_protocol::NodeId>)>> {
    if args.auto_discover {
        // Which one answered is said on stderr, as for `peer --auto-discover`.
        let found = Finder::with(args.discover_timeout, trust.preference(), tls.clone())
            .wanting(args.server_name.clone())
            .announcing_on_stderr()
            .find_claimed(true)
            .await?;
        return Ok(Some(found));
    }
    if args.dns_sd.domain.is_some() {
        let published = crate::dns_sd::find(&args.dns_sd).await?;
        let (chosen, proved) =
            crate::dns_sd::first_answering(published, tls, |c| trust.expect_for(c.addr, c.claimed))
                .await?;
        // On stderr, as for --auto-discover: stdout is the command's (a ticket, events).
        note!("using index server {} at {}", chosen.label, chosen.addr);
        return Ok(Some((chosen.addr, proved)));
    }
    match args.servers.as_slice() {
        [] => Ok(None),
        [server] => Ok(Some((server.resolve().await?, None))),
        _ => anyhow::bail!("give one --server here (only `search` and `peer` use several)"),
    }
}
