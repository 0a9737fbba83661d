"""Store.lock(): one holder at a time across threads, processes and (Redis) instances; it expires
on its own, is released only by its holder, and a waiter gives up with a clean 503."""
import time

import pytest

from chatgpt_web.errors import ServiceUnavailable
from tests.test_store import in_processes, in_threads, open_spec, shared_spec, store  # noqa: F401


def critical_section(locks, key, log, tag):
    """Enter the lock, note entry and exit; overlapping holders would interleave the notes."""
    with locks.lock(key, ttl=30, wait=30):
        log.append(("in", tag))
        time.sleep(0.01)
        log.append(("out", tag))


def never_interleaved(log) -> bool:
    return all(log[i][0] == "in" and log[i + 1] == ("out", log[i][1])
               for i in range(0, len(log), 2))


def test_lock_admits_one_thread_at_a_time(store):  # noqa: F811
    log = []
    in_threads(8, lambda n: critical_section(store, "one", log, n))
    assert len(log) == 16 and never_interleaved(log)


def _lock_worker(spec, key, _n, queue):
    locks = open_spec(spec)
    spans = []
    for _ in range(5):
        with locks.lock(key, ttl=30, wait=60):
            start = time.time()
            time.sleep(0.02)
            spans.append((start, time.time()))
    queue.put(spans)


def test_lock_admits_one_process_at_a_time(shared_spec):  # noqa: F811
    spans = sorted(span for spans in in_processes(3, _lock_worker, shared_spec, "procs")
                   for span in spans)
    assert len(spans) == 15
    assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:], strict=False))


def test_a_waiter_gives_up_after_wait_with_503(store):  # noqa: F811
    with store.lock("busy", ttl=30, wait=1):
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as refused:
            with store.lock("busy", ttl=30, wait=0.2):
                pass
        assert 0.15 < time.monotonic() - started < 5
    assert refused.value.code == "store_lock_timeout"


def test_a_lock_whose_holder_vanished_expires(store):  # noqa: F811
    # A holder killed mid-work never releases: its ttl frees the lock for the others.
    held = store.lock("crashed", ttl=0.3, wait=1)
    held.__enter__()
    with store.lock("crashed", ttl=30, wait=5):
        pass


def test_an_expired_holder_does_not_release_the_next_holders_lock(store):  # noqa: F811
    first = store.lock("handover", ttl=0.2, wait=1)
    first.__enter__()
    time.sleep(0.3)
    with store.lock("handover", ttl=30, wait=1):
        first.__exit__(None, None, None)  # late release of a lock it no longer holds
        with pytest.raises(ServiceUnavailable):
            with store.lock("handover", ttl=30, wait=0.1):
                pass


def test_locks_on_different_keys_do_not_wait_for_each_other(store):  # noqa: F811
    with store.lock("a", ttl=30, wait=0.1), store.lock("b", ttl=30, wait=0.1):
        pass
