"""The fake OpenAI API itself, driven directly by the official SDK (no service in between)."""
import shutil
import socket
import subprocess

import openai
import pytest

from tests.fake_openai import keys
from tests.fake_openai.server import LISTEN_BACKLOG


def client(fake, key="sk-fake-good-1"):
    return openai.OpenAI(base_url=fake.base_url, api_key=key, max_retries=0, timeout=10)


def test_good_keys_answer_and_answers_repeat_byte_for_byte(fake_openai):
    sdk = client(fake_openai)
    first = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user",
                                                                    "content": "hi"}])
    again = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user",
                                                                    "content": "hi"}])
    assert first.choices[0].message.content == "Echo: hi" and first.id == again.id
    assert fake_openai.requests_to("/chat/completions")[0].key == "sk-fake-good-1"


@pytest.mark.parametrize("key, error, code", [
    ("sk-fake-invalid-123456789", openai.AuthenticationError, "invalid_api_key"),
    ("sk-fake-quota-1", openai.RateLimitError, "insufficient_quota"),
    ("sk-fake-ratelimit-1", openai.RateLimitError, "rate_limit_exceeded"),
    ("sk-fake-org-1", openai.InternalServerError, None),
])
def test_scripted_keys(fake_openai, key, error, code):
    with pytest.raises(error) as raised:
        client(fake_openai, key).models.list()
    assert raised.value.code == code
    if key.startswith("sk-fake-invalid"):
        assert keys.masked(key) in raised.value.message


def test_faults_are_served_as_many_times_as_scripted(fake_openai):
    sdk = client(fake_openai)
    fake_openai.fault("*", "cut_after:2", times=1)
    with pytest.raises(openai.APIConnectionError):
        list(sdk.chat.completions.create(model="gpt-4o", stream=True,
                                         messages=[{"role": "user", "content": "a b c"}]))
    chunks = list(sdk.chat.completions.create(model="gpt-4o", stream=True,
                                              messages=[{"role": "user", "content": "a b c"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: a b c"


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read the backlog")
def test_the_listen_queue_takes_a_burst_of_connections(fake_openai):
    # werkzeug's own 128 overflowed under bench/relay.py's 200 simultaneous connects (a refused
    # connect waits out the client's one-second SYN retry). For a listening socket, ss's Send-Q
    # column is the backlog it was given.
    port = fake_openai.url.rsplit(":", 1)[1]
    line = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                          check=True, timeout=10).stdout.split()
    assert line[0] == "LISTEN" and int(line[2]) == LISTEN_BACKLOG >= 1024


def _read_answer(sock, buffer: bytes) -> tuple[bytes, bytes, bytes]:
    """(head, body, what followed) of one answer read from `sock` (chunked or Content-Length)."""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    head, _, rest = buffer.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += sock.recv(65536)
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            while len(rest) < size + 2:
                rest += sock.recv(65536)
            body, rest = body + rest[:size], rest[size + 2:]
            if size == 0:
                return head, body, rest
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return head, rest[:length], rest[length:]


def test_a_connection_is_kept_open_for_the_next_request_as_the_real_api_keeps_it(fake_openai):
    body = b'{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"a b"}]}'

    def post(close: bool) -> bytes:
        return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: fake\r\n"
                b"Authorization: Bearer sk-fake-good-1\r\nContent-Type: application/json\r\n"
                + (b"Connection: close\r\n" if close else b"")
                + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    port = int(fake_openai.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(post(close=False))
        head, first, rest = _read_answer(sock, b"")
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower()
        assert first.endswith(b"data: [DONE]\n\n") and rest == b""
        # A models request (Content-Length answer), then a stream asking to close, on the same
        # connection: each is answered whole, and the connection ends after the last.
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: fake\r\n"
                     b"Authorization: Bearer sk-fake-good-1\r\n\r\n" + post(close=True))
        head, models, rest = _read_answer(sock, b"")
        assert head.startswith(b"HTTP/1.1 200") and b'"gpt-4o"' in models
        head, last, rest = _read_answer(sock, rest)
        assert b"connection: close" in head.lower() and last == first
        assert rest == b"" and sock.recv(1) == b""  # closed by the fake
    served = fake_openai.requests[-3:]
    assert [request.path for request in served] == ["/v1/chat/completions", "/v1/models",
                                                    "/v1/chat/completions"]
    assert len({request.client_port for request in served}) == 1
