//! The real pyWATS client (pywats-api 0.6.0rc1, tests/py/bench_pywats.py)
//! submitting ~20 kB reports with `submit_report` to the WATS-like server over
//! HTTPS, with HTTP/1.1 and with HTTP/2: agent off, on, and pyWATS's own
//! metrics module instead.

use anyhow::bail;
use pywats_agent_tests::{free_port, prom::Samples};
use serde_json::Value;

use super::{
    measure::{once, Client, Runs},
    procs::{python, wait_for_port, Proc},
    report::Table,
    rounds::{order, Mode},
    Ctx,
};

const TOKEN: &str = "YmVuY2g6YmVuY2gtdG9rZW4=";
const WSJF: &str = "/api/Report/WSJF";

/// Every submission counted as a 200 POST, and made with the HTTP version asked for.
fn check(version: &str, m: &Samples, done: &Value) -> anyhow::Result<()> {
    let posted = done["POST"].as_f64().unwrap_or(f64::NAN);
    let counted = m.get("pywats_http_requests_total", &[("method", "POST"), ("endpoint", WSJF), ("code", "200")]);
    if counted != Some(posted) {
        bail!("MISCOUNT: the agent counted {counted:?} of the client's {posted} report submissions");
    }
    let versions = done["versions"].as_object().map(|v| v.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    if versions != [version] {
        bail!("the pyWATS client's responses came over {versions:?}, not {version} alone");
    }
    Ok(())
}

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Table> {
    let (cert, key) = (ctx.cert.to_string_lossy().into_owned(), ctx.key.to_string_lossy().into_owned());
    let (h1, h2) = (free_port().to_string(), free_port().to_string());
    let _h1 =
        Proc::start("WATS-like server (HTTPS)", python("wats_server.py").args([&h1, TOKEN, "--tls", &cert, &key]))?;
    let _h2 = Proc::start(
        "WATS-like server (HTTP/2)",
        python("wats_server.py").args([&h2, TOKEN, "--tls", &cert, &key, "--h2"]),
    )?;
    // It says "ready" when its app starts, a moment before hypercorn binds.
    wait_for_port(h2.parse()?)?;
    let mut proc = Proc::start("pyWATS client", python("bench_pywats.py").arg(TOKEN))?;
    let agent_args: Vec<String> =
        ["--pid", &proc.pid().to_string(), "--target-name", "bench", "--no-discover"].map(String::from).to_vec();
    let protocols = [("HTTPS, HTTP/1.1", h1, "HTTP/1.1"), ("HTTPS, HTTP/2", h2, "HTTP/2")];
    let ops = ctx.plan.pywats_ops;
    for (_, port, _) in &protocols {
        proc.ask(&format!("open https://127.0.0.1:{port} plain {}", ctx.plan.pywats_warmup))?;
        proc.ask(&format!("timed {}", ctx.plan.pywats_warmup))?;
        proc.ask("close")?;
    }
    let modes = [Mode::Off, Mode::On, Mode::InProcess];
    let mut runs: Vec<Runs> = protocols.iter().map(|_| Runs::default()).collect();
    for round in 0..ctx.plan.rounds {
        for ((_, port, version), r) in protocols.iter().zip(runs.iter_mut()) {
            let check = |m: &Samples, done: &Value| check(version, m, done);
            let mut client = Client {
                proc: &mut proc,
                agent_args: agent_args.clone(),
                tls: true,
                sites: &[],
                warmup: ctx.plan.pywats_warmup,
                check: &check,
            };
            for mode in order(&modes, round) {
                r.push(mode, once(ctx, &mut client, mode, &format!("open https://127.0.0.1:{port}"), ops)?);
            }
        }
        ctx.progress(&format!("real pyWATS client, round {}/{} done", round + 1, ctx.plan.rounds));
    }
    let mut t = Table::new(
        "The real pyWATS client: CPU per report submitted (`submit_report`, ~20 kB WSJF)",
        &[
            "transport",
            "agent off",
            "agent on",
            "Δ on",
            "pyWATS metrics module instead",
            "Δ in-process",
            "agent CPU",
            "CPU added, watched (client Δ + agent)",
            "CPU added, in-process",
            "events lost",
        ],
    );
    for ((title, _, _), r) in protocols.iter().zip(&runs) {
        let agent = r.agent_cells();
        t.row(
            [
                vec![title.to_string()],
                r.client_cells()[..5].to_vec(),
                vec![agent[0].clone()],
                r.added_cells(),
                vec![agent[3].clone()],
            ]
            .concat(),
        );
    }
    let n = ops + ctx.plan.pywats_warmup;
    t.note(format!(
        "{ops} timed submissions per run (after {} untimed), each a fresh `pyWATS` (retries, cache and throttle off). \
         Counted: the agent's `POST {WSJF}` 200 count equalled the client's {n} in every run with the agent.",
        ctx.plan.pywats_warmup
    ));
    Ok(t)
}
