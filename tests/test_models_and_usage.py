"""Model name mapping (models.py) and token counting (usage.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatgpt_web import models, usage
from chatgpt_web.errors import BadRequest, NotFound

# bpe-openai 0.1.x loads its vocabularies with a deprecated importlib call (usage.py hides it too).
QUIET_BPE = pytest.mark.filterwarnings("ignore:open_binary is deprecated:DeprecationWarning")


@pytest.mark.parametrize("name, slug", [
    ("gpt-4o", "gpt-4o"),
    ("gpt-4o-mini", "gpt-4o-mini"),
    ("o1-mini", "o1-mini"),
    ("auto", "auto"),
    ("text-davinci-002-render-sha", "text-davinci-002-render-sha"),
    ("gpt-3.5-turbo", "text-davinci-002-render-sha"),
    ("gpt-3.5-turbo-0125", "text-davinci-002-render-sha"),
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("chatgpt-4o-latest", "gpt-4o"),
    ("gpt-4-turbo", "gpt-4"),
])
def test_names_resolve_to_web_slugs(name, slug):
    model = models.resolve(name)
    assert (model.id, model.web_slug) == (name, slug)


@pytest.mark.parametrize("name", ["gpt-9", "gpt-4o-20240806", "GPT-4O", "",
                                  "gpt-4o-nano-2024-08-06"])
def test_unknown_names_are_model_not_found(name):
    with pytest.raises(NotFound) as caught:
        models.resolve(name)
    assert caught.value.code == "model_not_found" and caught.value.param == "model"


def test_operator_default_model_is_accepted_and_listed():
    slug = models.resolve("gpt-7-preview", extra_slugs=("gpt-7-preview",)).web_slug
    assert slug == "gpt-7-preview"
    assert "gpt-7-preview" in [m.id for m in models.list_models(extra_slugs=("gpt-7-preview",))]
    assert "gpt-7-preview" not in [m.id for m in models.list_models()]


def test_list_has_official_names_and_web_slugs_once_each():
    ids = [m.id for m in models.list_models(extra_slugs=("gpt-4o",))]
    assert len(ids) == len(set(ids))
    assert {"gpt-4o", "gpt-3.5-turbo", "text-davinci-002-render-sha", "o1"} <= set(ids)


@QUIET_BPE
def test_counts_use_a_real_tokenizer_when_installed():
    bpe_openai = pytest.importorskip("bpe_openai")
    assert usage.METHOD == "bpe-openai"
    o200k = bpe_openai.get_encoding("o200k_base")
    text = "Tokenizers split text like this: 日本語 too."
    assert usage.count_text(text, "gpt-4o") == len(o200k.encode(text))
    cl100k = bpe_openai.get_encoding("cl100k_base")
    assert usage.count_text(text, "gpt-4") == len(cl100k.encode(text))
    # A special-token look-alike in a prompt is ordinary text, not an error.
    assert usage.count_text("<|endoftext|>", "gpt-4o") > 1


def test_chat_prompt_count_adds_framing_per_message():
    one = usage.count_messages([("user", "hello")], "gpt-4o")
    two = usage.count_messages([("user", "hello"), ("user", "hello")], "gpt-4o")
    assert two - one == one - usage.REPLY_PRIMING


def test_estimate_counts_ascii_by_fours_and_other_characters_singly():
    assert usage.estimate_tokens("") == 0
    assert usage.estimate_tokens("abcd") == 1
    assert usage.estimate_tokens("abcde") == 2
    assert usage.estimate_tokens("日本語") == 3


# --- 2026 slugs, OpenAI names, reasoning effort ---------------------------------------------------

@pytest.mark.parametrize("name, slug", [
    ("auto", "auto"), ("gpt-5", "gpt-5"), ("gpt-5-thinking", "gpt-5-thinking"),
    ("gpt-6-thinking", "gpt-6-thinking"), ("gpt-5.6", "gpt-5-6"), ("gpt-5.1", "gpt-5-1"),
    ("gpt-5-2025-08-07", "gpt-5"), ("o3", "o3"), ("gpt-4.1", "gpt-4.1"),
    ("gpt-4.1-mini", "gpt-4o-mini"), ("gpt-5-chat-latest", "gpt-5-instant"),
])
def test_2026_slugs_and_openai_names(name, slug):
    assert models.resolve(name).web_slug == slug


@pytest.mark.parametrize("effort, thinking", [
    (None, None), ("none", None), ("minimal", "standard"), ("low", "standard"),
    ("medium", "extended"), ("high", "max"), ("xhigh", "max"),
])
def test_reasoning_effort_maps_to_thinking_effort(effort, thinking):
    assert models.thinking_effort(effort) == thinking


@pytest.mark.parametrize("effort", ["extreme", "", 3, ["high"]])
def test_an_unknown_reasoning_effort_is_a_400_naming_the_field(effort):
    with pytest.raises(BadRequest) as caught:
        models.thinking_effort(effort)
    assert caught.value.param == "reasoning_effort"


def test_the_catalog_fetches_once_per_ttl_and_keys_by_a_hash():
    now = [0.0]
    calls = []
    catalog = models.ModelCatalog(ttl=100, retry=10, clock=lambda: now[0])

    def fetch():
        calls.append(1)
        return models.slugs_of({"models": [{"slug": "gpt-7"}, {"slug": "auto"}],
                                "default_model_slug": "auto"})

    assert catalog.slugs("secret-token", fetch) == ("gpt-7", "auto")
    assert catalog.slugs("secret-token", fetch) == ("gpt-7", "auto") and len(calls) == 1
    assert "secret-token" not in str(catalog._known)
    now[0] = 101
    catalog.slugs("secret-token", fetch)
    assert len(calls) == 2


def test_a_failing_models_endpoint_keeps_what_was_known_and_waits_before_retrying():
    now = [0.0]
    catalog = models.ModelCatalog(ttl=100, retry=10, clock=lambda: now[0])
    catalog.slugs("t", lambda: ("gpt-7",))
    now[0] = 200
    calls = []

    def broken():
        calls.append(1)
        raise OSError("down")

    assert catalog.slugs("t", broken) == ("gpt-7",)
    assert catalog.slugs("t", broken) == ("gpt-7",) and len(calls) == 1


def test_the_catalog_remembers_a_bounded_number_of_accounts():
    catalog = models.ModelCatalog(max_accounts=2)
    for token in ("t1", "t2", "t3"):
        catalog.slugs(token, lambda: ("gpt-7",))
    assert len(catalog._known) == 2 and models.ModelCatalog.key("t1") not in catalog._known


# A fresh interpreter: this test process has long imported everything.
_LOADED_AFTER = """
import json, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
import wsgi  # the app, as a gunicorn worker imports it
from chatgpt_web import gunicorn_config, usage
before = "bpe_openai" in sys.modules
if sys.argv[1] == "start":
    gunicorn_config.on_starting(None)  # what the gunicorn master runs before it forks
print(json.dumps({"imported_with_the_app": before,
                  "loaded": usage._encoding.cache_info().currsize}))
"""


@pytest.mark.parametrize("setting, start, loaded", [
    ("preload", "start", 1),  # the master loads it once; forked workers inherit it
    ("lazy", "start", 0),
    ("preload", "no-start", 0),  # flask run, Vercel: only at the first count
])
def test_the_tokenizer_is_loaded_by_the_master_before_the_fork_or_not_at_all(
        tmp_path, setting, start, loaded):
    pytest.importorskip("bpe_openai")
    env = {**os.environ, "USAGE_TOKENIZER": setting, "CACHE_DIR": str(tmp_path),
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", _LOADED_AFTER, start], env=env,
                            cwd=Path(__file__).resolve().parents[1], capture_output=True,
                            text=True, timeout=60, check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "imported_with_the_app": False, "loaded": loaded}
