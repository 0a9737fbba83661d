"""The original endpoints: POST /get_access_token and POST /send_message.

Both take form-urlencoded (as the original did), multipart or JSON bodies and answer JSON.
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from .. import chat
from ..errors import ApiError, BadRequest, PayloadTooLarge
from ..metrics import stream_in_flight
from ..services import current
from ..tokens import ensure_not_expired
from ..upstream.conversation import ChatMessage, ChatRequest
from ..upstream.endpoints import from_base_url, from_reverse_proxy
from ..upstream.stream import Completion, TextDelta
from . import fields as f
from . import sse

blueprint = Blueprint("legacy", __name__)

MAX_TIMEOUT_MS = 3_600_000


def _answer_object(completion: Completion) -> dict:
    return {"text": completion.text, "conversation_id": completion.conversation_id,
            "parent_message_id": completion.message_id}


@blueprint.post("/send_message")
def send_message():
    """Send `prompt` to ChatGPT; answer `{text, conversation_id, parent_message_id}` or stream it."""
    services = current()
    config = services.config
    fields = f.read_fields()
    access_token = f.text(fields, "access_token", required=True, max_length=20000)
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

    ensure_not_expired(access_token)
    upstream = (from_reverse_proxy(reverse_proxy, config.allowed_proxies) if reverse_proxy
                else from_base_url(config.base_url))
    request = ChatRequest(
        messages=(ChatMessage("user", prompt),), model=model, conversation_id=conversation_id,
        parent_message_id=parent_message_id,
        timeout=timeout_ms / 1000 if timeout_ms else config.request_timeout,
    )
    answer = chat.start_answer(services.conversations, access_token, request, upstream)
    if stream:
        return sse.response(_stream_events(answer))
    with stream_in_flight():
        return jsonify(_answer_object(chat.collect(answer)))


def _stream_events(answer):
    """Our SSE format: `{"delta": text}` events, then the answer object, then [DONE]."""
    with stream_in_flight():
        try:
            for item in answer:
                if isinstance(item, TextDelta):
                    yield sse.event({"delta": item.text})
                elif isinstance(item, Completion):
                    yield sse.event(_answer_object(item))
            yield sse.DONE
        except ApiError as error:
            yield sse.event({**error.to_dict(), "status": error.status}, "error")
        finally:
            answer.close()
