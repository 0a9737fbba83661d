"""Store faults degrade one way for every caller: 503 store_unavailable, /readyz not ready."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.servers import REPO

# A full disk, made real for one process: no file may grow (RLIMIT_FSIZE 0), so SQLite's writes
# fail as they do on a full or read-only CACHE_DIR. Run apart, since the limit is process-wide.
FULL_DISK = """
import json, resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from chatgpt_web import create_app
client = create_app({"CACHE_DIR": sys.argv[1], "RATE_LIMIT_IP": "100/minute"}).test_client()
seen = [client.post("/send_message", data={"prompt": "x"}).status_code,
        client.get("/readyz").status_code]
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
answer = client.post("/send_message", data={"prompt": "x"})
seen += [answer.status_code, answer.get_json()["code"], client.get("/readyz").status_code]
print(json.dumps(seen))
"""


def test_a_full_cache_dir_is_503_store_unavailable_and_not_ready(tmp_path):
    run = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path / "cache")], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    before_status, before_ready, status, code, ready = json.loads(run.stdout.splitlines()[-1])
    assert (before_status, before_ready) == (400, 200)  # healthy: only the prompt's token missing
    assert (status, code, ready) == (503, "store_unavailable", 503)


@pytest.fixture
def mute_redis():
    """A server that accepts connections and never answers, as a hung Redis does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_a_redis_that_never_answers_costs_a_request_seconds_not_a_quarter_minute(make_app,
                                                                                  mute_redis):
    client = make_app(REDIS_URL=mute_redis, RATE_LIMIT_IP="100/minute").test_client()
    started = time.monotonic()
    answer = client.post("/send_message", data={"prompt": "x"})
    first = time.monotonic() - started
    assert answer.status_code == 503 and answer.get_json()["code"] == "store_unavailable"
    assert first < 4, f"the first request waited {first:.1f}s"
    started = time.monotonic()
    assert client.post("/send_message", data={"prompt": "x"}).status_code == 503
    assert time.monotonic() - started < 1  # it failed moments ago: no second wait
