"""The knobs a test turns to make the emulator behave differently.

Every field is a one-liner for tests: `emulator.switches.fail_with = "cloudflare"`.
`Emulator.reset()` puts all of them back to the defaults below, in place, so references to the
object stay valid. Fields with a fixed set of values refuse anything else at assignment, so a typo
fails loudly.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from .failures import FAILURES

_CHOICES: dict[str, tuple] = {
    "fail_with": (None, *FAILURES),
    "fail_at": ("conversation", "sentinel", "any"),
    "force_format": (None, "legacy", "v1"),
    "drop_mode": ("eof", "abort"),
    "dialect": ("2026", "2024"),
    "handoff": ("off", "both", "ws", "resume", "poll"),
    "ws_fault": (None, "refuse", "break", "silent"),
}


@dataclass
class Switches:
    """Behaviour of the emulator; defaults describe a healthy free account on an easy day."""

    # --- dialect (docs/protocol-requests.md) -------------------------------------------------
    # "2026": the site as it is now (f/conversation, conduit, two-phase sentinel), which also
    # still answers the 2024 paths. "2024": a mirror that only knows the 2024 paths, so every
    # 2026 endpoint answers 404.
    dialect: str = "2026"
    # prepare/finalize exist; False makes them 404 (the one-step chat-requirements remains).
    two_phase_sentinel: bool = True
    # The 2026 sentinel sends a Turnstile dx program (and checks the answer).
    turnstile_dx: bool = True
    # The 2026 prepare asks for an `so` session observer (which clients may skip).
    so_required: bool = False
    # Conduit tokens: seconds they live; how many prepares answer `conduit_token: null` first.
    conduit_lifetime: float = 60.0
    conduit_null_times: int = 0
    # Refuse a write whose Oai-Device-Id is not its oai-did cookie.
    strict_device_id: bool = True
    # The write hands the answer off (stream_handoff, no text; topics.py, backend.py), offering:
    # "both": the WebSocket topic and /f/conversation/resume, either of which streams it; "ws":
    # the topic only (resume answers 404); "resume": the resume endpoint only; "poll": both, but
    # neither has the turn (the topic closes after its reply, resume answers 404): the client
    # must read GET /conversation/{id}. "off": answers inline (image turns still hand off,
    # offering both).
    handoff: str = "off"
    # The hand-off WebSocket (topics.py): "refuse" answers its handshake 403; "break" cuts the
    # connection after `ws_break_after` pushed items; "silent" sends them, then nothing more (no
    # `done`, the connection held open). Items of the turn sent inside the subscribe reply's
    # `catchups` before the pushed ones: `ws_catchups`.
    ws_fault: str | None = None
    ws_break_after: int = 3
    ws_catchups: int = 2
    # Answer the write with 403 "Unusual activity" this many times (a refused bundle).
    reject_writes: int = 0

    # --- the answer -------------------------------------------------------------------------
    # None: answer "Echo: <text of the last user message>".
    answer: str | None = None
    # Called with the request's JSON body; wins over `answer`.
    answer_fn: Callable[[dict], str] | None = None
    # None: v1 iff the request lists "v1" in supported_encodings, else legacy.
    force_format: str | None = None
    # Words of answer text per streamed delta (whitespace stays attached to the word before it).
    words_per_delta: int = 1
    # The answer is cut into N+1 pieces; the first N turns end with finish_details "max_tokens".
    max_tokens_cuts: int = 0
    # A reasoning turn (2026 stream): these thoughts stream in the analysis channel first.
    reasoning: str | None = None
    # The model that answered (None: the one asked): the answering message's metadata and
    # server_ste_metadata name it.
    served_model: str | None = None
    # server_ste_metadata names this internal slug instead (the Jan-2026 capture: `i-mini` while
    # the message says `gpt-5-2`).
    internal_model: str | None = None
    # conversation_detail_metadata carries the account_sharing_degrade banner.
    degraded: bool = False
    # Slugs GET /models lists beyond the usual ones (a model newer than the service's table).
    extra_models: tuple = ()
    # (email, slugs) pairs: that account's GET /models lists only those slugs (a free account
    # next to a paid one); the others list the usual ones.
    models_of: tuple = ()

    # --- how the bytes travel ---------------------------------------------------------------
    # (path suffix, seconds) pairs: a request whose path ends with the suffix waits that long
    # before it is answered, as over a distant site's round trip ("" matches every path).
    request_delays: tuple = ()
    # Split the byte stream at arbitrary points (seeded); False writes one event per chunk.
    chunking: bool = True
    chunk_seed: int = 0
    # Seconds slept between two written chunks.
    chunk_delay: float = 0.0
    # Interleave `event: ping` events and bare timestamp heartbeats.
    pings: bool = True

    # --- sentinel (docs/protocol-requests.md) -----------------------------------------------
    persona: str = "chatgpt-freeaccount"
    pow_required: bool = True
    pow_difficulty: str = "0fffff"
    turnstile_required: bool = False
    arkose_required: bool = False
    force_login: bool = False
    # Reject chat-requirements calls without the client's `p` token with 400.
    require_requirements_token: bool = True

    # --- limits -----------------------------------------------------------------------------
    # Total characters of text in one request's messages above which the answer is
    # 400 message_length_exceeds_limit.
    max_prompt_chars: int = 100_000

    # --- injected HTTP failures, see failures.py --------------------------------------------
    fail_with: str | None = None
    # Which endpoint fails: the conversation POST, the chat-requirements POST, or every API call.
    fail_at: str = "conversation"
    # Fail this many times, then behave normally again; None fails every time.
    fail_times: int | None = None
    # `clears_in` seconds reported by the "rate_limit" failure.
    clears_in: int = 60

    # --- faults inside a 200 stream ---------------------------------------------------------
    # Text of an in-stream {"error": ...} event sent halfway through the answer.
    stream_error: str | None = None
    # The user message is blocked by moderation: no assistant text, a blocked moderation event.
    moderation_blocked: bool = False
    # Stop the stream after this many events (pings not counted), before [DONE].
    drop_after_events: int | None = None
    # "eof": end the body cleanly; "abort": cut the TCP connection mid-body.
    drop_mode: str = "eof"

    # --- replay -----------------------------------------------------------------------------
    # Stream this recorded SSE file (or these bytes) instead of generating an answer.
    replay_file: str | Path | None = None
    replay_bytes: bytes | None = None

    def __setattr__(self, name: str, value) -> None:
        if name not in self.__dataclass_fields__:
            raise AttributeError(f"Switches has no switch named {name!r}")
        if name in _CHOICES and value not in _CHOICES[name]:
            raise ValueError(f"switches.{name} must be one of {_CHOICES[name]}, not {value!r}")
        super().__setattr__(name, value)

    def restore_defaults(self) -> None:
        """Put every switch back to its default value."""
        for spec in fields(self):
            setattr(self, spec.name, spec.default)
