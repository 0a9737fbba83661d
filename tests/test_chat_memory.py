"""One web conversation per chat: a resent history continues the conversation it came from.

Clients such as the SDK, LangChain and chat UIs resend the whole history every turn. The service
recognises a history it answered (by hash, per caller and model) and continues that ChatGPT
conversation, sending only the new messages. The store holds hashes and ids, never text.
"""
from __future__ import annotations

import threading
import time

import openai
import pytest

from chatgpt_web.api import chat_memory
from chatgpt_web.api.chat_memory import ChatMemory, Place, history_key
from chatgpt_web.errors import ServiceUnavailable
from chatgpt_web.store import MemoryStore
from chatgpt_web.upstream.conversation import ChatMessage
from tests.sent_turns import conversation_posts, message_texts


def chat(sdk, history, **kwargs):
    answer = sdk.chat.completions.create(model="gpt-4o", messages=history, **kwargs)
    return answer, [*history, {"role": "assistant", "content": answer.choices[0].message.content}]


def test_a_resent_history_continues_the_same_web_conversation(sdk, emulator):
    first, history = chat(sdk, [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "one"}])
    second, history = chat(sdk, [*history, {"role": "user", "content": "two"}])
    third, _ = chat(sdk, [*history, {"role": "user", "content": "three"}])
    bodies = conversation_posts(emulator)
    assert "conversation_id" not in bodies[0]
    assert bodies[1]["conversation_id"] == bodies[2]["conversation_id"] == \
        first.model_extra["conversation_id"]
    assert bodies[1]["parent_message_id"] == first.model_extra["message_id"]
    assert bodies[2]["parent_message_id"] == second.model_extra["message_id"]
    assert message_texts(bodies[1]) == ["two"] and message_texts(bodies[2]) == ["three"]
    assert third.model_extra["conversation_id"] == first.model_extra["conversation_id"]


def test_an_edited_history_starts_a_new_conversation(sdk, emulator):
    _, history = chat(sdk, [{"role": "user", "content": "one"}])
    history[-1]["content"] += " (edited)"
    chat(sdk, [*history, {"role": "user", "content": "two"}])
    assert "conversation_id" not in conversation_posts(emulator)[1]
    assert message_texts(conversation_posts(emulator)[1]) == ["one", "Echo: one (edited)", "two"]


def test_another_caller_or_model_never_continues_it(live_service, sdk, emulator):
    _, history = chat(sdk, [{"role": "user", "content": "one"}])
    history.append({"role": "user", "content": "two"})
    other_token = emulator.mint_access_token(email="other@example.com")
    with openai.OpenAI(base_url=live_service.url + "/v1", api_key=other_token,
                       max_retries=0) as other:
        other.chat.completions.create(model="gpt-4o", messages=history)
    sdk.chat.completions.create(model="gpt-4o-mini", messages=history)
    assert all("conversation_id" not in body for body in conversation_posts(emulator)[1:])


def test_tool_call_turns_continue_too(sdk, emulator):
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    history = [{"role": "user", "content": "get_weather city=Oslo"}]
    call = sdk.chat.completions.create(model="gpt-4o", messages=history, tools=[tool])
    message = call.choices[0].message
    history += [message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "cold"}]
    done = sdk.chat.completions.create(model="gpt-4o", messages=history, tools=[tool])
    assert done.choices[0].message.content == "Result: cold"
    second = conversation_posts(emulator)[-1]
    assert second["conversation_id"] == call.model_extra["conversation_id"]
    assert message_texts(second)[-1].startswith("Tool result")


def test_a_streamed_answer_is_remembered_as_well(sdk, emulator):
    chunks = list(sdk.chat.completions.create(
        model="gpt-4o", stream=True, messages=[{"role": "user", "content": "one"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    chat(sdk, [{"role": "user", "content": "one"}, {"role": "assistant", "content": text},
               {"role": "user", "content": "two"}])
    assert conversation_posts(emulator)[1]["conversation_id"] == \
        chunks[-1].model_extra["conversation_id"]


def test_the_store_holds_only_hashes_and_ids():
    store = MemoryStore()
    memory = ChatMemory(store, "scope-hash")
    history = [ChatMessage("user", "secret words"), ChatMessage("assistant", "secret answer")]
    memory.remember("gpt-4o", history, Place("c1", "m1"))
    [(key, value)] = [(k, v) for k, v in store._data.items()]
    assert key.endswith(history_key("scope-hash", "gpt-4o", history))
    assert "secret" not in repr(key) + repr(value)
    found, start = memory.find("gpt-4o", [*history, ChatMessage("user", "next")])
    assert found == Place("c1", "m1") and start == 2
    assert ChatMemory(store, "other-scope").find(
        "gpt-4o", [*history, ChatMessage("user", "next")]) == (None, 0)


class GatedStore(MemoryStore):
    """A MemoryStore whose first update waits at a gate, and which notes each update's size."""

    def __init__(self):
        super().__init__()
        self.updates: list[int] = []
        self.first_entered, self.gate = threading.Event(), threading.Event()

    def update(self, keys, change):
        self.updates.append(len(keys))
        if len(self.updates) == 1:
            self.first_entered.set()
            assert self.gate.wait(30)
        super().update(keys, change)


def history_of(number: int) -> list[ChatMessage]:
    return [ChatMessage("user", f"question {number}"), ChatMessage("assistant", "answer")]


def test_places_remembered_while_one_is_written_are_written_together():
    """A burst of answers ending at once costs a few store writes, not one each (each a SQLite
    transaction on a DiskStore), and each remember() returns once its own place is stored."""
    store = GatedStore()
    memory = ChatMemory(store, "scope-hash")
    errors = []

    def remember(number: int) -> None:
        try:
            memory.remember("gpt-4o", history_of(number), Place(f"c{number}", f"m{number}"))
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=remember, args=(0,))]
    threads[0].start()
    assert store.first_entered.wait(30)
    threads += [threading.Thread(target=remember, args=(n,)) for n in range(1, 10)]
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + 30
    while len(chat_memory._PLACES._queue) < 9 and time.monotonic() < deadline:
        time.sleep(0.01)  # the nine wait behind the first write, queued
    store.gate.set()
    for thread in threads:
        thread.join(30)
    assert not errors and not any(thread.is_alive() for thread in threads)
    assert store.updates == [1, 9]
    for number in range(10):
        found = memory.find("gpt-4o", [*history_of(number), ChatMessage("user", "next")])
        assert found == (Place(f"c{number}", f"m{number}"), 2)


class FailingStore(MemoryStore):
    def update(self, keys, change):
        raise ServiceUnavailable("the store is down", "store_unavailable")


def test_a_place_that_cannot_be_stored_fails_its_remember():
    with pytest.raises(ServiceUnavailable):
        ChatMemory(FailingStore(), "scope-hash").remember("gpt-4o", history_of(1),
                                                          Place("c1", "m1"))
