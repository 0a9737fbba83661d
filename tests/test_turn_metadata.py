"""What the upstream said about a turn reaches the caller: title, the model that answered, and a
downgraded pooled account is flagged for the operator."""
from __future__ import annotations

import json

import openai
import pytest

ADMIN = "admin-secret-for-metadata"


@pytest.fixture(autouse=True)
def delta_stream(emulator):
    emulator.switches.force_format = "v1"  # the 2026 stream, with its typed frames


def test_send_message_answers_the_title_and_the_model_that_answered(client, token, emulator):
    emulator.switches.served_model = "gpt-5-6-t-mini"
    answer = client.post("/send_message", data={"access_token": token, "prompt": "Name a color",
                                                "model": "gpt-4o"})
    assert answer.status_code == 200, answer.json
    assert answer.json["title"] == "Name a color"
    assert answer.json["model"] == "gpt-5-6-t-mini"


def test_the_streamed_answer_object_carries_them_too(client, token):
    answer = client.post("/send_message", data={"access_token": token, "prompt": "Hi there",
                                                "stream": "true"})
    objects = [json.loads(line[6:]) for line in answer.get_data(as_text=True).splitlines()
               if line.startswith("data: {")]
    assert objects[-1]["title"] == "Hi there" and objects[-1]["model"]


def test_v1_reports_the_real_slug(live_service, token, emulator):
    emulator.switches.served_model = "gpt-5-6-t-mini"
    with openai.OpenAI(base_url=live_service.url + "/v1", api_key=token, max_retries=0,
                       timeout=30) as sdk:
        completion = sdk.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hello"}])
    assert completion.model == "gpt-4o"  # the name asked for, as the official API answers
    assert completion.model_extra["model_slug"] == "gpt-5-6-t-mini"


def test_a_pooled_account_answering_with_another_model_is_flagged(make_app, tmp_path, emulator):
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps([{"name": "solo", "access_token": emulator.mint_access_token()}]))
    client = make_app(ACCOUNTS_FILE=str(path), ADMIN_KEY=ADMIN).test_client()
    emulator.switches.degraded = True
    emulator.switches.served_model = "gpt-5-6-t-mini"
    assert client.post("/send_message", data={"prompt": "Hi", "model": "gpt-4o"}).status_code \
        == 200
    [row] = client.get("/admin/accounts",
                       headers={"Authorization": f"Bearer {ADMIN}"}).json["accounts"]
    assert row["downgraded"]["requested"] == "gpt-4o"
    assert row["downgraded"]["served"] == "gpt-5-6-t-mini"
    assert row["downgraded"]["banner"] == "account_sharing_degrade"


def test_v1_reads_reasoning_effort_and_refuses_unknown_values(client, token, emulator):
    body = {"model": "gpt-5-thinking", "messages": [{"role": "user", "content": "Hi"}]}
    headers = {"Authorization": f"Bearer {token}"}
    assert client.post("/v1/chat/completions", json={**body, "reasoning_effort": "high"},
                       headers=headers).status_code == 200
    [write] = [r.json for r in emulator.requests_to("/f/conversation") if r.method == "POST"]
    assert write["thinking_effort"] == "max"
    refused = client.post("/v1/chat/completions", json={**body, "reasoning_effort": "extreme"},
                          headers=headers)
    assert refused.status_code == 400
    assert refused.json["error"]["param"] == "reasoning_effort"


def test_a_slug_only_the_account_lists_is_accepted_and_its_list_read_once(client, token,
                                                                            emulator):
    emulator.switches.extra_models = ("gpt-7-preview",)
    headers = {"Authorization": f"Bearer {token}"}
    body = {"messages": [{"role": "user", "content": "Hi"}]}
    assert client.post("/v1/chat/completions", json={**body, "model": "gpt-4o"},
                       headers=headers).status_code == 200
    assert emulator.requests_to("/models") == []  # a known name never reads the list
    answered = client.post("/v1/chat/completions", json={**body, "model": "gpt-7-preview"},
                           headers=headers)
    assert answered.status_code == 200, answered.json
    assert [r.json["model"] for r in emulator.requests_to("/conversation")
            if r.method == "POST"][-1] == "gpt-7-preview"
    listed = client.get("/v1/models", headers=headers).json["data"]
    assert "gpt-7-preview" in [model["id"] for model in listed]
    assert len(emulator.requests_to("/models")) == 1  # cached for the account
    assert client.post("/v1/chat/completions", json={**body, "model": "gpt-8"},
                       headers=headers).status_code == 404


def test_a_continued_answer_keeps_the_title_and_model_of_its_first_leg(client, token, emulator):
    emulator.switches.answer = "one two three four five six"
    emulator.switches.max_tokens_cuts = 2
    emulator.switches.served_model = "gpt-5-6"
    answer = client.post("/send_message", data={"access_token": token, "prompt": "Count up"})
    assert answer.json["text"] == "one two three four five six"
    assert answer.json["title"] == "Count up" and answer.json["model"] == "gpt-5-6"
