"""How many simultaneous answers the production server configuration carries, and at what cost.

    python bench/concurrency.py                        # N = 50, 200, 500; both dialects; 3 faces
    python bench/concurrency.py --levels 20,50 --dialects 2026 --faces stream --words 40
    python bench/concurrency.py --levels 500 --dialects 2026 --faces stream --repeats 4

It starts the local ChatGPT emulator (`python -m tests.emulator`, its own program) streaming a
long answer slowly, and the service exactly as deployed (`gunicorn -c gunicorn.conf.py wsgi:app`,
server settings from the environment as in production), both on 127.0.0.1, once per protocol
dialect: CHATGPT_PROTOCOL=2026 against the emulator as today's site, CHATGPT_PROTOCOL=2024
against the emulator as a 2024-only mirror (`--dialect 2024`). For each face and each N it opens
N requests at once and prints:

* `ok`: the share that completed without error (status 200 and, streamed, a final [DONE]);
* `TTFT p50/p99/max`: time to the first answer word through the service (non-streamed answers:
  time to the whole answer), and `direct p50/p99`: the same for N clients asking the emulator
  directly for the same stream with the requests the service makes in that dialect, so both paths
  receive the same events at the same pace: with CHATGPT_PROTOCOL=2024 the one-step sentinel,
  then `POST /conversation` (two requests, `direct`); with CHATGPT_PROTOCOL=2026 the flow the 2026
  site wants (`direct_2026_flow`: conduit prepare, sentinel prepare, its Turnstile program,
  finalize, then `POST /f/conversation`: four requests). `ratio` is service / direct at p50 and
  p99, and `late` is how much the slowest service answer came after the direct p99 (the target:
  under 1 s): what the service adds to what asking the site yourself costs. With
  CHATGPT_PROTOCOL=2026 a second line gives, for comparison, the two-request client of the 2024
  flow asking the same emulator (which still serves the legacy one-step sentinel and
  `POST /conversation`, as a mirror might; the 2026 site moved its writes to `/f/conversation`)
  and `late` against its p99: that gap also holds what the emulator's two extra small requests
  per answer cost it (a Python server's fixed work per request, ~0.45 ms each, and their queueing
  for its one GIL behind ~500 open streams), on the same two cores as the service.
  Connections: each direct client is one browser tab asking once, so it opens one connection and
  sends its flow's requests one after the other on it (HTTP/1.1 keep-alive, as the site and the
  emulator keep it), then closes it; it shares no connection with the other clients. The service's
  upstream requests likewise ride one connection per answer (chatgpt_web/curl_transfer.py), and a
  worker thread may keep it for its next answer; in a burst most answers run on threads that
  started with it, so both paths pay about one connection set-up per answer. The clients of
  the service send one request each, with `Connection: close`;
* `CPU/ans`: CPU time (user + system) of all service processes during the run, per answer:
  every thread of the master and of each worker, and the workers that ended meanwhile (their
  time moves to the master's children's time when it reaps them); `after`: the same in the 5 s
  after the level's last answer, per answer of the level: what the burst costs once it is over
  (the idle trim, and recycling: a worker leaving, the master forking a fresh one, its start);
  `meter`: this script's own sampler (the peaks below) per answer, which shares the cores with
  the service and is not counted in it;
* `RSS`, `PSS`: the service's peak memory, summed over the gunicorn master, its workers and their
  children, sampled from /proc while the N answers run. RSS counts a page shared by several
  processes once in each; PSS splits it between them (/proc/<pid>/smaps_rollup), so PSS is what
  the machine really spends; `idle` is the summed RSS again 5 s after the level's last answer,
  once the workers' idle threads have ended and their free memory has been given back
  (buffered_worker.py): what a server keeps after a burst;
* `cs/ans`: context switches (voluntary + involuntary, every thread of every service process,
  from /proc/<pid>/task/*/status, read every second so that threads ending meanwhile still
  count up to their last reading) per answer: how often the service's threads wake up;
* `load`: the machine's 1-minute load average when the run ended (the machine may be shared);
* under each row: how long the script waited for quiet before the direct run and before the
  service run (each starts once the service's processes and the emulator have each used at most
  5 % of a core for 1 s; after 20 s it starts anyway and says DID NOT SETTLE), and what ran
  during each: CPU seconds of the service, of the emulator, and `others` (the rest of the
  machine, outside this script's process tree: other users' work, which no benchmark lock holds
  back), and how long the emulator's garbage collector paused it (wall-clock: every emulator
  thread waits while it runs). These say when a run was disturbed.

How `late` is judged. On this shared 2-core machine it is noisy: with nothing else running, the
same 2026 reference at N=500 gives p99 2.8-3.2 s from run to run, and a run that meets a long
pause of the emulator's collector (it keeps every request and conversation it served, so its
full collections grow with every level: 0.2-0.7 s each late in a run, once 2.6 s of pauses in
a reference's first 4 s) or other users' work is late by seconds, on either path. So at the
highest level the direct reference and the service alternate `--repeats` times (default 2)
for the faces in `--repeat-faces` (default stream and usage); every pair is printed, each
service run is judged against the reference run just before it, and a summary row gives the
median `late` with its range, and the medians and ranges of the service's slowest first token
and the direct p99. Lower levels, and `whole` by default, run one pair. A median of two pairs is
their mean: one disturbed pair still moves it by half; the lines under the rows show which pair
it was. Use `--repeats 3` or more when a verdict is close. Time: every run lasts the whole
answer (about 20 s at N=500), and a pair about 45 s with its waits, so `--levels 50,500` takes
about 11 minutes with one pair per row and about 14 with the defaults (all three faces
repeated: about 15).

Faces: `stream` = POST /send_message streamed; `whole` = the same, not streamed; `usage` =
POST /v1/chat/completions streamed with `stream_options.include_usage` (the service counts the
tokens of the prompt and the answer, so its tokenizer is in memory).

Targets on a 2-core machine at N=500: 100 % completed, CPU per answer <= 12 ms, peak RSS <= 250 MB
with the default worker count, no first token later than the direct p99 + 1 s (judged as above).
The emulator writes one event per chunk with --chunk-delay between them and asks for no proof of
work. The client is asyncio over raw sockets, so it costs little CPU next to what it measures.
Everything is bounded: loopback only, N at most --max-n, every request within --timeout.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

# The direct clients' HTTP/2 with --http2 (the emulator's TLS server, hypercorn, brings it: a
# dev dependency, as the benchmark is).
import h2.config
import h2.connection
import h2.events

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chatgpt_web.upstream import turnstile  # noqa: E402
from chatgpt_web.upstream.browser import Chrome, sentinel_config  # noqa: E402
from chatgpt_web.upstream.conversation import (  # noqa: E402
    ChatMessage,
    ConversationRequest,
    build_body,
    build_body_2026,
    prepare_body,
)
from chatgpt_web.upstream.pow import requirements_token_2026  # noqa: E402
from tests.servers import ServerProcess, stop_process  # noqa: E402

# The emulator answers "Echo: <prompt>", so this marks the first word of the answer's text.
FIRST_TEXT = b"Echo:"
DONE = b"data: [DONE]"
FACES = ("stream", "whole", "usage")
# Alternated (direct reference, service) runs at the highest level (the module's docstring).
REPEATS = 2
REPEAT_FACES = "stream,usage"  # the first-token faces; `whole` takes a whole answer's time


@dataclass
class Outcome:
    ok: bool
    ttft: float | None = None  # seconds from the first byte sent to the first answer word
    error: str = ""


# --- a small HTTP/1.1 and HTTP/2 client ----------------------------------------------------
# With --http2: the emulator's port -> a TLS context trusting its CA and offering HTTP/2 by ALPN.
# The direct clients then speak HTTP/2 to it, as the service does (H2Connection below): one
# connection per tab, its requests one after the other on it, so the emulator does the same work
# per answer for both paths (its HTTP/2 in Python costs it more CPU than HTTP/1.1).
TLS_PORTS: dict[int, ssl.SSLContext] = {}


def post(port: int, path: str, body: bytes, content_type: str,
         headers: dict | None = None, *, close: bool = True) -> bytes:
    """One POST; `close=False` leaves the connection open for the client's next request."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}"] + (["Connection: close"] if close else [])
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def exchange(port: int, request: bytes, started: float, watch: bool):
    """`request` on a connection of its own (see `Connection.exchange`)."""
    connection = await Connection.open(port)
    try:
        return await connection.exchange(request, started, watch)
    finally:
        connection.close()


class Connection:
    """One client connection, on which requests go one after the other (HTTP/1.1 keep-alive)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection | H2Connection:
        """A connection to 127.0.0.1:`port`: over TLS when TLS_PORTS names the port, then in
        HTTP/2 when the server chose it by ALPN."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                       ssl=TLS_PORTS.get(port))
        tls = writer.get_extra_info("ssl_object")
        if tls is not None and tls.selected_alpn_protocol() == "h2":
            return H2Connection(reader, writer)
        return cls(reader, writer)

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, request: bytes, started: float, watch: bool):
        """Send `request`; return (status, body, time of FIRST_TEXT or None, time of the end),
        decoding chunked bodies and stopping at the body's end (chunked: the last chunk;
        otherwise Content-Length, or the end of the connection). With `watch`, the body is not
        kept, only its last 64 bytes."""
        reader = self.reader
        self.writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        fields = head.lower()
        chunked = b"\r\ntransfer-encoding: chunked" in fields
        left = None  # bytes of a Content-Length body still to read
        if not chunked and b"\r\ncontent-length:" in fields:
            left = int(fields.split(b"\r\ncontent-length:", 1)[1].split(b"\r\n", 1)[0])
        body = _Body(started, watch)
        while True:
            if chunked:
                size = int((await reader.readline()).split(b";")[0], 16)
                data = await reader.readexactly(size) if size else b""
                await reader.readexactly(2)
            elif left is not None:
                data = await reader.read(min(65536, left)) if left else b""
                left -= len(data)
            else:
                data = await reader.read(65536)
            if not data:
                break
            body.feed(data)
        return body.outcome(status)


class _Body:
    """What an exchange keeps of a body as it arrives: when FIRST_TEXT came (seconds after
    `started`), its last 64 bytes, and, unless `watch`, all of it."""

    __slots__ = ("started", "watch", "first_text", "tail", "kept")

    def __init__(self, started: float, watch: bool):
        self.started, self.watch = started, watch
        self.first_text: float | None = None
        self.tail, self.kept = b"", bytearray()

    def feed(self, data: bytes) -> None:
        window = self.tail + data
        if self.first_text is None and FIRST_TEXT in window:
            self.first_text = time.monotonic() - self.started
        self.tail = window[-64:]
        if not self.watch:
            self.kept += data

    def outcome(self, status: int):
        """(status, the body or with `watch` its tail, time of FIRST_TEXT or None, time now)."""
        return (status, self.tail if self.watch else bytes(self.kept), self.first_text,
                time.monotonic() - self.started)


class H2Connection:
    """`Connection`'s interface in HTTP/2 (the h2 library): each exchange one stream, one after
    the other; the request is given as HTTP/1.1 bytes (`post()`) and translated."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.writer.write(self.h2.data_to_send())

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, request: bytes, started: float, watch: bool):
        """As Connection.exchange."""
        head, _, body = request.partition(b"\r\n\r\n")
        request_line, *lines = head.decode().split("\r\n")
        method, path, _ = request_line.split(" ")
        headers = [(":method", method), (":path", path), (":scheme", "https")]
        for line in lines:
            name, _, value = line.partition(": ")
            name = name.lower()
            if name == "host":
                headers.insert(3, (":authority", value))
            elif name != "connection":  # a connection-specific field, not sent in HTTP/2
                headers.append((name, value))
        connection = self.h2
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, headers)
        connection.send_data(stream, body, end_stream=True)
        self.writer.write(connection.data_to_send())
        status, body, ended = 0, _Body(started, watch), False
        while not ended:
            data = await self.reader.read(65536)
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                    connection.acknowledge_received_data(event.flow_controlled_length, stream)
                    body.feed(event.data)
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset) and \
                        event.stream_id == stream:
                    ended = True
            self.writer.write(connection.data_to_send())
        return body.outcome(status)


def _judge(status: int, tail: bytes, ttft: float | None, streamed: bool, what: str = "") -> Outcome:
    if status != 200:
        return Outcome(False, ttft, f"{what}HTTP {status}")
    if streamed and DONE not in tail:
        return Outcome(False, ttft, f"{what}no [DONE]")
    return Outcome(ttft is not None, ttft, "" if ttft else f"{what}no answer text")


async def ask(port: int, path: str, body: bytes, content_type: str, headers: dict, *,
              whole: bool) -> Outcome:
    """One POST to `path` of a chat server: the time to its first answer word, or with `whole`
    (the answer arrives in one piece) to all of it."""
    started = time.monotonic()
    status, tail, first_text, ended = await exchange(
        port, post(port, path, body, content_type, headers), started, watch=True)
    if whole:
        return _judge(status, tail, ended if first_text is not None else None, streamed=False)
    return _judge(status, tail, first_text, streamed=True)


async def through_service(port: int, face: str, body: bytes, content_type: str,
                          headers: dict) -> Outcome:
    path = "/v1/chat/completions" if face == "usage" else "/send_message"
    return await ask(port, path, body, content_type, headers, whole=face == "whole")


async def _as_one_tab(flow, port: int, token: str, conversation: bytes,
                      whole: bool) -> Outcome:
    """A direct client: one browser tab asking once, its `flow`'s requests sent one after the
    other on one kept-alive connection of its own (the module's docstring)."""
    started = time.monotonic()
    connection = await Connection.open(port)
    try:
        return await flow(connection, port, token, conversation, whole, started)
    finally:
        connection.close()


async def direct(port: int, token: str, conversation: bytes, whole: bool) -> Outcome:
    return await _as_one_tab(_direct, port, token, conversation, whole)


async def _direct(connection: Connection, port: int, token: str, conversation: bytes,
                  whole: bool, started: float) -> Outcome:
    auth = {"Authorization": f"Bearer {token}"}
    status, body, _, _ = await connection.exchange(
        post(port, "/backend-api/sentinel/chat-requirements", b"{}", "application/json",
             auth, close=False), started, watch=False)
    if status != 200:
        return Outcome(False, None, f"chat-requirements HTTP {status}")
    requirements = json.loads(body)["token"]
    status, tail, first_text, ended = await connection.exchange(post(
        port, "/backend-api/conversation", conversation, "application/json",
        {**auth, "Accept": "text/event-stream",
         "Openai-Sentinel-Chat-Requirements-Token": requirements}, close=False), started,
        watch=True)
    return _judge(status, tail, ended if whole and first_text is not None else first_text,
                  streamed=True, what="conversation ")


async def direct_2026_flow(port: int, token: str, conversation: bytes, whole: bool) -> Outcome:
    """`direct` as a 2026 client asks: conduit prepare, sentinel prepare, the Turnstile program
    run (this process's CPU, about 0.2 ms), sentinel finalize, then `POST /f/conversation`: the
    four requests per answer the service makes, against the two of `direct`."""
    return await _as_one_tab(_direct_2026_flow, port, token, conversation, whole)


async def _direct_2026_flow(connection: Connection, port: int, token: str, conversation: bytes,
                            whole: bool, started: float) -> Outcome:
    chrome, device = Chrome.from_target("chrome"), str(uuid.uuid4())
    auth = {"Authorization": f"Bearer {token}", "Oai-Device-Id": device,
            "Cookie": f"oai-did={device}", "User-Agent": chrome.user_agent}
    trace = str(uuid.uuid4())

    async def call(path: str, body: dict, headers: dict) -> dict | None:
        status, answer, _, _ = await connection.exchange(post(
            port, path, json.dumps(body).encode(), "application/json", headers, close=False),
            started, watch=False)
        return json.loads(answer) if status == 200 else None

    conduit = await call("/backend-api/f/conversation/prepare",
                         prepare_body(json.loads(conversation)),
                         {**auth, "X-Oai-Turn-Trace-Id": trace, "X-Conduit-Token": ""})
    p = requirements_token_2026(sentinel_config(chrome, build_id="prod-bench", sdk_url="",
                                                page_loaded_at=time.time()))
    challenge = await call("/backend-api/sentinel/chat-requirements/prepare", {"p": p}, auth)
    if conduit is None or challenge is None:
        return Outcome(False, None, "prepare failed")
    answer = turnstile.solve(challenge["turnstile"]["dx"], p, turnstile.BrowserEnvironment(
        user_agent=chrome.user_agent, device_id=device, origin="", script_src=""))
    bundle = await call("/backend-api/sentinel/chat-requirements/finalize",
                        {"prepare_token": challenge["prepare_token"], "turnstile": answer}, auth)
    if bundle is None:
        return Outcome(False, None, "finalize failed")
    status, tail, first_text, ended = await connection.exchange(post(
        port, "/backend-api/f/conversation", conversation, "application/json",
        {**auth, "Accept": "text/event-stream", "X-Conduit-Token": conduit["conduit_token"],
         "X-Oai-Turn-Trace-Id": trace, "OpenAI-Sentinel-Chat-Requirements-Token":
         bundle["token"], "OpenAI-Sentinel-Turnstile-Token": answer}, close=False), started,
        watch=True)
    return _judge(status, tail, ended if whole and first_text is not None else first_text,
                  streamed=True, what="f/conversation ")


async def at_once(count: int, make, timeout: float) -> list[Outcome]:
    async def bounded():
        try:
            return await asyncio.wait_for(make(), timeout)
        except TimeoutError:
            return Outcome(False, None, "timeout")
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            return Outcome(False, None, type(exc).__name__)
    return await asyncio.gather(*(bounded() for _ in range(count)))


# --- what the service's processes spend, from /proc ---------------------------------------

def _read(path: str) -> str:
    try:
        with open(path) as file:
            return file.read()
    except OSError:  # the process or thread ended meanwhile
        return ""


def service_pids(root: int) -> list[int]:
    """Process `root` and all its descendants."""
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _read(f"/proc/{entry.name}/stat")
            if stat:
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [root], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system time of `pids` (all their threads, and their reaped children)."""
    total = 0
    for pid in pids:
        fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()
        if len(fields) > 14:
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / _TICK


def context_switches(pids: list[int]) -> dict[tuple[int, int], int]:
    """Voluntary + involuntary context switches of every thread of `pids`, by (pid, tid)."""
    counts = {}
    for pid in pids:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in threads:
            switches = 0
            for line in _read(f"/proc/{pid}/task/{tid}/status").splitlines():
                if line.endswith("ctxt_switches:") or "ctxt_switches:" in line:
                    switches += int(line.split(":")[1])
            counts[(pid, int(tid))] = switches
    return counts


def switches_between(before: dict, after: dict) -> int:
    """Context switches made between two `context_switches()` readings (new threads from 0;
    threads that ended in between are lost, so this is a lower bound)."""
    return sum(count - before.get(key, 0) for key, count in after.items())


# --- quiet before each measured run, and what else ran during it ---------------------------

# A measured run starts once the service's processes and the emulator have each spent at most
# QUIET_SHARE of one core over the last QUIET_WINDOW seconds (idle, each reads 0.00-0.04), or
# after QUIET_LIMIT seconds without that, which the row then says.
QUIET_SHARE = 0.05
QUIET_WINDOW = 1.0
QUIET_LIMIT = 20.0


@dataclass
class Settling:
    """How a wait for quiet ended: `waited` seconds; `settled`, or gave up; `busy`: each
    process group's share of one core over the last window read (empty if none was complete)."""

    waited: float
    settled: bool
    busy: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        if self.settled:
            return f"{self.waited:.1f}s"
        shares = ", ".join(f"{group} {share:.2f}" for group, share in self.busy.items())
        return f"{self.waited:.1f}s, DID NOT SETTLE ({shares} of a core)"


def wait_until_quiet(read, *, share: float = QUIET_SHARE, window: float = QUIET_WINDOW,
                     limit: float = QUIET_LIMIT, interval: float = 0.1, clock=time.monotonic,
                     sleep=time.sleep) -> Settling:
    """Wait until every group of processes in `read()` ({group: CPU seconds so far}) has spent at
    most `share` of one core over the last `window` seconds; give up after `limit` seconds."""
    started = clock()
    readings: deque[tuple[float, dict[str, float]]] = deque()
    busy: dict[str, float] = {}
    while True:
        now = clock()
        readings.append((now, read()))
        # Keep the newest reading that is at least `window` old as the window's start.
        while len(readings) > 1 and now - readings[1][0] >= window:
            readings.popleft()
        since, first = readings[0]
        if now - since >= window:
            busy = {group: (seconds - first.get(group, 0.0)) / (now - since)
                    for group, seconds in readings[-1][1].items()}
            if all(value <= share for value in busy.values()):
                return Settling(now - started, True, busy)
        if now - started >= limit:
            return Settling(now - started, False, busy)
        sleep(interval)


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has been busy since boot (/proc/stat: all but idle
    and iowait; guest time is inside user time)."""
    fields = [int(value) for value in _read("/proc/stat").split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / _TICK


@dataclass
class RunLoad:
    """CPU seconds spent during one measured run by the service's processes, the emulator, and
    `others`: the rest of the machine outside this script's process tree (other users' work,
    which no benchmark lock holds back)."""

    service: float = 0.0
    emulator: float = 0.0
    others: float = 0.0
    gc_paused: float = 0.0  # seconds the emulator's garbage collector held it (see emulator_gc)
    gc_longest: float = 0.0

    def describe(self, *, service: bool = True) -> str:
        return ((f"service {self.service:.2f}, " if service else "")
                + f"emulator {self.emulator:.2f}, others {self.others:.2f} CPU s; emulator GC"
                f" paused {self.gc_paused:.2f}s (longest {self.gc_longest:.2f}s)")


class WatchLoad:
    """`with WatchLoad(service_root, emulator_pid) as watch:` ... `watch.load` is a RunLoad;
    `gc_clock`: a callable like `emulator_gc` (none: no GC figures)."""

    def __init__(self, service_root: int, emulator_pid: int, gc_clock=None):
        self.service_root, self.emulator_pid, self.gc_clock = service_root, emulator_pid, gc_clock
        self.load = RunLoad()

    def _reading(self) -> tuple[float, float, float, float]:
        # The script's whole tree (client, samplers it reaped, emulator, service) vs the machine.
        return (cpu_seconds(service_pids(self.service_root)), cpu_seconds([self.emulator_pid]),
                cpu_seconds(service_pids(os.getpid())), machine_busy_seconds())

    def __enter__(self) -> WatchLoad:
        self._gc_before = self.gc_clock()[0] if self.gc_clock else 0.0  # (resets the longest)
        self._before = self._reading()
        return self

    def __exit__(self, *exc) -> None:
        service, emulator, ours, machine = (after - before for after, before
                                            in zip(self._reading(), self._before, strict=True))
        paused, longest = self.gc_clock() if self.gc_clock else (self._gc_before, 0.0)
        self.load = RunLoad(service, emulator, max(0.0, machine - ours),
                            paused - self._gc_before, longest)


def late_of_repeats(pairs: list[tuple[float, float]]) -> tuple[float, float, float]:
    """(median, lowest, highest) of `late` over alternated runs, from (direct p99, service's
    slowest) pairs: each service run is judged against the reference run just before it, so
    that a run disturbed by something outside both paths moves one pair, not the verdict."""
    lates = [slowest - p99 for p99, slowest in pairs]
    return statistics.median(lates), min(lates), max(lates)


def memory(pids: list[int], with_pss: bool) -> tuple[int, int]:
    """(summed RSS, summed PSS) of `pids` in bytes; PSS is 0 unless `with_pss`."""
    rss = pss = 0
    for pid in pids:
        for line in _read(f"/proc/{pid}/status").splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1]) * 1024
        if with_pss:
            for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
    return rss, pss


class PeakMemory:
    """Samples the summed RSS (every 50 ms) and PSS (every 500 ms: smaps_rollup walks the page
    tables) of the service's processes inside a `with` block; `.rss` and `.pss` are the peaks.

    The sampling runs in a child process: reading the /proc files of ~1000 threads in a thread
    of this process held the GIL the client's event loop needs, so the client read first tokens
    late and the service looked slower (about 1-2 ms of CPU per answer and 0.5 s of first-token
    time at N=500 in alternated runs). The child still shares the service's cores, so it reads
    as little as the figures need (SAMPLER_READS); `.cpu` is what it spent (seconds), printed
    beside the service's CPU but not counted in it.
    """

    def __init__(self, root: int):
        self.root, self.rss, self.pss, self.cpu = root, 0, 0, 0.0
        # Context switches by thread, read every second: the workers' idle threads end (2 s
        # without a request), and a thread's count is lost with it unless read before.
        self.switches: dict[tuple[int, int], int] = {}
        context = multiprocessing.get_context("fork")
        self._stop = context.Event()
        self._results, results = context.Pipe(duplex=False)
        self._process = context.Process(target=_sample_peaks, args=(root, self._stop, results),
                                        daemon=True)

    def __enter__(self) -> PeakMemory:
        self._process.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._results.poll(30):
            self.rss, self.pss, self.switches, self.cpu = self._results.recv()
        self._process.join(10)


# Rounds of the sampler (one every 50 ms) between two readings of: the service's process list
# (a scan of every process in /proc: 1.7 ms; workers are only replaced between levels, when
# idle), PSS (smaps_rollup walks the page tables: 4 ms for the three processes at N=500), and
# every thread's context switches (a status file per thread: 16 ms for ~500 threads). A pool
# thread ends only after 2 s without a request (IDLE_THREAD_SECONDS), in which it makes no
# switches, so one reading a second loses none. Reading them every 50-200 ms cost the sampler
# about 6 ms of CPU per answer at N=500, on the 2 cores the service it measured was using (the
# `meter` column).
SAMPLER_READS = {"pids": 20, "pss": 10, "switches": 20}


def _sample_peaks(root: int, stop, results) -> None:
    """PeakMemory's sampler, in its own process: sends (peak RSS, peak PSS, switches, its own CPU
    seconds) at stop."""
    started = time.process_time()
    peak_rss = peak_pss = round_ = 0
    switches: dict[tuple[int, int], int] = {}
    pids: list[int] = []
    while True:
        if round_ % SAMPLER_READS["pids"] == 0:
            pids = service_pids(root)
        rss, pss = memory(pids, with_pss=round_ % SAMPLER_READS["pss"] == 0)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        if round_ % SAMPLER_READS["switches"] == 0:
            switches.update(context_switches(pids))
        round_ += 1
        if stop.wait(0.05):
            switches.update(context_switches(service_pids(root)))
            results.send((peak_rss, peak_pss, switches, time.process_time() - started))
            return


@dataclass
class Measured:
    """One measured run of N requests at once against a server (`measured()`)."""

    outcomes: list[Outcome]
    cpu: float  # CPU seconds of the server's processes (the whole tree) during the run
    switches: int  # their context switches
    peak: PeakMemory  # their peak RSS and PSS, and what the sampler spent
    wall: float  # seconds from the first request sent to the last answer's end


def measured(root: int, count: int, make, timeout: float) -> Measured:
    """`count` requests made by `make()` at once, with what the processes of the server whose
    first process is `root` spent on them."""
    pids = service_pids(root)
    cpu_before, switches_before = cpu_seconds(pids), context_switches(pids)
    began = time.monotonic()
    with PeakMemory(root) as peak:
        outcomes = asyncio.run(at_once(count, make, timeout))
    wall = time.monotonic() - began
    pids = service_pids(root)
    cpu = cpu_seconds(pids) - cpu_before
    switches = switches_between(switches_before, {**peak.switches, **context_switches(pids)})
    return Measured(outcomes, cpu, switches, peak, wall)


# --- the run --------------------------------------------------------------------------------

def summary(outcomes: list[Outcome]) -> tuple[float, float, float, float, dict]:
    """(share ok, TTFT p50, p99, max, error counts)."""
    ttfts = sorted(o.ttft for o in outcomes if o.ok)
    errors: dict[str, int] = {}
    for outcome in outcomes:
        if not outcome.ok:
            errors[outcome.error] = errors.get(outcome.error, 0) + 1
    if not ttfts:
        return 0.0, float("nan"), float("nan"), float("nan"), errors
    p99 = ttfts[min(len(ttfts) - 1, round(0.99 * (len(ttfts) - 1)))]
    return len(ttfts) / len(outcomes), statistics.median(ttfts), p99, ttfts[-1], errors


# The emulator's own program (`python -m tests.emulator`) with a clock on its garbage collector,
# added here, not in the emulator: the emulator keeps every request and conversation it served,
# so a full collection walks more objects with every level, holding the GIL that its hundreds
# of streams and accepts wait for (0.3-0.7 s at N=500 after a few levels; once 2.6 s of pauses
# in a reference's first 4 s). Every line on its stdin gets "gc <seconds paused so far>
# <longest pause since the last line> <collections>" on its stdout.
_EMULATOR_WITH_GC_CLOCK = """
import gc, runpy, sys, threading, time
clock = {"started": 0.0, "paused": 0.0, "longest": 0.0, "collections": 0}
def on_collection(phase, info):
    if phase == "start":
        clock["started"] = time.monotonic()
        return
    pause = time.monotonic() - clock["started"]
    clock["paused"] += pause
    clock["longest"] = max(clock["longest"], pause)
    clock["collections"] += 1
def answer():
    for _ in sys.stdin:
        longest, clock["longest"] = clock["longest"], 0.0
        sys.stdout.write(f"gc {clock['paused']} {longest} {clock['collections']}\\n")  # one write
        sys.stdout.flush()
gc.callbacks.append(on_collection)
threading.Thread(target=answer, daemon=True).start()
runpy.run_module("tests.emulator", run_name="__main__", alter_sys=True)
"""


def start_emulator(chunk_delay: float, dialect: str, request_delay: float = 0.0,
                   http2: bool = False) -> tuple[subprocess.Popen, str, str, str | None]:
    """The repository's emulator as its own program; returns (process, base URL, token, CA file
    to trust or None). `http2`: over TLS, HTTP/2 offered by ALPN (`--tls`), as the site.

    One SSE event per chunk, no pings, no proof of work: every stream paces the same way, so the
    first answer word comes after the same number of chunk delays on both paths. With
    `request_delay`, every request waits that long before it is answered (a distant site).
    `emulator_gc(process)` reads its collector's clock (_EMULATOR_WITH_GC_CLOCK).
    """
    process = subprocess.Popen(
        [sys.executable, "-c", _EMULATOR_WITH_GC_CLOCK, "--easy", "--no-chunking", "--no-pings",
         "--words-per-delta", "1", "--chunk-delay", str(chunk_delay), "--dialect", dialect,
         "--request-delay", str(request_delay)] + (["--tls"] if http2 else []),
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    found = emulator_settings(process)
    return (process, found["CHATGPT_BASE_URL"], found["ACCESS_TOKEN"],
            found.get("CHATGPT_CA_FILE"))


def emulator_settings(process: subprocess.Popen) -> dict[str, str]:
    """What the emulator program prints at start, NAME=value lines read from its stdout:
    CHATGPT_BASE_URL, CHATGPT_CA_FILE (with --tls) and ACCESS_TOKEN, which comes last."""
    found: dict[str, str] = {}
    while "ACCESS_TOKEN" not in found:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the emulator did not start")
        name, _, value = line.strip().partition("=")
        found[name] = value
    return found


def emulator_gc(process: subprocess.Popen) -> tuple[float, float]:
    """(seconds the emulator's garbage collector has paused it so far, longest pause since the
    last call), wall-clock: a pause on a busy machine lasts until the collecting thread has had
    its CPU, and every other thread waits for it."""
    process.stdin.write("\n")
    process.stdin.flush()
    while True:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the emulator ended")
        if line.startswith("gc "):
            _, paused, longest, _ = line.split()
            return float(paused), float(longest)


def service_env(emulator_url: str, dialect: str, workdir: str, timeout: float) -> dict[str, str]:
    return {
        "CHATGPT_BASE_URL": emulator_url, "CHATGPT_PROTOCOL": dialect,
        "CACHE_DIR": os.path.join(workdir, "cache"),
        "PROMETHEUS_MULTIPROC_DIR": os.path.join(workdir, "metrics"),
        "REQUEST_TIMEOUT": str(timeout), "LOG_LEVEL": "WARNING",
        # Every bench client is 127.0.0.1: no cap on one address's connections, and limits it
        # cannot reach, so the limiter still does its per-request work without refusing anyone.
        "MAX_CONNECTIONS_PER_IP": "0",
        "RATE_LIMIT_IP": "1000000/hour", "RATE_LIMIT": "1000000/hour",
    }


def requests_of(face: str, token: str, prompt: str) -> tuple[bytes, str, dict]:
    """(body, content type, headers) of one service request of `face`."""
    if face == "usage":
        return json.dumps({
            "model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": prompt}]}).encode(), \
            "application/json", {"Authorization": f"Bearer {token}"}
    return urllib.parse.urlencode({
        "access_token": token, "prompt": prompt,
        "stream": "true" if face == "stream" else "false"}).encode(), \
        "application/x-www-form-urlencoded", {}


def same_flow_direct(dialect: str):
    """The direct client that asks the emulator with the requests the service makes in `dialect`
    (`direct_2026_flow` for 2026, `direct` for 2024): the reference `late` is judged against."""
    return direct_2026_flow if dialect == "2026" else direct


def conversation_body(dialect: str, prompt: str) -> bytes:
    """The conversation write the service sends in `dialect` for `prompt`: the direct clients
    send the same, so that the emulator streams them the same events."""
    turn = ConversationRequest((ChatMessage("user", prompt),), "auto")
    body = (build_body_2026(turn, history_disabled=False, now=time.time())
            if dialect == "2026" else build_body(turn, history_disabled=False))
    return json.dumps(body).encode()


def run_dialect(dialect: str, args, levels: list[int], faces: list[str]) -> None:
    repeat_faces = args.repeat_faces.split(",")
    prompt = " ".join(f"word{i}" for i in range(args.words - 1))  # answer: "Echo: " + prompt
    emulator, emulator_url, token, ca_file = start_emulator(args.chunk_delay, dialect,
                                                            args.request_delay, args.http2)
    workdir = tempfile.mkdtemp(prefix="chatgpt_web-bench-")
    env = service_env(emulator_url, dialect, workdir, args.timeout)
    if ca_file:
        env["CHATGPT_CA_FILE"] = ca_file
        context = ssl.create_default_context(cafile=ca_file)
        context.set_alpn_protocols(["h2"])
        TLS_PORTS[urllib.parse.urlsplit(emulator_url).port] = context
    service = ServerProcess.gunicorn(env)
    conversation = conversation_body(dialect, prompt)
    emulator_port = urllib.parse.urlsplit(emulator_url).port
    service_port = urllib.parse.urlsplit(service.url).port
    print(f"\nCHATGPT_PROTOCOL={dialect} (emulator --dialect {dialect})")
    print(f"{'face':>6} {'N':>4} {'ok':>6}  {'TTFT p50/p99/max':>17}  {'direct p50/p99':>14}"
          f"  {'ratio':>9}  {'late':>6}  {'CPU/ans':>7} {'after':>5} {'meter':>5}"
          f"  {'RSS':>5} {'PSS':>5} {'idle':>5}"
          f"  {'cs/ans':>6}"
          f"  {'wall':>4}  {'load':>4}", flush=True)
    def settle() -> Settling:
        return wait_until_quiet(lambda: {
            "service": cpu_seconds(service_pids(service.process.pid)),
            "emulator": cpu_seconds([emulator.pid])})

    def watch() -> WatchLoad:
        return WatchLoad(service.process.pid, emulator.pid, lambda: emulator_gc(emulator))

    try:
        service.wait_until_serving(timeout=30)
        for face in faces:
            for count in levels:
                whole = face == "whole"
                # The reference: N clients asking the emulator with this dialect's requests;
                # with 2026, the 2024 write's two-request client for comparison.
                reference = same_flow_direct(dialect)
                legacy = direct if dialect == "2026" else None
                request = requests_of(face, token, prompt)
                repeats = (args.repeats if count == max(levels) and face in repeat_faces
                           else 1)
                pairs, slowest = [], []
                for _ in range(repeats):
                    quiet_direct = settle()
                    with watch() as during_direct:
                        direct_runs = asyncio.run(at_once(count, lambda: reference(  # noqa: B023
                            emulator_port, token, conversation, whole), args.timeout))  # noqa: B023
                    quiet_service = settle()
                    with watch() as during_service:
                        run = measured(service.process.pid, count, lambda: through_service(
                            service_port, face, *request), args.timeout)  # noqa: B023
                    service_runs, cpu, switches, peak, wall = (
                        run.outcomes, run.cpu, run.switches, run.peak, run.wall)
                    cpu_end = cpu_seconds(service_pids(service.process.pid))
                    time.sleep(5)
                    pids = service_pids(service.process.pid)
                    idle_rss, _ = memory(pids, with_pss=False)
                    after = cpu_seconds(pids) - cpu_end
                    ok, s50, s99, smax, errors = summary(service_runs)
                    direct_ok, d50, d99, _, direct_errors = summary(direct_runs)
                    pairs.append((d99, smax))
                    slowest.append(smax)
                    print(f"{face:>6} {count:>4} {ok:>6.1%}  {s50:>5.2f}/{s99:<5.2f}/{smax:<5.2f}"
                          f"  {d50:>6.2f}/{d99:<6.2f}  {s50 / d50:>4.2f}/{s99 / d99:<4.2f}"
                          f"  {smax - d99:>+5.2f}s  {cpu / count * 1000:>5.1f}ms"
                          f" {after / count * 1000:>5.2f} {peak.cpu / count * 1000:>5.2f}"
                          f"  {peak.rss / 2**20:>4.0f}M {peak.pss / 2**20:>4.0f}M"
                          f" {idle_rss / 2**20:>4.0f}M"
                          f"  {switches / count:>6.0f}  {wall:>3.0f}s  {os.getloadavg()[0]:>4.1f}",
                          flush=True)
                    print(f"       waited for quiet {quiet_direct.describe()} before direct,"
                          f" {quiet_service.describe()} before service. During direct:"
                          f" {during_direct.load.describe()}. During service:"
                          f" {during_service.load.describe(service=False)}", flush=True)
                    if errors:
                        print(f"       service failures: {errors}")
                    if direct_ok < 1:
                        print(f"       direct failures: {direct_errors}")
                if repeats > 1:
                    late, low, high = late_of_repeats(pairs)
                    p99s, maxes = [p99 for p99, _ in pairs], [top for _, top in pairs]
                    print(f"{face:>6} {count:>4} median of {repeats} alternated runs: service max"
                          f" {statistics.median(maxes):.2f} ({min(maxes):.2f}-{max(maxes):.2f}),"
                          f" direct p99 {statistics.median(p99s):.2f} ({min(p99s):.2f}-"
                          f"{max(p99s):.2f}); late {late:+.2f}s ({low:+.2f} to {high:+.2f})",
                          flush=True)
                if legacy is not None:
                    quiet_legacy = settle()
                    with watch() as during_legacy:
                        legacy_runs = asyncio.run(at_once(count, lambda: legacy(  # noqa: B023
                            emulator_port, token, conversation, whole), args.timeout))  # noqa: B023
                    legacy_ok, l50, l99, _, legacy_errors = summary(legacy_runs)
                    what = "the service's slowest" if repeats == 1 else (
                        f"the median of the {repeats} service runs' slowest")
                    print(f"       direct by the 2024 write (2 requests): {legacy_ok:.1%} ok,"
                          f" p50/p99 {l50:.2f}/{l99:.2f}; late against its p99"
                          f" {statistics.median(slowest) - l99:+.2f}s ({what}); waited for quiet"
                          f" {quiet_legacy.describe()}; during it: {during_legacy.load.describe()}",
                          flush=True)
                    if legacy_ok < 1:
                        print(f"       2024-write direct failures: {legacy_errors}")
    except BaseException:
        print(service.output()[-2000:], file=sys.stderr)
        raise
    finally:
        service.stop()
        stop_process(emulator, 10)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="50,200,500", help="comma-separated N values")
    parser.add_argument("--dialects", default="2026,2024", help="CHATGPT_PROTOCOL values to run")
    parser.add_argument("--faces", default=",".join(FACES), help=f"some of {', '.join(FACES)}")
    parser.add_argument("--words", type=int, default=60, help="words in the answer")
    parser.add_argument("--chunk-delay", type=float, default=0.25,
                        help="seconds between two events the emulator writes")
    parser.add_argument("--request-delay", type=float, default=0.0,
                        help="seconds the emulator waits before answering each request: the "
                             "round trip to a distant site (the real one is 0.1-0.4 s away), "
                             "which a flow of more requests pays more often")
    parser.add_argument("--repeats", type=int, default=REPEATS,
                        help="at the highest level, run the direct reference and the service "
                             "alternately this many times; late is judged by the median")
    parser.add_argument("--repeat-faces", default=REPEAT_FACES,
                        help="the faces --repeats applies to")
    parser.add_argument("--http2", action="store_true",
                        help="the emulator over TLS with HTTP/2, as the site (the service and "
                             "the direct clients speak HTTP/2 to it)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds allowed per answer")
    parser.add_argument("--max-n", type=int, default=1000, help="refuse levels above this")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    faces = [face for face in args.faces.split(",") if face]
    dialects = [dialect for dialect in args.dialects.split(",") if dialect]
    if any(not 0 < level <= args.max_n for level in levels):
        parser.error(f"every level must be between 1 and --max-n ({args.max_n})")
    if not 1 <= args.repeats <= 10:
        parser.error("--repeats must be between 1 and 10")
    repeat_faces = set(filter(None, args.repeat_faces.split(",")))
    if set(faces) - set(FACES) or repeat_faces - set(FACES) or set(dialects) - {"2026", "2024"}:
        parser.error(f"faces are {', '.join(FACES)}; dialects are 2026 and 2024")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; answer of "
          f"{args.words} words, one event every {args.chunk_delay}s, requests answered after "
          f"{args.request_delay}s{', HTTP/2 over TLS' if args.http2 else ''}; "
          f"gunicorn.conf.py with "
          f"WEB_CONCURRENCY={os.environ.get('WEB_CONCURRENCY', '(default)')} "
          f"GUNICORN_THREADS={os.environ.get('GUNICORN_THREADS', '(default)')} "
          f"USAGE_TOKENIZER={os.environ.get('USAGE_TOKENIZER', '(default)')}", flush=True)
    for dialect in dialects:
        run_dialect(dialect, args, levels, faces)
    return 0


if __name__ == "__main__":
    sys.exit(main())
