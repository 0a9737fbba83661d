"""OpenAI `messages` -> the web backend's messages (docs/protocol-requests.md), and which of
them to send.

The web backend accepts several messages in one conversation POST, each with its own
`author.role` (chat2api and PawanOsman send the whole OpenAI history as separate messages in
"messages[]"). So a history is sent as it is, one web message per OpenAI message, roles intact;
nothing is flattened into one prompt, which would let the model mistake earlier answers for the
user's words.

`to_web_messages()` is the mapping:

| OpenAI message                               | web message                                  |
|----------------------------------------------|----------------------------------------------|
| role `system` or `developer`                 | role `system`                                |
| role `user` / `assistant`                    | the same role                                |
| content as a string                          | that text                                    |
| content as a list of `text` parts            | the texts joined with a newline              |
| (assistant: also `refusal` parts)            |                                              |
| assistant with content null and no tool calls | dropped (it carries nothing)               |
| assistant `tool_calls` / `function_call`     | `assistant`: its text, then the calls (1)    |
| role `tool` / `function` (a result)          | `user`: "Tool result (call id):" + result    |
| user `image_url` / `file` parts              | the message's attachments (attachments.py)   |
| other parts (`input_audio`...), files in other roles | 400 `unsupported_content`            |

(1) as the JSON the model is asked to write when it calls a function (tool_calls.py), so that the
model sees its earlier calls in the form it was told to use.

A user message's images and files are named here (attachments.FileRef) and read only if the
message goes upstream (attachments.resolve); they are uploaded to the account and sent as a
`multimodal_text` message (upstream/uploads.py). Parts the web backend cannot take are refused
rather than dropped: a silently dropped part would get an answer about something the model never
saw.

`messages_to_send()` is the continuity rule: a request that continues a web conversation
(`conversation_id` + `parent_message_id`) already has its history upstream, so only the messages
after the last assistant message are new and sent.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import BadRequest
from ..upstream.conversation import ChatMessage
from .attachments import FileRef, file_ref, image_ref
from .tool_calls import call_json, tool_result_text

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
          "tool": "user", "function": "user"}
_TEXT_PARTS = {"user": ("text",), "system": ("text",), "assistant": ("text", "refusal"),
               "tool": ("text",), "function": ("text",)}
PART_SEPARATOR = "\n"


def _invalid(message: str, param: str, code: str = "invalid_field") -> BadRequest:
    return BadRequest(message, code, param=param)


def _content_of(content: Any, role: str, param: str) -> tuple[str, tuple[FileRef, ...]]:
    """The text of a message's content (a string, or a list of parts), and the files of a user
    message's `image_url` and `file` parts."""
    if isinstance(content, str):
        return content, ()
    if not isinstance(content, list):
        raise _invalid("content must be a string or a list of content parts", param)
    texts, files = [], []
    for index, part in enumerate(content):
        part_param = f"{param}[{index}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _invalid("each content part must be an object with a type", part_param)
        kind = part["type"]
        if role == "user" and kind == "image_url":
            files.append(image_ref(part.get("image_url"), part_param))
            continue
        if role == "user" and kind == "file":
            files.append(file_ref(part.get("file"), part_param))
            continue
        if kind not in _TEXT_PARTS[role]:
            where = "" if role == "user" else f" in a {role} message"
            raise _invalid(f"content parts of type '{kind}' are not supported{where}: this "
                           "service sends text, and images and files of user messages",
                           f"{part_param}.type", "unsupported_content")
        text = part.get(kind)  # a text part's text is under "text", a refusal's under "refusal"
        if not isinstance(text, str):
            raise _invalid(f"a '{kind}' part needs a string '{kind}'", part_param)
        texts.append(text)
    return PART_SEPARATOR.join(texts), tuple(files)


def to_web_messages(raw: Any, *, max_messages: int | None = None) -> tuple[ChatMessage, ...]:
    """Validate an OpenAI `messages` array and map it to web messages (table in the module doc).

    :raise BadRequest: with `param` naming the offending message or part; more than
        `max_messages` messages (MAX_MESSAGES) is refused before any is read.
    """
    if not isinstance(raw, list) or not raw:
        raise _invalid("messages must be a non-empty array", "messages",
                       "missing_field" if raw is None else "invalid_field")
    if max_messages is not None and len(raw) > max_messages:
        raise _invalid(f"messages holds {len(raw)} messages; at most {max_messages} are accepted "
                       "(MAX_MESSAGES)", "messages", "too_many_messages")
    mapped = []
    for index, message in enumerate(raw):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _invalid("each message must be an object", param)
        role = message.get("role")
        if not isinstance(role, str):  # a list or an object: refused before any lookup by it
            raise _invalid("a message's role must be a string", f"{param}.role")
        if role not in _ROLES:
            raise _invalid(f"the role {role!r} is not supported: use system, developer, user, "
                           "assistant or tool", f"{param}.role", "unsupported_role")
        content = message.get("content")
        text, files = (None, ()) if content is None else _content_of(content, role,
                                                                       f"{param}.content")
        if role == "assistant":
            calls = _calls_of(message, param)
            if calls:
                text = "\n".join(part for part in (text, call_json(calls)) if part)
            if text is None:
                continue
        elif role in ("tool", "function"):
            if text is None:
                raise _invalid("a tool message needs content", f"{param}.content",
                               "missing_field")
            call_id = message.get("tool_call_id")
            name = message.get("name")
            text = tool_result_text(name if isinstance(name, str) else None,
                                    call_id if isinstance(call_id, str) else None, text)
        elif text is None:
            raise _invalid(f"a {role} message needs content", f"{param}.content", "missing_field")
        mapped.append(ChatMessage(_ROLES[role], text, files))
    if not mapped:
        raise _invalid("messages contain no content to send", "messages")
    return tuple(mapped)


def _calls_of(message: dict, param: str) -> list[tuple[str, Any]]:
    """(name, arguments) of an assistant message's tool_calls or legacy function_call."""
    raw = message.get("tool_calls") or []
    if message.get("function_call"):
        raw = [{"function": message["function_call"]}]
    if not isinstance(raw, list):
        raise _invalid("tool_calls must be an array", f"{param}.tool_calls")
    calls = []
    for index, call in enumerate(raw):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _invalid("each tool call needs function.name", f"{param}.tool_calls[{index}]")
        arguments = function.get("arguments", "{}")
        try:  # the official API gives arguments as JSON text; show the model the value
            arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            pass  # shown as the text the client sent
        calls.append((function["name"], arguments))
    return calls


def messages_to_send(messages: Sequence[ChatMessage], *,
                     continuing: bool) -> tuple[ChatMessage, ...]:
    """The messages that go upstream: all of them, or when continuing only those after the last
    assistant message (the earlier ones are already in the web conversation).

    :raise BadRequest: continuing with nothing after the last assistant message.
    """
    if not continuing:
        return tuple(messages)
    last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    new = tuple(messages[last_assistant + 1:])
    if not new:
        raise _invalid("to continue a conversation, messages must end with at least one new "
                       "message after the last assistant message", "messages", "no_new_message")
    return new
