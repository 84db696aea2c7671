//! `pywats-agent hash-password`: the bcrypt hash of a password, for
//! `basic_auth_users` of `--web-config`, with nothing but the agent itself
//! (stock Debian has neither `htpasswd` nor Python's bcrypt module).
//!
//! The password comes from standard input, never from the command line
//! (every user of the host can read another process's arguments): on a
//! terminal it is asked twice with echo off, otherwise it is the input,
//! without one trailing line ending, so `hash-password < FILE` hashes the
//! file Prometheus reads its `password_file` from (Prometheus trims it too).

use std::io::{IsTerminal, Read, Write};

use crate::error::AgentError;

/// bcrypt reads at most 72 bytes of a password and ignores the rest: a longer
/// one is refused instead of being cut without a word.
const MAX_PASSWORD: usize = 72;

/// Reads the password, prints its hash.
pub fn run(cost: u32) -> Result<(), AgentError> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = ask("Password: ")?;
        if ask("Again: ")? != first {
            return Err(AgentError::Password("the two passwords differ".into()));
        }
        first
    } else {
        // A byte more than a valid input may hold tells "too long" apart.
        let mut input = Vec::new();
        stdin
            .lock()
            .take((MAX_PASSWORD + 3) as u64)
            .read_to_end(&mut input)
            .map_err(|e| AgentError::Password(format!("cannot read standard input: {e}")))?;
        input
    };
    let hash = hash(&password, cost)?;
    writeln!(std::io::stdout(), "{hash}").map_err(AgentError::Io)
}

/// The bcrypt hash (`$2b$`) of `input` without its line ending.
pub fn hash(input: &[u8], cost: u32) -> Result<String, AgentError> {
    let password = without_line_ending(input);
    if password.is_empty() {
        return Err(AgentError::Password(
            "no password on standard input: pipe it in (`pywats-agent hash-password < FILE`)".into(),
        ));
    }
    if password.len() > MAX_PASSWORD {
        return Err(AgentError::Password(format!(
            "the password is longer than {MAX_PASSWORD} bytes, which is all bcrypt reads: use a shorter one"
        )));
    }
    bcrypt::hash(password, cost).map_err(|e| AgentError::Password(format!("bcrypt: {e}")))
}

fn without_line_ending(input: &[u8]) -> &[u8] {
    let input = input.strip_suffix(b"\n").unwrap_or(input);
    input.strip_suffix(b"\r").unwrap_or(input)
}

/// One line from the terminal on standard input, echo off while it is typed.
fn ask(prompt: &str) -> Result<Vec<u8>, AgentError> {
    eprint!("{prompt}");
    let echo = EchoOff::new()?;
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    drop(echo);
    eprintln!();
    read.map_err(|e| AgentError::Password(format!("cannot read the password: {e}")))?;
    Ok(line.into_bytes())
}

/// The terminal's settings before echo was turned off, restored on drop.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> Result<EchoOff, AgentError> {
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is open (a terminal: checked by the caller), `saved` is valid.
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return Err(AgentError::Io(std::io::Error::last_os_error()));
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: as above, with settings derived from the terminal's own.
        if unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) } != 0 {
            return Err(AgentError::Io(std::io::Error::last_os_error()));
        }
        Ok(EchoOff(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read from the same fd.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_the_input_without_its_line_ending() {
        for input in [&b"s3cret"[..], b"s3cret\n", b"s3cret\r\n"] {
            let h = hash(input, 4).unwrap();
            assert!(h.starts_with("$2b$04$"), "{h}");
            assert!(bcrypt::verify("s3cret", &h).unwrap());
        }
        // Only one line ending goes: the rest is the password.
        assert!(bcrypt::verify("s3cret\n", &hash(b"s3cret\n\n", 4).unwrap()).unwrap());
    }

    #[test]
    fn refuses_empty_and_overlong_passwords() {
        for empty in [&b""[..], b"\n", b"\r\n"] {
            let e = hash(empty, 4).unwrap_err().to_string();
            assert!(e.contains("no password on standard input"), "{e}");
        }
        assert!(hash(&[b'a'; MAX_PASSWORD], 4).is_ok());
        let e = hash(&[b'a'; MAX_PASSWORD + 1], 4).unwrap_err().to_string();
        assert!(e.contains("longer than 72 bytes"), "{e}");
        // The error never repeats the password.
        assert!(!e.contains("aaaa"), "{e}");
    }
}
