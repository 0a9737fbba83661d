"""Token counts for the `usage` object of OpenAI-style answers.

The web backend reports no token counts, so the service counts them itself, exactly, with
tiktoken's BPE (the reference implementation of OpenAI's encodings) under the encoding the
requested model family uses: `o200k_base` or `cl100k_base`. tiktoken downloads its vocabulary
files on first use, which a server without internet access cannot do; the `bpe-openai` wheel
ships the same two files (gzipped), so they are read from there, checked against the SHA-256
tiktoken itself expects of them. bpe-openai's own tokenizer is not used: it maps ~60 MB as it is
imported and ~135 MB per process with one vocabulary loaded, where tiktoken's holds ~45 MB
(bench/concurrency.py, README "Server").

If either package is missing (e.g. a platform without a wheel), counting falls back to a
documented estimate, `estimate_tokens()`. `METHOD` tells which one is in force.

Memory: nothing is loaded until the first count (USAGE_TOKENIZER=lazy, the default), so a
process that is never asked for usage carries no vocabulary. With USAGE_TOKENIZER=preload the
gunicorn master calls `preload()` before it forks the workers, which then share its pages
(chatgpt_web/gunicorn_config.py).

Chat prompts are counted the way OpenAI's cookbook counts them for gpt-3.5/gpt-4/gpt-4o: every
message costs its role and content tokens plus 3 framing tokens, and the reply is primed with 3
more.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import math
import threading
from collections.abc import Iterable
from pathlib import Path

try:
    from tiktoken._tiktoken import CoreBPE
except ImportError:  # pragma: no cover - tiktoken is in requirements.txt
    CoreBPE = None


def _vocabulary_directory() -> Path | None:
    """Where the bpe-openai wheel keeps its vocabulary files, found without importing it."""
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


VOCABULARY_DIRECTORY = _vocabulary_directory()
# Optional at run time: without them usage numbers are estimates.
METHOD = "tiktoken" if CoreBPE is not None and VOCABULARY_DIRECTORY is not None else "estimate"
# The encoding nearly every model uses; preload() loads it, others load on first use.
PRELOADED_ENCODING = "o200k_base"

# Per encoding: the SHA-256 of its vocabulary file (uncompressed; the hash tiktoken checks when it
# downloads the file) and the pattern that splits text into pieces before BPE merges them, as
# OpenAI published them with the encoding. Counting treats special-token text ("<|endoftext|>")
# as plain text, so no special tokens are given.
_ENCODINGS = {
    "o200k_base": (
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "|".join([
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
            r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
            r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ])),
    "cl100k_base": (
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+"""
        r"""| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""),
}

TOKENS_PER_MESSAGE = 3
REPLY_PRIMING = 3

# Web slugs of models that used cl100k_base; every newer model uses o200k_base.
_CL100K_SLUGS = frozenset({"gpt-4", "text-davinci-002-render-sha"})


def encoding_name(web_slug: str) -> str:
    """The tokenizer encoding of a web model slug."""
    return "cl100k_base" if web_slug in _CL100K_SLUGS else "o200k_base"


def read_ranks(name: str) -> dict[bytes, int]:
    """The vocabulary of encoding `name`: token bytes -> rank, from its verified file."""
    expected_hash, _ = _ENCODINGS[name]
    digest, ranks = hashlib.sha256(), {}
    with gzip.open(VOCABULARY_DIRECTORY / f"{name}.tiktoken.gz") as file:
        for line in file:  # line by line: the parsed ranks are all this holds at its peak
            digest.update(line)
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if digest.hexdigest() != expected_hash:
        raise RuntimeError(f"the {name} vocabulary file in {VOCABULARY_DIRECTORY} is not the "
                           "published one (its SHA-256 differs)")
    return ranks


_loaded: dict[str, CoreBPE] = {}
# One load at a time: a burst of first counts must not build one ~45 MB tokenizer per thread.
_loading = threading.Lock()


def _encoding(name: str):
    # Loading takes ~0.3 s (the ranks are parsed from text), so each encoding is loaded once per
    # process, on first use (or once in the gunicorn master, by preload()).
    encoding = _loaded.get(name)
    if encoding is None:
        with _loading:
            encoding = _loaded.get(name)
            if encoding is None:
                encoding = _loaded[name] = CoreBPE(read_ranks(name), {}, _ENCODINGS[name][1])
    return encoding


def loaded_encodings() -> list[str]:
    """Names of the encodings this process has loaded."""
    return sorted(_loaded)


def preload() -> None:
    """Load the tokenizer now: in a process about to fork workers, they then share its memory."""
    if METHOD == "tiktoken":
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
    if METHOD != "tiktoken":
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
