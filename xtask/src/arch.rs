//! The CPUs the agent is built for, by Debian's and the OCI's names
//! (`--arch amd64|arm64`). Builds run on an x86_64 machine: arm64 is
//! cross-compiled with Debian's cross compiler.

use std::process::Command;

use crate::cmd::root;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// The CPU this xtask runs on.
    pub fn host() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::Amd64
        }
    }

    /// Debian's and the OCI's name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// The kernel's name (`uname -m`), which release archives carry.
    pub fn machine(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    /// Rust's target of the static (musl) agent.
    pub fn musl(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-linux-musl",
            Arch::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The C compiler for ring (rustls' crypto: C and assembly) and, across
    /// CPUs, the linker (rustc brings musl's own start files and libc), with
    /// the Debian packages that make it work (the cross compiler finds no C
    /// headers without its libc's, which apt only recommends).
    pub fn c_compiler(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Arch::Amd64 => ("musl-gcc", &["musl-tools"]),
            Arch::Arm64 => ("aarch64-linux-gnu-gcc", &["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"]),
        }
    }

    /// `cargo`, in the workspace, set up to build for this CPU's musl target.
    pub fn cargo(self) -> Command {
        let mut c = Command::new("cargo");
        c.current_dir(root());
        let (cc, _) = self.c_compiler();
        let triple = self.musl().replace('-', "_");
        c.env(format!("CC_{triple}"), cc);
        if self != Arch::host() {
            c.env(format!("CARGO_TARGET_{}_LINKER", triple.to_uppercase()), cc);
        }
        c
    }
}
