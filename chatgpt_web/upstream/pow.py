"""Proof of work for the sentinel: the config, the search, the tokens (docs/protocol-requests.md).

Two hashes, one per dialect of the site:

* 2026 (`fnv`): FNV-1a-32 with murmur3's fmix32 finaliser over seed + B, B being the base64 of the
  25-item config (browser.py) with the nonce in slot 3 and the elapsed milliseconds in slot 9; the
  answer ends with "~S". Searched in numpy batches (`_search_fnv`), one vector op per character.
* 2024 (`sha3`): SHA3-512 over the 18-item config, described next.

The answer to a `proofofwork` challenge is `"gAAAAAB" + B`, where B is standard padded base64 of
the compact JSON of an 18-item browser config list with a nonce i in slot 3 and i >> 1 in slot 9,
such that the first len(difficulty) hex digits of SHA3-512(seed + B) are <= the difficulty.

The search is the hot loop of the service, so it does per nonce only what must change:

* The JSON is a fixed prefix, the digits of i, a fixed middle, the digits of i >> 1 and a fixed
  suffix. Base64 turns each 3-byte group into 4 characters independently, so every group that holds
  no nonce digit is encoded once, per alignment, and only the few groups holding digits vary.
* Nonces are taken in blocks of 100: i = 100*q + rr, i >> 1 = 50*q + rr//2. Within a block only the
  last two digits of each number change, and their groups come from small tables keyed by the
  one or two bytes that share their group.
* SHA3 absorbs its input in 72-byte blocks, so the hasher fed with seed + the static prefix (and
  then the block's leading digits) is kept, and each nonce costs one `copy()`, one `update()` with
  the varying tail and one `digest()` compared as bytes with a 64-byte target.

Hashing short inputs holds the GIL, so `ProofOfWorkSolver` runs hard searches in a small process
pool and keeps the calling thread free; easy ones (and the requirements token) stay inline.
"""
from __future__ import annotations

import binascii
import hashlib
import json
import logging
import math
import multiprocessing
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from ..errors import Forbidden

log = logging.getLogger(__name__)

ANSWER_PREFIX = "gAAAAAB"
REQUIREMENTS_PREFIX = "gAAAAAC"
REQUIREMENTS_DIFFICULTY = "0fffff"
MAX_ITERATIONS = 500_000
# Placeholder in the shape of a build id; pass the live `data-build` of the home page when known.
DEFAULT_BUILD_ID = "prod-0000000000000000000000000000000000000000"
# Challenges expected to need fewer attempts than this are solved in the calling thread: at about
# 2.3 us a nonce that holds the GIL for about 1.2 ms on average (well under the 5 ms switch
# interval), where the pool would add a round trip of about 0.2 ms (p99 0.5 ms) and, on first use,
# about 0.15 s to start; bench/pow.py prints these numbers.
INLINE_ATTEMPTS = 500
# Nonces per pool task (about 0.1 s): small enough that a found answer stops the other workers soon.
CHUNK = 40_000

_HEAP_LIMIT = 4294705152
_SCREEN_SUMS = (2134, 2340, 2400, 2730, 3000, 3120, 4000, 6000)  # width + height of common screens
_CORES = (4, 8, 12, 16)
_NAVIGATOR_KEYS = ("webdriver\u2212false", "vendor\u2212Google Inc.", "cookieEnabled\u2212true",
                   "pdfViewerEnabled\u2212true", "onLine\u2212true", "language\u2212en-US")
_DOCUMENT_KEYS = ("location", "URL", "documentURI", "compatMode", "characterSet", "visibilityState")
_WINDOW_KEYS = ("window", "self", "document", "location", "history", "navigator", "performance",
                "crypto", "customElements", "onbeforetoggle")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_PAIRS = [b"%02d" % n for n in range(100)]


def browser_config(user_agent: str, *, now: float | None = None, rng: random.Random | None = None,
                   script_src: str = "", build_id: str = DEFAULT_BUILD_ID) -> list:
    """The 18-item browser config list of the 2024 sentinel, nonce slots 3 and 9 at 0.

    `now` (epoch seconds) and `rng` make it reproducible; `script_src` and `build_id` are the
    `<script src>` and `data-build` of the chatgpt.com home page when the caller has them.
    """
    now = time.time() if now is None else now
    rng = rng or random.Random()
    eastern = time.gmtime(now - 5 * 3600)
    date = (f"{_DAYS[eastern.tm_wday]} {_MONTHS[eastern.tm_mon - 1]} {eastern.tm_mday:02d} "
            f"{eastern.tm_year} {eastern.tm_hour:02d}:{eastern.tm_min:02d}:{eastern.tm_sec:02d} "
            "GMT-0500 (Eastern Standard Time)")
    page_age_ms = round(rng.uniform(1_000, 60_000), 1)
    return [
        rng.choice(_SCREEN_SUMS),
        date,
        _HEAP_LIMIT,
        0,
        user_agent,
        script_src,
        build_id,
        "en-US",
        "en-US,es-US,en,es",
        0,
        rng.choice(_NAVIGATOR_KEYS),
        rng.choice(_DOCUMENT_KEYS),
        rng.choice(_WINDOW_KEYS),
        page_age_ms,
        str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "",
        rng.choice(_CORES),
        round(now * 1000 - page_age_ms, 1),
    ]


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _is_hex(difficulty) -> bool:
    """True for a string of hex digits, the empty string included (it accepts every hash)."""
    return isinstance(difficulty, str) and all(c in _HEX_DIGITS for c in difficulty)


def is_too_hard(difficulty: str, max_difficulty: str) -> bool:
    """True if `difficulty` is harder than the configured limit (lower hex prefix = harder).

    As chat2api: too hard when `difficulty <= max_difficulty` as strings, so the limit itself is
    refused. Hex is compared case-insensitively, and when the lengths differ the shorter one is
    padded with "f", which is the threshold it means on longer prefixes (plain string order would
    call "00003" harder than "000032" although it accepts more hashes). Not hex: too hard.
    """
    if not _is_hex(difficulty):
        return True
    width = max(len(difficulty), len(max_difficulty))
    return difficulty.lower().ljust(width, "f") <= max_difficulty.lower().ljust(width, "f")


def expected_attempts(difficulty: str) -> float:
    """Mean number of nonces to try: 16**len / (value + 1); infinite when not hex."""
    if not _is_hex(difficulty):
        return math.inf
    if not difficulty:
        return 1.0
    return 16.0 ** len(difficulty) / (int(difficulty, 16) + 1)


def _target(difficulty: str) -> bytes:
    """The 64-byte bound B with `digest <= B` iff the digest's hex prefix is <= `difficulty`.

    An odd length gets one more "f" nibble (prefix <= d iff prefix+x <= d+"f" for every nibble x),
    and 0xff bytes fill the rest so that the whole digest compares in one bytes comparison.
    """
    if not _is_hex(difficulty):
        raise ValueError(f"difficulty must be hex digits, not {difficulty!r}")
    prefix = bytes.fromhex(difficulty + "f" * (len(difficulty) % 2))
    return prefix[:64] + b"\xff" * (64 - len(prefix[:64]))


def _encode(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False)


def _dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class _Layout:
    """One config's JSON cut around its nonce slots, with the base64 tables of the fast search."""

    def __init__(self, config: list):
        if not isinstance(config, list) or len(config) < 10:
            raise ValueError("the config must be a list with nonce slots 3 and 9")
        self.prefix = _dumps(config[:3])[:-1] + b","               # [a,"b",c,
        self.middle = b"," + _dumps(config[4:9])[1:-1] + b","     # ,ua,...,
        self.suffix = b"," + _dumps(config[10:])[1:] if len(config) > 10 else b"]"
        aligned = len(self.prefix) - len(self.prefix) % 3
        self.static_b64 = _encode(self.prefix[:aligned])  # the same for every nonce
        self.lead = self.prefix[aligned:]
        self._first_digits: dict[bytes, tuple] = {}
        self._second_digits: dict[bytes, list] = {}

    def message(self, nonce: int) -> bytes:
        """B for one nonce, built the plain way (small nonces and the edges of a range)."""
        return _encode(self.prefix + b"%d" % nonce + self.middle + b"%d" % (nonce >> 1)
                       + self.suffix)

    def first_digits(self, carry: bytes) -> tuple:
        """For the last two digits of i after `carry` (0-2 bytes ending a 3-byte group):
        ([(B of 00, B of 01), (B of 02, B of 03), ...], B of the middle's next whole groups,
        the middle's last 0-2 bytes that start the group of i >> 1)."""
        table = self._first_digits.get(carry)
        if table is None:
            fill = (-(len(carry) + 2)) % 3
            groups = [_encode(carry + pair + self.middle[:fill]) for pair in _PAIRS]
            rest = self.middle[fill:]
            cut = len(rest) - len(rest) % 3
            pairs = list(zip(groups[0::2], groups[1::2], strict=True))
            table = (pairs, _encode(rest[:cut]), rest[cut:])
            self._first_digits[carry] = table
        return table

    def second_digits(self, carry: bytes) -> list:
        """B of (carry + last two digits of i >> 1 + the suffix), for each two-digit ending."""
        table = self._second_digits.get(carry)
        if table is None:
            fill = (-(len(carry) + 2)) % 3
            tail = _encode(self.suffix[fill:])
            table = [_encode(carry + pair + self.suffix[:fill]) + tail for pair in _PAIRS]
            self._second_digits[carry] = table
        return table


def _search(seed: str, target: bytes, layout: _Layout, start: int, stop: int) -> str | None:
    """B for the first nonce in [start, stop) that clears `target`, or None."""
    seed_bytes = seed.encode()
    first_block = max(1, -(-start // 100))
    last_block = stop // 100
    if first_block >= last_block:
        return _search_plain(seed_bytes, target, layout, start, stop)
    return (_search_plain(seed_bytes, target, layout, start, first_block * 100)
            or _search_blocks(hashlib.sha3_512(seed_bytes + layout.static_b64), target, layout,
                              first_block, last_block)
            or _search_plain(seed_bytes, target, layout, last_block * 100, stop))


def _search_plain(seed_bytes: bytes, target: bytes, layout: _Layout, start: int,
                  stop: int) -> str | None:
    sha3 = hashlib.sha3_512
    for nonce in range(start, stop):
        message = layout.message(nonce)
        if sha3(seed_bytes + message).digest() <= target:
            return message.decode()
    return None


def _search_blocks(base, target: bytes, layout: _Layout, first: int, last: int) -> str | None:
    """Nonces 100*q ... 100*q + 99 for q in [first, last), q >= 1 (so every i has its two last
    digits after str(q), and i >> 1 has them after str(50q // 100) or nothing)."""
    lead = layout.lead
    for q in range(first, last):
        first_part = lead + b"%d" % q
        cut = len(first_part) - len(first_part) % 3
        first_pairs, middle_b64, middle_carry = layout.first_digits(first_part[cut:])
        half = 50 * q
        second_part = middle_carry + (b"%d" % (half // 100) if half >= 100 else b"")
        cut2 = len(second_part) - len(second_part) % 3
        seconds = layout.second_digits(second_part[cut2:])
        between = middle_b64 + _encode(second_part[:cut2])
        block = base.copy()
        block.update(_encode(first_part[:cut]))
        fork = block.copy
        offset = half % 100
        for (even, odd), second in zip(first_pairs, seconds[offset:offset + 50], strict=False):
            tail = between + second
            h = fork()
            h.update(even + tail)
            if h.digest() <= target:
                return _answer(layout, first_part[:cut], even + tail)
            h = fork()
            h.update(odd + tail)
            if h.digest() <= target:
                return _answer(layout, first_part[:cut], odd + tail)
    return None


def _answer(layout: _Layout, first_groups: bytes, tail: bytes) -> str:
    return (layout.static_b64 + _encode(first_groups) + tail).decode()


def _solve_range(seed: str, difficulty: str, config: list, start: int, stop: int) -> str | None:
    """B (without prefix) for the first nonce in [start, stop) that works; runs in pool workers."""
    return _search(seed, _target(difficulty), _Layout(config), start, stop)


def solve(seed: str, difficulty: str, config: list,
          max_iterations: int = MAX_ITERATIONS) -> str | None:
    """'gAAAAAB' + base64(json(config with nonce)) whose SHA3-512(seed + b64) hex prefix
    <= difficulty, or None (nonces 0 ... max_iterations - 1; the first that works)."""
    found = _solve_range(seed, difficulty, config, 0, max_iterations)
    return None if found is None else ANSWER_PREFIX + found


def requirements_token(config: list, rng=None) -> str:
    """The 2024 `p`: 'gAAAAAC' + answer for a random seed at difficulty '0fffff'."""
    seed = str((rng or random).random())
    found = _solve_range(seed, REQUIREMENTS_DIFFICULTY, config, 0, MAX_ITERATIONS)
    if found is None:  # each nonce succeeds with p = 1/16: not in this universe
        raise Forbidden("could not build the requirements token", "pow_failed")
    return REQUIREMENTS_PREFIX + found


# --- the 2026 hash: FNV-1a-32 + fmix32, answers ending in "~S" ---------------------------------

FNV_SUFFIX = "~S"
_FNV_OFFSET, _FNV_PRIME = 2166136261, 16777619
_MASK32 = 0xFFFFFFFF
# Nonces hashed per numpy batch: large enough that the per-character vector op dominates.
FNV_BATCH = 4096
FNV_FIRST_BATCH = 64  # a 2026 difficulty (06xxxx) needs about 40 nonces


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 2246822507) & _MASK32
    h ^= h >> 13
    h = (h * 3266489909) & _MASK32
    return h ^ (h >> 16)


def fnv_state(data: bytes, h: int = _FNV_OFFSET) -> int:
    """FNV-1a-32 state after `data` (ASCII: a byte is a UTF-16 code unit), without the finaliser."""
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK32
    return h


def fnv_hex(text: str) -> str:
    """The site's 2026 proof hash of `text` as 8 lowercase hex digits (FNV-1a-32, then fmix32).

    The browser hashes UTF-16 code units; seeds and base64 are ASCII, where that is the bytes.
    """
    data = text.encode("utf-16-le")
    h = _FNV_OFFSET
    for i in range(0, len(data), 2):
        h = ((h ^ (data[i] | data[i + 1] << 8)) * _FNV_PRIME) & _MASK32
    return f"{_fmix32(h):08x}"


def _fnv_bound(difficulty: str) -> int:
    """B with `hex8(h)[:len(d)] <= d` iff `h >> shift <= B` (shift from `_fnv_shift`)."""
    return int(difficulty[:8], 16) if difficulty else 0


def _fnv_shift(difficulty: str) -> int:
    return 32 - 4 * min(len(difficulty), 8)


def dumps_js(value) -> bytes:
    """JSON.stringify's compact form, UTF-8 encoded (non-ASCII kept as is)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _search_fnv(seed: str, difficulty: str, config: list, start: int, stop: int,
                elapsed_ms: Callable[[], int]) -> str | None:
    """B for the first nonce in [start, stop) whose FNV hash clears `difficulty`, or None.

    Per batch, slot 9 holds the elapsed milliseconds when the batch began (as the browser writes
    the elapsed time of each attempt, and nothing can check it to the millisecond). Within a batch
    of nonces with the same number of digits every message has the same length and alignment, so
    only the base64 groups holding the digits differ: the FNV state after seed + the common base64
    prefix is computed once, and then each character position costs two vector ops on the batch.
    """
    import numpy as np  # the one heavy import, kept out of the service's start-up path

    shift, bound = _fnv_shift(difficulty), _fnv_bound(difficulty)
    prime = np.uint32(_FNV_PRIME)
    nonce, batch = start, FNV_FIRST_BATCH
    while nonce < stop:
        digits = len(str(nonce))
        end = min(stop, nonce + batch, 10 ** digits)
        batch = min(FNV_BATCH, batch * 4)  # easy challenges end in the first, small batch
        filled = list(config)
        filled[3], filled[9] = 0, elapsed_ms()
        text = dumps_js(filled)
        head = dumps_js(filled[:3])[:-1] + b","       # [a,"b",c,
        tail = text[len(head) + 1:]                    # ,ua,...]  (after the nonce "0")
        aligned = len(head) - len(head) % 3
        lead = head[aligned:]
        # the groups that hold the nonce, then everything after them
        varying_bytes = len(lead) + digits
        cut = varying_bytes + (-varying_bytes) % 3
        fill = cut - varying_bytes
        common = _encode(tail[fill:])
        prefix_state = fnv_state(seed.encode() + _encode(head[:aligned]))
        heads = [_encode(lead + b"%d" % n + tail[:fill]) for n in range(nonce, end)]
        width = len(heads[0])
        rows = np.frombuffer(b"".join(heads), dtype=np.uint8).reshape(-1, width)
        h = np.full(len(heads), prefix_state, dtype=np.uint32)
        for column in range(width):
            h ^= rows[:, column]
            h *= prime
        for byte in common:
            h ^= np.uint32(byte)
            h *= prime
        h ^= h >> np.uint32(16)
        h *= np.uint32(2246822507)
        h ^= h >> np.uint32(13)
        h *= np.uint32(3266489909)
        h ^= h >> np.uint32(16)
        hits = np.flatnonzero(h >> np.uint32(shift) <= bound) if shift < 32 else [0]
        if len(hits):
            return (_encode(head[:aligned]) + heads[int(hits[0])] + common).decode()
        nonce = end
    return None


def _wall_ms_since(t0_ms: float) -> Callable[[], int]:
    return lambda: max(0, round(time.time() * 1000 - t0_ms))


def _solve_fnv_range(seed: str, difficulty: str, config: list, start: int, stop: int,
                     t0_ms: float) -> str | None:
    """B (no prefix/suffix) for the first FNV answer in [start, stop); runs in pool workers."""
    return _search_fnv(seed, difficulty, config, start, stop, _wall_ms_since(t0_ms))


def solve_fnv(seed: str, difficulty: str, config: list, max_iterations: int = MAX_ITERATIONS,
              elapsed_ms: Callable[[], int] | None = None) -> str | None:
    """'gAAAAAB' + B + '~S' for the first nonce whose FNV hash clears `difficulty`, or None.

    `elapsed_ms` gives slot 9 (default: real milliseconds since the call); pin it for tests."""
    if not _is_hex(difficulty):
        raise ValueError(f"difficulty must be hex digits, not {difficulty!r}")
    clock = elapsed_ms or _wall_ms_since(time.time() * 1000)
    found = _search_fnv(seed, difficulty.lower(), config, 0, max_iterations, clock)
    return None if found is None else ANSWER_PREFIX + found + FNV_SUFFIX


def requirements_token_2026(config: list) -> str:
    """The 2026 `p`: 'gAAAAAC' + base64 of the config with slot 3 = 1 (no search, as the SDK's
    blocking path and a browser capture of 2025-12 show)."""
    filled = list(config)
    filled[3] = 1
    return REQUIREMENTS_PREFIX + _encode(dumps_js(filled)).decode()


def _process_pool(workers: int) -> Executor:
    """A pool whose workers do not inherit this process's threads or curl handles (no fork)."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))


_POOL_ERRORS = (OSError, NotImplementedError, PermissionError, BrokenProcessPool)


class ProofOfWorkSolver:
    """Answers sentinel challenges; hard searches run in a lazily started process pool.

    If the pool cannot start or breaks, one warning is logged and every later search runs in the
    calling thread (correct, but it holds the GIL for the duration of the search).
    """

    def __init__(self, workers: int = 1, max_difficulty: str = "000032", *,
                 max_iterations: int = MAX_ITERATIONS, inline_attempts: float = INLINE_ATTEMPTS,
                 executor_factory: Callable[[int], Executor] = _process_pool):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if not max_difficulty or not _is_hex(max_difficulty):
            raise ValueError("max_difficulty must be hex digits")
        self.workers = workers
        self.max_difficulty = max_difficulty
        self.max_iterations = max_iterations
        self.inline_attempts = inline_attempts
        self._executor_factory = executor_factory
        self._executor: Executor | None = None
        self._pool_failed = False
        self._lock = threading.Lock()

    def proof_token(self, seed: str, difficulty: str, user_agent: str, *, script_src: str = "",
                    build_id: str = DEFAULT_BUILD_ID) -> str:
        """The proof token for a challenge.

        Raises Forbidden(..., 'pow_failed') when too hard or unsolved (never sends the fallback
        silently)."""
        self._check_difficulty(difficulty)
        config = browser_config(user_agent, script_src=script_src, build_id=build_id)
        if expected_attempts(difficulty) < self.inline_attempts:
            found = _solve_range(seed, difficulty, config, 0, self.max_iterations)
        else:
            found = self._solve_in_pool(_solve_range, seed, difficulty, config)
        if found is None:
            raise Forbidden(f"failed to solve the proof of work (difficulty {difficulty}) in "
                            f"{self.max_iterations} attempts", "pow_failed")
        return ANSWER_PREFIX + found

    def fnv_proof_token(self, seed: str, difficulty: str, config: list) -> str:
        """The 2026 proof token ('gAAAAAB' + B + '~S') for a challenge, `config` being the
        25-item fingerprint (browser.py); hard searches run in the process pool.

        Raises Forbidden(..., 'pow_failed') when too hard or unsolved."""
        self._check_difficulty(difficulty)
        t0_ms = time.time() * 1000
        if expected_attempts(difficulty) < self.inline_attempts * 20:  # ~0.6 us a nonce here
            found = _solve_fnv_range(seed, difficulty.lower(), config, 0, self.max_iterations,
                                     t0_ms)
        else:
            found = self._solve_in_pool(_solve_fnv_range, seed, difficulty.lower(), config, t0_ms)
        if found is None:
            raise Forbidden(f"failed to solve the proof of work (difficulty {difficulty}) in "
                            f"{self.max_iterations} attempts", "pow_failed")
        return ANSWER_PREFIX + found + FNV_SUFFIX

    def _check_difficulty(self, difficulty: str) -> None:
        if not _is_hex(difficulty):
            raise Forbidden("the upstream sent a proof-of-work difficulty that is not hex",
                            "pow_failed")
        if is_too_hard(difficulty, self.max_difficulty):
            raise Forbidden(f"proof of work difficulty too high: {difficulty} (POW_MAX_DIFFICULTY "
                            f"is {self.max_difficulty}; lower is harder)", "pow_failed")

    def requirements_token(self, user_agent: str, *, script_src: str = "",
                           build_id: str = DEFAULT_BUILD_ID) -> str:
        """The `p` of the chat-requirements request; easy (about 16 hashes), so solved inline."""
        config = browser_config(user_agent, script_src=script_src, build_id=build_id)
        return requirements_token(config)

    def close(self) -> None:
        """Stop the pool's workers (idempotent); a later hard search starts a new pool."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _pool(self) -> Executor | None:
        with self._lock:
            if self._executor is None and not self._pool_failed:
                try:
                    self._executor = self._executor_factory(self.workers)
                except _POOL_ERRORS as exc:
                    self._give_up_pool(exc)
            return self._executor

    def _give_up_pool(self, exc: BaseException) -> None:
        """Called with the lock held: from now on every search runs inline."""
        if not self._pool_failed:
            log.warning("proof-of-work process pool unavailable (%s: %s); solving in the request "
                        "thread from now on", type(exc).__name__, exc)
        self._pool_failed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _solve_in_pool(self, search: Callable, seed: str, difficulty: str, config: list,
                       *extra) -> str | None:
        """`search(seed, difficulty, config, start, stop, *extra)` over [0, max_iterations)."""
        executor = self._pool()
        if executor is not None:
            try:
                return self._run_chunks(executor, search, seed, difficulty, config, *extra)
            except _POOL_ERRORS as exc:
                with self._lock:
                    self._give_up_pool(exc)
        return search(seed, difficulty, config, 0, self.max_iterations, *extra)

    def _run_chunks(self, executor: Executor, search: Callable, seed: str, difficulty: str,
                    config: list, *extra) -> str | None:
        """Search [0, max_iterations) in chunks, `workers` of them in flight, until one answers."""
        starts = iter(range(0, self.max_iterations, CHUNK))
        running: set = set()
        try:
            while True:
                while len(running) < self.workers:
                    start = next(starts, None)
                    if start is None:
                        break
                    stop = min(start + CHUNK, self.max_iterations)
                    running.add(executor.submit(search, seed, difficulty, config,
                                                start, stop, *extra))
                if not running:
                    return None
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    found = future.result()
                    if found is not None:
                        return found
        finally:
            for future in running:  # queued ones are dropped; a running one ends within a chunk
                future.cancel()
