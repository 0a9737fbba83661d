"""The Responses API through the official SDK (`client.responses`): plain, streamed, continued,
with tools and structured output, and GET/DELETE of stored responses."""
from __future__ import annotations

import asyncio
import json

import openai
import pytest
from pydantic import BaseModel

from tests.sent_turns import conversation_posts, sent_messages

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


def test_a_plain_response_has_the_official_shape(sdk, emulator):
    response = sdk.responses.create(model="gpt-4o", input="Hello there",
                                    instructions="Be brief.")
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == "gpt-4o"
    assert response.output_text == "Echo: Hello there"
    [item] = response.output
    assert item.type == "message" and item.role == "assistant"
    assert item.content[0].type == "output_text"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert sent_messages(conversation_posts(emulator)[0]) == [("system", "Be brief."),
                                                              ("user", "Hello there")]


def test_input_items_and_previous_response_id_continue_the_web_conversation(sdk, emulator):
    first = sdk.responses.create(model="gpt-4o", input=[
        {"role": "user", "content": [{"type": "input_text", "text": "one"}]}])
    second = sdk.responses.create(model="gpt-4o", input="two", previous_response_id=first.id)
    assert second.output_text == "Echo: two"
    assert second.previous_response_id == first.id
    one, two = conversation_posts(emulator)
    assert two["conversation_id"] == first.model_extra["conversation_id"]
    assert two["parent_message_id"] == first.model_extra["message_id"]
    assert sent_messages(two) == [("user", "two")]


def test_streaming_sends_the_event_sequence_the_sdk_parses(sdk, emulator):
    emulator.switches.answer = "one two three four"
    emulator.switches.words_per_delta = 1
    emulator.switches.chunking = False  # one event per write, each after a pause: pieces
    emulator.switches.chunk_delay = 0.05  # that arrive apart are relayed apart
    events = list(sdk.responses.create(model="gpt-4o", input="Hi", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == "one two three four"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.output_text == "one two three four"
    emulator.switches.chunk_delay = 0
    with sdk.responses.stream(model="gpt-4o", input="Hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == "one two three four"


def test_function_calls_and_their_outputs(sdk, emulator):
    called = sdk.responses.create(model="gpt-4o", input="get_weather city=Oslo", tools=[WEATHER])
    [call] = called.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Oslo"}
    answered = sdk.responses.create(
        model="gpt-4o", tools=[WEATHER], previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "cold"}])
    assert answered.output_text == "Result: cold"
    events = list(sdk.responses.create(model="gpt-4o", input="get_weather city=Rome",
                                       tools=[WEATHER], stream=True))
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert json.loads(done[0].arguments) == {"city": "Rome"}


class City(BaseModel):
    name: str
    population: int


def test_structured_output_with_parse(sdk):
    parsed = sdk.responses.parse(model="gpt-4o", input="name=Lima population=9",
                                 text_format=City)
    assert parsed.output_parsed == City(name="Lima", population=9)


def test_max_output_tokens_makes_an_incomplete_response(sdk, emulator):
    emulator.switches.answer = "one two three four five six"
    response = sdk.responses.create(model="gpt-4o", input="Count", max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "one two"


def test_get_and_delete_a_stored_response_only_for_its_caller(live_service, sdk, emulator):
    response = sdk.responses.create(model="gpt-4o", input="remember me")
    fetched = sdk.responses.retrieve(response.id)
    assert fetched.id == response.id and fetched.status == "completed" and fetched.output == []
    other_token = emulator.mint_access_token(email="other@example.com")
    with openai.OpenAI(base_url=live_service.url + "/v1", api_key=other_token,
                       max_retries=0) as other:
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(response.id)
    sdk.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.responses.create(model="gpt-4o", input="x", previous_response_id=response.id)
    assert caught.value.body["param"] == "previous_response_id"


def test_a_stream_that_fails_midway_raises_in_the_sdk(sdk, emulator):
    emulator.switches.answer = "a b c d e f g h"
    emulator.switches.stream_error = "something broke"
    with pytest.raises(openai.APIError):
        list(sdk.responses.create(model="gpt-4o", input="Hi", stream=True))


def test_the_reasoning_summary_only_when_asked(sdk, emulator):
    emulator.switches.reasoning = "Weighing the options."
    plain = sdk.responses.create(model="gpt-4o", input="Hi")
    assert [item.type for item in plain.output] == ["message"]
    asked = sdk.responses.create(model="gpt-4o", input="Hi", reasoning={"summary": "auto"})
    assert [item.type for item in asked.output] == ["reasoning", "message"]
    assert "Weighing the options." in asked.output[0].summary[0].text
    assert asked.output_text == "Echo: Hi"


def test_the_async_client_streams_a_response(live_service, token):
    async def collect():
        async with openai.AsyncOpenAI(base_url=live_service.url + "/v1", api_key=token,
                                      max_retries=0, timeout=30) as client:
            stream = await client.responses.create(model="gpt-4o", input="async hi",
                                                   stream=True)
            return [event async for event in stream]

    events = asyncio.run(collect())
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Echo: async hi"


@pytest.mark.parametrize("body, param", [
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input[0].content[0].image_url.url"),
    ({"input": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
     "input[0].content[0].type"),
    ({"input": "Hi", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"input": "Hi", "text": "json please"}, None),
    ({"input": [{"type": "web_search_call"}]}, "input[0].type"),
    ({"input": None}, "input"),
])
def test_bad_input_is_a_clear_400(sdk, emulator, body, param):
    if param is None:  # a malformed `text` is ignored like other unknown shapes, never a 500
        assert sdk.responses.create(model="gpt-4o", **body).output_text == "Echo: Hi"
        return
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="gpt-4o", **body)
    assert caught.value.body["param"] == param
    assert conversation_posts(emulator) == []


def test_reasoning_effort_reaches_the_web_as_thinking_effort(sdk, emulator):
    response = sdk.responses.create(model="gpt-5-thinking", input="Hi",
                                    reasoning={"effort": "high"})
    assert response.reasoning.effort == "high"
    writes = [r.json for r in emulator.requests_to("/f/conversation") if r.method == "POST"]
    assert writes[-1]["thinking_effort"] == "max"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="gpt-5-thinking", input="Hi", reasoning={"effort": "extreme"})
    assert caught.value.body["param"] == "reasoning.effort"
