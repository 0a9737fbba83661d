"""What one open upstream connection costs the service: memory and CPU, over plain HTTP, TLS with
HTTP/1.1 and TLS with HTTP/2, measured side by side in one run.

    python bench/connections.py                 # 250 connections per transport
    python bench/connections.py --n 500 --rounds 2

An open streamed answer holds one curl handle and its connection to the site for as long as the
answer streams (chatgpt_web/curl_transfer.py), so at N open answers a worker holds N connections.
This measures what each costs, with the service's own code: for each transport a fresh process
makes a session as the service does (`transport.new_session`, the configured impersonation, the
emulator's CA as CHATGPT_CA_FILE) and starts N requests at once, each on a `curl_transfer.Transfer`
of its own, against the repository's emulator (`python -m tests.emulator`, `--tls`, `--tls
--http1`), which holds every answer back (`--request-delay`), so all N connections are open and
idle when the process measures its resident memory. Printed per transport: the connections curl
made, resident KB per open request (the process's RSS with the N open, minus before), CPU ms per
request to open it (TCP, TLS handshake, the request), and both as a ratio to plain HTTP; the
`h2-shared` row multiplexes the requests on a few connections instead (below).

The site speaks TLS and HTTP/2, the emulator of bench/concurrency.py plain HTTP unless --http2:
this is the per-connection part of the difference between the two (README "Over TLS").
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.concurrency import emulator_settings  # noqa: E402
from tests.servers import stop_process  # noqa: E402

TRANSPORTS = {"plain": [], "tls-http1": ["--tls", "--http1"], "tls-http2": ["--tls"],
              "h2-shared": ["--tls"]}
# "h2-shared": the requests in groups of STREAMS_PER_CONNECTION, each group in one multi handle and
# started once its first request's connection is up, so curl multiplexes the group on it: what
# answers would cost if they shared connections as a browser's tabs do. The service does not do
# this (README "Over TLS"). Not more per group: the emulator (hypercorn) allows 100 concurrent
# streams on a connection, and curl queues a multi handle's requests beyond that for a free
# stream rather than opening another connection.
STREAMS_PER_CONNECTION = 100
HOLD_SECONDS = 8.0  # how long the emulator holds each answer back: longer than the opening
OPEN_SECONDS = 6.0  # the most the N connections may take to open


def start_emulator(flags: list[str], hold: float) -> tuple[subprocess.Popen, str, str | None]:
    """The emulator as a program that holds every answer back `hold` seconds; (process, base
    URL, CA file or None)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--easy", "--request-delay", str(hold),
         *flags], cwd=REPO, stdout=subprocess.PIPE, text=True)
    found = emulator_settings(process)
    return process, found["CHATGPT_BASE_URL"], found.get("CHATGPT_CA_FILE")


def resident_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def open_connections(base_url: str, ca_file: str | None, n: int, shared: bool,
                     hold: float) -> dict:
    """(In the child process.) Start n requests at once and measure once all are sent."""
    from chatgpt_web.config import Config
    from chatgpt_web.curl_transfer import Transfer
    from chatgpt_web.transport import new_session

    environ = {"CHATGPT_BASE_URL": base_url}
    if ca_file:
        environ["CHATGPT_CA_FILE"] = ca_file
    session = new_session(Config.from_env(environ))
    transfers = [Transfer() for _ in range(n)]
    before_kb, before_cpu = resident_kb(), cpu_seconds()
    for index, transfer in enumerate(transfers):
        host = transfers[index - index % STREAMS_PER_CONNECTION] if shared else transfer
        transfer.start(session, "GET", base_url + "/", json=None, headers={},
                       timeout=hold + 10, sink=lambda chunk: None,
                       beside=host if transfer is not host else None)
        while shared and transfer is host and not _request_sent(host):
            host.step()  # its connection is up: curl then multiplexes the others on it
            time.sleep(0.001)
    deadline = time.monotonic() + OPEN_SECONDS
    sent = 0
    while time.monotonic() < deadline:
        for transfer in transfers:
            transfer.step()
        sent = sum(_request_sent(transfer) for transfer in transfers)
        if sent == n:
            break
        time.sleep(0.005)
    opened_cpu = cpu_seconds() - before_cpu
    time.sleep(0.5)  # let curl's buffers settle; no answer comes before HOLD_SECONDS
    opened_kb = resident_kb() - before_kb
    # Then the answers: which HTTP version each connection spoke is known once one came.
    while any(transfer._running() for transfer in transfers) and \
            time.monotonic() < deadline + hold + 5:
        for transfer in transfers:
            transfer.step()
        time.sleep(0.01)
    versions = {_http_version(transfer) for transfer in transfers}
    return {"kb": opened_kb, "cpu": opened_cpu, "sent": sent, "versions": sorted(versions),
            "connections": sum(_connections_made(transfer) for transfer in transfers)}


def _request_sent(transfer) -> bool:
    from curl_cffi import CurlInfo
    return transfer.curl.getinfo(CurlInfo.REQUEST_SIZE) > 0


def _connections_made(transfer) -> int:
    from curl_cffi import CurlInfo
    return transfer.curl.getinfo(CurlInfo.NUM_CONNECTS)


def _http_version(transfer) -> str:
    from curl_cffi import CurlInfo
    return {2: "1.1", 3: "2"}.get(transfer.curl.getinfo(CurlInfo.HTTP_VERSION), "none")


def measure(transport: str, n: int, hold: float = HOLD_SECONDS) -> dict:
    """Open n requests over `transport` in a fresh process; what it measured: kb, cpu (of all
    n), sent (requests that went out), versions (HTTP spoken), connections (curl made)."""
    emulator, base_url, ca_file = start_emulator(TRANSPORTS[transport], hold)
    try:
        child = subprocess.run(
            [sys.executable, __file__, "--child", base_url, ca_file or "", str(n),
             str(transport == "h2-shared"), str(hold)],
            cwd=REPO, capture_output=True, text=True, timeout=OPEN_SECONDS + hold + 30)
        if child.returncode != 0:
            raise RuntimeError(f"{transport}: the measuring process failed:\n{child.stderr}")
        return json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        stop_process(emulator, 10)  # SIGTERM: the emulator removes its certificate folder


def main() -> int:
    if len(sys.argv) == 7 and sys.argv[1] == "--child":
        _, _, base_url, ca_file, n, shared, hold = sys.argv
        print(json.dumps(open_connections(base_url, ca_file or None, int(n), shared == "True",
                                          float(hold))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=250, help="connections per measurement")
    parser.add_argument("--rounds", type=int, default=1, help="alternated rounds (median)")
    args = parser.parse_args()
    if not 1 <= args.n <= 1000:
        parser.error("--n must be 1 to 1000")
    results: dict[str, list[dict]] = {name: [] for name in TRANSPORTS}
    for _ in range(args.rounds):
        for name in TRANSPORTS:
            outcome = measure(name, args.n)
            if outcome["sent"] != args.n:
                print(f"{name}: only {outcome['sent']} of {args.n} requests went out in "
                      f"{OPEN_SECONDS:g} s", file=sys.stderr)
                return 1
            results[name].append(outcome)
    print(f"{args.n} requests open at once, {args.rounds} round(s), "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'transport':>10} {'HTTP':>5} {'conns':>6} {'KB/req':>7} {'x plain':>8} "
          f"{'CPU ms/req':>11} {'x plain':>8}")
    plain_kb = statistics.median(r["kb"] for r in results["plain"]) / args.n
    plain_ms = statistics.median(r["cpu"] for r in results["plain"]) * 1000 / args.n
    for name, outcomes in results.items():
        kb = statistics.median(r["kb"] for r in outcomes) / args.n
        ms = statistics.median(r["cpu"] for r in outcomes) * 1000 / args.n
        spoken = ",".join(sorted({v for r in outcomes for v in r["versions"]}))
        connections = statistics.median(r["connections"] for r in outcomes)
        print(f"{name:>10} {spoken:>5} {connections:6.0f} {kb:7.1f} {kb / plain_kb:8.2f} "
              f"{ms:11.3f} {ms / plain_ms:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
