"""What the service sent the emulator's conversation endpoints, read back for assertions."""
from __future__ import annotations


def conversation_posts(emulator) -> list[dict]:
    """The JSON bodies of the POSTs to a conversation endpoint (2024 and 2026 paths), in order."""
    return [r.json for r in emulator.requests_to("/conversation") if r.method == "POST"]


def message_texts(body: dict) -> list[str]:
    """The text of each message of one conversation body."""
    return ["\n".join(m["content"]["parts"]) for m in body["messages"]]


def sent_messages(body: dict) -> list[tuple[str, str]]:
    """(role, text) of each message of one conversation body."""
    return [(m["author"]["role"], "\n".join(m["content"]["parts"])) for m in body["messages"]]
