"""The ledger counts every admitted request and settled answer exactly, with and without quotas,
across threads and across processes' stores (a key without quotas is counted without its lock),
and writes what a burst of threads brings at once together."""
import threading
from datetime import UTC, datetime

from chatgpt_web.key_policy import KeyPolicy
from chatgpt_web.keys import key_digest
from chatgpt_web.ledger import Ledger
from chatgpt_web.store import DiskStore, MemoryStore, RedisStore
from tests.test_store import wait_until


def policy(**scopes):
    return KeyPolicy.from_record({"id": "k", "hash": "sha256:" + key_digest("sk-k"), **scopes})


def from_threads(ledgers, work, each):
    """Run `work(ledger)` `each` times in one thread per ledger; the errors the threads met."""
    errors = []

    def run(ledger):
        try:
            for _ in range(each):
                work(ledger)
        except Exception as error:  # collected: an assert in a thread would be lost
            errors.append(error)

    threads = [threading.Thread(target=run, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def admit_from_threads(ledgers, key_policy, each=20):
    return from_threads(ledgers, lambda ledger: ledger.admit("k", key_policy), each)


def used(ledger, key_policy=None):
    report = ledger.status(key_policy, "k")
    return report["day"]["requests"]["used"], report["month"]["requests"]["used"]


def test_requests_without_quota_are_counted_exactly_across_threads(tmp_path):
    # Two Ledgers on one directory: two worker processes of one host.
    ledgers = [Ledger(DiskStore(str(tmp_path / "store"))) for _ in range(2)]
    assert admit_from_threads(ledgers * 4, None) == []
    assert used(ledgers[0]) == used(ledgers[1]) == (160, 160)


def test_a_quota_added_later_counts_the_requests_made_without_one(tmp_path):
    ledger = Ledger(DiskStore(str(tmp_path / "store")))
    for _ in range(3):
        ledger.admit("k", policy())
    limited = policy(quota={"requests": "5/day"})
    ledger.admit("k", limited)
    ledger.admit("k", limited)
    try:
        ledger.admit("k", limited)
    except Exception as error:
        assert error.code == "quota_exhausted"
    else:
        raise AssertionError("the sixth request of a 5/day key was admitted")
    assert used(ledger, limited) == (5, 5)


def test_two_instances_on_one_redis_count_a_key_without_quota_exactly(redis_url):
    ledgers = [Ledger(RedisStore(redis_url, prefix="ledger-count:")) for _ in range(2)]
    assert admit_from_threads(ledgers * 3, None, each=10) == []
    assert used(ledgers[0]) == used(ledgers[1]) == (60, 60)


# --- bursts are written together (a group commit), and still exactly ---------------------------

def settle_from_threads(ledgers, each=20, hold_for=None):
    def settle(ledger):
        hold = hold_for(ledger) if hold_for else None
        ledger.record("k", "gpt-4o", "relay", 3, 5, hold=hold)

    return from_threads(ledgers, settle, each)


def test_answers_settled_at_once_are_all_in_the_ledger_and_their_holds_given_back(tmp_path):
    ledgers = [Ledger(DiskStore(str(tmp_path / "store"))) for _ in range(2)]
    quota = policy(quota={"tokens": "100000/day"})
    errors = settle_from_threads(ledgers * 4, hold_for=lambda ledger:
                                 ledger.hold_tokens("k", quota, 3))
    assert errors == []
    day = datetime.now(UTC).date()
    assert ledgers[0].rows(day, day, "k") == [{
        "day": day.isoformat(), "key": "k", "model": "gpt-4o", "backend": "relay",
        "requests": 160, "prompt_tokens": 480, "completion_tokens": 800}]
    tokens = ledgers[1].status(quota, "k")["day"]["tokens"]
    assert tokens["used"] == 1280 and tokens["held"] == 0


class GatedStore(MemoryStore):
    """A MemoryStore whose first write of `watched` records waits for `gate` (a slow disk),
    counting those writes."""

    def __init__(self, watched: str):
        super().__init__()
        self.watched, self.writes = watched, 0
        self.writing, self.gate = threading.Event(), threading.Event()

    def _slow(self, key):
        if self.watched in key:
            self.writes += 1
            self.writing.set()
            assert self.gate.wait(30)

    def set(self, key, value, expire=None):
        self._slow(key)
        super().set(key, value, expire)

    def hit(self, key, window, amount=1):
        self._slow(key)
        return super().hit(key, window, amount)

    def update(self, keys, change):
        watched = [key for key in keys if self.watched in key]
        if watched:
            self._slow(watched[0])  # one write, however many records it changes
        super().update(keys, change)


def burst_behind_a_slow_write(store, ledger, call, count=10):
    """`call(ledger)` from `count` threads, all but the first queued while its write waits."""
    threads = [threading.Thread(target=call, args=(ledger,)) for _ in range(count)]
    threads[0].start()
    assert store.writing.wait(30)
    for thread in threads[1:]:
        thread.start()
    assert wait_until(lambda: len(ledger._records._queue) + len(ledger._counts._queue)
                      == count - 1)
    store.gate.set()
    for thread in threads:
        thread.join(30)


def test_a_burst_of_settled_answers_costs_two_writes_of_the_ledger(tmp_path):
    store = GatedStore(":ledger:")
    ledger = Ledger(store)
    burst_behind_a_slow_write(store, ledger,
                              lambda ledger: ledger.record("k", "gpt-4o", "relay", 3, 5))
    assert store.writes == 2  # the first answer's, then the nine queued behind it together
    day = datetime.now(UTC).date()
    assert ledger.rows(day, day, "k")[0]["requests"] == 10


def test_a_burst_of_admissions_without_quota_costs_two_counts_per_period(tmp_path):
    store = GatedStore(":count")
    ledger = Ledger(store)
    burst_behind_a_slow_write(store, ledger, lambda ledger: ledger.admit("k", None))
    assert store.writes == 2 * 2  # day and month: the first admission's, then the nine others
    assert used(ledger) == (10, 10)


def test_a_request_without_quota_is_counted_while_it_runs_and_awaited_before_its_answer():
    store = GatedStore(":count")
    ledger = Ledger(store)
    pending = ledger.admit("k", None, wait=False)  # returns while the count is being written
    assert store.writing.wait(30) and not pending.done
    store.gate.set()
    pending.wait()
    assert used(ledger) == (1, 1)
    assert ledger.admit("k", policy(quota={"requests": "5/day"}), wait=False) is None  # checked
    assert used(ledger) == (2, 2)


# --- settled answers without token holds take no lock -------------------------------------------

def test_an_answer_without_a_hold_settles_while_the_keys_lock_is_held_elsewhere(tmp_path):
    store = DiskStore(str(tmp_path / "store"))
    ledger = Ledger(store)
    quota = policy(quota={"tokens": "100000/day"})
    hold = ledger.hold_tokens("k", quota, 3)
    day = datetime.now(UTC).date()
    with store.lock("usage:v1:k", 30, 5):  # another worker holds the key's lock meanwhile
        ledger.record("k", "gpt-4o", "relay", 3, 5)  # returns: it needs no lock
        assert ledger.rows(day, day, "k")[0]["requests"] == 1
        with_hold = threading.Thread(
            target=ledger.record, args=("k", "gpt-4o", "relay", 3, 5), kwargs={"hold": hold})
        with_hold.start()
        with_hold.join(0.5)
        assert with_hold.is_alive()  # giving a hold back waits for the lock
    with_hold.join(30)
    assert ledger.rows(day, day, "k")[0]["requests"] == 2
    tokens = ledger.status(quota, "k")["day"]["tokens"]
    assert tokens["used"] == 16 and tokens["held"] == 0


def test_settling_without_the_lock_loses_no_count_beside_admissions_under_it(tmp_path):
    # Two workers' ledgers on one directory; admissions of a request quota (under the key's lock)
    # and answers settled without it both add to the same totals records.
    ledgers = [Ledger(DiskStore(str(tmp_path / "store"))) for _ in range(2)]
    limited = policy(quota={"requests": "100000/day"})

    def admit_and_settle(ledger):
        ledger.admit("k", limited)
        ledger.record("k", "gpt-4o", "relay", 3, 5)

    assert from_threads(ledgers * 3, admit_and_settle, 25) == []
    report = ledgers[1].status(limited, "k")["day"]
    assert report["requests"]["used"] == 150 and report["tokens"]["used"] == 8 * 150
    day = datetime.now(UTC).date()
    assert ledgers[0].rows(day, day, "k")[0]["requests"] == 150


def test_a_stream_goes_out_while_its_count_is_written_and_ends_once_it_is():
    # The count of a key without quotas is awaited before an answer ends (whoever reads the
    # usage next must see it): a whole answer before it goes out, a stream before its end only,
    # not before its first byte.
    from flask import Response

    from chatgpt_web import access
    from chatgpt_web.group_commit import Queued

    counting = Queued(("k", None), waited_on=True)  # the writer thread writes it, some time later
    stream = Response(iter([b"data: 1\n\n", b"data: [DONE]\n\n"]), mimetype="text/event-stream")
    access._counted_before_the_end(stream, counting, "k")
    chunks = iter(stream.response)
    assert next(chunks) == b"data: 1\n\n" and next(chunks) == b"data: [DONE]\n\n"
    end = threading.Thread(target=lambda: list(chunks))
    end.start()
    end.join(0.3)
    assert end.is_alive()  # the end waits for the count
    whole = threading.Thread(target=access._counted_before_the_end,
                             args=(Response(b"{}"), counting, "k"))
    whole.start()
    whole.join(0.3)
    assert whole.is_alive()  # so does a whole answer, before it goes out
    counting.mark_written()
    end.join(30)
    whole.join(30)
    assert not end.is_alive() and not whole.is_alive()


def test_a_streams_request_is_counted_once_its_first_chunk_is_out():
    # A key without quotas has nothing to check before the answer: its stream is counted after
    # the first chunk (the count's write no longer runs beside the work before it), and the
    # count is in before the stream ends; a stream closed before its first chunk counts too.
    from flask import Response

    from chatgpt_web import access

    ledger = Ledger(MemoryStore())
    stream = Response(iter([b"data: 1\n\n", b"data: [DONE]\n\n"]), mimetype="text/event-stream")
    access._counted_after_the_first_chunk(stream, ledger, "k", None)
    chunks = iter(stream.response)
    assert next(chunks) == b"data: 1\n\n"
    assert used(ledger) == (0, 0)  # not while the first chunk goes out
    assert list(chunks) == [b"data: [DONE]\n\n"]
    assert used(ledger) == (1, 1)  # in before the end
    unread = Response(iter([b"data: 1\n\n"]), mimetype="text/event-stream")
    access._counted_after_the_first_chunk(unread, ledger, "k", None)
    unread.close()  # the server closed it before the first chunk
    assert wait_until(lambda: used(ledger) == (2, 2))
    access._counted_after_the_first_chunk(Response(b"{}"), ledger, "k", None)  # a whole answer
    assert used(ledger) == (3, 3)
