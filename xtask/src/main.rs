//! Developer commands: `cargo xtask setup | build | run | demo | test | fleet | vm | bench | image | dist`.

mod arch;
mod bench;
mod build;
mod cmd;
mod demo;
mod dist;
mod image;
mod run;
mod setup;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "pywats-agent developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need, the VMs too (idempotent; other commands run all but the VM part).
    Setup,
    /// Build the eBPF programs and the agent (release); `--arch amd64|arm64`: the static (musl) agent for that CPU.
    Build(BuildArgs),
    /// Build, then run the agent (as root) against a process.
    Run(run::RunArgs),
    /// The whole thing: a WATS-like server, the real pyWATS client in a loop, the agent, a live summary.
    Demo(demo::DemoArgs),
    /// Unit tests, then the root integration tests against the real kernel.
    Test(test::TestArgs),
    /// The fleet outage test (minutes): two stations remote-writing to a central Prometheus stopped for a minute.
    Fleet,
    /// What watching costs: the same workload with and without the agent, side by side.
    Bench(bench::BenchArgs),
    /// The end-to-end tests on the kernels stations run, each booted in a VM (`--kernel 6.1|6.1-rt|6.12|host|all`).
    Vm(vm::VmArgs),
    /// The container images localhost/pywats-agent:<version>-{amd64,arm64} (static agent on scratch, built with buildah) and the manifest list :<version> over them.
    Image(image::ImageArgs),
    /// The .deb and the tar.gz an operator installs (target/dist), `--install-test` to install it in a fresh Debian root.
    Dist(dist::DistArgs),
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The static (musl) agent for this CPU, cross-compiled when it is not this machine's.
    #[arg(long, value_enum)]
    arch: Option<arch::Arch>,
}

fn main() -> anyhow::Result<()> {
    // bpf-linker lives in cargo's bin directory; nested builds must find it.
    std::env::set_var("PATH", setup::path_with_cargo_bin());
    match Cli::parse().command {
        Command::Setup => {
            setup::setup()?;
            vm::setup(&vm::MATRIX.iter().collect::<Vec<_>>()).map(|_| ())
        }
        Command::Build(BuildArgs { arch: None }) => {
            let env = setup::setup()?;
            build::agent(&env).map(|_| ())
        }
        Command::Build(BuildArgs { arch: Some(arch) }) => {
            setup::setup()?;
            build::static_agent(arch).map(|_| ())
        }
        Command::Run(args) => run::run(args),
        Command::Test(args) => test::test(args),
        Command::Fleet => test::fleet(),
        Command::Demo(args) => demo::demo(args),
        Command::Bench(args) => bench::bench(args),
        Command::Vm(args) => vm::vm(args),
        Command::Image(args) => image::image(args),
        Command::Dist(args) => dist::dist(args),
    }
}
