//! Python processes driven over a line protocol on stdin/stdout.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

/// The virtualenv's Python (set by `cargo xtask test`), else `python3`.
pub fn python() -> PathBuf {
    std::env::var_os("PYWATS_AGENT_PYTHON").map(PathBuf::from).unwrap_or_else(|| "python3".into())
}

pub fn script(name: &str) -> PathBuf {
    crate::root().join("tests/py").join(name)
}

pub struct Py {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Reaped: its pid (and group id) may belong to someone else now.
    reaped: bool,
}

impl Py {
    /// Starts `tests/py/<script> args…` and waits for its "ready" line.
    pub fn start(script_name: &str, args: &[&str]) -> Py {
        let (py, first) = Py::spawn(script_name, args);
        assert_eq!(first, "ready", "{script_name} did not start");
        py
    }

    /// Starts `tests/py/<script> args…` and returns its first line.
    pub fn spawn(script_name: &str, args: &[&str]) -> (Py, String) {
        Py::spawn_env(script_name, args, &[])
    }

    /// As [`Py::spawn`], with extra environment variables.
    pub fn spawn_env(script_name: &str, args: &[&str], env: &[(&str, &str)]) -> (Py, String) {
        let mut cmd = Command::new(python());
        cmd.arg(script(script_name)).args(args).envs(env.iter().copied());
        Py::spawn_command(cmd)
    }

    /// A command that ends up running a script of the line protocol (e.g.
    /// through `unshare` and `sh`); returns its first line.
    pub fn spawn_command(mut cmd: Command) -> (Py, String) {
        // Its own process group, so that killing it also kills what it
        // started (hypercorn's and multiprocessing's worker processes).
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).process_group(0).spawn().expect("spawn python");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut py = Py { child, stdin, stdout, reaped: false };
        let first = py.line();
        (py, first)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).expect("read python stdout");
        l.trim().to_string()
    }

    /// Sends one command and returns its one-line answer.
    pub fn ask(&mut self, command: &str) -> String {
        self.send(command);
        self.line()
    }

    /// Sends one command without waiting for its answer.
    pub fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").and_then(|_| stdin.flush()).expect("write python stdin");
    }

    /// Kills the process and every process of its group.
    pub fn kill(&mut self) {
        if self.reaped {
            return;
        }
        // SAFETY: signals the process group this struct created (its pgid is
        // its pid, not reused while the group has members or the leader is unreaped).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The agent's flags for the folders `wats_workload.py` uses under
/// `workdir`: its service queue, its persistent queue and its converter
/// (the demo, the end-to-end and the example tests watch the same).
pub fn workload_watches(workdir: &std::path::Path) -> Vec<String> {
    let d = |p: &str| workdir.join(p).display().to_string();
    vec![
        "--queue".into(),
        format!("reports={}:service", d("reports")),
        "--queue".into(),
        format!("pq={}:persistent", d("pq")),
        "--converter".into(),
        format!("csv={},done={},error={}", d("conv/in"), d("conv/done"), d("conv/error")),
    ]
}
