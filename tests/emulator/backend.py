"""The backend API blueprint, mounted under both `/backend-api` and `/api`.

Endpoints of both dialects (docs/protocol-requests.md): the one-step sentinel chat-requirements and
the 2024 conversation POST; the 2026 two-phase sentinel (prepare, finalize), the conduit prepare,
the write `POST /f/conversation` and its hand-off resume; models, the conversation list, one
conversation and its PATCH. Every one requires `Authorization: Bearer <access token minted by the
emulator>`. With `switches.dialect = "2024"` the 2026 endpoints answer 404, as on a mirror that
only knows the old paths.
"""
from __future__ import annotations

import itertools
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, request

from . import bearer, files, images, sentinel, streams, tokens, turns
from .failures import FAILURES, detail_error, json_response

blueprint = Blueprint("backend", __name__)

# Which `switches.fail_at` values make each endpoint fail.
_FAIL_AT = {"conversation": ("conversation", "any"), "f_conversation": ("conversation", "any"),
            "chat_requirements": ("sentinel", "any"), "sentinel_prepare": ("sentinel", "any")}
THINKING_EFFORTS = ("standard", "extended", "max")
MINI_MODEL = "gpt-5-mini"  # where a write without client_prepare_state "success" is routed

# (slug, title, description, max_tokens): what a free account's picker listed in 2026, plus the
# older models the backend still lists.
MODELS = [
    ("auto", "Auto", "Decides how long to think", 32767),
    ("gpt-5-6", "GPT-5.6 Instant", "Answers right away", 32767),
    ("gpt-5-6-thinking", "GPT-5.6 Thinking", "Thinks longer for better answers", 196608),
    ("gpt-6", "GPT-6", "Our smartest model", 32767),
    ("gpt-6-thinking", "GPT-6 Thinking", "Thinks longer for better answers", 196608),
    ("gpt-5-mini", "GPT-5 mini", "Faster for everyday tasks", 32767),
    ("gpt-4o", "GPT-4o", "Legacy model", 32767),
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


_account = bearer.account  # the views below and beside this module (titles.py...) use this name


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
    program = None
    switches = emulator.switches
    # A 2026 site without the two-phase endpoints sends its Turnstile program here instead.
    if (switches.dialect == "2026" and not switches.two_phase_sentinel and switches.turnstile_dx
            and not switches.turnstile_required and isinstance(body.get("p"), str)):
        program = sentinel.make_program(body["p"], request.headers.get("User-Agent", ""),
                                        _device_id(), random.Random())
    issued = emulator.sentinel.issue(switches, program=program, key=body.get("p"))
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
    if issued.turnstile_answer and (headers.get("Openai-Sentinel-Turnstile-Token")
                                    != issued.turnstile_answer):
        _sentinel_refusal("turnstile_failed", "the Turnstile answer is wrong")
    if issued.arkose_required and not headers.get("Openai-Sentinel-Arkose-Token"):
        _sentinel_refusal("arkose_required", "Openai-Sentinel-Arkose-Token is required")


@blueprint.post("/conversation")
def conversation():
    owner = _account()
    _check_sentinel()
    return _answer(owner, turns.parse(request.get_json(force=True, silent=True)))


def _answer(owner: str, chat, *, model_slug: str | None = None, handoff: bool = False,
            image: bool = False):
    """Apply a parsed write to the store and stream the answer (or its hand-off first leg)."""
    emulator = _emulator()
    switches = emulator.switches
    if turns.prompt_chars(chat) > switches.max_prompt_chars:
        return FAILURES["too_long"](switches)

    rng = random.Random(f"{switches.chunk_seed}:{emulator.next_stream_number()}")
    if switches.replay_file is not None or switches.replay_bytes is not None:
        recording = (switches.replay_bytes if switches.replay_bytes is not None
                     else Path(switches.replay_file).read_bytes())
        return _stream(streams.replay_events(recording), rng, pings=False)

    files.check_message_files(emulator.files, owner, chat.messages)
    users = [m for m in chat.messages if m["author"]["role"] == "user"]
    chat.files_note = files.describe(emulator.files, users[-1] if users else None)
    turn = (images.image_turn(emulator, owner, chat) if image
            else turns.apply(emulator.conversations, owner, chat, switches))
    if model_slug is not None:
        turn.model_slug = model_slug
        if turn.assistant is not None:
            turn.assistant["metadata"]["model_slug"] = model_slug
    v1 = (switches.force_format == "v1" if switches.force_format
          else "v1" in chat.supported_encodings)
    if v1:
        resume_token = tokens.mint_resume_token(emulator.secret, turn.conversation_id)
        if (handoff or images.is_image(turn)) and turn.assistant is not None:
            emulator.handoffs[turn.conversation_id] = turn
            return _stream(streams.handoff_leg(turn, resume_token, _offered(switches.handoff)),
                           rng, pings=False)
        events = streams.v1_events(turn, resume_token, switches.words_per_delta,
                                   switches.stream_error)
    else:
        events = streams.legacy_events(turn, switches.words_per_delta, switches.stream_error)
    return _stream(events, rng, pings=switches.pings)


def _offered(handoff: str) -> tuple[str, ...]:
    """The transports a hand-off offers under `switches.handoff` (switches.py)."""
    return {"ws": ("subscribe_ws_topic",),
            "resume": ("resume_sse_endpoint",)}.get(handoff, streams.BOTH_TRANSPORTS)


# --- 2026 -------------------------------------------------------------------------------------

def _only_2026() -> None:
    if _emulator().switches.dialect != "2026":
        abort(json_response(404, {"detail": "Not Found"}))


def _unusual_activity():
    abort(json_response(403, {"detail": sentinel.UNUSUAL_ACTIVITY}))


def _device_id() -> str:
    return request.headers.get("Oai-Device-Id") or request.cookies.get("oai-did") or ""


def _json_object() -> dict:
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        abort(json_response(400, {"detail": "the body must be a JSON object"}))
    return body


# The program's numbers and the proof seed of every 2026 challenge. One OS-seeded generator for
# all (not one per prepare, 11 µs of seeding each): the values stay unpredictable to a client.
_CHALLENGE_RANDOM = random.Random()


@blueprint.post("/sentinel/chat-requirements/prepare")
def sentinel_prepare():
    _only_2026()
    emulator = _emulator()
    if not emulator.switches.two_phase_sentinel:
        abort(json_response(404, {"detail": "Not Found"}))
    _account()
    p = _json_object().get("p")
    problem = sentinel.check_requirements_token(p)
    if problem is None and not 18 <= len(sentinel.decode_config(p[7:])) <= 26:
        problem = "the requirements config must have 18 to 26 items"
    if problem:
        abort(json_response(400, {"detail": problem}))
    challenge = emulator.two_phase.prepare(
        emulator.switches, p=p, user_agent=request.headers.get("User-Agent", ""),
        device_id=_device_id(), rng=_CHALLENGE_RANDOM)
    return json_response(200, challenge.to_json())


@blueprint.post("/sentinel/chat-requirements/finalize")
def sentinel_finalize():
    _only_2026()
    emulator = _emulator()
    if not emulator.switches.two_phase_sentinel:
        abort(json_response(404, {"detail": "Not Found"}))
    _account()
    body = _json_object()
    challenge = emulator.two_phase.take_challenge(body.get("prepare_token"))
    if challenge is None or challenge.force_login or challenge.arkose_required \
            or challenge.widget_required:
        _unusual_activity()
    proof, answer = body.get("proofofwork"), body.get("turnstile")
    if challenge.pow_required and (not isinstance(proof, str) or sentinel.check_proof(
            proof, challenge.seed, challenge.difficulty)):
        _unusual_activity()
    if challenge.turnstile_answer is not None and answer != challenge.turnstile_answer:
        _unusual_activity()
    bundle = emulator.two_phase.issue_bundle(proof, answer, time.time())
    return json_response(200, {"persona": challenge.persona, "token": bundle.token,
                               "expire_after": sentinel.BUNDLE_LIFETIME,
                               "expire_at": int(bundle.expires_at)})


@blueprint.post("/f/conversation/prepare")
def conduit_prepare():
    _only_2026()
    _account()
    emulator = _emulator()
    _json_object()
    trace_id = request.headers.get("X-Oai-Turn-Trace-Id", "")
    if not trace_id:
        abort(json_response(400, {"detail": "X-Oai-Turn-Trace-Id is required"}))
    # The previous X-Conduit-Token may be "", "no-token", an old token or absent: all accepted.
    if emulator.take("conduit_null_times"):
        return json_response(200, {"status": "ok", "conduit_token": None})
    conduit = emulator.conduits.issue(trace_id, time.time(), emulator.switches.conduit_lifetime)
    return json_response(200, {"status": "ok", "conduit_token": conduit.token})


def _check_bundle() -> None:
    """The write must carry an unused bundle (or a one-step token) with its exact answers."""
    headers = request.headers
    emulator = _emulator()
    token = headers.get("Openai-Sentinel-Chat-Requirements-Token", "")
    bundle = emulator.two_phase.redeem(token)
    if bundle is not None:
        if (bundle.expires_at < time.time()
                or headers.get("Openai-Sentinel-Proof-Token") != bundle.proof
                or headers.get("Openai-Sentinel-Turnstile-Token") != bundle.turnstile):
            _unusual_activity()
        return
    if not token or not emulator.sentinel.known(token):
        _unusual_activity()
    _check_sentinel()


@blueprint.post("/f/conversation")
def f_conversation():
    _only_2026()
    owner = _account()
    emulator = _emulator()
    switches = emulator.switches
    headers = request.headers
    if emulator.take("reject_writes"):
        _unusual_activity()
    if emulator.conduits.problem(headers.get("X-Conduit-Token", ""),
                                 headers.get("X-Oai-Turn-Trace-Id", ""), time.time()):
        _unusual_activity()
    _check_bundle()
    cookie_device = request.cookies.get("oai-did")
    if switches.strict_device_id and cookie_device != headers.get("Oai-Device-Id"):
        _unusual_activity()
    body = request.get_json(force=True, silent=True)
    if isinstance(body, dict) and "thinking_effort" in body \
            and body["thinking_effort"] not in THINKING_EFFORTS:
        abort(json_response(422, {"detail": [{
            "type": "enum", "loc": ["body", "thinking_effort"],
            "msg": "Input should be 'standard', 'extended' or 'max'",
            "input": body["thinking_effort"]}]}))
    chat = turns.parse(body)
    mini = body.get("client_prepare_state") != "success"
    return _answer(owner, chat, model_slug=MINI_MODEL if mini else None,
                   handoff=switches.handoff != "off", image=images.wants_image(body))


@blueprint.post("/f/conversation/resume")
def conversation_resume():
    _only_2026()
    _account()
    emulator = _emulator()
    body = _json_object()
    if not isinstance(body.get("offset", 0), int):
        abort(json_response(422, {"detail": "offset must be an integer"}))
    if emulator.switches.handoff in ("poll", "ws"):  # not offered, or the turn is not there
        abort(json_response(404, {"detail": "No resumable stream for this conversation"}))
    turn = emulator.handoffs.pop(body.get("conversation_id"), None)
    if turn is None:
        abort(json_response(404, {"detail": "No resumable stream for this conversation"}))
    resume_token = tokens.mint_resume_token(emulator.secret, turn.conversation_id)
    rng = random.Random(f"{emulator.switches.chunk_seed}:{emulator.next_stream_number()}")
    if images.is_image(turn):
        events = images.resumed_leg(emulator.images, turn, resume_token)
    else:
        events = streams.resumed_leg(turn, resume_token, body.get("offset", 0),
                                     emulator.switches.words_per_delta,
                                     emulator.switches.stream_error)
    return _stream(events, rng, pings=emulator.switches.pings)


def _stream(events: Iterator[bytes], rng: random.Random, pings: bool) -> Response:
    """A streamed 200 event-stream response, honouring the chunking and drop switches."""
    switches = _emulator().switches
    drop_after, drop_mode = switches.drop_after_events, switches.drop_mode
    chunking, delay = switches.chunking, switches.chunk_delay
    environ = request.environ

    emulator = _emulator()

    def body() -> Iterator[bytes]:
        source = iter(events)
        kept = source if drop_after is None else itertools.islice(source, drop_after)
        paced = streams.with_pings(kept, rng) if pings else kept
        chunks = streams.rechunk(paced, rng) if chunking else paced
        try:
            for index, chunk in enumerate(chunks):
                if index and delay:
                    time.sleep(delay)
                yield chunk
        except GeneratorExit:  # the server closes it: writing to the client failed
            emulator.stream_left()
            raise
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
    """The account's model list: 2026 clients read `default_model_slug` and `models[].slug`; the
    2024 dialect answers the older shape with `categories`."""
    account = _account()
    switches = _emulator().switches
    listed = MODELS + [(slug, slug, "", 32767) for slug in switches.extra_models]
    for email, slugs in switches.models_of:
        if tokens.user_id_of(email) == account:
            listed = [(slug, slug, "", 32767) for slug in slugs]
    accepted = _emulator().files.accepted_types
    features = {} if accepted is None else {"attachments": {
        "type": "retrieval", "accepted_mime_types": [t for t in accepted
                                                     if not t.startswith("image/")],
        "image_mime_types": [t for t in accepted if t.startswith("image/")]}}
    answer = {"models": [{"slug": slug, "max_tokens": max_tokens, "title": title,
                          "description": description, "tags": ["history_off_approved"],
                          "capabilities": {}, "product_features": features}
                         for slug, title, description, max_tokens in listed]}
    if switches.dialect == "2024":
        answer["categories"] = [{"category": "gpt_4o", "human_category_name": "GPT-4o",
                                 "subscription_level": "free", "default_model": "auto",
                                 "code_interpreter_model": "gpt-4o", "plugins_model": "gpt-4o"}]
        return json_response(200, answer)
    return json_response(200, {"title": "GPT-5.6", "secondary_title": "", **answer,
                               "default_model_slug": "auto"})


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
