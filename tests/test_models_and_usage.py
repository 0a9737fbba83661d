"""Model name mapping (models.py) and token counting (usage.py)."""
import pytest

from chatgpt_web import models, usage
from chatgpt_web.errors import NotFound

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
    assert models.resolve("gpt-5", extra_slugs=("gpt-5",)).web_slug == "gpt-5"
    assert "gpt-5" in [m.id for m in models.list_models(extra_slugs=("gpt-5",))]
    assert "gpt-5" not in [m.id for m in models.list_models()]


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
