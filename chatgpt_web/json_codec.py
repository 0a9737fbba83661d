"""JSON where the service spends its time: each upstream event parsed, each outgoing chunk encoded.

orjson (when installed) parses and encodes several times faster than the standard library, which
bench/concurrency.py shows per answer. The standard library stays the reference: whatever orjson
refuses that the standard library accepts (NaN, integers beyond 64 bits, lone surrogates, keys
that are not strings) is handed to it, so both give the same results, only at different speeds.
"""
from __future__ import annotations

import json
from typing import Any

try:  # optional: without it the standard library does all the work
    import orjson
except ImportError:  # pragma: no cover - exercised only where the wheel is not installed
    orjson = None

FAST = orjson is not None


def loads(text: str | bytes) -> Any:
    """Parse one JSON document. :raise ValueError: it is not JSON."""
    if orjson is not None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # maybe JSON only the standard library takes (NaN, a huge integer...)
    return json.loads(text)


def dumps(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON (non-ASCII characters as themselves, not \\u escapes)."""
    if orjson is not None:
        try:
            return orjson.dumps(value)
        except TypeError:
            pass  # something orjson does not encode: the standard library decides
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
