"""In-process instrumentation the way the feature plan proposes it, for the
third column of `cargo xtask bench`: what the pyWATS client would pay to
measure itself instead of being watched by the agent.

Usage (a module, not a script): bench_client.py and bench_pywats.py import it.

It mirrors pyWATS's own module (pywats/core/metrics.py in pywats-api 0.6.0rc1):
the same metric names, label names and default histogram buckets,
prometheus_client Counter + Histogram around every request (time.time() on
both sides, as the module's track_request does), queue histograms per item,
and a psutil sampler thread reading cpu_percent, memory_info and num_threads.
The module's own sampler blocks in cpu_percent(interval=1.0) and cannot be
joined; this one wakes every second and stops when told, so no sampling
thread outlives the run it belongs to.
"""
import threading
import time

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SAMPLE_EVERY = 1.0


class Sampler:
    """A thread that sets process gauges every SAMPLE_EVERY seconds until stop()."""

    def __init__(self, cpu_percent, memory_bytes, threads):
        self.gauges = (cpu_percent, memory_bytes, threads)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="MetricsMonitor", daemon=True)
        self.thread.start()

    def loop(self):
        process = psutil.Process()
        process.cpu_percent(interval=None)  # the first call only sets the reference point
        cpu, memory, threads = self.gauges
        while not self.stopping.wait(SAMPLE_EVERY):
            cpu.set(process.cpu_percent(interval=None))
            memory.set(process.memory_info().rss)
            threads.set(process.num_threads())

    def stop(self):
        self.stopping.set()
        self.thread.join()


class Metrics:
    """pyWATS's metrics (pywats/core/metrics.py) in a registry of their own, with a running sampler."""

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("pywats_http_requests_total", "Total HTTP requests",
                                ["method", "endpoint", "status"], registry=r)
        self.duration = Histogram("pywats_http_request_duration_seconds", "HTTP request duration in seconds",
                                  ["method", "endpoint"], registry=r)
        self.errors = Counter("pywats_errors_total", "Total errors by type", ["error_type", "operation"], registry=r)
        self.queue_depth = Gauge("pywats_queue_depth", "Current queue depth", ["queue_name"], registry=r)
        self.queue_duration = Histogram("pywats_queue_processing_duration_seconds", "Queue item processing duration",
                                        ["queue_name", "item_type"], registry=r)
        self.sampler = Sampler(Gauge("pywats_process_cpu_percent", "Process CPU usage percent", registry=r),
                               Gauge("pywats_process_memory_bytes", "Process memory usage in bytes", registry=r),
                               Gauge("pywats_process_threads", "Number of process threads", registry=r))

    def request(self, method, endpoint, call):
        """Runs call() (one HTTP request returning its status code) as track_request wraps a request."""
        start = time.time()
        status = "error"
        try:
            code = call()
            status = str(code)
            return code
        except Exception as e:
            self.errors.labels(error_type=type(e).__name__, operation=endpoint).inc()
            raise
        finally:
            self.requests.labels(method=method, endpoint=endpoint, status=status).inc()
            self.duration.labels(method=method, endpoint=endpoint).observe(time.time() - start)

    def queue_item(self, queue_name, depth, call):
        """Runs call() (one queue item, queued to done) and records it as the queue metrics would."""
        start = time.time()
        call()
        self.queue_duration.labels(queue_name=queue_name, item_type="report").observe(time.time() - start)
        self.queue_depth.labels(queue_name=queue_name).set(depth)

    def stop(self):
        self.sampler.stop()
