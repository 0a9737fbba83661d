"""How the stream reducer's work grows with the stream: N events against 4N, in one run.

    python bench/stream.py

For each stream shape, the CPU seconds to decode and reduce N and 4N events (best of 3) and the
ratio 4N/N: about 4 means work linear in the stream, about 16 quadratic.

* `messages`: N assistant messages of one word each (a hostile upstream; the hardening report
  measured 58 s for 20,000 of them before the reducer kept per-message state);
* `appends`: one message grown by N appends of 100 characters (the common case, long answers);
* `legacy`: N cumulative legacy events, each repeating the whole message so far (the 2024
  format; its events themselves grow, so its ratio is quadratic by construction and shown for
  comparison only).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chatgpt_web.upstream.stream import StreamReducer, iter_sse  # noqa: E402

N = 5_000


def _data(payload, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


def _message(mid: str, text: str, status: str = "in_progress") -> dict:
    return {"message": {"id": mid, "author": {"role": "assistant"}, "recipient": "all",
                        "content": {"content_type": "text", "parts": [text]}, "status": status,
                        "metadata": {}}, "conversation_id": "c", "error": None}


def messages(n: int) -> bytes:
    return b"".join(_data({"v": _message(f"m{i}", f"w{i}"), "c": i}, "delta")
                    for i in range(n)) + b"data: [DONE]\n\n"


def appends(n: int) -> bytes:
    piece = "0123456789" * 10
    return (_data({"v": _message("a", ""), "c": 0}, "delta")
            + b"".join(_data({"p": "/message/content/parts/0", "o": "append", "v": piece},
                             "delta") for _ in range(n)) + b"data: [DONE]\n\n")


def legacy(n: int) -> bytes:
    return b"".join(_data(_message("a", "word " * i)) for i in range(n)) + b"data: [DONE]\n\n"


def cpu_seconds(raw: bytes) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        reducer = StreamReducer()
        for event in iter_sse([raw[i:i + 4096] for i in range(0, len(raw), 4096)]):
            reducer.feed(event)
        reducer.result()
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    print(f"{'stream':<10}{'N':>8}{'cpu N (s)':>12}{'cpu 4N (s)':>12}{'ratio':>8}")
    for shape, n in ((messages, N), (appends, N), (legacy, N // 5)):
        small, large = cpu_seconds(shape(n)), cpu_seconds(shape(4 * n))
        print(f"{shape.__name__:<10}{n:>8}{small:>12.3f}{large:>12.3f}{large / small:>8.2f}")
    hostile = cpu_seconds(messages(20_000))
    print(f"20,000 messages: {hostile:.3f} s of CPU")


if __name__ == "__main__":
    main()
