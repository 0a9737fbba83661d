"""The stream pump (chatgpt_web/stream_pump.py): one thread per worker sends every open stream.

First the pump alone (request threads, sockets, no server), then Transfers waiting in it against
a loopback HTTP server, then the production server command with the emulator.
"""
from __future__ import annotations

import contextvars
import json
import socket
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from chatgpt_web import answers, stream_pump, transport
from chatgpt_web.answers import Answer
from chatgpt_web.config import Config
from chatgpt_web.curl_transfer import pump_problems
from chatgpt_web.errors import ApiError, ServiceUnavailable, UpstreamError
from chatgpt_web.group_commit import GroupCommit
from chatgpt_web.stream_pump import READ, WRITE, Pump
from chatgpt_web.transport import new_session, stream_post
from chatgpt_web.upstream.stream import Completion, TextDelta
from tests.servers import ServerProcess, http_server

WAIT = 30  # seconds any single wait of these tests may take before it counts as a failure

pytestmark = pytest.mark.skipif(not stream_pump.AVAILABLE or pump_problems(),
                                reason="greenlet or curl_multi_waitfds is missing")


@pytest.fixture
def pump():
    return Pump(name="test-pump")


def serve_in_threads(pump: Pump, bodies) -> list:
    """Hand each body to the pump from a thread of its own (a request thread); their outcomes
    (result or exception), in order, once all have ended."""
    outcomes: list = [None] * len(bodies)

    def request_thread(index, body):
        try:
            outcomes[index] = pump.serve(body)
        except BaseException as error:  # noqa: BLE001 - the test looks at it
            outcomes[index] = error

    threads = [threading.Thread(target=request_thread, args=item) for item in enumerate(bodies)]
    for thread in threads:
        thread.start()
    return threads, outcomes


def join(threads) -> None:
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()


# --- the pump alone ---------------------------------------------------------------------------

def test_bodies_waiting_on_their_sockets_all_run_in_the_pump_thread(pump):
    pairs = [socket.socketpair() for _ in range(8)]

    def body(sock):
        def run():
            ran_in = {threading.get_ident()}
            assert stream_pump.wait_fds(((sock.fileno(), READ),), None) is True
            ran_in.add(threading.get_ident())
            return ran_in, sock.recv(100)
        return run

    threads, outcomes = serve_in_threads(pump, [body(ours) for ours, _ in pairs])
    for _, theirs in reversed(pairs):  # answered in the opposite order
        theirs.send(b"event")
    join(threads)
    assert [data for _, data in outcomes] == [b"event"] * 8
    assert {ident for ran_in, _ in outcomes for ident in ran_in} == {pump.thread.ident}
    assert pump.served == 8 and pump.streams == 0


def held_beside_two_quick_bodies(pump: Pump, held, release):
    """Serve `held` beside two bodies that sleep 10 ms: both must end while `held` waits; then
    `release()`, and return what `held` returned."""

    def quick():
        stream_pump.sleep(0.01)
        return "quick one ended"

    threads, outcomes = serve_in_threads(pump, [held, quick, quick])
    threads[1].join(WAIT)
    threads[2].join(WAIT)
    assert outcomes[1:] == ["quick one ended"] * 2 and outcomes[0] is None
    release()
    join(threads)
    return outcomes[0]


def test_a_body_parked_on_a_silent_socket_does_not_hold_the_others(pump):
    silent, silent_peer = socket.socketpair()

    def parked():
        stream_pump.wait_fds(((silent.fileno(), READ),), None)
        return "parked one ended"

    outcome = held_beside_two_quick_bodies(pump, parked, lambda: silent_peer.send(b"x"))
    assert outcome == "parked one ended"


def test_a_body_waiting_for_a_store_write_does_not_hold_the_others(pump):
    """A /v1 answer waits at its end for the writer thread to store its chat memory place
    (group_commit.Queued.wait). In the pump a thread wait there stopped every stream of the
    worker until the write was made."""
    gate = threading.Event()  # the writer thread's store call, held until the others have run
    places = GroupCommit(lambda queued: gate.wait(WAIT), name="test-writer")

    def waiting():
        places.submit_later("place").wait()
        return "written"

    assert held_beside_two_quick_bodies(pump, waiting, gate.set) == "written"


def test_a_store_write_waited_for_in_the_pump_still_times_out(pump):
    gate = threading.Event()
    places = GroupCommit(lambda queued: gate.wait(WAIT), name="test-writer")

    def waiting():
        return places.submit_later("place").wait(0.2)

    try:
        [thread], outcomes = serve_in_threads(pump, [waiting])
        join([thread])
    finally:
        gate.set()
    assert isinstance(outcomes[0], ServiceUnavailable)
    assert outcomes[0].code == "store_lock_timeout"


def test_a_wait_ends_at_its_timeout_when_nothing_comes(pump):
    silent, _peer = socket.socketpair()
    assert pump.serve(lambda: stream_pump.wait_fds(((silent.fileno(), READ),), 0.01)) is False
    # Outside the pump the same call blocks the calling thread instead.
    assert stream_pump.wait_fds(((silent.fileno(), READ),), 0.01) is False
    _peer.send(b"x")
    assert stream_pump.wait_fds(((silent.fileno(), READ),), None) is True


def test_waits_that_end_on_their_socket_do_not_keep_their_timers(pump):
    # A client that reads slowly makes its stream wait on its socket again and again, each wait
    # with a timer of CLIENT_SEND_TIMEOUT (60 s by default). Those that ended on the socket must
    # not stay in the pump's heap of timers until their deadline. Forty streams at once (their
    # waits end together, one look at the sockets for all), 1,000 waits in all:
    pairs = [socket.socketpair() for _ in range(40)]

    def body(writable):
        def run():
            for _ in range(25):
                assert stream_pump.wait_fds(((writable.fileno(), WRITE),), 60) is True
        return run

    threads, _ = serve_in_threads(pump, [body(ours) for ours, _ in pairs])
    join(threads)
    assert len(pump._timers) < 500
    # A wait that does time out still does.
    silent, _ = pairs[0]
    assert pump.serve(lambda: stream_pump.wait_fds(((silent.fileno(), READ),), 0.01)) is False


def test_the_pump_looks_at_its_sockets_less_often_the_more_streams_it_runs():
    # A few streams: an event waits at most COALESCE_SECONDS; a busy worker gathers longer, up to
    # 0.4 s from 250 streams on (STREAM_COALESCE_SECONDS).
    assert stream_pump.coalesce_window(0) == stream_pump.COALESCE_SECONDS == 0.02
    assert stream_pump.coalesce_window(10) == 0.02
    assert stream_pump.coalesce_window(125) == pytest.approx(0.2)
    assert stream_pump.coalesce_window(250) == stream_pump.COALESCE_MAX_SECONDS == 0.4
    assert stream_pump.coalesce_window(5000) == 0.4
    assert Config.from_env({}).stream_coalesce_seconds == stream_pump.COALESCE_MAX_SECONDS
    # Another longest: the same growth, to it (0.2 s: the window until session 18).
    assert stream_pump.coalesce_window(125, 0.2) == pytest.approx(0.1)
    assert stream_pump.coalesce_window(250, 0.2) == stream_pump.coalesce_window(900, 0.2) == 0.2
    # A longest under the shortest window is the window at any load; 0 looks at every event.
    assert stream_pump.coalesce_window(0, 0.005) == stream_pump.coalesce_window(400, 0.005) == 0.005
    assert stream_pump.coalesce_window(400, 0.0) == 0.0


def feed_events(pump: Pump, streams: int, seconds: float, every: float) -> int:
    """Run `streams` bodies that each read events from a socket until told to end, send one
    event to one of them every `every` seconds for `seconds`, and return how many looks at the
    sockets the pump made meanwhile."""
    pairs = [socket.socketpair() for _ in range(streams)]

    def body(sock):
        def run():
            while True:
                assert stream_pump.wait_fds(((sock.fileno(), READ),), WAIT) is True
                if sock.recv(100).endswith(b"end"):
                    return
        return run

    threads, _ = serve_in_threads(pump, [body(ours) for ours, _ in pairs])
    deadline = time.monotonic() + WAIT
    while pump.streams < streams and time.monotonic() < deadline:
        time.sleep(0.01)
    looks = pump.looks
    for index in range(int(seconds / every)):
        pairs[index % streams][1].send(b"event")
        time.sleep(every)
    looks = pump.looks - looks
    for _, theirs in pairs:
        theirs.send(b"end")
    join(threads)
    return looks


def test_a_busy_pump_gathers_the_events_of_its_streams_into_few_looks(pump):
    # An event every 2 ms for 1.2 s: with 250 streams the pump looks about every 400 ms (about
    # four looks), not at every event, nor every 20 ms as with a few streams, nor every 200 ms
    # as until session 18 (about seven); a slow machine only makes fewer looks.
    assert feed_events(pump, 250, 1.2, 0.002) <= 5
    assert feed_events(Pump(name="test-pump-few"), 4, 0.6, 0.002) >= 15
    # STREAM_COALESCE_SECONDS=0.1: at most every 100 ms.
    assert feed_events(Pump(name="test-pump-short", longest_window=0.1), 250, 1.2, 0.002) >= 8


def test_a_body_handed_over_while_the_pump_gathers_events_starts_at_once(pump):
    # 250 streams, fed an event every 2 ms, keep the pump in its 400 ms window. A body handed
    # over meanwhile (a new stream, whose first words were read before the hand-over) runs at
    # once, not when the window ends (on average 200 ms later; until session 17 the pump slept
    # through its window, and the median of ten was then about 0.1 s with 200 ms windows).
    feeding = threading.Thread(target=feed_events, args=(pump, 250, 2.0, 0.002), daemon=True)
    feeding.start()
    deadline = time.monotonic() + WAIT
    while pump.streams < 250 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # the events have begun: the pump gathers them
    delays = []
    for _ in range(10):
        handed = time.monotonic()
        delays.append(pump.serve(time.monotonic) - handed)
        time.sleep(0.07)
    join([feeding])
    assert statistics.median(delays) < 0.04, delays


def test_no_body_handed_over_is_left_waiting_while_the_pump_sleeps(pump):
    # Request threads hand bodies over while the pump takes the previous ones in: every body must
    # run, also when the pump then sleeps with nothing else to wake it (no timer, no socket). A
    # GIL switch every microsecond puts the threads between any two steps of the hand-over.
    rounds, handed = 300, []

    def request_thread():
        for _ in range(rounds):
            handed.append(pump.serve(lambda: "ran"))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=request_thread, daemon=True) for _ in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + WAIT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    finally:
        sys.setswitchinterval(interval)
    assert handed == ["ran"] * rounds * len(threads)


def test_an_exception_in_one_body_is_raised_in_its_own_thread_only(pump):
    ours, theirs = socket.socketpair()

    def failing():
        stream_pump.sleep(0.01)
        raise ValueError("this body broke")

    def waiting():
        stream_pump.wait_fds(((ours.fileno(), READ),), None)
        return ours.recv(10)

    threads, outcomes = serve_in_threads(pump, [waiting, failing])
    threads[1].join(WAIT)
    assert isinstance(outcomes[1], ValueError) and outcomes[0] is None
    theirs.send(b"still on")
    join(threads)
    assert outcomes[0] == b"still on"
    assert pump.serve(lambda: "the pump goes on") == "the pump goes on"


def test_a_body_runs_in_the_context_of_the_thread_that_handed_it_over(pump):
    seen = contextvars.ContextVar("seen", default="unset")

    def request_thread(value, outcome):
        seen.set(value)
        context = stream_pump.greenlet.getcurrent().gr_context

        def body():
            before = seen.get()
            stream_pump.sleep(0.01)  # other bodies run meanwhile, in their own contexts
            seen.set(value + " changed by the body")
            return before, seen.get()
        outcome.append(pump.serve(body, context))
        outcome.append(seen.get())  # what the body set is seen afterwards, as in one thread

    outcomes = [[] for _ in range(4)]
    threads = [threading.Thread(target=request_thread, args=(f"thread {index}", outcome))
               for index, outcome in enumerate(outcomes)]
    for thread in threads:
        thread.start()
    join(threads)
    for index, outcome in enumerate(outcomes):
        value = f"thread {index}"
        assert outcome == [(value, value + " changed by the body"),
                           value + " changed by the body"]


def test_what_a_body_hands_back_runs_in_its_request_thread_after_it(pump):
    ran: list = []

    def request_thread():
        me = threading.get_ident()

        def body():
            assert stream_pump.run_in_origin(me, lambda: ran.append(threading.get_ident()))
            assert not stream_pump.run_in_origin(me + 1, lambda: None)  # not its origin
            assert ran == []
        pump.serve(body)
        assert ran == [me]

    thread = threading.Thread(target=request_thread)
    thread.start()
    join([thread])
    assert len(ran) == 1
    assert not stream_pump.run_in_origin(threading.get_ident(), lambda: None)  # not in a pump


# --- whole answers read in the installed pump (stream_pump.run, Answer.read) -------------------

@pytest.fixture
def installed(pump):
    """`pump` as this process's pump, as a gunicorn worker installs its own."""
    stream_pump.install(pump)
    yield pump
    stream_pump.install(None)


def answer_read_in(threads: list[int], *, fail: bool = False) -> Answer:
    """An Answer whose events note the thread each is read in (and, `fail`, break midway)."""
    def events():
        for word in ("read", "in", "the", "pump"):
            threads.append(threading.get_ident())
            if fail and word == "the":
                raise UpstreamError("the upstream broke off", "upstream_stream_broken")
            yield TextDelta(word + " ")
        yield Completion("read in the pump ", "c-1", "m-1", "stop")
    return Answer(events())


def test_a_whole_answer_is_read_in_the_installed_pump(installed):
    threads: list[int] = []
    completion = answer_read_in(threads).read()
    assert completion.text == "read in the pump "
    assert set(threads) == {installed.thread.ident}
    assert installed.served == 1


def test_without_an_installed_pump_a_whole_answer_is_read_by_its_caller(pump):
    threads: list[int] = []
    assert answer_read_in(threads).read().conversation_id == "c-1"
    assert set(threads) == {threading.get_ident()} and pump.served == 0


def test_a_whole_answer_that_breaks_in_the_pump_raises_in_its_caller_and_is_closed(installed):
    threads: list[int] = []
    answer = answer_read_in(threads, fail=True)
    closed = []
    answer.on_close(lambda: closed.append(threading.get_ident()))
    with pytest.raises(UpstreamError, match="broke off"):
        answer.read()
    assert set(threads) == set(closed) == {installed.thread.ident}


def test_an_abandoned_whole_answer_is_given_up_from_the_pump(installed, monkeypatch):
    monkeypatch.setattr(answers, "ABANDON_CHECK", 0.0)
    asked_in = []

    def abandoned():
        asked_in.append(threading.get_ident())
        return True

    with pytest.raises(ApiError) as raised:
        answer_read_in([]).read(abandoned)
    assert (raised.value.code, raised.value.status) == ("client_gone", 499)
    assert set(asked_in) == {installed.thread.ident}


# --- Transfers in the pump, against a loopback HTTP server -------------------------------------

class _Gated(BaseHTTPRequestHandler):
    """Answers GET /<name> once the test opens the gate named <name>; streams /stream/<name>:
    one event, then the second once the gate opens."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - the http.server handler name
        gates = self.server.gates
        if self.path.startswith("/stream/"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"data: one\n\n", b"data: two\n\n"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
                gates[self.path[len("/stream/"):]].wait(WAIT)
            self.wfile.write(b"0\r\n\r\n")
            return
        gates[self.path[1:]].wait(WAIT)
        body = self.path[1:].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET  # noqa: N815 - the http.server handler name

    def log_message(self, *args):
        pass


@pytest.fixture
def gated():
    gates = {name: threading.Event() for name in ("a", "b", "c")}
    # handle_error: a client gone at the end of a test is no error.
    with http_server(_Gated, gates=gates, handle_error=lambda request, address: None) as httpd:
        yield httpd
        for gate in gates.values():
            gate.set()


@pytest.fixture(autouse=False)
def multi_handle_reader(monkeypatch):
    monkeypatch.setattr(transport, "READER", transport.StreamedResponse)


def url(httpd, path: str) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}{path}"


def test_requests_of_several_bodies_wait_in_the_pump_side_by_side(pump, gated,
                                                                  multi_handle_reader):
    def body(name):
        def run():
            with new_session(Config.from_env({})) as session:
                return session.get(url(gated, f"/{name}"), timeout=WAIT).content
        return run

    threads, outcomes = serve_in_threads(pump, [body("a"), body("b")])
    gated.gates["b"].set()  # the second answers first; the first still waits
    threads[1].join(WAIT)
    assert outcomes == [None, b"b"]
    gated.gates["a"].set()
    join(threads)
    assert outcomes == [b"a", b"b"]


def test_a_stream_read_in_the_pump_gives_its_handle_back_to_its_request_thread(
        pump, gated, multi_handle_reader):
    results: list = []

    def request_thread():
        session = new_session(Config.from_env({}))
        lent = session._transfer
        response = stream_post(session, url(gated, "/stream/c"), json={}, headers={},
                               timeout=WAIT)

        def body():
            pieces = []
            with response:
                for chunk in response.iter_content():
                    pieces.append(chunk)
                    gated.gates["c"].set()
            session.close()  # in the pump: the handle goes back once the body has ended
            return b"".join(pieces)

        results.append(pump.serve(body))
        results.append(transport._HANDLES.take(session._pinning) is lent)

    thread = threading.Thread(target=request_thread)
    thread.start()
    join([thread])
    assert results == [b"data: one\n\ndata: two\n\n", True]


# --- answers whose bodies run in the pump (the app in this process) ----------------------------

def streamed_in_pump(pump: Pump, client, form: dict) -> tuple[str, set[int]]:
    """POST /send_message with stream=true and send its body from the pump, as the worker does:
    (the SSE text, the threads the body's generators ran in)."""
    response = client.post("/send_message", data={**form, "stream": "true"}, buffered=False)
    ran_in: set[int] = set()

    def send():
        pieces = []
        for piece in response.response:
            ran_in.add(threading.get_ident())
            pieces.append(piece)
        return b"".join(pieces).decode()

    try:
        return pump.serve(send, stream_pump.greenlet.getcurrent().gr_context), ran_in
    finally:
        response.close()


def streamed_in_pump_at_once(pump: Pump, client, form: dict,
                             count: int = 3) -> list[tuple[str, set[int]]]:
    """`count` streamed_in_pump() from as many request threads at once, joined."""
    outcomes = []

    def request_thread():
        outcomes.append(streamed_in_pump(pump, client, form))

    threads = [threading.Thread(target=request_thread) for _ in range(count)]
    for thread in threads:
        thread.start()
    join(threads)
    return outcomes


def deltas_of(sse: str) -> str:
    return "".join(json.loads(line[6:])["delta"] for line in sse.split("\n")
                   if line.startswith('data: {"delta"'))


@pytest.mark.parametrize("handoff", ["off", "resume", "poll", "ws", "both"])
def test_answers_and_their_hand_offs_stream_from_the_pump(make_app, token, emulator, pump,
                                                          handoff):
    # A hand-off makes more upstream requests inside the body (the WebSocket, the resume stream,
    # or reads of the conversation with pauses between them): all of them wait in the pump.
    # "both": the WebSocket breaks mid-answer and the resume stream takes the answer up.
    emulator.switches.handoff = handoff
    if handoff == "both":
        emulator.switches.ws_fault, emulator.switches.ws_break_after = "break", 7
    emulator.switches.answer = "a long and careful answer"
    app = make_app()
    app.extensions["chatgpt_web"].conversations.poll_interval = 0.05
    outcomes = streamed_in_pump_at_once(pump, app.test_client(),
                                        {"access_token": token, "prompt": "Hi"})
    assert [deltas_of(sse) for sse, _ in outcomes] == ["a long and careful answer"] * 3
    assert all(sse.rstrip().endswith("data: [DONE]") for sse, _ in outcomes)
    assert {ident for _, ran_in in outcomes for ident in ran_in} == {pump.thread.ident}
    if handoff in ("resume", "poll", "both"):
        assert len([r for r in emulator.requests if r.path.endswith("/resume")]) == 3
    if handoff in ("ws", "poll", "both"):
        assert len(emulator.topics.subscriptions) == 3
    if handoff == "both":  # part of each answer came over the WebSocket first
        assert sum(b'"o": "append"' in item for item in emulator.topics.sent) >= 3
    reads = [r for r in emulator.requests if r.method == "GET" and "/conversation/" in r.path]
    assert bool(reads) == (handoff == "poll")


@pytest.mark.parametrize("handoff", ["off", "ws", "both"])
def test_whole_answers_and_their_hand_offs_are_read_in_the_installed_pump(make_app, token,
                                                                          emulator, installed,
                                                                          handoff):
    # Not streamed: the request thread waits while the pump reads the answer, hand-off included.
    emulator.switches.handoff = handoff
    if handoff == "both":
        emulator.switches.ws_fault, emulator.switches.ws_break_after = "break", 7
    emulator.switches.answer = "a long and careful answer"
    client = make_app().test_client()
    replies = []

    def request_thread():
        response = client.post("/send_message", data={"access_token": token, "prompt": "Hi"})
        replies.append((response.status_code, response.json.get("text")))

    threads = [threading.Thread(target=request_thread) for _ in range(3)]
    for thread in threads:
        thread.start()
    join(threads)
    assert replies == [(200, "a long and careful answer")] * 3
    assert installed.served == 3 and installed.streams == 0
    if handoff != "off":
        assert len(emulator.topics.subscriptions) == 3


# --- the production server ------------------------------------------------------------------------

def start_server(tmp_path, emulator, **env) -> ServerProcess:
    process = ServerProcess.gunicorn({
        "CACHE_DIR": str(tmp_path / "cache"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "32", "MAX_CONNECTIONS_PER_IP": "0",
        "RATE_LIMIT_IP": "off", "USAGE_TOKENIZER": "lazy", "CHATGPT_BASE_URL": emulator.url,
        "CHATGPT_AUTH_URL": emulator.url, "STREAM_PUMP": "on", **env})
    process.wait_until_serving()
    return process


class RawStream:
    """A streamed request on a raw socket, read by a thread of its own (or not at all)."""

    def __init__(self, server: ServerProcess, head: bytes, body: bytes, *, read: bool = True,
                 receive_buffer: int | None = None, timeout: float = WAIT):
        host, port = server.url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        if receive_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(timeout)
        self.sock.connect((host, int(port)))
        self.sock.sendall(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self._pieces: list[bytes] = []
        self.streaming = threading.Event()  # its first event came
        self.done = threading.Event()  # its last event ([DONE]) came
        self.ended = threading.Event()
        if read:
            self.reader = threading.Thread(target=self.read_to_end, daemon=True)
            self.reader.start()

    @property
    def received(self) -> bytes:
        """Everything received so far."""
        return b"".join(self._pieces)

    def read_to_end(self) -> bytes:
        # Each piece is looked at with the end of the one before (a marker may straddle them),
        # not the whole answer again: megabytes read a few KB at a time took half a minute.
        previous = b""
        try:
            while piece := self.sock.recv(65536):
                self._pieces.append(piece)
                recent = previous[-16:] + piece
                if b"data:" in recent:
                    self.streaming.set()
                if b"data: [DONE]" in recent:
                    self.done.set()
                previous = piece
        except OSError:
            pass
        self.ended.set()
        return self.received


class Stream(RawStream):
    """A streamed /send_message."""

    def __init__(self, server: ServerProcess, token: str, prompt: str, *, read: bool = True,
                 receive_buffer: int | None = None):
        super().__init__(
            server, b"POST /send_message HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n",
            f"access_token={token}&prompt={prompt}&stream=true".encode(),
            read=read, receive_buffer=receive_buffer)

    @property
    def complete(self) -> bool:
        return self.received.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in self.received

    def close(self) -> None:
        self.sock.close()


def switches_per_thread(pid: int) -> dict[int, int]:
    """Voluntary context switches (waits that blocked) of each thread of process `pid`."""
    counts = {}
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue  # the thread ended
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                counts[int(status.parent.name)] = int(line.split()[1])
    return counts


def assert_woken(before: dict[int, int], after: dict[int, int], setting: str, each: int) -> None:
    """Between two switches_per_thread() looks while `each` answers were being read: with
    STREAM_PUMP=on at most 4 threads blocked and woke (the pump, the worker's loop and its
    helpers), with it off at least one per answer."""
    woken = [tid for tid, count in after.items() if count > before.get(tid, count)]
    if setting == "on":
        assert len(woken) <= 4, woken
    else:
        assert len(woken) >= each, woken


def server_with_slow_answers(tmp_path, emulator, setting: str, words: int):
    """A worker (STREAM_PUMP=`setting`) whose answers come one word per event, 0.1 s apart,
    and the prompt of a `words`-word answer."""
    switches = emulator.switches
    switches.chunking, switches.words_per_delta, switches.chunk_delay = False, 1, 0.1
    server = start_server(tmp_path, emulator, STREAM_PUMP=setting)
    return server, "+".join(f"w{i}" for i in range(words))


@pytest.mark.parametrize("setting", ["on", "off"])
def test_the_streams_of_a_worker_wake_one_thread_not_one_each(tmp_path, emulator, token,
                                                              setting):
    # Twelve streams of 200 events 0.1 s apart (20 s each). While all of them stream, a thread
    # that blocks and wakes up again is a thread that reads or writes streams: with the pump,
    # only the pump thread (beside the worker's own loop); with STREAM_PUMP=off, every stream's.
    server, prompt = server_with_slow_answers(tmp_path, emulator, setting, 200)
    streams = []
    try:
        streams = [Stream(server, token, prompt) for _ in range(12)]
        for stream in streams:
            assert stream.streaming.wait(WAIT), stream.received[:300]
        [worker] = server.worker_pids()
        before = switches_per_thread(worker)
        events = [stream.received.count(b"data:") for stream in streams]
        deadline = time.monotonic() + WAIT
        # Until every stream has had three more events (without the pump, each has woken its
        # thread by then), however slowly a loaded machine runs them.
        while any(stream.received.count(b"data:") < seen + 3
                  for stream, seen in zip(streams, events, strict=True)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        after = switches_per_thread(worker)
        assert not any(stream.ended.is_set() for stream in streams)  # all still streaming
    finally:
        for stream in streams:
            stream.close()
        server.stop()
    assert_woken(before, after, setting, each=12)


@pytest.mark.parametrize("setting", ["on", "off"])
def test_whole_answers_are_read_by_the_pump_too(tmp_path, emulator, token, setting):
    # Twelve answers asked without `stream`: the worker reads each whole before it answers, its
    # request thread waiting. While they are read (events 0.1 s apart), only the pump thread
    # wakes at their events; with STREAM_PUMP=off, each answer's own thread does.
    server, prompt = server_with_slow_answers(tmp_path, emulator, setting, 70)
    asks = []
    try:
        asks = [RawStream(server, b"POST /send_message HTTP/1.1\r\nHost: x\r\n"
                                  b"Connection: close\r\n"
                                  b"Content-Type: application/x-www-form-urlencoded\r\n",
                          f"access_token={token}&prompt={prompt}&stream=false".encode())
                for _ in range(12)]
        deadline = time.monotonic() + WAIT
        while len([r for r in emulator.requests
                   if r.method == "POST" and r.path.endswith("conversation")]) < 12:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)  # each has read its first event and is reading the rest
        [worker] = server.worker_pids()
        before = switches_per_thread(worker)
        time.sleep(1.5)  # about 15 events of each answer
        after = switches_per_thread(worker)
        assert not any(ask.ended.is_set() for ask in asks)  # none answered yet
        for ask in asks:  # and every one is answered in the end
            assert ask.ended.wait(WAIT)
            assert ask.received.startswith(b"HTTP/1.1 200"), ask.received[:300]
            assert b"w69" in ask.received
    finally:
        for ask in asks:
            ask.sock.close()
        server.stop()
    assert_woken(before, after, setting, each=12)


def test_a_client_that_does_not_read_stalls_only_its_own_stream(tmp_path, emulator, token):
    # Its answer (8 MB) is far more than the socket buffers between us hold: its stream must
    # park on its writes while the others run to their end.
    huge = " ".join("x" * 10_000 for _ in range(800))
    emulator.switches.chunking = False
    emulator.switches.answer_fn = (
        lambda body: huge if "please-answer-huge" in str(body) else "a short answer")
    server = start_server(tmp_path, emulator, MAX_UPSTREAM_EVENT_BYTES=str(64 << 20),
                          MAX_UPSTREAM_ANSWER_BYTES=str(64 << 20))
    slow = Stream(server, token, "please-answer-huge", read=False, receive_buffer=4096)
    try:
        others = [Stream(server, token, "short") for _ in range(4)]
        for stream in others:
            assert stream.ended.wait(WAIT)
            assert stream.complete and b"a short answer" in stream.received, stream.received
        access_lines = [line for line in server.output().splitlines()
                        if "route=/send_message" in line]
        assert len(access_lines) == 4, access_lines  # the four others, not the slow one
        # Read now, the slow client gets all of its answer: nothing was lost while it waited.
        slow.sock.settimeout(WAIT)
        received = slow.read_to_end()
        assert received.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in received
        assert received.count(b"x" * 10_000) >= 800
    finally:
        slow.close()
        server.stop()


@pytest.mark.parametrize("setting", ["on", "off"])
def test_a_client_that_takes_nothing_for_client_send_timeout_is_cut_off_with_its_upstream(
        tmp_path, emulator, token, setting):
    # Its answer: 300 words of 20 KB, one event each, 0.02 s apart (6 s): far more than the socket
    # buffers between us hold, and still coming from the emulator when the client is cut off.
    switches = emulator.switches
    switches.chunking, switches.words_per_delta, switches.chunk_delay = False, 1, 0.02
    big = " ".join("x" * 20_000 for _ in range(300))
    switches.answer_fn = (
        lambda body: big if "please-answer-big" in str(body) else "a short answer")
    server = start_server(tmp_path, emulator, STREAM_PUMP=setting, CLIENT_SEND_TIMEOUT="2",
                          MAX_UPSTREAM_EVENT_BYTES=str(64 << 20),
                          MAX_UPSTREAM_ANSWER_BYTES=str(64 << 20))
    slow = Stream(server, token, "please-answer-big", read=False, receive_buffer=4096)
    try:
        others = [Stream(server, token, "short") for _ in range(3)]
        for stream in others:  # served while the slow one waits, untouched by its bound
            assert stream.ended.wait(WAIT)
            assert stream.complete and b"a short answer" in stream.received, stream.received
        # Ended as if the client had left: its body closed (the access line is written then)
        # 2 s after the client last took a byte, and with it the upstream transfer, which the
        # emulator sees its client leave. The client finds its connection closed.
        cut = server.wait_for_line("outcome=incomplete", WAIT)
        deadline = time.monotonic() + WAIT
        duration_ms = float(cut.split("duration_ms=")[1].split()[0])
        assert "status=200" in cut and 2000 <= duration_ms < 10_000, cut
        while emulator.streams_left == 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert emulator.streams_left == 1
        received = b""
        try:  # closed: what the client had taken, then the end (a timeout fails the test)
            while piece := slow.sock.recv(65536):
                received += piece
        except ConnectionResetError:
            pass  # reset: the rest of its answer dropped
        assert b"data: [DONE]" not in received
        # Logged as such, without the client's address or any of its answer.
        logged = server.wait_for_line("CLIENT_SEND_TIMEOUT")
        assert "took none of its answer for 2 s" in logged, logged
        assert "127.0.0.1" not in logged and "xxx" not in logged
        assert "Traceback" not in server.output()
    finally:
        slow.close()
        server.stop()
    assert server.process.returncode == 0  # a graceful stop: nothing left to wait for


def test_a_client_that_leaves_mid_stream_ends_that_stream_and_its_upstream(tmp_path, emulator,
                                                                           token):
    # 300 events 0.2 s apart: a minute, unless the stream ends when its client leaves.
    switches = emulator.switches
    switches.chunking, switches.words_per_delta, switches.chunk_delay = False, 1, 0.2
    server = start_server(tmp_path, emulator)
    prompt = "+".join(f"w{i}" for i in range(300))
    streams = []
    try:
        streams = [Stream(server, token, prompt) for _ in range(3)]
        for stream in streams:
            assert stream.streaming.wait(WAIT)
        streams[0].sock.shutdown(socket.SHUT_RDWR)  # the client leaves
        streams[0].close()
        deadline = time.monotonic() + WAIT
        while "outcome=incomplete" not in server.output():
            assert time.monotonic() < deadline, server.output()[-3000:]
            time.sleep(0.1)
        # Its body was closed (the access line is written then), and with it the upstream
        # transfer: the emulator sees its client leave that stream. The other two go on.
        while emulator.streams_left == 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert emulator.streams_left == 1
        assert not any(stream.ended.is_set() for stream in streams[1:])
        access_lines = [line for line in server.output().splitlines()
                        if "route=/send_message" in line]
        assert len(access_lines) == 1 and "status=200" in access_lines[0], access_lines
    finally:
        for stream in streams:
            stream.close()
        server.stop()
