"""Links to generated images that point at this service: signed, expiring, opaque.

A link is `/v1/files/<id>/content?expires=<unix seconds>&sig=<hex>`:

* `id` is 128 random bits (`img-` + 32 hex digits); it names nothing upstream.
* `sig` is HMAC-SHA256(secret, "<id>.<expires>"): a link cannot be forged, and its expiry cannot
  be moved, without the secret (IMAGE_LINK_SECRET; unset, a random one kept in the Store, so that
  every worker and instance sharing the Store agrees).
* The Store keeps, for IMAGE_LINK_TTL seconds, under a hash of the secret and the id, one sealed
  record: where the image is (its asset pointer and conversation) and which account may read it
  (a pooled account's id, or the caller's own access token). It is sealed with AES-GCM under a
  key derived from the secret and the id, which the Store never holds: someone who reads the
  Store learns neither the tokens nor the pointers, and cannot build a link. Image bytes are never
  stored; each fetch reads them from the account (api/images.py).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import Forbidden, NotFound
from .store import Store

RECORD_PREFIX = "image_link:"
SECRET_KEY = "image_link_secret"
_ID = re.compile(r"img-[0-9a-f]{32}")


@dataclass(frozen=True)
class ImageSource:
    """Where a generated image is and who may read it (exactly one of account_id, access_token)."""

    pointer: str
    conversation_id: str | None
    account_id: str | None = None     # a pooled account's id (pool.py)
    access_token: str | None = None   # the caller's own ChatGPT access token


class ImageLinks:
    """Issues and opens the signed links of generated images."""

    def __init__(self, store: Store, secret: str | None, ttl: int):
        self.store = store
        self.ttl = ttl
        self._configured = secret.encode() if secret else None

    def _secret(self) -> bytes:
        if self._configured is not None:
            return self._configured
        kept = self.store.get(SECRET_KEY)
        if not isinstance(kept, str):
            with self.store.lock(SECRET_KEY + ":lock", ttl=10, wait=10):
                kept = self.store.get(SECRET_KEY)
                if not isinstance(kept, str):
                    kept = secrets.token_hex(32)
                    self.store.set(SECRET_KEY, kept)
        self._configured = kept.encode()
        return self._configured

    def _derived(self, purpose: str, link_id: str) -> bytes:
        return hmac.new(self._secret(), f"{purpose}:{link_id}".encode(), hashlib.sha256).digest()

    def _signature(self, link_id: str, expires: int) -> str:
        return hmac.new(self._secret(), f"{link_id}.{expires}".encode(),
                        hashlib.sha256).hexdigest()

    def issue(self, source: ImageSource, now: float | None = None) -> str:
        """A new link (path and query, without the origin) to the image of `source`."""
        link_id = "img-" + secrets.token_hex(16)
        expires = int(time.time() if now is None else now) + self.ttl
        nonce = os.urandom(12)
        sealed = AESGCM(self._derived("seal", link_id)).encrypt(
            nonce, json.dumps(asdict(source)).encode(), link_id.encode())
        self.store.set(RECORD_PREFIX + self._derived("key", link_id).hex(),
                       (nonce + sealed).hex(), expire=self.ttl + 60)
        signature = self._signature(link_id, expires)
        return f"/v1/files/{link_id}/content?expires={expires}&sig={signature}"

    def open(self, link_id: str, expires: str | None, signature: str | None,
             now: float | None = None) -> ImageSource:
        """The source a link names.

        :raise Forbidden: invalid_signature (forged, altered or incomplete), link_expired.
        :raise NotFound: file_not_found (a well-formed link whose record is gone).
        """
        if (not _ID.fullmatch(link_id) or not expires or not expires.isascii()
                or not expires.isdigit()
                or len(expires) > 12 or not isinstance(signature, str)
                or not hmac.compare_digest(signature.encode(),
                                           self._signature(link_id, int(expires)).encode())):
            raise Forbidden("this file link is not valid (its signature does not match)",
                            "invalid_signature")
        if int(expires) < (time.time() if now is None else now):
            raise Forbidden("this file link has expired; generate the image again",
                            "link_expired")
        raw = self.store.get(RECORD_PREFIX + self._derived("key", link_id).hex())
        try:
            sealed = bytes.fromhex(raw)
            plain = AESGCM(self._derived("seal", link_id)).decrypt(
                sealed[:12], sealed[12:], link_id.encode())
            return ImageSource(**json.loads(plain))
        except (TypeError, ValueError, InvalidTag):
            raise NotFound("this file is no longer available", "file_not_found") from None
