"""Sentinel: chat-requirements tokens and an independent proof-of-work check (protocol §4).

A client first POSTs `/sentinel/chat-requirements` and receives a single-use token plus a PoW seed
and difficulty; the conversation POST must then carry that token and a proof whose hash clears the
difficulty. The check below recomputes the hash from scratch; it shares nothing with any solver.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import random
import secrets
import threading
from dataclasses import dataclass

ANSWER_PREFIX = "gAAAAAB"        # proof token and chat-requirements token
REQUIREMENTS_PREFIX = "gAAAAAC"  # the client's `p` in the chat-requirements body
# What chat2api, xqdoo00o, PawanOsman and ChatGPTReversed send when their search gave up.
FALLBACK_MARKER = "wQ8Lk5FbGpA2NcR9dShT6gYjU7VxZ4D"


@dataclass(frozen=True)
class Requirements:
    """One issued chat-requirements answer, remembered until its token is redeemed."""

    token: str
    persona: str
    seed: str
    difficulty: str
    pow_required: bool
    turnstile_required: bool
    arkose_required: bool
    force_login: bool

    def to_json(self) -> dict:
        """The response body of `/sentinel/chat-requirements`, keys in the real order."""
        return {
            "persona": self.persona,
            "token": self.token,
            "arkose": {"required": self.arkose_required,
                       "dx": _opaque(96) if self.arkose_required else None},
            "turnstile": {"required": self.turnstile_required,
                          "dx": _opaque(256) if self.turnstile_required else None},
            "proofofwork": {"required": self.pow_required, "seed": self.seed,
                            "difficulty": self.difficulty},
            "force_login": self.force_login,
        }


def _opaque(size: int) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode()


class SentinelLedger:
    """Issued, not yet redeemed chat-requirements tokens (thread-safe)."""

    def __init__(self) -> None:
        self._issued: dict[str, Requirements] = {}
        self._lock = threading.Lock()

    def issue(self, switches) -> Requirements:
        """A fresh token under the current switches."""
        requirements = Requirements(
            token=ANSWER_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(120)).decode(),
            persona=switches.persona,
            seed=repr(random.random()),
            difficulty=switches.pow_difficulty,
            pow_required=switches.pow_required,
            turnstile_required=switches.turnstile_required,
            arkose_required=switches.arkose_required,
            force_login=switches.force_login,
        )
        with self._lock:
            self._issued[requirements.token] = requirements
        return requirements

    def redeem(self, token: str) -> Requirements | None:
        """The requirements issued with `token`, or None if unknown or already used."""
        with self._lock:
            return self._issued.pop(token, None)

    def clear(self) -> None:
        with self._lock:
            self._issued.clear()


def decode_config(encoded: str) -> list | None:
    """The browser-config list inside a PoW-style token body, or None if it is not one."""
    try:
        config = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        return None
    return config if isinstance(config, list) else None


def check_requirements_token(p: str) -> str | None:
    """Why the client's `p` is malformed, or None if it looks like `gAAAAAC` + base64(JSON list)."""
    if not isinstance(p, str) or not p.startswith(REQUIREMENTS_PREFIX):
        return f"p must start with {REQUIREMENTS_PREFIX}"
    if decode_config(p[len(REQUIREMENTS_PREFIX):]) is None:
        return "p must carry base64 of a JSON list"
    return None


def check_proof(answer: str, seed: str, difficulty: str) -> str | None:
    """Why `answer` does not prove work for (seed, difficulty), or None if it does.

    The hash is SHA3-512 over seed + the base64 text exactly as sent; its first len(difficulty)
    hex digits must not exceed the difficulty (a lower prefix is harder).
    """
    if not answer.startswith(ANSWER_PREFIX):
        return f"the proof token must start with {ANSWER_PREFIX}"
    encoded = answer[len(ANSWER_PREFIX):]
    if encoded.startswith(FALLBACK_MARKER):
        return "the proof token is the give-up fallback, not a solution"
    if decode_config(encoded) is None:
        return "the proof token must carry base64 of a JSON list"
    digest = hashlib.sha3_512((seed + encoded).encode()).hexdigest()
    if digest[:len(difficulty)] > difficulty.lower():
        return "the proof of work does not meet the difficulty"
    return None
