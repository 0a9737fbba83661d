"""How many simultaneous streams the production server configuration carries.

    python bench/concurrency.py                       # N = 50, 200, 500
    python bench/concurrency.py --levels 20 --words 40

It starts the local ChatGPT emulator (`python -m tests.emulator`, its own program) streaming a
long answer slowly, and the service exactly as deployed (`gunicorn -c gunicorn.conf.py wsgi:app`,
server settings from the environment as in production), both on 127.0.0.1. For each N it opens N
streaming /send_message requests at once and prints:

* the share that completed without error (status 200 and a final `data: [DONE]`);
* time to first token (the first answer word) p50 / p99 through the service; the same for N
  clients talking to the emulator directly (chat-requirements, then the conversation POST: the
  protocol steps the service performs); and the ratio service / direct;
* the service's peak memory: the summed RSS of the gunicorn master, its workers and their
  children, sampled from /proc every 50 ms while the N streams run.

Target on a 2-core machine: 500 streams, 100 % completed, TTFT ratio <= 1.2, under 600 MB.
The emulator writes one event per chunk with --chunk-delay between them and asks for no proof of
work, so both paths do the same work upstream and the first word always comes after two delays.
The client is asyncio over raw sockets, so it costs little CPU next to what it measures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chatgpt_web.upstream.conversation import ChatMessage, ConversationRequest, build_body  # noqa: E402

# The emulator answers "Echo: <prompt>", so this marks the first word of the answer's text.
FIRST_TEXT = b"Echo:"
DONE = b"data: [DONE]"


@dataclass
class Outcome:
    ok: bool
    ttft: float | None = None  # seconds from the first byte sent to the first answer word
    error: str = ""


# --- a small HTTP/1.1 client ----------------------------------------------------------------

def post(port: int, path: str, body: bytes, content_type: str,
         headers: dict | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def exchange(port: int, request: bytes, started: float, watch: bool):
    """Send `request`; return (status, body, time of FIRST_TEXT or None), decoding chunked bodies.

    With `watch`, the body is not kept; only whether it ended with [DONE].
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        chunked = b"transfer-encoding: chunked" in head.lower()
        body, tail, first_text = bytearray(), b"", None
        while True:
            if chunked:
                size = int((await reader.readline()).split(b";")[0], 16)
                data = await reader.readexactly(size) if size else b""
                await reader.readexactly(2)
            else:
                data = await reader.read(65536)
            if not data:
                break
            window = tail + data
            if first_text is None and FIRST_TEXT in window:
                first_text = time.monotonic() - started
            tail = window[-64:]
            if not watch:
                body += data
        return status, bytes(body) if not watch else tail, first_text
    finally:
        writer.close()


async def through_service(port: int, form: bytes) -> Outcome:
    started = time.monotonic()
    request = post(port, "/send_message", form, "application/x-www-form-urlencoded")
    status, tail, ttft = await exchange(port, request, started, watch=True)
    if status != 200:
        return Outcome(False, ttft, f"HTTP {status}")
    if DONE not in tail:
        return Outcome(False, ttft, "no [DONE]")
    return Outcome(ttft is not None, ttft, "" if ttft else "no answer text")


async def direct(port: int, token: str, conversation: bytes) -> Outcome:
    started = time.monotonic()
    auth = {"Authorization": f"Bearer {token}"}
    status, body, _ = await exchange(
        port, post(port, "/backend-api/sentinel/chat-requirements", b"{}", "application/json",
                   auth), started, watch=False)
    if status != 200:
        return Outcome(False, None, f"chat-requirements HTTP {status}")
    requirements = json.loads(body)["token"]
    status, tail, ttft = await exchange(port, post(
        port, "/backend-api/conversation", conversation, "application/json",
        {**auth, "Accept": "text/event-stream",
         "Openai-Sentinel-Chat-Requirements-Token": requirements}), started, watch=True)
    if status != 200:
        return Outcome(False, ttft, f"conversation HTTP {status}")
    if DONE not in tail:
        return Outcome(False, ttft, "no [DONE]")
    return Outcome(ttft is not None, ttft, "" if ttft else "no answer text")


async def at_once(count: int, make, timeout: float) -> list[Outcome]:
    async def bounded():
        try:
            return await asyncio.wait_for(make(), timeout)
        except TimeoutError:
            return Outcome(False, None, "timeout")
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            return Outcome(False, None, type(exc).__name__)
    return await asyncio.gather(*(bounded() for _ in range(count)))


# --- memory ---------------------------------------------------------------------------------

def tree_rss(root: int) -> int:
    """Bytes of resident memory of process `root` and all its descendants, from /proc."""
    parents, rss = {}, {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/status") as status:
                    fields = dict(line.split(":", 1) for line in status if ":" in line)
            except OSError:
                continue
            parents[int(entry.name)] = int(fields["PPid"])
            rss[int(entry.name)] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    total, frontier = rss.get(root, 0), [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        total += sum(rss.get(pid, 0) for pid in children)
        frontier += children
    return total


class PeakMemory:
    """Samples tree_rss(root) every 50 ms inside a `with` block; `.peak` is the highest."""

    def __init__(self, root: int):
        self.root, self.peak = root, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.root))
            self._stop.wait(0.05)


# --- the run --------------------------------------------------------------------------------

def summary(outcomes: list[Outcome]) -> tuple[float, float, float, dict]:
    """(share ok, TTFT p50, TTFT p99, error counts)."""
    ttfts = sorted(o.ttft for o in outcomes if o.ok)
    errors: dict[str, int] = {}
    for outcome in outcomes:
        if not outcome.ok:
            errors[outcome.error] = errors.get(outcome.error, 0) + 1
    if not ttfts:
        return 0.0, float("nan"), float("nan"), errors
    p99 = ttfts[min(len(ttfts) - 1, round(0.99 * (len(ttfts) - 1)))]
    return len(ttfts) / len(outcomes), statistics.median(ttfts), p99, errors


def start_emulator(chunk_delay: float) -> tuple[subprocess.Popen, str, str]:
    """The repository's emulator as its own program; returns (process, base URL, token).

    One SSE event per chunk, no pings, no proof of work: every stream paces the same way, so the
    first answer word comes after the same number of chunk delays on both paths.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--easy", "--no-chunking", "--no-pings",
         "--words-per-delta", "1", "--chunk-delay", str(chunk_delay)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    found = {}
    while len(found) < 2:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the emulator did not start")
        name, _, value = line.strip().partition("=")
        if name in ("CHATGPT_BASE_URL", "ACCESS_TOKEN"):
            found[name] = value
    return process, found["CHATGPT_BASE_URL"], found["ACCESS_TOKEN"]


class Service:
    """The service exactly as deployed (`gunicorn -c gunicorn.conf.py wsgi:app`) on 127.0.0.1."""

    def __init__(self, env: dict[str, str]):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=REPO,
            env={**os.environ, **env, "GUNICORN_BIND": f"127.0.0.1:{port}"},
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_until_serving(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"the service did not answer within {timeout}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="50,200,500", help="comma-separated N values")
    parser.add_argument("--words", type=int, default=60, help="words in the answer")
    parser.add_argument("--chunk-delay", type=float, default=0.25,
                        help="seconds between two events the emulator writes (the first word "
                             "comes after two of them)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds allowed per stream")
    args = parser.parse_args()

    prompt = " ".join(f"word{i}" for i in range(args.words - 1))  # answer: "Echo: " + prompt
    emulator, emulator_url, token = start_emulator(args.chunk_delay)
    workdir = tempfile.mkdtemp(prefix="chatgpt_web-bench-")
    service = Service({
        "CHATGPT_BASE_URL": emulator_url, "CACHE_DIR": os.path.join(workdir, "cache"),
        "PROMETHEUS_MULTIPROC_DIR": os.path.join(workdir, "metrics"),
        "REQUEST_TIMEOUT": str(args.timeout), "LOG_LEVEL": "WARNING",
        # Every bench client is 127.0.0.1: a limit it cannot reach, so the limiter still does
        # its per-request work (a store transaction) without refusing anyone.
        "RATE_LIMIT_IP": "1000000/hour"})
    form = urllib.parse.urlencode({"access_token": token, "prompt": prompt,
                                   "stream": "true"}).encode()
    conversation = json.dumps(build_body(
        ConversationRequest((ChatMessage("user", prompt),), "auto"),
        history_disabled=False)).encode()
    emulator_port = urllib.parse.urlsplit(emulator_url).port
    service_port = urllib.parse.urlsplit(service.url).port
    print(f"{os.cpu_count()} CPUs; answer of {args.words} words streamed with "
          f"{args.chunk_delay}s between chunks; gunicorn.conf.py with "
          f"WEB_CONCURRENCY={os.environ.get('WEB_CONCURRENCY', '(default)')} "
          f"GUNICORN_THREADS={os.environ.get('GUNICORN_THREADS', '(default)')}")
    print(f"{'N':>5} {'completed':>9}  {'TTFT service p50/p99':>20}  {'TTFT direct p50/p99':>19}"
          f"  {'ratio p50/p99':>13}  {'peak RSS':>8}  {'wall':>5}", flush=True)
    try:
        service.wait_until_serving()
        for count in (int(level) for level in args.levels.split(",")):
            direct_runs = asyncio.run(at_once(
                count, lambda: direct(emulator_port, token, conversation), args.timeout))
            began = time.monotonic()
            with PeakMemory(service.process.pid) as memory:
                service_runs = asyncio.run(at_once(
                    count, lambda: through_service(service_port, form), args.timeout))
            wall = time.monotonic() - began
            ok, s50, s99, errors = summary(service_runs)
            direct_ok, d50, d99, direct_errors = summary(direct_runs)
            print(f"{count:>5} {ok:>9.1%}  {s50:>9.3f}/{s99:<7.3f}s  {d50:>8.3f}/{d99:<7.3f}s"
                  f"  {s50 / d50:>6.2f}/{s99 / d99:<6.2f}  {memory.peak / 2**20:>6.0f}MB"
                  f"  {wall:>4.0f}s", flush=True)
            if errors:
                print(f"      service failures: {errors}")
            if direct_ok < 1:
                print(f"      direct failures: {direct_errors}")
    finally:
        service.stop()
        emulator.terminate()
        emulator.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
