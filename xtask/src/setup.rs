//! `cargo xtask setup`: installs, idempotently, what a fresh machine lacks for
//! building and testing. Each step checks first and says what it does.

use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _};

use crate::{
    arch::Arch,
    cmd::{self, output, root},
};

/// bpf-linker release the build is known to work with.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// What later steps need from setup.
pub struct Env {
    /// Python of the test virtualenv.
    pub python: PathBuf,
}

pub fn setup() -> anyhow::Result<Env> {
    let start = Instant::now();
    nightly_rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    let python = venv()?;
    println!("xtask: setup ready ({:.1}s)", start.elapsed().as_secs_f64());
    Ok(Env { python })
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    let sysroot = output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]));
    match sysroot {
        Some(s) => Ok(PathBuf::from(s.trim())),
        None => {
            println!("xtask: installing the nightly toolchain (the eBPF programs build with it)");
            cmd::run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
            output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
                .map(|s| PathBuf::from(s.trim()))
                .context("nightly rustc does not run after installing it")
        }
    }
}

/// `-Z build-std=core` needs the standard library's source.
fn nightly_rust_src() -> anyhow::Result<()> {
    let sysroot = nightly_sysroot()?;
    if sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml").is_file() {
        return Ok(());
    }
    println!("xtask: adding rust-src to the nightly toolchain");
    cmd::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// The shared libLLVM that the nightly toolchain ships (`libLLVM.so.22.1-rust-…`).
fn toolchain_llvm(sysroot: &Path) -> anyhow::Result<PathBuf> {
    let lib = sysroot.join("lib");
    let mut found = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so.")))
        .collect::<Vec<_>>();
    found.sort();
    found.pop().with_context(|| format!("no libLLVM.so.* in {}: the toolchain has no shared LLVM", lib.display()))
}

pub fn data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
        .join("pywats-agent")
}

fn bpf_linker_ok() -> bool {
    output(Command::new("bpf-linker").arg("--version")).is_some_and(|v| v.contains(BPF_LINKER_VERSION))
}

/// bpf-linker has no prebuilt download here: build it against the toolchain's
/// own libLLVM, through a prefix directory whose `lib/libLLVM.so` points at it.
fn bpf_linker() -> anyhow::Result<()> {
    if bpf_linker_ok() {
        return Ok(());
    }
    let sysroot = nightly_sysroot()?;
    let llvm = toolchain_llvm(&sysroot)?;
    let name = llvm.file_name().and_then(|n| n.to_str()).context("libLLVM file name")?.to_owned();
    let major = name
        .strip_prefix("libLLVM.so.")
        .and_then(|v| v.split('.').next())
        .filter(|m| m.chars().all(|c| c.is_ascii_digit()))
        .with_context(|| format!("cannot read the LLVM version from {name}"))?;
    let prefix = data_dir().join(format!("llvm-{}", name.trim_start_matches("libLLVM.so.")));
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    for link in [lib.join("libLLVM.so"), lib.join(&name)] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    println!("xtask: building bpf-linker {BPF_LINKER_VERSION} against {} (about two minutes)", llvm.display());
    cmd::run(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--locked", "--force", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", &format!("llvm-{major}")])
            .env("LLVM_PREFIX", &prefix),
    )?;
    if !bpf_linker_ok() {
        bail!("bpf-linker was installed but `bpf-linker --version` fails: is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

/// Debian packages the tests use, by the command each provides: `openssl`
/// makes the TLS tests' certificates; `buildah` builds and runs the container
/// image (`cargo xtask image`, the image test) without a daemon; `musl-gcc`
/// compiles ring (rustls' crypto) for the image's static musl build;
/// `prometheus` brings `promtool`, which checks the shipped scrape config and
/// alert rules, runs their unit tests and lints the agent's exposition, and
/// the server the example's and the access tests scrape the agent with.
const DEBIAN_PACKAGES: [(&str, &str); 4] =
    [("openssl", "openssl"), ("buildah", "buildah"), ("musl-gcc", "musl-tools"), ("promtool", "prometheus")];

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> =
        DEBIAN_PACKAGES.iter().filter(|(command, _)| !on_path(command)).map(|(_, package)| *package).collect();
    apt_install(&missing)?;
    if missing.contains(&"prometheus") {
        stop_prometheus_service();
    }
    Ok(())
}

/// What building the static agent for `arch` needs beyond [`setup`]: the
/// stable toolchain's musl target and the C compiler (and, across CPUs,
/// linker) of `arch`. Apart from `setup`, so that the default path stays as
/// fast as it was (`cargo xtask build --arch`, `image`, `vm --arch arm64`).
pub fn cross(arch: Arch) -> anyhow::Result<()> {
    let target = arch.musl();
    let targets = output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if !targets.lines().any(|l| l.trim() == target) {
        println!("xtask: adding the {target} target (the static agent for {})", arch.name());
        cmd::run(Command::new("rustup").args(["target", "add", target]))?;
    }
    let (_, packages) = arch.c_compiler();
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    apt_install(&missing)?;
    Ok(())
}

fn on_path(command: &str) -> bool {
    output(Command::new("sh").args(["-c", &format!("command -v {command}")])).is_some()
}

/// Installs Debian packages (none: nothing to do).
pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    println!("xtask: installing Debian packages: {}", packages.join(" "));
    cmd::run(Command::new("apt-get").arg("update"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Whether a Debian package is installed.
pub fn installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package])).is_some_and(|s| s.ends_with(" installed"))
}

/// The `prometheus` package starts a Prometheus server on :9090 (the agent's
/// default port too) and enables it at boot: the tests want only `promtool`,
/// and start their own servers on ports they choose. Stopped and disabled,
/// under systemd or a SysV init.
fn stop_prometheus_service() {
    let ran = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    let stopped = if Path::new("/run/systemd/system").is_dir() {
        ran(Command::new("systemctl").args(["disable", "--now", "prometheus.service"]))
    } else if Path::new("/etc/init.d/prometheus").is_file() {
        // A service that did not start (no init running it) fails to stop: fine.
        let _ = ran(Command::new("/etc/init.d/prometheus").arg("stop"));
        ran(Command::new("update-rc.d").args(["prometheus", "disable"]))
    } else {
        true
    };
    if stopped {
        println!(
            "xtask: stopped and disabled the prometheus service the package started (the tests use promtool only)"
        );
    } else {
        println!("xtask: warning: could not stop the prometheus service; it may hold port 9090");
    }
}

/// The Python virtualenv of the tests, rebuilt when its requirements change.
fn venv() -> anyhow::Result<PathBuf> {
    let root = root();
    let dir = root.join(".venv");
    let python = dir.join("bin/python");
    let requirements = root.join("tests/py/requirements.txt");
    let wanted = fs::read_to_string(&requirements).with_context(|| format!("reading {}", requirements.display()))?;
    let stamp = dir.join(".requirements");
    if python.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(python);
    }
    if !python.is_file() {
        println!("xtask: creating the test virtualenv in {}", dir.display());
        cmd::run(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
    }
    println!("xtask: installing the test virtualenv's packages");
    cmd::run(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements),
    )?;
    fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}

/// PATH with cargo's bin directory first, so bpf-linker is found by nested builds.
pub fn path_with_cargo_bin() -> OsString {
    let mut paths: Vec<PathBuf> = std::env::var_os("CARGO_HOME")
        .map(|h| PathBuf::from(h).join("bin"))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin")))
        .into_iter()
        .collect();
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).unwrap_or_default()
}
