"""Turnstile `dx` programs: the emulator writes one per sentinel prepare and knows its answer.

The program is a list of `[opcode, *registers]` instructions (the opcode table is in the
project's docs/protocol-requests.md). It reads the user agent and the `oai-did` from the browser
environment, computes with numbers, JSON, base64, conditionals and a sub-program, XORs with the
requirements token and resolves. The expected answer is computed here directly in Python from the
values the client announced (its User-Agent and device id), not by running any VM.
"""
from __future__ import annotations

import base64
import json
import random

WINDOW, KEY = 10, 16


def _xor(text: str, key: str) -> str:
    """Each character of `text` XOR the key's character at its position (the key repeated)."""
    try:
        data, pad = text.encode("latin-1"), key.encode("latin-1")
    except UnicodeEncodeError:  # a character above U+00FF: one by one
        return "".join(chr(ord(c) ^ ord(key[i % len(key)])) for i, c in enumerate(text))
    # The same XOR done on whole byte strings at once, as two big integers (every character
    # fits a byte here), instead of a Python step per character of a kilobyte program.
    pad = (pad * (len(data) // len(pad) + 1))[:len(data)]
    mixed = int.from_bytes(data, "big") ^ int.from_bytes(pad, "big")
    return mixed.to_bytes(len(data), "big").decode("latin-1")


def _btoa(text: str) -> str:
    return base64.b64encode(text.encode("latin-1")).decode()


def _number_text(value: float) -> str:
    """JavaScript's String(number) for the values below (integers and quarters)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def encrypt(program: list, key: str) -> str:
    """`dx`: base64 of the program's JSON, XOR-ed with the requirements token."""
    return _btoa(_xor(json.dumps(program, separators=(",", ":")), key))


def make_program(key: str, user_agent: str, device_id: str,
                 rng: random.Random) -> tuple[list, str]:
    """(program, the Turnstile token a correct VM answers for it)."""
    a, b = rng.randint(3, 40), rng.randint(41, 90)
    threshold = rng.randint(1, 100)
    program = [
        [2, 40, "navigator"], [6, 41, WINDOW, 40],
        [2, 42, "userAgent"], [6, 43, 41, 42],                  # r43 = navigator.userAgent
        [2, 44, "localStorage"], [6, 45, WINDOW, 44],
        [2, 46, "oai-did"], [24, 47, 45, 46],                   # r47 = localStorage["oai-did"]
        [2, 48, "|"], [5, 43, 48], [5, 43, 47],                 # r43 += "|" + did
        [2, 50, a], [2, 51, b], [33, 52, 50, 51], [31, 52],     # r52 = a * b + 1
        [2, 55, 4], [35, 53, 52, 55], [27, 53, 50],             # r53 = r52 / 4 - a
        [29, 54, 50, 51],                                       # r54 = a < b
        [5, 43, 48], [5, 43, 53], [5, 43, 48], [5, 43, 54],
        [2, 56, []], [5, 56, 43], [15, 57, 56], [14, 58, 57],   # JSON round trip of [r43]
        [2, 59, 0], [6, 60, 58, 59],                            # r60 = that list[0]
        [20, 60, 43, 1, 60, KEY],                               # equal: r60 ^= key
        [23, 99, 2, 60, "never: r99 is undefined"],
        [2, 61, threshold], [2, 62, 0], [21, 50, 51, 61, 31, 62],  # r62 = |a-b| > threshold
        [2, 64, "x"], [13, 65, 64],                             # try calling a string: caught
        [5, 60, 48], [5, 60, 62],
        [2, 66, [[19, 60], [18, 60], [19, 60]]], [22, 66],      # sub-run: btoa, atob, btoa
        [34, 67, 60], [8, 68, 67], [3, 68],                     # move, copy, resolve
    ]
    text = user_agent + "|" + device_id
    quarter = (a * b + 1) / 4 - a
    text += "|" + _number_text(quarter) + "|" + ("true" if a < b else "false")
    value = _xor(text, key) + "|" + ("1" if abs(a - b) > threshold else "0")
    return program, _btoa(_btoa(value))
