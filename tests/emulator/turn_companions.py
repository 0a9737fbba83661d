"""The requests a browser makes around a turn that a client may skip, and Cloudflare's trace:

    POST /conversation/init     {"conversation_id": null | id, ...}
      -> the conversation_detail_metadata object (limits, default model, the downgrade banner)
    GET  /conversation/{id}/stream_status
      -> {"status": "COMPLETE"} once the assistant's last message is finished, else IN_PROGRESS
    POST /sentinel/ping, /sentinel/heartbeat -> {"status": "ok"} (telemetry; ping's
      OpenAI-Sentinel-Extra-Data header, when sent, must be base64 of a JSON object, else 400)
    GET  /cdn-cgi/trace (site root) -> Cloudflare's key=value text

All but the trace need the bearer token, as the real backend does. (`/sentinel/req` is the
sign-in's, served by the auth emulator.)
"""
from __future__ import annotations

import base64
import binascii
import json
import time

from flask import Blueprint, Response, abort, current_app, request

from . import backend
from .failures import json_response
from .streams import conversation_detail

api = Blueprint("turn_companions", __name__)
site = Blueprint("cloudflare_trace", __name__)


@api.post("/conversation/init")
def conversation_init():
    backend._account()
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        abort(json_response(422, {"detail": "body must be a JSON object"}))
    conversation_id = body.get("conversation_id")
    emulator = current_app.extensions["emulator"]
    return json_response(200, conversation_detail(
        conversation_id if isinstance(conversation_id, str) else None,
        emulator.switches.degraded))


@api.get("/conversation/<conversation_id>/stream_status")
def stream_status(conversation_id: str):
    conversation = backend._owned(conversation_id)
    emulator = current_app.extensions["emulator"]
    with emulator.conversations.lock:
        node = conversation.mapping.get(conversation.current_node or "")
        message = node.message if node is not None else None
        finished = (message is not None and message.get("author", {}).get("role") == "assistant"
                    and message.get("status") == "finished_successfully")
    return json_response(200, {"status": "COMPLETE" if finished else "IN_PROGRESS"})


@api.post("/sentinel/ping")
def sentinel_ping():
    backend._account()
    extra = request.headers.get("OpenAI-Sentinel-Extra-Data")
    if extra is not None:
        try:
            decoded = json.loads(base64.b64decode(extra, validate=True))
        except (binascii.Error, ValueError):
            decoded = None
        if not isinstance(decoded, dict):
            abort(json_response(400, {"detail": "invalid extra data"}))
    return json_response(200, {"status": "ok"})


@api.post("/sentinel/heartbeat")
def sentinel_heartbeat():
    backend._account()
    return json_response(200, {"status": "ok"})


@site.get("/cdn-cgi/trace")
def cloudflare_trace():
    lines = ["fl=emulator", "h=" + request.host, "ip=" + (request.remote_addr or ""),
             f"ts={time.time():.3f}", "visit_scheme=" + request.scheme, "uag=" +
             request.headers.get("User-Agent", ""), "colo=LAX", "http=http/1.1", "loc=US",
             "tls=off", "warp=off", "gateway=off", "kex=none"]
    return Response("\n".join(lines) + "\n", 200, content_type="text/plain")
