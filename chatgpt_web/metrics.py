"""Prometheus metrics. Works with several worker processes when PROMETHEUS_MULTIPROC_DIR is set
(gunicorn.conf.py sets it before workers start); otherwise the default in-process registry is used.

Labels never carry a prompt, a token or a conversation id: only routes, statuses, steps and codes.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # In multiprocess mode every metric is an mmapped file in this directory, and some are created
    # right below; an operator-chosen directory may not exist yet.
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

REQUESTS = Counter("chatgpt_web_requests_total", "HTTP requests served", ["route", "status"])
REQUEST_DURATION = Histogram(
    "chatgpt_web_request_seconds", "From request start until the response (or stream) ended",
    ["route"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
UPSTREAM_LATENCY = Histogram(
    "chatgpt_web_upstream_seconds", "Upstream call latency until response headers", ["step"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
TIME_TO_FIRST_TOKEN = Histogram(
    "chatgpt_web_time_to_first_token_seconds", "From request start to the first answer text",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
UPSTREAM_ERRORS = Counter("chatgpt_web_upstream_errors_total", "Upstream failures", ["code"])
# Per client key id: only filled when METRICS_PER_KEY is on (one series per key).
KEY_REQUESTS = Counter("chatgpt_web_key_requests_total", "Answered requests per client key",
                       ["key"])
KEY_TOKENS = Counter("chatgpt_web_key_tokens_total", "Tokens per client key", ["key", "kind"])
MODERATION_CHECKS = Counter("chatgpt_web_moderation_checks_total",
                            "Prompts screened by MODERATION", ["result"])
MODERATION_SECONDS = Histogram("chatgpt_web_moderation_seconds", "Time one moderation check took",
                               buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
# Relay upstreams are labelled by their name in UPSTREAMS_FILE (never a key or a URL): the
# operator's config bounds the series, as the outcome kinds of relay/outcomes.py do.
RELAY_ATTEMPTS = Counter("chatgpt_web_relay_attempts_total",
                         "Requests sent to relay upstreams, by upstream name and outcome "
                         "(ok, client, disable, rate, model, soft)", ["upstream", "outcome"])
RELAY_BROKEN_STREAMS = Counter("chatgpt_web_relay_broken_streams_total",
                               "Relayed streams that failed after their first event",
                               ["upstream"])
RELAY_OVERHEAD = Histogram("chatgpt_web_relay_overhead_seconds",
                           "The service's own time before a relayed answer starts (time spent "
                           "waiting on upstreams excluded)",
                           buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5))
STREAMS_IN_FLIGHT = Gauge("chatgpt_web_streams_in_flight", "Answers being relayed now",
                          multiprocess_mode="livesum")


@contextlib.contextmanager
def timed_upstream(step: str) -> Iterator[None]:
    """Observe how long the upstream takes to answer `step` (sentinel, conversation, login...)."""
    started = time.monotonic()
    try:
        yield
    finally:
        UPSTREAM_LATENCY.labels(step).observe(time.monotonic() - started)


def observe_request(route: str, status: int, seconds: float) -> None:
    """Count one finished request; `route` is the URL rule (bounded set), never the raw path."""
    REQUESTS.labels(route, str(status)).inc()
    REQUEST_DURATION.labels(route).observe(seconds)


def render() -> tuple[bytes, str]:
    """The exposition text of all metrics (merged across processes in multiprocess mode)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        with _files_lock(directory, fcntl.LOCK_SH):  # no file folded away while they are read
            return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


# In multiprocess mode every process writes its counters and histograms to files of its own
# (counter_<pid>.db, histogram_<pid>.db), and a scrape reads every file ever written. A server
# that replaces its workers (a recycled worker, one gunicorn restarted after a crash or a
# timeout) would leave two more files per replacement for every later scrape to read. When a
# worker has died, the master folds its files into one archive per kind and deletes them, under
# an exclusive lock that scrapes take shared: a scrape sees the dead worker's counts either in
# its files or in the archive, never in both, never in neither (and never a file deleted after
# the scrape listed it, which prometheus_client reports as an error).
_ARCHIVED_KINDS = ("counter", "histogram")


@contextlib.contextmanager
def _files_lock(directory: str, how: int) -> Iterator[None]:
    with open(os.path.join(directory, ".fold.lock"), "a") as lock:
        fcntl.flock(lock, how)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def fold_dead_process(pid: int, directory: str) -> None:
    """Add a dead process's counters and histograms to the directory's archive files (summed
    key by key, as a scrape sums them) and delete its files; drop its live gauges. Called by
    the master only, so the archive has one writer."""
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    multiprocess.mark_process_dead(pid, directory)
    with _files_lock(directory, fcntl.LOCK_EX):
        for kind in _ARCHIVED_KINDS:
            dead = os.path.join(directory, f"{kind}_{pid}.db")
            if not os.path.exists(dead):
                continue
            archive = MmapedDict(os.path.join(directory, f"{kind}_archive.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(dead):
                    total, _ = archive.read_value(key)
                    archive.write_value(key, total + value, timestamp)
            finally:
                archive.close()
            os.remove(dead)
