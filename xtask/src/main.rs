//! `cargo xtask …`: the project's chores, starting with its generated files.

mod schemas;
mod web;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Project chores for the petchat workspace.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Regenerate `schemas/` (JSON Schemas, asyncapi.yaml) and the message
    /// reference in docs/protocol.md from crates/protocol.
    Schemas {
        /// Write nothing; fail with a diff when a committed file is stale.
        #[arg(long)]
        check: bool,
    },
    /// Build the browser package and the pages into target/web.
    Web,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = schemas::workspace_root();
    match cli.command {
        Command::Schemas { check: false } => schemas::write(&root),
        Command::Web => web::build(&root).map(|_| ()),
        Command::Schemas { check: true } => {
            let report = schemas::check(&root)?;
            if report.is_empty() {
                println!("schemas/ and docs/protocol.md are up to date");
                Ok(())
            } else {
                eprint!("{report}");
                std::process::exit(1);
            }
        }
    }
}
