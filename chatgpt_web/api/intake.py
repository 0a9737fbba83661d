"""What reading a request may cost: a size limit, JSON nesting, and bodies that break mid-read.

- A body larger than MAX_REQUEST_BYTES is refused with 413 `request_too_large`: from its
  Content-Length before a byte of it is read (and before the key check, which may read the
  `api_key` field from the body), and while reading a chunked body, which has no length.
- JSON nested so deeply that the parser gives up (RecursionError) is malformed JSON, as to the
  caller it is: readers that ask for it silently get None, the others 400.
- `client_gone()` tells a non-streamed answer that its caller has closed the connection, so
  that the upstream transfer stops instead of being read to its end. Only gunicorn shows the
  connection (`gunicorn.socket`); under another server (Vercel, the development server) the
  answer is still read to its end, bounded by REQUEST_TIMEOUT.
- A body the server cannot deliver (malformed chunked encoding, a client that stops half-way)
  is the caller's fault: 400 `invalid_body`, never 500. The WSGI server raises its own exception
  types for these, so anything but our own errors raised while reading the body is taken as that.
"""
from __future__ import annotations

import select
import socket

from flask import Flask, Request, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..errors import ApiError, BadRequest, PayloadTooLarge


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than {limit} bytes (MAX_REQUEST_BYTES)",
                           "request_too_large", headers={"Connection": "close"})


class IntakeRequest(Request):
    """Flask's request, with the reading failures above turned into the service's errors.

    Werkzeug reads a body without Content-Length (chunked) up to MAX_CONTENT_LENGTH and silently
    stops there, so a longer body would arrive cut. The limit given to Werkzeug is therefore one
    byte more than ours: a body that reaches it was longer than allowed and is refused whole.
    """

    def _read(self, read):
        try:
            return read()
        except RequestEntityTooLarge:
            raise _too_large(self._limit) from None
        except (ApiError, HTTPException):
            raise
        except Exception:  # noqa: BLE001 - the server's own exception for a broken body
            raise BadRequest("the request body could not be read (malformed chunked encoding "
                             "or a body shorter than announced)", "invalid_body") from None

    @property
    def _limit(self) -> int:
        return (self.max_content_length or 1) - 1

    def get_data(self, *args, **kwargs):
        data = self._read(lambda: super(IntakeRequest, self).get_data(*args, **kwargs))
        if isinstance(data, (bytes, str)) and len(data) > self._limit:
            raise _too_large(self._limit)
        return data

    def _load_form_data(self) -> None:
        if self.content_length is None and "form" not in self.__dict__:
            self.get_data(cache=True)  # a chunked form: counted whole first, then parsed
        self._read(super()._load_form_data)


class IntakeJSON(DefaultJSONProvider):
    """Flask's JSON, reading a too deeply nested document as the malformed JSON it is."""

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("the JSON document is nested too deeply") from None


def client_gone() -> bool:
    """True if the caller of the current request has closed its connection (gunicorn only)."""
    sock = request.environ.get("gunicorn.socket")
    if not isinstance(sock, socket.socket):
        return False
    try:
        # poll, not select: a busy worker's descriptors go past select()'s limit of 1024.
        watch = select.poll()
        watch.register(sock, select.POLLIN)
        readable = watch.poll(0)
        # Readable with nothing to read is the peer's FIN; bytes would be a pipelined request.
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def init_app(app: Flask, max_request_bytes: int) -> None:
    """Install the request class, the JSON reader and the size check (before any other check)."""
    app.request_class = IntakeRequest
    app.json = IntakeJSON(app)
    # Werkzeug enforces this while reading (chunked bodies) and for form fields held in memory.
    app.config["MAX_CONTENT_LENGTH"] = max_request_bytes + 1  # see IntakeRequest
    app.config["MAX_FORM_MEMORY_SIZE"] = max_request_bytes

    @app.before_request
    def refuse_large_bodies() -> None:
        length = request.content_length
        if length is not None and length > max_request_bytes:
            raise _too_large(max_request_bytes)
