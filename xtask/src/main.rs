//! `cargo xtask …`: the project's chores, starting with its generated files.

mod bench;
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
    /// Regenerate `schemas/` (JSON Schemas, asyncapi.yaml), the message
    /// reference in docs/protocol.md and the browser package's TypeScript
    /// types (crates/web/src/protocol.d.ts) from crates/protocol.
    Schemas {
        /// Write nothing; fail with a diff when a committed file is stale.
        #[arg(long)]
        check: bool,
    },
    /// Build the browser package and the pages into target/web.
    Web,
    /// Run the benchmark (petchat-bench, release builds) against petchat and
    /// the Node peer; write benches/results/ and the table in docs/benchmarks.md.
    /// Arguments after `--` go to petchat-bench (default: `all`).
    Bench {
        /// petchat-bench arguments, e.g. `-- --repeat 1 chat --pairs 50`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the browser package, then run the server in `--dev` mode with
    /// the pages: http://127.0.0.1:8080/ and /agent. Arguments after `--`
    /// go to petchat-server.
    Serve {
        /// More petchat-server flags, e.g. `-- --bind 127.0.0.1:9000`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = schemas::workspace_root();
    match cli.command {
        Command::Schemas { check: false } => schemas::write(&root),
        Command::Web => web::build(&root).map(|_| ()),
        Command::Bench { args } => bench::run(&root, &args),
        Command::Serve { args } => {
            let pages = web::build(&root)?;
            let status = std::process::Command::new("cargo")
                .current_dir(&root)
                .args(["run", "--quiet", "--locked", "--package", "petchat-server", "--", "--dev", "--web-dir"])
                .arg(pages)
                .args(args)
                .status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Command::Schemas { check: true } => {
            let report = schemas::check(&root)?;
            if report.is_empty() {
                println!("schemas/, docs/protocol.md and crates/web/src/protocol.d.ts are up to date");
                Ok(())
            } else {
                eprint!("{report}");
                std::process::exit(1);
            }
        }
    }
}
