"""Client API keys, the admin key, the client IP behind proxies, and /admin/accounts."""
import json
import subprocess
import sys

import openai
import pytest

from chatgpt_web.access import client_ip
from chatgpt_web.config import Config, networks
from chatgpt_web.errors import ConfigError
from chatgpt_web.keys import KeyRing, file_line, key_digest, read_keys_file

KEY = "sk-cw-test-key-one"
OTHER_KEY = "sk-cw-test-key-two"
ADMIN = "admin-secret-xyz"


def write_accounts(tmp_path, entries):
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps(entries))
    return str(path)


@pytest.fixture
def keyed(make_app, tmp_path, emulator):
    """An app with two client keys, an admin key and a pool of two accounts."""
    accounts = write_accounts(tmp_path, [
        {"name": "first", "access_token": emulator.mint_access_token(email="first@example.com")},
        {"name": "second", "access_token": emulator.mint_access_token(email="second@example.com")},
    ])
    return make_app(API_KEYS=f"{KEY},{OTHER_KEY}", ADMIN_KEY=ADMIN, ACCOUNTS_FILE=accounts)


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


# --- keys ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/healthz", "/readyz"])
def test_open_paths_need_no_key(keyed, path):
    assert keyed.test_client().get(path).status_code == 200


@pytest.mark.parametrize("method, path", [
    ("post", "/send_message"), ("post", "/get_access_token"), ("post", "/v1/chat/completions"),
    ("get", "/v1/models"), ("get", "/metrics"), ("get", "/no/such/page"),
])
def test_every_other_endpoint_needs_a_key(keyed, method, path):
    response = getattr(keyed.test_client(), method)(path)
    assert response.status_code == 401
    body = response.json
    code = body["error"]["code"] if "error" in body else body["code"]
    assert code == "missing_api_key"


def test_a_wrong_key_is_refused(keyed):
    response = keyed.test_client().post("/send_message", headers=bearer("sk-cw-guess"),
                                        data={"prompt": "Hi"})
    assert response.status_code == 401 and response.json["code"] == "invalid_api_key"


def test_openai_face_refuses_a_wrong_key_in_its_own_envelope(keyed):
    response = keyed.test_client().get("/v1/models", headers=bearer("nope"))
    assert response.status_code == 401
    assert response.json["error"]["code"] == "invalid_api_key"
    assert response.json["error"]["type"] == "authentication_error"


def test_send_message_with_a_key_in_the_header_runs_on_the_pool(keyed, emulator):
    response = keyed.test_client().post("/send_message", headers=bearer(KEY), data={"prompt": "Hi"})
    assert response.status_code == 200, response.json
    assert response.json["text"]


def test_send_message_accepts_the_key_as_the_api_key_field(keyed):
    client = keyed.test_client()
    form = client.post("/send_message", data={"prompt": "Hi", "api_key": OTHER_KEY})
    as_json = client.post("/send_message", json={"prompt": "Hi", "api_key": KEY})
    assert form.status_code == 200, form.json
    assert as_json.status_code == 200, as_json.json


def test_send_message_with_a_key_may_still_bring_its_own_token(keyed, emulator):
    own = emulator.mint_access_token(email="caller@example.com")
    response = keyed.test_client().post("/send_message", headers=bearer(KEY),
                                        data={"prompt": "Hi", "access_token": own})
    assert response.status_code == 200
    sent = emulator.requests_to("/conversation")[-1].headers["authorization"]
    assert sent == f"Bearer {own}"


def test_openai_sdk_with_a_service_key_is_served_by_the_pool(keyed, emulator):
    from tests.service_fixtures import LiveServer
    server = LiveServer(keyed)
    try:
        sdk = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
        completion = sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hello"}])
        assert completion.choices[0].message.content
        chunks = list(sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hello"}], stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert any(m.id == "gpt-4o" for m in sdk.models.list().data)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.url + "/v1", api_key="wrong",
                          max_retries=0).models.list()
    finally:
        server.stop()
    # The upstream only ever saw the pool's tokens, never the service key.
    sent = {r.headers["authorization"] for r in emulator.requests_to("/conversation")}
    assert sent and not any(KEY in value for value in sent)


def test_service_key_without_accounts_is_503(make_app):
    app = make_app(API_KEYS=KEY)
    response = app.test_client().post("/v1/chat/completions", headers=bearer(KEY),
                                      json={"model": "gpt-4o",
                                            "messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 503
    assert response.json["error"]["code"] == "no_account_available"
    # Models need no account.
    assert app.test_client().get("/v1/models", headers=bearer(KEY)).status_code == 200


def test_keys_file_holds_hashes_and_is_accepted(make_app, tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text("# clients\n\n" + file_line(KEY, "alice") + "\n")
    assert KEY not in path.read_text()
    app = make_app(API_KEYS_FILE=str(path))
    client = app.test_client()
    assert client.get("/v1/models", headers=bearer(KEY)).status_code == 200
    assert client.get("/v1/models", headers=bearer(OTHER_KEY)).status_code == 401


def test_keys_file_with_a_clear_key_is_refused_without_quoting_it(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text(KEY + "\n")
    with pytest.raises(ConfigError) as refused:
        read_keys_file(str(path))
    assert KEY not in str(refused.value) and "line 1" in str(refused.value)


def test_keyring_matches_only_configured_keys():
    ring = KeyRing.from_config(Config(api_keys=(KEY,)))
    assert ring.enabled
    assert ring.match(KEY).id == key_digest(KEY)[:12]
    assert ring.match(KEY + "x") is None
    assert ring.match("") is None and ring.match(None) is None
    assert not KeyRing.from_config(Config()).enabled


def test_keys_cli_prints_a_key_and_its_file_line():
    done = subprocess.run([sys.executable, "-m", "chatgpt_web.keys", "new", "bob"],
                          capture_output=True, text=True, check=True)
    key = done.stdout.split("it is not stored anywhere): ")[1].split()[0]
    assert f"sha256:{key_digest(key)} bob" in done.stdout
    hashed = subprocess.run([sys.executable, "-m", "chatgpt_web.keys", "hash"], input=KEY + "\n",
                            capture_output=True, text=True, check=True)
    assert hashed.stdout.strip() == f"sha256:{key_digest(KEY)}"


def test_config_keeps_keys_out_of_its_repr():
    config = Config(api_keys=(KEY,), admin_key=ADMIN)
    assert KEY not in repr(config) and ADMIN not in repr(config)


# --- admin -----------------------------------------------------------------------------------

def test_admin_accounts_needs_the_admin_key(keyed):
    client = keyed.test_client()
    assert client.get("/admin/accounts").status_code == 401
    # A client key is not an admin key.
    refused = client.get("/admin/accounts", headers=bearer(KEY))
    assert refused.status_code == 401 and refused.json["code"] == "invalid_admin_key"


def test_admin_is_closed_without_an_admin_key(make_app):
    response = make_app().test_client().get("/admin/accounts", headers=bearer("anything"))
    assert response.status_code == 403 and response.json["code"] == "admin_disabled"


def test_admin_accounts_shows_state_but_no_secret(keyed, emulator):
    client = keyed.test_client()
    emulator.switches.fail_with = "rate_limit"
    emulator.switches.clears_in = 300
    emulator.switches.fail_times = 1
    answer = client.post("/send_message", headers=bearer(KEY), data={"prompt": "Hi"})
    assert answer.status_code == 200
    response = client.get("/admin/accounts", headers=bearer(ADMIN))
    assert response.status_code == 200
    rows = {row["id"]: row for row in response.json["accounts"]}
    assert set(rows) == {"first", "second"}
    resting = [row for row in rows.values() if row["status"] == "resting"]
    assert len(resting) == 1 and resting[0]["last_error"] == "upstream_rate_limited"
    assert resting[0]["rest_until"] and all(row["token_expires_at"] for row in rows.values())
    text = response.get_data(as_text=True)
    for secret in ("@example.com", "eyJ", KEY, ADMIN):
        assert secret not in text


def test_admin_accounts_without_a_pool_says_so(make_app):
    response = make_app(ADMIN_KEY=ADMIN).test_client().get("/admin/accounts", headers=bearer(ADMIN))
    assert response.status_code == 200 and response.json == {"pool": False, "accounts": []}


# --- client IP -------------------------------------------------------------------------------

def test_forwarded_for_is_ignored_from_an_untrusted_peer():
    assert client_ip("203.0.113.9", "198.51.100.1", networks("10.0.0.0/8")) == "203.0.113.9"
    assert client_ip("10.0.0.2", "198.51.100.1", ()) == "10.0.0.2"


def test_forwarded_for_is_read_from_the_right_past_trusted_proxies():
    trusted = networks("10.0.0.0/8, 192.0.2.7")
    # The client forged "1.2.3.4"; nginx (10.0.0.2) appended the real peer 198.51.100.1.
    assert client_ip("10.0.0.2", "1.2.3.4, 198.51.100.1", trusted) == "198.51.100.1"
    assert client_ip("10.0.0.2", "1.2.3.4, 198.51.100.1, 192.0.2.7", trusted) == "198.51.100.1"
    assert client_ip("10.0.0.2", "not-an-ip, 10.0.0.3", trusted) == "10.0.0.3"


def test_trusted_proxies_must_be_addresses():
    with pytest.raises(ConfigError):
        Config.from_env({"TRUSTED_PROXIES": "nginx.local"})


def test_refused_requests_are_logged_with_their_route(keyed, caplog):
    caplog.set_level("INFO", logger="chatgpt_web.access")
    keyed.test_client().post("/send_message").close()
    assert "route=/send_message status=401" in caplog.text


@pytest.fixture
def open_pool(make_app, tmp_path, emulator):
    """A pool and no client keys: the personal deployment a cross-site page could drive."""
    return make_app(ACCOUNTS_FILE=write_accounts(tmp_path, [
        {"name": "a", "access_token": emulator.mint_access_token(email="a@example.com")}]),
        CORS_ORIGINS="https://ui.example").test_client()


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"}, {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
])
def test_a_cross_site_browser_post_cannot_drive_the_pool(open_pool, headers):
    answer = open_pool.post("/send_message", data={"prompt": "hi"}, headers=headers)
    assert answer.status_code == 403
    assert answer.get_json()["code"] == "cross_origin_refused"


@pytest.mark.parametrize("headers", [
    {}, {"Origin": "http://localhost"}, {"Origin": "https://ui.example"},
    {"Sec-Fetch-Site": "same-origin"},
])
def test_programs_the_service_own_pages_and_allowed_origins_still_can(open_pool, headers):
    answer = open_pool.post("/send_message", data={"prompt": "hi"}, headers=headers)
    assert answer.status_code == 200, answer.get_json()


def test_with_keys_the_key_decides_not_the_origin(keyed):
    answer = keyed.test_client().post("/send_message", data={"prompt": "hi"},
                                      headers={**bearer(KEY), "Origin": "https://evil.example"})
    assert answer.status_code == 200, answer.get_json()


# --- refused authentications, pins bound to keys, default limits (issue 13) ------------------

@pytest.mark.parametrize("path, key, right", [("/v1/models", "sk-cw-guess", KEY),
                                              ("/admin/accounts", "wrong-admin", ADMIN)])
def test_refused_authentications_are_limited_per_ip(make_app, tmp_path, emulator, path, key,
                                                    right):
    accounts = write_accounts(tmp_path, [{"name": "a",
                                          "access_token": emulator.mint_access_token()}])
    client = make_app(API_KEYS=KEY, ADMIN_KEY=ADMIN, ACCOUNTS_FILE=accounts,
                      AUTH_FAILURE_LIMIT="3/minute").test_client()
    for _ in range(3):
        assert client.get(path, headers=bearer(key)).status_code == 401
    refused = client.get(path, headers=bearer(key))
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    # Blocked before any key is compared: the right one does not get through either.
    assert client.get(path, headers=bearer(right)).status_code == 429
    other = client.get(path, headers=bearer(right), environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert other.status_code == 200


def test_a_conversation_continues_only_with_the_key_that_started_it(keyed):
    client = keyed.test_client()
    first = client.post("/send_message", data={"prompt": "hi"}, headers=bearer(KEY))
    assert first.status_code == 200, first.get_json()
    ids = {"conversation_id": first.get_json()["conversation_id"],
           "parent_message_id": first.get_json()["parent_message_id"]}
    stolen = client.post("/send_message", data={"prompt": "more", **ids},
                         headers=bearer(OTHER_KEY))
    assert stolen.status_code == 404
    assert stolen.get_json()["code"] == "conversation_not_found"
    own = client.post("/send_message", data={"prompt": "more", **ids}, headers=bearer(KEY))
    assert own.status_code == 200, own.get_json()


def test_default_limits_leave_callers_with_their_own_token_alone(open_pool, token):
    own = open_pool.post("/send_message", data={"prompt": "hi", "access_token": token})
    assert own.status_code == 200 and "RateLimit-Limit" not in own.headers
    pooled = open_pool.post("/send_message", data={"prompt": "hi"})
    assert pooled.status_code == 200 and pooled.headers["RateLimit-Limit"] == "120"


def test_limits_the_operator_writes_apply_to_every_request(make_app, token):
    client = make_app(RATE_LIMIT_IP="1/hour").test_client()
    assert client.post("/send_message", data={"prompt": "hi", "access_token": token}
                       ).status_code == 200
    again = client.post("/send_message", data={"prompt": "hi", "access_token": token})
    assert again.status_code == 429 and again.get_json()["code"] == "rate_limited"
