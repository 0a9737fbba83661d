"""The state stores: one suite run over MemoryStore, DiskStore and RedisStore (a real redis-server),
then what only Redis has (prefixes, outages), open_store's choice, and the app on a Redis store."""
import contextlib
import json
import logging
import multiprocessing
import os
import threading
import time

import pytest
import redis

from chatgpt_web.config import Config
from chatgpt_web.errors import ServiceUnavailable
from chatgpt_web.store import (
    DiskStore,
    MemoryStore,
    RedisStore,
    SharedConnections,
    open_store,
)

# Fork, not spawn: the children only need the store's description, and fork starts in
# milliseconds on this 2-core machine. Each child opens its own store, as a worker process would.
_FORK = multiprocessing.get_context("fork")


def open_spec(spec):
    """A store from its description, so that a child process can open its own."""
    kind, *args = spec
    return {"memory": MemoryStore, "disk": DiskStore, "redis": RedisStore}[kind](*args)


def spec_for(kind, tmp_path, request):
    if kind == "memory":
        return ("memory",)
    if kind == "disk":
        return ("disk", str(tmp_path / "cache"))
    return ("redis", request.getfixturevalue("redis_url"), "test:")


@pytest.fixture(params=["memory", "disk", "redis"])
def store(request, tmp_path):
    return open_spec(spec_for(request.param, tmp_path, request))


@pytest.fixture(params=["disk", "redis"])
def shared_spec(request, tmp_path):
    """Stores that several processes share (a MemoryStore is per process by design)."""
    return spec_for(request.param, tmp_path, request)


def wait_until(condition, timeout=10.0):
    """Poll `condition` until true; the expiries below are short but the machine may be busy."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def in_threads(count, work):
    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)


def in_processes(count, target, *args):
    """Run target(*args, n, queue) in `count` processes; their queued results, in any order."""
    queue = _FORK.Queue()
    processes = [_FORK.Process(target=target, args=(*args, n, queue)) for n in range(count)]
    for process in processes:
        process.start()
    results = [queue.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    return results


# --- one suite, every store ---------------------------------------------------------------------

def test_get_set_and_missing_keys(store):
    assert store.get("absent") is None
    for value in ({"a": 1, "b": [1, 2.5, None, True], "c": {}}, [], "text", 7, 1767225600.123456):
        store.set("key", value)
        assert store.get("key") == value
    store.set("other", "x")
    assert store.get("key") == 1767225600.123456  # keys do not leak into one another


def test_expire_forgets_the_value_and_set_without_expire_keeps_it(store):
    store.set("long", "kept", expire=600)
    store.set("short", "gone", expire=0.05)
    assert store.get("long") == "kept"
    assert wait_until(lambda: store.get("short") is None)
    assert store.get("long") == "kept"
    # A later set without expire makes the value permanent again.
    store.set("renewed", 1, expire=0.05)
    store.set("renewed", 2)
    time.sleep(0.2)
    assert store.get("renewed") == 2
    store.set("zero", 1, expire=0)
    assert store.get("zero") is None


def test_delete(store):
    store.set("key", {"a": 1})
    store.delete("key")
    assert store.get("key") is None
    store.delete("never-set")  # no error


def test_values_are_json_only(store):
    store.set("key", {"tuple": (1, 2), 3: "int key"})
    assert store.get("key") == {"tuple": [1, 2], "3": "int key"}
    for not_json in (object(), b"bytes", {"set": {1, 2}}):
        with pytest.raises(TypeError):
            store.set("key", not_json)
        with pytest.raises(TypeError):
            store.merge("key", {"value": not_json})
    assert store.get("key") == {"tuple": [1, 2], "3": "int key"}  # a refused value changes nothing
    returned = store.get("key")
    returned["tuple"].append(3)
    assert store.get("key")["tuple"] == [1, 2]  # a returned value is a copy


def test_hit_counts_in_a_fixed_window_that_starts_at_the_first_hit(store):
    before = time.time()
    count, reset_at = store.hit("rl:a", 600)
    after = time.time()
    assert count == 1 and before + 600 <= reset_at <= after + 600
    hits = [store.hit("rl:a", 600) for _ in range(3)]
    assert hits == [(2, reset_at), (3, reset_at), (4, reset_at)]
    assert store.hit("rl:b", 600)[0] == 1  # windows are per key
    assert store.get("rl:a") == 4


def test_hit_counts_several_hits_at_once(store):
    count, reset_at = store.hit("rl:many", 600, amount=5)  # the first opens the window
    assert count == 5 and store.get("rl:many") == 5
    assert store.hit("rl:many", 600, amount=3) == (8, reset_at)
    assert store.hit("rl:many", 600) == (9, reset_at)


def test_hit_window_resets_after_it_ends(store):
    first = [store.hit("rl", 0.2) for _ in range(3)]
    assert [count for count, _ in first] == [1, 2, 3]
    reset_at = first[0][1]
    time.sleep(max(0.0, reset_at - time.time()))
    # Poll: the backend's own expiry may lag our clock by a few milliseconds under load.
    results = []
    assert wait_until(lambda: results.append(store.hit("rl", 0.2)) or results[-1][0] == 1)
    assert results[-1][1] > reset_at


def test_hit_is_atomic_across_threads(store):
    counts = []
    lock = threading.Lock()

    def work(_):
        mine = [store.hit("rl:threads", 600)[0] for _ in range(50)]
        with lock:
            counts.extend(mine)

    in_threads(8, work)
    assert sorted(counts) == list(range(1, 401))  # every hit counted once, no count seen twice


def _hit_worker(spec, key, times, _n, queue):
    store = open_spec(spec)
    queue.put([store.hit(key, 600)[0] for _ in range(times)])


def test_hit_is_atomic_across_processes(shared_spec):
    results = in_processes(4, _hit_worker, shared_spec, "rl:processes", 50)
    assert sorted(count for counts in results for count in counts) == list(range(1, 201))
    assert open_spec(shared_spec).get("rl:processes") == 200


def test_merge_updates_a_dict_and_returns_it(store):
    assert store.merge("record", {"a": 1}) == {"a": 1}
    assert store.merge("record", {"b": [1, 2], "a": 2}) == {"a": 2, "b": [1, 2]}
    assert store.get("record") == {"a": 2, "b": [1, 2]}
    store.set("not-a-dict", [1, 2])
    assert store.merge("not-a-dict", {"a": 1}) == {"a": 1}  # replaced, as a missing record is
    store.merge("brief", {"a": 1}, expire=0.05)
    assert wait_until(lambda: store.get("brief") is None)


def test_merge_is_atomic_across_threads(store):
    def work(n):
        for i in range(25):
            store.merge("record", {f"t{n}-{i}": i, "last": n})

    in_threads(8, work)
    record = store.get("record")
    assert len(record) == 8 * 25 + 1  # a lost update would have dropped someone's field


def _merge_worker(spec, key, times, n, queue):
    store = open_spec(spec)
    for i in range(times):
        store.merge(key, {f"p{n}-{i}": i})
    queue.put(n)


def test_merge_is_atomic_across_processes(shared_spec):
    in_processes(4, _merge_worker, shared_spec, "record", 25)
    assert len(open_spec(shared_spec).get("record")) == 4 * 25


def test_update_reads_several_keys_and_writes_what_the_change_returns(store):
    store.set("ledger", {"rows": 1})
    seen = []

    def change(values):
        seen.append(values)
        ledger, totals, untouched = values
        return [({"rows": ledger["rows"] + 1}, None), ({"tokens": 7}, 600), None]

    store.update(["ledger", "totals", "untouched"], change)
    assert seen == [[{"rows": 1}, None, None]]
    assert store.get("ledger") == {"rows": 2} and store.get("totals") == {"tokens": 7}
    assert store.get("untouched") is None
    store.update(["brief"], lambda values: [(1, 0.05)])
    assert wait_until(lambda: store.get("brief") is None)


def test_update_writes_nothing_when_the_change_raises(store):
    store.set("a", 1)

    def refuse(values):
        raise LookupError("no room")

    with pytest.raises(LookupError):
        store.update(["a", "b"], refuse)
    with pytest.raises(TypeError):  # a value that is not JSON: checked before any write
        store.update(["a", "b"], lambda values: [(2, None), ({1, 2}, None)])
    assert store.get("a") == 1 and store.get("b") is None


def _add_to_both(store, times):
    for _ in range(times):
        store.update(["left", "right"], lambda values: [((value or 0) + 1, None)
                                                        for value in values])


def test_update_is_atomic_across_threads(store):
    in_threads(8, lambda _: _add_to_both(store, 25))
    assert store.get("left") == store.get("right") == 8 * 25  # no increment lost


def _update_worker(spec, times, n, queue):
    _add_to_both(open_spec(spec), times)
    queue.put(n)


def test_update_is_atomic_across_processes(shared_spec):
    in_processes(4, _update_worker, shared_spec, 25)
    store = open_spec(shared_spec)
    assert store.get("left") == store.get("right") == 4 * 25


def test_add_stores_only_when_nothing_live_is_there(store):
    assert store.add("once", {"id": "first"}, expire=600) is True
    assert store.add("once", {"id": "second"}, expire=600) is False
    assert store.get("once") == {"id": "first"}
    assert store.add("brief", 1, expire=0.05) is True
    assert wait_until(lambda: store.get("brief") is None)
    assert store.add("brief", 2) is True  # an expired value is no value
    assert store.get("brief") == 2
    assert store.add("never", 1, expire=0) is False and store.get("never") is None


def test_add_has_one_winner_across_threads(store):
    wins = []

    def work(n):
        if store.add("device", {"id": n}, expire=600):
            wins.append(n)

    in_threads(8, work)
    assert len(wins) == 1 and store.get("device") == {"id": wins[0]}


def _add_worker(spec, key, n, queue):
    queue.put((n, open_spec(spec).add(key, {"id": n}, expire=600)))


def test_add_has_one_winner_across_processes(shared_spec):
    results = in_processes(4, _add_worker, shared_spec, "device")
    winners = [n for n, won in results if won]
    assert len(winners) == 1
    assert open_spec(shared_spec).get("device") == {"id": winners[0]}


def test_writable(store):
    assert store.writable() is True


# --- DiskStore only -----------------------------------------------------------------------------

def open_sqlite_connections(directory) -> int:
    """SQLite connections this process holds on the cache in `directory` (each opens the
    database file once)."""
    database = os.path.realpath(os.path.join(directory, "cache.db"))
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == database
    return count


def test_disk_store_threads_share_a_few_sqlite_connections(tmp_path):
    """A thread keeps no connection after its operation: 64 threads that each used the store
    and are still alive hold at most SharedConnections.LIMIT (diskcache alone: one each)."""
    store = DiskStore(str(tmp_path / "cache"))
    used, release = threading.Barrier(65), threading.Event()

    def work(n):
        store.hit("rl:shared", 600)
        store.merge("pins", {str(n): n})
        assert store.get("pins")[str(n)] == n
        used.wait(60)
        release.wait(60)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(64)]
    for thread in threads:
        thread.start()
    try:
        used.wait(60)  # every thread has done its operations and is alive
        assert 1 <= open_sqlite_connections(tmp_path / "cache") <= SharedConnections.LIMIT
        assert store.connections.opened <= SharedConnections.LIMIT
    finally:
        release.set()
        for thread in threads:
            thread.join(60)
    assert store.get("rl:shared") == 64
    assert len(store.get("pins")) == 64


def test_disk_store_waits_for_a_lent_connection(tmp_path, monkeypatch):
    """With every connection lent, an operation waits for one instead of opening another."""
    monkeypatch.setattr(SharedConnections, "LIMIT", 1)
    store = DiskStore(str(tmp_path / "cache"))
    store.set("k", "v")
    holding, release, results = threading.Event(), threading.Event(), []

    def holder():
        with store.connections.lent():
            holding.set()
            release.wait(60)

    first = threading.Thread(target=holder)
    first.start()
    assert holding.wait(60)
    second = threading.Thread(target=lambda: results.append(store.get("k")))
    second.start()
    second.join(0.2)
    assert second.is_alive() and not results  # waiting: the only connection is lent
    release.set()
    first.join(60)
    second.join(60)
    assert results == ["v"]
    assert store.connections.opened == 1


def _forked_hits(store, _n, queue):
    queue.put(store.hit("rl:forked", 600)[0])


def test_disk_store_used_before_a_fork_works_in_the_children(tmp_path):
    """gunicorn forks workers from a master that may have used the store: each child opens
    its own connections instead of using the parent's."""
    store = DiskStore(str(tmp_path / "cache"))
    store.hit("rl:forked", 600)
    assert sorted(in_processes(3, _forked_hits, store)) == [2, 3, 4]
    assert store.get("rl:forked") == 4


# --- Redis only ---------------------------------------------------------------------------------

def test_prefixes_isolate_two_redis_stores(redis_url):
    one, two = RedisStore(redis_url, "one:"), RedisStore(redis_url, "two:")
    one.set("key", {"who": "one"})
    two.set("key", {"who": "two"})
    assert one.get("key") == {"who": "one"} and two.get("key") == {"who": "two"}
    assert one.hit("rl", 600)[0] == 1 and one.hit("rl", 600)[0] == 2
    assert two.hit("rl", 600)[0] == 1
    one.delete("key")
    assert two.get("key") == {"who": "two"}
    with redis.Redis.from_url(redis_url) as raw:
        keys = {key.decode() for key in raw.keys("*")}
        assert {"one:rl", "one:rl:reset", "two:key", "two:rl", "two:rl:reset"} <= keys
        assert all(key.startswith(("one:", "two:")) for key in keys)
        assert json.loads(raw.get("two:key")) == {"who": "two"}  # plain JSON, never pickle


def test_default_prefix_is_chatgpt_web(redis_url):
    store = open_store(Config.from_env({"REDIS_URL": redis_url}))
    store.set("key", 1)
    with redis.Redis.from_url(redis_url) as raw:
        assert raw.get("chatgpt_web:key") == b"1"


def test_unreachable_redis_is_not_writable_and_operations_raise_503(dead_redis_url):
    store = RedisStore(dead_redis_url)  # building the store does not connect
    assert store.writable() is False
    for operation in (lambda: store.get("k"), lambda: store.set("k", 1), lambda: store.delete("k"),
                      lambda: store.hit("k", 60), lambda: store.merge("k", {"a": 1})):
        with pytest.raises(ServiceUnavailable) as caught:
            operation()
        assert caught.value.status == 503 and caught.value.code == "store_unavailable"
        assert "planted-redis-password" not in caught.value.message


def test_redis_store_recovers_when_redis_comes_back(redis_server):
    from tests.redis_fixtures import RedisServer
    own = RedisServer(redis_server.executable).start()
    try:
        store = RedisStore(own.url)
        store.set("key", "before")
        own.stop()
        assert store.writable() is False
        with pytest.raises(ServiceUnavailable):
            store.get("key")
        own.start()
        assert store.writable() is True  # the same object reconnects by itself
        store.set("key", "after")
        assert store.get("key") == "after"
    finally:
        own.cleanup()


def test_open_store_picks_redis_with_redis_url_and_never_falls_back(redis_url, dead_redis_url,
                                                                    tmp_path):
    cache_dir = tmp_path / "cache"
    assert open_store(Config.from_env({"REDIS_URL": redis_url,
                                       "CACHE_DIR": str(cache_dir)})).kind == "redis"
    down = open_store(Config.from_env({"REDIS_URL": dead_redis_url, "CACHE_DIR": str(cache_dir)}))
    assert down.kind == "redis" and down.writable() is False
    assert not cache_dir.exists()  # no silent fallback to the disk
    assert open_store(Config.from_env({"CACHE_DIR": str(cache_dir)})).kind == "disk"


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://:secret@", "redis://host:port/0",
                                 "postgres://user:secret@db/0"])
def test_malformed_redis_url_is_refused_without_quoting_it(url):
    from chatgpt_web.errors import ConfigError
    with pytest.raises(ConfigError) as caught:
        Config.from_env({"REDIS_URL": url})
    assert "REDIS_URL" in str(caught.value) and url not in str(caught.value)


def test_config_repr_hides_the_redis_url(dead_redis_url):
    assert "planted-redis-password" not in repr(Config.from_env({"REDIS_URL": dead_redis_url}))


# --- the app on Redis ---------------------------------------------------------------------------

def connections_received(url) -> int:
    with redis.Redis.from_url(url) as raw:
        return raw.info("stats")["total_connections_received"]


def test_building_the_app_does_not_connect_to_redis(make_app, redis_url):
    before = connections_received(redis_url)
    app = make_app(REDIS_URL=redis_url)
    assert connections_received(redis_url) == before + 1  # only our own INFO connection
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"]["cache"] == {"ok": True, "kind": "redis"}
    assert connections_received(redis_url) > before + 2


def test_two_instances_share_the_token_cache(make_app, redis_url, emulator, tmp_path):
    emulator.auth.add_account("ada@example.com", "pw-123456")
    first = make_app(REDIS_URL=redis_url, CACHE_DIR=str(tmp_path / "one")).test_client()
    second = make_app(REDIS_URL=redis_url, CACHE_DIR=str(tmp_path / "two")).test_client()
    fields = {"email": "ada@example.com", "password": "pw-123456"}
    token = first.post("/get_access_token", data=fields).json["access_token"]
    assert second.post("/get_access_token", data=fields).json["access_token"] == token
    # The second instance did not log in.
    assert len(emulator.requests_to("/api/accounts/password/verify")) == 1
    with redis.Redis.from_url(redis_url) as raw:
        stored = b"".join(raw.get(key) or b"" for key in raw.keys("*")) + b"".join(raw.keys("*"))
    for secret in (b"ada@example.com", b"pw-123456"):
        assert secret not in stored


def test_unreachable_redis_is_a_clean_503_and_readyz_not_ready(make_app, dead_redis_url,
                                                               emulator, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"name": "a", "access_token": emulator.mint_access_token()}]))
    client = make_app(REDIS_URL=dead_redis_url, ACCOUNTS_FILE=str(accounts)).test_client()

    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["status"] == "not_ready"
    assert ready.json["checks"]["cache"] == {"ok": False, "kind": "redis"}
    assert ready.json["checks"]["accounts"]["ok"] is False  # health lives in the store

    for response in (client.post("/get_access_token", data={"session_token": "some-session"}),
                     client.post("/send_message", data={"prompt": "Hi",
                                                        "session_token": "some-session"}),
                     client.post("/send_message", data={"prompt": "Hi"})):  # served by the pool
        assert response.status_code == 503
        assert response.json["code"] == "store_unavailable"
        assert "planted-redis-password" not in response.get_data(as_text=True)
    assert emulator.requests == []  # nothing was sent upstream without the shared state
    assert "planted-redis-password" not in caplog.text
    assert "store_unavailable" in caplog.text or "redis store unreachable" in caplog.text
