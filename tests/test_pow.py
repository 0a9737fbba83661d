"""Proof of work (docs/protocol-requests.md, the sentinel): every answer is checked here by
recomputing it from scratch."""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import re
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool

import pytest

from chatgpt_web.errors import Forbidden
from chatgpt_web.upstream import pow as pow_
from chatgpt_web.upstream.pow import (
    ProofOfWorkSolver,
    browser_config,
    expected_attempts,
    is_too_hard,
    requirements_token,
    solve,
)

UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/136.0.0.0 Safari/537.36")
FALLBACK = "wQ8Lk5FbGpA2NcR9dShT6gYjU7VxZ4D"


def config(seed: int = 1) -> list:
    return browser_config(UA, now=1_716_217_872.5, rng=random.Random(seed))


def encoded(cfg: list, nonce: int) -> str:
    """B for one nonce, the obvious way."""
    filled = list(cfg)
    filled[3], filled[9] = nonce, nonce >> 1
    text = json.dumps(filled, separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(text.encode()).decode()


def clears(seed: str, b64: str, difficulty: str) -> bool:
    digest = hashlib.sha3_512((seed + b64).encode()).hexdigest()
    return digest[:len(difficulty)] <= difficulty.lower()


def first_answer(seed: str, difficulty: str, cfg: list, start: int = 0) -> str:
    nonce = start
    while not clears(seed, encoded(cfg, nonce), difficulty):
        nonce += 1
    return encoded(cfg, nonce)


def check_answer(token: str, prefix: str, seed: str, difficulty: str, cfg: list) -> int:
    """Verify a token independently; return its nonce."""
    assert token.startswith(prefix)
    b64 = token[len(prefix):]
    assert not b64.startswith(FALLBACK)
    decoded = json.loads(base64.b64decode(b64, validate=True).decode())
    assert isinstance(decoded, list) and len(decoded) == len(cfg)
    nonce = decoded[3]
    assert isinstance(nonce, int) and decoded[9] == nonce >> 1
    assert decoded[:3] + decoded[4:9] + decoded[10:] == cfg[:3] + cfg[4:9] + cfg[10:]
    assert b64 == encoded(cfg, nonce), "compact JSON, raw non-ASCII, standard padded base64"
    assert clears(seed, b64, difficulty)
    return nonce


# --- the browser config ---------------------------------------------------------------------

def test_browser_config_has_18_items_with_the_user_agent_at_4_and_zero_nonce_slots():
    cfg = config()
    assert len(cfg) == 18
    assert cfg[4] == UA
    assert cfg[3] == 0 and cfg[9] == 0
    assert cfg[2] == 4294705152
    assert cfg[7] == "en-US" and cfg[8] == "en-US,es-US,en,es"
    assert re.fullmatch(r"[A-Z][a-z]{2} [A-Z][a-z]{2} \d{2} \d{4} \d{2}:\d{2}:\d{2} "
                        r"GMT-0500 \(Eastern Standard Time\)", cfg[1])
    assert "\u2212" in cfg[10]
    assert cfg[15] == ""
    json.dumps(cfg)


def test_browser_config_writes_the_date_in_eastern_time_like_javascript():
    # 2024-05-20 15:11:12 UTC is 10:11:12 at GMT-0500.
    cfg = browser_config(UA, now=1_716_217_872, rng=random.Random(0))
    assert cfg[1] == "Mon May 20 2024 10:11:12 GMT-0500 (Eastern Standard Time)"


def test_browser_config_is_reproducible_with_now_and_rng_and_varies_without():
    assert config(3) == config(3)
    assert browser_config(UA)[14] != browser_config(UA)[14]


# --- solve ----------------------------------------------------------------------------------

@pytest.mark.parametrize("difficulty", ["0fffff", "00f", "0003", "001f", "07", "A"])
def test_solved_token_verifies_by_independent_recomputation(difficulty):
    cfg = config()
    seed = "0.81186133b2821174"
    token = solve(seed, difficulty, cfg)
    check_answer(token, "gAAAAAB", seed, difficulty, cfg)


@pytest.mark.parametrize("seed", ["0.1", "0.2734", "0.99"])
@pytest.mark.parametrize("difficulty", ["001f", "00a", "0"])
def test_solve_returns_the_first_nonce_that_clears_the_difficulty(seed, difficulty):
    cfg = config(len(seed))
    assert solve(seed, difficulty, cfg) == "gAAAAAB" + first_answer(seed, difficulty, cfg)


@pytest.mark.parametrize("start", [100, 200, 1_000, 2_000, 9_900, 19_900, 99_900, 199_900, 4_321])
def test_a_search_from_any_start_matches_the_plain_encoding_across_digit_boundaries(start):
    """The search reuses base64 groups and hasher states; it must equal the plain computation,
    also where i or i >> 1 gains a digit and for configs shorter than 18 items."""
    for cfg in (config(start), config(start)[:10], config(start)[:12]):
        for seed in ("0.5", "0.123456789"):
            expected = first_answer(seed, "0f", cfg, start)
            assert pow_._solve_range(seed, "0f", cfg, start, start + 1_000) == expected


def test_an_odd_length_difficulty_compares_its_last_hex_digit():
    cfg = config()
    for seed in ("0.1", "0.2", "0.3", "0.4"):
        token = solve(seed, "00a", cfg)
        check_answer(token, "gAAAAAB", seed, "00a", cfg)
        assert token == "gAAAAAB" + first_answer(seed, "00a", cfg)


def test_solve_returns_none_when_no_nonce_clears_the_difficulty():
    assert solve("0.1", "0000000000", config(), max_iterations=300) is None


def test_solve_refuses_a_difficulty_that_is_not_hex():
    with pytest.raises(ValueError):
        solve("0.1", "0x12", config())


# --- difficulty ------------------------------------------------------------------------------

@pytest.mark.parametrize("difficulty, limit, too_hard", [
    ("000032", "000032", True),    # the limit itself is refused, as chat2api's `<=`
    ("000031", "000032", True),
    ("000000", "000032", True),
    ("000033", "000032", False),
    ("073682", "000032", False),
    ("0fffff", "000032", False),
    ("00001F", "000032", True),    # case does not matter
    ("00003A", "000032", False),
    ("00003", "000032", False),    # "00003" accepts what "00003f" does: easier than the limit
    ("00002", "000032", True),
    ("0000321", "000032", True),
    ("0000330", "000032", False),
    ("", "000032", False),         # accepts every hash
    ("xyz", "000032", True),       # not hex: cannot be solved
    ("0x10", "000032", True),
])
def test_is_too_hard_table(difficulty, limit, too_hard):
    assert is_too_hard(difficulty, limit) is too_hard


def test_expected_attempts():
    assert expected_attempts("0fffff") == 16
    assert expected_attempts("000032") == pytest.approx(16 ** 6 / 51)
    assert expected_attempts("7") == 2
    assert expected_attempts("") == 1
    assert expected_attempts("zz") == float("inf")


# --- requirements token -------------------------------------------------------------------------

def test_requirements_token_is_gAAAAAC_and_an_answer_at_0fffff_for_a_random_seed():
    cfg = config()
    token = requirements_token(cfg, random.Random(42))
    seed = str(random.Random(42).random())
    check_answer(token, "gAAAAAC", seed, "0fffff", cfg)


def test_solver_requirements_token_carries_the_user_agent():
    solver = ProofOfWorkSolver(executor_factory=_no_pool)
    token = solver.requirements_token(UA)
    assert token.startswith("gAAAAAC")
    decoded = json.loads(base64.b64decode(token[len("gAAAAAC"):]))
    assert len(decoded) == 18 and decoded[4] == UA


# --- the solver --------------------------------------------------------------------------------

def _no_pool(workers):
    raise AssertionError("this test must not start a pool")


def decode_proof(token: str) -> list:
    return json.loads(base64.b64decode(token[len("gAAAAAB"):]))


def test_solver_with_pool_returns_a_valid_token():
    pools, submitted = [], []

    def factory(workers):
        pool = pow_._process_pool(workers)  # the real pool, counting the tasks it receives
        real_submit = pool.submit
        pool.submit = lambda *args: submitted.append(args[1:3]) or real_submit(*args)
        pools.append(pool)
        return pool

    solver = ProofOfWorkSolver(workers=2, max_difficulty="0000", executor_factory=factory)
    try:
        seed, difficulty = "0.4242", "0003"  # 16384 expected attempts: above the inline limit
        token = solver.proof_token(seed, difficulty, UA)
        cfg = decode_proof(token)
        cfg[3] = cfg[9] = 0
        check_answer(token, "gAAAAAB", seed, difficulty, cfg)
        assert cfg[4] == UA
        assert len(pools) == 1 and submitted and submitted[0] == (seed, difficulty)
        solver.proof_token("0.5", difficulty, UA)
        assert len(pools) == 1, "the pool is started once and reused"
    finally:
        solver.close()


def test_the_default_pool_does_not_fork_the_threaded_service():
    pool = pow_._process_pool(1)
    try:
        assert pool._mp_context.get_start_method() in ("forkserver", "spawn")
    finally:
        pool.shutdown()


def test_solver_solves_easy_challenges_inline_without_a_pool():
    solver = ProofOfWorkSolver(executor_factory=_no_pool)
    token = solver.proof_token("0.1", "073682", UA)
    cfg = decode_proof(token)
    cfg[3] = cfg[9] = 0
    check_answer(token, "gAAAAAB", "0.1", "073682", cfg)


@pytest.mark.parametrize("error", [OSError(38, "Function not implemented"), NotImplementedError(),
                                   PermissionError(13, "Permission denied")])
def test_solver_falls_back_to_the_calling_thread_when_the_pool_cannot_start(error, caplog):
    attempts = []

    def factory(workers):
        attempts.append(workers)
        raise error

    solver = ProofOfWorkSolver(max_difficulty="0000", executor_factory=factory)
    with caplog.at_level(logging.WARNING, logger="chatgpt_web.upstream.pow"):
        for seed in ("0.1", "0.2"):
            token = solver.proof_token(seed, "0003", UA)
            cfg = decode_proof(token)
            cfg[3] = cfg[9] = 0
            check_answer(token, "gAAAAAB", seed, "0003", cfg)
    assert attempts == [1], "a pool that cannot start is not retried"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "pool" in warnings[0].getMessage()
    solver.close()


class BrokenPool(Executor):
    def submit(self, fn, /, *args, **kwargs):
        raise BrokenProcessPool("a worker died")


def test_solver_falls_back_to_the_calling_thread_when_the_pool_breaks(caplog):
    solver = ProofOfWorkSolver(max_difficulty="0000", executor_factory=lambda workers: BrokenPool())
    with caplog.at_level(logging.WARNING, logger="chatgpt_web.upstream.pow"):
        token = solver.proof_token("0.3", "0003", UA)
    cfg = decode_proof(token)
    cfg[3] = cfg[9] = 0
    check_answer(token, "gAAAAAB", "0.3", "0003", cfg)
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1


def test_unsolved_challenge_raises_forbidden_pow_failed_without_the_fallback_answer():
    solver = ProofOfWorkSolver(max_difficulty="0000", max_iterations=150)
    try:
        with pytest.raises(Forbidden) as caught:
            solver.proof_token("0.1", "00000001", UA)
    finally:
        solver.close()
    assert caught.value.code == "pow_failed" and caught.value.status == 403
    assert FALLBACK not in caught.value.message


def test_unsolved_challenge_inline_raises_forbidden_pow_failed():
    solver = ProofOfWorkSolver(max_difficulty="0000", max_iterations=150,
                               inline_attempts=float("inf"), executor_factory=_no_pool)
    with pytest.raises(Forbidden) as caught:
        solver.proof_token("0.1", "00000001", UA)
    assert caught.value.code == "pow_failed"


def test_too_hard_challenge_raises_before_any_search(monkeypatch):
    def no_search(*args):
        raise AssertionError("searched a challenge that is too hard")

    monkeypatch.setattr(pow_, "_search", no_search)
    solver = ProofOfWorkSolver(max_difficulty="000032", executor_factory=_no_pool)
    for difficulty in ("000032", "000010", "00000000"):
        with pytest.raises(Forbidden) as caught:
            solver.proof_token("0.1", difficulty, UA)
        assert caught.value.code == "pow_failed"
        assert "too high" in caught.value.message


def test_a_difficulty_that_is_not_hex_raises_forbidden_pow_failed():
    solver = ProofOfWorkSolver(executor_factory=_no_pool)
    with pytest.raises(Forbidden) as caught:
        solver.proof_token("0.1", "zz12", UA)
    assert caught.value.code == "pow_failed"


def test_solver_rejects_a_limit_that_is_not_hex_and_zero_workers():
    with pytest.raises(ValueError):
        ProofOfWorkSolver(max_difficulty="0x32")
    with pytest.raises(ValueError):
        ProofOfWorkSolver(workers=0)


def test_close_is_idempotent_and_a_closed_solver_starts_a_new_pool():
    solver = ProofOfWorkSolver(max_difficulty="0000")
    solver.proof_token("0.1", "0003", UA)
    solver.close()
    solver.close()
    token = solver.proof_token("0.2", "0003", UA)
    assert token.startswith("gAAAAAB")
    solver.close()
