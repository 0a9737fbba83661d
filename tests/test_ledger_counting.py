"""The ledger counts every admitted request exactly, with and without quotas, across threads and
across processes' stores (a key without quotas is counted without its lock)."""
import threading

from chatgpt_web.key_policy import KeyPolicy
from chatgpt_web.keys import key_digest
from chatgpt_web.ledger import Ledger
from chatgpt_web.store import DiskStore, RedisStore


def policy(**scopes):
    return KeyPolicy.from_record({"id": "k", "hash": "sha256:" + key_digest("sk-k"), **scopes})


def admit_from_threads(ledgers, key_policy, each=20):
    errors = []

    def admit(ledger):
        try:
            for _ in range(each):
                ledger.admit("k", key_policy)
        except Exception as error:  # collected: an assert in a thread would be lost
            errors.append(error)

    threads = [threading.Thread(target=admit, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


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
