"""Relaying a long answer costs work in proportion to its length, not to its length squared.

Building a text with `text += piece` copies all the text so far at every piece, unless CPython
can grow the string in place (a local variable it alone holds); an attribute never can. The
pieces here count what concatenations copy: a piece added to a text by `+` or `+=` is told the
length of that text (its `__radd__` runs, as the right operand is a str subclass). Joining lists
of pieces copies nothing twice and is not counted.
"""
from __future__ import annotations

from chatgpt_web import models
from chatgpt_web.answers import Answer
from chatgpt_web.api.answer_limits import AnswerCutter
from chatgpt_web.api.chat_turns import TurnSpec
from chatgpt_web.api.openai_compat import _Reply, _StreamedChoice
from chatgpt_web.upstream.stream import Completion, TextDelta


class CopyCount:
    characters = 0


class Piece(str):
    def __radd__(self, text: str) -> str:
        CopyCount.characters += len(text)
        return str.__add__(text, self)


def test_a_long_streamed_chat_completion_does_not_rebuild_its_text_at_every_piece():
    pieces = [Piece(f" w{i}") for i in range(4000)]
    text = "".join(pieces)
    answer = Answer(iter([*(TextDelta(piece) for piece in pieces),
                          Completion(text, "conv-1", "msg-1", "stop")]))
    choice = _StreamedChoice(_Reply(models.resolve("gpt-4o"), (), include_usage=True), 0)
    CopyCount.characters = 0
    with answer:
        chunks = list(choice.text(TurnSpec(to_send=(), model="gpt-4o"), answer))
    assert choice.output_text == text and len(chunks) == len(pieces) + 1
    # Appending piece by piece would have copied about 4000^2 / 2 x 6 = 48 million characters.
    assert CopyCount.characters <= len(text)


def test_cutting_a_long_answer_at_a_stop_sequence_searches_only_what_is_new():
    pieces = [Piece(f" w{i}") for i in range(4000)] + [Piece(" END and more")]
    cutter = AnswerCutter(stops=("END",))
    CopyCount.characters = 0
    given = "".join(cutter.feed(piece) for piece in pieces)
    assert given == "".join(pieces).split(" END")[0] + " " and cutter.finish_reason == "stop"
    # Only the held-back tail (shorter than the longest stop) is ever added to: about 2 x 4000.
    # Growing the whole text piece by piece would have copied about 4000^2 / 2 x 6 characters.
    assert CopyCount.characters <= len(pieces) * len("END")
