"""What agent frameworks and chat UIs send beyond plain chat, through the official `openai` SDK
and LangChain against the emulator: function calling, structured output, max_tokens/stop, n.

The web backend has none of these; the service emulates them (instructions to the model, its
answer parsed and checked). The emulated model follows those instructions (tests/emulator/
replies.py), and `switches.answer_fn` makes it misbehave where a test needs that.
"""
from __future__ import annotations

import asyncio
import json

import openai
import pytest
from pydantic import BaseModel

from tests.sent_turns import conversation_posts, message_texts

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"enum": ["C", "F"]}},
                   "required": ["city"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Local time of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


# --- function calling -------------------------------------------------------------------------

def test_a_tool_call_comes_back_as_tool_calls_with_arguments_checked(sdk, emulator):
    completion = sdk.chat.completions.create(
        model="gpt-4o", tools=[WEATHER, TIME],
        messages=[{"role": "user", "content": "Use get_weather for city=Paris"}])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "C"}
    # The model was told about the functions in a system message before the user's.
    [body] = conversation_posts(emulator)
    assert body["messages"][0]["author"]["role"] == "system"
    assert '"get_weather"' in message_texts(body)[0]


def test_without_a_reason_to_call_the_answer_is_text(sdk):
    completion = sdk.chat.completions.create(
        model="gpt-4o", tools=[WEATHER], messages=[{"role": "user", "content": "Hello"}])
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content == "Echo: Hello"
    assert completion.choices[0].message.tool_calls is None


def test_tool_choice_required_named_and_none(sdk, emulator):
    required = sdk.chat.completions.create(
        model="gpt-4o", tools=[WEATHER, TIME], tool_choice="required",
        messages=[{"role": "user", "content": "Hello"}])
    assert required.choices[0].message.tool_calls[0].function.name == "get_weather"
    named = sdk.chat.completions.create(
        model="gpt-4o", tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        messages=[{"role": "user", "content": "Hello city=Oslo"}])
    assert named.choices[0].message.tool_calls[0].function.name == "get_time"
    assert json.loads(named.choices[0].message.tool_calls[0].function.arguments) == {
        "city": "Oslo"}
    none = sdk.chat.completions.create(
        model="gpt-4o", tools=[WEATHER], tool_choice="none",
        messages=[{"role": "user", "content": "get_weather please"}])
    assert none.choices[0].message.content == "Echo: get_weather please"
    assert '"get_weather"' not in "".join(message_texts(conversation_posts(emulator)[-1]))


def test_parallel_calls_unless_parallel_tool_calls_is_false(sdk):
    prompt = [{"role": "user", "content": "get_weather and get_time for city=Rome"}]
    both = sdk.chat.completions.create(model="gpt-4o", tools=[WEATHER, TIME], messages=prompt)
    assert [c.function.name for c in both.choices[0].message.tool_calls] == [
        "get_weather", "get_time"]
    one = sdk.chat.completions.create(model="gpt-4o", tools=[WEATHER, TIME], messages=prompt,
                                      parallel_tool_calls=False)
    assert [c.function.name for c in one.choices[0].message.tool_calls] == ["get_weather"]


def test_tool_results_go_back_as_context_and_the_model_answers(sdk, emulator):
    first = sdk.chat.completions.create(
        model="gpt-4o", tools=[WEATHER],
        messages=[{"role": "user", "content": "get_weather city=Paris"}])
    call = first.choices[0].message.tool_calls[0]
    second = sdk.chat.completions.create(model="gpt-4o", tools=[WEATHER], messages=[
        {"role": "user", "content": "get_weather city=Paris"},
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"}])
    assert second.choices[0].message.content == "Result: 18 C and sunny"
    assert second.choices[0].finish_reason == "stop"
    sent = message_texts(conversation_posts(emulator)[-1])
    assert any('"tool_calls"' in text for text in sent)  # the earlier call, as the model wrote it
    assert sent[-1] == f"Tool result ({call.id}):\n18 C and sunny"


def test_streamed_tool_calls_arrive_as_delta_tool_calls(sdk):
    chunks = list(sdk.chat.completions.create(
        model="gpt-4o", tools=[WEATHER], stream=True,
        messages=[{"role": "user", "content": "get_weather city=Lima"}]))
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
    assert deltas[0][0].id.startswith("call_") and deltas[0][0].function.name == "get_weather"
    arguments = "".join(d[0].function.arguments or "" for d in deltas)
    assert json.loads(arguments)["city"] == "Lima"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_wrong_call_gets_one_second_chance_then_is_text(sdk, emulator):
    answers = iter(['{"tool_calls": [{"name": "get_weather", "arguments": {"town": "X"}}]}',
                    '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Bern"}}]}'])
    emulator.switches.answer_fn = lambda body: next(answers)
    fixed = sdk.chat.completions.create(
        model="gpt-4o", tools=[WEATHER], messages=[{"role": "user", "content": "weather?"}])
    assert json.loads(fixed.choices[0].message.tool_calls[0].function.arguments) == {
        "city": "Bern"}
    first, retry = conversation_posts(emulator)
    assert "conversation_id" not in first and retry["conversation_id"]  # the same conversation
    assert "could not be used" in message_texts(retry)[0] and "city" in message_texts(retry)[0]

    emulator.switches.answer_fn = lambda body: '{"tool_calls": [{"name": "nope"}]}'
    wrong = sdk.chat.completions.create(
        model="gpt-4o", tools=[WEATHER], messages=[{"role": "user", "content": "weather?"}])
    assert wrong.choices[0].message.tool_calls is None
    assert wrong.choices[0].message.content == '{"tool_calls": [{"name": "nope"}]}'


# --- structured output --------------------------------------------------------------------------

class City(BaseModel):
    name: str
    population: int


def test_parse_with_a_pydantic_model_gives_the_object(sdk, emulator):
    completion = sdk.chat.completions.parse(
        model="gpt-4o", response_format=City,
        messages=[{"role": "user", "content": "Largest city: name=Tokyo population=37000000"}])
    assert completion.choices[0].message.parsed == City(name="Tokyo", population=37000000)
    assert "<json_schema>" in message_texts(conversation_posts(emulator)[0])[0]


def test_json_object_answers_the_json_alone(sdk):
    completion = sdk.chat.completions.create(
        model="gpt-4o", response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Hi"}])
    assert json.loads(completion.choices[0].message.content) == {"answer": "Echo: Hi"}


def test_invalid_json_is_retried_once_then_a_clear_error(sdk, emulator):
    answers = iter(["Sure! Here it is: {\"name\": \"Oslo\"}", "```json\n"
                    "{\"name\": \"Oslo\", \"population\": 700000}\n```"])
    emulator.switches.answer_fn = lambda body: next(answers)
    fixed = sdk.chat.completions.parse(model="gpt-4o", response_format=City,
                                       messages=[{"role": "user", "content": "Oslo?"}])
    assert fixed.choices[0].message.parsed.population == 700000
    assert len(conversation_posts(emulator)) == 2

    emulator.switches.answer_fn = lambda body: "I cannot do JSON today."
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.parse(model="gpt-4o", response_format=City,
                                   messages=[{"role": "user", "content": "Oslo?"}])
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "invalid_model_output"
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_a_strict_schema_is_enforced_and_a_loose_one_is_not(sdk, emulator):
    emulator.switches.answer_fn = lambda body: '{"name": "Oslo"}'
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "population": {"type": "integer"}},
              "required": ["name", "population"], "additionalProperties": False}
    loose = sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Oslo?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    assert json.loads(loose.choices[0].message.content) == {"name": "Oslo"}
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Oslo?"}],
            response_format={"type": "json_schema", "json_schema": {
                "name": "c", "schema": schema, "strict": True}})
    assert "population" in caught.value.body["message"]


# --- max_tokens, stop, n ----------------------------------------------------------------------

def test_max_tokens_cuts_the_answer_with_finish_reason_length(sdk, emulator):
    emulator.switches.answer = "one two three four five six seven eight nine ten"
    completion = sdk.chat.completions.create(
        model="gpt-4o", max_tokens=3, messages=[{"role": "user", "content": "Count"}])
    assert completion.choices[0].message.content == "one two three"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 3


def test_stop_cuts_before_the_stop_sequence_streamed_too(sdk, emulator):
    emulator.switches.answer = "alpha beta END gamma delta"
    emulator.switches.words_per_delta = 1
    plain = sdk.chat.completions.create(model="gpt-4o", stop=["END"],
                                        messages=[{"role": "user", "content": "Go"}])
    assert plain.choices[0].message.content == "alpha beta "
    assert plain.choices[0].finish_reason == "stop"
    chunks = list(sdk.chat.completions.create(model="gpt-4o", stop="ND g", stream=True,
                                              messages=[{"role": "user", "content": "Go"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "alpha beta E"


def test_a_streamed_answer_cut_at_max_tokens_stops_reading_the_upstream(sdk, emulator):
    emulator.switches.answer = " ".join(f"w{i}" for i in range(60))
    emulator.switches.max_tokens_cuts = 2  # the full answer would need two `continue` turns
    chunks = list(sdk.chat.completions.create(
        model="gpt-4o", max_completion_tokens=4, stream=True,
        messages=[{"role": "user", "content": "Go"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "w0 w1"  # "w0", " w", "1" ... four tokens
    assert chunks[-1].choices[0].finish_reason == "length"
    # No continuation was fetched.
    assert [b["action"] for b in conversation_posts(emulator)] == ["next"]


def test_n_runs_n_answers(sdk, emulator):
    completion = sdk.chat.completions.create(model="gpt-4o", n=2,
                                              messages=[{"role": "user", "content": "Hi"}])
    assert [c.index for c in completion.choices] == [0, 1]
    assert [c.message.content for c in completion.choices] == ["Echo: Hi", "Echo: Hi"]
    assert len(conversation_posts(emulator)) == 2


def test_async_client_calls_tools_too(live_service, token):
    async def ask():
        async with openai.AsyncOpenAI(base_url=live_service.url + "/v1", api_key=token,
                                      max_retries=0, timeout=30) as client:
            return await client.chat.completions.create(
                model="gpt-4o", tools=[WEATHER],
                messages=[{"role": "user", "content": "get_weather city=Quito"}])

    completion = asyncio.run(ask())
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"


# --- LangChain --------------------------------------------------------------------------------

@pytest.fixture
def chat_model(live_service, token):
    langchain_openai = pytest.importorskip("langchain_openai")
    return langchain_openai.ChatOpenAI(model="gpt-4o", base_url=live_service.url + "/v1",
                                       api_key=token, max_retries=0, timeout=30)


def test_langchain_bind_tools(chat_model):
    def get_weather(city: str) -> str:
        """Current weather of a city."""
        return "sunny"

    message = chat_model.bind_tools([get_weather]).invoke("get_weather city=Lyon")
    assert message.tool_calls[0]["name"] == "get_weather"
    assert message.tool_calls[0]["args"] == {"city": "Lyon"}


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_langchain_with_structured_output(chat_model, method):
    schema = City if method != "json_mode" else City.model_json_schema()
    structured = chat_model.with_structured_output(schema, method=method)
    prompt = "Give a city: name=Lima population=10000000"
    if method == "json_mode":
        prompt += " as JSON"
    result = structured.invoke(prompt)
    if method == "json_mode":
        assert result == {"answer": "Echo: " + prompt}
    else:
        assert result == City(name="Lima", population=10000000)


# --- test connection: /v1/models checks the bearer --------------------------------------------

def test_models_refuses_a_token_the_backend_refuses_and_remembers_the_verdict(
        live_service, emulator, token):
    emulator.auth.invalidate_access_tokens("user@example.com")
    with openai.OpenAI(base_url=live_service.url + "/v1", api_key=token, max_retries=0) as dead:
        with pytest.raises(openai.AuthenticationError) as caught:
            dead.models.list()
        assert caught.value.body["code"] == "invalid_token"
        checks = len(emulator.requests_to("/me"))
        with pytest.raises(openai.AuthenticationError):
            dead.models.list()
    assert checks == 1 and len(emulator.requests_to("/me")) == 1  # cached per token hash
    fresh = emulator.mint_access_token(email="alive@example.com")
    with openai.OpenAI(base_url=live_service.url + "/models".removesuffix("/models"),
                       api_key=fresh, max_retries=0) as alive:  # the alias without /v1
        assert any(model.id == "gpt-4o" for model in alive.models.list())


def test_an_expired_token_is_refused_without_asking_the_backend(live_service, emulator):
    expired = emulator.mint_access_token(exp_in=-60)
    with openai.OpenAI(base_url=live_service.url + "/v1", api_key=expired, max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk.models.list()
    assert caught.value.body["code"] == "token_expired"
    assert emulator.requests_to("/me") == []


# --- timeouts: the SDK must not send the prompt three times -----------------------------------

def test_a_deadline_answer_tells_the_sdk_not_to_retry(live_service_factory, token, emulator):
    service = live_service_factory(REQUEST_TIMEOUT="1")
    emulator.switches.chunking = False  # one event a chunk, each 0.3 s after the last
    emulator.switches.words_per_delta = 1
    emulator.switches.chunk_delay = 0.3
    emulator.switches.answer = "slow words " * 20
    with openai.OpenAI(base_url=service.url + "/v1", api_key=token, max_retries=2,
                       timeout=30) as sdk:  # the SDK's default: two retries
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.chat.completions.create(model="gpt-4o",
                                        messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 504
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(conversation_posts(emulator)) == 1  # one upstream turn, not three


# --- reasoning --------------------------------------------------------------------------------

def test_reasoning_content_only_when_asked(sdk, emulator):
    emulator.switches.reasoning = "Thinking about the greeting."
    plain = sdk.chat.completions.create(model="gpt-4o",
                                        messages=[{"role": "user", "content": "Hi"}])
    assert "reasoning_content" not in (plain.choices[0].message.model_extra or {})
    asked = sdk.chat.completions.create(model="gpt-4o", reasoning_effort="high",
                                        messages=[{"role": "user", "content": "Hi"}])
    assert "Thinking about the greeting." in asked.choices[0].message.model_extra[
        "reasoning_content"]
    assert asked.choices[0].message.content == "Echo: Hi"
    chunks = list(sdk.chat.completions.create(
        model="gpt-4o", stream=True, extra_body={"include_reasoning": True},
        messages=[{"role": "user", "content": "Hi"}]))
    streamed = [c.choices[0].delta.model_extra.get("reasoning_content") or "" for c in chunks]
    assert "Thinking about the greeting." in "".join(streamed)


def test_with_tools_offered_a_text_answer_still_streams_as_it_comes(sdk, emulator):
    emulator.switches.answer = "no call needed here at all"
    emulator.switches.words_per_delta = 1
    emulator.switches.chunking = False  # one event per write, each after a pause: pieces
    emulator.switches.chunk_delay = 0.15  # that arrive apart are relayed apart (0.05 s was
    # too close on a loaded CI machine: pieces that wait in the socket are read, and sent, together)
    chunks = list(sdk.chat.completions.create(
        model="gpt-4o", tools=[WEATHER], stream=True,
        messages=[{"role": "user", "content": "Hello"}]))
    contents = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(contents) > 3 and "".join(contents) == "no call needed here at all"
    assert chunks[-1].choices[0].finish_reason == "stop"
