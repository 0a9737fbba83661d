"""What reading a request may cost: size limit, JSON nesting, broken bodies (api/intake.py)."""
from __future__ import annotations

import os
import socket

import pytest

from tests.servers import ServerProcess

NESTED = b"[" * 100_000 + b"]" * 100_000


def test_a_body_announced_too_large_is_refused_before_the_key_check_reads_it(make_app):
    app = make_app(API_KEYS="right", MAX_REQUEST_BYTES="2000")
    body = b"api_key=wrong&prompt=" + b"x" * 5000
    answer = app.test_client().post("/send_message", data=body,
                                    content_type="application/x-www-form-urlencoded")
    assert answer.status_code == 413
    assert answer.get_json()["code"] == "request_too_large"
    assert answer.headers["Connection"] == "close"


def test_the_limit_follows_max_prompt_chars_when_unset(make_app):
    # 300,000 characters may take 12 bytes each (JSON \uXXXX surrogate pairs): about 3.7 MB.
    client = make_app(MAX_PROMPT_CHARS="300000").test_client()
    body = ('{"prompt": "' + "\\ud83d\\ude00" * 300_000 + '"}').encode()
    answer = client.post("/send_message", data=body, content_type="application/json")
    assert answer.status_code != 413, answer.get_json()


def test_v1_gets_413_in_the_openai_envelope(make_app):
    client = make_app(MAX_REQUEST_BYTES="100").test_client()
    answer = client.post("/v1/chat/completions", data=b"{" + b" " * 200 + b"}",
                         headers={"Authorization": "Bearer x", "Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.get_json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("path, headers", [
    ("/send_message", {}),
    ("/v1/chat/completions", {"Authorization": "Bearer token"}),
])
def test_deeply_nested_json_is_malformed_json_not_a_crash(client, path, headers):
    answer = client.post(path, data=NESTED, headers={**headers,
                                                     "Content-Type": "application/json"})
    assert answer.status_code == 400, answer.get_data()


def test_deeply_nested_json_before_authentication_is_a_missing_key(make_app):
    client = make_app(API_KEYS="right").test_client()
    answer = client.post("/send_message", data=NESTED, content_type="application/json")
    assert answer.status_code == 401
    assert answer.get_json()["code"] == "missing_api_key"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cache = tmp_path_factory.mktemp("intake")
    process = ServerProcess.gunicorn({"CACHE_DIR": str(cache / "cache"), "WEB_CONCURRENCY": "1",
                                      "GUNICORN_THREADS": "4", "MAX_REQUEST_BYTES": "4096",
                                      "PROMETHEUS_MULTIPROC_DIR": str(cache)})
    try:
        process.wait_until_serving()
        yield process
    finally:
        process.stop()


def raw_exchange(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def chunked_post(path: str, chunks: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode() + chunks


def test_malformed_chunked_encoding_is_400(server):
    answer = raw_exchange(server.url, chunked_post("/send_message", b"zz\r\n{}\r\n0\r\n\r\n"))
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"invalid_body" in answer


def test_a_chunked_body_is_cut_at_the_limit_while_it_is_read(server):
    chunk = b"1000\r\n" + b" " * 4096 + b"\r\n"
    answer = raw_exchange(server.url, chunked_post("/send_message", chunk * 4 + b"0\r\n\r\n"))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request_too_large" in answer


def test_a_chunked_body_within_the_limit_is_read_whole(server):
    body = b'{"prompt": "' + b"x" * 3000 + b'", "reverse_proxy": "ftp://nowhere"}'
    chunks = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n"
                      for part in (body[:1000], body[1000:])) + b"0\r\n\r\n"
    answer = raw_exchange(server.url, chunked_post("/send_message", chunks))
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"invalid_reverse_proxy" in answer  # the field after the cut was read


def test_client_gone_reads_a_connection_numbered_above_1024(make_app):
    # A worker with hundreds of answers open holds more than 1024 descriptors (each answer has its
    # client's socket and its upstream's). select() cannot watch those and raised ValueError,
    # which client_gone() took for a caller gone: a non-streamed answer cut with 499.
    from chatgpt_web.api.intake import client_gone
    app = make_app()
    ours, theirs = socket.socketpair()
    high = os.dup2(ours.fileno(), 1500)
    connection = socket.socket(fileno=high)
    try:
        with app.test_request_context(environ_base={"gunicorn.socket": connection}):
            assert not client_gone()
            theirs.close()
            assert client_gone()
    finally:
        connection.close()
        ours.close()
