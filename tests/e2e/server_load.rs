//! The agent's server under clients that misbehave on purpose, each from
//! loopback addresses of its own (127.0.0.0/8 is all the machine, and each
//! address is a peer for the agent's per-peer limits): scrapes that hang up
//! at once, keep-alive connections that sit idle, and a flood of wrong
//! passwords. Ground truth is what the clients saw (every answer counted by
//! status), `/proc` (memory, threads, CPU), and the budgets' own numbers.
//! Timings are printed, not asserted: the machine is shared.

use std::{
    io::Write,
    net::Ipv4Addr,
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use base64::Engine;
use pywats_agent_tests::{
    agent::{self, Agent},
    free_port,
    http::{self, Client, KeepAlive},
    pki::Pki,
    proc, prom,
    py::{python, Py},
    wait_for,
};

/// The agent's defaults and budgets (agent/src/cli.rs, agent/src/http/budget.rs).
const MAX_CONNECTIONS: usize = 64;
const MAX_PER_PEER: usize = 16;
const PEER_BURST: f64 = 10.0;
const PEER_PER_SECOND: f64 = 0.2;
const ALL_BURST: f64 = 20.0;
const ALL_PER_SECOND: f64 = 2.0;

fn peer(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

fn idle_target() -> Py {
    Py::start("procs.py", &["sleeper"])
}

fn counter(m: &prom::Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.get(name, labels).unwrap_or_else(|| panic!("no {name}{labels:?}"))
}

fn limit(m: &prom::Samples, name: &str) -> f64 {
    counter(m, "pywats_agent_limit_hits_total", &[("limit", name)])
}

/// Requests to `path` the agent counted, whatever their code (`none`: the client left first).
fn requests_to(m: &prom::Samples, path: &str) -> f64 {
    m.series("pywats_agent_http_requests_total").iter().filter(|(l, _)| l["path"] == path).map(|(_, v)| v).sum()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[test]
fn a_thousand_scrapes_that_hang_up_keep_memory_and_threads_bounded() {
    const SCRAPES: usize = 1000;
    const CLIENTS: u8 = 8;
    // A target that made requests to 200 endpoints: a /metrics of about 1 MB.
    let port = free_port().to_string();
    let load = env!("CARGO_BIN_EXE_bench_load");
    let (_server, first) = Py::spawn_command({
        let mut c = Command::new(load);
        c.args(["serve", &port]);
        c
    });
    assert_eq!(first, "ready");
    let (mut client, first) = Py::spawn_command({
        let mut c = Command::new(load);
        c.args(["client", &port, "2", "200"]);
        c
    });
    assert_eq!(first, "ready");
    let pid = client.pid().to_string();
    let agent = Agent::start(&["--pid", &pid, "--target-name", "load", "--no-discover"]);
    let made: serde_json::Value = serde_json::from_str(&client.ask("count 2000 0")).unwrap();
    assert_eq!(made["requests"], 2000);
    let sum = |m: &prom::Samples| -> f64 { m.series("pywats_http_requests_total").iter().map(|(_, v)| v).sum() };
    wait_for(Duration::from_secs(30), "the target's 2000 requests", || (sum(&agent.scrape()) == 2000.0).then_some(()));
    let size = agent.get("/metrics").body.len();

    let me = agent.pid();
    let rss_before = proc::status_field(me, "VmRSS").unwrap();
    let threads_before = proc::status_field(me, "Threads").unwrap();
    // From here VmHWM is the peak of the flood.
    std::fs::write(format!("/proc/{me}/clear_refs"), "5").expect("reset the agent's peak RSS");
    let m0 = agent.scrape();
    let (requests_before, renders_before) = (requests_to(&m0, "/metrics"), renders(&m0));

    let stop = Arc::new(AtomicBool::new(false));
    let most_threads = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, most) = (stop.clone(), most_threads.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                most.fetch_max(proc::status_field(me, "Threads").unwrap_or(0) as usize, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let start = Instant::now();
    let port = agent.port;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            thread::spawn(move || {
                for i in 0..SCRAPES / CLIENTS as usize {
                    let mut s = http::connect_from(peer(2 + c), port).unwrap_or_else(|e| panic!("scrape {i}: {e}"));
                    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
                    // Hung up (for HTTP, a client that ends its side is gone) a
                    // moment later, so that the agent has begun on the scrape...
                    thread::sleep(Duration::from_millis(2));
                    s.shutdown(std::net::Shutdown::Write).unwrap();
                    // ...and the next scrape only once the agent has closed this
                    // one, so that a client holds one connection at a time.
                    let _ = std::io::copy(&mut s, &mut std::io::sink());
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let took = start.elapsed();
    // Every scrape counted (answered, or `none` when its client was gone first).
    let mut polls = 0.0;
    let m = wait_for(Duration::from_secs(60), "every scrape counted", || {
        let m = agent.scrape();
        polls += 1.0;
        (requests_to(&m, "/metrics") == requests_before + 1.0 + SCRAPES as f64 + polls - 1.0).then_some(m)
    });
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let peak = proc::status_field(me, "VmHWM").unwrap();
    let rss_after = proc::status_field(me, "VmRSS").unwrap();
    let threads_most = most_threads.load(Ordering::Relaxed) as u64;
    let ran: Vec<f64> = renders(&m).iter().zip(renders_before).map(|(now, before)| now - before).collect();
    let answered = counter(&m, "pywats_agent_http_requests_total", &[("path", "/metrics"), ("code", "200")])
        - counter(&m0, "pywats_agent_http_requests_total", &[("path", "/metrics"), ("code", "200")]);
    eprintln!(
        "{SCRAPES} scrapes hung up ({CLIENTS} clients, {:.2} s), /metrics {size} bytes: RSS {:.1} MiB before, \
         peak {:.1} MiB, {:.1} MiB after; threads {threads_before} before, at most {threads_most}; renders run: \
         {ran:?} (answered, abandoned, skipped); {answered} scrapes answered before their client left",
        took.as_secs_f64(),
        mib(rss_before),
        mib(peak),
        mib(rss_after)
    );
    assert_eq!(limit(&m, "http_connections") + limit(&m, "http_connections_per_peer"), 0.0, "none refused");
    // One render at a time: at most one blocking thread more (tokio may start
    // the next render on a fresh one while the last one's thread winds down).
    assert!(threads_most <= threads_before + 2, "threads: {threads_before} before, {threads_most} during");
    // One render's text and series at a time: a few MiB, never one per scrape.
    assert!(peak <= rss_before + 32 * 1024, "peak RSS {peak} kB, {rss_before} kB before");
    assert!(ran.iter().sum::<f64>() <= SCRAPES as f64 + polls + 1.0, "{ran:?}");
}

/// Renders of /metrics so far: answered, abandoned, skipped.
fn renders(m: &prom::Samples) -> [f64; 3] {
    ["answered", "abandoned", "skipped"].map(|o| counter(m, "pywats_agent_metrics_renders_total", &[("outcome", o)]))
}

/// Whether a held keep-alive connection still answers.
fn answers(c: &mut KeepAlive) -> bool {
    c.get("/health/live").is_ok_and(|r| r.status == 200)
}

#[test]
fn sixty_four_idle_keep_alives_do_not_lock_out_a_probe_or_a_scrape() {
    let target = idle_target();
    let pid = target.pid().to_string();
    let agent = Agent::start(&["--pid", &pid, "--target-name", "station", "--no-discover"]);
    let port = agent.port;

    // Four peers hold 16 idle keep-alive connections each: the whole cap.
    let mut held: Vec<KeepAlive> = Vec::new();
    for p in 2..6 {
        for _ in 0..MAX_PER_PEER {
            let mut c = KeepAlive::connect_from(peer(p), port, &Client::plain()).unwrap();
            assert!(answers(&mut c));
            held.push(c);
        }
    }
    assert_eq!(held.len(), MAX_CONNECTIONS);
    // A probe (kept open) and a scrape from a fifth peer each take an idle
    // one's place: the peers hold 16 each, so the one idle longest goes first
    // (127.0.0.2's first), then the idle longest of a peer that still holds
    // 16 (127.0.0.3's first).
    let mut probe = KeepAlive::connect(port).unwrap();
    assert_eq!(probe.get("/health/ready").unwrap().status, 200);
    let m = agent.scrape();
    assert_eq!(limit(&m, "http_idle_evicted"), 2.0);
    assert_eq!(limit(&m, "http_connections"), 0.0);
    assert_eq!(limit(&m, "http_connections_per_peer"), 0.0);
    let closed: Vec<usize> = (0..held.len()).filter(|&i| !answers(&mut held[i])).collect();
    assert_eq!(closed, [0, MAX_PER_PEER], "the connections idle longest were closed, the others still answer");
    drop((held, probe));
    wait_for(Duration::from_secs(20), "the held connections to close", || {
        // This scrape's own connection.
        agent.scrape().get("pywats_agent_http_connections", &[]).filter(|&n| n == 1.0)
    });

    // One peer opens 64 keep-alive connections: it holds 16 at a time, each
    // new one past them closing its own connection idle longest.
    let mut mine: Vec<KeepAlive> = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut c = KeepAlive::connect_from(peer(6), port, &Client::plain()).unwrap();
        assert!(answers(&mut c), "a new connection of a peer at its cap gets in");
        mine.push(c);
    }
    // A probe from that same peer gets in too.
    let mut probe = KeepAlive::connect_from(peer(6), port, &Client::plain()).unwrap();
    assert_eq!(probe.get("/health/live").unwrap().status, 200);
    let m = agent.scrape();
    let evicted = (MAX_CONNECTIONS - MAX_PER_PEER + 1) as f64;
    assert_eq!(limit(&m, "http_idle_evicted"), 2.0 + evicted);
    assert_eq!(limit(&m, "http_connections") + limit(&m, "http_connections_per_peer"), 0.0);
    // The peer's 15 newest are left, beside the probe. (Which of the two
    // oldest of them went last may swap: a connection turns idle when the
    // server's task has flushed its answer, which a loaded machine can
    // delay past the client's next connection.)
    let open: Vec<usize> = (0..mine.len()).filter(|&i| answers(&mut mine[i])).collect();
    assert_eq!(open.len(), MAX_PER_PEER - 1, "{open:?}");
    assert!(open.iter().all(|&i| i >= MAX_CONNECTIONS - MAX_PER_PEER), "only the newest are left: {open:?}");
    assert!(open[1..] == (MAX_CONNECTIONS - MAX_PER_PEER + 2..MAX_CONNECTIONS).collect::<Vec<_>>(), "{open:?}");
    assert_eq!(agent.get("/health/ready").status, 200);
}

/// The same over TLS: a connection is idle once its answer is through TLS and flushed.
#[test]
fn idle_tls_keep_alives_give_way_too() {
    let pki = Pki::new("idle-tls");
    let server = pki.server("agent");
    let web = pki.dir.join("web.yml");
    std::fs::write(
        &web,
        format!("tls_server_config:\n  cert_file: {}\n  key_file: {}\n", server.cert.display(), server.key.display()),
    )
    .unwrap();
    let target = idle_target();
    let pid = target.pid().to_string();
    let tls = Client::tls(&pki.ca(), None);
    let agent = Agent::start_client(
        Command::new(agent::bin()),
        &["--pid", &pid, "--target-name", "station", "--no-discover", "--web-config", web.to_str().unwrap()],
        tls.clone(),
    );
    let mut mine: Vec<KeepAlive> = Vec::new();
    for _ in 0..MAX_PER_PEER + 2 {
        let mut c = KeepAlive::connect_from(peer(7), agent.port, &tls).unwrap();
        assert!(answers(&mut c));
        mine.push(c);
    }
    let m = agent.scrape();
    assert_eq!(limit(&m, "http_idle_evicted"), 2.0);
    assert_eq!(limit(&m, "http_connections_per_peer"), 0.0);
    let open: Vec<usize> = (0..mine.len()).filter(|&i| answers(&mut mine[i])).collect();
    assert_eq!(open, (2..MAX_PER_PEER + 2).collect::<Vec<_>>());
}

/// A user's password as `Authorization: Basic …`.
fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// A bcrypt hash of `password` (cost 10) from pyca/bcrypt.
fn bcrypt_hash(password: &str) -> String {
    let out = Command::new(python())
        .args(["-c", "import bcrypt, sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(10)).decode())"])
        .arg(password)
        .output()
        .expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// What one flooding client got.
#[derive(Debug, Default)]
struct Got {
    unauthorized: u64,
    too_many: u64,
}

#[test]
fn a_flood_of_wrong_passwords_stays_within_its_budget_and_scrapes_go_on() {
    const USER: &str = "prometheus";
    const PASSWORD: &str = "scrape-s3cret-pw";
    const FLOODERS: u8 = 4;
    const FLOOD: Duration = Duration::from_secs(10);
    let dir = std::env::temp_dir().join(format!("pywats-agent-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let web = dir.join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  {USER}: '{}'\n", bcrypt_hash(PASSWORD))).unwrap();
    let target = idle_target();
    let pid = target.pid().to_string();
    let good = Client::plain().basic(USER, PASSWORD);
    let agent = Agent::start_client(
        Command::new(agent::bin()),
        &["--pid", &pid, "--target-name", "station", "--no-discover", "--web-config", web.to_str().unwrap()],
        good.clone(),
    );
    let port = agent.port;
    let bcrypt = |m: &prom::Samples, result| counter(m, "pywats_agent_http_bcrypt_checks_total", &[("result", result)]);

    // The right password costs one bcrypt run, then it is remembered.
    for _ in 0..3 {
        assert_eq!(good.get(port, "/metrics").unwrap().status, 200);
    }
    // A scraper with a wrong password gets its 401 every time, for one run.
    let mut stale = KeepAlive::connect_from(peer(9), port, &Client::plain()).unwrap();
    for _ in 0..20 {
        assert_eq!(stale.get_with("/metrics", Some(&basic(USER, "last-years-pw"))).unwrap().status, 401);
    }
    let m0 = agent.scrape();
    assert_eq!((bcrypt(&m0, "accepted"), bcrypt(&m0, "rejected")), (1.0, 1.0));

    // Four clients send wrong passwords, each a new one, as fast as they are
    // answered; meanwhile the right one scrapes every 100 ms.
    let me = agent.pid();
    let cpu_before = proc::cpu_seconds(me);
    let start = Instant::now();
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|f| {
            thread::spawn(move || {
                let mut got = Got::default();
                let mut c = KeepAlive::connect_from(peer(2 + f), port, &Client::plain()).unwrap();
                let mut i = 0;
                while start.elapsed() < FLOOD {
                    i += 1;
                    match c.get_with("/metrics", Some(&basic(USER, &format!("guess-{f}-{i}")))) {
                        Ok(r) if r.status == 401 => got.unauthorized += 1,
                        Ok(r) if r.status == 429 => got.too_many += 1,
                        Ok(r) => panic!("flooder {f}: {} {}", r.status, r.body),
                        Err(e) => panic!("flooder {f}, request {i}: {e}"),
                    }
                }
                got
            })
        })
        .collect();
    let mut scrapes = Vec::new();
    while start.elapsed() < FLOOD {
        let asked = Instant::now();
        let r = good.get(port, "/metrics").unwrap_or_else(|e| panic!("a scrape during the flood: {e}"));
        scrapes.push((r.status, asked.elapsed()));
        thread::sleep(Duration::from_millis(100));
    }
    let got: Vec<Got> = flooders.into_iter().map(|f| f.join().unwrap()).collect();
    let took = start.elapsed().as_secs_f64();
    let cpu = proc::cpu_seconds(me) - cpu_before;
    let m = agent.scrape();

    let (unauthorized, too_many) = got.iter().fold((0, 0), |(u, t), g| (u + g.unauthorized, t + g.too_many));
    let rejected = bcrypt(&m, "rejected") - bcrypt(&m0, "rejected");
    let refused = limit(&m, "http_auth_failures_per_peer") + limit(&m, "http_auth_failures")
        - limit(&m0, "http_auth_failures_per_peer")
        - limit(&m0, "http_auth_failures");
    let mut latencies: Vec<f64> = scrapes.iter().map(|(_, t)| t.as_secs_f64() * 1000.0).collect();
    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "{FLOODERS} clients, {took:.1} s: {unauthorized} answered 401 after a bcrypt run, {too_many} answered 429 \
         without one; agent CPU {cpu:.2} s ({:.0}% of a core); {} scrapes with the right password, all 200: \
         p50 {:.1} ms, max {:.1} ms; per flooder {got:?}",
        cpu / took * 100.0,
        scrapes.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
    assert!(scrapes.iter().all(|(status, _)| *status == 200), "{scrapes:?}");
    assert_eq!(rejected, unauthorized as f64, "every 401 of the flood is one bcrypt run");
    assert_eq!(refused, too_many as f64, "every 429 is counted under its budget");
    assert_eq!(bcrypt(&m, "accepted"), 1.0, "the right password stayed remembered");
    // Within the budgets: each peer's, and all peers' together.
    let per_peer = FLOODERS as f64 * (PEER_BURST + PEER_PER_SECOND * took);
    let all = ALL_BURST + ALL_PER_SECOND * took;
    assert!(rejected <= per_peer.min(all).floor(), "{rejected} bcrypt runs failed in {took:.1} s");
    let _ = std::fs::remove_dir_all(&dir);
}
