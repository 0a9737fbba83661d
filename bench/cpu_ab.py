"""CPU per streamed answer of this checkout against another git revision, alternating, in one run.

    python bench/cpu_ab.py                          # this tree vs main, N=200, 3 rounds
    python bench/cpu_ab.py --base HEAD~1 --n 500 --rounds 2 --words 60
    python bench/cpu_ab.py --sequential --n 200 --rounds 4   # one process, answers one by one
    python bench/cpu_ab.py --face usage --n 500     # /v1/chat/completions with include_usage
    python bench/cpu_ab.py --face whole --dialect 2024 --n 500   # not streamed, the 2024 flow

The machine may be shared, so wall-clock figures swing with other work; CPU time per answer
(user + system of every service process, from /proc) is what this compares. Each round starts
the production server (`gunicorn -c gunicorn.conf.py wsgi:app`, bench/concurrency.py's settings)
from the base revision (exported with `git archive` into a temporary directory) and from this
working tree, in turn, against one emulator, warms it with 10 answers, then opens N streamed
/send_message requests at once (`--face usage`: /v1/chat/completions streamed with
`stream_options.include_usage`; the 10 warm-up answers load the usage counter, so a run measures
the counting per answer, not the load; `--face whole`: /send_message not streamed). Printed per
run: user and system ms per answer, the slowest first token (whole: the slowest answer) minus the
direct p99 (`late`), the load average; at the end the median of each side and the ratio
this/base. Both sides and the emulator speak `--dialect` (default 2026, the site's current one).
The direct p99 is bench/concurrency.py's reference, measured before each run: N clients asking
the emulator at once with the requests the service makes in its dialect (2026:
`direct_2026_flow`, four requests per answer; 2024: two). Loopback only; N at most 1000; every
request within --timeout.

`--sequential` measures instead the CPU of N answers made one after the other by one thread of
one process (Flask's test client, the emulator sending each answer at once): the service's own
work per answer, without the waits, GIL hand-overs and thread switches of concurrent streams,
so it is much less sensitive to what else runs on the machine.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.concurrency import (  # noqa: E402
    _TICK,
    _read,
    at_once,
    conversation_body,
    requests_of,
    same_flow_direct,
    service_env,
    service_pids,
    start_emulator,
    summary,
    through_service,
)
from tests.servers import ServerProcess, free_port, stop_process  # noqa: E402


def user_system(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of `pids`, their threads and reaped children."""
    user = system = 0
    for pid in pids:
        fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()
        if len(fields) > 14:
            user += int(fields[11]) + int(fields[13])
            system += int(fields[12]) + int(fields[14])
    return user / _TICK, system / _TICK


def export(revision: str, into: str) -> Path:
    tree = Path(into) / "base"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", revision], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def one_run(tree: Path, env: dict, count: int, token: str, prompt: str, direct_p99: float,
            timeout: float, face: str = "stream") -> tuple[float, float, float, float]:
    """(user ms, system ms per answer, late s, share ok) of N streams served from `tree`."""
    port = free_port()
    service = ServerProcess([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                             "wsgi:app"], {**env, "GUNICORN_BIND": f"127.0.0.1:{port}"}, port,
                            cwd=tree)
    try:
        service.wait_until_serving(timeout=30)
        request = requests_of(face, token, prompt)
        asyncio.run(at_once(10, lambda: through_service(port, face, *request), timeout))
        pids = service_pids(service.process.pid)
        user0, system0 = user_system(pids)
        runs = asyncio.run(at_once(count, lambda: through_service(port, face, *request),
                                   timeout))
        user1, system1 = user_system(service_pids(service.process.pid))
    finally:
        service.stop()
    ok, _, _, slowest, _ = summary(runs)
    return ((user1 - user0) / count * 1000, (system1 - system0) / count * 1000,
            slowest - direct_p99, ok)


# One process, one thread, answers one after the other (the emulator sends each answer at once):
# the service's own work per answer without waits, GIL hand-overs or thread switches.
_SEQUENTIAL = """
import os, sys, time
sys.path.insert(0, os.getcwd())
from chatgpt_web import create_app
client = create_app().test_client()
form = {"access_token": sys.argv[1], "prompt": sys.argv[2], "stream": "true"}
def answer():
    response = client.post("/send_message", data=form, buffered=False)
    for _ in response.response:
        pass
    response.close()
for _ in range(10):
    answer()
started = time.process_time()
for _ in range(int(sys.argv[3])):
    answer()
print((time.process_time() - started) / int(sys.argv[3]) * 1000)
"""


def sequential_run(tree: Path, env: dict, count: int, token: str, prompt: str) -> float:
    """CPU ms per answer of `count` answers made one by one in one process from `tree`."""
    os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    done = subprocess.run([sys.executable, "-c", _SEQUENTIAL, token, prompt, str(count)],
                          cwd=tree, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=600, check=True)
    return float(done.stdout.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="main", help="git revision to compare against")
    parser.add_argument("--n", type=int, default=200, help="simultaneous streams")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--words", type=int, default=60, help="words in the answer")
    parser.add_argument("--chunk-delay", type=float, default=0.25)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--face", choices=("stream", "usage", "whole"), default="stream",
                        help="stream: POST /send_message streamed; usage: POST "
                             "/v1/chat/completions streamed with include_usage; whole: "
                             "/send_message not streamed (usage and whole: concurrent only)")
    parser.add_argument("--dialect", choices=("2026", "2024"), default="2026",
                        help="CHATGPT_PROTOCOL of the service and the emulator")
    parser.add_argument("--sequential", action="store_true",
                        help="instead: N answers one by one in one process (no concurrency), "
                             "against an emulator that sends each answer at once")
    args = parser.parse_args()
    if not 0 < args.n <= 1000:
        parser.error("--n must be between 1 and 1000")
    if args.sequential and args.face != "stream":
        parser.error("--sequential measures the stream face only")
    prompt = " ".join(f"word{i}" for i in range(args.words - 1))
    emulator, emulator_url, token, _ = start_emulator(
        0.0 if args.sequential else args.chunk_delay, args.dialect)
    workdir = tempfile.mkdtemp(prefix="chatgpt_web-cpu-ab-")
    trees = {"base": export(args.base, workdir), "this": REPO}
    emulator_port = urllib.parse.urlsplit(emulator_url).port
    # The reference `late` is judged against: direct clients making the dialect's own requests.
    reference = same_flow_direct(args.dialect)
    conversation = conversation_body(args.dialect, prompt)
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; base={args.base} "
          f"this={REPO}; N={args.n}, {args.words} words, CHATGPT_PROTOCOL={args.dialect}, "
          f"face {args.face}", flush=True)
    print(f"{'round':>5} {'side':>4}  {'user':>7} {'sys':>6} {'total':>7}  {'late':>6}  "
          f"{'ok':>6}  {'load':>4}", flush=True)
    totals: dict[str, list[float]] = {"base": [], "this": []}
    try:
        for round_ in range(args.rounds):
            order = ("base", "this") if round_ % 2 == 0 else ("this", "base")
            for side in order:
                env = service_env(emulator_url, args.dialect,
                                  os.path.join(workdir, f"{side}{round_}"), args.timeout)
                if args.sequential:
                    total = sequential_run(trees[side], env, args.n, token, prompt)
                    totals[side].append(total)
                    print(f"{round_:>5} {side:>4}  {'':>7} {'':>6} {total:>5.2f}ms  "
                          f"{'':>6}  {'':>6}  {os.getloadavg()[0]:>4.1f}", flush=True)
                    continue
                directs = asyncio.run(at_once(
                    args.n, lambda: reference(emulator_port, token, conversation,
                                      args.face == "whole"),
                    args.timeout))
                direct_p99 = summary(directs)[2]
                user, system, late, ok = one_run(trees[side], env, args.n, token, prompt,
                                                 direct_p99, args.timeout, args.face)
                totals[side].append(user + system)
                print(f"{round_:>5} {side:>4}  {user:>5.1f}ms {system:>4.1f}ms "
                      f"{user + system:>5.1f}ms  {late:>+5.2f}s  {ok:>6.1%}  "
                      f"{os.getloadavg()[0]:>4.1f}", flush=True)
    finally:
        stop_process(emulator, 10)
        shutil.rmtree(workdir, ignore_errors=True)  # the exported tree and each run's store
    base, this = statistics.median(totals["base"]), statistics.median(totals["this"])
    print(f"median CPU per answer: base {base:.1f} ms, this {this:.1f} ms, "
          f"this/base {this / base:.2f}; load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
