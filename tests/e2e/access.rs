//! Who may read the agent's pages, and what its server holds up against:
//! TLS and mTLS from `--web-config` (certificates made by `openssl` per
//! run), bcrypt users (hashed by pyca/bcrypt, not the agent's crate), a
//! bearer token, SIGHUP rotation, a slowloris client, a flood of idle
//! connections under a 1024 fd limit, the shutdown deadline, and a real
//! Prometheus scraping over TLS with basic auth.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use pywats_agent_tests::{
    agent::{self, Agent},
    free_port,
    http::{self, Client},
    pki::{Issued, Pki},
    proc, prom,
    prometheus::Prometheus,
    promtool,
    py::{python, Py},
    wait_for,
};
use rustls::pki_types::{pem::PemObject, CertificateDer};

const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-s3cret-pw";
const TARGET: &str = "station";
/// The agent's defaults (agent/src/http/limits.rs, cli.rs).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

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

/// A web config with TLS (`server`, `tls_extra` lines) and `users`.
fn web_config(server: &Issued, tls_extra: &str, users: &[(&str, &str)]) -> String {
    let mut text = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n{tls_extra}",
        server.cert.display(),
        server.key.display()
    );
    if !users.is_empty() {
        text.push_str("basic_auth_users:\n");
        for (user, password) in users {
            text.push_str(&format!("  {user}: '{}'\n", bcrypt_hash(password)));
        }
    }
    text
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn der(cert: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(cert).unwrap().to_vec()
}

fn signal(agent: &Agent, sig: i32) {
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(agent.pid() as i32, sig) }, 0);
}

fn idle_target() -> Py {
    Py::start("procs.py", &["sleeper"])
}

fn agent_args<'a>(target: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--pid", target, "--target-name", TARGET, "--no-discover"];
    args.extend_from_slice(extra);
    args
}

/// A watched HTTP client and the server it talks to (tests/py), as in http.rs.
struct Watched {
    server_port: u16,
    _server: Py,
    client: Py,
}

impl Watched {
    fn start() -> Watched {
        let server_port = free_port();
        let server = Py::start("http_server.py", &[&server_port.to_string()]);
        let client = Py::start("http_client.py", &[&server_port.to_string()]);
        Watched { server_port, _server: server, client }
    }

    /// What the server answered, in all.
    fn server_total(&self) -> f64 {
        let body: serde_json::Value =
            serde_json::from_str(&http::get(self.server_port, "/__counts").unwrap().body).unwrap();
        body["counts"].as_array().unwrap().iter().map(|row| row[3].as_f64().unwrap()).sum()
    }
}

/// The agent's count of the target's requests, once it reaches `total` and settles.
fn agent_total(agent: &Agent, total: f64) -> f64 {
    let sum = |m: &prom::Samples| -> f64 { m.series("pywats_http_requests_total").iter().map(|(_, v)| v).sum() };
    wait_for(Duration::from_secs(30), "the agent to count the target's requests", || {
        (sum(&agent.scrape()) >= total).then_some(())
    });
    sum(&agent.settled())
}

#[test]
fn tls_and_basic_auth_guard_everything_but_the_probes() {
    let pki = Pki::new("basic");
    let web = write(&pki.dir.join("web.yml"), &web_config(&pki.server("agent"), "", &[(USER, PASSWORD)]));
    let target = idle_target();
    let good = Client::tls(&pki.ca(), None).basic(USER, PASSWORD);
    let pid = target.pid().to_string();
    let agent = Agent::start_client(
        Command::new(agent::bin()),
        &agent_args(&pid, &["--web-config", web.to_str().unwrap()]),
        good.clone(),
    );
    let anonymous = good.anonymous();
    let port = agent.port;

    let r = anonymous.get(port, "/metrics").unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.headers_named("WWW-Authenticate"), ["Basic realm=\"pywats-agent\", charset=\"UTF-8\""]);
    let wrong = Client::tls(&pki.ca(), None).basic(USER, "not-the-password");
    assert_eq!(wrong.get(port, "/metrics").unwrap().status, 401);
    let stranger = Client::tls(&pki.ca(), None).basic("someone", PASSWORD);
    assert_eq!(stranger.get(port, "/metrics").unwrap().status, 401);
    let r = good.get(port, "/metrics").unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.contains("pywats_agent_build_info"), "{}", r.body);
    assert_eq!(r.server_cert, Some(der(&pki.dir.join("agent.crt"))));

    for path in ["/health", "/health/details", "/nowhere", "/debug/requests"] {
        assert_eq!(anonymous.get(port, path).unwrap().status, 401, "{path}");
    }
    for path in ["/health/live", "/health/ready"] {
        assert_eq!(anonymous.get(port, path).unwrap().status, 200, "{path} is open to probes");
    }
    assert_eq!(good.get(port, "/debug/requests").unwrap().status, 404, "off without --debug-requests");
    assert_eq!(good.get(port, "/health/details").unwrap().status, 200);

    // Plain HTTP on the TLS port: the handshake fails, no HTTP is spoken.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    plain.write_all(b"GET /health/live HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/") && !String::from_utf8_lossy(&got).contains("ok"), "{got:?}");
    assert!(http::get(port, "/health/live").is_err(), "plain HTTP is not served");

    let m = agent.scrape();
    assert_eq!(m.get("pywats_agent_http_requests_total", &[("path", "/metrics"), ("code", "401")]), Some(3.0));
    let log = agent.log();
    assert!(!log.contains(PASSWORD) && !log.contains("$2b$"), "the log shows a secret");
}

#[test]
fn a_bearer_token_and_probes_behind_auth() {
    let dir = std::env::temp_dir().join(format!("pywats-agent-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = "t0ken-Abc.123";
    let token_file = write(&dir.join("token"), &format!("{token}\n"));
    let target = idle_target();
    let pid = target.pid().to_string();
    let good = Client::plain().bearer(token);
    let agent = Agent::start_client(
        Command::new(agent::bin()),
        &agent_args(&pid, &["--auth-token-file", token_file.to_str().unwrap(), "--auth-probes", "--debug-requests"]),
        good.clone(),
    );
    let port = agent.port;
    for path in ["/metrics", "/health/live", "/health/ready", "/debug/requests"] {
        let r = Client::plain().get(port, path).unwrap();
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert_eq!(r.headers_named("WWW-Authenticate"), ["Bearer realm=\"pywats-agent\""]);
        assert_eq!(Client::plain().bearer("t0ken-Abc.12").get(port, path).unwrap().status, 401, "{path}");
        assert_eq!(Client::plain().bearer("t0ken-Abc.1234").get(port, path).unwrap().status, 401, "{path}");
        assert_eq!(Client::plain().basic("t0ken", token).get(port, path).unwrap().status, 401, "{path}");
        assert_eq!(good.get(port, path).unwrap().status, 200, "{path}");
    }
    let recent: serde_json::Value = serde_json::from_str(&agent.get("/debug/requests").body).unwrap();
    assert!(recent["requests"].is_array());
    assert!(!agent.log().contains(token), "the log shows the token");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mutual_tls_takes_only_certificates_of_the_client_ca() {
    let pki = Pki::new("mtls");
    let clients = Pki::new("mtls-clients");
    let rogue = Pki::new("mtls-rogue");
    let server = pki.server("agent");
    let (good_id, rogue_id) = (clients.client("scraper"), rogue.client("scraper"));
    let require =
        format!("  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n", clients.ca().display());
    let web = write(&pki.dir.join("web.yml"), &web_config(&server, &require, &[]));
    let target = idle_target();
    let pid = target.pid().to_string();
    let with_cert = Client::tls(&pki.ca(), Some((&good_id.cert, &good_id.key)));
    let agent = Agent::start_client(
        Command::new(agent::bin()),
        &agent_args(&pid, &["--web-config", web.to_str().unwrap()]),
        with_cert.clone(),
    );
    let port = agent.port;
    let without = Client::tls(&pki.ca(), None);
    let with_rogue = Client::tls(&pki.ca(), Some((&rogue_id.cert, &rogue_id.key)));
    assert_eq!(with_cert.get(port, "/metrics").unwrap().status, 200);
    assert!(without.get(port, "/health/live").is_err(), "no client certificate: refused");
    assert!(with_rogue.get(port, "/health/live").is_err(), "a certificate of another CA: refused");

    // The same file with VerifyClientCertIfGiven, through SIGHUP.
    let if_given = require.replace("RequireAndVerifyClientCert", "VerifyClientCertIfGiven");
    write(&web, &web_config(&server, &if_given, &[]));
    signal(&agent, libc::SIGHUP);
    wait_for(Duration::from_secs(20), "the reload", || {
        agent.scrape().get("pywats_agent_web_config_reloads_total", &[("result", "success")]).filter(|&n| n == 1.0)
    });
    assert_eq!(without.get(port, "/metrics").unwrap().status, 200, "no certificate is fine now");
    assert!(with_rogue.get(port, "/metrics").is_err(), "a certificate given is still verified");
    assert_eq!(with_cert.get(port, "/metrics").unwrap().status, 200);
}

#[test]
fn sighup_rotates_certificate_and_users_without_dropping_the_watch() {
    let pki = Pki::new("rotate");
    let first = pki.server("agent-1");
    let live = Issued { cert: pki.dir.join("live.crt"), key: pki.dir.join("live.key") };
    std::fs::copy(&first.cert, &live.cert).unwrap();
    std::fs::copy(&first.key, &live.key).unwrap();
    let web = write(&pki.dir.join("web.yml"), &web_config(&live, "", &[(USER, PASSWORD)]));
    let mut w = Watched::start();
    let pid = w.client.pid().to_string();
    let old = Client::tls(&pki.ca(), None).basic(USER, PASSWORD);
    let mut agent = Agent::start_client(
        Command::new(agent::bin()),
        &agent_args(&pid, &["--web-config", web.to_str().unwrap()]),
        old.clone(),
    );
    assert_eq!(w.client.ask("open"), "\"ok\"");
    w.client.ask("more 5");
    assert_eq!(old.get(agent.port, "/health/live").unwrap().server_cert, Some(der(&first.cert)));

    // Rotation: a new certificate and key in place, a new password.
    let second = pki.server("agent-2");
    std::fs::copy(&second.cert, &live.cert).unwrap();
    std::fs::copy(&second.key, &live.key).unwrap();
    write(&web, &web_config(&live, "", &[(USER, "the-new-s3cret")]));
    signal(&agent, libc::SIGHUP);
    let new = Client::tls(&pki.ca(), None).basic(USER, "the-new-s3cret");
    agent.client = new.clone();
    wait_for(Duration::from_secs(20), "the reload", || {
        new.get(agent.port, "/metrics").ok().filter(|r| r.status == 200)
    });
    let r = new.get(agent.port, "/metrics").unwrap();
    assert_eq!(r.server_cert, Some(der(&second.cert)), "the new certificate is served");
    assert_eq!(old.get(agent.port, "/metrics").unwrap().status, 401, "the old password no longer works");
    w.client.ask("more 5");

    // A broken file: logged, counted, and the configuration in force stays.
    write(&web, "tls_server_config:\n  cert_file: [\n");
    signal(&agent, libc::SIGHUP);
    wait_for(Duration::from_secs(20), "the failed reload", || {
        agent.scrape().get("pywats_agent_web_config_reloads_total", &[("result", "failure")]).filter(|&n| n == 1.0)
    });
    let m = agent.scrape();
    assert_eq!(m.get("pywats_agent_web_config_reloads_total", &[("result", "success")]), Some(1.0));
    assert_eq!(new.get(agent.port, "/metrics").unwrap().server_cert, Some(der(&second.cert)));
    w.client.ask("more 5");

    let total = w.server_total();
    assert_eq!(total, 16.0);
    assert_eq!(agent_total(&agent, total), total, "every request of the target counted across the reloads");
    assert_eq!(agent.details()["targets"][0]["alive"], true);
    let log = agent.log();
    assert!(log.contains("SIGHUP: web config") && log.contains("the configuration in force stays"), "{log}");
    assert!(!log.contains(PASSWORD) && !log.contains("the-new-s3cret"));
    assert!(agent.stop(libc::SIGTERM).success());
}

#[test]
fn a_bad_web_config_exits_2_naming_the_file_and_the_key() {
    let dir = std::env::temp_dir().join(format!("pywats-agent-badweb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unknown = write(&dir.join("unknown.yml"), "tls_server_config:\n  cert_file: a\n  key_file: b\n  ciphers: x\n");
    let missing = write(&dir.join("missing.yml"), "tls_server_config:\n  cert_file: gone.crt\n  key_file: gone.key\n");
    let secret = write(&dir.join("secret.yml"), "basic_auth_users:\n  alice: my-plain-s3cret\n");
    let target = idle_target();
    let pid = target.pid().to_string();
    for (file, says) in [
        (&unknown, "unknown field `ciphers`".to_string()),
        (&missing, format!("tls_server_config.cert_file {}", dir.join("gone.crt").display())),
        (&secret, "the hash of user \"alice\" is not a bcrypt hash".to_string()),
    ] {
        let out = agent::run_to_end(&["--pid", &pid, "--web-config", file.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
        assert!(
            out.stderr.contains(&format!("web config {}", file.display())) && out.stderr.contains(&says),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("my-plain-s3cret"), "{}", out.stderr);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads until the server closes; how long that took from `since`, or None
/// if it answered instead.
fn closed_after(s: &mut TcpStream, since: Instant, mut feed: impl FnMut(&mut TcpStream)) -> Option<Duration> {
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        assert!(since.elapsed() < Duration::from_secs(120), "the connection was never closed");
        match s.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => return None,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => feed(s),
            Err(_) => return Some(since.elapsed()),
        }
    }
}

#[test]
fn a_slowloris_head_is_cut_at_the_header_timeout_and_a_huge_head_refused() {
    let target = idle_target();
    let pid = target.pid().to_string();
    let agent = Agent::start(&agent_args(&pid, &[]));
    let mut s = TcpStream::connect(("127.0.0.1", agent.port)).unwrap();
    let start = Instant::now();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n").unwrap();
    // A header line every half second, never the empty line.
    let cut = closed_after(&mut s, start, |s| {
        let _ = s.write_all(b"X-Slow: 1\r\n");
    })
    .expect("no answer to a head that never ends");
    eprintln!("slowloris cut after {cut:?} (header timeout {HEADER_TIMEOUT:?})");
    assert!(cut >= HEADER_TIMEOUT - Duration::from_millis(500), "cut before the header timeout: {cut:?}");
    assert!(cut <= HEADER_TIMEOUT + Duration::from_secs(20), "not cut within the header timeout: {cut:?}");

    // A head over 16 KiB: 431, not buffered.
    let mut big = TcpStream::connect(("127.0.0.1", agent.port)).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ =
        big.write_all(format!("GET /metrics HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "b".repeat(20_000)).as_bytes());
    let mut answer = Vec::new();
    let _ = big.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 431"), "{}", String::from_utf8_lossy(&answer));

    let m = agent.scrape();
    assert_eq!(m.get("pywats_agent_limit_hits_total", &[("limit", "http_header_timeout")]), Some(1.0));
    assert_eq!(m.get("pywats_agent_limit_hits_total", &[("limit", "http_request_head")]), Some(1.0));
    assert_eq!(m.get("pywats_agent_limit_hits_total", &[("limit", "http_connections")]), Some(0.0));
}

/// Raises this process's own fd limit (the flood needs 2000 sockets).
fn raise_own_nofile(to: u64) {
    let limit = libc::rlimit { rlim_cur: to, rlim_max: to };
    // SAFETY: setrlimit reads the struct we own.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0, "setrlimit");
}

#[test]
fn two_thousand_idle_connections_under_1024_fds_leave_the_watch_exact() {
    const FLOOD: usize = 2000;
    // --web-max-connections 1000 is lowered to a quarter of the fd limit.
    const CAP: usize = 256;
    raise_own_nofile(8192);
    let mut w = Watched::start();
    let pid = w.client.pid().to_string();
    let mut cmd = Command::new(agent::bin());
    // SAFETY: only setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        })
    };
    // Held connections stay held for the test's length; all come from one
    // peer, allowed as many as the cap.
    let agent = Agent::start_with(
        cmd,
        &agent_args(
            &pid,
            &["--web-max-connections", "1000", "--web-max-connections-per-peer", "1000", "--web-header-timeout", "600"],
        ),
    );
    assert!(agent.log().contains("--web-max-connections 1000 lowered to 256"), "{}", agent.log());
    assert_eq!(w.client.ask("open"), "\"ok\"");
    let fds_before = proc::open_fds(agent.pid());

    let mut flood: Vec<TcpStream> = (0..FLOOD)
        .map(|i| TcpStream::connect(("127.0.0.1", agent.port)).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    for s in &flood {
        s.set_nonblocking(true).unwrap();
    }
    // Closed by the agent (EOF or reset) versus still open.
    let closed = |flood: &[TcpStream]| {
        flood
            .iter()
            .filter(|s| {
                let (mut s, mut b): (&TcpStream, _) = (s, [0u8; 1]);
                !matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .count()
    };
    let refused = wait_for(Duration::from_secs(120), "the agent to take or refuse every connection", || {
        let n = closed(&flood);
        (n == FLOOD - CAP).then_some(n)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(closed(&flood), refused, "the held connections stay held");
    let fds_during = proc::open_fds(agent.pid());
    eprintln!("agent fds: {fds_before} before, {fds_during} with {CAP} connections held; {refused} refused");
    assert!(fds_during < 1024 - 256, "fds stay well below the limit: {fds_during}");

    // The watch goes on meanwhile: the target's requests are counted.
    w.client.ask("more 50");
    flood.clear();
    wait_for(Duration::from_secs(30), "/metrics after the flood", || {
        http::get(agent.port, "/metrics").ok().filter(|r| r.status == 200)
    });
    let total = w.server_total();
    assert_eq!(total, 51.0);
    assert_eq!(agent_total(&agent, total), total);
    let m = agent.scrape();
    assert_eq!(m.get("pywats_agent_limit_hits_total", &[("limit", "http_connections")]), Some(refused as f64));
    assert_eq!(agent.details()["targets"][0]["alive"], true);
    assert_eq!(agent.get("/health/ready").status, 200);
}

#[test]
fn sigterm_ends_within_the_shutdown_deadline_with_a_half_sent_request_open() {
    let target = idle_target();
    let pid = target.pid().to_string();
    // A header timeout far past the deadline: only the deadline can end it soon.
    let mut agent = Agent::start(&agent_args(&pid, &["--web-header-timeout", "300"]));
    let mut half = TcpStream::connect(("127.0.0.1", agent.port)).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n").unwrap();
    wait_for(Duration::from_secs(20), "the half-sent request to be accepted", || {
        // This scrape's own connection and the half-sent one.
        agent.scrape().get("pywats_agent_http_connections", &[]).filter(|&n| n == 2.0)
    });
    let start = Instant::now();
    signal(&agent, libc::SIGTERM);
    let status = agent.wait(SHUTDOWN_DEADLINE + Duration::from_secs(60));
    let took = start.elapsed();
    eprintln!("exited {took:?} after SIGTERM (deadline {SHUTDOWN_DEADLINE:?})");
    assert!(status.success(), "{status}");
    assert!(took <= SHUTDOWN_DEADLINE + Duration::from_secs(15), "{took:?}");
    assert!(agent.log().contains("1 connection(s) still open 5 s after shutdown began: closed"), "{}", agent.log());
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth() {
    let pki = Pki::new("prom");
    let web = write(&pki.dir.join("web.yml"), &web_config(&pki.server("agent"), "", &[(USER, PASSWORD)]));
    let mut w = Watched::start();
    let pid = w.client.pid().to_string();
    let good = Client::tls(&pki.ca(), None).basic(USER, PASSWORD);
    let agent = Agent::start_client(
        Command::new(agent::bin()),
        &agent_args(&pid, &["--web-config", web.to_str().unwrap()]),
        good.clone(),
    );
    assert_eq!(w.client.ask("open"), "\"ok\"");
    w.client.ask("more 5");
    let total = w.server_total();
    assert_eq!(agent_total(&agent, total), total);

    let target = format!("127.0.0.1:{}", agent.port);
    let ca = pki.ca();
    let config = format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: agent
    scheme: https
    tls_config:
      ca_file: {ca}
    basic_auth:
      username: {USER}
      password: {PASSWORD}
    static_configs:
      - targets: ['{target}']
  - job_name: agent-without-credentials
    scheme: https
    tls_config:
      ca_file: {ca}
    static_configs:
      - targets: ['{target}']
"#,
        ca = ca.display()
    );
    let prometheus = Prometheus::start(&config);
    let up = wait_for(Duration::from_secs(60), "both jobs scraped", || {
        let up: BTreeMap<String, f64> =
            prometheus.query("up").into_iter().map(|(l, v)| (l["job"].clone(), v)).collect();
        (up.len() == 2).then_some(up)
    });
    assert_eq!(up["agent"], 1.0, "{:?}", prometheus.targets());
    assert_eq!(up["agent-without-credentials"], 0.0);
    let (health, error) = &prometheus.targets()["agent-without-credentials"];
    assert_eq!(health, "down");
    assert!(error.contains("401"), "{error}");
    let requests = wait_for(Duration::from_secs(30), "the target's requests in Prometheus", || {
        let found = prometheus.query(&format!("sum(pywats_http_requests_total{{job=\"agent\",target=\"{TARGET}\"}})"));
        found.first().map(|(_, v)| *v).filter(|&v| v == total)
    });
    assert_eq!(requests, 6.0);

    let exposition = agent.get("/metrics").body;
    promtool::check_metrics(&exposition);
}
