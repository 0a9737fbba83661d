"""One web conversation per chat: which ChatGPT conversation a resent OpenAI history continues.

Standard clients resend the whole history every turn and know nothing of web conversations, so
without help every turn would open a new ChatGPT conversation. After each answer the service
remembers, under a hash of (caller, model, the history including the answer as returned), where
that answer is in the web conversation. A later request whose history, up to its last assistant
message, hashes to a remembered one continues that conversation and sends only the messages after
it. An edited or branched history hashes differently and starts a new conversation.

Only hashes are kept: the store key is a SHA-256 of the caller's secret scope (a hash of their
key or token), the model slug and every message's role, text and files (a hash of each file's
data, or its URL); the value holds the two web ids
and nothing else. A caller can therefore only ever find their own conversations, and the store
never holds a word of a chat. Entries live REMEMBER_SECONDS.

Places are written by one writer thread per process, as a group commit (group_commit.py): the
places queued while it writes a batch go together in its next store update, and remember()
returns once its own place is in the store, so the next turn finds it as before. Written by each
answer's own thread, a burst of answers ending together ran one SQLite transaction each, on up to
8 connections per worker at once (store.SharedConnections), each connection keeping its own page
cache and allocator heaps: at 500 streamed answers, 6 MB more summed RSS than with one writer.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from ..access import bearer
from ..group_commit import GroupCommit, Queued
from ..store import Store
from ..upstream.conversation import ChatMessage

KEY_PREFIX = "chat:v1:"
REMEMBER_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class Place:
    """Where a history ends in a web conversation."""

    conversation_id: str
    message_id: str


def caller_scope() -> str | None:
    """A secret-derived id of the caller (their key or access token, hashed), or None for a
    caller without a credential (the pool serving anyone), whose chats are not remembered."""
    credential = bearer()
    if not credential:
        return None
    return hashlib.sha256(b"chat-scope\0" + credential.encode()).hexdigest()


def history_key(scope: str, model: str, messages: Sequence[ChatMessage]) -> str:
    """The store key of a history: a hash of the caller's scope, the model and the messages."""
    digest = hashlib.sha256()
    digest.update(json.dumps([scope, model]).encode())
    for message in messages:
        entry = [message.role, message.content]
        if message.attachments:  # what names each file (attachments.FileRef.identity)
            entry.append([attachment.identity for attachment in message.attachments])
        digest.update(b"\0" + json.dumps(entry).encode())
    return KEY_PREFIX + digest.hexdigest()


def last_assistant_index(messages: Sequence[ChatMessage]) -> int:
    return max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)


class ChatMemory:
    """Remembered places of one caller's histories, in the store."""

    def __init__(self, store: Store, scope: str | None):
        self.store = store
        self.scope = scope

    def find(self, model: str, messages: Sequence[ChatMessage]) -> tuple[Place | None, int]:
        """(the place the history up to its last assistant message ends at, or None; the index
        of the first message after it)."""
        end = last_assistant_index(messages) + 1
        if self.scope is None or end == 0 or end == len(messages):
            return None, 0
        value = self.store.get(history_key(self.scope, model, messages[:end]))
        if not isinstance(value, dict):
            return None, 0
        return Place(value["conversation_id"], value["message_id"]), end

    def remember(self, model: str, history: Sequence[ChatMessage], place: Place) -> None:
        """Remember that `history` (ending with the answer as returned) ends at `place`."""
        if self.scope is None or not place.conversation_id or not place.message_id:
            return
        value = {"conversation_id": place.conversation_id, "message_id": place.message_id}
        _PLACES.submit_later((self.store, history_key(self.scope, model, history), value)).wait()


def _write_places(queued: list[Queued]) -> None:
    """Write the places queued together: one store update per store (a process has one; tests
    have several), a failure failing that store's entries only."""
    by_store: dict[int, tuple[Store, dict[str, dict], list[Queued]]] = {}
    for entry in queued:
        store, key, value = entry.item
        _, places, entries = by_store.setdefault(id(store), (store, {}, []))
        places[key] = value
        entries.append(entry)
    for store, places, entries in by_store.values():
        keys = list(places)
        try:
            store.update(keys, lambda _values, keys=keys, places=places: [
                (places[key], REMEMBER_SECONDS) for key in keys])
        except Exception as exc:
            for entry in entries:
                entry.error = exc


# The places this process writes, by its "chat-memory" thread (the module doc). Queued items are
# (store, key, value).
_PLACES = GroupCommit(_write_places, "chat-memory")
