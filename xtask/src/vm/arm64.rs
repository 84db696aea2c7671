//! `cargo xtask vm --arch arm64`: the agent on arm64, in an emulated arm64
//! machine (`qemu-system-aarch64 -M virt`, TCG) booting Debian 12's arm64
//! kernel, with an arm64 Debian root made by `debootstrap`.
//!
//! virtme-ng boots a kernel on the host's own root, which an arm64 kernel
//! cannot run; so the guest gets a root of its own, an ext4 disk image
//! (9p cannot hold it: QEMU's 9p server refuses to open device nodes, which
//! debootstrap and dpkg make), and, over 9p, this checkout at its own path
//! (read-only; `target/vm` writable), so the cross-built agent and test
//! binaries and `tests/py` are where the tests look for them. The guest's
//! init is a busybox script in a small initramfs: it loads the modules,
//! mounts the root and the shares, and runs one command in the root (the
//! tests, or debootstrap's second stage, which runs in the guest so the host
//! needs no binfmt emulator). Test runs write to a throw-away overlay of the
//! image (QEMU's `snapshot=on`): each starts from the same root.
//!
//! Everything lives under `~/.local/share/pywats-agent/arm64/` and is made on
//! first use; `cargo xtask setup` does not do it (CI does not run arm64).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use super::{run_logged, run_one, test_binaries, Place, Script, Selected};
use crate::{
    arch::Arch,
    build, cmd,
    setup::{self, apt_install, installed},
};

/// Debian 12's arm64 kernel (its dependency names the exact release).
const KERNEL_PACKAGE: &str = "linux-image-arm64";
/// The only kernel `--kernel` may name with `--arch arm64`.
const KERNEL_NAME: &str = "6.1";
/// The root's Debian release and where its packages come from.
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// What the root needs beyond `minbase`: python3 for the clients and
/// servers, openssl for the tests' certificates, curl to look around, GLib
/// for Qt's core library (the pyWATS client imports PySide6's QtCore). A
/// root made with other packages is made again.
const ROOT_PACKAGES: &str = "python3,openssl,curl,libglib2.0-0";
/// Host packages: the emulator, debootstrap, cpio for the initramfs,
/// e2fsprogs for the root's image.
const HOST_PACKAGES: [&str; 4] = ["qemu-system-arm", "debootstrap", "cpio", "e2fsprogs"];
/// Modules the guest loads to mount its root (virtio over PCI, the disk,
/// ext4 with the checksum driver it asks the crypto API for) and its shares
/// (9p); their dependencies are read from each module's own `depends=`.
const MODULES: [&str; 6] = ["virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "9pnet_virtio", "9p"];
/// The root image's size (a sparse file: it takes what the root holds).
const ROOT_SIZE: &str = "4G";
/// The Raspberry Pi 4's core; the emulator's `max` CPU adds pointer
/// authentication and SVE, which TCG emulates slowly.
const CPU: &str = "cortex-a72";
/// Where the guest sees its extra Python packages (a 9p share; on its PYTHONPATH).
const PYTHON_DIR: &str = "/opt/pywats-agent/python";
/// debootstrap's second stage in the guest: dpkg under emulation.
const SECOND_STAGE_DEADLINE: Duration = Duration::from_secs(60 * 60);

/// The tests the arm64 guest runs, by test binary: the ABI's syscall numbers
/// against the C library's arm64 ones; the probe plan for the root's libssl
/// (its exported functions, arm64 code not being decoded); the real pyWATS
/// client over HTTP, HTTPS and HTTP/2 with both its queues and a converter,
/// as on x86_64; a Python client over plain HTTP and over HTTPS (the libssl
/// probes), every request per method, endpoint and code against the
/// server's counts; the service and the persistent queue flows against the
/// client's own truth; what watching costs the client per request
/// (`cost.rs`, ignored elsewhere: the bench measures x86_64).
const ARM64_TESTS: [(&str, &str); 10] = [
    ("pywats_agent_ebpf", "abi::cpu::tests::this_cpus_numbers_are_the_c_librarys"),
    ("pywats_agent", "ebpf::libssl::tests::probes_the_exported_functions_of_the_system_libssl_on_arm64"),
    ("end_to_end", "real_client_with_failing_submissions"),
    ("end_to_end", "real_client_over_https"),
    ("end_to_end", "real_client_over_https_http2"),
    ("http", "counts_durations_and_errors_match_the_server_and_clients"),
    ("http", "https_http1_counts_durations_and_errors"),
    ("queues", "service_queue_flows"),
    ("queues", "persistent_queue_flows"),
    ("cost", "client_cpu_per_request_with_the_agent_off_and_on"),
];

/// The guest's Python packages, pinned as `tests/py/requirements.txt` pins
/// them: the real pyWATS client with PySide6 (QtCore), httpx with HTTP/2
/// for the clients, hypercorn and h2 for the servers, prometheus_client and
/// psutil for the bench client's in-process module (which it imports).
const PYTHON_PACKAGES: [&str; 7] =
    ["pywats-api", "PySide6-Essentials", "httpx", "hypercorn", "h2", "prometheus_client", "psutil"];
/// Pins for arm64 where the x86_64 one has no wheel for Debian 12: PySide6's
/// arm64 wheels after 6.8.0.2 need glibc 2.39 (Debian 12 has 2.36).
const ARM64_PINS: [(&str, &str); 1] = [("PySide6-Essentials", "PySide6-Essentials==6.8.0.2")];
/// The wheels the root's C library (glibc 2.36) can load.
const WHEEL_PLATFORMS: [&str; 6] = [
    "manylinux2014_aarch64",
    "manylinux_2_28_aarch64",
    "manylinux_2_31_aarch64",
    "manylinux_2_34_aarch64",
    "manylinux_2_35_aarch64",
    "manylinux_2_36_aarch64",
];

pub fn vm(kernel: &str, filter: Option<&str>) -> anyhow::Result<()> {
    if kernel != KERNEL_NAME {
        bail!("--arch arm64 boots Debian 12's arm64 kernel only: --kernel {KERNEL_NAME}");
    }
    let env = setup::setup()?;
    let guest = setup_guest(&env.python)?;
    let agent = build::static_agent(Arch::Arm64)?;
    let tests = test_binaries(Some(Arch::Arm64), &["pywats-agent-tests", "pywats-agent-ebpf", "pywats-agent"])?;
    let dir = cmd::root().join("target/vm");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let script = Script {
        env: vec![
            ("PYWATS_AGENT_BIN", agent.display().to_string()),
            ("PYWATS_AGENT_PYTHON", "/usr/bin/python3".into()),
            ("PYTHONPATH", PYTHON_DIR.into()),
            ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ],
        tests: &tests,
        set: &ARM64_TESTS,
        filter,
        // The cost test's numbers are its output.
        libtest: &["--include-ignored", "--show-output"],
    };
    let selected = Selected {
        name: format!("arm64-{KERNEL_NAME}"),
        what: format!("Debian 12 arm64 ({KERNEL_PACKAGE}), {CPU}"),
        place: Place::Vm { release: guest.release.clone() },
    };
    let outcome = run_one(&selected, &script, &dir, |script| Ok(guest.qemu(script, &dir, true)))?;
    let line = outcome.line(&selected, false);
    println!("\nxtask vm: one line per kernel\n{line}");
    if !outcome.ok() {
        bail!("tests failed on arm64 (log in {})", dir.join(format!("{}.log", selected.name)).display());
    }
    Ok(())
}

/// The guest's parts, ready to boot.
struct Guest {
    release: String,
    kernel: PathBuf,
    initramfs: PathBuf,
    /// The root's ext4 image.
    root: PathBuf,
    /// The Python packages' directory (shared at [`PYTHON_DIR`]).
    python: PathBuf,
}

fn setup_guest(python: &Path) -> anyhow::Result<Guest> {
    let started = Instant::now();
    host_packages()?;
    let release = kernel_release()?;
    let dir = setup::data_dir().join("arm64");
    let kernel_dir = dir.join(format!("kernel-{release}"));
    let kernel = kernel_dir.join(format!("boot/vmlinuz-{release}"));
    if !kernel.is_file() {
        unpack_debs(&[&format!("linux-image-{release}:arm64")], &kernel_dir)?;
    }
    let modules = kernel_dir.join("lib/modules").join(&release);
    let initramfs = dir.join(format!("initramfs-{release}.cpio"));
    // Made again when what goes in changes.
    let recipe = format!("{INIT}{MODULES:?}");
    let made_from = initramfs.with_extension("recipe");
    if !initramfs.is_file() || fs::read_to_string(&made_from).ok().as_ref() != Some(&recipe) {
        make_initramfs(&modules, &dir, &initramfs)?;
        fs::write(&made_from, recipe)?;
    }
    let guest = Guest {
        release,
        kernel,
        initramfs,
        root: dir.join(format!("root-{SUITE}.img")),
        python: dir.join(format!("python-{SUITE}")),
    };
    let python_version = guest.make_root(&dir)?;
    guest.python_packages(python, &python_version)?;
    println!("xtask: arm64 guest ready ({:.0} s)", started.elapsed().as_secs_f64());
    Ok(guest)
}

/// The emulator and debootstrap, and Debian's arm64 packages (the kernel,
/// busybox) through dpkg's foreign architecture list.
fn host_packages() -> anyhow::Result<()> {
    let foreign = cmd::output(Command::new("dpkg").arg("--print-foreign-architectures")).unwrap_or_default();
    if !foreign.lines().any(|a| a.trim() == "arm64") {
        println!("xtask: adding arm64 to dpkg's architectures (the guest's kernel and busybox)");
        cmd::run(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
        cmd::run(Command::new("apt-get").arg("update"))?;
    }
    let missing: Vec<&str> = HOST_PACKAGES.into_iter().filter(|p| !installed(p)).collect();
    apt_install(&missing)
}

/// The release `linux-image-arm64` depends on (`6.1.0-57-arm64`).
fn kernel_release() -> anyhow::Result<String> {
    let package = format!("{KERNEL_PACKAGE}:arm64");
    let depends = cmd::output(Command::new("apt-cache").args(["depends", &package]))
        .with_context(|| format!("apt-cache knows no {package}"))?;
    depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: linux-image-"))
        .map(|d| d.trim_end_matches(":arm64").to_owned())
        .next()
        .with_context(|| format!("{package} depends on no linux-image-RELEASE"))
}

/// Downloads Debian packages (not installed: unpacked into `into`).
fn unpack_debs(packages: &[&str], into: &Path) -> anyhow::Result<()> {
    let download = into.with_extension("download");
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download).with_context(|| format!("creating {}", download.display()))?;
    println!("xtask: downloading {}", packages.join(" "));
    cmd::run(Command::new("apt-get").arg("download").args(packages).current_dir(&download))?;
    let staging = into.with_extension("partial");
    let _ = fs::remove_dir_all(&staging);
    for deb in fs::read_dir(&download)?.flatten() {
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(deb.path()).arg(&staging))?;
    }
    let _ = fs::remove_dir_all(into);
    fs::rename(&staging, into).with_context(|| format!("moving into {}", into.display()))?;
    fs::remove_dir_all(&download)?;
    Ok(())
}

/// The guest's init, run by the kernel from the initramfs.
const INIT: &str = r#"#!/bin/busybox sh
# pywats-agent's arm64 guest (xtask/src/vm/arm64.rs): mounts the Debian root
# and the host's shares over 9p, runs pywats.run in that root, powers off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod "/modules/$m" || echo "init: insmod $m failed"; done
param() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^pywats\.$1=//p"; }
off() { echo "init: $1"; echo o > /proc/sysrq-trigger; sleep 10; }
# The disk appears once its driver has probed it.
for i in $(seq 100); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 /dev/vda /newroot || off "cannot mount the root"
opts=trans=virtio,version=9p2000.L,msize=524288
src=$(param src)
vm=$(param vm)
py=$(param py)
# /tmp first: a checkout under /tmp is mounted inside it, not hidden by it.
mount -t tmpfs tmpfs /newroot/tmp
mkdir -p "/newroot$src" "/newroot$py"
mount -t 9p -o "$opts,ro,cache=loose" src "/newroot$src" || off "cannot mount $src"
mount -t 9p -o "$opts" vm "/newroot$vm" || off "cannot mount $vm"
mount -t 9p -o "$opts,ro,cache=loose" py "/newroot$py" || off "cannot mount $py"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t tracefs tracefs /newroot/sys/kernel/tracing
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
umount /sys /dev
ifconfig lo 127.0.0.1 up
hostname pywats-arm64
exec switch_root /newroot /bin/sh -c "/bin/sh $(param run); sync; echo o > /proc/sysrq-trigger; sleep 10"
"#;

/// A cpio initramfs: busybox (static, arm64), the init above, and the
/// modules for the shares, in load order.
fn make_initramfs(modules: &Path, dir: &Path, out: &Path) -> anyhow::Result<()> {
    let busybox = dir.join("busybox");
    if !busybox.join("bin/busybox").is_file() {
        unpack_debs(&["busybox-static:arm64"], &busybox)?;
    }
    let stage = dir.join("initramfs");
    let _ = fs::remove_dir_all(&stage);
    for d in ["bin", "modules", "proc", "sys", "dev", "newroot"] {
        fs::create_dir_all(stage.join(d))?;
    }
    fs::copy(busybox.join("bin/busybox"), stage.join("bin/busybox")).context("copying busybox")?;
    fs::write(stage.join("init"), INIT)?;
    let mode = |p: &Path| fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    mode(&stage.join("init"))?;
    mode(&stage.join("bin/busybox"))?;
    let mut order = Vec::new();
    for name in MODULES {
        module_with_deps(modules, name, &mut order)?;
    }
    let mut list = String::new();
    for path in &order {
        let file = path.file_name().context("module file name")?;
        fs::copy(path, stage.join("modules").join(file)).with_context(|| format!("copying {}", path.display()))?;
        list.push_str(&format!("{}\n", file.to_string_lossy()));
    }
    fs::write(stage.join("modules/order"), list)?;
    let partial = out.with_extension("partial");
    cmd::run(
        Command::new("sh")
            .arg("-c")
            .arg(format!("find . | cpio --quiet -o -H newc -R 0:0 > '{}'", partial.display()))
            .current_dir(&stage),
    )?;
    fs::rename(&partial, out)?;
    fs::remove_dir_all(&stage)?;
    Ok(())
}

/// Adds the module `name` after its dependencies (`depends=` in the
/// module's `.modinfo`), each once.
fn module_with_deps(modules: &Path, name: &str, order: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let path = find_module(modules, name)?.with_context(|| format!("no module {name} in {}", modules.display()))?;
    if order.contains(&path) {
        return Ok(());
    }
    let data = fs::read(&path)?;
    let depends = data
        .split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"depends="))
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_default();
    for dep in depends.split(',').filter(|d| !d.is_empty()) {
        module_with_deps(modules, dep, order)?;
    }
    order.push(path);
    Ok(())
}

/// The file of module `name` (the kernel treats `-` and `_` alike).
fn find_module(dir: &Path, name: &str) -> anyhow::Result<Option<PathBuf>> {
    let want = format!("{}.ko", name.replace('-', "_"));
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.flatten() {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            if let Some(found) = find_module(&path, name)? {
                return Ok(Some(found));
            }
        } else if entry.file_name().to_string_lossy().replace('-', "_") == want {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// The Python (`3.11`) of the root's `python3` package, which the first
/// stage downloaded (`python3_3.11.2-1+b1_arm64.deb`) for the second to install.
fn python_version(tree: &Path) -> anyhow::Result<String> {
    let archives = tree.join("var/cache/apt/archives");
    for entry in fs::read_dir(&archives).with_context(|| format!("reading {}", archives.display()))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(version) = name.strip_prefix("python3_") {
            let mut parts = version.split(['.', '-', '_']);
            if let (Some(major), Some(minor)) = (parts.next(), parts.next()) {
                return Ok(format!("{major}.{minor}"));
            }
        }
    }
    bail!("debootstrap downloaded no python3 package into {}", archives.display())
}

impl Guest {
    /// The arm64 Debian root's image: debootstrap's first stage (downloads
    /// and unpacks) into a directory here, which becomes the image, its
    /// second stage (dpkg configures) in the guest. Returns the root's Python
    /// version (`3.11`).
    fn make_root(&self, dir: &Path) -> anyhow::Result<String> {
        let tree = dir.join(format!("root-{SUITE}"));
        let unpacked = dir.join(format!("root-{SUITE}.unpacked"));
        let ready = dir.join(format!("root-{SUITE}.ready"));
        // Both stamps hold the root's Python version and its packages.
        let made_with = |stamp: &Path| {
            fs::read_to_string(stamp).ok().and_then(|s| {
                let (version, packages) = s.split_once('\n')?;
                (packages == ROOT_PACKAGES).then(|| version.to_owned())
            })
        };
        if let Some(version) = made_with(&ready) {
            return Ok(version);
        }
        let _ = fs::remove_file(&ready);
        if made_with(&unpacked).is_none() {
            let _ = fs::remove_dir_all(&tree);
            println!("xtask: debootstrap, first stage: an arm64 {SUITE} root in {}", tree.display());
            cmd::run(
                Command::new("debootstrap")
                    .args(["--arch=arm64", "--foreign", "--variant=minbase"])
                    .arg(format!("--include={ROOT_PACKAGES}"))
                    .arg(SUITE)
                    .arg(&tree)
                    .arg(MIRROR),
            )?;
            // debootstrap links proc to the host's /proc in a container; the
            // guest mounts its own there.
            let proc = tree.join("proc");
            if proc.is_symlink() {
                fs::remove_file(&proc)?;
                fs::create_dir(&proc)?;
            }
            // A test root, rebuilt when lost: dpkg need not sync every file
            // (each sync is slow under emulation).
            let dpkg_cfg = tree.join("etc/dpkg/dpkg.cfg.d");
            fs::create_dir_all(&dpkg_cfg)?;
            fs::write(dpkg_cfg.join("pywats-unsafe-io"), "force-unsafe-io\n")?;
            let hosts = tree.join("etc/hosts");
            if !hosts.is_file() {
                fs::write(&hosts, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")?;
            }
            let version = python_version(&tree)?;
            let _ = fs::remove_file(&self.root);
            cmd::run(
                Command::new("mkfs.ext4")
                    .args(["-q", "-L", "pywats-arm64", "-d"])
                    .arg(&tree)
                    .arg(&self.root)
                    .arg(ROOT_SIZE),
            )?;
            fs::remove_dir_all(&tree)?;
            fs::write(&unpacked, format!("{version}\n{ROOT_PACKAGES}"))?;
        }
        println!("xtask: debootstrap, second stage, in the arm64 guest (dpkg under emulation: many minutes)");
        let vm = cmd::root().join("target/vm");
        fs::create_dir_all(&vm)?;
        fs::create_dir_all(&self.python)?;
        let script = vm.join("arm64-second-stage.sh");
        let status = vm.join("arm64-second-stage.status");
        let _ = fs::remove_file(&status);
        fs::write(
            &script,
            format!(
                "#!/bin/sh\nexec 2>&1\nexport PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
                 /debootstrap/debootstrap --second-stage\necho $? > '{}'\n",
                status.display()
            ),
        )?;
        let log = vm.join("arm64-second-stage.log");
        let started = Instant::now();
        run_logged(&mut self.qemu(&script, &vm, false), &log, SECOND_STAGE_DEADLINE, |_| {})?;
        let exit = fs::read_to_string(&status).unwrap_or_else(|_| "none".into());
        if exit.trim() != "0" {
            // A half-configured root is not resumed: the next run starts over.
            let _ = fs::remove_file(&unpacked);
            bail!(
                "debootstrap's second stage failed in the arm64 guest (exit {}; log in {})",
                exit.trim(),
                log.display()
            );
        }
        println!("xtask: debootstrap's second stage took {:.0} s", started.elapsed().as_secs_f64());
        fs::rename(&unpacked, &ready)?;
        made_with(&ready).context("the arm64 root's stamp")
    }

    /// [`PYTHON_PACKAGES`] for the root's Python, installed from the host
    /// for arm64 (`pip --platform`: only wheels), so the guest needs no
    /// network.
    fn python_packages(&self, host_python: &Path, version: &str) -> anyhow::Result<()> {
        let requirements = fs::read_to_string(cmd::root().join("tests/py/requirements.txt"))?;
        let pins = PYTHON_PACKAGES
            .iter()
            .map(|name| {
                if let Some((_, pin)) = ARM64_PINS.iter().find(|(n, _)| n == name) {
                    return Ok(pin.to_string());
                }
                requirements
                    .lines()
                    .find(|l| l.split(['[', '=']).next() == Some(name))
                    .map(|l| l.trim().to_owned())
                    .with_context(|| format!("tests/py/requirements.txt pins no {name}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let target = &self.python;
        let stamp = target.join(".requirements");
        let wanted = format!("{version} {}", pins.join(" "));
        if fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
            return Ok(());
        }
        let _ = fs::remove_dir_all(target);
        cmd::run(
            Command::new(host_python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"])
                .args(["--only-binary=:all:", "--implementation", "cp"])
                .args(WHEEL_PLATFORMS.iter().flat_map(|p| ["--platform", p]))
                .args(["--python-version", version, "--target"])
                .arg(target)
                .args(&pins),
        )?;
        fs::write(&stamp, wanted)?;
        Ok(())
    }

    /// qemu running `script` (a path the guest sees: in this checkout) in the
    /// root, with `rw` (inside this checkout) writable; the root's image
    /// is written to only when not `throwaway`.
    fn qemu(&self, script: &Path, rw: &Path, throwaway: bool) -> Command {
        let src = cmd::root();
        let mut c = Command::new("qemu-system-aarch64");
        c.args(["-M", "virt", "-cpu", CPU, "-smp", "2", "-m", "3G"])
            .args(["-display", "none", "-serial", "stdio", "-monitor", "none", "-nic", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initramfs)
            .arg("-append")
            .arg(format!(
                "console=ttyAMA0 panic=-1 pywats.run={} pywats.src={} pywats.vm={} pywats.py={PYTHON_DIR}",
                script.display(),
                src.display(),
                rw.display()
            ))
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio,snapshot={}",
                self.root.display(),
                if throwaway { "on" } else { "off" }
            ))
            .arg("-virtfs")
            .arg(format!("local,path={},mount_tag=src,security_model=none,readonly=on", src.display()))
            .arg("-virtfs")
            .arg(format!("local,path={},mount_tag=vm,security_model=none", rw.display()))
            .arg("-virtfs")
            .arg(format!("local,path={},mount_tag=py,security_model=none,readonly=on", self.python.display()));
        c
    }
}
