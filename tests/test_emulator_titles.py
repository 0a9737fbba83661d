"""The emulator's title generation (tests/emulator/titles.py), over real HTTP."""
from __future__ import annotations

import pytest

from tests.test_emulator import Chat, _ids


@pytest.mark.parametrize("api", ["/backend-api", "/api"])
def test_gen_title_titles_an_untitled_conversation_once(emulator, api):
    chat = Chat(emulator, api)
    conversation_id, answer_id = _ids(chat.send("explain the borrow checker to me").content)
    emulator.conversations.get(conversation_id).title = "New chat"
    url = f"{chat.root}/conversation/gen_title/{conversation_id}"
    made = chat.session.post(url, json={"message_id": answer_id, "model": "auto"},
                             headers=chat.auth())
    assert made.json() == {"title": "explain the borrow checker to me"}
    listed = chat.session.get(f"{chat.root}/conversations", headers=chat.auth()).json()
    assert listed["items"][0]["title"] == "explain the borrow checker to me"
    again = chat.session.post(url, json={"message_id": answer_id}, headers=chat.auth())
    assert again.json() == {"message": f"Conversation {conversation_id} already has title "
                                       "'explain the borrow checker to me'"}


def test_gen_title_refuses_strangers_and_unknown_messages(emulator):
    chat = Chat(emulator)
    conversation_id, answer_id = _ids(chat.send("hello").content)
    url = f"{chat.root}/conversation/gen_title/{conversation_id}"
    other = Chat(emulator, token=emulator.mint_access_token(email="other@example.com"))
    assert other.session.post(url, json={"message_id": answer_id},
                              headers=other.auth()).status_code == 404
    assert chat.session.post(url, json={"message_id": "nope"},
                             headers=chat.auth()).status_code == 404
    assert chat.session.post(url, json={}, headers=chat.auth()).status_code == 400
    assert chat.session.post(url, json={"message_id": answer_id}).status_code == 401
