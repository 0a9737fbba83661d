"""The Turnstile `dx` VM: programs from the emulator's generator, and hostile programs.

The generator (tests/emulator/turnstile.py) computes each program's answer in plain Python from
the values the client announced; the VM has to arrive at the same token by running the program.
"""
from __future__ import annotations

import base64
import json
import os
import random
import time

import pytest

from chatgpt_web.upstream import turnstile
from chatgpt_web.upstream.turnstile import BrowserEnvironment, solve
from tests.emulator import turnstile as emulator_turnstile
from tests.emulator.turnstile import encrypt, make_program

UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/152.0.0.0 Safari/537.36")
DEVICE = "0b0e5a7c-1d2e-4f30-8a41-5b6c7d8e9f00"


def environment(**overrides) -> BrowserEnvironment:
    return BrowserEnvironment(**{"user_agent": UA, "device_id": DEVICE, **overrides})


def requirements_token(rng: random.Random) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return "gAAAAAC" + "".join(rng.choice(alphabet) for _ in range(400)) + "=="


def fallback(steps: int) -> str:
    return base64.b64encode(str(steps).encode()).decode()


@pytest.mark.parametrize("seed", range(20))
def test_generated_programs_resolve_to_the_expected_token(seed):
    rng = random.Random(seed)
    key = requirements_token(rng)
    program, expected = make_program(key, UA, DEVICE, rng)
    assert solve(encrypt(program, key), key, environment()) == expected


def test_the_generator_exercises_the_opcodes_the_vm_implements():
    program, _ = make_program("k", UA, DEVICE, random.Random(1))
    used = {instruction[0] for instruction in program}
    used |= {inner[0] for instruction in program for inner in instruction[1:]
             if isinstance(inner, list) and inner and isinstance(inner[0], list)
             for inner in inner}
    used |= {1, 31}  # run through the conditionals 20 and 21
    assert turnstile.OPCODES - used <= {4, 7, 11, 12, 17}, turnstile.OPCODES - used


def test_the_key_is_the_exact_requirements_token():
    rng = random.Random(5)
    key = requirements_token(rng)
    program, expected = make_program(key, UA, DEVICE, rng)
    dx = encrypt(program, key)
    assert solve(dx, key + "~S", environment()) != expected
    assert solve(dx, key, environment(user_agent=UA.replace("152", "151"))) != expected
    assert solve(dx, key, environment(device_id="another")) != expected


def run(program: list, **limits) -> str:
    return solve(encrypt(program, "key"), "key", environment(), **limits)


def test_calls_reach_the_browser_environment():
    program = [[2, 40, "Object"], [6, 41, 10, 40], [2, 42, "keys"], [6, 43, 41, 42],
               [2, 44, "localStorage"], [6, 45, 10, 44], [17, 46, 43, 45],
               [2, 47, 0], [6, 48, 46, 47], [3, 48]]
    assert base64.b64decode(run(program)).decode() == "oai-did"


def test_an_unknown_opcode_ends_with_the_sdk_fallback_answer():
    assert run([[2, 40, 1], [2, 41, 2], [77, 40]]) == fallback(3)


@pytest.mark.parametrize("program", [
    [[2, 40, "x"], [6, 41, 40, 40], [7, 41]],         # calling undefined
    [[8]],                                             # missing operands
    [[2, "forty", 1]],                                 # a register that is not a number
    [[2, 9, []]],                                      # overwriting the instruction queue
    [["1", 40, 41]],                                   # an opcode that is not a number
    [[3, 40], "not an instruction"][::-1],
    [[18, 10]],                                        # atob of an object
])
def test_malformed_programs_never_raise(program):
    answer = run(program)
    assert base64.b64decode(answer).decode().isdigit()


def test_the_step_budget_stops_an_endless_program():
    # r41 runs itself twice: 2^depth instructions, cut by the depth limit and the step budget.
    program = [[2, 41, [[31, 50], [22, 41], [22, 41]]], [22, 41]]
    began = time.monotonic()
    answer = run(program, max_steps=300)
    assert time.monotonic() - began < 1
    assert int(base64.b64decode(answer)) <= 301


def test_the_time_budget_stops_a_long_program():
    program = [[2, 50, 0]] + [[31, 50]] * 30_000 + [[3, 50]]
    dx = encrypt(program, "key")
    answer = solve(dx, "key", environment(), max_steps=10**9, max_seconds=0.001)
    steps = int(base64.b64decode(answer))  # the fallback: steps taken, not r50
    assert 0 < steps < 30_000


def test_the_time_budget_counts_work_not_waiting_for_a_cpu():
    # On a busy server the VM's thread can wait longer than the whole budget for a CPU; here a
    # browser call sleeps instead (a regression: the budget used to be wall-clock time).
    class SlowRandom(random.Random):
        def random(self):
            time.sleep(0.3)
            return 0.5

    program = [[2, 40, "Math"], [6, 41, 10, 40], [2, 42, "random"], [6, 43, 41, 42], [7, 43],
               [2, 50, "resolved"], [3, 50]]
    answer = solve(encrypt(program, "key"), "key", environment(rng=SlowRandom()),
                   max_seconds=0.1)
    assert base64.b64decode(answer).decode() == "resolved"


def test_strings_cannot_grow_without_bound():
    doubling = [[2, 40, "x" * 1000]] + [[5, 40, 40]] * 20 + [[3, 40]]
    answer = run(doubling)
    assert len(answer) < 100


@pytest.mark.parametrize("dx", ["", "not base64!", base64.b64encode(b"{}").decode(),
                                base64.b64encode("\u0100".encode()).decode()])
def test_a_dx_that_is_not_a_program_gets_the_fallback(dx):
    assert solve(dx, "key", environment()) == fallback(0)


def test_javascript_string_forms():
    js = turnstile.js_string
    assert [js(None), js(True), js(3), js(3.0), js(0.25), js(float("nan")), js([1, "a", None])] \
        == ["undefined", "true", "3", "3", "0.25", "NaN", "1,a,"]
    assert json.loads(turnstile.js_json({"a": [1, "é"]})) == {"a": [1, "é"]}


@pytest.mark.parametrize("text, key", [
    ("", "k"), ("abc", ""), ("\x00\x00ab", "ab"), ("a" * 50, "xyz"), ("\xff\x80é", "\x7f"),
    ("wide \u3042 text", "key"), ("text", "wide \u3042 key"),
])
def test_xor_text_is_a_cyclic_xor_of_the_characters(text, key):
    expected = "".join(chr(ord(c) ^ ord(key[i % len(key)])) for i, c in enumerate(text)) \
        if key else text
    assert turnstile.xor_text(text, key) == expected


@pytest.mark.parametrize("text, key", [
    ("", "k"), ("\x00\x00ab", "ab"), ("a" * 50, "xyz"), ("\xff\x80é", "\x7f"),
    ("wide \u3042 text", "key"), ("text", "wide \u3042 key"),
])
def test_the_emulators_own_xor_is_a_cyclic_xor_of_the_characters(text, key):
    expected = "".join(chr(ord(c) ^ ord(key[i % len(key)])) for i, c in enumerate(text))
    assert emulator_turnstile._xor(text, key) == expected


def test_forked_workers_draw_their_own_random_values():
    # Every answer's Math.random and the config's random slots share one generator per process
    # (no OS-seeded generator per answer); gunicorn forks its workers from one master, so each
    # child must reseed it, or all workers would send the same "random" values.
    from chatgpt_web.upstream.browser import Chrome, sentinel_config

    def draws() -> bytes:
        config = sentinel_config(Chrome.from_target("chrome136"), build_id="b", sdk_url="u")
        return f"{environment().rng.random()!r} {config[14]}".encode()

    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe and exits
        try:
            os.write(write, draws())
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(child, 0)
    with os.fdopen(read, "rb") as pipe:
        in_child = pipe.read()
    assert status == 0
    math_random, config_uuid = in_child.split()
    here = draws().split()
    assert math_random != here[0] and config_uuid != here[1]
