//! `cargo xtask dist`: what an operator installs without Rust, in
//! `target/dist/`, for each CPU (`amd64`/`x86_64`, `arm64`/`aarch64`):
//! `pywats-agent_<version>_<debian arch>.deb` and
//! `pywats-agent-<version>-<machine>-linux.tar.gz` (the same files, at the
//! same paths under one top directory, with their SHA256SUMS), and
//! `SHA256SUMS` of all. The binary is the static one of the container image:
//! it runs on any Linux of its CPU.
//!
//! `--install-test` then installs the `.deb` into a fresh Debian root made by
//! mmdebstrap from Debian's mirror and runs it there (tests/e2e/install.rs):
//! minutes, root and the network, so not part of `cargo xtask test`.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::{
    arch::Arch,
    build,
    cmd::{self, output, root},
    setup,
};

#[derive(clap::Args)]
pub struct DistArgs {
    /// Only this CPU's artifacts; default: every CPU's.
    #[arg(long, value_enum)]
    arch: Option<Arch>,
    /// Then install the .deb into a fresh Debian 12 root (mmdebstrap) and run the agent from it (root, network).
    #[arg(long)]
    install_test: bool,
}

/// What both artifacts hold: (file in the repository, path on the target
/// system, mode). The binary comes first, built, not from the repository.
const FILES: [(&str, &str, u32); 12] = [
    ("deploy/systemd/pywats-agent.service", "usr/lib/systemd/system/pywats-agent.service", 0o644),
    ("deploy/debian/pywats-agent.default", "etc/default/pywats-agent", 0o644),
    ("deploy/web-config.yml", "usr/share/pywats-agent/web-config.yml", 0o644),
    ("deploy/agent.toml", "usr/share/pywats-agent/agent.toml", 0o644),
    ("deploy/prometheus/scrape.yml", "usr/share/pywats-agent/prometheus/scrape.yml", 0o644),
    ("deploy/prometheus/scrape-kubernetes.yml", "usr/share/pywats-agent/prometheus/scrape-kubernetes.yml", 0o644),
    ("deploy/prometheus/alerts.yml", "usr/share/pywats-agent/prometheus/alerts.yml", 0o644),
    // A fleet: a station's agent-mode Prometheus, and the centre with its rules beside alerts.yml.
    ("deploy/prometheus/station.yml", "usr/share/pywats-agent/prometheus/station.yml", 0o644),
    ("deploy/prometheus/central.yml", "usr/share/pywats-agent/prometheus/central.yml", 0o644),
    ("deploy/prometheus/fleet.yml", "usr/share/pywats-agent/prometheus/fleet.yml", 0o644),
    ("deploy/grafana/pywats-agent.json", "usr/share/pywats-agent/grafana/pywats-agent.json", 0o644),
    ("deploy/debian/copyright", "usr/share/doc/pywats-agent/copyright", 0o644),
];
const BINARY: &str = "usr/bin/pywats-agent";
/// Files the package manager keeps when the admin changed them.
const CONFFILES: [&str; 1] = ["/etc/default/pywats-agent"];
const SCRIPTS: [&str; 3] = ["postinst", "prerm", "postrm"];

/// The artifacts, by the names the install test looks for.
fn deb_name(arch: Arch) -> String {
    format!("pywats-agent_{}_{}.deb", env!("CARGO_PKG_VERSION"), arch.name())
}

fn archive_dir(arch: Arch) -> String {
    format!("pywats-agent-{}-{}-linux", env!("CARGO_PKG_VERSION"), arch.machine())
}

pub fn dist(args: DistArgs) -> anyhow::Result<()> {
    let env = setup::setup()?;
    let out = root().join("target/dist");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    for arch in args.arch.map_or(Arch::ALL.to_vec(), |a| vec![a]) {
        artifacts(arch, &out)?;
    }
    cmd::run(Command::new("sh").args(["-c", "sha256sum *.deb *.tar.gz > SHA256SUMS"]).current_dir(&out))?;
    println!("xtask: built in {}:", out.display());
    print!("{}", fs::read_to_string(out.join("SHA256SUMS"))?);
    if !args.install_test {
        return Ok(());
    }
    if !out.join(deb_name(Arch::host())).exists() {
        bail!("the install test installs this CPU's package: build it (`--arch {}`)", Arch::host().name());
    }
    if !cmd::is_root() {
        bail!("the install test makes a Debian root and loads eBPF programs: run `sudo -E cargo xtask dist --install-test`");
    }
    cmd::run(
        Command::new("cargo")
            .current_dir(root())
            .args(["test", "--release", "--package", "pywats-agent-tests", "--test", "install", "--"])
            .args(["--ignored", "--nocapture", "--test-threads=1"])
            .env("PYWATS_AGENT_DIST", &out)
            .env("PYWATS_AGENT_PYTHON", &env.python),
    )
}

/// One CPU's .deb and archive in `out`.
fn artifacts(arch: Arch, out: &Path) -> anyhow::Result<()> {
    let binary = build::static_agent(arch)?;
    let deb_root = out.join("deb");
    let tar_root = out.join("tar").join(archive_dir(arch));
    for tree in [&deb_root, &tar_root] {
        stage(tree, &binary)?;
    }
    control(&deb_root, arch)?;
    cmd::run(
        Command::new("sh")
            .args(["-c", "find etc usr -type f | sort | xargs sha256sum > SHA256SUMS"])
            .current_dir(&tar_root),
    )?;
    // Files carry the commit's time, so that two builds of one commit are alike.
    let epoch = output(Command::new("git").args(["log", "-1", "--format=%ct"]).current_dir(root()))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "0".into());
    let deb = out.join(deb_name(arch));
    cmd::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&deb_root)
            .arg(&deb)
            .env("SOURCE_DATE_EPOCH", &epoch),
    )?;
    let archive = format!("{}.tar.gz", archive_dir(arch));
    cmd::run(
        Command::new("tar")
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner", &format!("--mtime=@{epoch}")])
            .args(["-czf", &archive, "-C", "tar", &archive_dir(arch)])
            .current_dir(out),
    )?;
    for tree in ["deb", "tar"] {
        fs::remove_dir_all(out.join(tree))?;
    }
    Ok(())
}

/// The files at their paths under `tree`.
fn stage(tree: &Path, binary: &Path) -> anyhow::Result<()> {
    let mut files = vec![(binary.to_path_buf(), BINARY, 0o755)];
    files.extend(FILES.iter().map(|&(from, to, mode)| (root().join(from), to, mode)));
    for (from, to, mode) in files {
        let dest = tree.join(to);
        fs::create_dir_all(dest.parent().expect("a path under the tree"))?;
        fs::copy(&from, &dest).with_context(|| format!("copying {}", from.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// DEBIAN/: control (deploy/debian/control with the version and size),
/// conffiles, the maintainer scripts, and dpkg's md5sums of the files.
fn control(tree: &Path, arch: Arch) -> anyhow::Result<()> {
    let kib = du_kib(tree)?;
    let debian = tree.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    let control = fs::read_to_string(root().join("deploy/debian/control"))?
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"))
        .replace("@ARCH@", arch.name())
        .replace("@INSTALLED_SIZE@", &kib.to_string());
    fs::write(debian.join("control"), control)?;
    fs::write(debian.join("conffiles"), CONFFILES.join("\n") + "\n")?;
    for script in SCRIPTS {
        let dest = debian.join(script);
        fs::copy(root().join("deploy/debian").join(script), &dest)?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))?;
    }
    cmd::run(
        Command::new("sh")
            .args(["-c", "find etc usr -type f | sort | xargs md5sum > DEBIAN/md5sums"])
            .current_dir(tree),
    )?;
    Ok(())
}

/// Installed-Size: as dpkg-gencontrol counts it, each file's size in KiB
/// rounded up, and one per directory.
fn du_kib(tree: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut dirs: Vec<PathBuf> = vec![tree.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
                total += 1;
            } else {
                total += entry.metadata()?.len().div_ceil(1024);
            }
        }
    }
    Ok(total)
}
