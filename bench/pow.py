"""How fast the proof-of-work search is, and whether a hard search stalls other requests.

    python bench/pow.py

1. Per-nonce cost, in one process, alternating rounds: the solver's search over nonces
   200000..239999 (i and i >> 1 both 6 digits, so every message has one length) against raw
   `hashlib.sha3_512(seed + msg).digest()` on a message of that same length. Medians of both and
   `ratio solver/raw` = raw time / solver time per nonce: >= 0.95 means the solver runs at least at
   95 % of the raw hash speed (above 1.0 it is faster, thanks to the copied hasher state).
2. The expected solve time at difficulty "000032" (expected attempts x measured per-nonce time),
   and the cost of the pool: first use (start) and a round trip with a one-nonce task.
3. The 2026 hash (FNV-1a-32 + fmix32 over the 25-item config): per-nonce cost of the solver's
   numpy batches against the plain one-character-at-a-time hash, and the expected solve time at a
   difficulty seen in 2026 ("06e1cc") and at a hard one ("000032"), for both hashes.
4. Latency of a trivial concurrent task (1 ms sleep + a little Python) measured in the main thread
   (a) alone, (b) while another thread runs a hard search inline (it holds the GIL), (c) while
   another thread runs the same search through ProofOfWorkSolver's process pool. p50/p99 and the
   ratios to (a).
"""
from __future__ import annotations

import hashlib
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chatgpt_web.errors import Forbidden  # noqa: E402
from chatgpt_web.upstream import pow as pow_  # noqa: E402
from chatgpt_web.upstream.browser import Chrome, sentinel_config  # noqa: E402

UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/136.0.0.0 Safari/537.36")
SEED = "0.81186133b2821174"
NEVER = "0" * 128          # only an all-zero digest clears it: the search runs its whole range
START, NONCES, ROUNDS = 200_000, 40_000, 9
HARD = "00000001"          # about 2 in 4e9 per nonce: not solved within HARD_ITERATIONS
HARD_ITERATIONS = 600_000


def per_nonce(config: list) -> tuple[float, float, int]:
    """Median seconds per nonce of the solver and of raw hashlib, and the message length."""
    layout = pow_._Layout(config)
    message = layout.message(START + NONCES // 2)
    assert all(len(layout.message(i)) == len(message) for i in (START, START + NONCES - 1))
    seed = SEED.encode()
    sha3 = hashlib.sha3_512
    solver, raw = [], []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        assert pow_._solve_range(SEED, NEVER, config, START, START + NONCES) is None
        solver.append((time.perf_counter() - began) / NONCES)
        began = time.perf_counter()
        for _ in range(NONCES):
            sha3(seed + message).digest()
        raw.append((time.perf_counter() - began) / NONCES)
    return statistics.median(solver), statistics.median(raw), len(message)


def pool_costs(config: list) -> tuple[float, float, float]:
    """First use of a pool (start + one task) and the p50/p99 round trip of a one-nonce task."""
    began = time.perf_counter()
    executor = pow_._process_pool(1)
    executor.submit(pow_._solve_range, SEED, "", config, 0, 1).result()
    first = time.perf_counter() - began
    trips = []
    for _ in range(200):
        began = time.perf_counter()
        executor.submit(pow_._solve_range, SEED, "", config, 0, 1).result()
        trips.append(time.perf_counter() - began)
    executor.shutdown()
    return first, percentile(trips, 50), percentile(trips, 99)


def config_for_fnv() -> list:
    return sentinel_config(Chrome.from_target("chrome152"), build_id="prod-" + "0" * 40,
                           sdk_url="https://chatgpt.com/backend-api/sentinel/sdk.js")


def fnv_per_nonce() -> tuple[float, float, int]:
    """Median seconds per nonce of the batched FNV search and of the plain FNV loop."""
    config = config_for_fnv()
    filled = list(config)
    filled[3], filled[9] = START, 0
    message = SEED + pow_._encode(pow_.dumps_js(filled)).decode()
    batched, plain = [], []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        assert pow_._search_fnv(SEED, "00000000", config, START, START + NONCES,
                                lambda: 0) is None
        batched.append((time.perf_counter() - began) / NONCES)
        count = NONCES // 40  # the plain loop is slow: a sample is enough
        began = time.perf_counter()
        for _ in range(count):
            pow_.fnv_hex(message)
        plain.append((time.perf_counter() - began) / count)
    return statistics.median(batched), statistics.median(plain), len(message)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def trivial_task() -> None:
    time.sleep(0.001)
    sum(i * i for i in range(500))


def latencies(while_running: threading.Thread | None, samples: int = 300) -> list[float]:
    """Latencies of `trivial_task`, `samples` of them or as many as fit while the thread runs."""
    out = []
    if while_running is not None:
        while_running.start()
        time.sleep(0.05)  # let the search get going
    while len(out) < samples or (while_running is not None and while_running.is_alive()):
        if while_running is not None and not while_running.is_alive():
            break
        began = time.perf_counter()
        trivial_task()
        out.append(time.perf_counter() - began)
    if while_running is not None:
        while_running.join()
    return out


def main() -> None:
    config = pow_.browser_config(UA)
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
          f"sha3_512 is {type(hashlib.sha3_512()).__module__}.{type(hashlib.sha3_512()).__name__}")

    solver, raw, length = per_nonce(config)
    print(f"per-nonce cost over {ROUNDS} alternating rounds of {NONCES} nonces "
          f"(message {length} base64 chars + {len(SEED)}-char seed):")
    print(f"  solver median: {solver * 1e9:.0f} ns/nonce")
    print(f"  raw hashlib.sha3_512(seed + msg).digest() median: {raw * 1e9:.0f} ns/nonce")
    print(f"ratio solver/raw: {raw / solver:.2f}  (raw time / solver time; >= 0.95 means the "
          f"solver runs at >= 95% of raw hash speed)")
    attempts = pow_.expected_attempts("000032")
    print(f"expected solve time at difficulty 000032: {attempts:.0f} attempts x "
          f"{solver * 1e6:.2f} us = {attempts * solver:.2f} s (one worker)")

    fnv, fnv_plain, fnv_length = fnv_per_nonce()
    print(f"2026 hash (FNV-1a + fmix32), message {fnv_length} chars incl. seed:")
    print(f"  batched solver median: {fnv * 1e9:.0f} ns/nonce; plain loop: "
          f"{fnv_plain * 1e9:.0f} ns/nonce; ratio plain/batched: {fnv_plain / fnv:.1f}")
    print(f"  ratio FNV/SHA3 solver cost per nonce: {fnv / solver:.2f}")
    began = time.perf_counter()
    solves = 50
    for index in range(solves):
        pow_.solve_fnv(f"0.{index}17", "06e1cc", config_for_fnv())
    each = (time.perf_counter() - began) / solves
    print(f"  measured: {solves} solves at 06e1cc took {each * 1e3:.2f} ms each on average "
          "(to the first answer, whole batches included)")
    for difficulty in ("06e1cc", "000032"):
        attempts = pow_.expected_attempts(difficulty)
        print(f"  expected solve time at {difficulty}: {attempts:.0f} attempts -> FNV "
              f"{attempts * fnv * 1e3:.2f} ms, SHA3 {attempts * solver * 1e3:.2f} ms "
              f"(one worker; FNV batches of {pow_.FNV_FIRST_BATCH} to {pow_.FNV_BATCH} nonces)")

    first, trip50, trip99 = pool_costs(config)
    print(f"process pool: first use {first * 1e3:.0f} ms (start + import), round trip of a "
          f"one-nonce task p50 {trip50 * 1e3:.3f} ms, p99 {trip99 * 1e3:.3f} ms")
    print(f"inline below {pow_.INLINE_ATTEMPTS} expected attempts = "
          f"{pow_.INLINE_ATTEMPTS * solver * 1e3:.2f} ms of GIL on average")

    print(f"latency of a trivial task (1 ms sleep + a little Python) while a "
          f"{HARD_ITERATIONS}-nonce search runs in another thread:")

    def inline_search():
        pow_.solve(SEED, HARD, config, max_iterations=HARD_ITERATIONS)

    solver_pool = pow_.ProofOfWorkSolver(workers=1, max_difficulty="00000000",
                                         max_iterations=HARD_ITERATIONS)
    solver_pool.proof_token(SEED, "000f", UA)  # start the pool before measuring

    def pooled_search():
        try:
            solver_pool.proof_token(SEED, HARD, UA)
        except Forbidden:
            pass  # unsolved within HARD_ITERATIONS, as intended

    rows = [("(a) nothing else", None), ("(b) search inline (GIL)", inline_search),
            ("(c) search in process pool", pooled_search)]
    base50 = base99 = None
    for name, target in rows:
        began = time.perf_counter()
        values = latencies(None if target is None else threading.Thread(target=target))
        took = time.perf_counter() - began
        p50, p99 = percentile(values, 50), percentile(values, 99)
        if base50 is None:
            base50, base99 = p50, p99
        extra = "" if target is None else f", search took {took:.2f} s"
        print(f"  {name}: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, "
              f"ratio to (a) p50 {p50 / base50:.2f} p99 {p99 / base99:.2f} "
              f"({len(values)} samples{extra})")
    solver_pool.close()


if __name__ == "__main__":
    main()
