"""Title generation, beside backend.py's conversation endpoints:

    POST /conversation/gen_title/{id}  {"message_id": "<assistant message id>", "model"?}
      -> {"title": "..."}, and the conversation is renamed;
      -> {"message": "Conversation <id> already has title '<title>'"} when it has a title already
         (the exact sentence the real backend answered).

The title is made as for the title_generation event of a new conversation's stream (turns.py):
the first words of the first user message.
"""
from __future__ import annotations

from flask import Blueprint, abort, current_app, request

from . import backend
from .conversations import message_text
from .failures import json_response
from .turns import _title as title_from

blueprint = Blueprint("titles", __name__)

UNTITLED = "New chat"


@blueprint.post("/conversation/gen_title/<conversation_id>")
def generate_title(conversation_id: str):
    owner = backend._account()
    emulator = current_app.extensions["emulator"]
    conversation = emulator.conversations.get(conversation_id, owner)
    if conversation is None:
        abort(json_response(404, {"detail": "Conversation not found"}))
    body = request.get_json(force=True, silent=True)
    message_id = body.get("message_id") if isinstance(body, dict) else None
    if not isinstance(message_id, str) or not message_id:
        abort(json_response(400, {"detail": "message_id is required"}))
    with emulator.conversations.lock:
        node = conversation.mapping.get(message_id)
        if node is None or node.message is None:
            abort(json_response(404, {"detail": "Message not found"}))
        if conversation.title != UNTITLED:
            return json_response(200, {"message": f"Conversation {conversation_id} already has "
                                                  f"title '{conversation.title}'"})
        first_user = next((m for m in conversation.received
                           if m.get("author", {}).get("role") == "user"), None)
        conversation.title = title_from(message_text(first_user) if first_user else "")
        return json_response(200, {"title": conversation.title})
