"""The OpenAI-compatible face: POST /v1/chat/completions, GET /v1/models, GET /v1/models/{id}.

Any OpenAI client (the `openai` SDK, LangChain, chat UIs) works by pointing its base URL at
`http://host:port/v1` and passing a ChatGPT access token as its API key. Requests and answers have
the official shapes; the same web-backend core as /send_message does the work.

Beyond the official API, answers carry `conversation_id` and `message_id` (the assistant message)
as extra top-level fields, which SDKs keep as extras. Passing them back as the body fields
`conversation_id` and `parent_message_id` continues that web conversation: then only the messages
after the last assistant message are sent upstream (see openai_messages.py).

Errors use the official envelope `{"error": {"message", "type", "param", "code"}}` with the status
of the core's table (errors.py); `code` is the core's code. A stream that fails after it began
ends with one such envelope as its last `data:` event, which the SDK raises as an APIError.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from .. import models, usage
from ..answers import Answer
from ..errors import ApiError, BadRequest, NotFound, PayloadTooLarge
from ..services import current
from ..upstream.conversation import ChatMessage, ConversationRequest
from ..upstream.stream import Completion
from . import fields as f
from . import relay_requests, sse
from .credentials import authenticate, check_caller
from .error_boundary import install_error_handlers, streamed_error
from .openai_messages import messages_to_send, to_web_messages

blueprint = Blueprint("openai", __name__, url_prefix="/v1")
# Several clients drop the /v1 prefix (a base URL without it): the same views, without it.
aliases = Blueprint("openai_aliases", __name__)

# The official `type` of an error by HTTP status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type(status: int) -> str:
    """The official error `type` for an HTTP status (any 5xx is `api_error`)."""
    if status >= 500:
        return "api_error"
    return ERROR_TYPES.get(status, "invalid_request_error")


def error_body(error: ApiError) -> dict:
    """An ApiError in the official envelope."""
    return {"error": {"message": error.message, "type": error_type(error.status),
                      "param": error.param, "code": error.code}}


install_error_handlers(blueprint, error_body)
install_error_handlers(aliases, error_body)


def _json_body() -> dict:
    # force=True: curl users often forget the Content-Type header; the body is JSON either way.
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", "invalid_json")
    return body


def _unsupported(param: str, message: str) -> BadRequest:
    return BadRequest(message, "unsupported_parameter", param=param)


def _check_unsupported(body: dict) -> None:
    """Refuse what the web backend cannot do rather than answer as if it had been done.

    Sampling knobs (temperature, top_p, max_tokens, stop…) are accepted and ignored: the web
    backend has no such settings, and clients send them by default.
    """
    n = body.get("n")
    if n is not None and n != 1:
        raise _unsupported("n", "only n=1 is supported: the web backend gives one answer per turn")
    for name in ("tools", "functions"):
        if body.get(name):
            raise _unsupported(name, f"'{name}' is not supported: the web backend has no tool "
                                     "or function calling")


class _Reply:
    """The fixed parts of one answer (id, created, model) and its rendering as official objects."""

    def __init__(self, model: models.Model, prompt: tuple[ChatMessage, ...], include_usage: bool):
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.model = model
        self.prompt = prompt
        self.include_usage = include_usage

    def usage(self, completion: Completion) -> dict:
        """Token counts: the request's messages as given, and the whole answer text."""
        slug = self.model.web_slug
        prompt = usage.count_messages(((m.role, m.content) for m in self.prompt), slug)
        return usage.usage(prompt, usage.count_text(completion.text, slug))

    @staticmethod
    def finish_reason(completion: Completion) -> str:
        # "max_tokens" survives only when auto-continue was exhausted (conversation.py).
        return "length" if completion.finish_type == "max_tokens" else "stop"

    @staticmethod
    def extras(completion: Completion) -> dict:
        """The continuity fields beyond the official API."""
        return {"conversation_id": completion.conversation_id,
                "message_id": completion.message_id,
                "model_slug": completion.model_slug}

    def completion_object(self, completion: Completion) -> dict:
        """The `chat.completion` object of a non-streamed answer."""
        return {
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model.id,
            "choices": [{"index": 0,
                         "message": {"role": "assistant", "content": completion.text,
                                     "refusal": None},
                         "logprobs": None,
                         "finish_reason": self.finish_reason(completion)}],
            "usage": self.usage(completion),
            "system_fingerprint": None,
            **self.extras(completion),
        }

    def chunk(self, delta: dict | None, finish_reason: str | None = None, **extra) -> dict:
        """One `chat.completion.chunk`; delta None gives the usage chunk (no choices)."""
        choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": finish_reason}]
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.model.id, "system_fingerprint": None, "choices": choices}
        if self.include_usage:
            # With include_usage every chunk carries "usage": null except the last (official).
            chunk["usage"] = None
        chunk.update(extra)
        return chunk


@blueprint.post("/chat/completions")
@aliases.post("/chat/completions")
def chat_completions():
    """Answer a chat in the official shape, streamed as chunks when `stream` is true."""
    services = current()
    relayed = relay_requests.route_chat(services)  # a Response when the model's route picks a relay
    if relayed is not None:
        return relayed
    config = services.config
    grant = authenticate(services)  # first, as the official API: no validation hints to strangers
    body = _json_body()
    model_name = f.text(body, "model", required=True, max_length=200)
    model = models.resolve(model_name, extra_slugs=(config.default_model,))
    messages = to_web_messages(body.get("messages"), max_messages=config.max_messages)
    conversation_id = f.identifier(body, "conversation_id")
    parent_message_id = f.identifier(body, "parent_message_id")
    if bool(conversation_id) != bool(parent_message_id):
        raise BadRequest("conversation_id and parent_message_id go together: pass the "
                         "conversation_id and message_id of the previous answer", "invalid_field",
                         param="parent_message_id" if conversation_id else "conversation_id")
    to_send = messages_to_send(messages, continuing=bool(conversation_id))
    if sum(len(m.content) for m in to_send) > config.max_prompt_chars:
        raise PayloadTooLarge(f"the messages are longer than {config.max_prompt_chars} "
                              "characters", param="messages")
    _check_unsupported(body)
    stream = f.flag(body, "stream")
    options = body.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True

    conversation_request = ConversationRequest(messages=to_send, model=model.web_slug,
                               conversation_id=conversation_id,
                               parent_message_id=parent_message_id,
                               timeout=config.request_timeout)
    reply = _Reply(model, messages, include_usage)
    answer = grant.start_answer(services.conversations, conversation_request)
    if stream:
        return sse.response(_stream_chunks(answer, reply), answer)
    return jsonify(reply.completion_object(answer.read()))


def _stream_chunks(answer: Answer, reply: _Reply) -> Iterator[bytes]:
    """Role chunk, content chunks, the finish chunk, the usage chunk if asked, then [DONE]; a
    failure after the start ends the stream with one error envelope, which the SDK raises."""
    with answer:
        try:
            yield sse.event(reply.chunk({"role": "assistant", "content": ""}))
            for delta in answer:
                if delta.text:
                    yield sse.event(reply.chunk({"content": delta.text}))
            completion = answer.completion
            extras = reply.extras(completion)
            yield sse.event(reply.chunk({}, reply.finish_reason(completion), **extras))
            if reply.include_usage:
                final = reply.chunk(None, **extras)
                final["usage"] = reply.usage(completion)
                yield sse.event(final)
            yield sse.DONE
        except Exception as error:  # the stream has begun: the status line can no longer say it
            yield sse.event(streamed_error(error, error_body))


@blueprint.get("/models")
@aliases.get("/models")
def list_models():
    """Every model name the service accepts, in the official list shape."""
    services = current()
    check_caller(services)
    listed = [m.to_dict() for m in models.list_models(extra_slugs=(services.config.default_model,))]
    listed += relay_requests.listed_models(services, {model["id"] for model in listed})
    return jsonify({"object": "list", "data": listed})


@blueprint.get("/models/<path:model_id>")
def get_model(model_id: str):
    """One model object; 404 model_not_found for names the service does not accept."""
    services = current()
    check_caller(services)
    if relayed := relay_requests.find_model(services, model_id):
        return jsonify(relayed)
    return jsonify(models.resolve(model_id, extra_slugs=(services.config.default_model,)).to_dict())


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@blueprint.route("/<path:unknown>", methods=_METHODS)
@aliases.route("/chat/completions", methods=[m for m in _METHODS if m != "POST"])
@aliases.route("/models", methods=[m for m in _METHODS if m != "GET"])
def unknown_url(unknown: str | None = None):
    """Unknown /v1 URLs answer 404, known ones with another method 405, in the official envelope.

    This catch-all also matches the known URLs for the methods they do not take (werkzeug prefers
    a rule that takes the method), so it looks up which methods the other rules accept.
    """
    allowed = _methods_elsewhere(request.path)
    if allowed:
        error = ApiError(f"{request.method} is not allowed on {request.path}: use "
                         f"{' or '.join(allowed)}", "method_not_allowed",
                         headers={"Allow": ", ".join(allowed)})
        error.status = 405
        raise error
    raise NotFound(f"Invalid URL ({request.method} {request.path})", "unknown_url")


def _methods_elsewhere(path: str) -> list[str]:
    """The methods that rules other than this catch-all accept at `path`."""
    adapter = current_app.url_map.bind("localhost")
    allowed = []
    for method in _METHODS:
        try:
            endpoint, _ = adapter.match(path, method=method)
        except HTTPException:
            continue
        if endpoint != request.endpoint:
            allowed.append(method)
    return allowed
