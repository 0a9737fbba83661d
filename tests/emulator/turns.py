"""One conversation POST: validate the body (docs/protocol-requests.md) and apply it to the tree
(conversations.py).

Actions:
* `next`: the request's messages are chained under `parent_message_id` (for a new conversation,
  under a root node with that id and the hidden system message), then a new assistant answer.
* `variant`: like `next`, but a message whose id is already in the tree is reused, so the new
  answer becomes a sibling of the previous one.
* `continue`: resumes a truncated answer. `parent_message_id` is that assistant message; `messages`
  must be absent or empty. The SAME message id streams again with cumulative parts
  (old text + more).

Max tokens (`switches.max_tokens_cuts = N`): the answer is cut at word boundaries into N+1 pieces
when it is created. Each of the first N turns ends the message with status
`finished_successfully`, `end_turn: false` and `finish_details: {"type": "max_tokens"}` (end_turn
false because the turn is not over, docs/protocol.md; the status stays finished_successfully
because the message did finish, truncated). The piece that completes the answer ends with
`end_turn: true` and `{"type": "stop", "stop_tokens": [200002]}`. A `continue` on an answer with
nothing left adds no text and finishes with stop.

The tree is updated before streaming starts, with the answer's final state: a stream cut by
`drop_after_events` still leaves the full answer in the store.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from flask import abort

from . import replies
from .conversations import Conversation, ConversationStore, make_message, message_text
from .failures import json_response
from .streams import MAX_TOKENS, STOP, Turn, split_words

ACTIONS = ("next", "continue", "variant")


@dataclass
class ChatRequest:
    """A validated conversation POST body."""

    action: str
    messages: list[dict]
    parent_message_id: str
    conversation_id: str | None
    model: str
    supported_encodings: list
    history_disabled: bool
    body: dict
    # What the model says it received with the last user message's files (files.describe).
    files_note: str = ""


def _bad(detail: str):
    abort(json_response(400, {"detail": detail}))


def _check_message(index: int, message) -> dict:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        _bad(f"{where} must be an object")
    author = message.get("author")
    if not isinstance(author, dict) or not (isinstance(author.get("role"), str) and author["role"]):
        _bad(f"{where}.author.role is required")
    content = message.get("content")
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
        _bad(f"{where}.content.parts must be a list")
    if not isinstance(content.get("content_type", "text"), str):
        _bad(f"{where}.content.content_type must be a string")
    if "id" in message and not (isinstance(message["id"], str) and message["id"]):
        _bad(f"{where}.id must be a non-empty string")
    if not isinstance(message.get("metadata", {}), dict):
        _bad(f"{where}.metadata must be an object")
    # Some clients (PawanOsman) send no id; the server assigns one.
    return {**message, "id": message.get("id") or str(uuid.uuid4())}


def parse(body) -> ChatRequest:
    """The request, or abort with 400 `{"detail": "..."}` naming the first problem."""
    if not isinstance(body, dict):
        _bad("the body must be a JSON object")
    action = body.get("action")
    if action not in ACTIONS:
        _bad(f"action must be one of {', '.join(ACTIONS)}")
    for key in ("parent_message_id", "model"):
        if not isinstance(body.get(key), str) or not body[key]:
            _bad(f"{key} must be a non-empty string")
    conversation_id = body.get("conversation_id")
    if conversation_id is not None and not (isinstance(conversation_id, str) and conversation_id):
        _bad("conversation_id must be a non-empty string or null")
    messages = body.get("messages")
    if action == "continue":
        if messages:
            _bad("action continue takes no messages")
        if conversation_id is None:
            _bad("action continue needs a conversation_id")
        messages = []
    elif not isinstance(messages, list) or not messages:
        _bad("messages must be a non-empty list")
    encodings = body.get("supported_encodings") or []
    if not isinstance(encodings, list):
        _bad("supported_encodings must be a list")
    return ChatRequest(
        action=action,
        messages=[_check_message(i, m) for i, m in enumerate(messages)],
        parent_message_id=body["parent_message_id"],
        conversation_id=conversation_id,
        model=body["model"],
        supported_encodings=encodings,
        history_disabled=bool(body.get("history_and_training_disabled", False)),
        body=body,
    )


def prompt_chars(request: ChatRequest) -> int:
    """Characters of text in the request's messages (what `max_prompt_chars` limits)."""
    return sum(len(message_text(m)) for m in request.messages)


def answer_text(switches, request: ChatRequest) -> str:
    """`answer_fn(body)`, else `answer`, else the model following a tool or JSON instruction
    (replies.py), else "Echo: <last user message text>"."""
    if switches.answer_fn is not None:
        return str(switches.answer_fn(request.body))
    if switches.answer is not None:
        return switches.answer
    scripted = replies.scripted_answer(request.messages)
    if scripted is not None:
        return scripted
    users = [m for m in request.messages if m["author"]["role"] == "user"]
    return f"Echo: {message_text(users[-1]) if users else ''}{request.files_note}"


def _title(text: str) -> str:
    words = text.split()[:6]
    return " ".join(words).strip(" .,:;!?") or "New chat"


def _cut(text: str, cuts: int) -> list[str]:
    """`text` in cuts+1 consecutive pieces, split between words."""
    words = split_words(text)
    count = max(0, cuts) + 1
    bounds = [round(i * len(words) / count) for i in range(count + 1)]
    return ["".join(words[bounds[i]:bounds[i + 1]]) for i in range(count)]


def _slug(model: str) -> str:
    return "gpt-4o" if model == "auto" else model


def _stored(message: dict, request_id: str, turn_exchange_id: str) -> dict:
    """A client message as the server keeps and echoes it."""
    content = message["content"]
    return make_message(
        message["author"]["role"], content["parts"], message_id=message["id"],
        content_type=content.get("content_type", "text"), create_time=time.time(),
        metadata={**message.get("metadata", {}), "request_id": request_id,
                  "message_source": None, "turn_exchange_id": turn_exchange_id},
    )


def _finish(message: dict, text: str, more_to_come: bool) -> None:
    message["content"]["parts"] = [text]
    message["status"] = "finished_successfully"
    message["end_turn"] = not more_to_come
    message["metadata"]["finish_details"] = dict(MAX_TOKENS if more_to_come else STOP)
    message["metadata"]["is_complete"] = True


def apply(store: ConversationStore, owner: str, request: ChatRequest, switches) -> Turn:
    """Add the request to the tree and return what to stream; aborts with 404/400 when it can't."""
    request_id = str(uuid.uuid4())
    turn_exchange_id = str(uuid.uuid4())
    with store.lock:
        echoed: list[dict] = []
        if request.conversation_id is None:
            if request.action != "next":
                _bad(f"action {request.action} needs a conversation_id")
            conversation = store.create(owner, request.model,
                                        history_disabled=request.history_disabled)
            root = conversation.add(None, None, node_id=request.parent_message_id)
            hidden = make_message("system", [""], end_turn=True, weight=0.0,
                                  metadata={"is_visually_hidden_from_conversation": True})
            parent = conversation.add(hidden, root.id).id
            echoed.append(hidden)
            users = [m for m in request.messages if m["author"]["role"] == "user"]
            conversation.title = _title(message_text(users[0]) if users else "")
        else:
            conversation = store.get(request.conversation_id, owner)
            if conversation is None:
                abort(json_response(404, {"detail": "Conversation not found"}))
            parent = request.parent_message_id
            if parent not in conversation.mapping:
                abort(json_response(404, {"detail": "Parent message not found"}))
        is_new = request.conversation_id is None
        conversation.received.extend(request.messages)
        if request.action == "continue":
            return _continue(conversation, parent, request, request_id, switches)

        last_user = None
        for message in request.messages:
            if message["id"] in conversation.mapping:
                if request.action == "variant":
                    parent = message["id"]
                    last_user = conversation.mapping[parent].message
                    continue
                _bad(f"message id {message['id']} is already in this conversation")
            stored = _stored(message, request_id, turn_exchange_id)
            parent = conversation.add(stored, parent).id
            if stored["author"]["role"] != "assistant":
                echoed.append(stored)
            if stored["author"]["role"] == "user":
                last_user = stored

        turn = Turn(conversation.id, _slug(request.model), echoed, last_user, None,
                    title=conversation.title if is_new else None, is_new=is_new,
                    request_id=request_id, **_stream_options(switches))
        if switches.moderation_blocked:
            conversation.current_node = parent
            return turn

        first, *rest = _cut(answer_text(switches, request), switches.max_tokens_cuts)
        assistant = make_message("assistant", [first], create_time=time.time(), metadata={
            "citations": [], "content_references": [], "message_type": "next",
            # A downgraded answer's own metadata names the model that wrote it.
            "model_slug": switches.served_model or turn.model_slug,
            "default_model_slug": request.model,
            "parent_id": parent, "request_id": request_id,
            "turn_exchange_id": turn_exchange_id, "timestamp_": "absolute"})
        _finish(assistant, first, more_to_come=bool(rest))
        node = conversation.add(assistant, parent)
        node.pending = rest
        conversation.current_node = node.id
        turn.assistant, turn.new_text = assistant, first
        return turn


def _continue(conversation: Conversation, parent: str, request: ChatRequest,
              request_id: str, switches) -> Turn:
    node = conversation.mapping[parent]
    if node.message is None or node.message["author"]["role"] != "assistant":
        _bad("action continue needs parent_message_id to be an assistant message")
    previous = message_text(node.message)
    more = node.pending.pop(0) if node.pending else ""
    # A fresh dict: a stream of the previous turn may still be serialising the old one.
    assistant = make_message("assistant", [], message_id=node.id,
                             create_time=node.message["create_time"],
                             metadata={**node.message["metadata"], "message_type": "continue",
                                       "request_id": request_id})
    _finish(assistant, previous + more, more_to_come=bool(node.pending))
    node.message = assistant
    conversation.current_node = node.id
    return Turn(conversation.id, _slug(request.model), [], None, assistant,
                previous_text=previous, new_text=more, request_id=request_id,
                **_stream_options(switches))


def _stream_options(switches) -> dict:
    """What the switches say about how the turn streams (see streams.Turn)."""
    return {"dialect": switches.dialect, "reasoning": switches.reasoning,
            "served_model": switches.served_model, "internal_model": switches.internal_model,
            "degraded": switches.degraded}
