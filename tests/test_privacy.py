"""No secret reaches a log: planted secrets go through every endpoint, on success and failure paths,
through the threaded development server (in-process logs) and through gunicorn (its stderr).

To cover a new endpoint, add a Probe to PROBES.
"""
from __future__ import annotations

import json
import logging
import socket
import time
import urllib.parse
from dataclasses import dataclass, field

from tests.servers import ServerProcess, http_request

PLANTED = {
    "query": "sk-planted-query-5a1c",
    "header": "sk-planted-header-9e2b",
    "cookie": "sk-planted-cookie-77d0",
    "password": "planted-password-c3f8",
    "prompt": "planted prompt 41bd",
    "answer": "planted answer 8e6a words",
    "path": "sk-planted-path-0b9e",
    "proxy_password": "planted-proxy-pass-2d4f",
    "raw_line": "sk-planted-raw-line-6c3e",
}
# A longer answer whose stream is cut after some of its words went out.
BREAK_MIDWAY = {"answer": PLANTED["answer"] + " and then some more words to be cut off",
                "words_per_delta": 1, "drop_after_events": 11}
TOKEN = "<a valid access token>"
EXPIRED = "<an expired access token>"


@dataclass(frozen=True)
class Probe:
    """One request: what is sent, and the status that proves its code path ran."""

    name: str
    method: str
    path: str
    status: int
    fields: dict | None = None        # body fields; TOKEN / EXPIRED are replaced by real tokens
    encoding: str = "form"            # form, json, or raw (fields["raw"] sent as is)
    switches: dict = field(default_factory=dict)  # emulator behaviour during this probe
    body_has: str | None = None       # a text the answer must contain (proves the answer flowed)
    bearer: str | None = None         # Authorization bearer: TOKEN, EXPIRED, "" for none;
                                      # None sends a planted secret


def chat(**extra) -> dict:
    return {"model": "gpt-4o", "messages": [{"role": "system", "content": PLANTED["password"]},
                                           {"role": "user", "content": PLANTED["prompt"]}],
            **extra}


def send_message(**extra) -> dict:
    return {"access_token": TOKEN, "prompt": PLANTED["prompt"], "password": PLANTED["password"],
            **extra}


PROBES = [
    Probe("landing page", "GET", "/", 200),
    Probe("liveness", "GET", "/healthz", 200),
    Probe("readiness", "GET", "/readyz", 200),
    Probe("metrics", "GET", "/metrics", 200),
    Probe("unknown route", "GET", "/" + PLANTED["path"], 404),
    Probe("wrong method", "PUT", "/send_message", 405, send_message()),
    Probe("send_message answer (form)", "POST", "/send_message", 200, send_message(),
          body_has=PLANTED["answer"]),
    Probe("send_message answer (JSON)", "POST", "/send_message", 200, send_message(),
          encoding="json", body_has=PLANTED["answer"]),
    Probe("send_message stream", "POST", "/send_message", 200, send_message(stream="true"),
          body_has="[DONE]"),
    Probe("send_message missing prompt", "POST", "/send_message", 400,
          {"access_token": TOKEN, "password": PLANTED["password"]}),
    Probe("send_message malformed JSON", "POST", "/send_message", 400,
          {"raw": f'{{"access_token": "{PLANTED["header"]}", "prompt": "{PLANTED["prompt"]}"'},
          encoding="raw"),
    Probe("send_message expired token", "POST", "/send_message", 401,
          send_message(access_token=EXPIRED)),
    Probe("send_message private reverse proxy", "POST", "/send_message", 400, send_message(
        reverse_proxy=f"https://user:{PLANTED['proxy_password']}@10.0.0.1/api/conversation")),
    Probe("send_message upstream refuses the token", "POST", "/send_message", 401, send_message(),
          switches={"fail_with": "invalid_token"}),
    Probe("send_message upstream rate limit", "POST", "/send_message", 429, send_message(),
          switches={"fail_with": "rate_limit"}),
    Probe("send_message upstream error", "POST", "/send_message", 502, send_message(),
          switches={"fail_with": "server_error"}),
    Probe("send_message stream broken before the first word", "POST", "/send_message", 502,
          send_message(stream="true"), switches={"drop_after_events": 2}),
    Probe("send_message stream broken midway", "POST", "/send_message", 200,
          send_message(stream="true"), switches=BREAK_MIDWAY, body_has="upstream_stream_broken"),
    Probe("openai models", "GET", "/v1/models", 200, bearer=TOKEN),
    Probe("openai unknown model", "GET", "/v1/models/" + PLANTED["path"], 404, bearer=TOKEN),
    Probe("openai unknown URL", "GET", "/v1/" + PLANTED["path"], 404, bearer=TOKEN),
    Probe("openai chat answer", "POST", "/v1/chat/completions", 200, chat(), encoding="json",
          bearer=TOKEN, body_has=PLANTED["answer"]),
    Probe("openai chat stream", "POST", "/v1/chat/completions", 200, chat(stream=True),
          encoding="json", bearer=TOKEN, body_has="[DONE]"),
    Probe("openai chat without bearer", "POST", "/v1/chat/completions", 401, chat(),
          encoding="json", bearer=""),
    Probe("openai chat expired bearer", "POST", "/v1/chat/completions", 401, chat(),
          encoding="json", bearer=EXPIRED),
    Probe("openai chat refused bearer", "POST", "/v1/chat/completions", 401, chat(),
          encoding="json"),
    Probe("openai chat upstream rate limit", "POST", "/v1/chat/completions", 429, chat(),
          encoding="json", bearer=TOKEN, switches={"fail_with": "rate_limit"}),
    Probe("openai chat stream broken midway", "POST", "/v1/chat/completions", 200,
          chat(stream=True), encoding="json", bearer=TOKEN, switches=BREAK_MIDWAY),
]

# Requests no HTTP client would send; servers log them in their own words.
RAW_REQUESTS = [
    f"GET /?access_token={PLANTED['raw_line']}\r\n\r\n",
    f"GET /?access_token={PLANTED['raw_line']} HTTP/1.1 junk\r\n\r\n",
    f"GET /healthz?access_token={PLANTED['raw_line']} HTTP/9.9\r\nHost: x\r\n\r\n",
]


class ProbeRun:
    """Sends every probe to a server and remembers each secret that went out."""

    def __init__(self, url: str, emulator):
        self.url = url
        self.emulator = emulator
        self.secrets = set(PLANTED.values())
        self.request_ids = []

    def _token(self, placeholder: str) -> str:
        token = (self.emulator.mint_access_token() if placeholder == TOKEN
                 else self.emulator.mint_access_token(exp_in=-60))
        self.secrets.add(token)
        return token

    def send(self, index: int, probe: Probe) -> None:
        fields = {name: self._token(value) if value in (TOKEN, EXPIRED) else value
                  for name, value in (probe.fields or {}).items()}
        request_id = f"probe-{index}"
        self.request_ids.append(request_id)
        headers = {"X-Request-ID": request_id, "Cookie": f"session={PLANTED['cookie']}",
                   "X-Api-Key": PLANTED["header"]}
        bearer = PLANTED["header"] if probe.bearer is None else probe.bearer
        if bearer:
            bearer = self._token(bearer) if bearer in (TOKEN, EXPIRED) else bearer
            headers["Authorization"] = f"Bearer {bearer}"
        body = None
        if probe.encoding == "raw":
            body, headers["Content-Type"] = fields["raw"].encode(), "application/json"
        elif probe.encoding == "json":
            body, headers["Content-Type"] = json.dumps(fields).encode(), "application/json"
        elif fields:
            body = urllib.parse.urlencode(fields).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        query = urllib.parse.urlencode({"access_token": PLANTED["query"],
                                        "password": PLANTED["password"]})
        saved = {name: getattr(self.emulator.switches, name) for name in probe.switches}
        try:
            for name, value in probe.switches.items():
                setattr(self.emulator.switches, name, value)
            status, response_headers, answer = http_request(
                self.url, probe.method, f"{probe.path}?{query}", body, headers)
        finally:
            for name, value in saved.items():
                setattr(self.emulator.switches, name, value)
        assert status == probe.status, (probe.name, answer[:300])
        assert response_headers["x-request-id"] == request_id, probe.name
        if probe.body_has:
            assert probe.body_has in answer.decode(), (probe.name, answer[:300])

    def send_raw(self) -> None:
        host, port = self.url.removeprefix("http://").split(":")
        for raw in RAW_REQUESTS:
            with socket.create_connection((host, int(port)), timeout=10) as connection:
                connection.sendall(raw.encode())
                connection.recv(4096)  # an error page, or a bare HTTP/0.9 answer

    def run_all(self) -> None:
        self.emulator.switches.answer = PLANTED["answer"]
        for index, probe in enumerate(PROBES):
            self.send(index, probe)
        self.send_raw()

    def check(self, logs: str) -> None:
        """No secret in `logs`, and every probe left its access line (so the logs were seen)."""
        leaked = [line for line in logs.splitlines()
                  if any(secret in line for secret in self.secrets)]
        assert not leaked, "secrets in the logs:\n" + "\n".join(leaked)
        for request_id, probe in zip(self.request_ids, PROBES, strict=False):
            assert f"request_id={request_id} " in logs, f"no access line for {probe.name}"


def test_no_secret_reaches_the_logs_through_the_threaded_server(live_service, emulator, caplog,
                                                                capfd):
    caplog.set_level(logging.DEBUG)
    run = ProbeRun(live_service.url, emulator)
    run.run_all()
    # A stream's access line is written when the server closes its body, which may come just
    # after the client has read the end: wait for every line, within a bound.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(
            f"request_id={request_id} " in caplog.text for request_id in run.request_ids):
        time.sleep(0.02)
    captured = capfd.readouterr()
    run.check("\n".join([caplog.text, captured.out, captured.err]))


def test_no_secret_reaches_gunicorn_output(service_env, emulator, tmp_path):
    server = ServerProcess.gunicorn({
        **service_env, "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "4", "LOG_LEVEL": "DEBUG",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")})
    try:
        server.wait_until_serving()
        run = ProbeRun(server.url, emulator)
        run.run_all()
    finally:
        output = server.stop()
    run.check(output)
    assert "Invalid request from ip=127.0.0.1" in output  # the raw requests were logged, redacted


def test_no_key_or_pooled_secret_reaches_the_logs_on_a_shared_deployment(
        live_service_factory, emulator, tmp_path, caplog, capfd):
    """Client keys, the admin key and pooled credentials, through keys, admin, pool and limits."""
    caplog.set_level(logging.DEBUG)
    client_key, admin_key = "sk-cw-planted-client-4f1a", "planted-admin-key-90bc"
    pooled_token = emulator.mint_access_token(email="planted-pool@example.com")
    emulator.auth.add_account("planted-login@example.com", PLANTED["password"])
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([
        {"name": "tok", "access_token": pooled_token},
        {"name": "pw", "email": "planted-login@example.com", "password": PLANTED["password"]}]))
    server = live_service_factory(API_KEYS=client_key, ADMIN_KEY=admin_key,
                                  ACCOUNTS_FILE=str(accounts), RATE_LIMIT="7/hour")
    emulator.switches.answer = PLANTED["answer"]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    as_json = {"Content-Type": "application/json"}
    key = {"Authorization": f"Bearer {client_key}"}
    sends = [
        ("POST", "/send_message", urllib.parse.urlencode({"prompt": PLANTED["prompt"]}),
         {**form, **key}, 200),
        ("POST", "/send_message", urllib.parse.urlencode(
            {"prompt": PLANTED["prompt"], "api_key": client_key, "stream": "true"}), form, 200),
        ("POST", "/v1/chat/completions", json.dumps(chat()), {**as_json, **key}, 200),
        ("POST", "/send_message", urllib.parse.urlencode({"prompt": PLANTED["prompt"]}),
         {**form, "Authorization": f"Bearer {PLANTED['header']}"}, 401),
        ("GET", "/admin/accounts", None, {"Authorization": f"Bearer {admin_key}"}, 200),
        ("GET", "/admin/accounts", None, key, 401),
    ] + [("GET", "/v1/models", None, key, 200)] * 4 + [("GET", "/v1/models", None, key, 429)]
    for method, path, body, headers, status in sends:
        got, _, answer = http_request(server.url, method, path,
                                      body.encode() if body else None, headers)
        assert got == status, (path, answer[:200])
    # A request's access line is written when its body is closed, which may come after the
    # client has its answer (and after later requests' lines) when the machine is busy.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and caplog.text.count("request_id=") < len(sends):
        time.sleep(0.02)
    captured = capfd.readouterr()
    logs = "\n".join([caplog.text, captured.out, captured.err])
    secrets = [client_key, admin_key, pooled_token, PLANTED["password"], PLANTED["prompt"],
               PLANTED["answer"], PLANTED["header"], "planted-pool@", "planted-login@"]
    leaked = [line for line in logs.splitlines() if any(s in line for s in secrets)]
    assert not leaked, "secrets in the logs:\n" + "\n".join(leaked)
    assert logs.count("route=/admin/accounts") == 2  # the access lines were there to be read


def test_scoped_keys_and_the_ledger_keep_no_key_or_content_in_the_store_or_the_logs(
        live_service_factory, emulator, tmp_path, caplog, capfd):
    """Keys made through /admin/keys and KEYS_FILE, their scopes refused and served, the ledger
    and /v1/key: the store and the logs hold no key, prompt or answer."""
    import diskcache

    from chatgpt_web.keys import key_digest
    caplog.set_level(logging.DEBUG)
    file_key, admin_key = "sk-cw-planted-scoped-3d7e", "planted-admin-key-51aa"
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"keys": [
        {"id": "filed", "hash": "sha256:" + key_digest(file_key), "models": ["gpt-4o"],
         "quota": {"requests": "3/day"}}]}))
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"name": "tok",
                                     "access_token": emulator.mint_access_token()}]))
    cache = tmp_path / "cache-scoped"
    server = live_service_factory(KEYS_FILE=str(keys_file), ADMIN_KEY=admin_key,
                                  ACCOUNTS_FILE=str(accounts), CACHE_DIR=str(cache),
                                  METRICS_PER_KEY="true")
    emulator.switches.answer = PLANTED["answer"]
    admin = {"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"}
    status, _, made = http_request(server.url, "POST", "/admin/keys",
                                   json.dumps({"id": "made", "concurrency": 2}).encode(), admin)
    assert status == 201
    made_key = json.loads(made)["key"]
    as_json = {"Content-Type": "application/json"}
    for key, body, expected in [
            (file_key, chat(), 200), (file_key, chat(stream=True), 200),
            (file_key, chat(model="o1"), 403), (made_key, chat(), 200),
            (file_key, chat(), 200), (file_key, chat(), 429)]:
        got, _, answer = http_request(server.url, "POST", "/v1/chat/completions",
                                      json.dumps(body).encode(),
                                      {**as_json, "Authorization": f"Bearer {key}"})
        assert got == expected, answer[:200]
    for path in ("/admin/keys", "/admin/usage", "/admin/usage?format=csv"):
        assert http_request(server.url, "GET", path, headers=admin)[0] == 200
    assert http_request(server.url, "GET", "/v1/key",
                        headers={"Authorization": f"Bearer {made_key}"})[0] == 200
    assert http_request(server.url, "DELETE", "/admin/keys/made", headers=admin)[0] == 200
    captured = capfd.readouterr()
    logs = "\n".join([caplog.text, captured.out, captured.err])
    secrets = [file_key, made_key, admin_key, PLANTED["prompt"], PLANTED["answer"],
               PLANTED["password"]]
    leaked = [line for line in logs.splitlines() if any(s in line for s in secrets)]
    assert not leaked, "secrets in the logs:\n" + "\n".join(leaked)
    # diskcache's JSONDisk compresses values: read them back through it, keys and values.
    with diskcache.Cache(str(cache), disk=diskcache.JSONDisk) as store:
        stored = "\n".join(f"{name} {json.dumps(store.get(name))}" for name in store.iterkeys())
    assert "usage:v1:ledger:filed:" in stored  # the ledger was written where we look
    assert not [s for s in secrets if s in stored]
