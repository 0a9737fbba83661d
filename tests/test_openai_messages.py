"""OpenAI `messages` -> web messages, and the continuity rule (pure functions, no server)."""
import json

import pytest

from chatgpt_web.api.openai_messages import messages_to_send, to_web_messages
from chatgpt_web.errors import BadRequest
from chatgpt_web.upstream.conversation import ChatMessage


def test_roles_and_order_are_kept_one_web_message_each():
    mapped = to_web_messages([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "Bye"},
    ])
    assert mapped == (ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"),
                      ChatMessage("assistant", "Hello!"),
                      ChatMessage("system", "Answer in French."), ChatMessage("user", "Bye"))


def test_text_parts_are_joined_with_newlines():
    mapped = to_web_messages([{"role": "user", "content": [
        {"type": "text", "text": "first"}, {"type": "text", "text": "second"}]}])
    assert mapped == (ChatMessage("user", "first\nsecond"),)


def test_assistant_refusal_part_is_text_and_null_content_is_dropped():
    mapped = to_web_messages([
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "b"},
    ])
    assert [m.content for m in mapped] == ["a", "I can't.", "b"]


@pytest.mark.parametrize("messages, param, code", [
    (None, "messages", "missing_field"),
    ([], "messages", "invalid_field"),
    ("hello", "messages", "invalid_field"),
    (["hello"], "messages[0]", "invalid_field"),
    ([{"role": "tool", "tool_call_id": "1"}], "messages[0].content", "missing_field"),
    ([{"role": "wizard", "content": "x"}], "messages[0].role", "unsupported_role"),
    ([{"role": "user"}], "messages[0].content", "missing_field"),
    ([{"role": "user", "content": 5}], "messages[0].content", "invalid_field"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
     "messages[0].content[0].image_url.url", "invalid_image_url"),
    ([{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
     "messages[0].content[0].type", "unsupported_content"),
    ([{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}],
     "messages[0].content[0].file.file_id", "unsupported_content"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": [
        {"type": "text", "text": "b"}, {"type": "input_audio", "input_audio": {}}]}],
     "messages[1].content[1].type", "unsupported_content"),
    ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0]", "invalid_field"),
    ([{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}],
     "messages[0].content[0].type", "unsupported_content"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}],
     "messages[0].tool_calls[0]", "invalid_field"),
    ([{"role": "assistant", "content": None}], "messages", "invalid_field"),
])
def test_bad_messages_are_400_naming_the_param(messages, param, code):
    with pytest.raises(BadRequest) as caught:
        to_web_messages(messages)
    assert caught.value.param == param
    assert caught.value.code == code


HISTORY = (ChatMessage("system", "s"), ChatMessage("user", "u1"), ChatMessage("assistant", "a1"),
           ChatMessage("user", "u2"), ChatMessage("user", "u3"))


def test_new_conversation_sends_everything():
    assert messages_to_send(HISTORY, continuing=False) == HISTORY


def test_continuation_sends_only_what_follows_the_last_assistant_message():
    assert messages_to_send(HISTORY, continuing=True) == HISTORY[3:]


def test_continuation_with_only_new_messages_sends_them_all():
    new = (ChatMessage("user", "next"),)
    assert messages_to_send(new, continuing=True) == new


def test_continuation_without_a_new_message_is_400():
    with pytest.raises(BadRequest) as caught:
        messages_to_send(HISTORY[:3], continuing=True)
    assert caught.value.code == "no_new_message"


@pytest.mark.parametrize("role", [["user"], {"name": "user"}, 7, None])
def test_a_role_that_is_not_a_string_is_400(role):
    with pytest.raises(BadRequest) as caught:
        to_web_messages([{"role": role, "content": "hi"}])
    assert caught.value.status == 400 and caught.value.param == "messages[0].role"


def test_more_than_max_messages_is_refused_before_any_is_read():
    messages = [{"role": "user", "content": ""}] * 20_000
    with pytest.raises(BadRequest) as caught:
        to_web_messages(messages, max_messages=500)
    assert caught.value.code == "too_many_messages" and caught.value.param == "messages"
    assert len(to_web_messages(messages[:500], max_messages=500)) == 500


def test_the_v1_face_applies_max_messages(make_app):
    client = make_app(MAX_MESSAGES="3").test_client()
    answer = client.post("/v1/chat/completions", headers={"Authorization": "Bearer token"},
                         json={"model": "gpt-4o",
                               "messages": [{"role": "user", "content": "hi"}] * 4})
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "too_many_messages"


def test_a_role_given_as_a_list_is_400_on_the_v1_face(client):
    answer = client.post("/v1/chat/completions", headers={"Authorization": "Bearer token"},
                         json={"model": "gpt-4o", "messages": [{"role": ["user"], "content": "x"}]})
    assert answer.status_code == 400


def test_tool_calls_and_tool_results_travel_as_text_the_model_reads():
    mapped = to_web_messages([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    ])
    assert [m.role for m in mapped] == ["user", "assistant", "user"]
    assert json.loads(mapped[1].content) == {
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
    assert mapped[2].content == "Tool result (call_1):\n18 C, sunny"
