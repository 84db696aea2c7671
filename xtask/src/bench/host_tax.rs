//! What processes the agent does not watch pay while it runs: an unwatched
//! `dd bs=1` (a read and a write syscall per byte: both are syscalls the agent
//! traces), an unwatched TLS loop through the system libssl, which the agent
//! probes because a watched process maps it too, and a shell that execs
//! without pause: `/bin/true` (every exec runs the agent's exec program, which
//! with `--match` compares the new name with its prefixes), and a Python
//! interpreter (taken in at its exec, judged and let go).

use std::process::{Command, Stdio};

use anyhow::Context as _;

use super::{
    cpu,
    procs::{python, Proc},
    report::Table,
    rounds::order,
    stats::{change, differences, show, signed, times},
    Ctx,
};

/// CPU per syscall of `dd if=/dev/zero of=/dev/null bs=1 count=N`, from its rusage.
fn dd_ns_per_syscall(bytes: u64) -> anyhow::Result<f64> {
    let ns = cpu::run_ns(
        Command::new("dd")
            .args(["if=/dev/zero", "of=/dev/null", "bs=1", &format!("count={bytes}"), "status=none"])
            .stdout(Stdio::null()),
    )?;
    Ok(ns as f64 / (2 * bytes) as f64)
}

/// CPU per exec of a shell loop running `program` `n` times (the shell's
/// rusage, with its children's).
fn exec_us(program: &str, n: u64) -> anyhow::Result<f64> {
    let script = format!("i=0; while [ $i -lt {n} ]; do {program}; i=$((i+1)); done");
    let ns = cpu::run_ns(Command::new("sh").args(["-c", &script]).stdout(Stdio::null()))?;
    Ok(ns as f64 / n as f64 / 1e3)
}

/// CPU per write + read of the TLS loop (tests/py/bench_tls_loop.py), measured by the loop.
fn tls_ns_per_iteration(ctx: &Ctx) -> anyhow::Result<f64> {
    let out = python("bench_tls_loop.py")
        .arg(&ctx.cert)
        .arg(&ctx.key)
        .arg(ctx.plan.tls_iterations.to_string())
        .output()
        .context("running bench_tls_loop.py")?;
    anyhow::ensure!(out.status.success(), "bench_tls_loop.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let cpu = v["cpu_ns"].as_f64().context("cpu_ns")?;
    Ok(cpu / ctx.plan.tls_iterations as f64)
}

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Table> {
    // The watched process: idle, with libssl mapped, so the agent has its
    // syscall programs attached and its libssl probes planted.
    let idle = Proc::start("idle watched process", &mut python("bench_idle.py"))?;
    // A pattern nothing matches: the kernel's exec program compares names.
    let args = ["--pid", &idle.pid().to_string(), "--match", "pywats-bench-no-such-client"].map(String::from).to_vec();
    let (mut dd, mut tls) = ([vec![], vec![]], [vec![], vec![]]);
    let (mut execs, mut python_execs) = ([vec![], vec![]], [vec![], vec![]]);
    let interpreter = pywats_agent_tests::py::python();
    let interpreter = interpreter.display();
    for round in 0..ctx.plan.host_rounds {
        for on in order(&[false, true], round) {
            let _agent = if on {
                let mut a = ctx.agents.start(&args, false)?;
                a.ready(true)?;
                Some(a)
            } else {
                None
            };
            dd[on as usize].push(dd_ns_per_syscall(ctx.plan.dd_bytes)?);
            tls[on as usize].push(tls_ns_per_iteration(ctx)? / 1e3);
            execs[on as usize].push(exec_us("/bin/true", ctx.plan.execs)?);
            python_execs[on as usize].push(exec_us(&format!("{interpreter} -c pass"), ctx.plan.python_execs)?);
        }
        ctx.progress(&format!("host tax, round {}/{} done", round + 1, ctx.plan.host_rounds));
    }
    let mut t = Table::new(
        "Host tax: processes the agent does not watch",
        &["unwatched process", "agent off", "agent on", "difference", "Δ"],
    );
    t.row(vec![
        format!("`dd bs=1`, {} read + write syscalls: CPU per syscall", ctx.plan.dd_bytes * 2),
        show(&dd[0], " ns"),
        show(&dd[1], " ns"),
        signed(&differences(&dd[0], &dd[1]), " ns"),
        change(&dd[0], &dd[1]),
    ]);
    t.row(vec![
        format!(
            "TLS through the system libssl, {} × (SSL_write + SSL_read) of 64 B: CPU per pair",
            ctx.plan.tls_iterations
        ),
        show(&tls[0], " µs"),
        show(&tls[1], " µs"),
        signed(&differences(&tls[0], &tls[1]), " µs"),
        format!("{} ({})", change(&tls[0], &tls[1]), times(&tls[0], &tls[1])),
    ]);
    t.row(vec![
        format!("a shell running `/bin/true` {} times: CPU per exec", ctx.plan.execs),
        show(&execs[0], " µs"),
        show(&execs[1], " µs"),
        signed(&differences(&execs[0], &execs[1]), " µs"),
        change(&execs[0], &execs[1]),
    ]);
    t.row(vec![
        format!("a shell running `python -c pass` {} times: CPU per run", ctx.plan.python_execs),
        show(&python_execs[0], " µs"),
        show(&python_execs[1], " µs"),
        signed(&differences(&python_execs[0], &python_execs[1]), " µs"),
        change(&python_execs[0], &python_execs[1]),
    ]);
    t.note(format!(
        "{} rounds. The agent watches one idle Python process that maps the same libssl, and runs with a \
         `--match` pattern nothing matches (so its exec program compares every new process's name, and \
         takes in each Python interpreter until it has judged it); `dd`, the TLS loop and the shells are \
         not watched. CPU is user + system time: dd's from its rusage, the TLS loop's \
         from its own process clock around the loop (handshake excluded).",
        ctx.plan.host_rounds
    ));
    Ok(t)
}
