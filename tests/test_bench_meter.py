"""bench/concurrency.py's meter: what its CPU and context-switch columns count.

The service under measure is a process tree (gunicorn's master and its workers); these tests use
a small Python process tree of their own in its place.
"""
from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from bench import concurrency
from bench import connections as bench_connections
from bench import event_cost as bench_event_cost

# A parent that forks a child which spends CPU and ends; the parent reaps it (as gunicorn's
# master reaps a recycled worker), says so, then waits for stdin to close.
_PARENT_OF_A_BUSY_CHILD = textwrap.dedent("""
    import os, sys, time
    pid = os.fork()
    if pid == 0:
        started = time.process_time()
        while time.process_time() - started < 0.4:
            pass
        os._exit(0)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
    sys.stdin.read()
""")

# A process with a thread that wakes up 200 times, then stays idle for 4 s and ends, like a pool
# thread of a worker after a burst (it ends after IDLE_THREAD_SECONDS without a request).
_PROCESS_WITH_AN_ENDING_THREAD = textwrap.dedent("""
    import sys, threading, time
    def work():
        print(threading.get_native_id(), flush=True)
        for _ in range(200):
            time.sleep(0.001)
        time.sleep(4)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    print("ended", flush=True)
    sys.stdin.read()
""")


def _start(program: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", program], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def test_the_cpu_of_a_process_that_ended_meanwhile_is_counted():
    process = _start(_PARENT_OF_A_BUSY_CHILD)
    try:
        before = concurrency.cpu_seconds(concurrency.service_pids(process.pid))
        assert process.stdout.readline().strip() == "reaped"
        after = concurrency.cpu_seconds(concurrency.service_pids(process.pid))
    finally:
        process.communicate("", timeout=30)
    # The child spent 0.4 s; it is gone, and its time is counted through its parent's.
    assert after - before >= 0.3


def test_the_meter_counts_the_switches_of_a_thread_that_ended_before_the_level_did():
    process = _start(_PROCESS_WITH_AN_ENDING_THREAD)
    try:
        with concurrency.PeakMemory(process.pid) as meter:
            thread = int(process.stdout.readline())
            assert process.stdout.readline().strip() == "ended"
    finally:
        process.communicate("", timeout=30)
    assert meter.switches.get((process.pid, thread), 0) >= 200
    assert meter.rss > 0
    assert meter.cpu > 0  # the sampler reports its own CPU (the `meter` column)


class _FakeMachine:
    """A clock that moves only when the waiter sleeps, and processes whose CPU seconds so far
    are a function of that clock: a stand-in for /proc, so the quiet-wait is tested alone."""

    def __init__(self, **busy_until: float):
        # {group: time until which it keeps a whole core busy, then idles}
        self.now, self.busy_until = 100.0, busy_until

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def read(self) -> dict[str, float]:
        return {group: min(self.now, until) for group, until in self.busy_until.items()}


def _wait(machine: _FakeMachine, **settings) -> concurrency.Settling:
    return concurrency.wait_until_quiet(machine.read, clock=machine.clock, sleep=machine.sleep,
                                        **settings)


def test_a_quiet_machine_is_found_quiet_after_one_window():
    machine = _FakeMachine(service=0.0, emulator=0.0)
    settling = _wait(machine, window=1.0)
    assert settling.settled
    assert 1.0 <= settling.waited < 1.2


def test_the_wait_lasts_until_the_last_busy_group_has_been_quiet_for_a_window():
    # The emulator is busy for 3 s more; the service for 5 s (its after-burst work, say).
    machine = _FakeMachine(service=105.0, emulator=103.0)
    settling = _wait(machine, window=1.0, share=0.05)
    assert settling.settled
    # Quiet means at most 5 % of a core over the window: the service's busy second must have
    # left the window (5 s), give or take the window's share and one step of the sampler.
    assert 5.9 <= settling.waited <= 6.2
    assert all(share <= 0.05 for share in settling.busy.values())


def test_a_group_that_never_settles_is_waited_for_at_most_the_limit_and_said():
    machine = _FakeMachine(service=0.0, emulator=10_000.0)
    settling = _wait(machine, window=1.0, limit=20.0)
    assert not settling.settled
    assert 20.0 <= settling.waited < 20.2
    assert settling.busy["emulator"] > 0.9
    assert "DID NOT SETTLE" in settling.describe() and "emulator 1.00" in settling.describe()


def test_a_share_below_the_threshold_counts_as_quiet():
    # A process that wakes for 10 ms every 0.5 s (2 % of a core) is idle for this purpose.
    machine = _FakeMachine(service=0.0)

    def read() -> dict[str, float]:
        return {"service": 0.02 * machine.now}
    settling = concurrency.wait_until_quiet(read, clock=machine.clock, sleep=machine.sleep,
                                            share=0.05)
    assert settling.settled
    assert abs(settling.busy["service"] - 0.02) < 1e-9


def test_late_of_repeats_is_the_median_of_each_service_run_against_the_reference_before_it():
    # Three alternated pairs (direct p99, service's slowest); the second reference was slowed
    # by something outside both paths.
    pairs = [(2.80, 3.60), (5.20, 3.70), (2.90, 3.50)]
    late, lowest, highest = concurrency.late_of_repeats(pairs)
    assert late == 3.50 - 2.90
    assert (lowest, highest) == (3.70 - 5.20, 3.60 - 2.80)


def test_late_of_two_repeats_is_their_mean():
    late, lowest, highest = concurrency.late_of_repeats([(2.8, 3.6), (3.0, 3.6)])
    assert abs(late - 0.7) < 1e-9 and abs(lowest - 0.6) < 1e-9 and abs(highest - 0.8) < 1e-9


def test_late_is_judged_against_direct_clients_making_the_dialects_own_requests():
    # bench/cpu_ab.py takes its reference from here too.
    assert concurrency.same_flow_direct("2026") is concurrency.direct_2026_flow
    assert concurrency.same_flow_direct("2024") is concurrency.direct
    # The body the service writes in each dialect (2026 only: the conduit's prepare state).
    assert b'"client_prepare_state"' in concurrency.conversation_body("2026", "hi")
    assert b'"client_prepare_state"' not in concurrency.conversation_body("2024", "hi")


# A process outside the caller's tree: the child forks a grandchild and ends at once, so the
# grandchild is re-parented away from the caller; it spends 0.4 s of CPU and says so.
_SPEND_OUTSIDE_THE_TREE = textwrap.dedent("""
    import os, sys, time
    if os.fork() == 0:
        started = time.process_time()
        while time.process_time() - started < 0.4:
            pass
        print("spent", flush=True)
    os._exit(0)
""")


def test_the_load_watch_counts_cpu_spent_outside_the_benchmark_as_others():
    with concurrency.WatchLoad(service_root=os.getpid(), emulator_pid=os.getpid()) as watch:
        spender = subprocess.Popen([sys.executable, "-c", _SPEND_OUTSIDE_THE_TREE],
                                   stdout=subprocess.PIPE, text=True)
        assert spender.stdout.read().strip() == "spent"  # the grandchild has the pipe too
        spender.wait(30)
    # Others' work on the machine (other users) can only add to `others`.
    assert watch.load.others >= 0.3
    assert watch.load.service < 0.3  # this test's own tree spent little


def test_the_emulator_reports_how_long_its_garbage_collector_paused_it():
    emulator, url, _, _ = concurrency.start_emulator(0.0, "2026")
    try:
        paused_before, _ = concurrency.emulator_gc(emulator)
        for _ in range(30):  # each request allocates far more than a young generation holds
            try:
                urllib.request.urlopen(f"{url}/no-such-page", timeout=30).close()
            except urllib.error.HTTPError:
                pass
        paused_after, longest = concurrency.emulator_gc(emulator)
        _, longest_since = concurrency.emulator_gc(emulator)
    finally:
        emulator.terminate()
        emulator.wait(30)
    assert paused_after > paused_before
    assert 0 < longest <= paused_after - paused_before
    assert longest_since <= longest  # the longest pause is counted from the previous reading


# --- bench/connections.py -------------------------------------------------------------------------

@pytest.mark.parametrize("transport, spoken, connections", [
    ("plain", ["1.1"], 3), ("tls-http2", ["2"], 3), ("h2-shared", ["2"], 1)])
def test_the_connection_bench_opens_what_each_row_says(transport, spoken, connections):
    # Each request on a connection of its own, as an open answer holds one; the h2-shared row
    # multiplexed on one. All went out, and every answer came back over the HTTP it names.
    measured = bench_connections.measure(transport, 3, hold=0.5)
    assert measured["sent"] == 3
    assert measured["versions"] == spoken
    assert measured["connections"] == connections


# --- the direct clients over TLS (--http2) --------------------------------------------------------

def test_a_direct_client_speaks_http2_on_one_connection_when_the_emulator_offers_it(
        tls_emulator):
    port = urllib.parse.urlsplit(tls_emulator.url).port
    context = ssl.create_default_context(cafile=tls_emulator.ca_file)
    context.set_alpn_protocols(["h2"])
    concurrency.TLS_PORTS[port] = context
    auth = {"Authorization": f"Bearer {tls_emulator.mint_access_token()}"}
    tls_emulator.switches.require_requirements_token = False  # as the bench's --easy emulator

    async def two_requests():
        connection = await concurrency.Connection.open(port)
        try:
            return [await connection.exchange(concurrency.post(
                port, "/backend-api/sentinel/chat-requirements", b"{}", "application/json", auth,
                close=False), time.monotonic(), watch=False) for _ in range(2)]
        finally:
            connection.close()

    try:
        answers = asyncio.run(two_requests())
    finally:
        del concurrency.TLS_PORTS[port]
    assert [status for status, *_ in answers] == [200, 200], answers
    assert all(json.loads(body)["token"] for _, body, _, _ in answers)
    asked = [r for r in tls_emulator.requests if r.path.endswith("/chat-requirements")]
    assert [r.http_version for r in asked] == ["HTTP/2", "HTTP/2"]
    assert len({r.client_port for r in asked}) == 1  # one connection, as one browser tab


# --- bench/event_cost.py --------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["plain", "tls-http2"])
def test_the_event_cost_bench_reads_the_events_mostly_one_at_a_time(transport):
    # Events sent apart reach the reader mostly one at a time on every transport, so the rows
    # compare like reads (sent at once, they came in 5 to 8 times fewer chunks over TLS than over
    # plain HTTP). 10 ms apart here, so that a loaded machine does not merge them.
    cpu, chunks = bench_event_cost.measure(transport, answers=1, words=30, chunk_delay=0.01)
    assert cpu > 0
    assert chunks >= 25
