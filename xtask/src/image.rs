//! `cargo xtask image`: the container image `localhost/pywats-agent:<version>`
//! (and `:latest`), built without a daemon and offline: a static musl build
//! of the agent, put on `scratch` by `buildah bud` (deploy/Containerfile).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::{
    cmd::{self, output, root},
    setup,
};

const MUSL: &str = "x86_64-unknown-linux-musl";
pub const NAME: &str = "localhost/pywats-agent";

/// buildah's flags for every command: no daemon, no overlay module, no runtime.
pub const STORAGE: [&str; 2] = ["--storage-driver", "vfs"];

pub fn image() -> anyhow::Result<()> {
    setup::setup()?;
    let tag = build()?;
    println!("xtask: built {tag} ({})", size(&tag).unwrap_or_else(|| "size unknown".into()));
    println!("xtask: run it with buildah (podman/docker as well): see docs/guides/operations.md, \"Container image\"");
    Ok(())
}

/// Builds the image and returns its versioned tag.
pub fn build() -> anyhow::Result<String> {
    if !cmd::is_root() {
        bail!("buildah with the vfs driver needs root here: run `sudo -E cargo xtask image`");
    }
    let context = context(&static_agent()?)?;
    let version = env!("CARGO_PKG_VERSION");
    let tag = format!("{NAME}:{version}");
    let revision = output(Command::new("git").args(["rev-parse", "HEAD"]).current_dir(root())).unwrap_or_default();
    let source =
        output(Command::new("git").args(["remote", "get-url", "origin"]).current_dir(root())).unwrap_or_default();
    let previous = image_id(&format!("{NAME}:latest"));
    cmd::run(
        Command::new("buildah")
            .args(STORAGE)
            .args(["bud", "--isolation", "chroot", "--layers=false", "--quiet"])
            .args(["--build-arg", &format!("VERSION={version}")])
            .args(["--build-arg", &format!("REVISION={}", revision.trim())])
            .args(["--build-arg", &format!("SOURCE={}", source.trim())])
            .args(["-t", &tag, "-t", &format!("{NAME}:latest"), "-f"])
            .arg(root().join("deploy/Containerfile"))
            .arg(&context),
    )?;
    // The image the tags left behind would pile up, build after build.
    if let Some(old) = previous.filter(|old| image_id(&tag).as_ref() != Some(old)) {
        let _ = output(Command::new("buildah").args(STORAGE).args(["rmi", &old]));
    }
    Ok(tag)
}

/// The agent as one static (musl) x86_64 binary, without symbols: what the
/// image and the packages of `cargo xtask dist` ship.
pub fn static_agent() -> anyhow::Result<PathBuf> {
    musl_target()?;
    cmd::run(
        Command::new("cargo")
            .args(["build", "--release", "--package", "pywats-agent", "--target", MUSL])
            // Symbols and debug info are two thirds of the file; the agent's
            // own package only (the eBPF object keeps its BTF).
            .args(["--config", "profile.release.package.pywats-agent.strip=\"symbols\""])
            // ring (rustls' crypto) has C and assembly: built with musl's gcc wrapper (musl-tools).
            .env("CC_x86_64_unknown_linux_musl", "musl-gcc")
            .current_dir(root()),
    )?;
    Ok(root().join("target").join(MUSL).join("release/pywats-agent"))
}

fn image_id(name: &str) -> Option<String> {
    output(Command::new("buildah").args(STORAGE).args(["images", "--noheading", "--format", "{{.ID}}", name]))
        .and_then(|s| s.lines().next().map(str::to_string))
}

/// The static binary needs the musl standard library of the stable toolchain.
fn musl_target() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if installed.lines().any(|l| l.trim() == MUSL) {
        return Ok(());
    }
    println!("xtask: adding the {MUSL} target (the image's static agent)");
    cmd::run(Command::new("rustup").args(["target", "add", MUSL]))
}

/// A build context with only what the Containerfile copies.
fn context(binary: &Path) -> anyhow::Result<PathBuf> {
    let dir = root().join("target/image/context");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::copy(binary, dir.join("pywats-agent")).with_context(|| format!("copying {}", binary.display()))?;
    fs::copy(root().join("deploy/agent.toml"), dir.join("agent.toml")).context("copying deploy/agent.toml")?;
    Ok(dir)
}

/// The image's size as buildah reports it (e.g. `7.5 MB`).
pub fn size(tag: &str) -> Option<String> {
    output(Command::new("buildah").args(STORAGE).args(["images", "--format", "{{.Size}}", tag]))
        .and_then(|s| s.lines().next().map(str::to_string))
}
