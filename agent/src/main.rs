use std::io::IsTerminal;

use clap::FromArgMatches;
use pywats_agent::{
    app,
    cli::{self, Args, Command},
    hash_password,
};
use tracing_subscriber::EnvFilter;

fn main() {
    let args = Args::from_arg_matches(&cli::command().get_matches()).unwrap_or_else(|e| e.exit());
    if let Some(Command::HashPassword { cost }) = args.command {
        if let Err(e) = hash_password::run(cost) {
            eprintln!("pywats-agent hash-password: {e}");
            std::process::exit(e.exit_code());
        }
        return;
    }
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|e| {
        eprintln!("pywats-agent: invalid --log-level {:?}: {e}", args.log_level);
        std::process::exit(2);
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(e) = app::run(args) {
        eprintln!("pywats-agent: {e}");
        std::process::exit(e.exit_code());
    }
}
