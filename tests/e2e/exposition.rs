//! What `/metrics` answers besides the plain text format: OpenMetrics with
//! exemplars on the request-duration buckets (stored by a real Prometheus
//! 2.42 with `--enable-feature=exemplar-storage` and read back through its
//! API), gzip and zstd when the scraper accepts them, and the agent's own
//! `process_*` metrics, against the real pyWATS client and `/proc`.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Read as _,
    time::Duration,
};

use pywats_agent_tests::{
    agent::Agent,
    free_port, http,
    prom::Samples,
    prometheus::{percent_encode, Prometheus},
    promtool,
    py::Py,
    unix_now, wait_for,
};
use serde_json::Value;

const TOKEN: &str = "ZmxlZXQ6c2VjcmV0LXRva2Vu";
const TARGET: &str = "st1";
/// The agent's request-duration buckets (prometheus_client's defaults).
const BOUNDS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// A WATS-like server, the real pyWATS client, and the agent watching it.
struct Station {
    _server: Py,
    client: Py,
    agent: Agent,
}

impl Station {
    fn start(fail_every: u32) -> Station {
        let port = free_port();
        let server = Py::start("wats_server.py", &[&port.to_string(), TOKEN, "--fail-every", &fail_every.to_string()]);
        let url = format!("http://127.0.0.1:{port}");
        let (client, first) = Py::spawn("station_client.py", &["--url", &url, "--token", TOKEN]);
        let pid = first.strip_prefix("pid ").unwrap_or_else(|| panic!("station_client said {first:?}")).to_string();
        let agent = Agent::start(&["--pid", &pid, "--target-name", TARGET, "--no-discover", "--debug-requests"]);
        Station { _server: server, client, agent }
    }

    fn ask(&mut self, command: &str) -> Value {
        serde_json::from_str(&self.client.ask(command)).unwrap()
    }

    /// Scrapes once the agent has counted every request the client made.
    fn counted(&mut self) -> Samples {
        let made = self.ask("totals")["requests"].as_f64().unwrap();
        wait_for(Duration::from_secs(20), "the agent to count every request", || {
            let m = self.agent.scrape();
            let seen: f64 = m.series("pywats_http_requests_total").iter().map(|(_, v)| v).sum();
            (seen == made).then_some(m)
        })
    }
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// The bucket a duration falls in: the index of its `le`, 14 for `+Inf`.
fn bucket(seconds: f64) -> usize {
    BOUNDS.iter().position(|b| seconds <= *b).unwrap_or(BOUNDS.len())
}

fn le_index(le: &str) -> usize {
    if le == "+Inf" {
        BOUNDS.len()
    } else {
        BOUNDS.iter().position(|b| b.to_string() == le).unwrap_or_else(|| panic!("le {le}"))
    }
}

/// One stored exemplar: series (method, endpoint, le), its label, id, value, time.
#[derive(Debug, Clone)]
struct Stored {
    endpoint: String,
    le: String,
    label: String,
    id: String,
    value: f64,
    at: f64,
}

fn stored_exemplars(prometheus: &Prometheus, from: f64) -> Vec<Stored> {
    let query = percent_encode(&format!("pywats_http_request_duration_seconds_bucket{{target=\"{TARGET}\"}}"));
    let data = prometheus.api(&format!("/api/v1/query_exemplars?query={query}&start={from}&end={}", unix_now() + 60.0));
    let mut out = Vec::new();
    for series in data.as_array().unwrap() {
        let labels = &series["seriesLabels"];
        for e in series["exemplars"].as_array().unwrap() {
            let pairs = e["labels"].as_object().unwrap();
            assert_eq!(pairs.len(), 1, "one label per exemplar: {e}");
            let (label, id) = pairs.iter().next().unwrap();
            out.push(Stored {
                endpoint: labels["endpoint"].as_str().unwrap().to_string(),
                le: labels["le"].as_str().unwrap().to_string(),
                label: label.clone(),
                id: id.as_str().unwrap().to_string(),
                value: e["value"].as_str().unwrap().parse().unwrap(),
                at: e["timestamp"].as_f64().unwrap(),
            });
        }
    }
    out
}

#[test]
fn a_real_prometheus_stores_the_exemplars_of_report_uploads_and_correlated_requests() {
    let mut st = Station::start(5);
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: pywats-agent\n    \
         static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        st.agent.port
    );
    let prometheus = Prometheus::start_with(&config, &["--enable-feature=exemplar-storage"]);
    let from = unix_now() - 1.0;
    // Reports, a request at a time, so that Prometheus scrapes between them
    // and stores many of their exemplars.
    let mut reports = BTreeSet::new();
    for _ in 0..4 {
        let r = st.ask("submit 5 0.3");
        reports.extend(strings(&r["ids"]));
    }
    let traces = strings(&st.ask("traceparent 5"));
    // Stored before the correlation ids take their buckets' places.
    wait_for(Duration::from_secs(30), "a trace id among the stored exemplars", || {
        stored_exemplars(&prometheus, from).iter().any(|e| e.label == "trace_id").then_some(())
    });
    let correlations = strings(&st.ask("correlation 5"));
    let m = st.counted();
    let recent = st.agent.get("/debug/requests").body;

    // Prometheus scraped OpenMetrics (exemplars come only with it) and has every request.
    let total = st.ask("totals")["requests"].as_f64().unwrap();
    assert_eq!(total, 30.0);
    let in_prometheus = wait_for(Duration::from_secs(30), "Prometheus to have every request", || {
        let q = prometheus.query(&format!("sum(pywats_http_requests_total{{target=\"{TARGET}\"}})"));
        q.first().map(|(_, v)| *v).filter(|v| *v == total)
    });
    assert_eq!(in_prometheus, total);
    // The newest stored exemplar of each bucket is the agent's newest request
    // of that bucket with an id (/debug/requests, newest first), with its
    // duration, once Prometheus has scraped since the last request.
    let recent: Value = serde_json::from_str(&recent).unwrap();
    let mut newest: BTreeMap<(String, usize), (String, f64)> = BTreeMap::new();
    for r in recent["requests"].as_array().unwrap().iter().rev() {
        let Some(id) = r["request_id"].as_str() else { continue };
        let seconds = r["duration_ms"].as_f64().unwrap() / 1e3;
        newest.insert((r["endpoint"].as_str().unwrap().to_string(), bucket(seconds)), (id.to_string(), seconds));
    }
    let newest_stored = |stored: &[Stored]| {
        let mut by_bucket: BTreeMap<(String, usize), Stored> = BTreeMap::new();
        for e in stored {
            let key = (e.endpoint.clone(), le_index(&e.le));
            if by_bucket.get(&key).is_none_or(|s| s.at < e.at) {
                by_bucket.insert(key, e.clone());
            }
        }
        by_bucket.into_iter().map(|(k, e)| (k, (e.id, e.value))).collect::<BTreeMap<_, _>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let latest = loop {
        let stored = stored_exemplars(&prometheus, from);
        let now = newest_stored(&stored);
        let same = now.len() == newest.len()
            && now.iter().all(|(k, (id, v))| newest.get(k).is_some_and(|(i, s)| i == id && (v - s).abs() < 1e-9));
        if same || std::time::Instant::now() > deadline {
            assert_eq!(now.len(), newest.len(), "buckets with exemplars: {now:?}\nvs the agent's requests {newest:?}");
            for (key, (id, seconds)) in &newest {
                let (stored_id, value) = &now[key];
                assert_eq!(stored_id, id, "{key:?}");
                assert!((value - seconds).abs() < 1e-9, "{key:?}: {value} vs {seconds}");
            }
            break stored;
        }
        std::thread::sleep(Duration::from_millis(500));
    };

    // Each stored exemplar names a request of its series, and sits in its bucket.
    let mut seen_labels = BTreeSet::new();
    for e in &latest {
        let (ids, endpoint) = match e.label.as_str() {
            "report_id" => (&reports, "/api/Report/WSJF"),
            "trace_id" => (&traces, "/api/App/Version"),
            "request_id" => (&correlations, "/api/App/Version"),
            other => panic!("exemplar label {other}: {e:?}"),
        };
        assert!(ids.contains(&e.id), "{e:?} names no request the client made");
        assert_eq!(e.endpoint, endpoint, "{e:?}");
        assert_eq!(bucket(e.value), le_index(&e.le), "{e:?} outside its bucket");
        assert!(e.at >= from && e.at <= unix_now(), "{e:?}");
        seen_labels.insert(e.label.clone());
    }
    assert_eq!(seen_labels, BTreeSet::from(["report_id".into(), "trace_id".into(), "request_id".into()]));
    // The id the client sent beside its correlation id, and its token, stay in the agent.
    let exposition = openmetrics(&st.agent);
    for secret in ["not-this-one", TOKEN] {
        assert!(!exposition.contains(secret) && !recent.to_string().contains(secret), "{secret} leaked");
    }
    assert_eq!(m.get("pywats_agent_limit_hits_total", &[("limit", "exemplars")]), Some(0.0));
}

/// The OpenMetrics exposition, as Prometheus asks for it.
fn openmetrics(agent: &Agent) -> String {
    let (status, headers, body) = http::get_bytes(agent.port, "/metrics", &[("Accept", OPENMETRICS)]).unwrap();
    assert_eq!(status, 200);
    let ct = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.as_str());
    assert_eq!(ct, Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    String::from_utf8(body).unwrap()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The series of an exposition (name and labels, as written), values and exemplars left out.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(" # {").next().unwrap().rsplit_once(' ').unwrap().0.to_string())
        .collect()
}

#[test]
fn metrics_come_compressed_and_in_openmetrics_when_asked_and_the_text_stays_the_default() {
    let mut st = Station::start(0);
    st.ask("submit 3 0");
    st.counted();
    let port = st.agent.port;
    let plain = |headers: &[(&str, &str)]| {
        let (status, h, body) = http::get_bytes(port, "/metrics", headers).unwrap();
        assert_eq!(status, 200);
        let vary = header(&h, "vary").unwrap_or_default().to_string();
        assert!(vary.contains("Accept-Encoding") && vary.contains("Accept"), "{vary}");
        let encoding = header(&h, "content-encoding").map(String::from);
        let text = match encoding.as_deref() {
            None => body.clone(),
            Some("gzip") => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out).unwrap();
                out
            }
            Some("zstd") => zstd::decode_all(&body[..]).unwrap(),
            Some(other) => panic!("Content-Encoding {other}"),
        };
        (encoding, header(&h, "content-type").unwrap().to_string(), body.len(), String::from_utf8(text).unwrap())
    };
    // Each variant once, so that the series of the agent's own requests exist in all.
    let variants: [&[(&str, &str)]; 5] = [
        &[],
        &[("Accept-Encoding", "gzip")],
        &[("Accept-Encoding", "deflate, gzip, br, zstd")],
        &[("Accept", OPENMETRICS), ("Accept-Encoding", "gzip")],
        &[("Accept", "*/*"), ("Accept-Encoding", "identity")],
    ];
    for v in variants {
        plain(v);
    }
    let answers: Vec<_> = variants.iter().map(|v| plain(v)).collect();
    let text_type = "text/plain; version=0.0.4; charset=utf-8";
    let om_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    let expected = [
        (None, text_type),
        (Some("gzip"), text_type),
        (Some("zstd"), text_type),
        (Some("gzip"), om_type),
        (None, text_type),
    ];
    for ((encoding, ct, _, _), (want_encoding, want_ct)) in answers.iter().zip(expected) {
        assert_eq!((encoding.as_deref(), ct.as_str()), (want_encoding, want_ct));
    }
    let (_, _, plain_bytes, text) = &answers[0];
    let (_, _, gzip_bytes, gzip_text) = &answers[1];
    let (_, _, zstd_bytes, zstd_text) = &answers[2];
    let (_, _, _, om) = &answers[3];
    println!("/metrics: {plain_bytes} bytes plain, {gzip_bytes} gzip, {zstd_bytes} zstd");
    assert!(gzip_bytes * 4 < *plain_bytes && zstd_bytes * 4 < *plain_bytes);
    for t in [text, gzip_text, zstd_text] {
        promtool::check_metrics(t);
    }
    assert_eq!(series(gzip_text), series(text));
    assert_eq!(series(zstd_text), series(text));

    // OpenMetrics: the same series under the same names, every counter a
    // `_total` (no family falls back to `unknown`), ending in `# EOF`.
    assert!(om.ends_with("# EOF\n"), "{}", &om[om.len().saturating_sub(200)..]);
    assert!(!om.contains(" unknown\n"), "a family without a type in OpenMetrics");
    assert!(om.contains("# TYPE pywats_http_requests counter\n"));
    assert_eq!(series(om), series(text));
}

/// `/proc/<pid>/stat` fields after the state: index 0 is field 4 (ppid).
fn stat(pid: u32) -> Vec<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    s.rsplit_once(") ").unwrap().1.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect()
}

#[test]
fn the_agents_own_process_metrics_agree_with_proc() {
    let st = Station::start(0);
    let pid = st.agent.pid();
    // The TLS probes are attached on a thread of their own, which holds fds while it works.
    st.agent.wait_tls_probed();
    let ticks = 100.0; // USER_HZ on Linux
    let (before, fds_before) = (stat(pid), std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count());
    let m = st.agent.scrape();
    let (after, fds_after) = (stat(pid), std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count());
    let get = |name: &str| m.get(name, &[]).unwrap_or_else(|| panic!("no {name}"));
    // stat fields: utime 14, stime 15, starttime 22, vsize 23 (1-based).
    let cpu = |s: &[u64]| (s[10] + s[11]) as f64 / ticks;
    let cpu_seconds = get("process_cpu_seconds_total");
    assert!(cpu(&before) <= cpu_seconds && cpu_seconds <= cpu(&after), "{cpu_seconds}");
    let vsize = get("process_virtual_memory_bytes");
    assert!(before[19].min(after[19]) as f64 <= vsize && vsize <= before[19].max(after[19]) as f64, "{vsize}");
    let btime: f64 = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("btime ").map(|v| v.trim().parse().unwrap()))
        .unwrap();
    assert_eq!(get("process_start_time_seconds"), btime + before[18] as f64 / ticks);
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: f64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(get("process_max_fds"), soft);
    // The scrape's own connection is open while it is read, and the agent's
    // threads open a /proc file now and then (one each, for a moment: the
    // lifecycle, the sampler, the file reader).
    let fds = get("process_open_fds") as usize;
    assert!(
        fds_before.min(fds_after) <= fds && fds <= fds_before.max(fds_after) + 1 + 3,
        "{fds}: {fds_before} before, {fds_after} after"
    );
    let rss = get("process_resident_memory_bytes");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let vm_rss: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap();
    // stat and status sum the kernel's per-CPU RSS counters apart: a few pages.
    assert!((rss - vm_rss * 1024.0).abs() < 4.0 * 1048576.0, "{rss} vs {vm_rss} kB");
    assert_eq!(m.types["process_cpu_seconds_total"], "counter");
    assert_eq!(m.types["process_open_fds"], "gauge");
}
