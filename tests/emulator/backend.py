"""The backend API blueprint, mounted under both `/backend-api` and `/api` (protocol §9).

Endpoints: sentinel chat-requirements (§4), the conversation POST (§2, §3), models (§6.1),
the conversation list (§6.2), one conversation (§6.3) and its PATCH (§6.4). Every one requires
`Authorization: Bearer <access token minted by the emulator>`.
"""
from __future__ import annotations

import itertools
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, request

from . import sentinel, streams, tokens, turns
from .failures import FAILURES, detail_error, json_response

blueprint = Blueprint("backend", __name__)

# Which `switches.fail_at` values make each endpoint fail.
_FAIL_AT = {"conversation": ("conversation", "any"), "chat_requirements": ("sentinel", "any")}

MODELS = [
    ("auto", "Auto", "Decides how long to think", 32767),
    ("gpt-4o", "GPT-4o", "Great for most tasks", 32767),
    ("gpt-4o-mini", "GPT-4o mini", "Faster for everyday tasks", 32767),
    ("text-davinci-002-render-sha", "Default (GPT-3.5)", "Our fastest model", 8191),
]


def _emulator():
    return current_app.extensions["emulator"]


@blueprint.before_request
def _injected_failure():
    """Answer with `switches.fail_with` when this endpoint is targeted (see switches.fail_at)."""
    emulator = _emulator()
    endpoint = (request.endpoint or "").rsplit(".", 1)[-1]
    targets = _FAIL_AT.get(endpoint, ("any",))
    if emulator.switches.fail_at in targets and emulator.take_failure():
        return FAILURES[emulator.switches.fail_with](emulator.switches)
    return None


def _account() -> str:
    """The user id of the bearer token, or abort 401 as the real backend does."""
    emulator = _emulator()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    try:
        if scheme.lower() != "bearer" or not token.strip():
            raise tokens.TokenRejected("invalid_token", "no bearer token")
        claims = tokens.verify(emulator.secret, token.strip())
    except tokens.TokenRejected as rejected:
        abort(FAILURES[rejected.code](emulator.switches))
    return tokens.user_id(claims)


def _sentinel_refusal(code: str, message: str):
    abort(detail_error(403, code, message))


@blueprint.post("/sentinel/chat-requirements")
def chat_requirements():
    _account()
    emulator = _emulator()
    body = request.get_json(force=True, silent=True)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        abort(json_response(400, {"detail": "the body must be a JSON object"}))
    if "p" in body:
        problem = sentinel.check_requirements_token(body["p"])
        if problem:
            abort(json_response(400, {"detail": problem}))
    elif emulator.switches.require_requirements_token:
        abort(json_response(400, {"detail": "p (the requirements token) is required"}))
    issued = emulator.sentinel.issue(emulator.switches)
    response = json_response(200, issued.to_json())
    response.set_cookie("oai-sc", issued.token[-40:], httponly=True, samesite="Lax")
    return response


def _check_sentinel() -> None:
    """Redeem the chat-requirements token and verify what it asked for; abort 403 otherwise."""
    headers = request.headers
    token = headers.get("Openai-Sentinel-Chat-Requirements-Token", "")
    if not token:
        _sentinel_refusal("sentinel_token_missing",
                          "Openai-Sentinel-Chat-Requirements-Token is required")
    issued = _emulator().sentinel.redeem(token)
    if issued is None:
        _sentinel_refusal("sentinel_token_invalid",
                          "the chat requirements token is unknown or was already used")
    if issued.force_login:
        _sentinel_refusal("force_login", "Please log in again to continue.")
    if issued.pow_required:
        problem = sentinel.check_proof(headers.get("Openai-Sentinel-Proof-Token", ""),
                                       issued.seed, issued.difficulty)
        if problem:
            _sentinel_refusal("proof_of_work_failed", problem)
    if issued.turnstile_required and not headers.get("Openai-Sentinel-Turnstile-Token"):
        _sentinel_refusal("turnstile_required", "Openai-Sentinel-Turnstile-Token is required")
    if issued.arkose_required and not headers.get("Openai-Sentinel-Arkose-Token"):
        _sentinel_refusal("arkose_required", "Openai-Sentinel-Arkose-Token is required")


@blueprint.post("/conversation")
def conversation():
    owner = _account()
    _check_sentinel()
    emulator = _emulator()
    switches = emulator.switches
    chat = turns.parse(request.get_json(force=True, silent=True))
    if turns.prompt_chars(chat) > switches.max_prompt_chars:
        return FAILURES["too_long"](switches)

    rng = random.Random(f"{switches.chunk_seed}:{emulator.next_stream_number()}")
    if switches.replay_file is not None or switches.replay_bytes is not None:
        recording = (switches.replay_bytes if switches.replay_bytes is not None
                     else Path(switches.replay_file).read_bytes())
        return _stream(streams.replay_events(recording), rng, pings=False)

    turn = turns.apply(emulator.conversations, owner, chat, switches)
    v1 = (switches.force_format == "v1" if switches.force_format
          else "v1" in chat.supported_encodings)
    if v1:
        resume_token = tokens.mint_resume_token(emulator.secret, turn.conversation_id)
        events = streams.v1_events(turn, resume_token, switches.words_per_delta,
                                   switches.stream_error)
    else:
        events = streams.legacy_events(turn, switches.words_per_delta, switches.stream_error)
    return _stream(events, rng, pings=switches.pings)


def _stream(events: Iterator[bytes], rng: random.Random, pings: bool) -> Response:
    """A streamed 200 event-stream response, honouring the chunking and drop switches."""
    switches = _emulator().switches
    drop_after, drop_mode = switches.drop_after_events, switches.drop_mode
    chunking, delay = switches.chunking, switches.chunk_delay
    environ = request.environ

    def body() -> Iterator[bytes]:
        source = iter(events)
        kept = source if drop_after is None else itertools.islice(source, drop_after)
        paced = streams.with_pings(kept, rng) if pings else kept
        chunks = streams.rechunk(paced, rng) if chunking else paced
        for index, chunk in enumerate(chunks):
            if index and delay:
                time.sleep(delay)
            yield chunk
        dropped = drop_after is not None and next(source, None) is not None
        if dropped and drop_mode == "abort":
            _cut_connection(environ)

    return Response(body(), 200, content_type="text/event-stream; charset=utf-8",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _cut_connection(environ) -> None:
    """Shut the socket mid-body: the chunked body never gets its terminating chunk."""
    connection = environ.get("werkzeug.socket")
    if connection is not None:
        try:
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


@blueprint.get("/models")
def models():
    _account()
    return json_response(200, {
        "models": [{"slug": slug, "max_tokens": max_tokens, "title": title,
                    "description": description, "tags": [], "capabilities": {},
                    "product_features": {}} for slug, title, description, max_tokens in MODELS],
        "categories": [{"category": "gpt_4o", "human_category_name": "GPT-4o",
                        "subscription_level": "free", "default_model": "auto",
                        "code_interpreter_model": "gpt-4o", "plugins_model": "gpt-4o"}],
    })


@blueprint.get("/conversations")
def conversation_list():
    owner = _account()
    offset = request.args.get("offset", 0, type=int)
    limit = request.args.get("limit", 20, type=int)
    items = _emulator().conversations.listed(owner)
    return json_response(200, {
        "items": [c.summary_json() for c in items[offset:offset + limit]],
        "total": len(items), "limit": limit, "offset": offset,
        "has_missing_conversations": False,
    })


@blueprint.patch("/conversations")
def hide_all_conversations():
    owner = _account()
    body = request.get_json(force=True, silent=True) or {}
    if body.get("is_visible") is False:
        for item in _emulator().conversations.listed(owner):
            item.is_visible = False
    return json_response(200, {"success": True})


def _owned(conversation_id: str):
    owner = _account()
    found = _emulator().conversations.get(conversation_id, owner)
    if found is None:
        abort(json_response(404, {"detail": "Conversation not found"}))
    return found


@blueprint.get("/conversation/<conversation_id>")
def conversation_detail(conversation_id: str):
    found = _owned(conversation_id)
    with _emulator().conversations.lock:
        return json_response(200, found.to_json())


@blueprint.patch("/conversation/<conversation_id>")
def conversation_update(conversation_id: str):
    found = _owned(conversation_id)
    body = request.get_json(force=True, silent=True) or {}
    if isinstance(body.get("title"), str):
        found.title = body["title"]
    if body.get("is_visible") is False:
        found.is_visible = False
    return json_response(200, {"success": True})
