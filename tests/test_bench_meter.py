"""bench/concurrency.py's meter: what its CPU and context-switch columns count.

The service under measure is a process tree (gunicorn's master and its workers); these tests use
a small Python process tree of their own in its place.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

from bench import concurrency

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
