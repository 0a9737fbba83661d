"""The group commit (chatgpt_web/group_commit.py): changes queued while one write runs are made
together by the next, and each caller hears its own outcome."""
import threading

import pytest

from chatgpt_web.errors import ServiceUnavailable
from chatgpt_web.group_commit import GroupCommit

WAIT = 30


class RecordingWrite:
    """A write that records each batch, gives each entry its position in the batch, and can be
    held at its first call so that other callers queue up meanwhile."""

    def __init__(self, hold_first: bool = False, fail_on=None):
        self.batches: list[list] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail_on = fail_on

    def __call__(self, batch):
        self.batches.append([entry.item for entry in batch])
        self.entered.set()
        assert self.release.wait(WAIT)
        if self.fail_on is not None and self.fail_on in self.batches[-1]:
            raise RuntimeError("store down")
        for position, entry in enumerate(batch):
            entry.result = (len(self.batches), position)


def submit_in_thread(commit, item, outcomes):
    def run():
        try:
            outcomes[item] = commit.submit(item).result
        except Exception as error:  # noqa: BLE001 - the test looks at it
            outcomes[item] = error
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def queued(commit) -> int:
    with commit._queue_lock:
        return len(commit._queue)


def wait_until(condition):
    done = threading.Event()
    for _ in range(WAIT * 100):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached")


def test_a_caller_alone_writes_its_own_change_at_once():
    write = RecordingWrite()
    commit = GroupCommit(write)
    assert commit.submit("a").result == (1, 0)
    assert write.batches == [["a"]]


def test_changes_queued_during_a_write_are_made_together_in_queue_order():
    write = RecordingWrite(hold_first=True)
    commit = GroupCommit(write)
    outcomes = {}
    first = submit_in_thread(commit, "first", outcomes)
    assert write.entered.wait(WAIT)
    others = []
    for item in ("b", "c", "d"):  # one at a time, so the queue order is known
        others.append(submit_in_thread(commit, item, outcomes))
        count = len(others)
        wait_until(lambda count=count: queued(commit) == count)
    write.release.set()
    for thread in [first, *others]:
        thread.join(WAIT)
    assert write.batches == [["first"], ["b", "c", "d"]]
    assert outcomes == {"first": (1, 0), "b": (2, 0), "c": (2, 1), "d": (2, 2)}


def test_a_failed_write_fails_every_caller_of_its_batch_and_no_other():
    write = RecordingWrite(hold_first=True, fail_on="bad")
    commit = GroupCommit(write)
    outcomes = {}
    first = submit_in_thread(commit, "first", outcomes)
    assert write.entered.wait(WAIT)
    others = [submit_in_thread(commit, "bad", outcomes)]
    wait_until(lambda: queued(commit) == 1)
    others.append(submit_in_thread(commit, "innocent", outcomes))
    wait_until(lambda: queued(commit) == 2)
    write.release.set()
    for thread in [first, *others]:
        thread.join(WAIT)
    assert outcomes["first"] == (1, 0)
    assert isinstance(outcomes["bad"], RuntimeError)
    assert outcomes["innocent"] is outcomes["bad"]  # the batch shares its fate
    assert commit.submit("later").result == (3, 0)  # the next write is not affected


def test_an_entry_may_carry_its_own_error():
    def write(batch):
        for entry in batch:
            entry.error = ValueError(entry.item)
    with pytest.raises(ValueError, match="x"):
        GroupCommit(write).submit("x")


def test_submit_later_returns_at_once_and_its_writer_thread_writes():
    write = RecordingWrite(hold_first=True)
    commit = GroupCommit(write, name="test-writer")
    entry = commit.submit_later("a")
    assert write.entered.wait(WAIT)
    assert not entry.done
    with pytest.raises(ServiceUnavailable) as busy:
        entry.wait(0.01)
    assert busy.value.code == "store_lock_timeout"
    write.release.set()
    assert entry.wait(WAIT).result == (1, 0)
    assert any(thread.name == "test-writer" for thread in threading.enumerate())
