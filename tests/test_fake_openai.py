"""The fake OpenAI API itself, driven directly by the official SDK (no service in between)."""
import shutil
import subprocess

import openai
import pytest

from tests.fake_openai import keys
from tests.fake_openai.server import LISTEN_BACKLOG


def client(fake, key="sk-fake-good-1"):
    return openai.OpenAI(base_url=fake.base_url, api_key=key, max_retries=0, timeout=10)


def test_good_keys_answer_and_answers_repeat_byte_for_byte(fake_openai):
    sdk = client(fake_openai)
    first = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user",
                                                                    "content": "hi"}])
    again = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user",
                                                                    "content": "hi"}])
    assert first.choices[0].message.content == "Echo: hi" and first.id == again.id
    assert fake_openai.requests_to("/chat/completions")[0].key == "sk-fake-good-1"


@pytest.mark.parametrize("key, error, code", [
    ("sk-fake-invalid-123456789", openai.AuthenticationError, "invalid_api_key"),
    ("sk-fake-quota-1", openai.RateLimitError, "insufficient_quota"),
    ("sk-fake-ratelimit-1", openai.RateLimitError, "rate_limit_exceeded"),
    ("sk-fake-org-1", openai.InternalServerError, None),
])
def test_scripted_keys(fake_openai, key, error, code):
    with pytest.raises(error) as raised:
        client(fake_openai, key).models.list()
    assert raised.value.code == code
    if key.startswith("sk-fake-invalid"):
        assert keys.masked(key) in raised.value.message


def test_faults_are_served_as_many_times_as_scripted(fake_openai):
    sdk = client(fake_openai)
    fake_openai.fault("*", "cut_after:2", times=1)
    with pytest.raises(openai.APIConnectionError):
        list(sdk.chat.completions.create(model="gpt-4o", stream=True,
                                         messages=[{"role": "user", "content": "a b c"}]))
    chunks = list(sdk.chat.completions.create(model="gpt-4o", stream=True,
                                              messages=[{"role": "user", "content": "a b c"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: a b c"


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read the backlog")
def test_the_listen_queue_takes_a_burst_of_connections(fake_openai):
    # werkzeug's own 128 overflowed under bench/relay.py's 200 simultaneous connects (a refused
    # connect waits out the client's one-second SYN retry). For a listening socket, ss's Send-Q
    # column is the backlog it was given.
    port = fake_openai.url.rsplit(":", 1)[1]
    line = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                          check=True, timeout=10).stdout.split()
    assert line[0] == "LISTEN" and int(line[2]) == LISTEN_BACKLOG >= 1024
