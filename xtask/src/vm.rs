//! `cargo xtask vm`: the agent's end-to-end tests on the kernels stations
//! run. Each kernel boots in a QEMU VM on the host's own root file system
//! (virtme-ng: the guest sees this checkout, the built agent and the test
//! virtualenv read-only, `/tmp` writable), runs the selected tests inside,
//! and gives one report line. `host` runs the same tests on the running
//! kernel, without a VM.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc::{self, RecvTimeoutError},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::{
    build, cmd,
    setup::{self, apt_install, installed},
};

/// virtme-ng release the VMs are known to boot with.
const VIRTME_NG_VERSION: &str = "1.42";

/// A kernel of the matrix: what `--kernel` calls it, the Debian package that
/// brings it (its dependency names the exact release), and where it is from.
pub struct Kernel {
    pub name: &'static str,
    pub package: &'static str,
    pub what: &'static str,
}

pub const MATRIX: [Kernel; 3] = [
    Kernel { name: "6.1", package: "linux-image-amd64", what: "Debian 12 (stock)" },
    Kernel { name: "6.1-rt", package: "linux-image-rt-amd64", what: "Debian 12, PREEMPT_RT" },
    Kernel { name: "6.12", package: "linux-image-6.12-amd64", what: "Debian 12 (6.12 LTS)" },
];

/// The tests each kernel runs, by test binary: the real pyWATS client over
/// HTTP, HTTPS and HTTP/2 with its persistent and service queues and a
/// converter, against the server's counts and the client's own truth; the
/// agent's start, readiness and clean stop; a program the kernel refuses;
/// processes taken in at their exec (`--match`).
const VM_TESTS: [(&str, &str); 7] = [
    ("end_to_end", "real_client_with_failing_submissions"),
    ("end_to_end", "real_client_over_https"),
    ("end_to_end", "real_client_over_https_http2"),
    ("foundation", "health_details_and_self_metrics"),
    ("foundation", "sigterm_and_sigint_detach_and_exit_zero"),
    ("features", "a_refused_program_turns_its_feature_off_not_the_agent"),
    ("adoption", "a_process_that_lives_a_moment_is_counted_from_its_exec"),
];

/// How far a guest process's clock read after a call may lie from the
/// kernel's stamp of it (tests/src/lib.rs `clock_slack`): under TCG a
/// Python statement takes some twenty times longer, and 6.1-rt was seen 30 ms
/// off over six items whose slack on a machine is 5 ms each.
const CLOCK_SLACK_MS: u32 = 25;

/// A guest that has not finished by then is stopped and fails.
const GUEST_DEADLINE: Duration = Duration::from_secs(20 * 60);

/// How long a KVM guest gets to boot and run `true`; past it (a guest hung
/// right after the boot stub on our nested machines) the VMs use TCG.
const KVM_PROBE: Duration = Duration::from_secs(40);

#[derive(clap::Args)]
pub struct VmArgs {
    /// Kernel to boot: 6.1, 6.1-rt, 6.12, host (the running kernel, no VM),
    /// an installed release (/boot/vmlinuz-RELEASE), or all.
    #[arg(long, default_value = "6.1")]
    kernel: String,
    /// Run the tests whose name contains this instead of the VM set.
    filter: Option<String>,
}

/// Where a kernel's tests ran.
enum Place {
    Vm { release: String },
    Host,
}

struct Selected {
    name: String,
    what: String,
    place: Place,
}

/// Installs what the VMs need: QEMU, busybox (virtme-ng builds its
/// initramfs with it), virtme-ng in a virtualenv of its own, and the kernel
/// packages of `kernels`. A kernel package only adds files under `/boot` and
/// `/lib/modules` (and the `/vmlinuz` links); the host's boot loader, if it
/// has one, is not what boots these.
pub fn setup(kernels: &[&Kernel]) -> anyhow::Result<PathBuf> {
    let mut missing: Vec<&str> = Vec::new();
    for package in ["qemu-system-x86", "busybox-static"].into_iter().chain(kernels.iter().map(|k| k.package)) {
        if !installed(package) {
            missing.push(package);
        }
    }
    apt_install(&missing)?;
    virtme_ng()
}

/// virtme-ng from PyPI in its own virtualenv; returns its `bin` directory
/// (`vng` runs `virtme-run` from PATH).
fn virtme_ng() -> anyhow::Result<PathBuf> {
    let dir = setup::data_dir().join(format!("virtme-ng-{VIRTME_NG_VERSION}"));
    let bin = dir.join("bin");
    if bin.join("vng").is_file() && bin.join("virtme-run").is_file() {
        return Ok(bin);
    }
    println!("xtask: installing virtme-ng {VIRTME_NG_VERSION} into {}", dir.display());
    cmd::run(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
    cmd::run(
        Command::new(bin.join("python"))
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("virtme-ng=={VIRTME_NG_VERSION}")),
    )?;
    Ok(bin)
}

/// The release a kernel package installs (`linux-image-amd64` depends on
/// `linux-image-6.1.0-57-amd64`: `6.1.0-57-amd64`).
fn release_of(package: &str) -> anyhow::Result<String> {
    let depends = cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Depends}", package]))
        .with_context(|| format!("{package} is not installed: run `cargo xtask setup`"))?;
    depends
        .split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .find_map(|d| d.strip_prefix("linux-image-"))
        .map(str::to_owned)
        .with_context(|| format!("{package} depends on no linux-image-RELEASE ({depends})"))
}

/// What `--kernel` asked for.
enum Choice {
    Matrix(&'static Kernel),
    Release(String),
    Host,
}

fn select(kernel: &str) -> anyhow::Result<Vec<Choice>> {
    Ok(match kernel {
        "all" => MATRIX.iter().map(Choice::Matrix).chain([Choice::Host]).collect(),
        "host" => vec![Choice::Host],
        name => match MATRIX.iter().find(|k| k.name == name) {
            Some(k) => vec![Choice::Matrix(k)],
            None if Path::new("/boot").join(format!("vmlinuz-{name}")).is_file() => vec![Choice::Release(name.into())],
            None => bail!(
                "unknown kernel {name:?}: give {}, host, all, or a release with /boot/vmlinuz-RELEASE",
                MATRIX.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
            ),
        },
    })
}

impl Choice {
    /// After setup: where it runs, the kernel package's release resolved.
    fn resolve(self) -> anyhow::Result<Selected> {
        Ok(match self {
            Choice::Matrix(k) => Selected {
                name: k.name.into(),
                what: format!("{} ({})", k.what, k.package),
                place: Place::Vm { release: release_of(k.package)? },
            },
            Choice::Release(r) => {
                Selected { name: r.clone(), what: "installed kernel".into(), place: Place::Vm { release: r } }
            }
            Choice::Host => {
                Selected { name: "host".into(), what: "the running kernel, no VM".into(), place: Place::Host }
            }
        })
    }
}

pub fn vm(args: VmArgs) -> anyhow::Result<()> {
    if !cmd::is_root() {
        bail!("the VM tests load eBPF programs in the guests as root: run `sudo -E cargo xtask vm`");
    }
    let choices = select(&args.kernel)?;
    let env = setup::setup()?;
    let packages: Vec<&Kernel> = choices
        .iter()
        .filter_map(|c| match c {
            Choice::Matrix(k) => Some(*k),
            _ => None,
        })
        .collect();
    let vng_bin = setup(&packages)?;
    let agent = build::agent(&env)?;
    let tests = test_binaries()?;
    let selected: Vec<Selected> = choices.into_iter().map(Choice::resolve).collect::<anyhow::Result<_>>()?;
    let dir = cmd::root().join("target/vm");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let script = Script { agent: &agent, python: &env.python, tests: &tests, filter: args.filter.as_deref() };
    let needs_vm = selected.iter().find_map(|s| match &s.place {
        Place::Vm { release } => Some(release.clone()),
        Place::Host => None,
    });
    let kvm = match &needs_vm {
        Some(release) => kvm_works(&vng_bin, release, &dir),
        None => false,
    };
    let mut lines = Vec::new();
    let mut failed = false;
    for s in &selected {
        let outcome = run_one(s, &script, &vng_bin, &dir, kvm)?;
        failed |= !outcome.ok();
        let line = outcome.line(s, kvm);
        println!("{line}");
        lines.push(line);
    }
    println!("\nxtask vm: one line per kernel");
    for line in &lines {
        println!("{line}");
    }
    if failed {
        bail!("tests failed on a kernel (logs in {})", dir.display());
    }
    Ok(())
}

/// The test binaries of `tests/`, by target name, built (release) without running.
fn test_binaries() -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let out = Command::new("cargo")
        .current_dir(cmd::root())
        .args(["test", "--release", "--package", "pywats-agent-tests", "--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut found = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str()) else { continue };
        if msg["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "test")) {
            found.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    Ok(found)
}

struct Script<'a> {
    agent: &'a Path,
    python: &'a Path,
    tests: &'a BTreeMap<String, PathBuf>,
    filter: Option<&'a str>,
}

impl Script<'_> {
    /// A shell script running the selected tests; it writes its exit status
    /// to `status` (the guest's exit status does not always reach the host).
    fn text(&self, status: &Path) -> anyhow::Result<String> {
        let q = |p: &Path| format!("'{}'", p.display());
        // One stream: the host keeps the guest's stdout in the log.
        let mut s = String::from("#!/bin/bash\nset -u\nexec 2>&1\n");
        s.push_str("echo \"vm: booted: $(uname -r), guest uptime $(cut -d' ' -f1 /proc/uptime) s\"\n");
        s.push_str(&format!(
            "export PYWATS_AGENT_BIN={} PYWATS_AGENT_PYTHON={} PATH={} TMPDIR=/tmp HOME=/root \
             PYWATS_E2E_CLOCK_SLACK_MS={CLOCK_SLACK_MS}\n",
            q(self.agent),
            q(self.python),
            q(Path::new(&std::env::var_os("PATH").unwrap_or_default()))
        ));
        s.push_str(&format!("cd {}\nstatus=0\n", q(&cmd::root())));
        match self.filter {
            Some(filter) => {
                for bin in self.tests.values() {
                    s.push_str(&format!("{} --test-threads=1 '{}' || status=1\n", q(bin), filter.replace('\'', "")));
                }
            }
            None => {
                let mut by_binary: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                for (binary, test) in VM_TESTS {
                    by_binary.entry(binary).or_default().push(test);
                }
                for (binary, names) in by_binary {
                    let bin = self.tests.get(binary).with_context(|| format!("no test binary {binary}"))?;
                    s.push_str(&format!("{} --test-threads=1 --exact {} || status=1\n", q(bin), names.join(" ")));
                }
            }
        }
        s.push_str(&format!("echo $status > {}\n", q(status)));
        Ok(s)
    }
}

/// What one kernel's run gave.
struct Outcome {
    release: String,
    boot: Option<Duration>,
    passed: u32,
    failed: u32,
    status_ok: bool,
    elapsed: Duration,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.status_ok && self.failed == 0 && self.passed > 0
    }

    fn line(&self, s: &Selected, kvm: bool) -> String {
        let how = match (&s.place, kvm) {
            (Place::Host, _) => "no VM",
            (Place::Vm { .. }, true) => "KVM",
            (Place::Vm { .. }, false) => "TCG",
        };
        let boot = self.boot.map_or("-".into(), |b| format!("{:.0} s", b.as_secs_f64()));
        format!(
            "vm: {:<7} {:<26} {how:<5} boot {boot:>5}  {} passed, {} failed  {:>4.0} s  {}  {}",
            s.name,
            self.release,
            self.passed,
            self.failed,
            self.elapsed.as_secs_f64(),
            if self.ok() { "PASS" } else { "FAIL" },
            s.what
        )
    }
}

fn run_one(s: &Selected, script: &Script, vng_bin: &Path, dir: &Path, kvm: bool) -> anyhow::Result<Outcome> {
    let release = match &s.place {
        Place::Vm { release } => release.clone(),
        Place::Host => fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
    };
    let status = dir.join(format!("{}.status", s.name));
    let _ = fs::remove_file(&status);
    let path = dir.join(format!("{}.sh", s.name));
    fs::write(&path, script.text(&status)?).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let mut command = match &s.place {
        Place::Vm { release } => vng(vng_bin, release, dir, kvm, &[path.to_str().context("script path")?]),
        Place::Host => Command::new(&path),
    };
    println!("xtask: {} ({release}): running the tests", s.name);
    let log = dir.join(format!("{}.log", s.name));
    let started = Instant::now();
    let mut boot = None;
    let ran = run_logged(&mut command, &log, GUEST_DEADLINE, |line| {
        if boot.is_none() && line.starts_with("vm: booted") {
            boot = Some(started.elapsed());
        }
    })?;
    let status_ok = fs::read_to_string(&status).is_ok_and(|s| s.trim() == "0");
    Ok(Outcome {
        release,
        boot: boot.filter(|_| matches!(s.place, Place::Vm { .. })),
        passed: ran.passed,
        failed: ran.failed,
        status_ok,
        elapsed: started.elapsed(),
    })
}

fn vng(bin: &Path, release: &str, rw: &Path, kvm: bool, command: &[&str]) -> Command {
    let mut c = Command::new(bin.join("vng"));
    let path = std::env::join_paths(
        std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap_or_default();
    // --verbose: the guest kernel's console too, for the log (a guest that
    // dies leaves its last words there).
    c.env("PATH", path).args(["-r", release, "--memory", "3G", "--cpus", "2", "--verbose"]);
    if !kvm {
        c.arg("--disable-kvm");
    }
    c.arg("--rwdir").arg(rw).arg("--").args(command);
    c
}

/// Whether a KVM guest boots here: `/dev/kvm` may exist and still not work
/// (nested virtualisation: an MSR QEMU cannot set, or a guest that hangs).
fn kvm_works(vng_bin: &Path, release: &str, dir: &Path) -> bool {
    if !Path::new("/dev/kvm").exists() {
        println!("xtask: no /dev/kvm: the VMs use TCG (QEMU's emulator)");
        return false;
    }
    let started = Instant::now();
    let ok =
        run_logged(&mut vng(vng_bin, release, dir, true, &["true"]), &dir.join("kvm-probe.log"), KVM_PROBE, |_| {})
            .is_ok_and(|ran| ran.success);
    println!(
        "xtask: KVM {} ({:.0} s): the VMs use {}",
        if ok { "works" } else { "does not boot a guest here" },
        started.elapsed().as_secs_f64(),
        if ok { "KVM" } else { "TCG (QEMU's emulator)" }
    );
    ok
}

/// What a command run by [`run_logged`] gave: libtest's counts from its
/// output, and whether it exited successfully within its deadline.
struct Ran {
    passed: u32,
    failed: u32,
    success: bool,
}

/// Runs `command` in its own process group, copying its output to the
/// terminal and its stdout to `log`; past `deadline` the group is killed.
fn run_logged(
    command: &mut Command,
    log: &Path,
    deadline: Duration,
    mut each: impl FnMut(&str),
) -> anyhow::Result<Ran> {
    let mut file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {:?}", command.get_program()))?;
    let group = child.id() as i32;
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(deadline) {
            eprintln!("xtask: no end after {} s: stopping it", deadline.as_secs());
            // SAFETY: signals the process group started above, not yet reaped.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
    });
    let stderr = child.stderr.take().context("stderr")?;
    let err_copy = std::thread::spawn(move || {
        for_each_line(stderr, |line| eprintln!("  {line}"));
    });
    let mut ran = Ran { passed: 0, failed: 0, success: false };
    for_each_line(child.stdout.take().context("stdout")?, |line| {
        let _ = writeln!(file, "{line}");
        // The guest kernel's console ("[   12.345678] …") goes to the log only.
        let console =
            line.starts_with('[') && line[1..].trim_start().split(']').next().is_some_and(|t| t.parse::<f64>().is_ok());
        if !console {
            println!("  {line}");
        }
        each(line);
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|p| p.trim().strip_suffix(word)?.trim().rsplit(' ').next()?.parse::<u32>().ok())
            };
            ran.passed += count("passed").unwrap_or(0);
            ran.failed += count("failed").unwrap_or(0);
        }
    });
    let _ = err_copy.join();
    // The watchdog may signal until the child is reaped, never after.
    let status = child.wait()?;
    drop(done);
    let _ = watchdog.join();
    ran.success = status.success();
    Ok(ran)
}

/// Calls `f` with each line `from` gives, as text (a guest's console is not
/// always UTF-8), until its end.
fn for_each_line(from: impl std::io::Read, mut f: impl FnMut(&str)) {
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
        f(String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']));
        buf.clear();
    }
}
