"""This service beside chat2api, the best-known Python peer, on one emulator, load and machine.

    python bench/peers.py --chat2api ~/src/chat2api --python ~/src/chat2api/venv/bin/python
    python bench/peers.py --chat2api DIR --python PY --levels 200,500 --faces stream --rounds 3

bench/concurrency.py measures the service alone against its targets; issue 19 also asks that it
lead its peers on CPU and memory, and that the benchmark show it. This script starts the
repository's emulator in the 2024 dialect (chat2api v1.4.9 speaks only the 2024 flow: the
one-step sentinel, then `POST /backend-api/conversation`; the service is run with
CHATGPT_PROTOCOL=2024 to make the same two requests), then both servers as shipped:

* this service: `gunicorn -c gunicorn.conf.py wsgi:app` (2 workers unless WEB_CONCURRENCY says
  otherwise), with bench/concurrency.py's settings (limits it cannot reach, warnings only);
* chat2api: one uvicorn process, as its Dockerfile's `python app.py` runs it, bound to 127.0.0.1
  on a free port instead of 0.0.0.0:5005. Its logging stays as shipped (it logs each caller's
  token, so its output goes to /dev/null and is never kept).

For each face (`stream`: `POST /v1/chat/completions` with `stream: true`; `whole`: the same
with `stream: false`, the answer in one piece, which both count the tokens of) and each N, it
sends N requests at once to one server, then to the other, `--rounds` times, the order swapped
every round, each run waiting until both servers and the emulator are quiet. Every run is
measured as bench/concurrency.py measures the service: `ok`, the time to the first answer word
(to the whole answer for `whole`), CPU seconds per answer of the server's whole process tree,
its peak RSS and PSS, and context switches per answer. Then a row per face and N gives the
medians over the rounds and `ratio`, service / chat2api, of each: below 1, the service spends
less.

Getting chat2api: a checkout of lanqian528/chat2api (v1.4.9, commit e8a2fbb, was measured) and a
virtualenv with its requirements.txt (`python -m venv venv && venv/bin/pip install -r
requirements.txt`). It counts prompt tokens with tiktoken, which would download its vocabulary on
first use; this script gives it a TIKTOKEN_CACHE_DIR holding the same files, taken from the
bpe-openai wheel this service depends on (checked against their published SHA-256 by
usage.read_vocabulary's source), under the names tiktoken looks for, so nothing is fetched.
Everything is bounded as in bench/concurrency.py: loopback only, N at most --max-n, each request
within --timeout.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from concurrency import (  # noqa: E402 - the sibling script, found through the path above
    Measured,
    ask,
    cpu_seconds,
    measured,
    service_env,
    service_pids,
    start_emulator,
    summary,
    wait_until_quiet,
)

from chatgpt_web import usage  # noqa: E402
from tests.servers import ServerProcess, free_port, stop_process  # noqa: E402

FACES = ("stream", "whole")
# Where tiktoken downloads an encoding's vocabulary from; its cache names each file by the
# SHA-1 of this URL (tiktoken/load.py, read_file_cached).
TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
START_TIMEOUT = 30.0


def fill_tiktoken_cache(directory: Path) -> None:
    """Put the o200k_base and cl100k_base vocabularies where tiktoken's cache looks for them."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("o200k_base", "cl100k_base"):
        with gzip.open(usage.VOCABULARY_DIRECTORY / f"{name}.tiktoken.gz") as file:
            data = file.read()
        key = hashlib.sha1(TIKTOKEN_URL.format(name=name).encode()).hexdigest()
        (directory / key).write_bytes(data)


class Chat2api:
    """chat2api's app under uvicorn, one process, on 127.0.0.1; its output is discarded."""

    def __init__(self, checkout: Path, python: str, emulator_url: str, cache: Path):
        self.port = free_port()
        env = {**os.environ, "CHATGPT_BASE_URL": emulator_url, "TIKTOKEN_CACHE_DIR": str(cache)}
        env.pop("WEB_CONCURRENCY", None)  # uvicorn would read it as a worker count
        self.process = subprocess.Popen(
            [python, "-m", "uvicorn", "chat2api:app", "--host", "127.0.0.1",
             "--port", str(self.port)],
            cwd=checkout, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)

    def wait_until_serving(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chat2api exited with {self.process.returncode} (run it by "
                                   "hand with the same --python to see why)")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"chat2api did not accept connections within {timeout}s")

    def stop(self) -> None:
        stop_process(self.process, 10)


@dataclass
class Figures:
    """What one run cost a server, per answer where it says so."""

    ok: float
    ttft_p50: float
    ttft_p99: float
    cpu_ms: float  # CPU per answer
    rss_mb: float  # peak
    pss_mb: float  # peak
    switches: float  # context switches per answer

    @classmethod
    def of(cls, run: Measured, count: int) -> Figures:
        ok, p50, p99, _, _ = summary(run.outcomes)
        return cls(ok, p50, p99, run.cpu / count * 1000, run.peak.rss / 2**20,
                   run.peak.pss / 2**20, run.switches / count)

    def row(self) -> str:
        return (f"{self.ok:>6.1%}  {self.ttft_p50:>5.2f}/{self.ttft_p99:<5.2f}"
                f"  {self.cpu_ms:>6.1f}ms  {self.rss_mb:>4.0f}M {self.pss_mb:>4.0f}M"
                f"  {self.switches:>6.0f}")


HEADER = (f"{'server':>8} {'face':>6} {'N':>4} {'ok':>6}  {'TTFT p50/p99':>11}  {'CPU/ans':>8}"
          f"  {'RSS':>5} {'PSS':>5}  {'cs/ans':>6}")


def medians(runs: list[Figures]) -> Figures:
    return Figures(*(statistics.median(getattr(run, name) for run in runs)
                     for name in Figures.__dataclass_fields__))


def ratio_row(ours: Figures, theirs: Figures) -> str:
    """service / chat2api of the medians: below 1, the service spends (or waits) less."""
    def ratio(name: str) -> str:
        mine, peer = getattr(ours, name), getattr(theirs, name)
        return f"{mine / peer:.2f}" if peer else "-"
    return (f"TTFT p99 {ratio('ttft_p99')}, CPU/answer {ratio('cpu_ms')}, RSS {ratio('rss_mb')},"
            f" PSS {ratio('pss_mb')}, cs/answer {ratio('switches')}")


def request_of(face: str, token: str, prompt: str) -> tuple[bytes, str, dict]:
    """The same chat completion request for either server."""
    body = {"model": "gpt-4o", "stream": face == "stream",
            "messages": [{"role": "user", "content": prompt}]}
    return json.dumps(body).encode(), "application/json", {"Authorization": f"Bearer {token}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chat2api", type=Path, required=True, help="a checkout of chat2api")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python with chat2api's requirements installed")
    parser.add_argument("--levels", default="200,500", help="comma-separated N values")
    parser.add_argument("--faces", default=",".join(FACES), help=f"some of {', '.join(FACES)}")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each server per row")
    parser.add_argument("--words", type=int, default=60, help="words in the answer")
    parser.add_argument("--chunk-delay", type=float, default=0.25,
                        help="seconds between two events the emulator writes")
    parser.add_argument("--timeout", type=float, default=120, help="seconds allowed per answer")
    parser.add_argument("--max-n", type=int, default=1000, help="refuse levels above this")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    faces = [face for face in args.faces.split(",") if face]
    if any(not 0 < level <= args.max_n for level in levels):
        parser.error(f"every level must be between 1 and --max-n ({args.max_n})")
    if set(faces) - set(FACES) or not 1 <= args.rounds <= 10:
        parser.error(f"faces are {', '.join(FACES)}; --rounds is 1 to 10")
    if not (args.chat2api / "chat2api.py").is_file():
        parser.error(f"{args.chat2api} is not a checkout of chat2api (no chat2api.py)")

    prompt = " ".join(f"word{i}" for i in range(args.words - 1))  # answer: "Echo: " + prompt
    workdir = Path(tempfile.mkdtemp(prefix="chatgpt_web-peers-"))
    fill_tiktoken_cache(workdir / "tiktoken")
    emulator, emulator_url, token, _ = start_emulator(args.chunk_delay, "2024")
    service = ServerProcess.gunicorn(service_env(emulator_url, "2024", str(workdir),
                                                 args.timeout))
    peer = Chat2api(args.chat2api, args.python, emulator_url, workdir / "tiktoken")
    servers = {"service": (service.process.pid, urllib.parse.urlsplit(service.url).port),
               "chat2api": (peer.process.pid, peer.port)}
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; answer of "
          f"{args.words} words, one event every {args.chunk_delay}s; emulator --dialect 2024; "
          f"service: gunicorn.conf.py with WEB_CONCURRENCY="
          f"{os.environ.get('WEB_CONCURRENCY', '(default)')}; chat2api: one uvicorn process",
          flush=True)
    print(HEADER, flush=True)

    def settle():
        return wait_until_quiet(lambda: {
            "emulator": cpu_seconds([emulator.pid]),
            **{name: cpu_seconds(service_pids(root)) for name, (root, _) in servers.items()}})

    try:
        service.wait_until_serving(timeout=START_TIMEOUT)
        peer.wait_until_serving()
        for face in faces:
            request = request_of(face, token, prompt)
            for count in levels:
                figures: dict[str, list[Figures]] = {name: [] for name in servers}
                for round_ in range(args.rounds):
                    order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
                    for name in order:
                        root, port = servers[name]
                        quiet = settle()
                        run = measured(root, count, lambda: ask(  # noqa: B023
                            port, "/v1/chat/completions", *request,  # noqa: B023
                            whole=face == "whole"), args.timeout)  # noqa: B023
                        figures[name].append(Figures.of(run, count))
                        _, _, _, _, errors = summary(run.outcomes)
                        print(f"{name:>8} {face:>6} {count:>4} {figures[name][-1].row()}"
                              f"   (waited for quiet {quiet.describe()}; load"
                              f" {os.getloadavg()[0]:.1f})"
                              + (f" failures: {errors}" if errors else ""), flush=True)
                ours, theirs = medians(figures["service"]), medians(figures["chat2api"])
                print(f"{'median':>8} {face:>6} {count:>4} of {args.rounds} rounds: service /"
                      f" chat2api: {ratio_row(ours, theirs)}", flush=True)
    finally:
        peer.stop()
        service.stop()
        stop_process(emulator, 10)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
