"""The original endpoints: POST /get_access_token and POST /send_message.

Both take form-urlencoded (as the original did), multipart or JSON bodies and answer JSON;
/send_message also takes files as multipart `file` fields (docs/files.md).
Credentials other than an access token go through `Services.tokens`, the cached TokenProvider.
"""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from .. import json_codec
from ..access import client_key, limit_pooled_request, require_same_origin
from ..answers import Answer
from ..errors import ApiError, BadRequest, PayloadTooLarge
from ..services import current
from ..tokens import Credential, ensure_not_expired
from ..upstream.conversation import ChatMessage, ConversationRequest
from ..upstream.endpoints import from_base_url, from_reverse_proxy, is_allowed_proxy
from ..upstream.stream import Completion
from . import attachments, sse
from . import fields as f
from .credentials import Grant
from .error_boundary import streamed_error
from .image_turns import image_markdown, link_base, with_images
from .intake import client_gone

blueprint = Blueprint("primary", __name__)

MAX_TIMEOUT_MS = 3_600_000
MAX_TOKEN_CHARS = 20_000  # session cookies of big accounts are split over several 4 KB cookies


def _one_source(given: dict[str, bool], choices: str) -> str:
    """The name of the one credential source present in `given`. :raise BadRequest: none or two."""
    present = [name for name, is_given in given.items() if is_given]
    if not present:
        raise BadRequest(f"give {choices}", "missing_field")
    if len(present) > 1:
        raise BadRequest(f"give only one of {choices}, not {' and '.join(present)}",
                         "conflicting_fields")
    return present[0]


def _credential(fields: dict) -> Credential:
    """The one credential of a /get_access_token call. :raise BadRequest: missing or conflicting."""
    email = f.text(fields, "email", max_length=320)
    password = f.text(fields, "password", max_length=1024)
    otp = f.text(fields, "otp", max_length=64)
    session_token = f.text(fields, "session_token", max_length=MAX_TOKEN_CHARS)
    refresh_token = f.text(fields, "refresh_token", max_length=MAX_TOKEN_CHARS)
    source = _one_source({"email and password": bool(email or password),
                          "session_token": bool(session_token),
                          "refresh_token": bool(refresh_token)},
                         "email and password, session_token or refresh_token")
    if otp and source != "email and password":
        raise BadRequest("otp goes with email and password", "conflicting_fields")
    if source == "session_token":
        return Credential.session_token(session_token)
    if source == "refresh_token":
        return Credential.refresh_token(refresh_token)
    return Credential.password(f.text(fields, "email", required=True),
                               f.text(fields, "password", required=True), otp)


def _grant(fields: dict, reverse_proxy: str | None) -> Grant:
    """Who a /send_message call runs as: its `access_token`; the access token got (or reused from
    the token cache) for its `session_token` or `refresh_token`; or, when it brings none, the
    server's account pool (ACCOUNTS_FILE)."""
    services = current()
    config = services.config
    upstream = _upstream(reverse_proxy)  # refused before any login is attempted
    given = {name: f.text(fields, name, max_length=MAX_TOKEN_CHARS)
             for name in ("access_token", "session_token", "refresh_token")}
    if not any(given.values()) and services.pool is not None:
        if not services.keys.enabled:
            require_same_origin(config.cors_origins)  # no cross-site form posts to the pool
        if reverse_proxy and not is_allowed_proxy(reverse_proxy, config.allowed_proxies):
            # A pooled account's token must never be handed to a proxy the operator did not allow.
            raise BadRequest("with pooled accounts, reverse_proxy must start with a prefix listed "
                             "in CHATGPT_ALLOWED_PROXIES", "reverse_proxy_not_allowed")
        limit_pooled_request()
        key = client_key()
        return Grant(None, upstream, services.pool, owner=key.id if key else None,
                     ledger=services.ledger if key else None, moderator=services.moderator,
                     policy=key.policy if key else None)
    source = _one_source({name: bool(value) for name, value in given.items()},
                         "access_token, session_token or refresh_token")
    if source == "access_token":
        access_token = given[source]
    else:
        credential = (Credential.session_token(given[source]) if source == "session_token"
                      else Credential.refresh_token(given[source]))
        access_token = services.tokens.access_token(credential).access_token
    ensure_not_expired(access_token)
    return Grant(access_token, upstream, moderator=services.moderator)


def _upstream(reverse_proxy: str | None):
    config = current().config
    if reverse_proxy:
        return from_reverse_proxy(reverse_proxy, config.allowed_proxies)
    return from_base_url(config.base_url)


@blueprint.post("/get_access_token")
def get_access_token():
    """Log in with email and password, a session token or a refresh token; answer
    `{access_token, expires_at}` plus any session/refresh token the upstream issued anew."""
    fields = f.read_fields()
    credential = _credential(fields)
    issued = current().tokens.access_token(credential, force=f.flag(fields, "force"))
    answer = {"access_token": issued.access_token, "expires_at": issued.expires_at}
    if issued.session_token:
        answer["session_token"] = issued.session_token
    if issued.refresh_token:
        answer["refresh_token"] = issued.refresh_token
    return jsonify(answer)


def _answer_object(completion: Completion, drawn: str = "") -> dict:
    # `title`: what the upstream named a new conversation; `model`: the model that answered,
    # which may differ from the one asked for (a downgraded account, "auto"). `drawn`: the
    # markdown links of the images the answer drew (image_turns.py).
    return {"text": with_images(completion.text, drawn),
            "conversation_id": completion.conversation_id,
            "parent_message_id": completion.message_id, "title": completion.title,
            "model": completion.model_slug}


@blueprint.post("/send_message")
def send_message():
    """Send `prompt` to ChatGPT; answer `{text, conversation_id, parent_message_id, title, model}`
    or stream it."""
    services = current()
    config = services.config
    fields = f.read_fields()
    prompt = f.text(fields, "prompt", required=True, max_length=10_000_000)
    if len(prompt) > config.max_prompt_chars:
        raise PayloadTooLarge(f"the prompt is longer than {config.max_prompt_chars} characters")
    model = f.text(fields, "model", max_length=100) or config.default_model
    timeout_ms = f.number(fields, "timeout", minimum=1, maximum=MAX_TIMEOUT_MS)
    conversation_id = f.identifier(fields, "conversation_id")
    parent_message_id = f.identifier(fields, "parent_message_id")
    if bool(conversation_id) != bool(parent_message_id):
        raise BadRequest("conversation_id and parent_message_id go together: pass both from the "
                         "previous answer to continue a conversation", "invalid_field")
    reverse_proxy = f.text(fields, "reverse_proxy", max_length=2048)
    stream = f.flag(fields, "stream")
    # Multipart `file` fields go with the prompt (docs/files.md).
    files = attachments.form_files(request.files.getlist("file"),
                                   attachments.FileRules.from_config(config))

    grant = _grant(fields, reverse_proxy)
    turn = ConversationRequest(
        messages=(ChatMessage("user", prompt, files),), model=model,
        conversation_id=conversation_id,
        parent_message_id=parent_message_id,
        timeout=timeout_ms / 1000 if timeout_ms else config.request_timeout,
    )
    answer = grant.start_answer(services.conversations, turn)
    base = link_base(services)

    def drawn(completion: Completion) -> str:
        return image_markdown(services, grant, completion, base)

    if stream:
        return sse.response(_stream_events(answer, drawn), answer)
    completion = answer.read(abandoned=client_gone)
    return jsonify(_answer_object(completion, drawn(completion)))


def _stream_events(answer: Answer, drawn=lambda completion: ""):
    """Our SSE format: `{"delta": text}` events, then the answer object, then [DONE]; a failure
    after the start ends the stream with an `error` event (the error body plus its status)."""
    with answer:
        try:
            for delta in answer:
                # sse.event({"delta": delta.text}), with only the text encoded
                yield b'data: {"delta":%s}\n\n' % json_codec.dumps(delta.text)
            completion = answer.completion
            images = drawn(completion)
            if images:
                shown = with_images(completion.text, images)
                yield sse.event({"delta": shown[len(completion.text):]})
            yield sse.event(_answer_object(answer.completion, images))
            yield sse.DONE
        except Exception as error:  # the stream has begun: the status line can no longer say it
            yield sse.event(streamed_error(error, _error_event), "error")


def _error_event(error: ApiError) -> dict:
    return {**error.to_dict(), "status": error.status}
