"""The lean request path (curl_transfer.py): the same bytes on the wire as curl_cffi's own
session.post()/get(), the same response, and one curl handle per answer.

A keep-alive HTTP/1.1 server on 127.0.0.1 records every request whole (head and body) with the
client port it came on (one port = one connection). The reference is the same session type with
the lean path turned off (`transport.LEAN = False`), i.e. curl_cffi's `Session.request`.
"""
from __future__ import annotations

import socket

import pytest

from chatgpt_web import curl_transfer, errors, transport
from chatgpt_web.config import Config
from chatgpt_web.transport import new_session, stream_post, upstream_errors
from tests.servers import LoopbackSocketServer, read_http_request

SSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
       b"\r\n" + b"%x\r\ndata: one\n\n\r\n0\r\n\r\n" % len(b"data: one\n\n"))


def _json_answer(body: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra
            + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


ANSWERS = {
    b"/": _json_answer(b"<html></html>", b"Set-Cookie: __cf_bm=cf1; Path=/\r\n"
                       b"Set-Cookie: oai-did=dev-1; Path=/\r\n"),
    b"/sentinel/chat-requirements/prepare": _json_answer(b'{"prepare_token":"p"}'),
    b"/f/conversation/prepare": _json_answer(b'{"conduit_token":"c"}',
                                             b"Set-Cookie: oai-sc=sc1; Path=/\r\n"),
    b"/f/conversation": SSE,
}


class Recorder(LoopbackSocketServer):
    """Keep-alive HTTP/1.1 server: answers ANSWERS by path; records (port, request bytes)."""

    def __init__(self):
        self.seen: list[tuple[int, bytes]] = []
        super().__init__()

    def handle(self, conn, port):
        data = b""
        with conn:
            while (request := read_http_request(conn, data)) is not None:
                head, body, data = request
                self.seen.append((port, head + b"\r\n\r\n" + body))
                target = head.split(b" ")[1]
                path = target.split(b"://", 1)[-1].partition(b"/")[2] if b"://" in target \
                    else target[1:]
                conn.sendall(ANSWERS.get(b"/" + path, _json_answer(b"{}")))


@pytest.fixture
def recorder():
    server = Recorder()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def multi_handle_reader(monkeypatch):
    monkeypatch.setattr(transport, "READER", transport.StreamedResponse)


def _flow(base: str, config: Config, resolve=()) -> list:
    """One answer's requests as the 2026 flow makes them, on one session; their responses as
    (status, headers, body, cookies) and the jar at the end."""
    host = base.split("://")[1].split(":")[0]
    headers = {
        "Accept": "*/*", "Authorization": "Bearer tok-1", "Content-Type": "application/json",
        "Oai-Device-Id": "dev-1", "Origin": base, "Priority": "u=1, i",
        "Referer": base + "/", "Sec-Fetch-Mode": "cors",
    }
    seen = []
    with new_session(config, resolve=resolve) as session:
        home = session.get(base + "/", headers={"Accept": "text/html", "Sec-Fetch-Dest":
                                                "document", "Cookie": "oai-did=dev-0"},
                           timeout=10)
        seen.append(home)
        session.cookies.set("oai-did", "dev-1", domain=host, path="/")  # as Visit.install
        seen.append(session.post(base + "/sentinel/chat-requirements/prepare",
                                 json={"p": "gAAAAAC…é\u2603"}, headers=headers, timeout=30))
        # An empty value (the first conduit prepare sends `X-Conduit-Token:` with nothing).
        seen.append(session.post(base + "/f/conversation/prepare", json={"action": "next"},
                                 headers={**headers, "X-Conduit-Token": ""}, timeout=30))
        # A header value that is not text takes curl_cffi's own Headers round trip.
        seen.append(session.get(base + "/backend-api/me?x=a b&y=1",
                                headers={**headers, "X-Count": 3}, timeout=30))
        with stream_post(session, base + "/f/conversation", json={"messages": ["é"]},
                         headers={**headers, "Accept": "text/event-stream"},
                         timeout=30) as stream:
            body = b"".join(stream.iter_content())
        summary = [(r.status_code, r.headers.multi_items(), r.content, dict(r.cookies),
                    r.url) for r in seen]
        summary.append((stream.status_code, stream.headers.multi_items(), body))
        summary.append(sorted((c.name, c.value, c.domain, c.path)
                              for c in session.cookies.jar))
    return summary


def _both_ways(monkeypatch, recorder, base, config, resolve=()):
    """(lean requests, lean answers, curl_cffi's requests, curl_cffi's answers)."""
    lean = _flow(base, config, resolve)
    lean_requests = [request for _, request in recorder.seen]
    recorder.seen.clear()
    monkeypatch.setattr(transport, "LEAN", False)
    reference = _flow(base, config, resolve)
    return lean_requests, lean, [request for _, request in recorder.seen], reference


def test_the_flows_requests_are_byte_for_byte_curl_cffis(recorder, monkeypatch):
    lean_requests, lean, reference_requests, reference = _both_ways(
        monkeypatch, recorder, recorder.url, Config.from_env({}))
    assert len(lean_requests) == 5
    assert lean_requests == reference_requests
    # What the comparison covers: impersonation, cookies from the jar, empty values, JSON.
    stream_request = lean_requests[-1]
    assert b"sec-ch-ua:" in stream_request and b"user-agent: mozilla/5.0" in \
        stream_request.lower()
    assert b"Cookie: oai-did=dev-1; __cf_bm=cf1; oai-sc=sc1\r\n" in stream_request
    assert b"\r\nX-Conduit-Token:\r\n" in lean_requests[2]  # `name;` to curl, on the wire `name:`
    assert b"\r\nX-Count: 3\r\n" in lean_requests[3]
    assert b'{"p":"gAAAAAC\\u2026\\u00e9\\u2603"}' in lean_requests[1]
    assert b"GET /backend-api/me?x=a%20b&y=1 HTTP/1.1" in lean_requests[3]
    # ...and the answers read back the same: status, headers, body, cookies, URL, jar.
    assert lean == reference


def test_through_the_outbound_proxy_and_with_pinning_too(recorder, monkeypatch):
    # A plain-http target goes to the proxy as an absolute URI, pinned or not.
    lean_requests, lean, reference_requests, reference = _both_ways(
        monkeypatch, recorder, "http://upstream.invalid", Config.from_env(
            {"CHATGPT_PROXY": recorder.url}), resolve=("upstream.invalid:80:127.0.0.1",))
    assert lean_requests[0].startswith(b"GET http://upstream.invalid/ HTTP/1.1\r\n")
    assert lean_requests == reference_requests and lean == reference


def test_an_answer_uses_one_connection_and_its_stream_the_sessions_handle(recorder):
    with new_session(Config.from_env({})) as session:
        session.post(recorder.url + "/f/conversation/prepare", json={}, timeout=30)
        with stream_post(session, recorder.url + "/f/conversation", json={}, headers={},
                         timeout=30) as stream:
            assert stream._transfer is session._transfer
            b"".join(stream.iter_content())
        session.post(recorder.url + "/f/conversation/prepare", json={}, timeout=30)
    assert len({port for port, _ in recorder.seen}) == 1


def test_the_session_still_works_while_its_stream_is_open(recorder):
    with new_session(Config.from_env({})) as session:
        stream = stream_post(session, recorder.url + "/f/conversation", json={}, headers={},
                             timeout=30)
        # The stream holds the session's handle: this request borrows another one.
        answer = session.post(recorder.url + "/f/conversation/prepare", json={"a": 1},
                              timeout=30)
        assert answer.json() == {"conduit_token": "c"}
        second = stream_post(session, recorder.url + "/f/conversation", json={}, headers={},
                             timeout=30)
        assert second._transfer is not session._transfer
        assert b"".join(second.iter_content()) == b"data: one\n\n"
        second.close()
    # The session is closed while its stream is still open: the stream gives the handle back.
    assert b"".join(stream.iter_content()) == b"data: one\n\n"
    idle_before = len(transport._HANDLES._idle)
    stream.close()
    assert len(transport._HANDLES._idle) == min(idle_before + 1, transport.MAX_IDLE_PER_THREAD)
    assert transport._HANDLES._idle[-1][1] is stream._transfer


class _CffiCalls:
    """curl_cffi's `lib` (cffi: every call lets go of the GIL), counting the calls by name."""

    def __init__(self, real):
        self.real, self.calls = real, []

    def __getattr__(self, name):
        value = getattr(self.real, name)
        if not callable(value):
            return value

        def call(*arguments):
            self.calls.append(name)
            return value(*arguments)
        return call


def test_an_answers_requests_let_go_of_the_gil_only_to_wait(recorder, monkeypatch):
    # Under a burst, each GIL hand-over is a turn lost to hundreds of other threads: setting a
    # request's options, sending it, reading its answer (a Python callback per header line) and
    # ending it keep the GIL. Warm the handle first, as a thread's next answer finds it.
    cffi = _CffiCalls(curl_transfer.lib)
    with new_session(Config.from_env({})) as session:
        session.post(recorder.url + "/f/conversation/prepare", json={}, timeout=30)
        monkeypatch.setattr(curl_transfer, "lib", cffi)
        session.post(recorder.url + "/f/conversation/prepare", json={"a": 1}, timeout=30)
        session.get(recorder.url + "/backend-api/me", headers={"Accept": "*/*"}, timeout=30)
        with stream_post(session, recorder.url + "/f/conversation", json={}, headers={},
                         timeout=30) as stream:
            assert b"".join(stream.iter_content()) == b"data: one\n\n"
    assert set(cffi.calls) <= {"curl_multi_poll"}


def test_curl_errors_of_lean_requests_are_translated_as_before():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with new_session(Config.from_env({})) as session:
        with pytest.raises(errors.UpstreamError) as caught, upstream_errors("sentinel"):
            session.post(f"http://127.0.0.1:{port}/x", json={}, timeout=30)
    assert caught.value.code == "upstream_unreachable"


def test_a_lean_request_that_runs_out_of_time_is_504():
    with socket.socket() as silent:  # accepts the connection (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        with new_session(Config.from_env({})) as session:
            with pytest.raises(errors.UpstreamTimeout), upstream_errors("sentinel"):
                session.post(f"http://127.0.0.1:{port}/x", json={}, timeout=0.5)


def test_other_requests_take_curl_cffis_own_path_on_a_reset_handle(recorder, monkeypatch):
    with new_session(Config.from_env({})) as session:
        session.post(recorder.url + "/x", json={"a": 1}, timeout=30)
        form = session.post(recorder.url + "/login", data={"user": "x"}, timeout=30)
        after = session.post(recorder.url + "/x", json={"a": 1}, timeout=30)
    assert form.status_code == after.status_code == 200
    lean_first, form_request, lean_after = (request for _, request in recorder.seen)
    assert b"Content-Type: application/x-www-form-urlencoded" in form_request
    assert form_request.endswith(b"\r\n\r\nuser=x")
    assert lean_after == lean_first  # the form request left nothing on the handle


def _curl_cffi_lines(headers, with_json: bool) -> list[bytes]:
    """The header list curl_cffi's set_curl_options hands curl for these request headers."""
    from curl_cffi import Curl, ffi
    from curl_cffi.requests.headers import Headers
    from curl_cffi.requests.utils import set_curl_options

    curl = Curl()
    try:
        set_curl_options(curl, "POST", "http://127.0.0.1/", json={} if with_json else None,
                         headers_list=[Headers(), headers], params_list=[None, None],
                         cookies_list=[None, None], proxies_list=[None, None],
                         verify_list=[True, None])
        lines, node = [], curl._headers
        while node != ffi.NULL:
            lines.append(ffi.string(node.data))
            node = node.next
        return lines
    finally:
        curl.close()


@pytest.mark.parametrize("headers", [
    {"Accept": "*/*", "Authorization": "Bearer t"},
    {"Accept": "*/*", "X-Conduit-Token": "", "content-type": "text/plain"},
    {"X-Drop": None, "Accept": "a", "accept": "b"},  # None drops a header; both spellings kept
    {"Expect": "100-continue", "A": "1"},
    {"Content-Type": "", "B": "2"},  # an empty Content-Type line does not count as one
    {"X-Count": 3, "Y": b"bytes"},
    {},
])
@pytest.mark.parametrize("with_json", [True, False])
def test_header_lines_are_set_curl_options_lines(headers, with_json):
    from curl_cffi.requests.headers import Headers

    from chatgpt_web.curl_transfer import header_lines

    assert header_lines(Headers(), headers, json_body=with_json) == _curl_cffi_lines(
        headers, with_json)
