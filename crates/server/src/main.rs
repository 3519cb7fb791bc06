//! `petchat-server`: runs the chat server, or mints a token (`petchat-server token …`).

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use petchat_protocol::{Role, UserId};
use petchat_server::{Config, Keys};

/// The petchat support-chat server.
#[derive(Parser)]
#[command(name = "petchat-server", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Print a signed token (HS256) for a user.
    Token(TokenArgs),
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The server's secret.
    #[arg(long, env = "PETCHAT_JWT_SECRET", hide_env_values = true)]
    secret: String,
    /// User id (`sub`).
    #[arg(long)]
    sub: String,
    /// Role.
    #[arg(long)]
    role: Role,
    /// Display name (default: the user id).
    #[arg(long)]
    name: Option<String>,
    /// Lifetime, e.g. `1h`, `30m`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: Duration,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let span: jiff::Span = s.parse().map_err(|e| format!("{e}"))?;
    let duration = span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()).map_err(|e| e.to_string())?;
    Duration::try_from(duration).map_err(|_| "the lifetime must be positive".into())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Token(args)) = cli.command {
        let sub = UserId::new(args.sub).context("--sub")?;
        let name = args.name.unwrap_or_else(|| sub.to_string());
        println!("{}", Keys::new(args.secret.as_bytes()).mint(&sub, args.role, &name, args.ttl));
        return Ok(());
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(serve(cli.config))
}

async fn serve(mut config: Config) -> Result<()> {
    petchat_server::init_logging(config.log_format);
    if config.jwt_secret.is_none() && config.dev {
        let secret: [u8; 32] = rand::random();
        config.jwt_secret = Some(secret.iter().map(|b| format!("{b:02x}")).collect());
    }
    // --dev without --api-keys: a random key, printed below (a configured key never is).
    let dev_key = (config.api_keys.is_empty() && config.dev).then(|| {
        let key: [u8; 16] = rand::random();
        format!("dev-{}", key.iter().map(|b| format!("{b:02x}")).collect::<String>())
    });
    config.api_keys.extend(dev_key.clone());
    let listener =
        tokio::net::TcpListener::bind(config.bind).await.with_context(|| format!("binding {}", config.bind))?;
    if config.dev {
        print_dev_tokens(&config, listener.local_addr()?, dev_key.as_deref());
    }
    petchat_server::run(listener, config, shutdown_signal()).await?;
    Ok(())
}

fn print_dev_tokens(config: &Config, addr: std::net::SocketAddr, api_key: Option<&str>) {
    let keys = Keys::new(config.jwt_secret.as_deref().unwrap_or_default().as_bytes());
    let day = Duration::from_secs(24 * 3600);
    let customer = keys.mint(&UserId::new("dev-customer").expect("valid id"), Role::Customer, "Casey (customer)", day);
    let agent = keys.mint(&UserId::new("dev-agent").expect("valid id"), Role::Agent, "Avery (agent)", day);
    println!("petchat --dev: random secret, any origin, tokens valid for 24 h");
    println!("  customer token: {customer}");
    println!("  agent token:    {agent}");
    println!("  connect:        ws://{addr}/v1/ws/chat?token=<token>  (subprotocol petchat.v1)");
    if config.web_dir.join("index.html").exists() {
        println!(
            "  pages:          http://{addr}/ (demo shop with the widget) and http://{addr}/agent (agent console)"
        );
    } else {
        println!("  pages:          not built yet: run `cargo xtask web`, then open http://{addr}/");
    }
    if let Some(key) = api_key {
        println!("  api key:        {key}  (POST http://{addr}/v1/api/publish, /v1/api/notify; GET /v1/api/stats)");
    }
    println!(
        "  live events:    http://{addr}/v1/sse?topics=<topic,…>  (Bearer token, or ?ticket= from POST /v1/sse/tickets)"
    );
    println!("  contract:       http://{addr}/asyncapi.yaml and http://{addr}/openapi.json");
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
