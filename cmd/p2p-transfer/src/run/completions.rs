//! `p2p-transfer completions SHELL`: a completion script generated from the same clap
//! definitions as the parser itself (`crate::cli`), so it can't list a flag that doesn't exist.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};

/// The name the scripts complete: the installed binary's.
pub const BIN_NAME: &str = "p2p-transfer";

/// Prints the script for `args.shell` on stdout.
pub fn run(args: &CompletionsArgs) -> anyhow::Result<()> {
    // Generated into memory first: clap_complete panics when its writer fails, and stdout may
    // be a closed pipe (`p2p-transfer completions bash | head`).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), BIN_NAME, &mut script);
    print!("{}", String::from_utf8_lossy(&script));
    Ok(())
}
