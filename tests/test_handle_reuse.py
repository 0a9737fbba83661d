"""transport.HandlePool: a thread's next answer reuses its curl handle and kept-alive
connection, and carries nothing of the previous account's request.

A keep-alive HTTP/1.1 server on 127.0.0.1 records, for every request, the client port it came
from (one port = one connection) and its header lines.
"""
from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from chatgpt_web import transport
from chatgpt_web.config import Config
from chatgpt_web.transport import new_session, stream_post
from tests.servers import http_server


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep connections open between requests

    def do_POST(self):  # noqa: N802 - the http.server handler name
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.client_address[1], self.path, str(self.headers)))
        if self.path == "/stream":
            body, kind = b"data: one\n\ndata: [DONE]\n\n", "text/event-stream"
        else:
            body, kind = b"{}", "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if self.path == "/login":  # the account's own cookie, as the site sets them
            account = self.headers.get("X-Account", "")
            self.send_header("Set-Cookie", f"account-cookie={account}; Path=/")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST  # noqa: N815 - the http.server handler name

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    with http_server(_Recorder, seen=[]) as httpd:
        yield httpd


@pytest.fixture(autouse=True)
def multi_handle_reader(monkeypatch):
    monkeypatch.setattr(transport, "READER", transport.StreamedResponse)


def _url(httpd, path):
    return f"http://127.0.0.1:{httpd.server_address[1]}{path}"


def _answer(httpd, headers: dict) -> None:
    """What one answer does: a login-like request that sets a cookie, a plain request (which
    sends it back), then the streamed write."""
    with new_session(Config.from_env({})) as session:
        session.post(_url(httpd, "/login"), json={}, headers=headers, timeout=30)
        session.post(_url(httpd, "/prepare"), json={}, headers=headers, timeout=30)
        with stream_post(session, _url(httpd, "/stream"), json={}, headers=headers,
                         timeout=30) as response:
            assert b"".join(response.iter_content()) == b"data: one\n\ndata: [DONE]\n\n"


def _in_one_thread(*work) -> None:
    """Run the callables one after the other on one fresh thread (a gunicorn worker thread)."""
    failures = []

    def run():
        try:
            for job in work:
                job()
        except BaseException as error:  # noqa: BLE001 - reported by the test thread
            failures.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    if failures:
        raise failures[0]


def test_a_threads_next_answer_rides_the_same_connections(server):
    _in_one_thread(lambda: _answer(server, {"X-Account": "a"}),
                   lambda: _answer(server, {"X-Account": "a"}))
    ports = [port for port, _, _ in server.seen]
    assert len(ports) == 6
    # An answer's requests and its stream share one connection (one curl handle), and the
    # second answer opens none (before the pool: four connections, two per answer; with a
    # handle for the session and another for the stream: two).
    assert len(set(ports)) == 1


def test_the_next_account_on_a_thread_gets_none_of_the_last_ones_cookies_or_headers(server):
    secret = {"X-Account": "alice", "Authorization": "Bearer alice-token"}
    _in_one_thread(lambda: _answer(server, secret),
                   lambda: _answer(server, {"X-Account": "bob"}))
    alice, bob = server.seen[:3], server.seen[3:]
    # Alice's cookie went back to the site on her own later requests (the jar works)...
    assert all("account-cookie=alice" in head for _, path, head in alice if path != "/login")
    # ...and bob's requests, on the very same connections and curl handles, carry none of it.
    assert [port for port, _, _ in bob] == [port for port, _, _ in alice]
    for _, _, head in bob:
        assert "alice" not in head
        assert "Authorization" not in head
    assert all("account-cookie=bob" in head for _, path, head in bob if path != "/login")


def test_nothing_of_an_installed_cookie_a_body_or_a_closed_stream_reaches_the_next_account(
        server):
    def alice():
        with new_session(Config.from_env({})) as session:
            # A cookie put in the jar by our code (as Visit.install does), a custom header, a
            # JSON body, and a stream closed before its body was read.
            session.cookies.set("oai-did", "alice-device", domain="127.0.0.1", path="/")
            headers = {"X-Alice-Only": "1", "Authorization": "Bearer alice-token"}
            session.post(_url(server, "/prepare"), json={"owner": "alice"}, headers=headers,
                         timeout=30)
            stream_post(session, _url(server, "/stream"), json={"owner": "alice"},
                        headers=headers, timeout=30).close()

    def bob():
        with new_session(Config.from_env({})) as session:
            session.get(_url(server, "/prepare"), headers={"X-Account": "bob"}, timeout=30)
            with stream_post(session, _url(server, "/stream"), json={}, headers={},
                             timeout=30) as response:
                b"".join(response.iter_content())

    _in_one_thread(alice, bob)
    alice_seen, bob_seen = server.seen[:2], server.seen[2:]
    assert "oai-did=alice-device" in alice_seen[1][2] and "X-Alice-Only" in alice_seen[1][2]
    assert len(bob_seen) == 2
    for _, _, head in bob_seen:
        assert "alice" not in head and "Authorization" not in head
        assert "X-Alice-Only" not in head and "Cookie" not in head
    # Bob's GET, on the handle that last sent a JSON POST, sends no body and no body headers.
    assert "Content-Type" not in bob_seen[0][2] and "Content-Length" not in bob_seen[0][2]


def test_a_handle_given_back_on_another_thread_is_closed_not_pooled(server):
    sessions = []
    _in_one_thread(lambda: sessions.append(new_session(Config.from_env({}))))
    session = sessions[0]
    session.post(_url(server, "/prepare"), json={}, timeout=30)
    curl = session.curl
    session.close()  # on this thread, not the one whose pool lent it
    assert curl._curl is None  # closed: no pool but the lender's may ever hand it out


def test_a_forked_child_does_not_reuse_the_parents_idle_handles(server):
    with new_session(Config.from_env({})) as session:  # leaves a handle idle on this thread
        session.post(_url(server, "/prepare"), json={}, timeout=30)
    assert transport._HANDLES._idle
    pid = os.fork()
    if pid == 0:  # the child: its connection must not be the parent's socket
        os._exit(0 if not transport._HANDLES._idle else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert transport._HANDLES._idle  # the parent keeps its own


def test_a_thread_keeps_few_idle_handles_and_lends_them_by_pinning():
    closed = []
    pool = transport.HandlePool(make=object, close=closed.append)
    me = threading.get_ident()
    handles = [pool.take(("a:1:1.2.3.4",)) for _ in range(transport.MAX_IDLE_PER_THREAD + 1)]
    for handle in handles:
        pool.give_back(("a:1:1.2.3.4",), handle, me)
    assert closed == handles[:1]  # the oldest beyond the bound is closed
    assert pool.take(()) not in handles  # another pinning never gets these
    assert pool.take(("a:1:1.2.3.4",)) is handles[-1]  # the newest first
