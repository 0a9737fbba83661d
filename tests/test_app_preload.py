"""The gunicorn master builds the app before it forks (gunicorn_config.on_starting): a worker,
first or fresh after a recycle, starts with it built and builds none of its own."""
from __future__ import annotations

import sys
import textwrap

from tests.servers import ServerProcess, free_port

# gunicorn's post_fork hook runs in each worker just after the fork, before the worker loads
# the app: what it sees there came from the master.
_CONFIG_THAT_REPORTS_THE_FORK = textwrap.dedent("""
    from chatgpt_web.gunicorn_config import *  # noqa: F403

    def post_fork(server, worker):
        print(f"forked with the app built: {worker.app.callable is not None}", flush=True)
""")


def test_workers_are_forked_with_the_app_built(tmp_path):
    config = tmp_path / "reporting.conf.py"
    config.write_text(_CONFIG_THAT_REPORTS_THE_FORK)
    port = free_port()
    server = ServerProcess(
        [sys.executable, "-m", "gunicorn", "-c", str(config), "wsgi:app"],
        {"CACHE_DIR": str(tmp_path / "cache"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "m"),
         "WEB_CONCURRENCY": "2", "GUNICORN_BIND": f"127.0.0.1:{port}"}, port)
    try:
        server.wait_until_serving()
    finally:
        output = server.stop()
    reports = [line for line in output.splitlines() if line.startswith("forked with the app")]
    assert reports == ["forked with the app built: True"] * 2, output[-3000:]
