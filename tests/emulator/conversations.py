"""The conversation store: one message tree per conversation, as `GET /conversation/{id}` shows it.

Tree shape (as GET /conversation/{id} answers it): a root node without a message, whose id is the
`parent_message_id` the client sent when it started the conversation; under it the hidden system
message; then the messages of each turn, chained; the assistant answer is the child of the last of
them.
`current_node` is the newest answer. Conversations belong to the account (JWT user id) that made
them; other accounts see "not found".
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime


def conversation_id(now: float | None = None) -> str:
    """An id shaped like the site's: the first 8 hex digits are the creation time in unix
    seconds (e.g. 69544e47-... was created on 2025-12-30), the rest random."""
    seconds = int(time.time() if now is None else now)
    rest = uuid.uuid4().hex
    return f"{seconds:08x}-{rest[:4]}-{rest[4:8]}-{rest[8:12]}-{rest[12:24]}"


def make_message(role: str, parts: list, *, message_id: str | None = None,
                 content_type: str = "text", status: str = "finished_successfully",
                 end_turn: bool | None = None, weight: float = 1.0,
                 metadata: dict | None = None, create_time: float | None = None) -> dict:
    """A message object with the real key order (see tests/fixtures/delta-v1-capture.txt)."""
    return {
        "id": message_id or str(uuid.uuid4()),
        "author": {"role": role, "name": None, "metadata": {}},
        "create_time": create_time,
        "update_time": None,
        "content": {"content_type": content_type, "parts": list(parts)},
        "status": status,
        "end_turn": end_turn,
        "weight": weight,
        "metadata": dict(metadata or {}),
        "recipient": "all",
        "channel": None,
    }


def message_text(message: dict) -> str:
    """The text of a message: its string parts joined (image pointers and the like ignored)."""
    parts = (message.get("content") or {}).get("parts") or []
    return "".join(part for part in parts if isinstance(part, str))


@dataclass
class Node:
    """One node of the tree. `pending` holds answer pieces a `continue` request will still send."""

    id: str
    message: dict | None
    parent: str | None
    children: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        node = {"id": self.id}
        if self.message is not None:
            node["message"] = self.message
        node.update(parent=self.parent, children=list(self.children))
        return node


@dataclass
class Conversation:
    """A conversation tree, plus `received`: every message the client sent to it, in order."""

    id: str
    owner: str
    model: str
    title: str = "New chat"
    create_time: float = field(default_factory=time.time)
    update_time: float = field(default_factory=time.time)
    mapping: dict[str, Node] = field(default_factory=dict)
    current_node: str | None = None
    is_visible: bool = True
    history_disabled: bool = False
    # The client's messages in arrival order, as sent (across all turns).
    received: list[dict] = field(default_factory=list)

    def add(self, message: dict | None, parent: str | None, node_id: str | None = None) -> Node:
        """Append a node under `parent` (None for the root)."""
        node = Node(node_id or message["id"], message, parent)
        self.mapping[node.id] = node
        if parent is not None:
            self.mapping[parent].children.append(node.id)
        self.update_time = time.time()
        return node

    def roles(self) -> list[str]:
        """Roles of the received messages, in order, e.g. ["system", "user", "assistant"]."""
        return [m.get("author", {}).get("role") for m in self.received]

    def to_json(self) -> dict:
        """The `GET /conversation/{id}` body."""
        return {
            "title": self.title,
            "create_time": self.create_time,
            "update_time": self.update_time,
            "mapping": {node_id: node.to_json() for node_id, node in self.mapping.items()},
            "moderation_results": [],
            "current_node": self.current_node,
            "conversation_id": self.id,
            "is_archived": False,
            "safe_urls": [],
            "default_model_slug": self.model,
        }

    def summary_json(self) -> dict:
        """One item of the `GET /conversations` list (times are ISO strings there)."""
        return {
            "id": self.id,
            "title": self.title,
            "create_time": _iso(self.create_time),
            "update_time": _iso(self.update_time),
            "mapping": None,
            "current_node": None,
            "conversation_template_id": None,
            "gizmo_id": None,
            "is_archived": False,
            "workspace_id": None,
        }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


class ConversationStore:
    """All conversations, by id. `lock` serialises tree changes made by concurrent requests."""

    def __init__(self) -> None:
        self._conversations: dict[str, Conversation] = {}
        self.lock = threading.RLock()

    def create(self, owner: str, model: str, *, history_disabled: bool = False) -> Conversation:
        conversation = Conversation(conversation_id(), owner, model,
                                    history_disabled=history_disabled)
        with self.lock:
            self._conversations[conversation.id] = conversation
        return conversation

    def get(self, conversation_id: str, owner: str | None = None) -> Conversation | None:
        """The conversation, or None if unknown, deleted, or (when `owner` is given) not theirs."""
        conversation = self._conversations.get(conversation_id)
        if conversation is None or not conversation.is_visible:
            return None
        if owner is not None and conversation.owner != owner:
            return None
        return conversation

    def listed(self, owner: str) -> list[Conversation]:
        """The owner's history, newest first; temporary chats (history disabled) are not listed."""
        with self.lock:
            items = [c for c in self._conversations.values()
                     if c.owner == owner and c.is_visible and not c.history_disabled]
        return sorted(items, key=lambda c: c.update_time, reverse=True)

    def __len__(self) -> int:
        return len(self._conversations)

    def clear(self) -> None:
        with self.lock:
            self._conversations.clear()
