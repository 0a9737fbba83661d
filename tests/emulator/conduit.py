"""Conduit tokens: what `POST /f/conversation/prepare` issues and `POST /f/conversation` checks.

A token looks like the site's (an ES256-style JWT whose payload holds conduit_uuid,
conduit_location, cluster, iat and exp, 60 s after iat); here the signature is random bytes and
the ledger remembers each token with the turn trace id of the prepare that asked for it. The write
must carry a token issued less than `lifetime` seconds ago, with the same X-Oai-Turn-Trace-Id.
"""
from __future__ import annotations

import base64
import json
import secrets
import threading
import uuid
from dataclasses import dataclass

CONDUIT_LIFETIME = 60.0


def _segment(data: dict) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_HEADER = _segment({"alg": "ES256", "typ": "JWT"})  # the same for every token


@dataclass(frozen=True)
class Conduit:
    token: str
    trace_id: str
    expires_at: float


class ConduitLedger:
    """Issued conduit tokens (thread-safe)."""

    def __init__(self) -> None:
        self._issued: dict[str, Conduit] = {}
        self._lock = threading.Lock()

    def issue(self, trace_id: str, now: float, lifetime: float = CONDUIT_LIFETIME) -> Conduit:
        claims = {"conduit_uuid": uuid.uuid4().hex, "conduit_location": "10.128.0.7:8304",
                  "cluster": "unified-emulator", "iat": int(now), "exp": int(now + lifetime)}
        token = ".".join([_HEADER, _segment(claims),
                          base64.urlsafe_b64encode(secrets.token_bytes(64)).rstrip(b"=").decode()])
        conduit = Conduit(token, trace_id, now + lifetime)
        with self._lock:
            self._issued[token] = conduit
        return conduit

    def problem(self, token: str, trace_id: str, now: float) -> str | None:
        """Why `token` may not be used for a write with `trace_id`, or None."""
        with self._lock:
            conduit = self._issued.get(token)
        if conduit is None:
            return "unknown conduit token"
        if conduit.expires_at < now:
            return "expired conduit token"
        if conduit.trace_id != trace_id:
            return "the conduit token belongs to another turn"
        return None

    def clear(self) -> None:
        with self._lock:
            self._issued.clear()
