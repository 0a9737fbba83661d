"""`max_tokens` and `stop` on an answer the web backend writes without either.

The backend has no length limit or stop sequences, so the service enforces both on the text it
returns: `AnswerCutter` is fed the answer's pieces as they stream and gives back what may be sent
on. It cuts before the first stop sequence (finish_reason "stop") or at `max_tokens` tokens of the
model's tokenizer (finish_reason "length"), and then says `done`, so that the caller stops
reading the upstream. While streaming, it holds back the few characters that could be the start
of a stop sequence split across two pieces.
"""
from __future__ import annotations

from collections.abc import Callable

from ..errors import BadRequest

MAX_STOP_SEQUENCES = 4
MAX_STOP_LENGTH = 200


def stop_sequences(raw, param: str = "stop") -> tuple[str, ...]:
    """`stop` as given by the caller (a string or a list of up to 4). :raise BadRequest."""
    if raw is None or raw == "":  # some clients send "" for "no stop sequence"
        return ()
    values = [raw] if isinstance(raw, str) else raw
    if (not isinstance(values, list) or len(values) > MAX_STOP_SEQUENCES
            or not all(isinstance(v, str) and 0 < len(v) <= MAX_STOP_LENGTH for v in values)):
        raise BadRequest(f"stop must be a string or a list of up to {MAX_STOP_SEQUENCES} "
                         f"non-empty strings of at most {MAX_STOP_LENGTH} characters",
                         "invalid_field", param=param)
    return tuple(values)


def token_limit(body: dict, names=("max_completion_tokens", "max_tokens")) -> int | None:
    """The first of `names` the body sets, as a positive integer. :raise BadRequest."""
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"{name} must be a whole number of at least 1", "invalid_field",
                             param=name)
        return value
    return None


class AnswerCutter:
    """Cuts a streamed answer at a stop sequence or a token count (see the module doc).

    Each piece costs work in proportion to its length for stop sequences: the text received is
    kept as pieces (joined only to count tokens), and a stop sequence not found before must end in
    the new piece, so only the held-back text and the new piece are searched.
    """

    def __init__(self, stops: tuple[str, ...] = (), max_tokens: int | None = None,
                 count_tokens: Callable[[str], int] = len):
        self.stops = stops
        self.max_tokens = max_tokens
        self.count_tokens = count_tokens
        self._pieces: list[str] = []  # everything received
        self._length = 0
        self._unsent = ""       # text[sent:], the part not given out yet
        self.sent = 0           # characters of the text given out
        self.finish_reason: str | None = None  # "stop" or "length" once cut
        self._hold = max((len(stop) for stop in stops), default=1) - 1

    @property
    def text(self) -> str:
        """Everything received."""
        if len(self._pieces) > 1:
            self._pieces = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""

    @property
    def active(self) -> bool:
        return bool(self.stops) or self.max_tokens is not None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def feed(self, piece: str) -> str:
        """Take the next piece; return the text that may be sent now ("" once done)."""
        if self.done:
            return ""
        self._pieces.append(piece)
        self._length += len(piece)
        # What is unsent is at most the held-back tail, where a stop may begin: search only
        # there and in the new piece (nothing earlier held one).
        self._unsent += piece
        end = self._length
        cut = self._stop_at()
        if cut is not None:
            end, self.finish_reason = cut, "stop"
        # A token is at least one character: shorter text cannot be over the limit.
        if (self.max_tokens is not None and end > self.max_tokens
                and self.count_tokens(self.text[:end]) > self.max_tokens):
            end, self.finish_reason = self._token_cut(end), "length"
        if not self.done:
            end = max(self.sent, end - self._hold)  # a stop may begin in what is held back
        return self._give(end)

    def finish(self) -> str:
        """The answer ended: the text still held back."""
        return "" if self.done else self._give(self._length)

    def _give(self, end: int) -> str:
        count = max(0, end - self.sent)
        out, self._unsent = self._unsent[:count], self._unsent[count:]
        self.sent += count
        return out

    def _stop_at(self) -> int | None:
        found = [self._unsent.find(stop) for stop in self.stops]
        found = [index for index in found if index >= 0]
        return self.sent + min(found) if found else None

    def _token_cut(self, end: int) -> int:
        """The longest prefix of text[:end] within max_tokens tokens (binary search)."""
        text = self.text
        low, high = 0, end
        while low < high:
            middle = (low + high + 1) // 2
            if self.count_tokens(text[:middle]) <= self.max_tokens:
                low = middle
            else:
                high = middle - 1
        return max(low, self.sent)


def cut_text(text: str, stops: tuple[str, ...], max_tokens: int | None,
             count_tokens: Callable[[str], int]) -> tuple[str, str | None]:
    """A whole answer cut as AnswerCutter would: (text, "stop"/"length" or None)."""
    cutter = AnswerCutter(stops, max_tokens, count_tokens)
    out = cutter.feed(text) + cutter.finish()
    return out, cutter.finish_reason
