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
from dataclasses import replace
from itertools import chain
from operator import attrgetter

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from .. import json_codec, models, usage
from ..access import bearer
from ..answers import Answer
from ..errors import ApiError, BadRequest, Conflict, NotFound, PayloadTooLarge
from ..services import current
from ..upstream.conversation import ChatMessage
from ..upstream.endpoints import from_base_url
from ..upstream.stream import Completion
from . import attachments, relay_requests, sse
from . import fields as f
from .answer_limits import stop_sequences, token_limit
from .bearer_check import verify_bearer
from .chat_memory import ChatMemory, Place, caller_scope
from .chat_turns import (
    TurnResult,
    TurnSpec,
    assistant_message,
    finish_reason_of,
    finish_turn,
    start_turn,
)
from .credentials import Grant, authenticate, check_caller
from .error_boundary import install_error_handlers, streamed_error
from .image_turns import image_markdown, link_base, with_images
from .openai_messages import messages_to_send, to_web_messages
from .structured_output import OutputFormat
from .tool_calls import Tools

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


def no_retry_after_deadline(response):
    """A 504 means the upstream had the prompt and did not finish within REQUEST_TIMEOUT: the
    SDKs retry 5xx twice by default, which would send the same prompt upstream three times.
    `x-should-retry: false` (which the official SDKs obey) makes that one turn."""
    if response.status_code == 504:
        response.headers["x-should-retry"] = "false"
    return response


blueprint.after_request(no_retry_after_deadline)
aliases.after_request(no_retry_after_deadline)


def _json_body() -> dict:
    # force=True: curl users often forget the Content-Type header; the body is JSON either way.
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", "invalid_json")
    return body


def _unsupported(param: str, message: str) -> BadRequest:
    return BadRequest(message, "unsupported_parameter", param=param)


MAX_CHOICES = 4  # `n`: each choice is a whole web turn


def _choices(body: dict) -> int:
    """`n`, bounded. Sampling knobs (temperature, top_p, seed, presence/frequency penalties,
    logit_bias...) are accepted and ignored: the web backend has no such settings, and clients
    send them by default. `logprobs: true` is refused: there are none to give."""
    if body.get("logprobs") is True or body.get("top_logprobs"):
        raise _unsupported("logprobs", "logprobs are not available: the web backend does not "
                                       "give token probabilities")
    n = body.get("n", 1)
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
        raise BadRequest(f"n must be a whole number from 1 to {MAX_CHOICES}", "invalid_field",
                         param="n")
    return n


class _Reply:
    """The fixed parts of one answer (id, created, model) and its rendering as official objects."""

    def __init__(self, model: models.Model, prompt: tuple[ChatMessage, ...], include_usage: bool,
                 include_reasoning: bool = False):
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.model = model
        self.prompt = prompt
        self.include_usage = include_usage
        # The web answer's reasoning summary, as `reasoning_content`, only when asked for.
        self.include_reasoning = include_reasoning

    def reasoning(self, completion: Completion | None) -> str | None:
        if not self.include_reasoning or completion is None:
            return None
        return completion.reasoning or None

    def usage(self, answers: list[str]) -> dict:
        """Token counts: the request's messages as given, and the text of every choice."""
        slug = self.model.web_slug
        prompt = usage.count_messages(((m.role, m.content) for m in self.prompt), slug)
        return usage.usage(prompt, sum(usage.count_text(text, slug) for text in answers))

    @staticmethod
    def extras(completion: Completion | None) -> dict:
        """The continuity fields beyond the official API."""
        if completion is None:
            return {}
        return {"conversation_id": completion.conversation_id,
                "message_id": completion.message_id,
                "model_slug": completion.model_slug}

    def message(self, result: TurnResult) -> dict:
        message = {"role": "assistant", "content": result.text, "refusal": None}
        reasoning = self.reasoning(result.completion)
        if reasoning:
            message["reasoning_content"] = reasoning
        if result.tool_calls:
            message["tool_calls"] = [call.to_dict() for call in result.tool_calls]
        return message

    def completion_object(self, results: list[TurnResult]) -> dict:
        """The `chat.completion` object of a non-streamed answer."""
        return {
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model.id,
            "choices": [{"index": index, "message": self.message(result), "logprobs": None,
                         "finish_reason": result.finish_reason}
                        for index, result in enumerate(results)],
            "usage": self.usage([result.output_text for result in results]),
            "system_fingerprint": None,
            **self.extras(results[0].completion),
        }

    def chunk(self, delta: dict | None, finish_reason: str | None = None, index: int = 0,
              **extra) -> dict:
        """One `chat.completion.chunk`; delta None gives the usage chunk (no choices)."""
        choices = [] if delta is None else [{"index": index, "delta": delta, "logprobs": None,
                                             "finish_reason": finish_reason}]
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.model.id, "system_fingerprint": None, "choices": choices}
        if self.include_usage:
            # With include_usage every chunk carries "usage": null except the last (official).
            chunk["usage"] = None
        chunk.update(extra)
        return chunk


def _turn_spec(body: dict, config, model: models.Model, messages: tuple[ChatMessage, ...],
               memory: ChatMemory) -> tuple[TurnSpec, bool]:
    """What the request asks of the turn (where it attaches, emulated features), validated, and
    whether it continues a remembered conversation (chat_memory.py)."""
    conversation_id = f.identifier(body, "conversation_id")
    parent_message_id = f.identifier(body, "parent_message_id")
    if bool(conversation_id) != bool(parent_message_id):
        raise BadRequest("conversation_id and parent_message_id go together: pass the "
                         "conversation_id and message_id of the previous answer", "invalid_field",
                         param="parent_message_id" if conversation_id else "conversation_id")
    remembered = False
    if conversation_id:
        to_send = messages_to_send(messages, continuing=True)
    else:
        place, start = memory.find(model.web_slug, messages)
        remembered = place is not None
        if place is not None:
            conversation_id, parent_message_id = place.conversation_id, place.message_id
        to_send = messages[start:]
    if sum(len(m.content) for m in to_send) > config.max_prompt_chars:
        raise PayloadTooLarge(f"the messages are longer than {config.max_prompt_chars} "
                              "characters", param="messages")
    # Only the files of the messages that go upstream are read (fetched, decoded).
    to_send = attachments.resolve(to_send, attachments.FileRules.from_config(config))
    spec = TurnSpec(
        to_send=to_send, model=model.web_slug, conversation_id=conversation_id,
        parent_message_id=parent_message_id, timeout=config.request_timeout,
        tools=Tools.from_request(body),
        output=OutputFormat.from_request(body.get("response_format")),
        stops=stop_sequences(body.get("stop")), max_tokens=token_limit(body),
        thinking_effort=models.thinking_effort(body.get("reasoning_effort")))
    return spec, remembered


def _wants_reasoning(body: dict) -> bool:
    """Whether the caller asked for the reasoning: `reasoning_effort` (OpenAI), or
    `include_reasoning: true` / a `reasoning` object (OpenRouter-style clients)."""
    return (body.get("reasoning_effort") is not None or body.get("include_reasoning") is True
            or isinstance(body.get("reasoning"), dict))


def _start_first(grant: Grant, client, spec: TurnSpec, remembered: bool,
                 messages: tuple[ChatMessage, ...], config) -> tuple[TurnSpec, Answer]:
    """Start the turn; a remembered conversation that is gone upstream (deleted, or its account
    left the pool) is replaced by a new one with the whole history."""
    try:
        return spec, start_turn(grant, client, spec)
    except (NotFound, Conflict):
        if not remembered:
            raise
    messages = attachments.resolve(messages, attachments.FileRules.from_config(config))
    spec = replace(spec, to_send=messages, conversation_id=None, parent_message_id=None)
    return spec, start_turn(grant, client, spec)


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
    model = _resolve(services, model_name, grant.access_token)
    messages = to_web_messages(body.get("messages"), max_messages=config.max_messages)
    memory = ChatMemory(services.store, caller_scope())
    spec, remembered = _turn_spec(body, config, model, messages, memory)
    n = _choices(body)
    stream = f.flag(body, "stream")
    options = body.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True

    reply = _Reply(model, messages, include_usage, include_reasoning=_wants_reasoning(body))
    client = services.conversations
    # Started before the status line, so that early failures get their own status.
    spec, first = _start_first(grant, client, spec, remembered, messages, config)

    def remember(result: TurnResult) -> None:
        completion = result.completion
        memory.remember(model.web_slug, (*messages, assistant_message(result)),
                        Place(completion.conversation_id, completion.message_id))

    base = link_base(services)

    def drawn(completion: Completion) -> str:  # the images the model drew, as markdown links
        return image_markdown(services, grant, completion, base)

    if stream:
        return sse.response(_stream_chunks(grant, client, spec, n, first, reply, remember,
                                           drawn), first)
    results = [finish_turn(grant, client, spec, first)]
    for _ in range(n - 1):
        results.append(finish_turn(grant, client, spec, start_turn(grant, client, spec)))
    for result in results:
        if not result.tool_calls:
            result.text = with_images(result.text or "", drawn(result.completion))
        remember(result)
    return jsonify(reply.completion_object(results))


def _stream_chunks(grant: Grant, client, spec: TurnSpec, n: int, first: Answer,
                   reply: _Reply, remember, drawn=lambda completion: "") -> Iterator[bytes]:
    """Role chunk, content chunks, the finish chunk (per choice), the usage chunk if asked, then
    [DONE]; a failure after the start ends the stream with one error envelope, which the SDK
    raises."""
    answer = first
    outputs: list[str] = []
    try:
        extras: dict = {}
        for index in range(n):
            if index:
                answer = start_turn(grant, client, spec)
            with answer:
                yield sse.event(reply.chunk({"role": "assistant", "content": ""}, index=index))
                streamed = _StreamedChoice(reply, index, drawn)
                head = _read_head(answer) if spec.streams_text_unless_json else ""
                if spec.shaped and (not spec.streams_text_unless_json
                                    or head.lstrip().startswith(JSON_STARTS)):
                    yield from streamed.shaped(finish_turn(grant, client, spec, answer))
                else:
                    yield from streamed.text(spec, answer, head)
            outputs.append(streamed.output_text)
            if streamed.result is not None:  # None: cut at a limit, before its ids came
                extras = extras or reply.extras(streamed.result.completion)
                remember(streamed.result)
        if reply.include_usage:
            final = reply.chunk(None, **extras)
            final["usage"] = reply.usage(outputs)
            yield sse.event(final)
        yield sse.DONE
    except Exception as error:  # the stream has begun: the status line can no longer say it
        yield sse.event(streamed_error(error, error_body))


# How an answer that calls functions begins (the JSON, or a ``` fence around it).
JSON_STARTS = ("{", "[", "`")


def _read_head(answer: Answer) -> str:
    """The answer's text up to its first visible character (the rest stays in the answer)."""
    head = ""
    for delta in answer:
        head += delta.text
        if head.strip():
            break
    return head


def _pieces(head: str, answer: Answer) -> Iterator[str]:
    """`head`, then the text of the answer's deltas (map: no Python frame resumed per delta)."""
    texts = map(_TEXT_OF, answer)
    return chain((head,), texts) if head else texts


_TEXT_OF = attrgetter("text")


class _StreamedChoice:
    """The chunks of one choice of a stream, and what it gave (`output_text`, `result`)."""

    def __init__(self, reply: _Reply, index: int, drawn=lambda completion: ""):
        self.reply = reply
        self.index = index
        self.drawn = drawn  # the markdown of the images an answer drew
        # The pieces given so far, joined when read: `self.text += piece` would copy all the text
        # so far at every piece (no in-place growth for attributes), quadratic in a long answer.
        self._given: list[str] = []
        self.result: TurnResult | None = None
        self._around: list[bytes] | None = None  # a content chunk's bytes before/after the text

    @property
    def output_text(self) -> str:
        if len(self._given) > 1:
            self._given = ["".join(self._given)]
        return self._given[0] if self._given else ""

    def _chunk(self, delta: dict, finish_reason: str | None = None, **extra) -> bytes:
        return sse.event(self.reply.chunk(delta, finish_reason, index=self.index, **extra))

    def _content(self, text: str) -> bytes:
        """The chunk of one piece of text: the same bytes as `_chunk({"content": text})`, made
        by encoding only the text into the rest of the chunk, encoded once per choice (this
        runs at every event of a stream)."""
        if self._around is None:
            around = self._chunk({"content": ""}).split(b'"content":""')
            self._around = around if len(around) == 2 else []
        if not self._around:  # never seen: the placeholder also stood elsewhere in the chunk
            return self._chunk({"content": text})
        before, after = self._around
        return b'%s"content":%s%s' % (before, json_codec.dumps(text), after)

    def text(self, spec: TurnSpec, answer: Answer, head: str = "") -> Iterator[bytes]:
        """A text answer as it streams (after `head`, its text already read), cut at
        `stop`/`max_tokens`; once cut, the upstream is no longer read (the rest would be thrown
        away)."""
        cutter = spec.cutter()
        for piece in _pieces(head, answer):
            text = cutter.feed(piece) if cutter.active else piece
            if text:
                self._given.append(text)
                yield self._content(text)
            if cutter.done:
                answer.close()
                yield self._chunk({}, cutter.finish_reason)
                return
        rest = cutter.finish()
        if rest:
            self._given.append(rest)
            yield self._chunk({"content": rest})
        completion = answer.completion
        images = with_images(self.output_text, self.drawn(completion))[len(self.output_text):]
        if images:
            self._given.append(images)
            yield self._chunk({"content": images})
        self.result = TurnResult(self.output_text, None, finish_reason_of(completion), completion)
        reasoning = self.reply.reasoning(completion)
        if reasoning:
            yield self._chunk({"reasoning_content": reasoning})
        yield self._chunk({}, self.result.finish_reason, **self.reply.extras(completion))

    def shaped(self, result: TurnResult) -> Iterator[bytes]:
        """An answer read whole (tools, JSON): its content or its tool calls at once."""
        self.result, self._given = result, [result.output_text]
        if result.tool_calls:
            for position, call in enumerate(result.tool_calls):
                yield self._chunk({"tool_calls": [{
                    "index": position, "id": call.id, "type": "function",
                    "function": {"name": call.name, "arguments": ""}}]})
                yield self._chunk({"tool_calls": [{
                    "index": position, "function": {"arguments": call.arguments}}]})
        elif result.text:
            yield self._chunk({"content": result.text})
        reasoning = self.reply.reasoning(result.completion)
        if reasoning:
            yield self._chunk({"reasoning_content": reasoning})
        yield self._chunk({}, result.finish_reason, **self.reply.extras(result.completion))


@blueprint.get("/models")
@aliases.get("/models")
def list_models():
    """Every model name the service accepts, in the official list shape (with the slugs the
    caller's own account lists, when the caller brings an access token, or those the pooled
    accounts list, when the pool serves the caller)."""
    services = current()
    if relay_requests.own_key(services) is not None:  # RELAY_BYOK: an upstream key, no account
        return jsonify({"object": "list",
                        "data": relay_requests.listed_models(services, set())})
    check_caller(services)  # an expired JWT, locally
    verify_bearer(services)  # any other token, with the backend (cached)
    extra = (services.config.default_model, *_account_slugs(services, _own_token(services)))
    listed = [model.to_dict() for model in models.list_models(extra_slugs=extra)]
    listed += relay_requests.listed_models(services, {model["id"] for model in listed})
    return jsonify({"object": "list", "data": listed})


@blueprint.get("/models/<path:model_id>")
def get_model(model_id: str):
    """One model object; 404 model_not_found for names the service does not accept."""
    services = current()
    byok = relay_requests.own_key(services) is not None  # RELAY_BYOK: relay models only
    if not byok:
        check_caller(services)
    if relayed := relay_requests.find_model(services, model_id):
        return jsonify(relayed)
    if byok:
        raise NotFound(f"The model `{model_id}` does not exist or you do not have access to it.",
                       "model_not_found", param="model")
    return jsonify(_resolve(services, model_id, _own_token(services)).to_dict())


def _own_token(services) -> str | None:
    """The caller's own ChatGPT access token (not a service key, not the pool), if any."""
    return None if services.keys.enabled else bearer()


def _resolve(services, name: str, access_token: str | None) -> models.Model:
    """The Model for `name`; a slug only the caller's account lists (GET /backend-api/models,
    read at most once per six hours) is accepted too. Known names never cost that read."""
    try:
        return models.resolve(name, extra_slugs=(services.config.default_model,))
    except NotFound:
        extra = _account_slugs(services, access_token)
        if not extra:
            raise
        return models.resolve(name, extra_slugs=(services.config.default_model, *extra))


def _account_slugs(services, access_token: str | None) -> tuple[str, ...]:
    if not access_token:
        # No token of the caller's own: the pool serves it (or nothing does).
        return services.pool.offered_models() if services.pool is not None else ()
    upstream = from_base_url(services.config.base_url)
    return services.model_catalog.slugs(access_token, lambda: models.slugs_of(
        services.history.models(access_token, upstream)))


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
        raise ApiError(f"{request.method} is not allowed on {request.path}: use "
                       f"{' or '.join(allowed)}", "method_not_allowed", status=405,
                       headers={"Allow": ", ".join(allowed)})
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
