"""The sentinel's Turnstile `dx`: a small register-machine program, run in a VM of our own.

`dx` is base64 of a JSON program XOR-ed (cyclically, character by character) with the exact
requirements token `p` that was sent to the sentinel. The program is a list of instructions
`[opcode, *operands]`; operands name registers, except the literal of SET. It reads a browser
environment that we describe (`BrowserEnvironment`) and resolves with a value whose
`btoa(String(value))` is the Turnstile token. docs/protocol-requests.md lists the opcodes.

A program is input from the network, so the VM is bounded: at most `max_steps` instructions and
`max_seconds` of CPU time, strings capped at `MAX_STRING` characters, no recursion beyond
`MAX_DEPTH`. Whatever goes wrong (unknown opcode, bad operand, a budget spent), the answer is what
the browser SDK sends when its program does not finish: `btoa(String(steps taken))`. The VM never
raises; the site decides what a fallback answer is worth.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import os
import random
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

MAX_PROGRAM_CHARS = 1_000_000
MAX_STRING = 100_000
MAX_DEPTH = 8
DEFAULT_MAX_STEPS = 50_000
DEFAULT_MAX_SECONDS = 0.1  # the SDK resolves with its step count after 100 ms
# The time budget is checked every this many steps: reading the thread's CPU clock is a system
# call that costs about as much as a step, and no step can take long (strings are capped).
CLOCK_EVERY = 16

# Registers with a fixed meaning.
QUEUE, WINDOW, KEY = 9, 10, 16


# What a BrowserEnvironment's Math.random draws from unless it is given a generator: one for
# all runs (a new Random() seeds itself from the OS at each answer), reseeded in a forked worker
# as the random module reseeds its own.
_RANDOM = random.Random()
os.register_at_fork(after_in_child=_RANDOM.seed)


class _Stop(Exception):
    """Ends a run: `value` is what the program resolved with, or None for the fallback."""

    def __init__(self, value=None, resolved: bool = False):
        super().__init__()
        self.value, self.resolved = value, resolved


@dataclass
class BrowserEnvironment:
    """What the program may read through `window` (a browser that matches our other headers)."""

    user_agent: str
    device_id: str
    origin: str = "https://chatgpt.com"
    language: str = "en-US"
    languages: tuple[str, ...] = ("en-US", "en")
    screen: tuple[int, int] = (1920, 1080)
    cores: int = 8
    script_src: str = ""
    clock: Callable[[], float] = time.perf_counter
    rng: random.Random = _RANDOM

    def window(self) -> dict:
        started = self.clock()
        local_storage = {"oai-did": self.device_id,
                         "oai/apps/hasSeenOnboarding": "true",
                         "STATSIG_LOCAL_STORAGE_STABLE_ID": self.device_id}
        location = {"href": self.origin + "/", "origin": self.origin,
                    "hostname": self.origin.split("://", 1)[-1], "pathname": "/", "search": ""}
        return {
            "navigator": {"userAgent": self.user_agent, "language": self.language,
                          "languages": list(self.languages), "hardwareConcurrency": self.cores,
                          "webdriver": False, "vendor": "Google Inc.", "cookieEnabled": True,
                          "platform": "Win32" if "Windows" in self.user_agent else "MacIntel"},
            "screen": {"width": self.screen[0], "height": self.screen[1],
                       "availWidth": self.screen[0], "availHeight": self.screen[1] - 40,
                       "colorDepth": 24},
            "localStorage": local_storage,
            "location": location,
            "document": {"location": location, "scripts": [{"src": self.script_src}]},
            "history": {"length": 2},
            "performance": {"now": lambda: round((self.clock() - started) * 1000, 1)},
            "Math": {"random": self.rng.random, "abs": abs, "floor": math.floor},
            "Object": {"keys": lambda obj: list(obj) if isinstance(obj, dict) else []},
            "JSON": {"stringify": js_json, "parse": json.loads},
        }


def js_string(value) -> str:
    """`String(value)` as JavaScript writes it, for the values a program can hold."""
    if value is None:
        return "undefined"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join("" if item is None else js_string(item) for item in value)
    if callable(value):
        return "function () { [native code] }"
    return "[object Object]"


def js_json(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=lambda _: None)


def xor_text(text: str, key: str) -> str:
    """Cyclic XOR of the characters of `text` with those of `key` (empty key: unchanged)."""
    if not key:
        return text
    size = len(text)
    try:
        # Latin-1 text and key (what atob gives and the usual keys are): one XOR of two big
        # integers instead of a Python step per character; the same characters.
        data, pad = text.encode("latin-1"), (key * (size // len(key) + 1))[:size].encode("latin-1")
    except UnicodeEncodeError:
        return "".join(chr(ord(c) ^ ord(key[i % len(key)])) for i, c in enumerate(text))
    mixed = int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")
    return mixed.to_bytes(size, "big").decode("latin-1")


def btoa(text: str) -> str:
    """`btoa`: base64 of a Latin-1 string (characters above U+00FF are an error in JS)."""
    return base64.b64encode(text.encode("latin-1")).decode()


def atob(text: str) -> str:
    return base64.b64decode(text, validate=True).decode("latin-1")


def decode_program(dx: str, key: str) -> list | None:
    """The instruction list inside `dx`, or None when it is not one."""
    if not isinstance(dx, str) or len(dx) > MAX_PROGRAM_CHARS:
        return None
    try:
        program = json.loads(xor_text(atob(dx), key))
    except (binascii.Error, ValueError, UnicodeError):
        return None
    return program if isinstance(program, list) else None


def solve(dx: str, key: str, environment: BrowserEnvironment, *,
          max_steps: int = DEFAULT_MAX_STEPS, max_seconds: float = DEFAULT_MAX_SECONDS) -> str:
    """The Turnstile token for `dx`; the SDK's fallback answer when the program does not resolve."""
    program = decode_program(dx, key)
    if program is None:
        return btoa("0")
    vm = _Machine(environment, key, max_steps, max_seconds)
    return vm.run(program)


class _Machine:
    """One run of one program: registers, the instruction queue and the budgets."""

    def __init__(self, environment: BrowserEnvironment, key: str, max_steps: int,
                 max_seconds: float):
        self.registers: dict = {WINDOW: environment.window(), KEY: key}
        self.steps = 0
        self.max_steps = max_steps
        # The time budget counts this thread's own CPU time: on a busy server the thread may
        # wait for a CPU (or the GIL) longer than the whole budget, and that wait is not work
        # the program made us do.
        self.deadline = time.thread_time() + max_seconds
        self.depth = 0

    def run(self, program: list) -> str:
        try:
            self._execute_all(program)
        except _Stop as stop:
            if stop.resolved:
                try:
                    return btoa(_capped(js_string(stop.value)))
                except (UnicodeError, ValueError):
                    pass
        except (ArithmeticError, KeyError, IndexError, TypeError, ValueError, AttributeError,
                UnicodeError, RecursionError, OverflowError):
            pass
        return btoa(str(self.steps))

    def _execute_all(self, program: list) -> None:
        queue = deque(program)
        while queue:
            instruction = queue.popleft()
            more = self._step(instruction)
            if more:
                queue.extendleft(reversed(more))

    def _step(self, instruction) -> list | None:
        self.steps = steps = self.steps + 1
        if steps > self.max_steps or (
                not steps % CLOCK_EVERY and time.thread_time() > self.deadline):
            raise _Stop()
        if not isinstance(instruction, list) or not instruction:
            raise _Stop()
        opcode, *args = instruction
        operation = _OPERATIONS.get(opcode) if isinstance(opcode, int) else None
        if operation is None:
            raise _Stop()  # unknown opcode: the fallback answer
        return operation(self, *args)

    # --- helpers the operations use ---------------------------------------------------------

    def get(self, register):
        _check_register(register)
        return self.registers.get(register)

    def set(self, register, value) -> None:
        _check_register(register)
        if register == QUEUE:
            raise _Stop()
        if isinstance(value, str):
            value = _capped(value)
        self.registers[register] = value

    def nested(self, instruction: list) -> None:
        """Run one instruction now (the conditional and sub-run forms)."""
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Stop()
            more = self._step(instruction)
            if more:
                self._execute_all(more)
        finally:
            self.depth -= 1


def _check_register(register) -> None:
    if type(register) is not int or not 0 <= register < 4096:  # a bool is no register either
        raise _Stop()


def _capped(text: str) -> str:
    if len(text) > MAX_STRING:
        raise _Stop()
    return text


def _number(value) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value) if value.strip() else 0
        except ValueError:
            return math.nan
    return math.nan


def _js_add(left, right):
    if isinstance(left, list):
        return [*left, right]
    if isinstance(left, str) or isinstance(right, str) or not isinstance(left, (int, float)) \
            or not isinstance(right, (int, float)):
        return js_string(left) + js_string(right)
    return left + right


def _property(target, name):
    if isinstance(target, dict):
        return target.get(js_string(name))
    if isinstance(target, (list, str)):
        if name == "length":
            return len(target)
        index = _number(name)
        if not math.isnan(index) and float(index).is_integer() and 0 <= index < len(target):
            return target[int(index)]
    return None


def _call(function, arguments: list):
    if not callable(function):
        raise TypeError("not a function")  # what JavaScript throws; a try/catch may catch it
    if len(arguments) > 16:
        raise _Stop()
    return function(*arguments)


# opcode -> operation(machine, *operands); an operation may return instructions to run next.
def _xor(m, a, b):
    m.set(a, xor_text(js_string(m.get(a)), js_string(m.get(b))))


def _set(m, a, literal):
    m.set(a, literal)


def _resolve(m, a, *_):
    raise _Stop(m.get(a), resolved=True)


def _reject(m, a, *_):
    raise _Stop()


def _add(m, a, b):
    m.set(a, _js_add(m.get(a), m.get(b)))


def _get(m, a, target, name):
    m.set(a, _property(m.get(target), m.get(name)))


def _call_op(m, function, *arguments):
    _call(m.get(function), [m.get(r) for r in arguments])


def _copy(m, a, b):
    m.set(a, m.get(b))


def _script_src(m, a, pattern):
    scripts = _property(_property(m.get(WINDOW), "document"), "scripts") or []
    regex = js_string(m.get(pattern))
    if len(regex) > 200:
        raise _Stop()
    for script in scripts:
        match = re.search(regex, js_string(_property(script, "src")))
        if match:
            m.set(a, match.group(0))
            return
    m.set(a, None)


def _registers(m, a):
    m.set(a, {js_string(k): v for k, v in m.registers.items() if k not in (QUEUE, KEY)})


def _try_call(m, a, function, *arguments):
    try:
        m.set(a, _call(m.get(function), [m.get(r) for r in arguments]))
    except _Stop:
        raise
    except Exception as error:  # noqa: BLE001 - a JS try/catch stores the error's text
        m.set(a, js_string(type(error).__name__))


def _json_parse(m, a, b):
    text = js_string(m.get(b))
    m.set(a, json.loads(text))


def _json_stringify(m, a, b):
    m.set(a, js_json(m.get(b)))


def _call_set(m, a, function, *arguments):
    m.set(a, _call(m.get(function), [m.get(r) for r in arguments]))


def _atob(m, a):
    m.set(a, atob(js_string(m.get(a))))


def _btoa(m, a):
    m.set(a, btoa(js_string(m.get(a))))


def _if_equal(m, a, b, *instruction):
    if m.get(a) == m.get(b):
        m.nested(list(instruction))


def _if_far(m, a, b, limit, *instruction):
    if abs(_number(m.get(a)) - _number(m.get(b))) > _number(m.get(limit)):
        m.nested(list(instruction))


def _sub_run(m, program):
    instructions = m.get(program)
    if not isinstance(instructions, list):
        raise _Stop()
    m.depth += 1
    try:
        if m.depth > MAX_DEPTH:
            raise _Stop()
        m._execute_all(instructions)
    finally:
        m.depth -= 1


def _if_defined(m, a, *instruction):
    if m.get(a) is not None:
        m.nested(list(instruction))


def _subtract(m, a, b):
    left, right = m.get(a), m.get(b)
    if isinstance(left, list):
        m.set(a, [item for item in left if item != right])
    else:
        m.set(a, _number(left) - _number(right))


def _less_than(m, a, b, c):
    m.set(a, _number(m.get(b)) < _number(m.get(c)))


def _increment(m, a):
    m.set(a, _number(m.get(a)) + 1)


def _multiply(m, a, b, c):
    m.set(a, _number(m.get(b)) * _number(m.get(c)))


def _divide(m, a, b, c):
    divisor = _number(m.get(c))
    dividend = _number(m.get(b))
    if divisor == 0:
        m.set(a, math.nan if dividend == 0 or math.isnan(dividend)
              else math.copysign(math.inf, dividend))
    else:
        m.set(a, dividend / divisor)


_OPERATIONS: dict[int, Callable] = {
    1: _xor, 2: _set, 3: _resolve, 4: _reject, 5: _add, 6: _get, 7: _call_op, 8: _copy,
    11: _script_src, 12: _registers, 13: _try_call, 14: _json_parse, 15: _json_stringify,
    17: _call_set, 18: _atob, 19: _btoa, 20: _if_equal, 21: _if_far, 22: _sub_run,
    23: _if_defined, 24: _get, 27: _subtract, 29: _less_than, 31: _increment, 33: _multiply,
    34: _copy, 35: _divide,
}
OPCODES = frozenset(_OPERATIONS)
