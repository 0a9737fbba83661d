"""A burst of connections is shared evenly between the workers (buffered_worker.LoadBoard): a
worker that holds more than FAIR_MARGIN connections beyond its least loaded live sibling leaves
new ones to that sibling, whichever worker the kernel would have woken first."""
from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from chatgpt_web.buffered_worker import FAIR_MARGIN, LoadBoard
from tests.servers import ServerProcess

# --- the board ----------------------------------------------------------------------------------


def test_a_worker_sees_the_least_loaded_of_its_live_siblings_and_never_itself():
    board = LoadBoard()
    first, second, third = board.reserve(), board.reserve(), board.reserve()
    assert len({first, second, third}) == 3  # reserved slots are not handed out twice
    assert board.least_of_others(first) is None  # reserved, not yet written: nobody is live
    board.publish(first, 30)
    board.publish(second, 7)
    board.publish(third, 12)
    assert board.least_of_others(first) == 7
    assert board.least_of_others(second) == 12  # its own count is not a sibling's
    board.leave(second)
    assert board.least_of_others(first) == 12


def test_a_sibling_that_stopped_writing_or_died_is_left_out(monkeypatch):
    board = LoadBoard()
    mine, stale, dead = board.reserve(), board.reserve(), board.reserve()
    board.publish(mine, 40)
    board.publish(stale, 0)
    board._write(dead, 999_999_999, 1, time.monotonic())  # a pid no process has
    assert board.least_of_others(mine) == 0
    later = time.monotonic() + 10  # the stale sibling's loop has not turned for 10 s
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert board.least_of_others(mine) is None
    monkeypatch.undo()
    board.leave_pid(999_999_999)  # the master clears a dead worker's slot
    assert board._read(dead)[0] == 0
    assert board.reserve() in (stale, dead)  # a cleared slot, or one whose process is gone


# --- two real workers ---------------------------------------------------------------------------


def established_per_process(pids: set[int], port: int) -> dict[int, int]:
    """How many established TCP connections to `port` each process of `pids` holds."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(fields[9])
    counts = {}
    for pid in pids:
        count = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            count += target.startswith("socket:[") and target[8:-1] in inodes
        counts[pid] = count
    return counts


def wait_for(condition, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture
def two_workers(tmp_path):
    process = ServerProcess.gunicorn({
        "CACHE_DIR": str(tmp_path / "cache"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "8", "MAX_CONNECTIONS_PER_IP": "0",
        "REQUEST_HEADER_TIMEOUT": "120", "WORKER_RECYCLE_MB": "0",
    })
    try:
        process.wait_until_serving()
        wait_for(lambda: len(process.worker_pids()) == 2, "two workers")
        yield process
    finally:
        for pid in process.worker_pids():
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        process.stop()


def test_new_connections_go_to_the_worker_that_holds_fewer(two_workers):
    """One worker is made to hold 20 connections (its sibling stopped meanwhile); of the next 20,
    the sibling takes all but at most FAIR_MARGIN and one in flight, where left to who wakes
    first it would take about half."""
    port = int(two_workers.url.rsplit(":", 1)[1])
    loaded, other = sorted(two_workers.worker_pids())
    held = []

    def accepted() -> dict[int, int]:
        return established_per_process({loaded, other}, port)

    try:
        os.kill(other, signal.SIGSTOP)
        for _ in range(20):  # connections that send nothing: each stays with its worker
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        # The stopped sibling's count grows old: the loaded worker then takes them all.
        wait_for(lambda: accepted()[loaded] == 20, "the first 20 with the running worker")
        os.kill(other, signal.SIGCONT)
        time.sleep(0.5)  # its event loop turns again and says it holds nothing
        for _ in range(20):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        counts = wait_for(lambda: (lambda c: sum(c.values()) == 40 and c)(accepted()),
                          "all 40 accepted")
        assert counts[other] >= 20 - FAIR_MARGIN - 1, counts
        assert abs(counts[loaded] - counts[other]) <= FAIR_MARGIN + 1, counts
    finally:
        for sock in held:
            sock.close()
