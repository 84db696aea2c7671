//! Interleaved rounds: every compared setting runs once per round, in an
//! order that flips each round, so drift over the bench (a build starting
//! elsewhere, caches warming) favours none of them.

/// How the watched client runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// No agent.
    Off,
    /// The agent attached, as deployed (no program statistics).
    On,
    /// No agent; the client measures itself as the feature plan proposes.
    InProcess,
    /// The agent attached with `--program-stats`, for its in-kernel time.
    Kernel,
    /// No agent; bare uprobes at the agent's TLS probe sites (`traps.rs`).
    Traps,
}

impl Mode {
    /// The client's instrumentation argument.
    pub fn client_mode(self) -> &'static str {
        if self == Mode::InProcess {
            "inproc"
        } else {
            "plain"
        }
    }

    pub fn watched(self) -> bool {
        matches!(self, Mode::On | Mode::Kernel)
    }
}

/// `settings` in round `round`'s order: as given, then reversed, and so on.
pub fn order<T: Copy>(settings: &[T], round: usize) -> Vec<T> {
    let mut v = settings.to_vec();
    if round % 2 == 1 {
        v.reverse();
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn order_flips_each_round() {
        assert_eq!(super::order(&[1, 2, 3], 0), [1, 2, 3]);
        assert_eq!(super::order(&[1, 2, 3], 1), [3, 2, 1]);
        assert_eq!(super::order(&[1, 2, 3], 2), [1, 2, 3]);
    }
}
