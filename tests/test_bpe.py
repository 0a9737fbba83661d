"""The compact counter (chatgpt_web/bpe.py) gives tiktoken's tokens, token for token.

tiktoken is the reference: its Encoding is built here from tiktoken's own definition of each
encoding (pattern included), over the same vocabulary file parsed by this test, and every text
below must encode to the same ranks and count to the same number.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import random
import unicodedata
from pathlib import Path
from unittest import mock

import pytest
import regex

from chatgpt_web import bpe, usage

tiktoken = pytest.importorskip("tiktoken")
openai_public = pytest.importorskip("tiktoken_ext.openai_public")
if usage.METHOD != "exact":  # pragma: no cover - bpe-openai and regex are in requirements.txt
    pytest.skip("no vocabulary files to count with", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
ENCODINGS = ["o200k_base", "cl100k_base"]


def reference_encoding(name: str):
    """tiktoken's Encoding `name`, its ranks read from bpe-openai's copy of the published file."""
    text = gzip.decompress((usage.VOCABULARY_DIRECTORY / f"{name}.tiktoken.gz").read_bytes())
    ranks = {base64.b64decode(token): int(rank)
             for token, rank in (line.split() for line in text.splitlines())}
    definition = getattr(openai_public, name)
    with mock.patch.object(openai_public, "load_tiktoken_bpe", return_value=ranks):
        spec = definition()
    # The sha256 tiktoken's definition gives for the file it would download.
    assert hashlib.sha256(text).hexdigest() == usage._ENCODINGS[name][0]
    assert spec["pat_str"] == usage._ENCODINGS[name][1]
    return tiktoken.Encoding(spec["name"], pat_str=spec["pat_str"],
                             mergeable_ranks=spec["mergeable_ranks"], special_tokens={})


@pytest.fixture(scope="module", params=ENCODINGS)
def pair(request):
    """(our counter, tiktoken's encoding) for one encoding."""
    return usage._encoding(request.param), reference_encoding(request.param)


def assert_same_tokens(counter, reference, texts):
    for text in texts:
        expected = reference.encode_ordinary(text)
        assert counter.encode(text) == expected, repr(text[:80])
        assert counter.count(text) == len(expected), repr(text[:80])


# --- hand-picked hard cases ------------------------------------------------------------------

HARD_CASES = [
    "",
    "Hello there, how are you?",
    "<|endoftext|> and <|fim_prefix|><|endofprompt|>",  # special-token text is plain text
    "I've said THEY'LL can't; won't! We'RE HE'S she'd I'M you'VE it'Ll 's 't",
    "3.14159265 1234567 12 123 1234 12345 ١٢٣٤٥ ૧૨૩ 1,000,000 0x1F -42e-7",
    "line\r\nline\rline\n\r\n\n\r\r\n  \r\n\t\r\n trailing   ",
    "   leading spaces\n\n\n    indented\n\t\ttabs\t\t\n        ",
    "Здравствуй, мир! مرحبا بالعالم שלום עולם नमस्ते दुनिया สวัสดีชาวโลก Γειά σου Κόσμε",
    "日本語のテキストと中文文本，还有한국어 텍스트。「引用」（括弧）…全角ＡＢＣ１２３",
    "🤖🎉👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 1️⃣ 🇫🇷🇩🇪 naïve café résumé façade «quotes» — dashes…",
    "e\u0301 a\u0308 n\u0303\u0303 Z\u0351\u0300\u0317\u0359a\u0363l\u0364go",  # combining marks
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\n\nclass A:\n\tpass\n",
    "https://example.com/path?q=1&r=2#frag user@example.com C:\\Windows\\path /usr/bin/",
    "x\x1c\x1d\x1e\x1fy \x0b\x0c \x85 \xa0 \u2028\u2029 \u200b \u3000 \ufeff",
    "\u017ft \u212a 'ſ 'K ß ẞ İı ǅ ǈ ǋ",  # letters that fold to ASCII letters
    "mixed123numbers456and789letters abc123 123abc ABC'S",
    "\ufffd \U0010ffff \U000e0001 \U000f0000 \ue000",  # replacement char, private use, tags
    "a/b//c\n/d\n\n/e  /  f",
]


def test_hand_picked_hard_cases(pair):
    assert_same_tokens(*pair, HARD_CASES)


def test_surrogates_count_as_tiktoken_counts_them(pair):
    # A JSON body may carry "\ud83d\ude00" (a pair, one character once joined) or a lone "\ud800";
    # tiktoken joins pairs and replaces lone surrogates with U+FFFD.
    assert_same_tokens(*pair, ["a\ud800b", "\udfff", "x \ud83d\ude00 y", "\ud83d", "\ude00\ud83d",
                               "ok\ud800\ud800\udc00end"])


@pytest.mark.parametrize("unit", ["a", " ", "1", "\n", "\r\n", "日", "🎉", "ab", "A'",
                                  "e\u0301", ".", "\t ", "'s"])
def test_long_runs_of_one_unit(pair, unit):
    # One piece of thousands of bytes merges through the heap; short ones by scanning.
    assert_same_tokens(*pair, [unit * n for n in (2, 7, 33, 48, 49, 100, 1000, 5000)])


def test_every_assigned_code_point_is_classed_as_tiktoken_classes_it(pair):
    # Each context makes a code point's class visible in the tokens: a letter takes the 's
    # contraction ("A{}'s"), whitespace joins the run before " y", and "x'{}" shows characters that
    # case-fold to s, t, m or d. Checked 512 code points at a time, each on its own line: every
    # code point the `regex` module knows as assigned (private use aside), and every 61st of the
    # rest (classed alike by any Unicode version that leaves them unassigned).
    counter, reference = pair
    assigned = regex.compile(r"[^\p{Cn}\p{Co}\p{Cs}]")
    code_points = [chr(value) for value in range(0x110000) if not 0xD800 <= value <= 0xDFFF
                   and (value % 61 == 0 or assigned.match(chr(value)))]
    assert len(code_points) > 150_000
    for context in ("A{}'s", "x{} y", "x'{}"):
        for first in range(0, len(code_points), 512):
            text = "\n".join(context.format(char) for char in code_points[first:first + 512])
            if counter.encode(text) != reference.encode_ordinary(text):
                wrong = [char for char in code_points[first:first + 512]
                         if counter.encode(context.format(char))
                         != reference.encode_ordinary(context.format(char))]
                pytest.fail(f"{context}: U+{ord(wrong[0]):04X} and {len(wrong) - 1} more")


# --- a large, varied, deterministic corpus ---------------------------------------------------

def _alphabet() -> list[str]:
    """Characters of every kind the patterns tell apart, weighted toward the common ones."""
    ascii_letters = [chr(c) for c in range(0x21, 0x7F)] * 4
    spaces = [" "] * 40 + ["\n"] * 8 + ["\r\n", "\r", "\t", "\x0b", "\x0c", "\x1c", "\xa0",
                                        "\u3000", "\u2028", "\x85"]
    other = [chr(c) for c in range(0x80, 0x3000, 7)] + [chr(c) for c in range(0x3000, 0xA000, 97)]
    astral = [chr(c) for c in range(0x1F300, 0x1FAFF, 13)] + ["\U00020000", "\U0002A6D6"]
    contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "’s"] * 3
    return ascii_letters + spaces + other + astral + contractions + ["<|endoftext|>", "\ufe0f"]


def _random_texts(seed: int, count: int, longest: int) -> list[str]:
    chooser = random.Random(seed)
    alphabet = _alphabet()
    words = ("the quick brown fox jumps over lazy dog tokenization naïve Über straße "
             "日本語 中文 한국어 русский العربية 123 4567 ok OK Ok iPhone McDonald's").split()
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(chooser.randint(1, longest)):
            kind = chooser.random()
            if kind < 0.5:
                parts.append(chooser.choice(alphabet))
            elif kind < 0.8:
                parts.append(chooser.choice(words))
            elif kind < 0.9:
                parts.append(" " * chooser.randint(1, 6))
            else:
                parts.append(chooser.choice(alphabet) * chooser.randint(2, 60))
        texts.append("".join(parts))
    return texts


def test_seeded_random_texts(pair):
    assert_same_tokens(*pair, _random_texts(seed=19, count=3000, longest=40))


def test_seeded_random_ascii_splits_as_the_unicode_pattern_does(pair):
    # Text that is all ASCII is split by the standard library's `re` with the classes written out
    # (bpe._ASCII_CLASSES); it must cut exactly where the `regex` module's pattern cuts.
    counter, reference = pair
    chooser = random.Random(7)
    alphabet = [chr(c) for c in range(128)] + [" ", " ", "\n", "\r\n", "'s", "'LL", "a", "Z", "9"]
    texts = ["".join(chooser.choice(alphabet) for _ in range(chooser.randint(1, 30)))
             for _ in range(4000)]
    texts += [a + b + c for a in "\t\n\r \x0b\x0c\x1c'aA1./" for b in map(chr, range(128))
              for c in "\n a'1"]
    for text in texts:
        assert counter.pieces(text) == counter._findall(text), repr(text)
    assert_same_tokens(counter, reference, texts[:1500])


def test_real_prose_and_code(pair):
    files = [REPO / "README.md", *sorted((REPO / "chatgpt_web").rglob("*.py"))[:30]]
    assert_same_tokens(*pair, [path.read_text(encoding="utf-8") for path in files])


def test_normalization_forms_of_the_corpus(pair):
    # The same words in composed and decomposed forms split and merge differently.
    texts = _random_texts(seed=5, count=300, longest=20)
    assert_same_tokens(*pair, [unicodedata.normalize(form, text)
                               for form in ("NFC", "NFD", "NFKC") for text in texts])


# --- the counter's own parts -------------------------------------------------------------------

def test_remembered_counts_are_bounded_and_do_not_change_the_counts(pair):
    counter, reference = pair
    texts = _random_texts(seed=23, count=400, longest=60)
    before = [counter.count(text) for text in texts]
    assert len(counter._counts) <= bpe._REMEMBERED_PIECES
    counter._counts.clear()
    assert [counter.count(text) for text in reversed(texts)] == before[::-1]
    assert before == [len(reference.encode_ordinary(text)) for text in texts]


def test_the_table_finds_every_token_and_nothing_else():
    counter = usage._encoding("cl100k_base")
    for rank in range(0, counter.size, 97):
        assert counter.rank(counter.blob[counter.offsets[rank]:counter.offsets[rank + 1]]) == rank
    assert counter.rank(b"not one token at all") == -1
    assert counter.rank(b"") == -1


def test_a_vocabulary_with_a_repeated_token_is_refused():
    from array import array
    with pytest.raises(ValueError, match="same bytes"):
        bpe.CompactBPE(b"abab", array("I", [0, 2, 4]), r"\w+")
    with pytest.raises(ValueError, match="offsets"):
        bpe.CompactBPE(b"ab", array("I", [0, 1]), r"\w+")
