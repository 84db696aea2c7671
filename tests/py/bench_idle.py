"""A watched process that does nothing, for `cargo xtask bench` to measure what
other, unwatched processes pay while the agent watches something.

Usage: bench_idle.py. Imports ssl, so the system libssl is mapped (and the
agent probes it), prints "ready", then sleeps until stdin closes.
"""
import ssl  # noqa: F401 (mapped for the agent's libssl probes)
import sys

print("ready", flush=True)
sys.stdin.read()
