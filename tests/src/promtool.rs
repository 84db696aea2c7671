//! Prometheus's `promtool` (Debian's `prometheus` package, installed by
//! `cargo xtask setup`): config and rule checks, rule unit tests, and the
//! exposition linter.

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

/// Runs `promtool args…` with `stdin`, returning its output.
pub fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool: {e} (installed by `cargo xtask setup`: Debian's prometheus package)"));
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write promtool stdin");
    child.wait_with_output().expect("wait promtool")
}

/// `promtool args…` must succeed; returns what it printed.
pub fn ok(args: &[&str], stdin: &str) -> String {
    let out = run(args, stdin);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {} failed ({}):\n{text}", args.join(" "), out.status);
    text
}

/// `promtool check metrics` on an exposition: its format and Prometheus's lint rules.
pub fn check_metrics(exposition: &str) {
    ok(&["check", "metrics"], exposition);
}
