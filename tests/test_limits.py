"""Rate limits per client key and per client IP: counting, headers, strategies, shared state."""
import threading

import pytest

from chatgpt_web.config import Config, Rate, rate
from chatgpt_web.errors import ConfigError, RateLimited
from chatgpt_web.limits import RateLimiter
from chatgpt_web.store import DiskStore, MemoryStore
from tests.test_store import wait_until

KEY = "sk-cw-limits"


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture(params=["memory", "disk"])
def store(request, tmp_path):
    return MemoryStore() if request.param == "memory" else DiskStore(str(tmp_path / "store"))


THREE_PER_MINUTE = Rate(3, 60)


def limiter(store, clock, strategy, per_ip=THREE_PER_MINUTE, per_key=None):
    return RateLimiter(store, per_key=per_key, per_ip=per_ip, strategy=strategy, clock=clock)


@pytest.mark.parametrize("text, expected", [("120/hour", Rate(120, 3600)), ("5/second", Rate(5, 1)),
                                        ("10 / minutes", Rate(10, 60)), ("1/day", Rate(1, 86400)),
                                        ("off", None), ("0", None)])
def test_rates_are_parsed(text, expected):
    assert rate(text) == expected
    assert Config.from_env({"RATE_LIMIT": text}).rate_limit == expected


@pytest.mark.parametrize("text", ["120", "120/week", "-1/hour", "lots"])
def test_malformed_rates_are_refused_at_start(text):
    with pytest.raises(ConfigError):
        Config.from_env({"RATE_LIMIT": text})


def test_default_is_120_per_hour_sliding_for_pooled_requests_only():
    config = Config()
    assert config.rate_limit == Rate(120, 3600, pooled_only=True) == config.rate_limit_ip
    assert config.rate_limit_strategy == "sliding"
    written = Config.from_env({"RATE_LIMIT": "120/hour", "RATE_LIMIT_IP": "120/hour"})
    assert written.rate_limit == Rate(120, 3600) == written.rate_limit_ip  # every request


def test_fixed_window_refuses_past_the_limit_until_the_window_ends(store):
    clock = Clock(16667 * 60 + 20.0)  # 20 s into an aligned minute
    limits = limiter(store, clock, "fixed")
    assert [limits.check(None, "198.51.100.1").remaining for _ in range(3)] == [2, 1, 0]
    with pytest.raises(RateLimited) as refused:
        limits.check(None, "198.51.100.1")
    assert refused.value.retry_after == 40
    assert refused.value.headers["RateLimit-Remaining"] == "0"
    # Another IP has its own count.
    assert limits.check(None, "198.51.100.2").remaining == 2
    clock.now += 40
    assert limits.check(None, "198.51.100.1").remaining == 2


def test_sliding_window_carries_the_previous_window_over(store):
    clock = Clock(16667 * 60 + 50.0)  # late in an aligned minute
    limits = limiter(store, clock, "sliding")
    for _ in range(3):
        limits.check(None, "ip")
    # 15 s into the next window, 3 x 0.75 of the previous window still counts: 2.25 + 1 > 3.
    clock.now = 16668 * 60 + 15.0
    with pytest.raises(RateLimited) as refused:
        limits.check(None, "ip")
    # A fixed window would have let it through; the sliding one says when it will.
    assert 1 <= refused.value.retry_after <= 60
    clock.now += refused.value.retry_after
    limits.check(None, "ip")  # fits now


@pytest.mark.parametrize("strategy, allowed", [("fixed", 6), ("sliding", 3)])
def test_only_the_sliding_window_prevents_the_burst_at_a_window_edge(store, strategy, allowed):
    clock = Clock(16667 * 60 + 59.0)
    limits = limiter(store, clock, strategy)
    passed = 0
    for second in (0, 2):
        clock.now = 16667 * 60 + 59.0 + second
        for _ in range(3):
            try:
                limits.check(None, "edge")
                passed += 1
            except RateLimited:
                pass
    assert passed == allowed


def test_key_and_ip_are_limited_separately(store):
    clock = Clock()
    limits = limiter(store, clock, "fixed", per_ip=Rate(5, 60), per_key=Rate(2, 60))
    limits.check("key-a", "ip-1")
    assert limits.check("key-a", "ip-2").remaining == 0  # the key's limit is the tighter
    with pytest.raises(RateLimited) as refused:
        limits.check("key-a", "ip-3")
    assert "per client key" in refused.value.message
    assert limits.check("key-b", "ip-1").remaining == 1  # another key, and ip-1 has room


def test_limits_hold_across_two_apps_sharing_one_cache_dir(make_app):
    # Two apps on one CACHE_DIR are what two gunicorn workers on one host are.
    first, second = make_app(RATE_LIMIT_IP="3/hour"), make_app(RATE_LIMIT_IP="3/hour")
    statuses = [app.test_client().get("/v1/models").status_code for app in (first, second, first)]
    assert statuses == [401, 401, 401]  # counted even though refused for the missing token
    refused = second.test_client().get("/v1/models")
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "rate_limited"
    assert refused.json["error"]["type"] == "rate_limit_error"
    assert int(refused.headers["Retry-After"]) > 0


def test_every_answer_carries_ratelimit_headers(make_app, token):
    client = make_app(RATE_LIMIT_IP="10/minute").test_client()
    ok = client.post("/send_message", data={"prompt": "Hi", "access_token": token})
    bad = client.post("/send_message", data={})
    streamed = client.post("/send_message", data={"prompt": "Hi", "access_token": token,
                                                  "stream": "true"})
    assert ok.status_code == 200 and bad.status_code == 400 and streamed.status_code == 200
    remaining = [int(r.headers["RateLimit-Remaining"]) for r in (ok, bad, streamed)]
    assert remaining == [9, 8, 7]
    assert all(r.headers["RateLimit-Limit"] == "10" for r in (ok, bad, streamed))
    assert all(1 <= int(r.headers["RateLimit-Reset"]) <= 60 for r in (ok, bad, streamed))


def test_probes_and_metrics_are_not_limited(make_app):
    client = make_app(RATE_LIMIT_IP="1/hour").test_client()
    for _ in range(3):
        for path in ("/", "/healthz", "/readyz", "/metrics"):
            response = client.get(path)
            assert response.status_code == 200 and "RateLimit-Limit" not in response.headers


def test_limits_can_be_turned_off(make_app):
    client = make_app(RATE_LIMIT_IP="off").test_client()
    responses = [client.get("/v1/models") for _ in range(5)]
    assert all(r.status_code == 401 and "RateLimit-Limit" not in r.headers for r in responses)


def test_per_key_limit_with_api_keys(make_app):
    client = make_app(API_KEYS=KEY, RATE_LIMIT="2/hour", RATE_LIMIT_IP="off").test_client()
    headers = {"Authorization": f"Bearer {KEY}"}
    statuses = [client.get("/v1/models", headers=headers).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_client_ip_comes_from_forwarded_for_only_behind_a_trusted_proxy(make_app):
    trusted = make_app(RATE_LIMIT_IP="1/hour", TRUSTED_PROXIES="10.0.0.0/8").test_client()
    behind_proxy = {"REMOTE_ADDR": "10.0.0.2"}
    for client_address in ("198.51.100.1", "198.51.100.2"):
        response = trusted.get("/v1/models", environ_base=behind_proxy,
                               headers={"X-Forwarded-For": client_address})
        assert response.status_code == 401  # each client's first request: not limited
    again = trusted.get("/v1/models", environ_base=behind_proxy,
                        headers={"X-Forwarded-For": "198.51.100.1"})
    assert again.status_code == 429
    # Without TRUSTED_PROXIES the header is the client's word and is ignored.
    untrusted = make_app(RATE_LIMIT_IP="1/hour").test_client()
    first = untrusted.get("/v1/models", headers={"X-Forwarded-For": "198.51.100.1"})
    forged = untrusted.get("/v1/models", headers={"X-Forwarded-For": "198.51.100.2"})
    assert (first.status_code, forged.status_code) == (401, 429)


def test_simultaneous_hits_are_each_counted_once(store):
    import threading
    barrier, counts = threading.Barrier(40), []

    def hit():
        barrier.wait()
        counts.append(store.hit("limit:test", 60)[0])

    threads = [threading.Thread(target=hit) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(counts) == list(range(1, 41))
    assert store.get("limit:test") == 40


def test_remaining_never_promises_a_request_that_would_be_refused(store):
    clock = Clock(16667 * 60 + 30.0)
    limits = limiter(store, clock, "sliding", per_ip=Rate(10, 60))
    for _ in range(5):
        limits.check(None, "ip")
    clock.now = 16668 * 60 + 30.0  # half of the previous window's 5 still counts: 2.5
    for _ in range(7):
        decision = limits.check(None, "ip")  # 2.5 + 7 = 9.5 of 10
    assert decision.remaining == 0  # 10 - floor(9.5) said 1
    with pytest.raises(RateLimited):
        limits.check(None, "ip")  # 2.5 + 8 = 10.5


@pytest.mark.parametrize("prefix, same", [(128, False), (64, True)])
def test_ipv6_clients_are_counted_per_address_or_per_network(store, prefix, same):
    limits = RateLimiter(store, per_key=None, per_ip=Rate(2, 60), clock=Clock(), ipv6_prefix=prefix)
    limits.check(None, "2001:db8:0:0::1")
    limits.check(None, "2001:DB8::1")  # the same address written another way
    if same:
        with pytest.raises(RateLimited):
            limits.check(None, "2001:db8::abcd")  # another address of the same /64
    else:
        with pytest.raises(RateLimited):
            limits.check(None, "2001:db8::0:1")
        assert limits.check(None, "2001:db8::abcd").remaining == 1


def test_an_ipv4_mapped_address_is_its_ipv4_address(store):
    limits = limiter(store, Clock(), "fixed", per_ip=Rate(1, 60))
    limits.check(None, "192.0.2.7")
    with pytest.raises(RateLimited):
        limits.check(None, "::ffff:192.0.2.7")


def test_default_limits_count_only_pooled_requests(store):
    limits = limiter(store, Clock(), "fixed", per_ip=Rate(1, 60, pooled_only=True))
    for _ in range(3):
        assert limits.check(None, "ip") is None  # own credentials: not counted
    assert limits.check(None, "ip", pooled=True).remaining == 0
    with pytest.raises(RateLimited):
        limits.check(None, "ip", pooled=True)


# --- a burst is counted together (a group commit), and still exactly ----------------------------

class GatedHits(MemoryStore):
    """A MemoryStore whose first hit waits for `gate` (a slow shared store), counting hits."""

    def __init__(self):
        super().__init__()
        self.hits, self.counting, self.gate = [], threading.Event(), threading.Event()

    def hit(self, key, window, amount=1):
        self.hits.append(amount)
        self.counting.set()
        assert self.gate.wait(30)
        return super().hit(key, window, amount)


@pytest.mark.parametrize("strategy", ["fixed", "sliding"])
def test_a_burst_is_counted_in_two_store_hits_each_request_with_its_own_count(strategy):
    store, clock = GatedHits(), Clock()
    limits = limiter(store, clock, strategy, per_ip=Rate(6, 60))
    clock.now += 30  # mid-window: the sliding estimate also reads the previous window
    outcomes = []

    def request():
        try:
            outcomes.append(limits.check(None, "10.0.0.1").remaining)
        except RateLimited:
            outcomes.append("refused")

    threads = [threading.Thread(target=request) for _ in range(10)]
    threads[0].start()
    assert store.counting.wait(30)
    for thread in threads[1:]:
        thread.start()
    assert wait_until(lambda: len(limits._hits._queue) == 9)
    store.gate.set()
    for thread in threads:
        thread.join(30)
    assert store.hits == [1, 9]  # the first request's hit, then the nine queued behind it
    # Exactly what ten requests counted one by one get: 5, 4, ... 0 left, then four refusals.
    assert sorted(outcomes, key=str) == [0, 1, 2, 3, 4, 5] + ["refused"] * 4
