"""The 2026 proof of work (FNV-1a-32 + fmix32, "~S") and the 25-item browser config.

Answers are checked with the emulator's plain hash (tests/emulator/sentinel.py), which shares
nothing with the solver's batched search. The worked example's numbers are in
docs/protocol-requests.md.
"""
from __future__ import annotations

import base64
import json
import random
import re

import pytest

from chatgpt_web.errors import Forbidden
from chatgpt_web.upstream import pow as pow_
from chatgpt_web.upstream.browser import Chrome, js_date, sentinel_config, timezone_offset_min
from tests.emulator.sentinel import fnv_fmix_hex

WORKED_CONFIG = [
    3000, "Mon Jun 01 2026 12:00:00 GMT-0700 (Pacific Daylight Time)", 4294967296, 0,
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/148.0.0.0 Safari/537.36",
    "https://chatgpt.com/backend-api/sentinel/sdk.js",
    "prod-dbbd612ddb47498515c3eecf8579bcafa0066e07", "en-US", "en-US,en", 0,
    "geolocation\u2212[object Geolocation]", "location", "onfocus", 1234.5,
    "00000000-0000-4000-8000-000000000000", "", 8, 1780340000000.5,
]


def check_fnv_answer(token: str, seed: str, difficulty: str, config: list) -> list:
    """Verify a 2026 proof token from scratch; return the config it carries."""
    assert token.startswith("gAAAAAB") and token.endswith("~S")
    encoded = token[len("gAAAAAB"):-2]
    carried = json.loads(base64.b64decode(encoded, validate=True).decode())
    assert len(carried) == len(config)
    assert carried[:3] + carried[4:9] + carried[10:] == config[:3] + config[4:9] + config[10:]
    assert isinstance(carried[3], int) and isinstance(carried[9], int)
    assert fnv_fmix_hex(seed + encoded)[:len(difficulty)] <= difficulty
    return carried


def test_the_hash_matches_the_published_values():
    for text, expected in [("", "ab3e7c0b"), ("a", "1a80b1b3"), ("hello", "888d766e"),
                           ("0.1234567890abcdefgAAAAAC", "a30381e5")]:
        assert pow_.fnv_hex(text) == expected == fnv_fmix_hex(text)


def test_the_worked_example_is_found_at_nonce_3():
    token = pow_.solve_fnv("0.42", "0fffff", WORKED_CONFIG, elapsed_ms=lambda: 0)
    carried = check_fnv_answer(token, "0.42", "0fffff", WORKED_CONFIG)
    assert carried[3] == 3 and carried[9] == 0
    assert fnv_fmix_hex("0.42" + token[7:-2]) == "06073333"
    assert token.startswith("gAAAAABWzMwMDAsIk1vbiBKdW4gMDEg") and len(token) == 593


@pytest.mark.parametrize("start_digits", [1, 2, 3, 4])
def test_the_first_answer_is_the_first_nonce_that_clears(start_digits):
    """Across digit-count boundaries (9→10, 99→100 ...) the batches agree with the plain loop."""
    seed, difficulty = f"0.{start_digits}17", "1"
    first = 10 ** start_digits - 3
    token = pow_.solve_fnv(seed, difficulty, WORKED_CONFIG, elapsed_ms=lambda: 7)
    carried = check_fnv_answer(token, seed, difficulty, WORKED_CONFIG)
    for nonce in range(carried[3]):  # nothing earlier clears
        config = list(WORKED_CONFIG)
        config[3], config[9] = nonce, 7
        encoded = base64.b64encode(pow_.dumps_js(config)).decode()
        assert fnv_fmix_hex(seed + encoded)[:1] > difficulty
    found = pow_._search_fnv(seed, "f", WORKED_CONFIG, first, first + 10, lambda: 0)
    assert json.loads(base64.b64decode(found))[3] == first


def test_an_unsolvable_search_ends_with_none():
    assert pow_.solve_fnv("0.1", "00000000", WORKED_CONFIG, max_iterations=3000) is None


def test_the_solver_answers_easy_challenges_inline_and_hard_ones_in_its_pool():
    solver = pow_.ProofOfWorkSolver(workers=1, max_difficulty="00003")
    try:
        for difficulty in ("0fffff", "0009ff"):  # ~16 and ~6500 attempts: inline
            token = solver.fnv_proof_token("0.77", difficulty, WORKED_CONFIG)
            check_fnv_answer(token, "0.77", difficulty, WORKED_CONFIG)
        assert solver._executor is None
        token = solver.fnv_proof_token("0.77", "0001ff", WORKED_CONFIG)  # ~33 000: the pool
        check_fnv_answer(token, "0.77", "0001ff", WORKED_CONFIG)
        assert solver._executor is not None
    finally:
        solver.close()


def test_too_hard_a_challenge_is_refused_before_any_search():
    solver = pow_.ProofOfWorkSolver(max_difficulty="0000ff")
    with pytest.raises(Forbidden) as refused:
        solver.fnv_proof_token("0.1", "00001a", WORKED_CONFIG)
    assert refused.value.code == "pow_failed"
    with pytest.raises(Forbidden):
        solver.fnv_proof_token("0.1", "zz", WORKED_CONFIG)


def test_the_requirements_token_carries_the_config_with_slot_3_at_1():
    token = pow_.requirements_token_2026(WORKED_CONFIG)
    assert token.startswith("gAAAAAC") and not token.endswith("~S")
    carried = json.loads(base64.b64decode(token[7:], validate=True))
    assert carried[3] == 1 and carried[4] == WORKED_CONFIG[4] and len(carried) == 18


# --- the browser -----------------------------------------------------------------------------

def test_the_default_chrome_names_one_version_everywhere():
    chrome = Chrome.from_target("chrome152")
    assert chrome.platform == "Windows"
    assert "Windows NT 10.0; Win64; x64" in chrome.user_agent
    assert "Chrome/152.0.0.0" in chrome.user_agent
    mac = Chrome.from_target("chrome152_macos")
    assert mac.platform == "macOS" and "Mac OS X" in mac.user_agent


def test_the_default_impersonation_target_is_the_newest_chrome_curl_cffi_offers():
    from curl_cffi.requests import BrowserType

    from chatgpt_web.config import DEFAULT_IMPERSONATE
    desktop = [int(m.group(1)) for b in BrowserType
               if (m := re.fullmatch(r"chrome(\d+)", b.value))]
    assert DEFAULT_IMPERSONATE == f"chrome{max(desktop)}"


def test_the_sentinel_config_has_25_items_consistent_with_the_browser():
    chrome = Chrome.from_target("chrome152")
    now = 1_780_340_000.0  # 2026-06-01 18:53 UTC: daylight saving time in Los Angeles
    config = sentinel_config(chrome, build_id="prod-" + "a" * 40,
                             sdk_url="https://chatgpt.com/backend-api/sentinel/sdk.js",
                             now=now, page_loaded_at=now - 10, rng=random.Random(3))
    assert len(config) == 25
    assert config[1] == js_date(now) == "Mon Jun 01 2026 11:53:20 GMT-0700 (Pacific Daylight Time)"
    assert config[2] == 4294967296 and config[3] == 0 and config[9] == 0
    assert config[4] == chrome.user_agent
    assert config[5].endswith("/sdk.js") and config[6] == "prod-" + "a" * 40
    assert config[7] == "en-US" and config[8] == "en-US,en"
    assert config[13] == 10000.0 and config[17] == round((now - 10) * 1000, 1)
    assert re.fullmatch(r"[0-9a-f-]{36}", config[14]) and config[15] == ""
    assert config[18:] == [0] * 7
    assert timezone_offset_min(now) == 420
    assert timezone_offset_min(1_767_132_761.0) == 480  # December: standard time
