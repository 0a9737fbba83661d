"""Model name mapping (models.py) and token counting (usage.py)."""
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatgpt_web import models, usage
from chatgpt_web.errors import BadRequest, NotFound

# bpe-openai 0.1.x loads its vocabularies with a deprecated importlib call.
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


# Text that exercises both encodings' split patterns: contractions, case changes, digits in
# threes, punctuation runs, newlines, tabs, non-Latin scripts, emoji, a special-token look-alike.
SAMPLES = [
    "Tokenizers split text like this: 日本語 too.",
    "I've said THEY'LL can't; won't! 3.14159265 1234567 x\r\n\n\t  trailing   ",
    "Здравствуй, мир! مرحبا بالعالم 🤖🎉👍🏽 naïve café «quotes» — dashes…",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\n\n<|endoftext|>",
    Path(__file__).read_text(),
]


@QUIET_BPE
@pytest.mark.parametrize("slug, encoding", [("gpt-4o", "o200k_base"), ("gpt-4", "cl100k_base")])
def test_counts_are_exact_token_counts(slug, encoding):
    # bpe-openai's own tokenizer is an independent implementation of the same encodings.
    bpe_openai = pytest.importorskip("bpe_openai")
    assert usage.METHOD == "exact"
    reference = bpe_openai.get_encoding(encoding)
    for text in SAMPLES:
        assert usage.count_text(text, slug) == len(reference.encode_ordinary(text)), text[:40]
    # A special-token look-alike in a prompt is ordinary text, not an error.
    assert usage.count_text("<|endoftext|>", slug) > 1


def test_a_vocabulary_file_that_is_not_the_published_one_is_refused(tmp_path, monkeypatch):
    pytest.importorskip("bpe_openai")
    original = usage.VOCABULARY_DIRECTORY / "o200k_base.tiktoken.gz"
    with gzip.open(original) as file:
        lines = file.read().splitlines()
    lines[1000], lines[1001] = lines[1001], lines[1000]  # two ranks swapped
    with gzip.open(tmp_path / "o200k_base.tiktoken.gz", "wb") as file:
        file.write(b"\n".join(lines) + b"\n")
    monkeypatch.setattr(usage, "VOCABULARY_DIRECTORY", tmp_path)
    with pytest.raises(RuntimeError, match="not the published one"):
        usage.read_vocabulary("o200k_base")


# A fresh interpreter: what counting costs a process (peak RSS, from getrusage), when 8 threads
# ask for their first count at once (a burst of usage requests reaching a new worker).
_FIRST_COUNTS = """
import json, resource, sys, threading
from chatgpt_web import usage
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = threading.Barrier(8)
counts = []
def count():
    start.wait()
    counts.append(usage.count_text("Hello there, how are you?", "gpt-4o"))
threads = [threading.Thread(target=count) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"counts": sorted(set(counts)), "grown_mb": grown // 1024,
                  "loaded": usage.loaded_encodings(), "bpe_openai": "bpe_openai" in sys.modules,
                  "tiktoken": "tiktoken" in sys.modules}))
"""


def test_a_burst_of_first_counts_loads_one_compact_tokenizer():
    pytest.importorskip("bpe_openai")
    result = subprocess.run([sys.executable, "-c", _FIRST_COUNTS],
                            cwd=Path(__file__).resolve().parents[1], capture_output=True,
                            text=True, timeout=120, check=True)
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["counts"] == [7] and outcome["loaded"] == ["o200k_base"]
    assert not outcome["bpe_openai"]  # its vocabulary file is read; its tokenizer is not loaded
    assert not outcome["tiktoken"]  # the reference the tests compare with, not used to count
    # The compact o200k counter holds ~4.3 MB, plus a few MB while its file is parsed (tiktoken's
    # held ~46 MB and took ~26 MB more while loading; eight loads at once would peak far above).
    assert outcome["grown_mb"] < 25, outcome


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
                  "loaded": len(usage.loaded_encodings())}))
"""


@pytest.mark.parametrize("setting, start, loaded", [
    ("preload", "start", 1),  # the master loads it once; forked workers inherit it
    ("lazy", "start", 0),
    ("preload", "no-start", 0),  # flask run, Vercel: only at the first count
    (None, "start", 0),  # the default: lazy
])
def test_the_tokenizer_is_loaded_by_the_master_before_the_fork_or_not_at_all(
        tmp_path, setting, start, loaded):
    pytest.importorskip("bpe_openai")
    env = {**os.environ, "CACHE_DIR": str(tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    env.pop("USAGE_TOKENIZER", None)
    if setting is not None:
        env["USAGE_TOKENIZER"] = setting
    result = subprocess.run([sys.executable, "-c", _LOADED_AFTER, start], env=env,
                            cwd=Path(__file__).resolve().parents[1], capture_output=True,
                            text=True, timeout=60, check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "imported_with_the_app": False, "loaded": loaded}


def test_usage_of_a_prompt_with_lone_surrogates_is_counted_not_a_500(live_service, token):
    # JSON may escape a lone surrogate ("\ud800"), which Python keeps in the str; it is not UTF-8.
    # It counts as tiktoken counts it: U+FFFD in its place (tiktoken's CoreBPE, called directly,
    # raised UnicodeEncodeError: a 500).
    from curl_cffi import requests as curl_requests
    body = '{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi \\ud800 there"}]}'
    response = curl_requests.post(live_service.url + "/v1/chat/completions", data=body,
                                  headers={"Authorization": f"Bearer {token}",
                                           "Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 200, response.text[:300]
    expected = usage.count_messages([("user", "Hi \ufffd there")], "gpt-4o")
    # json.loads: the answer echoes the surrogate, which orjson (curl_cffi's .json()) refuses.
    assert json.loads(response.text)["usage"]["prompt_tokens"] == expected
