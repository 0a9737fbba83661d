"""Sentinel: chat-requirements tokens and an independent proof-of-work check.

2024: a client POSTs `/sentinel/chat-requirements` and receives a single-use token plus a PoW seed
and difficulty; the conversation POST must then carry that token and a proof whose hash clears the
difficulty.

2026: `/sentinel/chat-requirements/prepare {p}` issues a `prepare_token`, a PoW challenge and a
Turnstile `dx` program (encrypted with that exact `p`); `/finalize {prepare_token, proofofwork,
turnstile}` checks both answers and issues the requirements token. Token, proof and Turnstile
answer form one bundle that the write must carry unchanged, once.

The checks below recompute the hashes from scratch (SHA3-512 for plain proofs, FNV-1a + fmix32
for proofs ending in "~S"); they share nothing with any solver.
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

from .turnstile import encrypt, make_program

ANSWER_PREFIX = "gAAAAAB"        # proof token and chat-requirements token
REQUIREMENTS_PREFIX = "gAAAAAC"  # the client's `p` in the chat-requirements body
FNV_SUFFIX = "~S"                # a 2026 proof: FNV-1a + fmix32 instead of SHA3-512
UNUSUAL_ACTIVITY = "Unusual activity has been detected from your device. Try again later."
BUNDLE_LIFETIME = 540            # seconds, as finalize's expire_after says
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
    turnstile_dx: str | None = None       # a program (2026 dialect), encrypted with the `p`
    turnstile_answer: str | None = None   # what a correct VM answers for it

    def to_json(self) -> dict:
        """The response body of `/sentinel/chat-requirements`, keys in the real order."""
        turnstile = ({"required": True, "dx": self.turnstile_dx} if self.turnstile_dx
                     else {"required": self.turnstile_required, "dx": None})
        return {
            "persona": self.persona,
            "token": self.token,
            "arkose": {"required": self.arkose_required,
                       "dx": _opaque(96) if self.arkose_required else None},
            "turnstile": turnstile,
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

    def issue(self, switches, *, program: tuple[list, str] | None = None,
              key: str | None = None) -> Requirements:
        """A fresh token under the current switches; with `program` (a Turnstile program and its
        answer) and the client's `p` as `key`, a `dx` to solve."""
        requirements = Requirements(
            token=ANSWER_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(120)).decode(),
            persona=switches.persona,
            seed=repr(random.random()),
            difficulty=switches.pow_difficulty,
            pow_required=switches.pow_required,
            turnstile_required=switches.turnstile_required,
            arkose_required=switches.arkose_required,
            force_login=switches.force_login,
            turnstile_dx=encrypt(program[0], key) if program and key else None,
            turnstile_answer=program[1] if program and key else None,
        )
        with self._lock:
            self._issued[requirements.token] = requirements
        return requirements

    def known(self, token: str) -> bool:
        """Whether `token` was issued and not yet redeemed."""
        with self._lock:
            return token in self._issued

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


def fnv_fmix_hex(text: str) -> str:
    """FNV-1a-32 over the UTF-16 code units of `text`, then murmur3's fmix32; 8 hex digits."""
    h = 0x811C9DC5
    data = text.encode("utf-16-le")
    for i in range(0, len(data), 2):
        h = ((h ^ int.from_bytes(data[i:i + 2], "little")) * 0x01000193) % 2**32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) % 2**32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) % 2**32
    h ^= h >> 16
    return f"{h:08x}"


def check_proof(answer: str, seed: str, difficulty: str) -> str | None:
    """Why `answer` does not prove work for (seed, difficulty), or None if it does.

    The hash is over seed + the base64 text exactly as sent: FNV-1a + fmix32 when the token ends
    in "~S" (2026), SHA3-512 otherwise (2024). Its first len(difficulty) hex digits must not
    exceed the difficulty (a lower prefix is harder).
    """
    if not answer.startswith(ANSWER_PREFIX):
        return f"the proof token must start with {ANSWER_PREFIX}"
    encoded = answer[len(ANSWER_PREFIX):]
    if encoded.endswith(FNV_SUFFIX):
        encoded = encoded[:-len(FNV_SUFFIX)]
        if decode_config(encoded) is None:
            return "the proof token must carry base64 of a JSON list"
        if fnv_fmix_hex(seed + encoded)[:len(difficulty)] > difficulty.lower():
            return "the proof of work does not meet the difficulty"
        return None
    if encoded.startswith(FALLBACK_MARKER):
        return "the proof token is the give-up fallback, not a solution"
    if decode_config(encoded) is None:
        return "the proof token must carry base64 of a JSON list"
    digest = hashlib.sha3_512((seed + encoded).encode()).hexdigest()
    if digest[:len(difficulty)] > difficulty.lower():
        return "the proof of work does not meet the difficulty"
    return None


# --- 2026: two-phase challenges and single-use bundles ----------------------------------------

@dataclass(frozen=True)
class Challenge:
    """One prepare answer, remembered until finalize redeems its prepare_token."""

    prepare_token: str
    persona: str
    seed: str
    difficulty: str
    pow_required: bool
    turnstile_dx: str | None
    turnstile_answer: str | None   # what a correct VM answers for turnstile_dx
    widget_required: bool          # a Turnstile without dx: needs a real browser
    arkose_required: bool
    so_required: bool
    force_login: bool

    def to_json(self) -> dict:
        """The prepare response body."""
        turnstile = ({"required": True, "dx": self.turnstile_dx} if self.turnstile_dx
                     else {"required": self.widget_required})
        body = {
            "persona": self.persona,
            "prepare_token": self.prepare_token,
            "turnstile": turnstile,
            "proofofwork": {"required": self.pow_required, "seed": self.seed,
                            "difficulty": self.difficulty},
            "so": {"required": self.so_required,
                   "collector_dx": _opaque(48) if self.so_required else None,
                   "snapshot_dx": _opaque(48) if self.so_required else None},
            "force_login": self.force_login,
        }
        if self.arkose_required:
            body["arkose"] = {"required": True, "dx": _opaque(96)}
        return body


@dataclass(frozen=True)
class Bundle:
    """A finalized requirements token with the exact proof and Turnstile answer it was given."""

    token: str
    proof: str | None
    turnstile: str | None
    expires_at: float


class TwoPhaseLedger:
    """Prepared challenges and finalized bundles (thread-safe); each is redeemed once."""

    def __init__(self) -> None:
        self._challenges: dict[str, Challenge] = {}
        self._bundles: dict[str, Bundle] = {}
        self._lock = threading.Lock()

    def prepare(self, switches, *, p: str, user_agent: str, device_id: str,
                rng: random.Random) -> Challenge:
        dx = answer = None
        if switches.turnstile_dx and not switches.turnstile_required:
            program, answer = make_program(p, user_agent, device_id, rng)
            dx = encrypt(program, p)
        opaque = base64.urlsafe_b64encode(secrets.token_bytes(96)).decode()
        challenge = Challenge(
            prepare_token=ANSWER_PREFIX + opaque,
            persona=switches.persona, seed=repr(rng.random()), difficulty=switches.pow_difficulty,
            pow_required=switches.pow_required, turnstile_dx=dx, turnstile_answer=answer,
            widget_required=switches.turnstile_required, arkose_required=switches.arkose_required,
            so_required=switches.so_required, force_login=switches.force_login)
        with self._lock:
            self._challenges[challenge.prepare_token] = challenge
        return challenge

    def take_challenge(self, prepare_token) -> Challenge | None:
        with self._lock:
            return self._challenges.pop(prepare_token, None) if isinstance(
                prepare_token, str) else None

    def issue_bundle(self, proof: str | None, turnstile: str | None, now: float) -> Bundle:
        bundle = Bundle(ANSWER_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(120)).decode(),
                        proof, turnstile, now + BUNDLE_LIFETIME)
        with self._lock:
            self._bundles[bundle.token] = bundle
        return bundle

    def redeem(self, token: str) -> Bundle | None:
        """The bundle of `token`, or None if unknown or already used."""
        with self._lock:
            return self._bundles.pop(token, None)

    def clear(self) -> None:
        with self._lock:
            self._challenges.clear()
            self._bundles.clear()
