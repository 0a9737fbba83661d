"""A real redis-server for the tests, started on a free loopback port in a temporary directory.

Without redis-server on the PATH the Redis tests are skipped, unless CI=true or REQUIRE_REDIS=1
(.ci/run sets it): then they fail, so that CI can never pass by silently not testing Redis.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import pytest
import redis

from tests.servers import free_port, stop_process


def redis_required() -> bool:
    """True when a missing redis-server must fail the Redis tests instead of skipping them."""
    return (os.environ.get("CI", "").lower() == "true"
            or os.environ.get("REQUIRE_REDIS", "").lower() in ("1", "true", "yes"))


class RedisServer:
    """One redis-server process: no persistence, loopback only, its own temporary directory."""

    def __init__(self, executable: str, port: int | None = None):
        self.executable = executable
        self.port = port or free_port()
        self.directory = tempfile.mkdtemp(prefix="chatgpt_web-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start the server and wait until it answers PING. :raise RuntimeError: it did not."""
        log_path = os.path.join(self.directory, "redis.log")
        with open(log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", self.directory],
                stdout=log_file, stderr=subprocess.STDOUT, cwd=self.directory)
        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    with open(log_path, errors="replace") as log_file:
                        raise RuntimeError("redis-server exited at start:\n"
                                           f"{log_file.read()[-2000:]}")
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not answer PING within {timeout} s")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it."""
        if self.process is not None:
            stop_process(self.process, 10)
        self.process = None

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def redis_executable() -> str:
    """The redis-server path; skips the test when there is none, fails when CI requires it."""
    executable = shutil.which("redis-server")
    if executable is None:
        if redis_required():
            pytest.fail("redis-server is not installed, and CI / REQUIRE_REDIS=1 requires the "
                        "Redis tests to run", pytrace=False)
        pytest.skip("redis-server is not installed (set REQUIRE_REDIS=1 to make this an error)")
    return executable


@pytest.fixture(scope="session")
def redis_server():
    """One redis-server for the whole session, started on first use."""
    executable = redis_executable()
    for attempt in range(3):
        server = RedisServer(executable)
        try:
            server.start()
            break
        except RuntimeError:
            # Another process may have taken the free port between the probe and the start.
            server.cleanup()
            if attempt == 2:
                raise
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session server's URL, emptied for this test."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def dead_redis_url() -> str:
    """A Redis URL with a password, on a loopback port where nothing listens."""
    return f"redis://:planted-redis-password@127.0.0.1:{free_port()}/0"
