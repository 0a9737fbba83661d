"""Two service instances on one Redis act as one: limits, pins and account health are shared.

Each instance is the production server (gunicorn, two workers) with its own CACHE_DIR, as two
machines behind a load balancer would be; only REDIS_URL joins them.
"""
import json
import urllib.parse

import pytest

from tests.servers import ServerProcess, http_request

KEY = "sk-cw-shared-state"
ADMIN = "shared-state-admin"


def post(server, path, fields, headers=None):
    status, _, body = http_request(
        server.url, "POST", path, urllib.parse.urlencode(fields).encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Bearer {KEY}",
         **(headers or {})})
    return status, json.loads(body)


@pytest.fixture
def two_instances(service_env, emulator, tmp_path, redis_url):
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([
        {"name": "live", "access_token": emulator.mint_access_token(email="live@example.com")},
        # Weighted so that the first request all but surely tries it first (1e9:1; at 1000:1
        # the choice is random enough to fail the test about once in a thousand runs).
        {"name": "expired", "access_token": emulator.mint_access_token(exp_in=-60),
         "weight": 1e9},
    ]))
    servers = []
    for name in ("a", "b"):
        servers.append(ServerProcess.gunicorn({
            **service_env, "CACHE_DIR": str(tmp_path / f"cache-{name}"),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"metrics-{name}"),
            "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "4", "REDIS_URL": redis_url,
            "REDIS_PREFIX": f"shared-state-{tmp_path.name}:", "API_KEYS": KEY,
            "ADMIN_KEY": ADMIN, "ACCOUNTS_FILE": str(accounts), "RATE_LIMIT": "6/hour",
            "RATE_LIMIT_IP": "off"}))
    try:
        for server in servers:
            # Generous: four workers booting on a loaded 2-core machine took over 20 s once.
            server.wait_until_serving(timeout=60)
        yield servers
    finally:
        for server in servers:
            server.stop()


def admin_states(server):
    _, _, body = http_request(server.url, "GET", "/admin/accounts",
                              headers={"Authorization": f"Bearer {ADMIN}"})
    return {row["id"]: row["status"] for row in json.loads(body)["accounts"]}


def test_two_instances_share_limits_pins_and_account_health(two_instances, emulator):
    a, b = two_instances

    status, first = post(a, "/send_message", {"prompt": "Hi"})
    assert status == 200, first
    # Instance a tried the expired account first, found it dead and failed over. Instance b has
    # chosen no account yet, so it can only know that from the shared state.
    assert admin_states(b) == admin_states(a) == {"live": "healthy", "expired": "dead"}

    # The conversation started on instance a continues on instance b, on the same account.
    status, second = post(b, "/send_message", {
        "prompt": "And then?", "conversation_id": first["conversation_id"],
        "parent_message_id": first["parent_message_id"]})
    assert status == 200, second
    assert second["conversation_id"] == first["conversation_id"]
    posts = [r for r in emulator.requests_to("/conversation") if r.method == "POST"]
    assert len(posts) == 2 and len({r.headers["authorization"] for r in posts}) == 1

    # RATE_LIMIT=6/hour per key counts across both instances: 2 used above, 4 more fit.
    statuses = [http_request(server.url, "GET", "/v1/models",
                             headers={"Authorization": f"Bearer {KEY}"})[0]
                for server in (a, b, a, b, a, b)]
    assert statuses == [200, 200, 200, 200, 429, 429]
