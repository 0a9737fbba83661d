"""The web backend's conversation objects, read into the service's own shapes (pure functions).

A conversation (`GET {api}/conversation/{id}`) is a tree: `mapping` holds nodes `{id, message?,
parent, children}`; the root has no message, a hidden system message usually comes next, and
`current_node` is the newest message of the branch the user sees. The transcript is that branch,
read from `current_node` up to the root and reversed, keeping the messages a person sees.
List items (`GET {api}/conversations`) carry ISO-8601 times where the tree carries epoch floats;
both become epoch seconds here.
"""
from __future__ import annotations

from datetime import datetime

# A malformed tree must not loop forever: no real branch is this deep.
MAX_DEPTH = 10_000


def epoch(value) -> float | None:
    """Epoch seconds from an epoch number or an ISO-8601 string; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


def summary(item: dict) -> dict:
    """One conversation of a list: {id, title, create_time, update_time}."""
    return {"id": _text(item.get("id")), "title": _text(item.get("title")),
            "create_time": epoch(item.get("create_time")),
            "update_time": epoch(item.get("update_time"))}


def message_text(message: dict) -> str:
    """The text of a message: its string parts joined (images and other parts left out)."""
    content = message.get("content") if isinstance(message.get("content"), dict) else {}
    parts = content.get("parts")
    if isinstance(parts, list):
        return "".join(part for part in parts if isinstance(part, str))
    return _text(content.get("text")) or ""


def _visible(message: dict, text: str) -> bool:
    author = message.get("author") if isinstance(message.get("author"), dict) else {}
    metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
    if metadata.get("is_visually_hidden_from_conversation"):
        return False
    if author.get("role") == "system" and (not text or message.get("weight") == 0):
        return False
    return bool(text) or author.get("role") in ("user", "assistant")


def branch(detail: dict) -> list[dict]:
    """The messages from the root to `current_node`, oldest first (raw message objects)."""
    mapping = detail.get("mapping") if isinstance(detail.get("mapping"), dict) else {}
    node_id = detail.get("current_node")
    messages: list[dict] = []
    seen: set[str] = set()
    while isinstance(node_id, str) and node_id in mapping and node_id not in seen:
        if len(seen) >= MAX_DEPTH:
            break
        seen.add(node_id)
        node = mapping[node_id] if isinstance(mapping[node_id], dict) else {}
        if isinstance(node.get("message"), dict):
            messages.append(node["message"])
        node_id = node.get("parent")
    return messages[::-1]


def transcript(conversation_id: str, detail: dict) -> dict:
    """The conversation as the service shows it: {id, object, title, create_time, update_time,
    model, current_message_id, messages: [{id, role, content, create_time, model}]}."""
    messages = []
    for message in branch(detail):
        text = message_text(message)
        if not _visible(message, text):
            continue
        author = message.get("author") if isinstance(message.get("author"), dict) else {}
        metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
        entry = {"id": _text(message.get("id")), "role": _text(author.get("role")),
                 "content": text, "create_time": epoch(message.get("create_time"))}
        if entry["role"] == "assistant" and _text(metadata.get("model_slug")):
            entry["model"] = metadata["model_slug"]
        messages.append(entry)
    return {"id": conversation_id, "object": "conversation", "title": _text(detail.get("title")),
            "create_time": epoch(detail.get("create_time")),
            "update_time": epoch(detail.get("update_time")),
            "model": _text(detail.get("default_model_slug")),
            "current_message_id": _text(detail.get("current_node")),
            "messages": messages}


def last_answer(detail: dict) -> dict | None:
    """The newest assistant message of the visible branch (what a title is generated from)."""
    for message in reversed(branch(detail)):
        author = message.get("author") if isinstance(message.get("author"), dict) else {}
        if author.get("role") == "assistant":
            return message
    return None
