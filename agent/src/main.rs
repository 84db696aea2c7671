use std::io::IsTerminal;

use clap::Parser;
use pywats_agent::{app, cli::Args};
use tracing_subscriber::EnvFilter;

fn main() {
    let args = Args::parse();
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
