//! Runs inputs through one target without AFL, to read a crash's panic message
//! and backtrace: `cargo run --example replay -- session FILE...` (with `SHOW=1`,
//! the input as the target reads it first).

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_default();
    let target: fn(&[u8]) = match name.as_str() {
        "client_decode" => petchat_fuzz::client_decode,
        "server_decode" => petchat_fuzz::server_decode,
        "session" => petchat_fuzz::session,
        _ => {
            eprintln!("usage: replay client_decode|server_decode|session FILE...");
            return ExitCode::from(2);
        }
    };
    for path in args {
        match std::fs::read(&path) {
            Ok(data) => {
                eprintln!("{path}:");
                if std::env::var_os("SHOW").is_some() {
                    eprintln!("{}", petchat_fuzz::describe(&name, &data));
                }
                target(&data);
            }
            Err(e) => {
                eprintln!("{path}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
