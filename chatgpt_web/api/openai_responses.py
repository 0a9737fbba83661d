"""The Responses API: POST /v1/responses (plain and streamed), GET and DELETE /v1/responses/{id}.

Newer clients (the SDK's `client.responses`, agent frameworks) speak this API instead of chat
completions. A response is one web turn, run by the same core as /v1/chat/completions
(chat_turns.py), so tools, `text.format` structured output and `max_output_tokens` work the same.

* `input` is a string or a list of items: messages (`role` + text content), `function_call` and
  `function_call_output` items (earlier calls and their results); `instructions` goes first as a
  system message (it is not carried over from a previous response, as in the official API).
* `previous_response_id` continues the web conversation of that response, sending only the new
  input. The store keeps, per caller and response id, the web conversation and message ids and the
  model, never any content; so GET /v1/responses/{id} gives the response's metadata with an empty
  `output`, and DELETE forgets it. `store: false` keeps nothing.
* Streaming sends the event sequence the SDK parses: response.created, response.in_progress,
  output_item.added, content_part.added, output_text.delta..., output_text.done,
  content_part.done, output_item.done (function calls: function_call_arguments.delta/.done), and
  response.completed. A failure after the start sends one `error` event, which the SDK raises.
* `reasoning: {"effort": ...}` is sent as the web's thinking effort (models.py maps the values);
  `reasoning: {"summary": ...}` adds a `reasoning` output item with the web answer's reasoning
  summary, when it has one; without it no reasoning is returned.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator

from flask import Blueprint, jsonify, request

from .. import models, usage
from ..answers import Answer
from ..errors import BadRequest, NotFound, PayloadTooLarge
from ..services import current
from ..upstream.conversation import ChatMessage
from . import fields as f
from . import sse
from .answer_limits import token_limit
from .attachments import FileRules, file_ref, image_ref, resolve
from .chat_memory import caller_scope
from .chat_turns import TurnResult, TurnSpec, finish_reason_of, finish_turn, start_turn
from .credentials import Grant, authenticate, check_caller
from .error_boundary import as_api_error, install_error_handlers
from .image_turns import image_markdown, link_base, with_images
from .openai_compat import error_body, no_retry_after_deadline
from .openai_messages import to_web_messages
from .structured_output import OutputFormat
from .tool_calls import Tools

blueprint = Blueprint("openai_responses", __name__, url_prefix="/v1")
install_error_handlers(blueprint, error_body)
blueprint.after_request(no_retry_after_deadline)

KEY_PREFIX = "response:v1:"
KEEP_SECONDS = 30 * 24 * 3600  # as the official API keeps stored responses
_TEXT_PARTS = ("input_text", "output_text", "text")


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(24)


def _key(scope: str, response_id: str) -> str:
    return KEY_PREFIX + hashlib.sha256(f"{scope}\0{response_id}".encode()).hexdigest()


# --- input items -> chat messages ------------------------------------------------------------

def _item_text(content, param: str) -> str | list:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest("content must be a string or a list of parts", "invalid_field",
                         param=param)
    parts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _FILE_PARTS:  # as the chat completions parts (attachments.py reads them)
            parts.append(_file_part(kind, part, f"{param}[{index}]"))
            continue
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise BadRequest(f"content parts of type {kind!r} are not supported: this service "
                             "sends text, images and files", "unsupported_content",
                             param=f"{param}[{index}].type")
        parts.append({"type": "text", "text": part["text"]})
    return parts


_FILE_PARTS = ("input_image", "input_file")


def _file_part(kind: str, part: dict, param: str) -> dict:
    """An `input_image` / `input_file` part as the chat completions part it stands for, checked
    here so that errors name the `input` field."""
    if part.get("file_id") is not None:
        raise BadRequest("file_id is not supported: this service has no file store of its own; "
                         "send the file itself", "unsupported_content", param=f"{param}.file_id")
    if kind == "input_image":
        image_ref(part.get("image_url"), param)
        return {"type": "image_url", "image_url": {"url": part["image_url"]}}
    file = {"file_data": part.get("file_data"), "filename": part.get("filename")}
    file_ref(file, param)
    return {"type": "file", "file": file}


def input_messages(raw) -> list[dict]:
    """`input` (a string or items) as chat-completions messages. :raise BadRequest."""
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise BadRequest("input must be a string or a non-empty array of items",
                         "missing_field" if raw is None else "invalid_field", param="input")
    messages = []
    for index, item in enumerate(raw):
        param = f"input[{index}]"
        if not isinstance(item, dict):
            raise BadRequest("each input item must be an object", "invalid_field", param=param)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role"),
                             "content": _item_text(item.get("content"), f"{param}.content")})
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": item.get("call_id"), "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")}}]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str) else str(output)})
        elif kind != "reasoning":  # earlier reasoning items carry nothing to send
            raise BadRequest(f"input items of type {kind!r} are not supported", "invalid_field",
                             param=f"{param}.type")
    return messages


# --- the response object ---------------------------------------------------------------------

class _Response:
    """One response's fixed parts and its rendering as official objects and events."""

    def __init__(self, body: dict, model: models.Model, prompt: tuple[ChatMessage, ...],
                 previous_response_id: str | None, want_reasoning: bool):
        self.id = _new_id("resp_")
        self.created_at = int(time.time())
        self.body = body
        self.model = model
        self.prompt = prompt
        self.previous_response_id = previous_response_id
        self.want_reasoning = want_reasoning
        self.sequence = 0
        self.message_id = _new_id("msg_")  # the id of the message item, once there is one

    def usage(self, output_text: str) -> dict:
        slug = self.model.web_slug
        prompt = usage.count_messages(((m.role, m.content) for m in self.prompt), slug)
        output = usage.count_text(output_text, slug)
        return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + output}

    def object(self, status: str, output: list[dict], result: TurnResult | None = None) -> dict:
        body = self.body
        reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
        text = body.get("text")
        text_format = (text.get("format") if isinstance(text, dict) else None) or {"type": "text"}
        obj = {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": status, "error": None,
            "incomplete_details": ({"reason": "max_output_tokens"} if status == "incomplete"
                                   else None),
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": self.model.id, "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": self.previous_response_id,
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
            "store": body.get("store", True) is not False,
            "temperature": body.get("temperature", 1.0), "text": {"format": text_format},
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0), "truncation": "disabled",
            "usage": None, "user": None, "metadata": body.get("metadata") or {},
        }
        if result is not None:
            obj["usage"] = self.usage(result.output_text)
            obj["output_text"] = result.text or ""
            completion = result.completion
            obj.update(conversation_id=completion.conversation_id,
                       message_id=completion.message_id, model_slug=completion.model_slug)
        return obj

    @staticmethod
    def status_of(result: TurnResult) -> str:
        return "incomplete" if result.finish_reason == "length" else "completed"

    def items(self, result: TurnResult, message_id: str) -> list[dict]:
        """The output items of a finished turn."""
        items = []
        reasoning = result.completion.reasoning
        if self.want_reasoning and reasoning:
            items.append({"id": _new_id("rs_"), "type": "reasoning",
                          "summary": [{"type": "summary_text", "text": reasoning}]})
        if result.tool_calls:
            items += [_call_item(call) for call in result.tool_calls]
        else:
            items.append(_message_item(message_id, result.text or "", "completed"))
        return items

    def event(self, kind: str, **fields) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse.event(payload, name=kind)


def _message_item(item_id: str, text: str | None, status: str) -> dict:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": content}


def _call_item(call, arguments: str | None = None) -> dict:
    return {"id": "fc_" + call.id.removeprefix("call_"), "type": "function_call",
            "status": "completed" if arguments is None else "in_progress",
            "call_id": call.id, "name": call.name,
            "arguments": call.arguments if arguments is None else arguments}


# --- the endpoints -----------------------------------------------------------------------------

@blueprint.post("/responses")
def create_response():
    """Run one turn and answer a `response` object, or its events when `stream` is true."""
    services = current()
    config = services.config
    grant = authenticate(services)
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", "invalid_json")
    model = models.resolve(f.text(body, "model", required=True, max_length=200),
                           extra_slugs=(config.default_model,))
    instructions = f.text(body, "instructions", max_length=config.max_prompt_chars)
    messages = to_web_messages(input_messages(body.get("input")),
                               max_messages=config.max_messages)
    if instructions:
        messages = (ChatMessage("system", instructions), *messages)
    if sum(len(m.content) for m in messages) > config.max_prompt_chars:
        raise PayloadTooLarge(f"the input is longer than {config.max_prompt_chars} characters",
                              param="input")
    messages = resolve(messages, FileRules.from_config(config))
    if body.get("top_logprobs"):
        raise BadRequest("logprobs are not available: the web backend does not give token "
                         "probabilities", "unsupported_parameter", param="top_logprobs")
    scope = caller_scope()
    previous_id = f.identifier(body, "previous_response_id")
    previous = _load(services.store, scope, previous_id) if previous_id else None
    text = body.get("text")
    output = OutputFormat.from_request((text or {}).get("format") if isinstance(text, dict)
                                       else None, param="text.format")
    reasoning = body.get("reasoning")
    spec = TurnSpec(
        to_send=messages, model=model.web_slug,
        conversation_id=previous["conversation_id"] if previous else None,
        parent_message_id=previous["message_id"] if previous else None,
        timeout=config.request_timeout, tools=Tools.from_request(body), output=output,
        max_tokens=token_limit(body, ("max_output_tokens",)),
        thinking_effort=_thinking_effort(reasoning))
    want_reasoning = isinstance(reasoning, dict) and bool(reasoning.get("summary"))
    response = _Response(body, model, messages, previous_id, want_reasoning)
    store = body.get("store", True) is not False

    def save(result: TurnResult) -> None:
        completion = result.completion
        if store and scope and completion.conversation_id and completion.message_id:
            services.store.set(_key(scope, response.id), {
                "conversation_id": completion.conversation_id,
                "message_id": completion.message_id, "model": model.id,
                "created_at": response.created_at, "status": response.status_of(result),
                "previous_response_id": previous_id}, expire=KEEP_SECONDS)

    base = link_base(services)

    def drawn(completion) -> str:  # the images the model drew, as markdown links
        return image_markdown(services, grant, completion, base)

    client = services.conversations
    answer = start_turn(grant, client, spec)
    if f.flag(body, "stream"):
        return sse.response(_events(grant, client, spec, answer, response, save, drawn),
                            answer)
    result = finish_turn(grant, client, spec, answer)
    if not result.tool_calls:
        result.text = with_images(result.text or "", drawn(result.completion))
    save(result)
    return jsonify(response.object(response.status_of(result),
                                   response.items(result, _new_id("msg_")), result))


def _thinking_effort(reasoning) -> str | None:
    """`reasoning.effort` as the web's thinking effort (the mapping of models.py)."""
    if not isinstance(reasoning, dict):
        return None
    try:
        return models.thinking_effort(reasoning.get("effort"))
    except BadRequest as error:
        error.param = "reasoning.effort"
        raise


def _load(store, scope: str | None, response_id: str) -> dict:
    value = store.get(_key(scope, response_id)) if scope else None
    if not isinstance(value, dict):
        raise NotFound(f"Response with id '{response_id}' not found.", "response_not_found",
                       param="previous_response_id")
    return value


def _events(grant: Grant, client, spec: TurnSpec, answer: Answer, response: _Response,
            save, drawn=lambda completion: "") -> Iterator[bytes]:
    """The official event sequence (see the module doc)."""
    with answer:
        try:
            yield response.event("response.created",
                                 response=response.object("in_progress", []))
            yield response.event("response.in_progress",
                                 response=response.object("in_progress", []))
            if spec.shaped:
                result = finish_turn(grant, client, spec, answer)
                yield from _shaped_events(response, result)
            else:
                result = yield from _text_events(response, spec, answer, drawn)
            if result is None:  # cut at max_output_tokens before the ids came
                return
            save(result)
            yield response.event("response.completed", response=response.object(
                response.status_of(result), response.items(result, response.message_id),
                result))
        except Exception as error:  # the stream has begun: the status line can no longer say it
            api_error = as_api_error(error)
            yield response.event("error", code=api_error.code, message=api_error.message,
                                 param=api_error.param, **error_body(api_error))


def _text_events(response: _Response, spec: TurnSpec, answer: Answer,
                 drawn=lambda completion: ""):
    item_id = response.message_id
    part = {"item_id": item_id, "output_index": 0, "content_index": 0}
    yield response.event("response.output_item.added", output_index=0,
                         item=_message_item(item_id, None, "in_progress"))
    yield response.event("response.content_part.added", **part,
                         part={"type": "output_text", "text": "", "annotations": []})
    cutter = spec.cutter()
    text = ""
    for delta in answer:
        piece = cutter.feed(delta.text) if cutter.active else delta.text
        if piece:
            text += piece
            yield response.event("response.output_text.delta", **part, delta=piece,
                                 logprobs=[])
        if cutter.done:
            answer.close()  # stop reading the upstream: the rest would be thrown away
            break
    else:
        rest = cutter.finish()
        # The rest of the text, then the images the answer drew (image_turns.py).
        tail = with_images(text + rest, drawn(answer.completion))[len(text):]
        if tail:
            text += tail
            yield response.event("response.output_text.delta", **part, delta=tail, logprobs=[])
    done_part = {"type": "output_text", "text": text, "annotations": []}
    yield response.event("response.output_text.done", **part, text=text, logprobs=[])
    yield response.event("response.content_part.done", **part, part=done_part)
    status = "incomplete" if cutter.done else "completed"
    yield response.event("response.output_item.done", output_index=0,
                         item=_message_item(item_id, text, status))
    if cutter.done:
        yield response.event("response.incomplete", response=response.object(
            "incomplete", [_message_item(item_id, text, status)]))
        return None
    completion = answer.completion
    return TurnResult(text, None, finish_reason_of(completion), completion)


def _shaped_events(response: _Response, result: TurnResult) -> Iterator[bytes]:
    for index, item in enumerate(response.items(result, response.message_id)):
        if item["type"] == "function_call":
            call = next(c for c in result.tool_calls if c.id == item["call_id"])
            yield response.event("response.output_item.added", output_index=index,
                                 item=_call_item(call, arguments=""))
            yield response.event("response.function_call_arguments.delta", item_id=item["id"],
                                 output_index=index, delta=call.arguments)
            yield response.event("response.function_call_arguments.done", item_id=item["id"],
                                 output_index=index, arguments=call.arguments, name=call.name)
        elif item["type"] == "message":
            text = item["content"][0]["text"]
            part = {"item_id": item["id"], "output_index": index, "content_index": 0}
            yield response.event("response.output_item.added", output_index=index,
                                 item=_message_item(item["id"], None, "in_progress"))
            yield response.event("response.content_part.added", **part,
                                 part={"type": "output_text", "text": "", "annotations": []})
            yield response.event("response.output_text.delta", **part, delta=text, logprobs=[])
            yield response.event("response.output_text.done", **part, text=text, logprobs=[])
            yield response.event("response.content_part.done", **part,
                                 part=item["content"][0])
        else:
            yield response.event("response.output_item.added", output_index=index, item=item)
        yield response.event("response.output_item.done", output_index=index, item=item)


@blueprint.get("/responses/<response_id>")
def get_response(response_id: str):
    """A stored response's metadata (no content is stored, so `output` is empty)."""
    services = current()
    check_caller(services)
    value = _load(services.store, caller_scope(), response_id)
    return jsonify({"id": response_id, "object": "response", "created_at": value["created_at"],
                    "status": value["status"], "model": value["model"], "output": [],
                    "previous_response_id": value.get("previous_response_id"),
                    "error": None, "incomplete_details": None, "metadata": {},
                    "conversation_id": value["conversation_id"],
                    "message_id": value["message_id"]})


@blueprint.delete("/responses/<response_id>")
def delete_response(response_id: str):
    """Forget a stored response (the web conversation itself stays in the account)."""
    services = current()
    check_caller(services)
    scope = caller_scope()
    _load(services.store, scope, response_id)
    services.store.delete(_key(scope, response_id))
    return jsonify({"id": response_id, "object": "response.deleted", "deleted": True})
