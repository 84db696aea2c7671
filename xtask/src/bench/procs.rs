//! The bench's child processes (servers, clients, load generators), talked to
//! over a line protocol and killed and reaped however the bench ends.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use anyhow::{bail, Context as _};
use pywats_agent_tests::py;
use serde_json::Value;

pub struct Proc {
    name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// `tests/py/<script>` run by the test virtualenv's Python.
pub fn python(script: &str) -> Command {
    let mut c = Command::new(py::python());
    c.arg(py::script(script));
    c
}

impl Proc {
    /// Starts `cmd` and waits for its first line, "ready". Its stderr is
    /// inherited: a traceback or panic shows up where the bench runs.
    pub fn start(name: &str, cmd: &mut Command) -> anyhow::Result<Proc> {
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().with_context(|| format!("starting {name}"))?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut p = Proc { name: name.into(), child, stdin, stdout };
        let first = p.line()?;
        if first != "ready" {
            bail!("{name} said {first:?} instead of \"ready\"");
        }
        Ok(p)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut l = String::new();
        self.stdout.read_line(&mut l).with_context(|| format!("reading from {}", self.name))?;
        if l.is_empty() {
            bail!("{} exited ({:?})", self.name, self.child.try_wait().ok().flatten());
        }
        Ok(l.trim().to_string())
    }

    /// Sends one command and parses its one-line JSON answer.
    pub fn ask(&mut self, command: &str) -> anyhow::Result<Value> {
        self.send(command)?;
        self.answer()
    }

    /// Sends one command without waiting (several processes can then work at once).
    pub fn send(&mut self, command: &str) -> anyhow::Result<()> {
        writeln!(self.stdin, "{command}")
            .and_then(|_| self.stdin.flush())
            .with_context(|| format!("writing to {}", self.name))
    }

    /// The one-line JSON answer to the command sent last.
    pub fn answer(&mut self) -> anyhow::Result<Value> {
        let answer = self.line()?;
        serde_json::from_str(&answer).with_context(|| format!("{} answered {answer:?}", self.name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something listens on 127.0.0.1:`port` (servers that say
/// "ready" a moment before they bind).
pub fn wait_for_port(port: u16) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > std::time::Duration::from_secs(20) {
            bail!("nothing listens on 127.0.0.1:{port} after 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}
