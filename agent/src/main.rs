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
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pywats-agent: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(app::run(args)) {
        eprintln!("pywats-agent: {e}");
        std::process::exit(e.exit_code());
    }
}
