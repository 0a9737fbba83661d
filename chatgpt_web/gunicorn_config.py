"""gunicorn settings for chatgpt_web: the one place where the production server is configured.

Part of the package, so an installed service finds it wherever it runs. The `chatgpt-web`
command (`python -m chatgpt_web`) loads it as `-c python:chatgpt_web.gunicorn_config`; the
checkout's gunicorn.conf.py re-exports it for the Docker image and bench/concurrency.py:

    gunicorn -c gunicorn.conf.py wsgi:app

Every value can be overridden by the environment variable named beside it (README, "Server").

Worker model: gthread, reading each request whole before a thread takes it
(chatgpt_web/buffered_worker.py). curl_cffi blocks its thread while it reads the upstream, and
gevent or eventlet cannot make that cooperative, so each open stream holds one thread for its
whole life. Capacity is therefore WEB_CONCURRENCY x GUNICORN_THREADS simultaneous requests
(1024 by default, whatever the worker count); threads are started on demand and end after 2 s
idle, so a high ceiling costs nothing while idle, and a request beyond it is refused 503 `busy`
rather than queued.
"""
import gc
import glob
import os
import platform
import shutil
import sys
import tempfile

from . import usage
from .config import Config

_PORT = os.environ.get("PORT", "3000")

# GUNICORN_BIND: full address list, e.g. "127.0.0.1:8000" (tests bind to loopback only).
bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{_PORT}").split(",")
# gthread, with each request read whole by the worker's event loop before a thread takes it, so
# slow or stalled clients cost no thread; REQUEST_HEADER_TIMEOUT, REQUEST_BODY_TIMEOUT and
# MAX_CONNECTIONS_PER_IP bound them (chatgpt_web/buffered_worker.py, README "Server").
worker_class = "chatgpt_web.buffered_worker.BufferedThreadWorker"
# WEB_CONCURRENCY: worker processes. One per core: the GIL lets a process use about one core.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Simultaneous streams the default thread count is sized for, over all workers: 500 with room for
# the kernel splitting a burst unevenly between workers (at 2 x 384, a burst of 500 non-streamed
# answers once put more than 384 on one worker). Threads start on demand.
DEFAULT_CAPACITY = 1024
# GUNICORN_THREADS: simultaneous requests (open streams) per worker; by default the capacity
# above shared by the workers. A request that finds every thread of its worker busy is answered
# 503 busy with Retry-After instead of waiting for a stream to end (buffered_worker.py).
threads = int(os.environ.get("GUNICORN_THREADS", str(-(-DEFAULT_CAPACITY // max(workers, 1)))))
# A worker accepts at most this many connections (active + idle keep-alive). Left at `threads`
# plus a small keep-alive allowance, so a busy worker stops accepting and the kernel hands new
# connections to a worker with free threads instead of queueing them behind running streams.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", str(threads + 16)))
# GUNICORN_TIMEOUT: seconds a worker may go without a heartbeat before the master restarts it.
# gthread heartbeats from its event loop, so long streams never trip it; only a hung process does.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
# GUNICORN_GRACEFUL_TIMEOUT: on SIGTERM, seconds running streams get to finish before being cut.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
# GUNICORN_KEEPALIVE: seconds an idle keep-alive connection is held (keep it below the idle
# timeout of a proxy in front, e.g. nginx keepalive_timeout 60s).
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# Worker heartbeat files in memory rather than on the container's overlay filesystem.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# gunicorn >= 25.1 opens a control socket at $HOME/.gunicorn/gunicorn.ctl by default: a write
# outside CACHE_DIR (read-only in the container) and a path every gunicorn of the user shares.
control_socket_disable = True

# The app writes one private line per request itself (chatgpt_web/observability.py); gunicorn's
# access log would print the raw request line, query string included.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# Metrics from every worker are merged through files in PROMETHEUS_MULTIPROC_DIR. It must be set
# before a worker imports prometheus_client, so it is set here, when the master reads this file.
_metrics_dir_is_ours = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _metrics_dir_is_ours:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="chatgpt_web-metrics-")


# glibc's per-thread cache keeps up to 7 freed blocks of each size up to 1032 bytes in every
# thread; a stream whose events grow (the 2024 dialect resends the whole text in each) leaves
# blocks of ever larger sizes in its thread's cache, ~36 KB per stream that no other thread can
# reuse (mallinfo of a worker: +9 MB in use at 250 streams over 10 s, Python's own objects flat).
# Blocks above 256 bytes go back to the shared heap instead (README "Memory").
THREAD_CACHE_TUNABLE = "glibc.malloc.tcache_max=256"


def _with_small_thread_caches(server) -> None:
    """Restart the gunicorn master once, before it binds or forks anything, with GLIBC_TUNABLES
    naming THREAD_CACHE_TUNABLE (glibc reads it only when a process starts; the workers are
    forks of the master). An operator's own tcache_max in GLIBC_TUNABLES is left as it is."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.tcache_max" in tunables or platform.libc_ver()[0] != "glibc":
        return
    server.log.info("restarting the master with GLIBC_TUNABLES=%s (README, \"Memory\")",
                    THREAD_CACHE_TUNABLE)
    for handler in server.log.error_log.handlers:
        handler.flush()
    os.environ["GLIBC_TUNABLES"] = ":".join(filter(None, (tunables, THREAD_CACHE_TUNABLE)))
    if _metrics_dir_is_ours:  # the restarted master makes (and later removes) its own
        shutil.rmtree(os.environ.pop("PROMETHEUS_MULTIPROC_DIR"), ignore_errors=True)
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def on_starting(server):
    """Start from empty metrics: files left by an earlier run would be added to this run's.

    Before any worker is forked, make sure the usage tokenizer's table file is in CACHE_DIR (in a
    short-lived child: usage.write_table_file), so workers map it instead of building it each.
    With USAGE_TOKENIZER=preload, also load (map) it here: the workers then inherit the mapping.

    Then build the app here, once (gunicorn's preload, done after the restart above so that it is
    not done twice): every worker, and every fresh worker that replaces a recycled one
    (WORKER_RECYCLE_MB), is forked with it built instead of building its own, about 60 ms of CPU
    (mostly werkzeug compiling ~80 URL rules) for 1 MB more in the master. Building the app opens
    no file or connection and starts no thread (the store, curl handles and the group-commit
    thread come with a worker's first request), so nothing of it is shared across the fork.
    """
    if server is not None:  # (None: a test runs this hook alone, in its own process)
        _with_small_thread_caches(server)
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.remove(stale)
    config = Config.from_env()
    usage.store_tables_in(usage.table_directory(config.cache_dir))
    usage.write_table_file()
    if config.usage_tokenizer == "preload":
        usage.preload()
    if server is not None:
        server.app.wsgi()  # kept by gunicorn: a worker's load_wsgi() takes this one


def pre_fork(server, worker):
    """Before each worker is forked, move everything the master holds (the imported package, about
    58,000 objects) to the garbage collector's permanent generation (gc.freeze).

    A collection writes to the header of every object it visits, so a worker's full collection
    (and the idle trim's gc.collect(), buffered_worker.py) would copy most pages it shares with
    the master; frozen objects are never visited. It also halves the collector's CPU in a worker
    at 500 streams (README "Memory")."""
    gc.freeze()


def post_worker_init(worker):
    """Redact query strings and raw request lines from what gunicorn logs in this worker; freeze
    the app this worker built, as pre_fork froze the master's objects."""
    import logging

    from chatgpt_web.observability import install_redaction  # already imported with the app
    install_redaction(logging.getLogger("gunicorn.error"))
    gc.collect()  # what building the app left in cycles, before the rest is frozen for good
    gc.freeze()


def pre_request(worker, req):
    """Replaces gunicorn's default hook, which logs every raw request path at debug level."""


def child_exit(server, worker):
    """Drop a dead worker's live gauges (streams in flight) and fold its counters and histograms
    into the archive files, so they stay in the totals without a file per dead worker. Clear its
    slot on the board its siblings share a burst by (a worker killed could not)."""
    from chatgpt_web.buffered_worker import BOARD  # the worker class, imported before forking
    from chatgpt_web.metrics import fold_dead_process  # imported with the app before forking
    BOARD.leave_pid(worker.pid)
    fold_dead_process(worker.pid, os.environ["PROMETHEUS_MULTIPROC_DIR"])


def on_exit(server):
    """Remove the metrics directory this file created."""
    if _metrics_dir_is_ours:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
