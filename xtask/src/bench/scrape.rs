//! What a scrape costs in bytes on the wire and agent CPU, per format and
//! compression, at about 9k and 46k series (the load generators' first 100
//! endpoints, then all 500): what crosses a factory WAN every scrape, and
//! what compressing it costs the station.

use pywats_agent_tests::http;

use super::{agent::Agent, load::Load, report::Table, stats::num, Ctx};

const ENDPOINTS: usize = 500;
const FEW_ENDPOINTS: usize = 100;

/// (label, Accept, Accept-Encoding): as Prometheus 2.x asks (OpenMetrics, gzip), and the rest.
const VARIANTS: [(&str, &str, &str); 5] = [
    ("text, plain", "text/plain", "identity"),
    ("text, gzip", "text/plain", "gzip"),
    ("text, zstd", "text/plain", "zstd"),
    ("OpenMetrics, plain", "application/openmetrics-text;version=1.0.0", "identity"),
    ("OpenMetrics, gzip (what Prometheus asks for)", "application/openmetrics-text;version=1.0.0", "gzip"),
];

/// `n` rounds of one scrape of each variant, interleaved so that what else
/// runs on the machine weighs on every variant alike: bytes of the body and
/// agent CPU per scrape (its process clock around each scrape).
fn measure(agent: &Agent, n: usize, t: &mut Table, what: &str) -> anyhow::Result<()> {
    let series = agent.get("/metrics")?.body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
    let headers = VARIANTS.map(|(_, accept, encoding)| [("Accept", accept), ("Accept-Encoding", encoding)]);
    // One unmeasured scrape each: the agent's own request counter gets every variant's series.
    for h in &headers {
        http::get_bytes(agent.port(), "/metrics", h)?;
    }
    let (mut cpu_ns, mut bytes) = ([0u64; VARIANTS.len()], [0usize; VARIANTS.len()]);
    for _ in 0..n {
        for (i, h) in headers.iter().enumerate() {
            let before = agent.cpu_ns()?;
            let (status, _, body) = http::get_bytes(agent.port(), "/metrics", h)?;
            cpu_ns[i] += agent.cpu_ns()? - before;
            anyhow::ensure!(status == 200, "/metrics answered {status}");
            bytes[i] = body.len();
        }
    }
    for (i, (label, _, _)) in VARIANTS.iter().enumerate() {
        t.row(vec![
            format!("{series} series ({what}), {label}"),
            format!("{} KiB", num(bytes[i] as f64 / 1024.0)),
            format!("{} ms", num(cpu_ns[i] as f64 / n as f64 / 1e6)),
        ]);
    }
    Ok(())
}

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Table> {
    let mut t = Table::new("Bytes and agent CPU per scrape", &["scrape", "body", "agent CPU per scrape"]);
    let mut load = Load::start(ctx, 2, 2, ENDPOINTS)?;
    let mut agent = ctx.agents.start(&load.agent_args(), false)?;
    agent.ready(false)?;
    let per_process = 20 * FEW_ENDPOINTS;
    load.run(&format!("count {per_process} 0 {FEW_ENDPOINTS}"))?;
    agent.settle()?;
    measure(&agent, ctx.plan.scrapes, &mut t, &format!("{FEW_ENDPOINTS} endpoints"))?;
    load.run(&format!("count {} 0", 20 * ENDPOINTS))?;
    agent.settle()?;
    measure(&agent, ctx.plan.scrapes, &mut t, &format!("{ENDPOINTS} endpoints"))?;
    t.note(
        "Load as in the memory table (2 watched generator processes, paths /load/e0 …). A render is \
         shared by the scrapes that arrive while it runs; these scrapes come one after another, so each \
         pays a whole render: gathering, encoding, and compressing (gzip level 1, zstd level 1). The \
         variants take turns, one scrape each per round. Body is the bytes on the wire \
         (`Content-Encoding` applied).",
    );
    ctx.progress("scrape done");
    Ok(t)
}
