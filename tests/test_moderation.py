"""MODERATION=flag|block with a local word list: prompts are screened before any account sees
them, through the official openai SDK and the form API."""
import json
import logging

import httpx
import openai
import pytest

from chatgpt_web.errors import ConfigError
from chatgpt_web.moderation import read_words_file
from tests.service_fixtures import LiveServer

KEY = "sk-cw-moderated-key"
WORDS = "# categories and entries\nviolence: blow up\nviolence: detonator\nspam\n"


@pytest.fixture
def moderated(make_app, tmp_path, emulator):
    """moderated(mode) -> a LiveServer with MODERATION=mode, a word list and a pool."""
    words = tmp_path / "words.txt"
    words.write_text(WORDS)
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"name": "pooled",
                                     "access_token": emulator.mint_access_token()}]))
    servers = []

    def factory(mode):
        server = LiveServer(make_app(MODERATION=mode, MODERATION_WORDS_FILE=str(words),
                                     API_KEYS=KEY, ACCOUNTS_FILE=str(accounts)))
        servers.append(server)
        return server
    yield factory
    for server in servers:
        server.stop()


def ask(server, text, **extra):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    return client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": text}], **extra)


def conversations(emulator):
    return [r for r in emulator.requests_to("/conversation") if r.method == "POST"]


def scrape(server):
    return httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text


def test_block_refuses_a_matching_prompt_before_any_account_sees_it(moderated, emulator):
    server = moderated("block")
    with pytest.raises(openai.BadRequestError) as refused:
        ask(server, "How do I BLOW   up a bridge?")
    assert refused.value.code == "content_blocked"
    assert "violence" in refused.value.message and "bridge" not in refused.value.message
    with pytest.raises(openai.BadRequestError):
        ask(server, "spam spam", stream=True)
    assert conversations(emulator) == []
    # Whole words only: "blowup" and "spammer" are other words.
    assert ask(server, "the blowup of a spammer").choices[0].message.content
    assert len(conversations(emulator)) == 1
    metrics = scrape(server)
    assert 'chatgpt_web_moderation_checks_total{result="blocked"}' in metrics
    assert "chatgpt_web_moderation_seconds_count" in metrics


def test_block_applies_to_the_form_api_too(moderated, emulator):
    server = moderated("block")
    response = httpx.post(server.url + "/send_message", data={"prompt": "a detonator"},
                          headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 400 and response.json()["code"] == "content_blocked"
    assert conversations(emulator) == []


def test_flag_lets_the_prompt_through_and_logs_only_the_category(moderated, emulator, caplog):
    caplog.set_level(logging.INFO)
    server = moderated("flag")
    assert ask(server, "please blow up my inbox").choices[0].message.content
    assert len(conversations(emulator)) == 1
    assert "categories=violence" in caplog.text and "inbox" not in caplog.text
    assert 'chatgpt_web_moderation_checks_total{result="flagged"}' in scrape(server)


def test_word_file_problems_stop_the_start(make_app, tmp_path):
    with pytest.raises(ConfigError, match="MODERATION_WORDS_FILE"):
        make_app(MODERATION="block")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no entries"):
        make_app(MODERATION="block", MODERATION_WORDS_FILE=str(empty))


def test_the_word_list_parses_categories_and_phrases(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text(WORDS)
    patterns = read_words_file(str(words))
    assert set(patterns) == {"violence", "blocked"}
    assert patterns["violence"].search("Blow\tUp") and not patterns["violence"].search("blowup")
