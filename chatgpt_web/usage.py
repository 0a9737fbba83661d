"""Token counts for the `usage` object of OpenAI-style answers.

The web backend reports no token counts, so the service counts them itself, exactly, under the
encoding the requested model family uses: `o200k_base` or `cl100k_base`. The counter is
chatgpt_web/bpe.py: tiktoken's encoder (the reference implementation of OpenAI's encodings) step
by step, over a compact copy of the vocabulary, about 4 MB per encoding where tiktoken's own
tokenizer holds about 46 MB per process (tests/test_bpe.py compares the two token by token).
tiktoken would download the vocabulary files on first use, which a server without internet access
cannot do; the `bpe-openai` wheel ships the same two files (gzipped), so they are read from there,
checked against the SHA-256 tiktoken itself expects of them. Neither tiktoken nor bpe-openai's own
tokenizer is loaded at run time.

If bpe-openai or `regex` is missing (e.g. a platform without a wheel), counting falls back to a
documented estimate, `estimate_tokens()`. `METHOD` tells which one is in force.

Memory: nothing is loaded until the first count (USAGE_TOKENIZER=lazy, the default), so a
process that is never asked for usage carries no vocabulary. With USAGE_TOKENIZER=preload the
gunicorn master calls `preload()` before it forks the workers, which then share its pages
(chatgpt_web/gunicorn_config.py).

The table file: parsing the vocabulary and building the counter's table takes ~0.15 s of CPU and
leaves ~7 MB resident per process, and a worker does it while hundreds of answers are open (the
workers are recycled after bursts, so it recurs). So the built table is stored once, in
`CACHE_DIR/tokenizer/` (`store_tables_in()`, which create_app() calls), and every later load maps
that file read-only (bpe.CompactBPE.mapped: ~5 ms, no table in the process's own memory; the file's
pages are shared and only the touched ones are resident). The gunicorn master writes the file
before it forks the workers, in a short-lived child process (`write_table_file()`), so the master
stays as small as before. A file that is missing, of another format, built from another
vocabulary or damaged is rebuilt and replaced atomically; where the directory cannot be written
(a read-only disk), each process builds its table in memory, as it did before the file existed.
CACHE_DIR is trusted like the rest of the cache: the file's checksum detects damage, not forgery.

Chat prompts are counted the way OpenAI's cookbook counts them for gpt-3.5/gpt-4/gpt-4o: every
message costs its role and content tokens plus 3 framing tokens, and the reply is primed with 3
more.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import itertools
import logging
import math
import os
import signal
import threading
import time
from array import array
from binascii import a2b_base64
from collections.abc import Iterable
from pathlib import Path

try:
    from .bpe import CompactBPE, StaleTable, table_file_name
except ImportError:  # pragma: no cover - `regex` is in requirements.txt
    CompactBPE = None

log = logging.getLogger(__name__)


def _vocabulary_directory() -> Path | None:
    """Where the bpe-openai wheel keeps its vocabulary files, found without importing it."""
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


VOCABULARY_DIRECTORY = _vocabulary_directory()
# Optional at run time: without them usage numbers are estimates.
METHOD = "exact" if CompactBPE is not None and VOCABULARY_DIRECTORY is not None else "estimate"
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


# Bytes of the vocabulary file decompressed and parsed at once. A worker's first count often comes
# while hundreds of answers are open, so loading should add little beyond what it keeps: the whole
# 3.6 MB file decompressed first made the process peak about 3 MB higher (9.5 MB against 6.5-7.5).
_PARSED_AT_ONCE = 1 << 16


def read_vocabulary(name: str) -> tuple[bytes, array]:
    """The vocabulary of encoding `name`, from its verified file: every token's bytes in rank
    order as one string, and where each starts (token r is blob[offsets[r]:offsets[r + 1]])."""
    expected_hash, _ = _ENCODINGS[name]
    digest, tokens, lengths, rest = hashlib.sha256(), [], array("H"), b""
    with gzip.open(VOCABULARY_DIRECTORY / f"{name}.tiktoken.gz") as file:
        while True:
            chunk = file.read(_PARSED_AT_ONCE)
            digest.update(chunk)
            text = rest + chunk
            end = text.rfind(b"\n") + 1 if chunk else len(text)  # whole lines until the last
            text, rest = text[:end], text[end:]
            # Each line is "<token in base64> <rank>", ranks counting up from 0 in the published
            # files (which the SHA-256 below vouches for), so a token's rank is its line number.
            fields = text.split()
            decoded = list(map(a2b_base64, fields[0::2]))
            lengths.extend(map(len, decoded))
            tokens.append(b"".join(decoded))
            if not chunk:
                break
    if digest.hexdigest() != expected_hash:
        raise RuntimeError(f"the {name} vocabulary file in {VOCABULARY_DIRECTORY} is not the "
                           "published one (its SHA-256 differs)")
    return b"".join(tokens), array("I", itertools.accumulate(lengths, initial=0))


_loaded: dict[str, CompactBPE] = {}
# One load at a time: a burst of first counts must not build one tokenizer per thread.
_loading = threading.Lock()
# Where the built tables are stored and mapped from (store_tables_in()); None: built in memory.
_table_directory: str | None = None
# Directories that could not be written, so the warning is logged once per process.
_unwritable: set[str] = set()


def table_directory(cache_dir: str) -> str:
    """Where the tables live inside CACHE_DIR."""
    return os.path.join(cache_dir, "tokenizer")


def store_tables_in(directory: str | None) -> None:
    """Map the tables from files in `directory` (writing them there when they are missing or
    unsound) instead of building them in each process's memory. Nothing is written until a
    table is loaded."""
    global _table_directory
    _table_directory = directory


def _encoding(name: str) -> CompactBPE:
    # Each encoding is loaded once per process, on first use (or once in the gunicorn master, by
    # preload()).
    encoding = _loaded.get(name)
    if encoding is None:
        with _loading:
            encoding = _loaded.get(name)
            if encoding is None:
                encoding = _loaded[name] = _load(name)
    return encoding


def _load(name: str) -> CompactBPE:
    """The counter of `name`: its table file mapped, or else built (and then stored)."""
    vocabulary_sha256, pattern = _ENCODINGS[name]
    directory = _table_directory
    if directory is None:
        return CompactBPE(*read_vocabulary(name), pattern)
    path = os.path.join(directory, table_file_name(name))
    try:
        return CompactBPE.mapped(path, pattern, vocabulary_sha256)
    except FileNotFoundError:
        pass
    except (OSError, StaleTable) as error:
        log.info("rebuilding the %s token table: %s", name, error)
    encoding = CompactBPE(*read_vocabulary(name), pattern)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        encoding.save(path, vocabulary_sha256)
    except OSError as error:
        if directory not in _unwritable:
            _unwritable.add(directory)
            log.warning("the token table cannot be stored in %s (%s): each process builds its "
                        "own in memory (~7 MB; README, \"Memory\")", directory, error.strerror)
    return encoding


def write_table_file(timeout: float = 60.0) -> None:
    """Make sure the table file of the preloaded encoding is in place: checked, or built and
    written, in a child process, so that this one (the gunicorn master) holds none of it.
    Waits for the child at most `timeout` seconds; a worker that finds no file builds one."""
    if METHOD != "exact" or _table_directory is None or not hasattr(os, "fork"):
        return
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which reports only by the file
        try:
            _load(PRELOADED_ENCODING)
        except BaseException:
            log.exception("the token table could not be written")
        finally:
            os._exit(0)
    deadline = time.monotonic() + timeout
    while os.waitpid(child, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            log.warning("the token table was not written within %s s", timeout)
            return
        time.sleep(0.01)


def loaded_encodings() -> list[str]:
    """Names of the encodings this process has loaded."""
    return sorted(_loaded)


def preload() -> None:
    """Load the tokenizer now: in a process about to fork workers, they then share its memory."""
    if METHOD == "exact":
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
    if METHOD != "exact":
        return estimate_tokens(text)
    # Text that looks like a special token ("<|endoftext|>") is plain text here.
    return _encoding(encoding_name(web_slug)).count(text)


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
