//! Fast keep-alive HTTP/1.1 load over loopback, for the bench's capacity and
//! memory runs: a Python client makes a few thousand requests a second, the
//! agent's limits lie far above that. One request is one `write` and one
//! `read` of the client (two kernel events for the agent), answered by a
//! trivial server that the agent does not watch.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// Every request gets this answer: valid HTTP/1.1, so the agent parses it.
pub const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";

/// Answers every request on every connection, a thread per connection, until the process ends.
pub fn serve(listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        thread::spawn(move || answer(stream));
    }
}

/// Answers each bodiless request (head ending in an empty line) of one connection.
fn answer(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = 0;
    loop {
        let n = match stream.read(&mut buf[pending..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending += n;
        let mut start = 0;
        while let Some(end) = buf[start..pending].windows(4).position(|w| w == b"\r\n\r\n") {
            if stream.write_all(RESPONSE).is_err() {
                return;
            }
            start += end + 4;
        }
        buf.copy_within(start..pending, 0);
        pending -= start;
        if pending == buf.len() {
            return; // a head larger than the buffer: not from our generator
        }
    }
}

/// What one connection is asked to do.
#[derive(Clone, Copy, Debug)]
pub struct Job {
    /// Requests to make; `None`: until `seconds` have passed.
    pub requests: Option<u64>,
    /// Time limit (also a bound on `requests` jobs).
    pub seconds: f64,
    /// Requests per second for this connection; 0: as fast as it can.
    pub rate: f64,
    /// Distinct paths to ask for, over all connections; 0: all of them.
    pub endpoints: usize,
}

/// Keep-alive connections, each driven by a thread of its own.
pub struct Generator {
    jobs: Vec<mpsc::Sender<Job>>,
    done: mpsc::Receiver<u64>,
}

impl Generator {
    /// Opens `conns` connections to 127.0.0.1:`port`; connection `c` asks for
    /// `/load/e<k>` with `k` cycling through its share of `endpoints` paths.
    pub fn connect(port: u16, conns: usize, endpoints: usize) -> std::io::Result<Generator> {
        let (done_tx, done) = mpsc::channel();
        let mut jobs = Vec::new();
        for c in 0..conns {
            let mut stream = TcpStream::connect(("127.0.0.1", port))?;
            stream.set_nodelay(true)?;
            let requests: Vec<Vec<u8>> = (0..endpoints)
                .filter(|k| k % conns == c || endpoints < conns)
                .map(|k| {
                    format!("GET /load/e{k} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n\r\n").into_bytes()
                })
                .collect();
            let (tx, rx) = mpsc::channel::<Job>();
            let done_tx = done_tx.clone();
            thread::spawn(move || {
                for job in rx {
                    let made = drive(&mut stream, &requests, job);
                    if done_tx.send(made.unwrap_or(0)).is_err() {
                        return;
                    }
                }
            });
            jobs.push(tx);
        }
        Ok(Generator { jobs, done })
    }

    /// Runs `job` split evenly over the connections; returns the requests
    /// completed (answer read) and the wall time taken.
    pub fn run(&self, job: Job) -> (u64, Duration) {
        let n = self.jobs.len() as u64;
        let start = Instant::now();
        for (i, tx) in self.jobs.iter().enumerate() {
            let share = job.requests.map(|r| r / n + u64::from((i as u64) < r % n));
            let endpoints = job.endpoints.div_ceil(n as usize);
            let _ = tx.send(Job { requests: share, rate: job.rate / n as f64, endpoints, ..job });
        }
        let made = (0..n).map(|_| self.done.recv().unwrap_or(0)).sum();
        (made, start.elapsed())
    }
}

/// One connection's share of a job: request, read the whole answer, pace.
fn drive(stream: &mut TcpStream, requests: &[Vec<u8>], job: Job) -> std::io::Result<u64> {
    let start = Instant::now();
    let limit = Duration::from_secs_f64(job.seconds);
    let mut answer = [0u8; RESPONSE.len()];
    let mut made = 0u64;
    let paths = if job.endpoints == 0 { requests.len() } else { job.endpoints.min(requests.len()) };
    while job.requests.is_none_or(|r| made < r) && start.elapsed() < limit {
        if job.rate > 0.0 {
            // Sleep only when well ahead: short sleeps overshoot by their slack.
            let due = start + Duration::from_secs_f64(made as f64 / job.rate);
            let now = Instant::now();
            if due > now + Duration::from_millis(1) {
                thread::sleep(due - now);
            }
        }
        stream.write_all(&requests[made as usize % paths])?;
        stream.read_exact(&mut answer)?;
        made += 1;
    }
    Ok(made)
}
