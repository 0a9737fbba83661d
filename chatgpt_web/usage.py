"""Token counts for the `usage` object of OpenAI-style answers.

The web backend reports no token counts, so the service counts them itself. A real tokenizer is
used when one can run offline: `bpe-openai` ships the `o200k_base` and `cl100k_base` vocabularies
inside its wheel (tiktoken, by contrast, downloads its encoding files on first use, which a server
without internet access cannot do). Counts are then exact token counts of the text, under the
encoding the requested model family uses.

If the package is missing (e.g. on a platform without a wheel), counting falls back to a
documented estimate, `estimate_tokens()`. `METHOD` tells which one is in force.

Memory: importing the package maps ~60 MB and a vocabulary adds ~75 MB (o200k_base), per process.
Nothing is imported until the first count, so a process that never counts carries none of it; the
gunicorn master calls `preload()` before it forks the workers (USAGE_TOKENIZER=preload, the
default), so all workers share one copy of those pages instead of building one each
(chatgpt_web/gunicorn_config.py; README "Server").

Chat prompts are counted the way OpenAI's cookbook counts them for gpt-3.5/gpt-4/gpt-4o: every
message costs its role and content tokens plus 3 framing tokens, and the reply is primed with 3
more.
"""
from __future__ import annotations

import functools
import importlib.util
import math
import warnings
from collections.abc import Iterable

# bpe-openai 0.1.x reads its data with importlib.resources.open_binary, which warns
# (DeprecationWarning) on import and on each vocabulary load; the warnings are its own, not ours.
_QUIET = {"action": "ignore", "message": "open_binary is deprecated",
          "category": DeprecationWarning}

# Optional at run time: without it usage numbers are estimates. Found, not imported (see above).
METHOD = "bpe-openai" if importlib.util.find_spec("bpe_openai") is not None else "estimate"
# The encoding nearly every model uses; preload() loads it, others load on first use.
PRELOADED_ENCODING = "o200k_base"

TOKENS_PER_MESSAGE = 3
REPLY_PRIMING = 3

# Web slugs of models that used cl100k_base; every newer model uses o200k_base.
_CL100K_SLUGS = frozenset({"gpt-4", "text-davinci-002-render-sha"})


def encoding_name(web_slug: str) -> str:
    """The tokenizer encoding of a web model slug."""
    return "cl100k_base" if web_slug in _CL100K_SLUGS else "o200k_base"


@functools.cache
def _encoding(name: str):
    # Loading a vocabulary takes ~0.7 s, so each is loaded once per process, on first use (or
    # once in the gunicorn master, by preload()).
    with warnings.catch_warnings():
        warnings.filterwarnings(**_QUIET)
        import bpe_openai
        return bpe_openai.get_encoding(name)


def preload() -> None:
    """Load the tokenizer now: in a process about to fork workers, they then share its memory."""
    if METHOD == "bpe-openai":
        _encoding(PRELOADED_ENCODING)


def estimate_tokens(text: str) -> int:
    """The fallback estimate: one token per 4 ASCII characters, one per other character.

    English BPE text averages about 4 characters a token; CJK and other non-ASCII text is close to
    one token per character, so counting those one by one keeps the estimate from being far low.
    """
    non_ascii = sum(1 for char in text if ord(char) > 127)
    return math.ceil((len(text) - non_ascii) / 4) + non_ascii


def count_text(text: str, web_slug: str) -> int:
    """Tokens in `text` under the encoding of `web_slug`."""
    if not text:
        return 0
    if METHOD != "bpe-openai":
        return estimate_tokens(text)
    # encode_ordinary: text that looks like a special token ("<|endoftext|>") is plain text here.
    return len(_encoding(encoding_name(web_slug)).encode_ordinary(text))


def count_messages(messages: Iterable[tuple[str, str]], web_slug: str) -> int:
    """Prompt tokens of a chat given as (role, content) pairs."""
    total = REPLY_PRIMING
    for role, content in messages:
        total += TOKENS_PER_MESSAGE + count_text(role, web_slug) + count_text(content, web_slug)
    return total


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    """The official `usage` object."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
