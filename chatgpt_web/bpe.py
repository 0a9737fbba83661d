"""Exact byte-pair-encoding token counts from a compact vocabulary.

tiktoken's tokenizer keeps a vocabulary of 200,000 tokens as hash maps of separate byte strings
both ways, about 46 MB per process; this one keeps the same vocabulary in three flat buffers, a
few MB in all, and counts the same tokens:

- `blob`: every token's bytes, concatenated in rank order;
- `offsets`: where each token starts in `blob` (token r is blob[offsets[r]:offsets[r + 1]]);
- `slots`: an open-addressing hash table (linear probing, at most half full) of rank + 1, 0 for an
  empty slot, indexed by the token's CRC-32. CRC-32 is deterministic, unlike Python's hash(), so
  the table is the same in every process and can be stored.

`save()` writes the three buffers to one file and `CompactBPE.mapped()` maps such a file
read-only: nothing is parsed or built, and processes share the file's pages. A count that had to
look pieces up in the table lets go of the pages it mapped (MADV_DONTNEED: they stay in the page
cache, so the next lookup maps them again without reading the disk). Otherwise they would stay
resident in every process: the kernel maps the 64 KB around each page a lookup faults in
("fault-around", which MADV_RANDOM does not stop), so the random probes of a few counts map
most of the 4 MB file, in each worker. Counts of pieces already counted (most of them) never
read the table. The file ends with a trailer (format version, sizes, the SHA-256 of
the vocabulary it was built from and the SHA-256 of the buffers); a file whose trailer or
checksum does not match is refused (`StaleTable`), so counting never runs on a wrong table.

Counting follows tiktoken's encoder step by step: the encoding's pattern splits the text into
pieces (run by the `regex` module, which reads the same syntax as tiktoken's Rust engine); a piece
that is itself a token is one token; any other piece starts as single bytes, and the adjacent pair
whose joined bytes have the lowest rank merges first, the leftmost of equal ranks, until no
adjacent pair is a token. Text that looks like a special token ("<|endoftext|>") is plain text.
"""
from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import mmap
import os
import re
import struct
import sys
import tempfile
from array import array
from functools import partial
from zlib import crc32

import regex

# Code points that the `regex` module's Unicode 17 tables class as letters, marks or digits and
# that tiktoken's Rust engine (Unicode 16 tables) still treats as unassigned: new scripts, CJK
# Extension J, a few Latin letters. Counting sees each of them as an unassigned code point
# (U+10FFFF, a noncharacter) while splitting, so pieces end where tiktoken's end.
# tests/test_bpe.py checks every code point against tiktoken, so a `regex` or tiktoken with other
# Unicode tables shows here as a failing test, not as a silently different count.
_UNASSIGNED_IN_TIKTOKEN = "[" + (
    r"\u088f\u0c5c\u0cdc\u1acf-\u1add\u1ae0-\u1aeb\ua7ce\ua7cf\ua7d2\ua7d4\ua7f1"
    r"\U00010940-\U00010959\U00010ec5-\U00010ec7\U00010efa\U00010efb\U00011b60-\U00011b67"
    r"\U00011db0-\U00011ddb\U00011de0-\U00011de9\U00016ea0-\U00016eb8\U00016ebb-\U00016ed3"
    r"\U00016ff2-\U00016ff6\U000187f8-\U000187ff\U00018d09-\U00018d1e\U00018d80-\U00018df2"
    r"\U0001e6c0-\U0001e6de\U0001e6e0-\U0001e6f5\U0001e6fe\U0001e6ff\U0002b73a-\U0002b73f"
    r"\U0002cea2-\U0002cead\U000323b0-\U00033479") + "]"
_STAND_IN = "\U0010ffff"

# What the pattern's classes mean in text that is all ASCII, where the standard library's `re`
# splits in about 40 % of the time the `regex` module takes. \s is Unicode's White_Space, as in
# tiktoken: not the separators \x1c-\x1f that `re`'s \s would add.
_ASCII_CLASSES = {
    r"\p{L}": "A-Za-z", r"\p{Lu}": "A-Z", r"\p{Ll}": "a-z", r"\p{Lt}": "", r"\p{Lm}": "",
    r"\p{Lo}": "", r"\p{M}": "", r"\p{N}": "0-9", r"\s": r"\t\n\x0b\x0c\r ",
}
_CLASS_OR_ESCAPE = re.compile(r"\\p\{\w+\}|\\[sS]|\\.|\[\^?|\]")

# Pieces whose count is remembered, at most (about 0.1 KB each).
_REMEMBERED_PIECES = 8192
# A pair rank larger than any real one: "these two parts do not merge".
_NO_MERGE = 1 << 32
# Pieces longer than this merge through a heap (n log n) rather than by scanning every pair for
# the lowest rank at each step (n squared, but each scan runs in C and is faster for short pieces).
_SCAN_LIMIT = 48

# A stored table: blob, zero bytes to a multiple of 4, offsets, slots, then this trailer (native
# byte order, which the file's name also gives: table_file_name()): a magic string, the format
# version, the token count, the blob's length, the slot count, the SHA-256 of the vocabulary file
# and the SHA-256 of everything before the trailer. Change _TABLE_FORMAT when the layout or the
# way slots are filled changes: files of another version are rebuilt, never read.
_TABLE_MAGIC = b"cwbpetab"
_TABLE_FORMAT = 1
_TRAILER = struct.Struct("=8sIIII32s32s")


class StaleTable(ValueError):
    """A stored table that is not the one this code would build from the expected vocabulary."""


def table_file_name(encoding: str) -> str:
    """The file name of an encoding's stored table (its format and byte order included)."""
    return f"{encoding}.v{_TABLE_FORMAT}-{sys.byteorder}.bpetable"


def _capacity(size: int) -> int:
    # At most half full, so a lookup of a byte string that is not a token (most of the lookups
    # while merging) ends at an empty slot after about two probes.
    return 1 << max(4, (2 * size - 1).bit_length())


class CompactBPE:
    """One encoding's vocabulary and split pattern; counts (and lists) the tokens of a text."""

    def __init__(self, blob: bytes, offsets: array, pattern: str):
        if offsets.typecode != "I" or offsets[0] != 0 or offsets[-1] != len(blob):
            raise ValueError("offsets must be array('I') from 0 to len(blob)")
        self.blob = blob
        self.offsets = offsets
        self.size = len(offsets) - 1
        capacity = _capacity(self.size)
        self._mask = capacity - 1
        self.slots = array("I", [0]) * capacity
        self._let_go = None  # a table in this process's memory stays
        self._build()
        self._compile(pattern)

    @classmethod
    def mapped(cls, path: str, pattern: str, vocabulary_sha256: str) -> CompactBPE:
        """The counter over the table file at `path` (written by save()), mapped read-only.

        Raises OSError if the file cannot be read, StaleTable if it is not a complete table of
        this format built from the vocabulary whose SHA-256 is `vocabulary_sha256`."""
        with open(path, "rb") as file:
            length = os.fstat(file.fileno()).st_size
            if length < _TRAILER.size:
                raise StaleTable(f"{path} is too short to be a table")
            mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        body = length - _TRAILER.size
        magic, version, size, blob_length, capacity, vocabulary, checksum = \
            _TRAILER.unpack(mapping[body:])
        padded = -(-blob_length // 4) * 4
        if (magic, version) != (_TABLE_MAGIC, _TABLE_FORMAT) \
                or vocabulary != bytes.fromhex(vocabulary_sha256) \
                or capacity != _capacity(size) or body != padded + 4 * (size + 1 + capacity):
            mapping.close()
            raise StaleTable(f"{path} is not a table of this format and vocabulary")
        view = memoryview(mapping)
        # Reading every page once costs ~3 ms; then they are let go of (MADV_DONTNEED drops them
        # from this process only, not from the page cache), as after every count that reads the
        # table (the module doc).
        intact = hashlib.sha256(view[:body]).digest() == checksum
        offsets = view[padded:padded + 4 * (size + 1)].cast("I")
        if not intact or offsets[0] != 0 or offsets[-1] != blob_length:
            offsets.release()
            view.release()
            mapping.close()
            raise StaleTable(f"{path} is damaged (its checksum differs)")
        counter = cls.__new__(cls)
        # The blob is the mapping itself (it starts the file): slicing an mmap gives bytes, as
        # slicing bytes does; offsets never point past the blob.
        counter.blob = mapping
        # Unmaps the table's pages from this process (the module doc), now and after counts.
        counter._let_go = None
        if hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            counter._let_go = partial(mapping.madvise, mmap.MADV_DONTNEED)
            counter._let_go()
        counter.offsets = offsets
        counter.size = size
        counter._mask = capacity - 1
        counter.slots = view[padded + 4 * (size + 1):body].cast("I")
        counter._compile(pattern)
        return counter

    def save(self, path: str, vocabulary_sha256: str) -> None:
        """Write the table to `path` atomically (a temporary file renamed over it), for mapped().

        Raises OSError if the directory cannot be written."""
        blob_length = self.offsets[-1]
        blob = bytes(self.blob[:blob_length])
        parts = [blob, bytes(-blob_length % 4), bytes(self.offsets), bytes(self.slots)]
        checksum = hashlib.sha256()
        for part in parts:
            checksum.update(part)
        parts.append(_TRAILER.pack(_TABLE_MAGIC, _TABLE_FORMAT, self.size, blob_length,
                                   len(self.slots), bytes.fromhex(vocabulary_sha256),
                                   checksum.digest()))
        directory, name = os.path.split(path)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=directory or ".")
        try:
            with os.fdopen(descriptor, "wb") as file:
                for part in parts:
                    file.write(part)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o644)  # the table holds nothing secret
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(temporary)
            raise

    def _compile(self, pattern: str) -> None:
        split = regex.compile(pattern)
        self._findall, self._finditer = split.findall, split.finditer
        self._findall_ascii = re.compile(_for_ascii_text(pattern)).findall
        self._unassigned = regex.compile(_UNASSIGNED_IN_TIKTOKEN)
        self._has_unassigned = self._unassigned.search
        # Token counts of recent pieces (bounded: emptied when full).
        self._counts: dict[str, int] = {}

    def _build(self) -> None:
        blob, offsets, slots, mask = self.blob, self.offsets, self.slots, self._mask
        for rank in range(self.size):
            start, end = offsets[rank], offsets[rank + 1]
            token = blob[start:end]
            slot = crc32(token) & mask
            while slots[slot]:
                other = slots[slot] - 1
                if blob[offsets[other]:offsets[other + 1]] == token:
                    raise ValueError(f"tokens {other} and {rank} are the same bytes")
                slot = (slot + 1) & mask
            slots[slot] = rank + 1

    @property
    def nbytes(self) -> int:
        """Bytes held by the vocabulary's buffers."""
        return self.offsets[-1] + self.offsets.itemsize * len(self.offsets) + \
            self.slots.itemsize * len(self.slots)

    def rank(self, data: bytes) -> int:
        """The rank of the token whose bytes are `data`, or -1 if none is."""
        slots, offsets, blob, mask = self.slots, self.offsets, self.blob, self._mask
        length = len(data)
        slot = crc32(data) & mask
        while True:
            found = slots[slot]
            if not found:
                return -1
            start = offsets[found - 1]
            if offsets[found] - start == length and blob[start:start + length] == data:
                return found - 1
            slot = (slot + 1) & mask

    def count(self, text: str) -> int:
        """The number of tokens tiktoken's encode_ordinary(text) returns."""
        try:
            return self._count(text)
        except UnicodeEncodeError:
            return self._count(_without_surrogates(text))

    def encode(self, text: str) -> list[int]:
        """The ranks tiktoken's encode_ordinary(text) returns (what the tests compare)."""
        try:
            return self._encode(text)
        except UnicodeEncodeError:
            return self._encode(_without_surrogates(text))

    def pieces(self, text: str) -> list[str]:
        """`text` split by the encoding's pattern, as tiktoken splits it."""
        if text.isascii():
            return self._findall_ascii(text)
        if not self._has_unassigned(text):
            return self._findall(text)
        return self._pieces_around_unassigned(text)

    def _pieces_around_unassigned(self, text: str) -> list[str]:
        split = self._finditer(self._unassigned.sub(_STAND_IN, text))
        return [text[match.start():match.end()] for match in split]

    def _count(self, text: str) -> int:
        # Most pieces recur (words, indentation, punctuation), so their counts are remembered:
        # a hit costs a dict lookup where a piece's bytes cost an encode, a CRC and a probe.
        counts = self._counts
        total = 0
        looked_up = False
        try:
            for piece in self._findall_ascii(text) if text.isascii() else self._findall(text):
                count = counts.get(piece)
                if count is None:
                    looked_up = True
                    # A remembered piece has none of these code points, so only new pieces are
                    # searched; a text that has one is split again around them.
                    if not piece.isascii() and self._has_unassigned(piece):
                        return sum(map(self._piece_count,
                                       self._pieces_around_unassigned(text)))
                    count = self._piece_count(piece)
                    if len(counts) >= _REMEMBERED_PIECES:
                        counts.clear()
                    counts[piece] = count
                total += count
            return total
        finally:
            if looked_up and self._let_go is not None:
                self._let_go()

    def _piece_count(self, piece: str) -> int:
        data = piece.encode()
        if len(data) == 1 or self.rank(data) >= 0:
            return 1
        return len(self._merged(data)) - 1

    def _encode(self, text: str) -> list[int]:
        ranks: list[int] = []
        for piece in self.pieces(text):
            data = piece.encode()
            whole = self.rank(data)
            if whole >= 0:
                ranks.append(whole)
                continue
            bounds = self._merged(data)
            ranks.extend(self.rank(data[start:end]) for start, end in itertools.pairwise(bounds))
        return ranks

    def _merged(self, data: bytes) -> list[int]:
        """Where the tokens of `data` (a piece that is not one token) start, and its length."""
        if len(data) <= _SCAN_LIMIT:
            return self._merged_by_scan(data)
        return self._merged_by_heap(data)

    def _merged_by_scan(self, data: bytes) -> list[int]:
        # bounds[i] is where part i starts; pairs[i] the rank of parts i and i + 1 joined.
        rank = self.rank
        bounds = list(range(len(data) + 1))
        pairs = [rank(data[i:i + 2]) for i in range(len(data) - 1)]
        pairs = [_NO_MERGE if found < 0 else found for found in pairs]
        while pairs:
            lowest = min(pairs)
            if lowest == _NO_MERGE:
                break
            i = pairs.index(lowest)  # the leftmost of equal ranks
            del bounds[i + 1], pairs[i]
            if i < len(pairs):
                found = rank(data[bounds[i]:bounds[i + 2]])
                pairs[i] = _NO_MERGE if found < 0 else found
            if i:
                found = rank(data[bounds[i - 1]:bounds[i + 1]])
                pairs[i - 1] = _NO_MERGE if found < 0 else found
        return bounds

    def _merged_by_heap(self, data: bytes) -> list[int]:
        # The same merges as _merged_by_scan, found through a heap of (rank, start) so that the
        # lowest rank, leftmost first, is taken in log n steps. Parts are a linked list by start;
        # a heap entry is stale once its part merged or its pair's rank changed.
        rank = self.rank
        length = len(data)
        following = list(range(1, length + 2))  # following[start]: start of the next part
        preceding = list(range(-1, length))  # preceding[start]: start of the previous part
        pair_rank = [_NO_MERGE] * length  # pair_rank[start]: its pair with the next part
        alive = [True] * length
        heap = []
        for start in range(length - 1):
            found = rank(data[start:start + 2])
            if found >= 0:
                pair_rank[start] = found
                heap.append((found, start))
        heapq.heapify(heap)
        while heap:
            found, start = heapq.heappop(heap)
            if not alive[start] or pair_rank[start] != found:
                continue
            absorbed = following[start]
            alive[absorbed] = False
            after = following[start] = following[absorbed]
            if after < length:
                preceding[after] = start
            pair_rank[start] = _NO_MERGE
            if after < length:
                joined = rank(data[start:following[after]])
                if joined >= 0:
                    pair_rank[start] = joined
                    heapq.heappush(heap, (joined, start))
            before = preceding[start]
            if before >= 0:
                joined = rank(data[before:after])
                pair_rank[before] = _NO_MERGE if joined < 0 else joined
                if joined >= 0:
                    heapq.heappush(heap, (joined, before))
        return [start for start in range(length) if alive[start]] + [length]


def _for_ascii_text(pattern: str) -> str:
    """`pattern` with its Unicode classes written out for text that is all ASCII."""
    inside_set = False

    def ascii_only(match: re.Match) -> str:
        nonlocal inside_set
        found = match.group()
        if found in ("[", "[^", "]"):
            inside_set = found != "]"
            return found
        if found == r"\S":
            if inside_set:
                raise ValueError(r"\S inside a set")
            return "[^" + _ASCII_CLASSES[r"\s"] + "]"
        if found not in _ASCII_CLASSES:
            return found
        members = _ASCII_CLASSES[found]
        return members if inside_set else f"[{members}]"

    translated = _CLASS_OR_ESCAPE.sub(ascii_only, pattern)
    if "[]" in translated or "[^]" in translated:
        raise ValueError("a set is empty in ASCII text")
    return translated


def _without_surrogates(text: str) -> str:
    """What tiktoken counts for text with surrogates (valid in a Python str, not in UTF-8): a
    surrogate pair becomes its character, a lone surrogate U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
