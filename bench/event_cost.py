"""CPU per upstream event read by the service's stream reader, over plain HTTP, TLS with HTTP/1.1
and TLS with HTTP/2, side by side in one run.

    python bench/event_cost.py                     # 10 answers of 400 events per transport
    python bench/event_cost.py --answers 40 --rounds 3

One process reads whole answers one after the other with the service's own reader
(`transport.stream_post` on a session from `transport.new_session`, the emulator's CA as
CHATGPT_CA_FILE): no concurrency, no pump, no thread switches, so what differs between the rows
is what curl does to bring each event in. The emulator (`python -m tests.emulator`, 2024 dialect:
the 2-request write, each event repeating the text so far, about 1.6 KB on average) sends one
event per chunk, CHUNK_DELAY apart. Printed per transport: CPU ms per answer, chunks the reader got
per answer, CPU µs per chunk, and the ratio to plain HTTP (medians of the alternated rounds);
the first two answers of each run warm up and are not counted.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.concurrency import emulator_settings  # noqa: E402
from chatgpt_web.config import Config  # noqa: E402
from chatgpt_web.transport import new_session, stream_post  # noqa: E402
from chatgpt_web.upstream.conversation import (  # noqa: E402
    ChatMessage,
    ConversationRequest,
    build_body,
)
from tests.servers import stop_process  # noqa: E402

TRANSPORTS = {"plain": [], "tls-http1": ["--tls", "--http1"], "tls-http2": ["--tls"]}
WARM_UP = 2
# Seconds between two events: they arrive mostly one at a time, as the site's do (tens a second
# per answer), on every transport (the `chunks` column says how many reads it took). Sent at once,
# they coalesced differently on each transport (219 chunks per answer over plain HTTP, 43-57 over
# TLS), and the rows compared different reads.
CHUNK_DELAY = 0.002


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_emulator(flags: list[str], chunk_delay: float) -> tuple[subprocess.Popen,
                                                                  dict[str, str]]:
    """The emulator as a program, sending an event every `chunk_delay` seconds; (process, what
    it printed)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--easy", "--no-chunking", "--no-pings",
         "--words-per-delta", "1", "--chunk-delay", str(chunk_delay), "--dialect", "2024",
         *flags],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    return process, emulator_settings(process)


def measure(transport: str, answers: int, words: int,
            chunk_delay: float = CHUNK_DELAY) -> tuple[float, float]:
    """(CPU seconds per answer, chunks per answer) of reading `answers` answers of `words`
    words over `transport`."""
    emulator, printed = start_emulator(TRANSPORTS[transport], chunk_delay)
    try:
        base = printed["CHATGPT_BASE_URL"]
        environ = {"CHATGPT_BASE_URL": base}
        if printed.get("CHATGPT_CA_FILE"):
            environ["CHATGPT_CA_FILE"] = printed["CHATGPT_CA_FILE"]
        session = new_session(Config.from_env(environ))
        prompt = " ".join(f"word{i}" for i in range(words))
        body = build_body(ConversationRequest((ChatMessage("user", prompt),), "auto"),
                          history_disabled=False)
        auth = {"Authorization": f"Bearer {printed['ACCESS_TOKEN']}"}
        spent = chunks = 0.0
        for index in range(WARM_UP + answers):
            started = cpu_seconds()
            requirements = session.post(f"{base}/backend-api/sentinel/chat-requirements",
                                        json={}, headers=auth, timeout=30).json()["token"]
            got = 0
            with stream_post(session, f"{base}/backend-api/conversation", json=body,
                             headers={**auth, "Accept": "text/event-stream",
                                      "Openai-Sentinel-Chat-Requirements-Token": requirements},
                             timeout=60) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"{transport}: the emulator answered "
                                       f"{response.status_code}")
                for _ in response.iter_content():
                    got += 1
            if index >= WARM_UP:
                spent += cpu_seconds() - started
                chunks += got
        session.close()
        return spent / answers, chunks / answers
    finally:
        stop_process(emulator, 10)  # SIGTERM: the emulator removes its certificate folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=10, help="answers per measurement")
    parser.add_argument("--words", type=int, default=400, help="events per answer")
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds (median)")
    args = parser.parse_args()
    if not (1 <= args.answers <= 500 and 1 <= args.words <= 2000 and 1 <= args.rounds <= 10):
        parser.error("--answers 1-500, --words 1-2000, --rounds 1-10")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in TRANSPORTS}
    for _ in range(args.rounds):
        for name in TRANSPORTS:
            results[name].append(measure(name, args.answers, args.words))
    print(f"{args.answers} answers of {args.words} events per run, {args.rounds} round(s), "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'transport':>10} {'ms/answer':>10} {'chunks':>7} {'µs/chunk':>9} {'x plain':>8}")
    per_chunk = {}
    for name, runs in results.items():
        per_chunk[name] = statistics.median(cpu / chunks for cpu, chunks in runs) * 1e6
    for name, runs in results.items():
        print(f"{name:>10} {statistics.median(cpu for cpu, _ in runs) * 1000:10.2f} "
              f"{statistics.median(chunks for _, chunks in runs):7.0f} {per_chunk[name]:9.1f} "
              f"{per_chunk[name] / per_chunk['plain']:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
