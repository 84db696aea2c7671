//! Keep-alive HTTP/1.1 load for `cargo xtask bench` (`pywats_agent_tests::load`).
//!
//! Usage:
//!   bench_load serve PORT                    the server (loopback only); prints "ready"
//!   bench_load client PORT CONNS ENDPOINTS   opens CONNS connections, prints "ready",
//!                                            then answers each line of stdin:
//!     run SECONDS RATE    requests for SECONDS at RATE per second in all (0: as fast as it can)
//!     count N RATE [E]    N requests at RATE per second in all (0: as fast as it can),
//!                         over the first E paths only (default: all)
//!   with one JSON line: {"requests": completed, "seconds": wall time}.

use std::{
    io::{BufRead, Write},
    net::TcpListener,
};

use pywats_agent_tests::load::{self, Generator, Job};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("argument {i}: expected {what}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = arg(&args, 2, "a port");
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the load server");
            println!("ready");
            load::serve(listener);
        }
        Some("client") => {
            let generator = Generator::connect(port, arg(&args, 3, "connections"), arg(&args, 4, "endpoints"))
                .expect("connect to the load server");
            println!("ready");
            for line in std::io::stdin().lock().lines() {
                let line = line.expect("read stdin");
                let words: Vec<String> = line.split_whitespace().map(String::from).collect();
                let job = match words.first().map(String::as_str) {
                    Some("run") => Job {
                        requests: None,
                        seconds: arg(&words, 1, "seconds"),
                        rate: arg(&words, 2, "rate"),
                        endpoints: 0,
                    },
                    // A time limit far above what any count here needs, so a stuck run ends.
                    Some("count") => Job {
                        requests: Some(arg(&words, 1, "requests")),
                        seconds: 600.0,
                        rate: arg(&words, 2, "rate"),
                        endpoints: if words.len() > 3 { arg(&words, 3, "endpoints") } else { 0 },
                    },
                    _ => break,
                };
                let (requests, took) = generator.run(job);
                println!("{{\"requests\": {requests}, \"seconds\": {}}}", took.as_secs_f64());
                std::io::stdout().flush().expect("write stdout");
            }
        }
        _ => panic!("usage: bench_load serve PORT | bench_load client PORT CONNS ENDPOINTS"),
    }
}
