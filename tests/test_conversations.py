"""Conversation management on both faces: list, read, rename, delete, title, export; with the
caller's own token, and with client keys on the account pool (each key sees only its own)."""
from __future__ import annotations

import json

import pytest

from chatgpt_web.api.conversations import to_markdown
from chatgpt_web.upstream.transcripts import summary, transcript

KEY, OTHER_KEY = "sk-cw-conversations-one", "sk-cw-conversations-two"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def chat(client, token, prompt, **continuing):
    answer = client.post("/v1/chat/completions", headers=bearer(token), json={
        "model": "gpt-4o", "messages": [{"role": "user", "content": prompt}], **continuing})
    assert answer.status_code == 200, answer.json
    return answer.json


# --- reading the upstream's objects (no server) -------------------------------------------------

def _message(message_id, role, text, **extra):
    return {"id": message_id, "author": {"role": role}, "create_time": 1700000000.5,
            "content": {"content_type": "text", "parts": [text]}, "metadata": {}, **extra}


TREE = {
    "title": "Sorting", "create_time": 1700000000.25, "update_time": 1700000100.0,
    "default_model_slug": "gpt-4o", "current_node": "a2",
    "mapping": {
        "root": {"id": "root", "parent": None, "children": ["sys"]},
        "sys": {"id": "sys", "message": _message("sys", "system", "", weight=0.0),
                "parent": "root", "children": ["u1"]},
        "u1": {"id": "u1", "message": _message("u1", "user", "How do I sort?"),
               "parent": "sys", "children": ["a1", "a2"]},
        "a1": {"id": "a1", "message": _message("a1", "assistant", "old branch"),
               "parent": "u1", "children": []},
        "a2": {"id": "a2", "message": _message("a2", "assistant", "Use sorted().",
                                                metadata={"model_slug": "gpt-4o-mini"}),
               "parent": "u1", "children": []},
    },
}


def test_a_transcript_is_the_branch_the_user_sees():
    read = transcript("c1", TREE)
    assert [(m["id"], m["role"], m["content"]) for m in read["messages"]] == [
        ("u1", "user", "How do I sort?"), ("a2", "assistant", "Use sorted().")]
    assert read["messages"][1]["model"] == "gpt-4o-mini"
    assert read["title"] == "Sorting" and read["current_message_id"] == "a2"
    assert read["create_time"] == 1700000000.25 and read["model"] == "gpt-4o"


def test_a_looping_or_broken_tree_ends():
    looping = {"current_node": "x", "mapping": {
        "x": {"id": "x", "message": _message("x", "user", "hi"), "parent": "y"},
        "y": {"id": "y", "message": _message("y", "assistant", "yo"), "parent": "x"}}}
    assert [m["id"] for m in transcript("c", looping)["messages"]] == ["y", "x"]
    assert transcript("c", {"mapping": "nonsense"})["messages"] == []


def test_list_items_get_epoch_times():
    item = summary({"id": "c1", "title": "T", "create_time": "2023-12-22T03:46:06.392671+00:00",
                    "update_time": None})
    assert item == {"id": "c1", "title": "T", "create_time": 1703216766.392671,
                    "update_time": None}


def test_markdown_export_has_the_title_and_each_message():
    text = to_markdown(transcript("c1", TREE))
    assert text.startswith("# Sorting\n")
    assert "## User\n\nHow do I sort?\n" in text
    assert "## Assistant (gpt-4o-mini)\n\nUse sorted().\n" in text
    assert "old branch" not in text


# --- the caller's own account -------------------------------------------------------------------

def test_list_read_rename_title_and_delete_with_an_access_token(client, token, emulator):
    first = chat(client, token, "how do I sort a list in python")
    chat(client, token, "what is a monad")

    listed = client.get("/v1/conversations", headers=bearer(token)).json
    assert listed["total"] == 2 and len(listed["data"]) == 2
    assert listed["data"][1]["id"] == first["conversation_id"]  # newest first

    conversation_id = first["conversation_id"]
    read = client.get(f"/v1/conversations/{conversation_id}", headers=bearer(token)).json
    assert [(m["role"], m["content"]) for m in read["messages"]] == [
        ("user", "how do I sort a list in python"),
        ("assistant", "Echo: how do I sort a list in python")]

    # The stream titled the conversation; one without a title (as older ones) gets one made.
    assert read["title"] == "how do I sort a list"
    emulator.conversations.get(conversation_id).title = "New chat"
    titled = client.post(f"/v1/conversations/{conversation_id}/title", headers=bearer(token))
    assert titled.json["title"] == "how do I sort a list"
    assert emulator.conversations.get(conversation_id).title == "how do I sort a list"
    # One that has a title keeps it (the upstream answers a sentence, not a title).
    emulator.conversations.get(conversation_id).title = "Kept"
    again = client.post(f"/v1/conversations/{conversation_id}/title", headers=bearer(token))
    assert again.json["title"] == "Kept"
    assert [r.json for r in emulator.requests_to(f"/gen_title/{conversation_id}")][-1][
        "message_id"] == read["messages"][-1]["id"]

    renamed = client.patch(f"/v1/conversations/{conversation_id}", headers=bearer(token),
                           json={"title": "Sorting in Python"})
    assert renamed.status_code == 200
    assert emulator.conversations.get(conversation_id).title == "Sorting in Python"

    deleted = client.delete(f"/v1/conversations/{conversation_id}", headers=bearer(token))
    assert deleted.json == {"id": conversation_id, "object": "conversation.deleted",
                            "deleted": True}
    assert client.get("/v1/conversations", headers=bearer(token)).json["total"] == 1
    gone = client.get(f"/v1/conversations/{conversation_id}", headers=bearer(token))
    assert gone.status_code == 404
    assert gone.json["error"]["code"] == "conversation_not_found"  # the OpenAI envelope


def test_export_as_markdown_and_json(client, token):
    conversation_id = chat(client, token, "export me")["conversation_id"]
    markdown = client.get(f"/conversations/{conversation_id}/export?format=markdown",
                          headers=bearer(token))
    assert markdown.mimetype == "text/markdown"
    assert (f'filename="conversation-{conversation_id}.md"'
            in markdown.headers["Content-Disposition"])
    assert "## User\n\nexport me\n" in markdown.get_data(as_text=True)
    exported = client.get(f"/conversations/{conversation_id}/export", headers=bearer(token))
    assert "attachment" in exported.headers["Content-Disposition"]
    assert json.loads(exported.data)["messages"][1]["content"] == "Echo: export me"
    refused = client.get(f"/conversations/{conversation_id}/export?format=pdf",
                         headers=bearer(token))
    assert refused.status_code == 400 and refused.json["code"] == "invalid_field"


def test_the_form_face_takes_the_token_as_a_field(client, token, emulator):
    sent = client.post("/send_message", data={"prompt": "hello", "access_token": token}).json
    conversation_id = sent["conversation_id"]
    renamed = client.post(f"/conversations/{conversation_id}",
                          data={"access_token": token, "title": "From a form"})
    assert renamed.status_code == 200 and renamed.json["title"] == "From a form"
    assert emulator.conversations.get(conversation_id).title == "From a form"
    listed = client.get("/conversations", headers=bearer(token)).json
    assert [item["title"] for item in listed["data"]] == ["From a form"]


def test_another_account_cannot_see_or_touch_the_conversation(client, token, emulator):
    conversation_id = chat(client, token, "mine")["conversation_id"]
    stranger = emulator.mint_access_token(email="stranger@example.com")
    assert client.get("/v1/conversations", headers=bearer(stranger)).json["data"] == []
    for method in ("get", "delete"):
        answer = getattr(client, method)(f"/v1/conversations/{conversation_id}",
                                         headers=bearer(stranger))
        assert answer.status_code == 404
    assert emulator.conversations.get(conversation_id) is not None


@pytest.mark.parametrize("path, param", [
    ("/v1/conversations?limit=0", "limit"), ("/v1/conversations?limit=101", "limit"),
    ("/v1/conversations?offset=x", "offset"), ("/v1/conversations/not%20an%20id", None),
])
def test_bad_input_is_a_clear_400(client, token, path, param):
    answer = client.get(path, headers=bearer(token))
    assert answer.status_code == 400
    if param:
        assert answer.json["error"]["param"] == param


def test_without_a_token_it_is_401_and_a_blank_title_is_400(client, token):
    assert client.get("/v1/conversations").json["error"]["code"] == "missing_token"
    assert client.get("/conversations").json["code"] == "missing_token"
    conversation_id = chat(client, token, "hi")["conversation_id"]
    blank = client.patch(f"/v1/conversations/{conversation_id}", headers=bearer(token),
                         json={"title": "   "})
    assert blank.status_code == 400


# --- client keys on the pool --------------------------------------------------------------------

@pytest.fixture
def keyed_pool(make_app, tmp_path, emulator):
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps([
        {"name": "a", "access_token": emulator.mint_access_token(email="a@example.com")},
        {"name": "b", "access_token": emulator.mint_access_token(email="b@example.com")},
    ]))
    return make_app(ACCOUNTS_FILE=str(path), API_KEYS=f"{KEY},{OTHER_KEY}").test_client()


def test_each_key_manages_only_the_conversations_it_started(keyed_pool, emulator):
    client = keyed_pool
    mine = []
    while len({emulator.conversations.get(c).owner for c in mine}) < 2:  # on both accounts
        assert len(mine) < 20
        mine.append(chat(client, KEY, f"mine {len(mine)}")["conversation_id"])
    theirs = chat(client, OTHER_KEY, "theirs")["conversation_id"]

    listed = client.get("/v1/conversations", headers=bearer(KEY)).json
    assert sorted(item["id"] for item in listed["data"]) == sorted(mine)
    assert listed["total"] == len(mine)
    assert [i["id"] for i in client.get("/v1/conversations", headers=bearer(OTHER_KEY)).json[
        "data"]] == [theirs]

    # Each operation reaches the account that holds the conversation.
    for conversation_id in mine:
        read = client.get(f"/v1/conversations/{conversation_id}", headers=bearer(KEY))
        assert read.status_code == 200 and read.json["messages"][0]["content"].startswith("mine")
    renamed = client.patch(f"/v1/conversations/{mine[0]}", headers=bearer(KEY),
                           json={"title": "Renamed"})
    assert renamed.status_code == 200
    assert emulator.conversations.get(mine[0]).title == "Renamed"

    # Another key's conversation is not found, whatever the operation.
    for method in ("get", "delete", "patch"):
        refused = getattr(client, method)(f"/v1/conversations/{theirs}", headers=bearer(KEY),
                                          json={"title": "x"})
        assert refused.status_code == 404, method
    assert emulator.conversations.get(theirs).title != "x"

    assert client.delete(f"/v1/conversations/{mine[1]}", headers=bearer(KEY)).status_code == 200
    assert emulator.conversations.get(mine[1]) is None
    assert client.get("/v1/conversations", headers=bearer(KEY)).json["total"] == len(mine) - 1


def test_pooled_conversations_without_keys_cannot_be_managed(make_app, tmp_path, emulator):
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps([{"name": "a", "access_token": emulator.mint_access_token()}]))
    client = make_app(ACCOUNTS_FILE=str(path)).test_client()
    refused = client.get("/v1/conversations")
    assert refused.status_code == 403
    assert refused.json["error"]["code"] == "conversations_need_a_key"


def test_keys_without_accounts_say_so(make_app):
    client = make_app(API_KEYS=KEY).test_client()
    refused = client.get("/v1/conversations", headers=bearer(KEY))
    assert refused.status_code == 503
    assert refused.json["error"]["code"] == "no_account_available"
