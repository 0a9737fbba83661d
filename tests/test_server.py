"""The production server command, the Docker health check, metrics across workers, and importing
the app on a read-only filesystem (Vercel's code directory is read-only; only /tmp is writable)."""
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.servers import REPO, ServerProcess, free_port, http_request


def dockerfile_healthcheck() -> list[str]:
    """The exec-form command of the Dockerfile's HEALTHCHECK."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    [command] = re.findall(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
    return json.loads(command)


def test_the_image_copies_the_app_and_runs_the_tested_server_command():
    dockerfile = (REPO / "Dockerfile").read_text()
    instructions = re.findall(r"^([A-Z]+) (.*)$", dockerfile.replace("\\\n", " "), re.M)
    copied = [source for name, args in instructions if name == "COPY"
              for source in args.split()[:-1] if not source.startswith("--")]
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for source in copied:
        assert (REPO / source).exists(), source
        assert source not in ignored, source
    assert {"wsgi.py", "gunicorn.conf.py", "chatgpt_web", "requirements.txt"} <= set(copied)
    assert ".env" in ignored and "tests" in ignored
    assert dict(instructions)["FROM"] == "python:3.11-slim"
    assert dict(instructions)["USER"] not in ("root", "0")
    assert json.loads(dict(instructions)["CMD"]) == [
        "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
    # The package's bytecode is compiled after the package is copied, before the service runs.
    compile_at = instructions.index(("RUN", "python -m compileall -q wsgi.py gunicorn.conf.py "
                                            "chatgpt_web"))
    assert compile_at > instructions.index(("COPY", "chatgpt_web ./chatgpt_web"))


def test_gunicorn_config_loads_and_follows_the_environment(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "WEB_CONCURRENCY": "3",
           "GUNICORN_THREADS": "7", "GUNICORN_TIMEOUT": "42", "PORT": "4321"}
    env.pop("GUNICORN_BIND", None)
    printed = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--print-config", "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=30, check=True).stdout
    settings = dict(re.findall(r"^(\w+)\s+= (.*)$", printed, re.M))
    assert settings["worker_class"] == "chatgpt_web.buffered_worker.BufferedThreadWorker"
    assert (settings["workers"], settings["threads"], settings["timeout"]) == ("3", "7", "42")
    assert settings["bind"] == "['0.0.0.0:4321']"
    assert settings["accesslog"] == "None"


def test_the_package_declares_the_chatgpt_web_command():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    module, _, function = project["scripts"]["chatgpt-web"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    assert project["requires-python"] == ">=3.11"


def test_the_command_serves_from_outside_the_checkout(tmp_path):
    """What `pip install .` then `chatgpt-web` does: nothing is read from the working directory
    (PYTHONPATH stands in for the installed package)."""
    port = free_port()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(REPO), "GUNICORN_BIND": f"127.0.0.1:{port}",
           "CACHE_DIR": str(tmp_path / "cache"), "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "2",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    server = ServerProcess([sys.executable, "-m", "chatgpt_web"], env, port, cwd=elsewhere)
    try:
        server.wait_until_serving()
        assert http_request(server.url, path="/readyz")[0] == 200
        # The master wrote the usage counter's table before it forked the worker (usage.py).
        assert [table.name for table in (tmp_path / "cache" / "tokenizer").iterdir()] == \
            ["o200k_base.v1-" + sys.byteorder + ".bpetable"]
    finally:
        log = server.stop()
    assert "BufferedThreadWorker" in log  # the package's server settings were loaded


def test_python_m_chatgpt_web_serves_on_port_and_passes_the_docker_healthcheck(tmp_path):
    port = free_port()
    env = {"PORT": str(port), "CACHE_DIR": str(tmp_path / "cache"), "WEB_CONCURRENCY": "1",
           "GUNICORN_THREADS": "4", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    server = ServerProcess([sys.executable, "-m", "chatgpt_web"], env, port)
    try:
        server.wait_until_serving()
        status, headers, body = http_request(server.url, path="/readyz")
        assert status == 200, body
        assert headers["x-request-id"]
        check = dockerfile_healthcheck()
        healthy = subprocess.run(check, env={**os.environ, "PORT": str(port)}, timeout=10,
                                 capture_output=True)
        assert healthy.returncode == 0, healthy.stderr
    finally:
        log = server.stop()
    assert "BufferedThreadWorker" in log  # gthread, reading requests whole first
    unhealthy = subprocess.run(check, env={**os.environ, "PORT": str(port)}, timeout=10,
                               capture_output=True)
    assert unhealthy.returncode != 0


def metric_files_by_pid(directory: Path) -> set[int]:
    return {int(m.group(1)) for f in directory.glob("counter_*.db")
            if (m := re.fullmatch(r"counter_(\d+)\.db", f.name))}


def index_count(url: str, expected: float) -> float:
    """The count of GET / in /metrics, read again for up to 5 s until it reaches `expected`.

    A request is counted when its response is closed, which is just after the client has read
    it, so the last request may not be counted yet when /metrics is read at once. (GET / rather
    than /healthz: wait_until_serving's probes may be queued before the workers boot and time
    out on the client's side, yet still be served and counted.)
    """
    deadline = time.monotonic() + 5
    while True:
        text = http_request(url, path="/metrics")[2].decode()
        match = re.search(r'^chatgpt_web_requests_total\{route="/",status="200"\} (\S+)$',
                          text, re.M)
        count = float(match.group(1)) if match else 0.0
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def served_index(url: str) -> bool:
    """GET / once: True when served, False when the worker refused it 503 `busy`. With two
    threads, a thread that has sent its answer may still be finishing it (its metrics, its log
    line) when the next request arrives, and on a loaded machine both may be (README "Server")."""
    status, _, body = http_request(url, path="/")
    if status == 503:
        assert json.loads(body)["code"] == "busy"
        return False
    assert status == 200
    return True


def wait_for_workers(server: ServerProcess, count: int, without: int = 0) -> set[int]:
    """The server's worker pids once there are `count` of them (other than `without`)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        workers = server.worker_pids() - {without}
        if len(workers) == count:
            return workers
        time.sleep(0.05)
    raise AssertionError(f"expected {count} workers, have {server.worker_pids()}")


def test_metrics_add_up_across_workers_and_survive_a_worker_restart(tmp_path):
    metrics_dir = tmp_path / "metrics"
    server = ServerProcess.gunicorn({
        "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "2", "CACHE_DIR": str(tmp_path / "cache"),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    try:
        server.wait_until_serving()
        workers = wait_for_workers(server, 2)
        sent = 0
        # Fresh connections until both workers have counted some (the kernel picks the worker).
        # Bounded by time, not count: on a loaded machine one worker may still be importing the
        # app while the other has already answered hundreds of requests.
        deadline = time.monotonic() + 30
        while not workers <= metric_files_by_pid(metrics_dir) and time.monotonic() < deadline:
            sent += served_index(server.url)
        assert workers <= metric_files_by_pid(metrics_dir), "one worker served everything"
        assert index_count(server.url, sent) == sent

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        assert victim not in wait_for_workers(server, 2, without=victim), "no replacement"
        server.wait_until_serving()
        busy_until = time.monotonic() + 10
        while not served_index(server.url):
            assert time.monotonic() < busy_until, "refused as busy for 10 s"
            time.sleep(0.05)
        sent += 1
        assert index_count(server.url, sent) == sent
    finally:
        server.stop()


# --- read-only filesystem ---------------------------------------------------------------------

_MOUNT_SCRIPT = """set -e
mount --make-rprivate /
mount --bind "$WRITABLE" "$WRITABLE"
mount -o remount,bind,ro /
cd "$WORKDIR"
exec "$PYTHON" -c "$CODE"
"""

_IMPORT_AND_PROBE = """
import importlib
import json
import wsgi
client = wsgi.app.test_client()
healthz, readyz = client.get("/healthz"), client.get("/readyz")
print(json.dumps({"healthz": healthz.status_code, "readyz": readyz.status_code,
                  "cache": readyz.json["checks"]["cache"]}))
"""

_TRY_TO_WRITE = """
import errno, os
try:
    open("written-in-the-code-dir", "w").close()
except OSError as error:
    print(errno.errorcode[error.errno])
else:
    print("WRITABLE")
"""


class ReadOnlySandbox:
    """Runs Python with everything read-only except one directory, as on Vercel.

    As root (where chmod proves nothing) or when user namespaces are available, a private mount
    namespace remounts / read-only and keeps only `writable` writable: any write elsewhere
    fails with EROFS, and nothing outside the test sees the remount. Otherwise, as a normal
    user, a copy of the code is made read-only with chmod and TMPDIR/HOME point to read-only
    directories. `verify()` shows the sandbox really refuses writes before it is trusted.
    """

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.writable = tmp_path / "writable"
        self.writable.mkdir()
        self.outside = tmp_path / "outside"  # TMPDIR and HOME: must stay untouched
        self.outside.mkdir()
        self.workdir = REPO
        self.mode = self._choose_mode()

    def _choose_mode(self) -> str:
        if shutil.which("unshare"):
            user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
            self._unshare = ["unshare", *user, "--mount"]
            if subprocess.run([*self._unshare, "true"], capture_output=True).returncode == 0:
                return "mount-namespace"
        if os.geteuid() != 0:
            copy = self.tmp_path / "code"
            shutil.copytree(REPO / "chatgpt_web", copy / "chatgpt_web",
                            ignore=shutil.ignore_patterns("__pycache__"))
            shutil.copy(REPO / "wsgi.py", copy / "wsgi.py")
            for path in [copy, self.outside, *copy.rglob("*")]:
                path.chmod(path.stat().st_mode & ~0o222)
            self.workdir = copy
            return "chmod"
        pytest.skip("running as root without mount namespaces: cannot make a read-only filesystem")

    def run(self, code: str, **env: str) -> subprocess.CompletedProcess:
        environ = {**os.environ, "TMPDIR": str(self.outside), "HOME": str(self.outside),
                   "PYTHONPATH": str(self.workdir), **env}
        environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if self.mode == "mount-namespace":
            command = [*self._unshare, "sh", "-c", _MOUNT_SCRIPT]
            environ.update(WRITABLE=str(self.writable), WORKDIR=str(self.workdir),
                           PYTHON=sys.executable, CODE=code)
        else:
            command = [sys.executable, "-c", code]
        return subprocess.run(command, cwd=self.workdir, env=environ, capture_output=True,
                              text=True, timeout=60)

    def verify(self) -> None:
        result = self.run(_TRY_TO_WRITE)
        assert result.stdout.strip() in ("EROFS", "EACCES"), (self.mode, result)


@pytest.fixture
def sandbox(tmp_path):
    sandbox = ReadOnlySandbox(tmp_path)
    sandbox.verify()
    return sandbox


def test_importing_the_app_writes_nowhere_and_it_serves(sandbox):
    result = sandbox.run(_IMPORT_AND_PROBE, CACHE_DIR=str(sandbox.writable / "cache"))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer == {"healthz": 200, "readyz": 200, "cache": {"ok": True, "kind": "disk"}}
    assert not any(sandbox.outside.iterdir())


def test_with_no_writable_cache_it_still_starts_and_keeps_state_in_memory(sandbox):
    result = sandbox.run(_IMPORT_AND_PROBE, CACHE_DIR=str(sandbox.outside / "cache"))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer == {"healthz": 200, "readyz": 200, "cache": {"ok": True, "kind": "memory"}}
    assert not any(sandbox.outside.iterdir())
