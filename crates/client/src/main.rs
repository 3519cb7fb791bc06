//! `petchat`: chat as a customer or an agent from a terminal or a script, and
//! mint development tokens.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The petchat command-line client.
#[derive(Parser)]
#[command(name = "petchat", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Chat: a line-oriented chat, or with --json one JSON message per line both ways.
    Chat(cli::ChatArgs),
    /// Send one message and wait until it is stored (for scripts).
    Send(cli::SendArgs),
    /// Print a signed token (HS256) for a user.
    Token(cli::TokenArgs),
    /// Print the events of topics (and the user's notifications), one JSON
    /// envelope per line, resuming after every reconnect.
    Subscribe(cli::SubscribeArgs),
    /// Publish a topic event through the server API.
    Publish(cli::PublishArgs),
    /// Notify a user through the server API.
    Notify(cli::NotifyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("petchat: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Chat(args) => cli::chat(args).await,
            Command::Send(args) => cli::send(args).await,
            Command::Token(args) => cli::token(args),
            Command::Subscribe(args) => cli::subscribe(args).await,
            Command::Publish(args) => cli::publish(args).await,
            Command::Notify(args) => cli::notify(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("petchat: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
