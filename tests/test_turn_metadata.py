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
