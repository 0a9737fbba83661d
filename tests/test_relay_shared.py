"""Two service instances on one Redis share the relay's key health: a key one instance found
refused is skipped by the other, which never tried it.

Each instance is the production server (gunicorn) with its own CACHE_DIR, as two machines behind
a load balancer would be; only REDIS_URL joins them. The upstream is the fake OpenAI API.
"""
import json

import pytest

from tests.relay_fixtures import upstream
from tests.servers import ServerProcess, http_request

KEY = "sk-cw-relay-shared"
ADMIN = "relay-shared-admin"
REFUSED = "sk-fake-invalid-shared"
GOOD = "sk-fake-good-shared"


@pytest.fixture
def two_instances(tmp_path, redis_url, fake_openai):
    plan = upstream(fake_openai.base_url)
    # Weighted so that an instance that knows nothing tries the refused key first (1e9:1; at
    # 1000:1 the weighted order is random enough to fail the test about once in a thousand runs).
    plan["keys"] = [{"id": "refused", "key": "env:K_REFUSED", "weight": 1e9},
                    {"id": "good", "key": "env:K_GOOD", "weight": 1}]
    path = tmp_path / "upstreams.json"
    path.write_text(json.dumps({"upstreams": [plan]}))
    servers = []
    for name in ("a", "b"):
        servers.append(ServerProcess.gunicorn({
            "CACHE_DIR": str(tmp_path / f"cache-{name}"),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"metrics-{name}"),
            "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "4", "REDIS_URL": redis_url,
            "REDIS_PREFIX": f"relay-shared-{tmp_path.name}:", "API_KEYS": KEY,
            "ADMIN_KEY": ADMIN, "UPSTREAMS_FILE": str(path), "K_REFUSED": REFUSED,
            "K_GOOD": GOOD, "RELAY_MODEL_DISCOVERY": "0", "RATE_LIMIT": "off",
            "RATE_LIMIT_IP": "off"}))
    try:
        for server in servers:
            server.wait_until_serving(timeout=60)  # generous: a loaded 2-core machine
        yield servers
    finally:
        for server in servers:
            server.stop()


def embed(server):
    status, _, body = http_request(
        server.url, "POST", "/v1/embeddings",
        json.dumps({"model": "text-embedding-3-small", "input": "x"}).encode(),
        {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    return status, json.loads(body)


def key_states(server):
    _, _, body = http_request(server.url, path="/admin/upstreams",
                              headers={"Authorization": f"Bearer {ADMIN}"})
    return {row["key"]: row["status"] for row in json.loads(body)["keys"]}


def test_a_key_refused_on_one_instance_is_skipped_by_the_other(two_instances, fake_openai):
    a, b = two_instances
    # Instance a asks until it has met the refused key (its first try, all but surely).
    for _ in range(20):
        status, answer = embed(a)
        assert status == 200, answer
        if REFUSED in fake_openai.keys_used("/embeddings"):
            break
    assert REFUSED in fake_openai.keys_used("/embeddings")
    assert key_states(b) == key_states(a) == {"refused": "disabled", "good": "healthy"}
    # Instance b has tried no key yet; it would try the refused one first if it did not share
    # instance a's view of it.
    fake_openai.requests.clear()
    for _ in range(5):
        status, answer = embed(b)
        assert status == 200, answer
    assert fake_openai.keys_used("/embeddings") == [GOOD] * 5
