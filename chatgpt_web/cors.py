"""Cross-origin requests: browser chat UIs (NextChat, LobeChat, Open WebUI, a page's own fetch).

A browser calls the API from another origin only if the service says it may. For the origins of
CORS_ORIGINS (default: none) the service answers the preflight (`OPTIONS` with
`Access-Control-Request-Method`) itself, before the key guard, since a preflight never carries
credentials, and puts `Access-Control-Allow-Origin` on every answer, errors and streams included.
The headers a client needs to read are exposed: the rate-limit state, Retry-After and the request
id. `*` allows every origin; config.py accepts it only when API keys are required, so that an
open service is never usable by any web page a visitor happens to open.

Requests from other origins get no CORS headers (the browser then refuses to hand the answer to
the page); their preflights answer 403 with a message saying which setting to change.
"""
from __future__ import annotations

from flask import Flask, Response, jsonify, request

ANY_ORIGIN = "*"
ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
EXPOSED_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After",
                   "X-Request-ID")
# Headers a page may send when it does not say which (browsers always do; a default for tools).
DEFAULT_ALLOWED_HEADERS = "Authorization, Content-Type, X-Request-ID"
MAX_AGE = 600  # seconds a browser may reuse a preflight answer
MAX_REQUESTED_HEADERS = 2000  # characters of Access-Control-Request-Headers echoed back


def allowed_origin(origin: str | None, origins: tuple[str, ...]) -> str | None:
    """The value of Access-Control-Allow-Origin for `origin`, or None when it is not allowed."""
    if not origin or not origins:
        return None
    if ANY_ORIGIN in origins:
        return ANY_ORIGIN
    return origin if origin.rstrip("/") in origins else None


def _is_preflight() -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def _preflight() -> Response:
    requested = request.headers.get("Access-Control-Request-Headers", "")
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
    # The SDKs send headers of their own (x-stainless-*, OpenAI-Beta): echo what the page asks
    # for, bounded, rather than keep a list that every new SDK version would outgrow.
    response.headers["Access-Control-Allow-Headers"] = (
        requested[:MAX_REQUESTED_HEADERS] or DEFAULT_ALLOWED_HEADERS)
    response.headers["Access-Control-Max-Age"] = str(MAX_AGE)
    return response


def init_app(app: Flask, origins: tuple[str, ...]) -> None:
    """Answer preflights and add CORS headers for `origins`; register before the key guard."""
    origins = tuple(origin.rstrip("/") for origin in origins)

    @app.before_request
    def answer_preflight():
        if not _is_preflight():
            return None
        if allowed_origin(request.headers.get("Origin"), origins) is None:
            return jsonify({"message": "this origin may not call the service from a browser: "
                                       "add it to CORS_ORIGINS", "code": "origin_not_allowed"}), 403
        return _preflight()  # Allow-Origin itself is added below, as on every answer

    @app.after_request
    def add_cors_headers(response: Response) -> Response:
        if origins and ANY_ORIGIN not in origins:
            response.vary.add("Origin")  # caches must not serve one origin's answer to another
        allowed = allowed_origin(request.headers.get("Origin"), origins)
        if allowed is None:
            return response
        response.headers["Access-Control-Allow-Origin"] = allowed
        if not _is_preflight():
            response.headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
        return response
