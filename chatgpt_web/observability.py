"""Request ids, one private log line per request, and redaction of what the servers log.

Privacy rule: a log line may carry a request id, a method, a route (the URL rule, never the raw
path), a status, durations and an error *type*. It never carries a prompt, an answer, a password,
a cookie, a token, a header value or a query string. Three pieces enforce that:

* `RequestObserver`, a WSGI middleware, writes the only per-request line and counts the request
  in the metrics when the response has really ended (streams included);
* werkzeug's access log, which prints the raw request line with its query string, is dropped;
* `RedactingFilter` strips query strings and raw request lines from what the servers themselves
  log (gunicorn's "Invalid request ..." and "Error handling request <uri>" lines).
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable, Iterator

from flask import Flask, has_request_context, request

from .metrics import observe_request

REQUEST_ID_HEADER = "X-Request-ID"
UNMATCHED_ROUTE = "<unmatched>"
MAX_REQUEST_ID_LENGTH = 64

_ENVIRON_ID = "chatgpt_web.request_id"
_ENVIRON_ROUTE = "chatgpt_web.route"
ENVIRON_STARTED = "chatgpt_web.started"  # time.monotonic() when the request arrived
_NOT_ID_CHARACTER = re.compile(r"[^A-Za-z0-9._:-]")
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

access_log = logging.getLogger("chatgpt_web.access")


def request_id_from(value: str | None) -> str:
    """The caller's X-Request-ID reduced to safe characters and capped, or a new random id.

    Only letters, digits and `._:-` survive, so the id cannot forge log lines or headers.
    """
    if value:
        cleaned = _NOT_ID_CHARACTER.sub("", value)[:MAX_REQUEST_ID_LENGTH]
        if cleaned:
            return cleaned
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    """The id of the request being handled (None outside a request)."""
    return request.environ.get(_ENVIRON_ID) if has_request_context() else None


def init_app(app: Flask) -> None:
    """Give every response of `app` an X-Request-ID, log and count each request privately."""
    app.wsgi_app = RequestObserver(app.wsgi_app)

    @app.before_request
    def remember_route() -> None:
        # The URL rule ("/send_message"), not the path: a bounded set, and it holds no values.
        rule = request.url_rule
        request.environ[_ENVIRON_ROUTE] = rule.rule if rule is not None else UNMATCHED_ROUTE

    quiet_werkzeug()


class ResponseAborted(Exception):
    """Raised instead of an exception that escaped a response body after it began.

    The server then cuts the connection (the client sees the stream break) and logs only this
    bare exception: the original may quote request data, so it is reduced to its type here.
    """


class RequestObserver:
    """WSGI middleware: request id in and out, then one access line and metrics at the very end."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ: dict, start_response):
        exchange = _Exchange(environ)
        environ[_ENVIRON_ID] = exchange.request_id
        environ[ENVIRON_STARTED] = exchange.started  # the relay's x-chatgpt-web-overhead-ms

        def start_with_id(status: str, headers: list, exc_info=None):
            exchange.status = int(status[:3])
            exchange.first_byte = time.monotonic()
            headers = [(name, value) for name, value in headers
                       if name.lower() != REQUEST_ID_HEADER.lower()]
            headers.append((REQUEST_ID_HEADER, exchange.request_id))
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, start_with_id)
        except BaseException as error:
            exchange.finish("aborted", type(error).__name__)
            raise
        return _ObservedBody(body, exchange)


class _Exchange:
    """What is known about one request while it is served."""

    def __init__(self, environ: dict):
        self.environ = environ
        self.started = time.monotonic()
        self.request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        self.status = 500
        self.first_byte: float | None = None
        self.finished = False

    def finish(self, outcome: str, error: str | None = None) -> None:
        """Log the access line and count the request, once."""
        if self.finished:
            return
        self.finished = True
        ended = time.monotonic()
        route = self.environ.get(_ENVIRON_ROUTE, UNMATCHED_ROUTE)
        method = self.environ.get("REQUEST_METHOD", "")
        first_byte_ms = (self.first_byte - self.started) * 1000 if self.first_byte else -1.0
        observe_request(route, self.status, ended - self.started)
        access_log.info(
            "request_id=%s method=%s route=%s status=%d outcome=%s first_byte_ms=%.1f "
            "duration_ms=%.1f%s",
            self.request_id, method if method in _KNOWN_METHODS else "OTHER", route,
            self.status, outcome, first_byte_ms, (ended - self.started) * 1000,
            f" error={error}" if error else "",
        )


class _ObservedBody:
    """The response body, watched: how it ended decides the outcome in the access line.

    outcome=ok when the body was sent to the end, incomplete when the server closed it early
    (usually the client went away), aborted when producing it raised.
    """

    def __init__(self, body: Iterable[bytes], exchange: _Exchange):
        self._body = body
        self._exchange = exchange
        self._outcome = "incomplete"
        self._error: str | None = None

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._body
        except Exception as error:  # noqa: BLE001 - reduced to its type, then re-raised bare
            self._outcome, self._error = "aborted", type(error).__name__
            raise ResponseAborted() from None
        self._outcome = "ok"

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._exchange.finish(self._outcome, self._error)


# --- logs written by the servers -------------------------------------------------------------

# "GET /send_message?access_token=... HTTP/1.1" -> "GET /send_message?<redacted> HTTP/1.1"
_QUERY_STRING = re.compile(r"(/[^\s?'\"]*)\?[^\s'\"]*")
# gunicorn: "Invalid HTTP request line: '<the raw line>'" (the line may hold anything)
_RAW_REQUEST_LINE = re.compile(r"(request line: ?)'.*'", re.IGNORECASE | re.DOTALL)
# http.server: "code 400, message Bad request syntax ('<the raw line>')"
_BAD_SYNTAX = re.compile(r"(syntax \(|version \().*\)", re.IGNORECASE | re.DOTALL)


def redact(message: str) -> str:
    """`message` without query strings or raw request lines."""
    message = _RAW_REQUEST_LINE.sub(r"\1'<redacted>'", message)
    message = _BAD_SYNTAX.sub(r"\1<redacted>)", message)
    return _QUERY_STRING.sub(r"\1?<redacted>", message)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with `redact()`; attach it to the servers' loggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logged as is
            return True
        record.msg, record.args = redact(message), ()
        return True


class _DropWerkzeugAccessLine(logging.Filter):
    """werkzeug logs '"<method> <path?query> <version>" <status> <size>' for every request."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.endswith('"%s" %s %s'))


def install_redaction(logger: logging.Logger) -> None:
    """Attach a RedactingFilter to `logger` unless it already has one."""
    if not any(isinstance(existing, RedactingFilter) for existing in logger.filters):
        logger.addFilter(RedactingFilter())


def quiet_werkzeug() -> None:
    """Drop werkzeug's access lines (RequestObserver writes ours) and redact its other lines."""
    logger = logging.getLogger("werkzeug")
    if not any(isinstance(existing, _DropWerkzeugAccessLine) for existing in logger.filters):
        logger.addFilter(_DropWerkzeugAccessLine())
    install_redaction(logger)
