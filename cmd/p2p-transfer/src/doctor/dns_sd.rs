//! The index servers published in the site's DNS (`--dns-sd-domain`): what the lookup found,
//! or why it found nothing, with how to check the records.

use crate::dns_sd::Candidate;

use super::{Check, Status};

const CHECK: &str = "dns_sd";

/// The line for the lookup under `domain` and what it gave.
pub fn check(domain: &str, result: &anyhow::Result<Vec<Candidate>>) -> Check {
    let name = p2p_discovery::unicast::service_name(domain)
        .map(|n| n.to_string().trim_end_matches('.').to_owned())
        .unwrap_or_else(|_| domain.to_owned());
    match result {
        Ok(published) => {
            let list: Vec<String> = published
                .iter()
                .map(|c| {
                    let id = c
                        .claimed
                        .map_or("no id".to_owned(), |id| format!("id {id}"));
                    format!("{:?} at {} ({id})", c.instance, c.addr)
                })
                .collect();
            Check::ok(
                CHECK,
                name,
                format!(
                    "{} published: {}",
                    super::plural(published.len(), "index server"),
                    list.join("; ")
                ),
            )
        }
        Err(err) => Check::new(
            CHECK,
            name.clone(),
            Status::Problem,
            crate::errors::one_line(err),
        )
        .cause(
            "the records are missing or misspelt, in another zone, or the DNS server asked is \
             down or unreachable",
        )
        .fix(format!(
            "publish PTR, SRV, TXT and A records as README \"Publishing the index in DNS\" \
             shows, and check them with `dig PTR {name}`"
        )),
    }
}
