"""The gunicorn master restarts itself once with glibc's per-thread caches limited to blocks of
256 bytes (gunicorn_config.THREAD_CACHE_TUNABLE, README "Memory"); an operator's own setting
is left alone."""
from __future__ import annotations

import platform
from pathlib import Path

import pytest

from tests.servers import ServerProcess

# (Not imported from chatgpt_web.gunicorn_config: importing it sets PROMETHEUS_MULTIPROC_DIR in
# this test process, which would then read its metrics from files.)
THREAD_CACHE_TUNABLE = "glibc.malloc.tcache_max=256"

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")


def tunables_of(pid: int) -> str:
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if entry.startswith(b"GLIBC_TUNABLES="):
            return entry.split(b"=", 1)[1].decode()
    return ""


RESTARTED = "restarting the master with GLIBC_TUNABLES"


@pytest.mark.parametrize("given, restarts", [
    ("", True), ("glibc.malloc.arena_max=2", True), ("glibc.malloc.tcache_max=1032", False)])
def test_the_master_and_its_workers_run_with_small_thread_caches(tmp_path, given, restarts):
    process = ServerProcess.gunicorn({
        "CACHE_DIR": str(tmp_path / "cache"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "WEB_CONCURRENCY": "1", "GLIBC_TUNABLES": given})
    try:
        process.wait_until_serving()
        [worker] = process.worker_pids()
        # glibc shows only the first tunable of the variable once it has read them all.
        expected = THREAD_CACHE_TUNABLE if not given else given
        assert tunables_of(process.process.pid) == expected  # (exec keeps the pid)
        assert tunables_of(worker) == expected
    finally:
        log = process.stop()
    assert log.count(RESTARTED) == (1 if restarts else 0), log
