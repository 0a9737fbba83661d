"""The emulator's Flask app: blueprints on one loopback origin, every request recorded.

To add a part of chatgpt.com (the auth pages, say), write a blueprint and register it in
`create_emulator_app`; views reach the Emulator through `current_app.extensions["emulator"]`.
"""
from __future__ import annotations

import secrets
import time
import uuid

from flask import Blueprint, Flask, Response, request
from werkzeug.exceptions import HTTPException

from . import account_check, backend, files, images, titles, topics, turn_companions
from .failures import json_response

# Both conventions: the real path and the fakeopen-style `/api` proxies.
API_PREFIXES = ("/backend-api", "/api")

home = Blueprint("home", __name__)

BUILD_ID = "prod-e1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4"
BUILD_NUMBER = "7900123"
_HOME_PAGE = f"""<!DOCTYPE html>
<html lang="en-US" data-build="{BUILD_ID}" data-build-number="{BUILD_NUMBER}">
<head><meta charset="utf-8"><title>ChatGPT</title>
<script src="https://cdn.oaistatic.com/assets/emulator-main.js?dpl={BUILD_ID}" async></script>
<script src="/backend-api/sentinel/sdk.js" async></script></head>
<body><div id="__next">ChatGPT emulator for tests. The API lives under /backend-api and /api.
</div></body>
</html>
"""


@home.get("/")
def index():
    """The page a browser loads first: data-build, script URLs, and the site cookies: `oai-did`
    (the device id, issued once: a browser that sends one keeps it) and Cloudflare's `__cf_bm`."""
    response = Response(_HOME_PAGE, 200, content_type="text/html; charset=utf-8")
    if not request.cookies.get("oai-did"):
        response.set_cookie("oai-did", str(uuid.uuid4()), max_age=400 * 86400, path="/",
                            samesite="Lax", secure=request.is_secure)
    response.set_cookie("__cf_bm", secrets.token_urlsafe(96), max_age=1800, path="/",
                        httponly=True, samesite="Lax", secure=request.is_secure)
    return response


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _header_names_lowered(environ: dict) -> dict[str, str]:
    """The request's headers by lower-cased name: what `request.headers` lists (werkzeug's
    EnvironHeaders), read from the WSGI environ directly; every request is recorded, and the
    emulator shares the benchmark's cores (bench/concurrency.py)."""
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                headers[key[5:].replace("_", "-").lower()] = value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers[key.replace("_", "-").lower()] = value
    return headers


def create_emulator_app(emulator) -> Flask:
    """The WSGI app serving `emulator` (anything with the Emulator attributes the views use)."""
    app = Flask("chatgpt_emulator")
    app.extensions["emulator"] = emulator
    app.json.sort_keys = False

    @app.before_request
    def _record():
        if not emulator.record_requests:
            return
        raw = request.get_data(cache=True)
        environ = request.environ
        emulator.record(
            method=request.method,
            path=request.path,
            headers=_header_names_lowered(environ),
            json=request.get_json(force=True, silent=True) if raw else None,
            # Only these bodies have form fields (werkzeug parses no other); asking
            # `request.form` of a JSON body builds an empty parse all the same.
            form=request.form.to_dict() if request.mimetype in _FORM_TYPES else {},
            args=request.args.to_dict() if environ.get("QUERY_STRING") else {},
            body=raw,
            time=time.time(),
            client_port=environ.get("REMOTE_PORT"),
            http_version=environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        )

    @app.before_request
    def _delay():
        for suffix, seconds in emulator.switches.request_delays:
            if request.path.endswith(suffix):
                time.sleep(seconds)
                return

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        # FastAPI's shape for routing errors, e.g. {"detail":"Not Found"}.
        if error.response is not None:
            return error.response
        return json_response(error.code or 500, {"detail": error.name})

    for prefix in API_PREFIXES:
        app.register_blueprint(backend.blueprint, url_prefix=prefix,
                               name="backend" + prefix.replace("/", "_").replace("-", "_"))
        app.register_blueprint(account_check.blueprint, url_prefix=prefix,
                               name="account_check" + prefix.replace("/", "_").replace("-", "_"))
        # Title generation lives beside backend.py (titles.py).
        app.register_blueprint(titles.blueprint, url_prefix=prefix,
                               name="titles" + prefix.replace("/", "_").replace("-", "_"))
        # Generated images' downloads live beside the image turns (images.py).
        app.register_blueprint(images.blueprint, url_prefix=prefix,
                               name="images" + prefix.replace("/", "_").replace("-", "_"))
        # File uploads (files.py); the blob sink their upload URLs point at is below.
        app.register_blueprint(files.api, url_prefix=prefix,
                               name="files" + prefix.replace("/", "_").replace("-", "_"))
        # The optional requests around a turn (turn_companions.py).
        app.register_blueprint(turn_companions.api, url_prefix=prefix,
                               name="turn_companions" + prefix.replace("/", "_").replace("-", "_"))
        # The hand-off WebSocket's URL (topics.py; the WebSocket is a listener of its own).
        app.register_blueprint(topics.blueprint, url_prefix=prefix,
                               name="topics" + prefix.replace("/", "_").replace("-", "_"))
    app.register_blueprint(turn_companions.site)
    app.register_blueprint(files.blobs)
    app.register_blueprint(home)
    app.register_blueprint(emulator.auth.blueprint())
    return app
