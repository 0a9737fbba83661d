"""What the relay adds to a streamed answer: time to first byte and CPU, relay vs direct, one run.

    python bench/relay.py                         # N = 1 (sequential, repeated) and N = 200
    python bench/relay.py --levels 1,50 --words 40 --chunk-delay 0.02

It starts the fake OpenAI API (`python -m tests.fake_openai`, its own process) pacing its SSE
events --chunk-delay apart, and the service exactly as deployed (`gunicorn -c gunicorn.conf.py
wsgi:app`) with an UPSTREAMS_FILE pointing at the fake, both on 127.0.0.1. For each N, streamed
/v1/chat/completions requests go to the fake directly, through the bare passthrough (below) and
through the service, interleaved in --rounds rounds: in each, every path in turn gets a block of
--repeat/--rounds answers one after the other at N=1, or one burst of N simultaneous requests
at N>1; each round takes the paths in a rotated order, so that a change in the machine's load
falls on every path alike. It prints:

* time to first byte (the first byte of the answer body) p50 / p99 (at N>1 the median over the
  bursts of each burst's p50 / p99), the difference to direct at N=1, and the ratio to direct:
  at N>1 the median of the rounds' ratios, each round's ratio printed beside it;
* CPU milliseconds per streamed answer: the relaying server's processes (gunicorn master and
  workers: the service, or the bare passthrough), the fake's process in each run (the work of
  producing the answer) and this client's;
* the share of answers that completed (status 200 and `data: [DONE]`);
* the p50 of the service's `x-chatgpt-web-overhead-ms` (its own time before the answer starts,
  time waiting on the upstream excluded);
* per N, the load average and the connections the kernel dropped because a listen queue was
  full (machine-wide, so other work counts too; it should stay 0).

What the ratio at N>1 means: a burst of N requests arrives at once, and its p50 time to first
byte is about the time the machine needs to start half of the N answers while it streams the
answers already started. Directly, that is the fake's own work per answer; through a relay, it
is the fake's work plus the relay's, on the same two cores (unless --pin), so the ratio is close
to (fake CPU + relay CPU) / fake CPU per answer whenever the burst saturates the CPUs, which on
this machine N=200 does. A relay with a ratio under 1.1 must spend under a tenth of the
upstream's CPU on each answer, or run on cores of its own. The bare row says what that costs
for any Python relay on this server stack.

Fair to both sides: the same client, requests and connection pattern (one new connection per
request, all of a burst opened at once) on every path; the fake listens with a backlog of 1024
(werkzeug's 128 overflowed under 200 simultaneous connects, and each refused connect waited out
the client's one-second retry: the direct burst's p50 then swung from 0.5 to 2 times the
relayed one's from run to run); the client reads bodies in bulk on one event loop, so its own
CPU is small and the same for every path; each burst is followed by a half-second pause. The
fake keeps connections open between requests, as the real API does; the bench client does not
(one per request), the relays do (their upstream connections are lent from request to request,
chatgpt_web/relay/wire.py), which also spares the fake the accept and thread of a new connection
on relayed requests: the fake CPU column shows it per path.

`--keys off` runs the service without client keys: no admission or usage ledger in the store,
which shows what the ledger's per-key lock costs.

`--bare on` (the default) also measures a bare WSGI passthrough (bench/passthrough.py) under the
same gunicorn settings: the fake's answer relayed by curl and passed back, nothing else. Its row
is the floor of any relay on this stack (an extra HTTP hop on the same 2 cores); the relay's row
minus the bare row is what the service's own code adds.

`--pin` places the processes on the machine's two CPUs (os.sched_setaffinity on every thread of
each process, in every run): the fake on the first CPU alone; the service, the bare passthrough
and this client on the second. The fake then has the same single core in the direct and the
relayed runs, as an upstream on its own machine would. The client goes with the relay rather than
floating, so that it never takes the fake's core: what it costs is charged to the relay's side
(in the direct run it has the second CPU to itself). Without `--pin` (the default) every process
shares both CPUs, the same machine serving the upstream, the relay and the client. The first line
of the output says which placement ran. Other developers' processes are not pinned: the load
average is printed beside the numbers.

Targets (issue 16): under 2 ms added at N=1, TTFB ratio under 1.1 at N=200. The client is asyncio
over raw sockets, so it costs little CPU next to what it measures (its column says how little).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.servers import ServerProcess, free_port, http_request  # noqa: E402

CLIENT_KEY = "bench-client-key"
UPSTREAM_KEY = "sk-fake-good-bench"
DONE = b"data: [DONE]"
# One event loop for the whole run: a new loop per answer cost the client ~5 ms of CPU each.
LOOP = asyncio.Runner()


def request_bytes(port: int, words: int, key: str) -> bytes:
    body = json.dumps({"model": "gpt-4o", "stream": True, "messages": [
        {"role": "user", "content": " ".join(f"w{i}" for i in range(words))}]}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


async def one(port: int, request: bytes) -> tuple[bool, float | None, str, float | None]:
    """(completed, seconds to the first body byte, what went wrong, the service's own
    x-chatgpt-web-overhead-ms or None) of one streamed answer.

    After the head, the body is read in bulk, not chunk by chunk: the client's CPU per answer is
    then small and the same whichever server answers (Connection: close, so the end is EOF).
    """
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        overhead = None
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"x-chatgpt-web-overhead-ms":
                overhead = float(value)
        first, tail = None, b""
        while data := await reader.read(65536):
            if first is None:
                first = time.perf_counter() - started
            tail = (tail + data)[-64:]
        # Chunked: the last event, then the zero-size chunk that ends the body.
        ok = status == 200 and DONE in tail and tail.endswith(b"0\r\n\r\n")
        return (ok, first, "" if ok else f"HTTP {status}" if status != 200 else "no [DONE]",
                overhead)
    finally:
        writer.close()


async def burst(port: int, request: bytes, count: int, timeout: float):
    async def bounded():
        try:
            return await asyncio.wait_for(one(port, request), timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            return False, None, type(exc).__name__, None
    return await asyncio.gather(*(bounded() for _ in range(count)))


def cpu_seconds(pids) -> float:
    """User + system CPU seconds of the processes `pids` (and their reaped children)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def pin(pids, cpu: int) -> None:
    """Put every thread of the processes `pids` on `cpu` (threads they start later inherit it)."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("[0-9]*"):
            try:
                os.sched_setaffinity(int(task.name), {cpu})
            except (ProcessLookupError, PermissionError):
                pass  # a thread that ended meanwhile


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def listen_overflows() -> int | None:
    """The kernel's count of connections dropped because a listen queue was full (machine-wide:
    other work on the machine counts too), from /proc/net/netstat."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(table["ListenOverflows"]) if "ListenOverflows" in table else None
    return None


class PathRun:
    """What one path (direct, bare or relay) gave at one level, over all its answers and rounds.

    `pids()` and `fake_pids()` list the processes whose CPU counts, read again before and after
    every burst: gunicorn replaces a worker that stays too large after a burst
    (buffered_worker.py, WORKER_RECYCLE_MB), and a worker forked after the run began must count
    too (one that ended is counted in its master's reaped-children time).
    """

    def __init__(self, pids, fake_pids):
        self.pids, self.fake_pids = pids, fake_pids
        self.outcomes: list = []
        self.round_p50: list[float] = []  # one per burst (N > 1)
        self.round_p99: list[float] = []
        self.server_cpu = self.fake_cpu = self.client_cpu = 0.0

    def run(self, port: int, request: bytes, count: int) -> list:
        server, fake, client = (cpu_seconds(self.pids()), cpu_seconds(self.fake_pids()),
                                time.process_time())
        outcomes = LOOP.run(burst(port, request, count, 60 if count == 1 else 120))
        # This process's time first: listing the servers' processes reads /proc (a few ms).
        self.client_cpu += time.process_time() - client
        self.server_cpu += cpu_seconds(self.pids()) - server
        self.fake_cpu += cpu_seconds(self.fake_pids()) - fake
        self.outcomes += outcomes
        firsts = [first for ok, first, _, _ in outcomes if ok and first is not None]
        if count > 1 and firsts:
            self.round_p50.append(statistics.median(firsts))
            self.round_p99.append(percentile(firsts, 0.99))
        return outcomes

    def result(self) -> dict:
        outcomes = self.outcomes
        firsts = [first for ok, first, _, _ in outcomes if ok and first is not None]
        overheads = [overhead for ok, _, _, overhead in outcomes if ok and overhead is not None]
        errors = Counter(error for ok, _, error, _ in outcomes if not ok)
        answers = max(1, len(outcomes))
        if self.round_p50:  # bursts: the median burst, not one pooled over bursts
            p50, p99 = statistics.median(self.round_p50), statistics.median(self.round_p99)
        else:
            p50 = statistics.median(firsts) if firsts else float("nan")
            p99 = percentile(firsts, 0.99) if firsts else float("nan")
        return {"done": sum(ok for ok, _, _, _ in outcomes) / answers,
                "overhead": statistics.median(overheads) if overheads else None,
                "errors": ", ".join(f"{count}x {error}" for error, count in errors.most_common()),
                "p50": p50, "p99": p99,
                "cpu_ms": 1000 * self.server_cpu / answers,
                "fake_cpu": 1000 * self.fake_cpu / answers,
                "client_cpu": 1000 * self.client_cpu / answers}


def measure(paths, level: int, repeat: int, rounds: int, fake_pids) -> tuple[dict, list]:
    """Run every path at `level`, interleaved: (path -> result, per-round ratios to direct).

    `rounds` rounds; in each, every path in turn runs a burst of N (N>1), or at N=1 a block of
    `repeat / rounds` answers one after the other: a block, because the relaying servers' idle
    threads end after two seconds (chatgpt_web/buffered_worker.py) and with them their kept
    upstream connection, so answers spread one per path would each start cold, which a client
    asking one question after another does not see. Each round runs the paths in a rotated
    order, so that a change in the machine's load during the run falls on every path alike
    rather than on whichever always ran last.
    """
    runs = {path: PathRun(pids, fake_pids) for path, _, _, pids in paths}
    ratios = []
    block = max(1, -(-repeat // rounds)) if level == 1 else 1
    for round_index in range(rounds):
        shift = round_index % len(paths)
        for path, port, request, _ in paths[shift:] + paths[:shift]:
            for _ in range(block):
                runs[path].run(port, request, level)
            if level > 1:
                time.sleep(0.5)  # the last burst's sockets and threads wound down first
        if level > 1 and all(run.round_p50 and len(run.round_p50) == round_index + 1
                             for run in runs.values()):
            direct = runs["direct"].round_p50[-1]
            ratios.append({path: run.round_p50[-1] / direct for path, run in runs.items()})
    return {path: run.result() for path, run in runs.items()}, ratios


def wait_for(url: str, path: str, headers: dict, server: ServerProcess) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(server.output())
        try:
            if http_request(url, path=path, headers=headers, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(server.output())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,200")
    parser.add_argument("--words", type=int, default=30)
    parser.add_argument("--chunk-delay", type=float, default=0.02)
    parser.add_argument("--repeat", type=int, default=30,
                        help="answers per path at N=1, one after the other in --rounds blocks")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds: bursts per path at N > 1 (the median burst is reported)")
    parser.add_argument("--keys", choices=("on", "off"), default="on",
                        help="client keys (and so the usage ledger) on or off")
    parser.add_argument("--bare", choices=("on", "off"), default="on",
                        help="also measure the bare passthrough (bench/passthrough.py)")
    parser.add_argument("--pin", action="store_true",
                        help="fake on one CPU, relay and client on the other (see above)")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) < 2:
        parser.error(f"--pin needs two CPUs; this process may use {cpus}")

    fake_port = free_port()
    fake = ServerProcess([sys.executable, "-m", "tests.fake_openai", "--port", str(fake_port),
                          "--chunk-delay", str(args.chunk_delay)], {}, fake_port)
    workdir = tempfile.mkdtemp(prefix="relay-bench-")
    plan = Path(workdir, "upstreams.json")
    plan.write_text(json.dumps({"upstreams": [{
        "name": "fake", "base_url": f"http://127.0.0.1:{fake_port}/v1",
        "keys": [{"id": "bench", "key": "env:BENCH_UPSTREAM_KEY"}], "models": ["gpt-4o"]}],
        "models": {"gpt-4o": {"routes": [{"to": "fake"}]}}}))
    service = ServerProcess.gunicorn({
        "UPSTREAMS_FILE": str(plan), "BENCH_UPSTREAM_KEY": UPSTREAM_KEY,
        **({"API_KEYS": CLIENT_KEY} if args.keys == "on" else {}),
        "RATE_LIMIT": "off", "RATE_LIMIT_IP": "off",
        "CACHE_DIR": str(Path(workdir, "cache")), "LOG_LEVEL": "warning",
        "RELAY_MODEL_DISCOVERY": "0",
        # Every bench client comes from 127.0.0.1: no per-address connection cap.
        "MAX_CONNECTIONS_PER_IP": "0"})
    bare = None
    if args.bare == "on":
        port = free_port()
        bare = ServerProcess([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                              "bench.passthrough:app"], {
            "GUNICORN_BIND": f"127.0.0.1:{port}", "LOG_LEVEL": "warning",
            "MAX_CONNECTIONS_PER_IP": "0", "CACHE_DIR": str(Path(workdir, "bare-cache")),
            "BENCH_UPSTREAM_URL": f"http://127.0.0.1:{fake_port}/v1"}, port)
    try:
        wait_for(fake.url, "/v1/models", {"Authorization": f"Bearer {UPSTREAM_KEY}"}, fake)
        service.wait_until_serving(30)
        service_port = int(service.url.rsplit(":", 1)[1])
        direct_request = request_bytes(fake_port, args.words, UPSTREAM_KEY)
        relay_request = request_bytes(service_port, args.words, CLIENT_KEY)
        def fake_pids():
            return [fake.process.pid]

        def service_pids():
            return [service.process.pid, *service.worker_pids()]

        paths = [("direct", fake_port, direct_request, fake_pids),
                 ("relay", service_port, relay_request, service_pids)]
        if bare is not None:
            wait_for(bare.url, "/v1/models", {"Authorization": f"Bearer {UPSTREAM_KEY}"}, bare)
            bare_port = int(bare.url.rsplit(":", 1)[1])
            paths.insert(1, ("bare", bare_port, request_bytes(bare_port, args.words, UPSTREAM_KEY),
                             lambda: [bare.process.pid, *bare.worker_pids()]))

        def relay_pids():
            return [pid for path, _, _, pids in paths if path != "direct" for pid in pids()]

        def place() -> str:
            if not args.pin:
                return f"shared: every process on CPUs {','.join(map(str, cpus))}"
            pin(fake_pids(), cpus[0])
            pin([*relay_pids(), os.getpid()], cpus[1])
            return (f"pinned: the fake on CPU {cpus[0]}; the service, the bare passthrough and "
                    f"this client on CPU {cpus[1]}")

        place()
        # Warm-up: connections, imports and first-request work out of the way on every path.
        for _, port, request, _ in paths:
            LOOP.run(burst(port, request, 4, 60))
        print(f"CPU placement: {place()}")  # again: threads the warm-up started
        print(f"{args.words + 3} events per answer, {args.chunk_delay * 1000:.0f} ms apart; "
              f"TTFB = first byte of the answer body; CPU = ms per answer; client keys "
              f"{args.keys}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        print(f"{'N':>5} {'path':>7} {'done':>6} {'TTFB p50':>10} {'TTFB p99':>10} "
              f"{'server CPU':>12} {'fake CPU':>9} {'client CPU':>10}")
        for level in (int(value) for value in args.levels.split(",")):
            overflows = listen_overflows()
            results, ratios = measure(paths, level, args.repeat, args.rounds, fake_pids)
            if overflows is not None:
                overflows = listen_overflows() - overflows
            direct = results["direct"]
            for path, result in results.items():
                server_cpu = "-" if path == "direct" else f"{result['cpu_ms']:.2f}ms"
                print(f"{level:>5} {path:>7} {result['done']:>6.0%} "
                      f"{result['p50'] * 1000:>8.2f}ms {result['p99'] * 1000:>8.2f}ms "
                      f"{server_cpu:>12} {result['fake_cpu']:>7.2f}ms "
                      f"{result['client_cpu']:>8.2f}ms")
            for path in [p for p in results if p != "direct"]:
                relayed = results[path]
                added = (relayed["p50"] - direct["p50"]) * 1000
                if ratios:  # the median of each round's ratio, and the rounds themselves
                    ratio = statistics.median(round_ratios[path] for round_ratios in ratios)
                    each = ", ".join(f"{round_ratios[path]:.2f}" for round_ratios in ratios)
                    ratio_text = f"ratio p50 {ratio:.2f} (rounds: {each})"
                else:
                    ratio_text = f"ratio p50 {relayed['p50'] / direct['p50']:.2f}"
                own = ("" if path != "relay" else "; the service's own time before the answer "
                       f"(x-chatgpt-web-overhead-ms) p50 {relayed['overhead'] or 0:.2f} ms")
                print(f"{level:>5} {path:>7} added TTFB p50 {added:+.2f} ms, {ratio_text}, "
                      f"p99 {relayed['p99'] / direct['p99']:.2f}{own}")
            for path, result in results.items():
                if result["errors"]:
                    print(f"{level:>5} {path:>7} failures: {result['errors']}")
            print(f"{level:>5} load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
                  f"connections dropped by a full listen queue (machine-wide): "
                  f"{'?' if overflows is None else overflows}")
    finally:
        log = service.stop()
        if bare is not None:
            bare.stop()
        fake.stop()
        LOOP.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if os.environ.get("BENCH_SHOW_LOG"):
            print(log[-4000:])


if __name__ == "__main__":
    main()
