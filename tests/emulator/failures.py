"""Canned non-success answers of the ChatGPT backend, one per kind the real site answers
(chatgpt_web/upstream/errors.py translates each).

`switches.fail_with = "<name>"` makes the targeted endpoint answer `FAILURES[name]`; the emulator's
own checks (JWT, sentinel, prompt length) answer with the same builders, so an injected failure and
a provoked one are byte-identical.

Shapes whose real text no peer recorded (message too long, sentinel refusal) are plausible
stand-ins; the status and `code` are what clients key on. FastAPI, which serves the real backend,
writes compact JSON, hence the separators below.
"""
from __future__ import annotations

import json
from collections.abc import Callable

from flask import Response

# Seen verbatim as HTTP 429 in acheong08/ChatGPT#1274 and acheong08/ChatGPTProxy#32 (2023).
ONLY_ONE_MESSAGE = ("Only one message at a time. Please allow any other responses to complete "
                    "before sending another message, or wait one minute.")
TOO_LONG = ("The message you submitted was too long, please reload the conversation and submit "
            "something shorter.")

_CLOUDFLARE_PAGE = """<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8">
<meta name="robots" content="noindex,nofollow"></head>
<body><div class="main-wrapper" role="main"><div class="main-content">
<h1 class="zone-name-title h1">chatgpt.com</h1>
<h2 class="h2" id="challenge-running">Checking if the site connection is secure</h2>
<noscript><div id="challenge-error-title">Enable JavaScript and cookies to continue</div></noscript>
<div id="message">chatgpt.com needs to review the security of your connection before
proceeding.</div>
</div></div>
<script>(function(){window._cf_chl_opt={cvId: '2',cZone: 'chatgpt.com',cType: 'managed',
cRay: '8b0c0ffee0000000',cH: 'emulated'};var cpo=document.createElement('script');
cpo.src='/cdn-cgi/challenge-platform/h/g/orchestrate/chl_page/v1?ray=8b0c0ffee0000000';
document.getElementsByTagName('head')[0].appendChild(cpo);}());</script></body></html>
"""

_NOT_JSON_PAGE = """<!DOCTYPE html><html><head><title>ChatGPT</title></head>
<body><div id="__next">Something unexpected happened. This is not an event stream.</div>
</body></html>
"""


def json_response(status: int, body) -> Response:
    """A JSON answer written the way the real backend writes it (compact separators)."""
    return Response(json.dumps(body, separators=(",", ":")), status,
                    content_type="application/json")


def detail_error(status: int, code: str, message: str, **extra) -> Response:
    """`{"detail": {"message", "code", ...}}`, the 2024 error shape."""
    return json_response(status, {"detail": {"message": message, "code": code, **extra}})


def _text(status: int, body: str, content_type: str = "text/plain; charset=utf-8", **headers):
    return Response(body, status, content_type=content_type, headers=headers)


# name -> builder taking the current Switches.
FAILURES: dict[str, Callable[..., Response]] = {
    "token_expired": lambda switches: detail_error(
        401, "token_expired",
        "Your authentication token has expired. Please try signing in again."),
    "invalid_token": lambda switches: detail_error(
        401, "invalid_jwt",
        "Could not parse your authentication token. Please try signing in again."),
    "cloudflare": lambda switches: _text(
        403, _CLOUDFLARE_PAGE, "text/html; charset=UTF-8",
        **{"Server": "cloudflare", "cf-mitigated": "challenge"}),
    "rate_limit": lambda switches: detail_error(
        429, "model_cap_exceeded",
        "You have sent too many messages to the model. Please try again later.",
        clears_in=switches.clears_in),
    "rate_limit_text": lambda switches: _text(429, "Too Many Requests"),
    "server_error": lambda switches: _text(500, "Internal Server Error"),
    "too_long": lambda switches: detail_error(400, "message_length_exceeds_limit", TOO_LONG),
    "not_json": lambda switches: _text(200, _NOT_JSON_PAGE, "text/html; charset=utf-8"),
    "only_one_message": lambda switches: json_response(429, {"detail": ONLY_ONE_MESSAGE}),
    "not_found": lambda switches: json_response(404, {"detail": "Conversation not found"}),
    "sentinel_failed": lambda switches: detail_error(
        403, "sentinel_failed",
        "Unusual activity has been detected from your device. Try again later."),
}
