//! `p2p-transfer man DIR` (hidden): one man page per command, generated from the same clap
//! definitions as the parser (`crate::cli`): `p2p-transfer.1`, `p2p-transfer-send.1`,
//! `p2p-transfer-manifest-create.1`, ... `make man` and `make install` run it; nothing
//! generated is committed, so the pages can't fall behind the flags.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, ManArgs};

/// Writes the pages into `args.out`, creating it if needed, and prints each page's path.
pub fn run(args: &ManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    // Built first, so each subcommand knows its full name (`p2p-transfer manifest create`);
    // no `help` subcommand: it has nothing a page would say.
    let mut cli = Cli::command().disable_help_subcommand(true);
    cli.build();
    write_pages(&cli, &args.out)
}

/// The page of `command`, then those of its visible subcommands, depth first.
fn write_pages(command: &clap::Command, out: &Path) -> anyhow::Result<()> {
    // Every page says which release it describes (clap only knows the top command's version).
    let page = clap_mangen::Man::new(command.clone())
        .source(format!("p2p-transfer {}", env!("CARGO_PKG_VERSION")))
        .generate_to(out)
        .with_context(|| format!("cannot write a man page into {}", out.display()))?;
    println!("{}", page.display());
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(sub, out)?;
    }
    Ok(())
}
