"""The usage counter's table file (bpe.CompactBPE.save/mapped, usage._load): built once, mapped
read-only by every later process, rebuilt when it is not the table this code would build, and
never required: where it cannot be written, counting works from memory as before."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatgpt_web import bpe, usage

if usage.METHOD != "exact":  # pragma: no cover - bpe-openai and regex are in requirements.txt
    pytest.skip("no vocabulary files to count with", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
# cl100k_base: the smaller vocabulary, so the tests build faster; the code is the same for both.
NAME = "cl100k_base"
SHA256, PATTERN = usage._ENCODINGS[NAME]
TEXTS = [
    "Hello there, how are you?",
    "I've said THEY'LL can't; won't! 3.14159 1,000,000",
    "Здравствуй, мир! 日本語のテキスト 🤖🎉👍🏽 naïve café",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\n\tpass\n",
    "x" * 300 + " " + "ab" * 200,
    (REPO / "README.md").read_text()[:20000],
]


@pytest.fixture(scope="module")
def built():
    """The counter built in memory from the vocabulary file (what tests/test_bpe.py checks)."""
    return bpe.CompactBPE(*usage.read_vocabulary(NAME), PATTERN)


@pytest.fixture
def tables(tmp_path, monkeypatch):
    """usage stores its tables in a fresh directory, and forgets the counters it loaded."""
    directory = tmp_path / "tokenizer"
    monkeypatch.setattr(usage, "_table_directory", str(directory))
    monkeypatch.setattr(usage, "_loaded", {})
    monkeypatch.setattr(usage, "_unwritable", set())
    return directory


def table_path(directory: Path) -> Path:
    return directory / bpe.table_file_name(NAME)


def test_a_mapped_table_is_the_built_one_byte_for_byte_and_counts_the_same(built, tmp_path):
    path = tmp_path / "table"
    built.save(str(path), SHA256)
    mapped = bpe.CompactBPE.mapped(str(path), PATTERN, SHA256)
    assert mapped.size == built.size
    assert bytes(mapped.offsets) == bytes(built.offsets)
    assert bytes(mapped.slots) == bytes(built.slots)
    assert mapped.blob[:built.offsets[-1]] == built.blob
    for text in TEXTS:
        assert mapped.encode(text) == built.encode(text)
        assert mapped.count(text) == built.count(text)
    assert mapped.rank(b"not one token at all") == -1
    for rank in range(0, built.size, 997):
        token = built.blob[built.offsets[rank]:built.offsets[rank + 1]]
        assert mapped.rank(token) == rank


def resident_kb(path: Path) -> int:
    """How much of the file at `path` this process has mapped in (its mappings' Rss, in KB)."""
    resident, in_file = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's first line
            in_file = len(fields) > 5 and fields[5] == str(path)
        elif in_file and fields[0] == "Rss:":
            resident += int(fields[1])
    return resident


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="no /proc smaps (not Linux)")
def test_a_count_that_looked_pieces_up_lets_go_of_the_table_pages_it_mapped(built, tmp_path):
    """Fault-around maps 64 KB around every page a lookup touches, and MADV_RANDOM does not
    stop it: the pages of a mapped table must be let go of after a count, or a few counts make
    most of the file resident in every worker."""
    path = tmp_path / "table"
    built.save(str(path), SHA256)
    mapped = bpe.CompactBPE.mapped(str(path), PATTERN, SHA256)
    assert resident_kb(path) == 0  # the check read every page, then let go of them
    keeping = bpe.CompactBPE.mapped(str(path), PATTERN, SHA256)
    keeping._let_go = None  # what a count would leave without letting go
    assert keeping.count(TEXTS[5]) == built.count(TEXTS[5])
    assert resident_kb(path) > 64  # the table's pages that count mapped in
    keeping.blob.madvise(bpe.mmap.MADV_DONTNEED)
    assert resident_kb(path) == 0
    for text in TEXTS:
        assert mapped.count(text) == built.count(text)
        assert resident_kb(path) == 0


def test_the_first_load_writes_the_table_and_later_loads_map_it(tables, built):
    assert usage.count_text(TEXTS[1], "gpt-4") == built.count(TEXTS[1])
    assert isinstance(usage._loaded[NAME].blob, bytes)  # built: there was no file
    path = table_path(tables)
    assert path.is_file() and not [p for p in tables.iterdir() if p != path]  # no temp left
    again = usage._load(NAME)
    assert not isinstance(again.blob, bytes)  # mapped from the file
    assert [again.count(text) for text in TEXTS] == [built.count(text) for text in TEXTS]


@pytest.mark.parametrize("damage", ["a flipped byte", "truncated", "empty", "another format",
                                    "another vocabulary"])
def test_an_unsound_table_file_is_refused_and_rebuilt(tables, built, damage):
    path = table_path(tables)
    tables.mkdir()
    built.save(str(path), SHA256)
    data = bytearray(path.read_bytes())
    trailer = bpe._TRAILER.size
    if damage == "a flipped byte":
        data[len(data) // 2] ^= 0x01  # in the slots: only the checksum can tell
    elif damage == "truncated":
        del data[-trailer - 4096:-trailer]
    elif damage == "empty":
        data = bytearray()
    elif damage == "another format":
        data[-trailer + 8] += 1  # the version field, just after the magic
    else:
        data[-64] ^= 0xFF  # the vocabulary's SHA-256
    path.write_bytes(bytes(data))
    with pytest.raises(bpe.StaleTable):
        bpe.CompactBPE.mapped(str(path), PATTERN, SHA256)

    counter = usage._load(NAME)
    assert [counter.count(text) for text in TEXTS] == [built.count(text) for text in TEXTS]
    assert path.read_bytes() != bytes(data)  # replaced by a sound one
    mapped = bpe.CompactBPE.mapped(str(path), PATTERN, SHA256)
    assert bytes(mapped.slots) == bytes(built.slots)


def test_a_table_of_another_vocabulary_is_refused(built, tmp_path):
    path = tmp_path / "table"
    built.save(str(path), SHA256)
    with pytest.raises(bpe.StaleTable):
        bpe.CompactBPE.mapped(str(path), PATTERN, usage._ENCODINGS["o200k_base"][0])


def test_where_the_table_cannot_be_written_counting_works_from_memory(tmp_path, monkeypatch,
                                                                      built, caplog):
    blocker = tmp_path / "a file"
    blocker.write_text("not a directory")  # so even root cannot create the directory under it
    monkeypatch.setattr(usage, "_table_directory", str(blocker / "tokenizer"))
    monkeypatch.setattr(usage, "_loaded", {})
    monkeypatch.setattr(usage, "_unwritable", set())
    with caplog.at_level(logging.WARNING, logger="chatgpt_web.usage"):
        assert usage.count_text(TEXTS[2], "gpt-4") == built.count(TEXTS[2])
        usage._load(NAME)  # a second load warns no more
    assert isinstance(usage._loaded[NAME].blob, bytes)
    warnings = [r for r in caplog.records if "cannot be stored" in r.getMessage()]
    assert len(warnings) == 1
    assert blocker.read_text() == "not a directory"


_MASTER_START = """
import json, os, sys
from chatgpt_web import usage
usage.store_tables_in(sys.argv[1])
usage.write_table_file()
path = os.path.join(sys.argv[1], usage.table_file_name(usage.PRELOADED_ENCODING))
print(json.dumps({"loaded": usage.loaded_encodings(), "written": os.path.isfile(path)}))
"""


def test_the_master_writes_the_table_in_a_child_and_holds_none_of_it(tmp_path):
    """What gunicorn's on_starting does before the workers fork (gunicorn_config.py)."""
    directory = tmp_path / "tokenizer"
    result = subprocess.run([sys.executable, "-c", _MASTER_START, str(directory)], cwd=REPO,
                            capture_output=True, text=True, timeout=120, check=True)
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome == {"loaded": [], "written": True}
    path = directory / bpe.table_file_name(usage.PRELOADED_ENCODING)
    sha256, pattern = usage._ENCODINGS[usage.PRELOADED_ENCODING]
    mapped = bpe.CompactBPE.mapped(str(path), pattern, sha256)
    assert mapped.count("Hello there, how are you?") == 7
    assert os.stat(directory).st_mode & 0o777 == 0o700
