//! `cargo xtask image`: the container images `localhost/pywats-agent:<version>-amd64`
//! and `-arm64`, and the manifest lists `localhost/pywats-agent:<version>` and
//! `:latest` over both, built without a daemon and offline: a static musl
//! build of the agent per CPU, put on `scratch` by `buildah bud`
//! (deploy/Containerfile).

use std::{
    fs,
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

pub const NAME: &str = "localhost/pywats-agent";

/// buildah's flags for every command: no daemon, no overlay module, no runtime.
pub const STORAGE: [&str; 2] = ["--storage-driver", "vfs"];

#[derive(clap::Args)]
pub struct ImageArgs {
    /// Only this CPU's image (no manifest list); default: every CPU and the list.
    #[arg(long, value_enum)]
    arch: Option<Arch>,
}

pub fn image(args: ImageArgs) -> anyhow::Result<()> {
    setup::setup()?;
    let arches = args.arch.map_or(Arch::ALL.to_vec(), |a| vec![a]);
    let mut tags = Vec::new();
    for arch in arches {
        let tag = build(arch)?;
        println!("xtask: built {tag} ({})", size(&tag).unwrap_or_else(|| "size unknown".into()));
        tags.push(tag);
    }
    if args.arch.is_none() {
        let version = env!("CARGO_PKG_VERSION");
        for list in [format!("{NAME}:{version}"), format!("{NAME}:latest")] {
            manifest_list(&list, &tags)?;
            println!("xtask: manifest list {list}: {}", tags.join(", "));
        }
    }
    println!("xtask: run it with buildah (podman/docker as well): see docs/guides/operations.md, \"Container image\"");
    Ok(())
}

/// Builds the image of `arch` and returns its tag (`NAME:<version>-<arch>`).
/// FROM scratch with nothing to run: no emulator is needed for arm64.
pub fn build(arch: Arch) -> anyhow::Result<String> {
    if !cmd::is_root() {
        bail!("buildah with the vfs driver needs root here: run `sudo -E cargo xtask image`");
    }
    let context = context(&build::static_agent(arch)?, arch)?;
    let version = env!("CARGO_PKG_VERSION");
    let tag = format!("{NAME}:{version}-{}", arch.name());
    let revision = output(Command::new("git").args(["rev-parse", "HEAD"]).current_dir(root())).unwrap_or_default();
    let source =
        output(Command::new("git").args(["remote", "get-url", "origin"]).current_dir(root())).unwrap_or_default();
    let previous = image_id(&tag);
    cmd::run(
        Command::new("buildah")
            .args(STORAGE)
            .args(["bud", "--isolation", "chroot", "--layers=false", "--quiet"])
            .args(["--platform", &format!("linux/{}", arch.name())])
            .args(["--build-arg", &format!("VERSION={version}")])
            .args(["--build-arg", &format!("REVISION={}", revision.trim())])
            .args(["--build-arg", &format!("SOURCE={}", source.trim())])
            .args(["-t", &tag, "-f"])
            .arg(root().join("deploy/Containerfile"))
            .arg(&context),
    )?;
    // The image the tag left behind would pile up, build after build.
    if let Some(old) = previous.filter(|old| image_id(&tag).as_ref() != Some(old)) {
        let _ = output(Command::new("buildah").args(STORAGE).args(["rmi", &old]));
    }
    Ok(tag)
}

/// (Re)creates the manifest list `list` of the images `tags`: a pull or a
/// run of `list` takes the image of the node's CPU.
fn manifest_list(list: &str, tags: &[String]) -> anyhow::Result<()> {
    // A list of an earlier build points at images that may be gone; builds
    // before the lists gave these names to an image (then it is untagged).
    if output(Command::new("buildah").args(STORAGE).args(["manifest", "rm", list])).is_none() {
        let _ = output(Command::new("buildah").args(STORAGE).args(["rmi", list]));
    }
    cmd::run(Command::new("buildah").args(STORAGE).args(["manifest", "create", list]))?;
    for tag in tags {
        cmd::run(
            Command::new("buildah")
                .args(STORAGE)
                .args(["manifest", "add", list])
                .arg(format!("containers-storage:{tag}")),
        )?;
    }
    Ok(())
}

fn image_id(name: &str) -> Option<String> {
    output(Command::new("buildah").args(STORAGE).args(["images", "--noheading", "--format", "{{.ID}}", name]))
        .and_then(|s| s.lines().next().map(str::to_string))
}

/// A build context with only what the Containerfile copies.
fn context(binary: &Path, arch: Arch) -> anyhow::Result<PathBuf> {
    let dir = root().join("target/image").join(arch.name());
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
