"""The OpenAI-compatible face, driven by the official `openai` SDK over real HTTP.

The service runs on a loopback port (live_service) and talks to the local ChatGPT emulator through
curl_cffi, so every assertion covers the whole path: SDK -> /v1 -> core -> emulator -> back.
What reached the backend is read from the emulator's recorded request bodies.
"""
import asyncio
import json
import logging

import openai
import pytest
from curl_cffi import requests as curl_requests

from tests.sent_turns import conversation_posts, sent_messages

# The tests that use the emulator run against the site as it is now and against a mirror
# that only knows the 2024 paths (tests/conftest.py).
BOTH_DIALECTS = True

CONTINUES = 3  # upstream/conversation.py MAX_CONTINUES


def raw_post(live_service, path, *, token=None, body=None, stream=False):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    session = curl_requests.Session()
    response = session.post(live_service.url + path, json=body, headers=headers, timeout=30,
                            stream=stream)
    return session, response


def data_lines(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


# --- answers ----------------------------------------------------------------------------------

def test_sync_completion_has_the_official_shape(sdk, emulator):
    completion = sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hello there"}])
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o"
    assert isinstance(completion.created, int)
    choice = completion.choices[0]
    assert choice.index == 0 and choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "Echo: Hello there"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == (completion.usage.prompt_tokens
                                             + completion.usage.completion_tokens)
    extra = completion.model_extra
    assert extra["conversation_id"] and extra["message_id"]
    assert conversation_posts(emulator)[0]["model"] == "gpt-4o"


def test_async_client_gets_the_same_answer(live_service, token):
    async def ask():
        async with openai.AsyncOpenAI(base_url=live_service.url + "/v1", api_key=token,
                                      max_retries=0, timeout=30) as client:
            return await asyncio.gather(*[
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"async {i}"}])
                for i in range(3)])

    completions = asyncio.run(ask())
    assert [c.choices[0].message.content for c in completions] == [
        "Echo: async 0", "Echo: async 1", "Echo: async 2"]


def test_stream_gives_role_then_deltas_then_finish(sdk, emulator):
    emulator.switches.answer = "one two three four five six"
    emulator.switches.words_per_delta = 1
    emulator.switches.chunking = False  # one event per write, each after a pause: pieces
    emulator.switches.chunk_delay = 0.05  # that arrive apart are relayed apart
    chunks = list(sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert len(contents) > 1
    assert "".join(contents) == "one two three four five six"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop" and not last.choices[0].delta.content
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert last.model_extra["conversation_id"] and last.model_extra["message_id"]
    assert chunks[0].usage is None  # no usage unless asked for


def test_async_stream(live_service, token, emulator):
    emulator.switches.answer = "a b c d"
    emulator.switches.words_per_delta = 1

    async def collect():
        async with openai.AsyncOpenAI(base_url=live_service.url + "/v1", api_key=token,
                                      max_retries=0, timeout=30) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True)
            return [chunk async for chunk in stream]

    chunks = asyncio.run(collect())
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "a b c d"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_wire_format_is_sse_ending_with_done(live_service, token):
    session, response = raw_post(live_service, "/v1/chat/completions", token=token, body={
        "model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "Hi"}]})
    with session:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["X-Accel-Buffering"] == "no"
        lines = data_lines(response.text)
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Echo: Hi"


def test_include_usage_adds_a_last_chunk_with_usage_and_no_choices(sdk):
    chunks = list(sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Count me"}], stream=True,
        stream_options={"include_usage": True}))
    *body, final = chunks
    assert final.choices == []
    assert final.usage.completion_tokens > 0 and final.usage.prompt_tokens > 0
    assert all(c.usage is None for c in body)
    assert body[-1].choices[0].finish_reason == "stop"


@pytest.mark.filterwarnings("ignore:open_binary is deprecated:DeprecationWarning")
def test_usage_counts_the_request_messages_and_the_answer(sdk):
    bpe_openai = pytest.importorskip("bpe_openai")
    o200k = bpe_openai.get_encoding("o200k_base")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    completion = sdk.chat.completions.create(model="gpt-4o", messages=messages)
    # OpenAI's chat counting: 3 framing tokens per message, role + content, 3 to prime the reply.
    expected_prompt = 3 + sum(3 + len(o200k.encode(m["role"])) + len(o200k.encode(m["content"]))
                              for m in messages)
    assert completion.usage.prompt_tokens == expected_prompt
    assert completion.usage.completion_tokens == len(o200k.encode("Echo: Hello"))


def test_answer_cut_and_not_continuable_finishes_with_length(sdk, emulator):
    emulator.switches.answer = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    emulator.switches.max_tokens_cuts = CONTINUES + 1
    completion = sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "long"}])
    assert completion.choices[0].finish_reason == "length"
    actions = [body["action"] for body in conversation_posts(emulator)]
    assert actions == ["next"] + ["continue"] * CONTINUES


def test_answer_continued_automatically_finishes_with_stop(sdk, emulator):
    emulator.switches.answer = "alpha beta gamma delta epsilon zeta eta theta"
    emulator.switches.max_tokens_cuts = 2
    completion = sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "long"}], stream=True)
    chunks = list(completion)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == emulator.switches.answer
    assert chunks[-1].choices[0].finish_reason == "stop"


# --- messages and continuity -------------------------------------------------------------------

def test_history_reaches_the_backend_with_roles_intact(sdk, emulator):
    sdk.chat.completions.create(model="gpt-4o", messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": [{"type": "text", "text": "And 3+3?"},
                                     {"type": "text", "text": "Explain."}]},
    ])
    body = conversation_posts(emulator)[0]
    assert sent_messages(body) == [("system", "You are terse."), ("user", "What is 2+2?"),
                                   ("assistant", "4"), ("user", "And 3+3?\nExplain.")]
    assert "conversation_id" not in body


def test_continuation_sends_only_the_new_message(sdk, emulator):
    history = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "one"}]
    first = sdk.chat.completions.create(model="gpt-4o", messages=history)
    ids = {"conversation_id": first.model_extra["conversation_id"],
           "parent_message_id": first.model_extra["message_id"]}
    history += [{"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "two"}]
    second = sdk.chat.completions.create(model="gpt-4o", messages=history, extra_body=ids)
    assert second.choices[0].message.content == "Echo: two"
    assert second.model_extra["conversation_id"] == ids["conversation_id"]
    assert second.model_extra["message_id"] != ids["parent_message_id"]
    body = conversation_posts(emulator)[1]
    assert sent_messages(body) == [("user", "two")]
    assert body["conversation_id"] == ids["conversation_id"]
    assert body["parent_message_id"] == ids["parent_message_id"]


def test_stream_chunks_carry_the_ids_for_continuation(sdk, emulator):
    chunks = list(sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "one"}], stream=True))
    ids = {"conversation_id": chunks[-1].model_extra["conversation_id"],
           "parent_message_id": chunks[-1].model_extra["message_id"]}
    again = sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "two"}], extra_body=ids)
    assert again.model_extra["conversation_id"] == ids["conversation_id"]
    assert conversation_posts(emulator)[1]["parent_message_id"] == ids["parent_message_id"]


@pytest.mark.parametrize("extra, param, code", [
    ({"conversation_id": "6974e0a3-b684-8321-a73a-bf4e7b6dfafe"}, "parent_message_id",
     "invalid_field"),
    ({"conversation_id": "../etc", "parent_message_id": "x"}, "conversation_id", "invalid_field"),
])
def test_bad_continuation_fields_are_400(sdk, emulator, extra, param, code):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="gpt-4o", extra_body=extra,
                                    messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.body["param"] == param and caught.value.body["code"] == code
    assert conversation_posts(emulator) == []


def test_continuation_without_a_new_message_is_400(sdk, emulator):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "one"},
                                      {"role": "assistant", "content": "Echo: one"}],
            extra_body={"conversation_id": "c1", "parent_message_id": "m1"})
    assert caught.value.body["code"] == "no_new_message"
    assert conversation_posts(emulator) == []


@pytest.mark.parametrize("kwargs, param, code", [
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]},
     "messages[0].content[1].type", "unsupported_content"),
    ({"messages": [{"role": "user", "content": "Hi"}], "n": 9}, "n", "invalid_field"),
    ({"messages": [{"role": "user", "content": "Hi"}], "logprobs": True},
     "logprobs", "unsupported_parameter"),
    ({"messages": [{"role": "user", "content": "Hi"}], "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": 5}}}]},
     "tools[0].function.parameters", "invalid_field"),
    ({"messages": [{"role": "user", "content": "Hi"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
     "response_format.json_schema.schema", "invalid_field"),
    ({"messages": [{"role": "user", "content": "Hi"}], "stop": ["a", "b", "c", "d", "e"]},
     "stop", "invalid_field"),
    ({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 0},
     "max_tokens", "invalid_field"),
    ({"messages": []}, "messages", "invalid_field"),
])
def test_what_the_web_backend_cannot_do_is_a_clear_400(sdk, emulator, kwargs, param, code):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="gpt-4o", **kwargs)
    error = caught.value
    assert error.status_code == 400
    assert error.body["type"] == "invalid_request_error"
    assert error.body["param"] == param and error.body["code"] == code
    assert conversation_posts(emulator) == []


def test_sampling_options_are_accepted_and_ignored(sdk):
    completion = sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], temperature=0.2,
        top_p=0.9, seed=7, presence_penalty=0.1, user="u-1", n=1, logprobs=False)
    assert completion.choices[0].message.content == "Echo: Hi"


def test_messages_over_the_limit_are_413(live_service_factory, token, emulator):
    service = live_service_factory(MAX_PROMPT_CHARS="10")
    with openai.OpenAI(base_url=service.url + "/v1", api_key=token, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x" * 11}])
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "prompt_too_long"
    assert conversation_posts(emulator) == []


# --- models ------------------------------------------------------------------------------------

def test_models_list_has_official_names_and_web_slugs(sdk):
    listed = {model.id: model for model in sdk.models.list()}
    assert {"gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo", "o1-mini", "auto",
            "text-davinci-002-render-sha"} <= set(listed)
    assert all(m.object == "model" and isinstance(m.created, int) for m in listed.values())
    assert listed["gpt-3.5-turbo"].model_extra["web_slug"] == "text-davinci-002-render-sha"


def test_models_retrieve_and_unknown_model(sdk):
    model = sdk.models.retrieve("gpt-4o-mini")
    assert (model.id, model.object, model.owned_by) == ("gpt-4o-mini", "model", "chatgpt-web")
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve("gpt-9")
    assert caught.value.body["code"] == "model_not_found"
    assert caught.value.body["type"] == "not_found_error"


@pytest.mark.parametrize("name, slug", [("gpt-3.5-turbo", "text-davinci-002-render-sha"),
                                        ("gpt-4o-2024-08-06", "gpt-4o")])
def test_official_names_are_sent_as_web_slugs(sdk, emulator, name, slug):
    completion = sdk.chat.completions.create(model=name,
                                             messages=[{"role": "user", "content": "Hi"}])
    assert completion.model == name
    assert conversation_posts(emulator)[0]["model"] == slug


def test_unknown_model_in_a_chat_is_404_without_a_conversation_call(sdk, emulator):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.body == {
        "message": "The model `gpt-9` does not exist or you do not have access to it.",
        "type": "not_found_error", "param": "model", "code": "model_not_found"}
    # Only the account's model list was read (once; it may know a slug newer than our table).
    assert [r.path for r in emulator.requests] == ["/backend-api/models"]


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models"])
def test_missing_bearer_is_401_in_the_official_envelope(live_service, path):
    session = curl_requests.Session()
    with session:
        if path == "/v1/models":
            response = session.get(live_service.url + path, timeout=30)
        else:
            response = session.post(live_service.url + path, timeout=30, json={
                "model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 401
    assert response.json() == {"error": {
        "message": response.json()["error"]["message"], "type": "authentication_error",
        "param": None, "code": "missing_token"}}


def test_expired_token_is_401_before_any_upstream_call(live_service, emulator):
    expired = emulator.mint_access_token(exp_in=-60)
    with openai.OpenAI(base_url=live_service.url + "/v1", api_key=expired, max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk.chat.completions.create(model="gpt-4o",
                                        messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.body["code"] == "token_expired"
    assert caught.value.body["type"] == "authentication_error"
    assert emulator.requests == []


def test_token_refused_upstream_is_401(live_service, emulator):
    with openai.OpenAI(base_url=live_service.url + "/v1", api_key="not-a-real-token",
                       max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk.chat.completions.create(model="gpt-4o",
                                        messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.body["code"] == "invalid_token"
    assert "not-a-real-token" not in json.dumps(caught.value.body)


def test_upstream_rate_limit_is_429_with_retry_after(sdk, emulator):
    emulator.switches.fail_with = "rate_limit"
    emulator.switches.clears_in = 90
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.response.headers["retry-after"] == "90"
    assert caught.value.body["type"] == "rate_limit_error"
    assert caught.value.body["code"] == "upstream_rate_limited"


def test_cloudflare_challenge_is_403_with_a_hint_not_the_page(sdk, emulator):
    emulator.switches.fail_with = "cloudflare"
    with pytest.raises(openai.PermissionDeniedError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    body = caught.value.body
    assert body["type"] == "permission_error" and body["code"] == "cloudflare_challenge"
    assert "<html" not in caught.value.response.text.lower()


@pytest.mark.parametrize("failure, status, error_type, code", [
    ("token_expired", 401, "authentication_error", "token_expired"),
    ("server_error", 502, "api_error", "upstream_error"),
    ("too_long", 413, "invalid_request_error", "prompt_too_long"),
    ("not_json", 502, "api_error", "upstream_bad_answer"),
])
def test_upstream_failures_keep_the_core_status(live_service, token, emulator, failure, status,
                                                error_type, code):
    emulator.switches.fail_with = failure
    session, response = raw_post(live_service, "/v1/chat/completions", token=token, body={
        "model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "stream": True})
    with session:
        assert response.status_code == status
        error = response.json()["error"]
    assert (error["type"], error["code"]) == (error_type, code)
    assert token not in response.text


def test_stream_failing_after_start_ends_with_an_error_chunk(live_service, sdk, token, emulator):
    emulator.switches.answer = "a b c d e f g h i j k l m n o p"
    emulator.switches.words_per_delta = 1
    emulator.switches.drop_after_events = 11  # past the v1 preamble (7 events) in both formats
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in sdk.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received).startswith("a b")
    assert caught.value.body["code"] == "upstream_stream_broken"
    assert caught.value.body["type"] == "api_error"
    # On the wire: the error envelope is the last event, and no [DONE] follows it.
    session, response = raw_post(live_service, "/v1/chat/completions", token=token, body={
        "model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "stream": True})
    with session:
        lines = data_lines(response.text)
    assert json.loads(lines[-1])["error"]["code"] == "upstream_stream_broken"
    assert "[DONE]" not in lines


def test_unknown_v1_url_and_bad_json_use_the_envelope(live_service, token):
    session = curl_requests.Session()
    with session:
        unknown = session.post(live_service.url + "/v1/completions", json={}, timeout=30)
        wrong_method = session.get(live_service.url + "/v1/chat/completions", timeout=30)
        bad_json = session.post(live_service.url + "/v1/chat/completions", data="{oops",
                                headers={"Authorization": f"Bearer {token}",
                                         "Content-Type": "application/json"}, timeout=30)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "Invalid URL (POST /v1/completions)"
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "POST"
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"


def test_prompts_answers_and_tokens_are_not_logged(live_service, sdk, token, emulator, caplog):
    caplog.set_level(logging.DEBUG)
    prompt = [{"role": "user", "content": "secret-prompt-42"}]
    emulator.switches.answer = "secret answer 77 words here and more words to stream"
    sdk.chat.completions.create(model="gpt-4o", messages=prompt)
    list(sdk.chat.completions.create(model="gpt-4o", messages=prompt, stream=True,
                                     stream_options={"include_usage": True}))
    emulator.switches.drop_after_events = 8
    with pytest.raises(openai.APIError):
        list(sdk.chat.completions.create(model="gpt-4o", messages=prompt, stream=True))
    emulator.switches.drop_after_events = None
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="secret-model-9", messages=prompt)
    with openai.OpenAI(base_url=live_service.url + "/v1", api_key="secret-bad-token-5",
                       max_retries=0) as other:
        with pytest.raises(openai.AuthenticationError):
            other.chat.completions.create(model="gpt-4o", messages=prompt)
    assert "/v1/chat/completions" in caplog.text  # the access lines were captured
    for secret in ("secret-prompt-42", "secret answer", "secret-model-9", "secret-bad-token-5",
                   token):
        assert secret not in caplog.text
