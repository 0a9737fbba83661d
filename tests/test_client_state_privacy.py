"""What the client-facing features keep (chat continuity, stored responses, token checks) holds
no prompt, answer or token: only hashes and web ids, read back from the store's own files."""
from __future__ import annotations

import json

import diskcache
import openai

SECRET_PROMPT = "secret-prompt-8841"
SECRET_ANSWER = "secret-answer-5527"


def test_the_store_files_hold_no_prompt_answer_or_token(make_app, tmp_path, token, emulator):
    from tests.service_fixtures import LiveServer

    cache = tmp_path / "state"
    server = LiveServer(make_app(CACHE_DIR=str(cache)))
    emulator.switches.answer = SECRET_ANSWER
    try:
        with openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0) as sdk:
            history = [{"role": "user", "content": SECRET_PROMPT}]
            answer = sdk.chat.completions.create(model="gpt-4o", messages=history)
            history += [{"role": "assistant", "content": answer.choices[0].message.content},
                        {"role": "user", "content": SECRET_PROMPT + " again"}]
            sdk.chat.completions.create(model="gpt-4o", messages=history)
            response = sdk.responses.create(model="gpt-4o", input=SECRET_PROMPT)
            sdk.responses.create(model="gpt-4o", input="more", previous_response_id=response.id)
            sdk.models.list()
    finally:
        server.stop()
    assert len(emulator.requests_to("/conversation")) == 4
    # Every key and value, decoded (diskcache compresses them on disk).
    with diskcache.Cache(str(cache), disk=diskcache.JSONDisk) as files:
        stored = json.dumps([[key, files.get(key)] for key in files.iterkeys()])
    # The features did write here: continuity hashes, stored responses, the token verdict.
    for prefix in ("chat:v1:", "response:v1:", "bearer:v1:checked:"):
        assert prefix in stored
    for secret in (SECRET_PROMPT, SECRET_ANSWER, token):
        assert secret not in stored
