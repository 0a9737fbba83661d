"""The Answer object: what every face reads, tested without a server (pure event sources)."""
from __future__ import annotations

import pytest

from chatgpt_web.answers import Answer
from chatgpt_web.errors import UpstreamError, UpstreamTimeout
from chatgpt_web.metrics import STREAMS_IN_FLIGHT, UPSTREAM_ERRORS
from chatgpt_web.upstream.stream import Completion, TextDelta


def completion(text="Hello there", conversation_id="c-1"):
    return Completion(text=text, conversation_id=conversation_id, message_id="m-1",
                      finish_type="stop")


def in_flight() -> float:
    return STREAMS_IN_FLIGHT._value.get()


def errors_counted(code: str) -> float:
    return UPSTREAM_ERRORS.labels(code)._value.get()


class Source:
    """An upstream event source that records whether it was closed."""

    def __init__(self, *items, fail: Exception | None = None):
        self.items, self.fail, self.closed = items, fail, False

    def stream(self, access_token, request, upstream):
        try:
            yield from self.items
            if self.fail is not None:
                raise self.fail
        finally:
            self.closed = True


def start(source: Source) -> Answer:
    return Answer.start(source, "token", request=None, upstream=None)


def test_an_answer_yields_its_deltas_then_holds_its_completion():
    source = Source(TextDelta("Hello"), TextDelta(" there"), completion())
    answer = start(source)
    assert [delta.text for delta in answer] == ["Hello", " there"]
    assert answer.completion.text == "Hello there"
    answer.close()
    assert source.closed


def test_read_drains_the_answer_returns_its_completion_and_closes_it():
    source = Source(TextDelta("Hi"), completion("Hi"))
    before = in_flight()
    answer = start(source)
    assert in_flight() == before + 1
    assert answer.read().text == "Hi"
    assert source.closed and in_flight() == before


def test_the_completion_is_not_available_before_the_deltas_are_read():
    answer = start(Source(TextDelta("Hi"), completion("Hi")))
    with answer, pytest.raises(RuntimeError):
        _ = answer.completion


def test_an_answer_without_a_completion_is_a_broken_stream():
    with start(Source(TextDelta("Hi"))) as answer:
        list(answer)
        with pytest.raises(UpstreamError) as caught:
            _ = answer.completion
    assert caught.value.code == "upstream_stream_broken"


def test_an_upstream_that_ends_before_the_first_item_fails_at_start():
    with pytest.raises(UpstreamError) as caught:
        start(Source())
    assert caught.value.code == "upstream_stream_broken"


def test_a_failure_before_the_first_item_raises_from_start_and_is_counted():
    before, flying = errors_counted("deadline_exceeded"), in_flight()
    with pytest.raises(UpstreamTimeout):
        start(Source(fail=UpstreamTimeout("too slow")))
    assert errors_counted("deadline_exceeded") == before + 1
    assert in_flight() == flying


def test_a_failure_mid_stream_reaches_the_reader_closes_the_answer_and_is_counted():
    source = Source(TextDelta("Hel"), fail=UpstreamTimeout("too slow"))
    before, flying = errors_counted("deadline_exceeded"), in_flight()
    answer = start(source)
    seen = []
    with pytest.raises(UpstreamTimeout):
        for delta in answer:
            seen.append(delta.text)
    assert seen == ["Hel"]
    assert source.closed and in_flight() == flying
    assert errors_counted("deadline_exceeded") == before + 1


def test_closing_early_ends_the_upstream_transfer_once():
    source = Source(TextDelta("a"), TextDelta("b"), completion("ab"))
    flying = in_flight()
    with start(source) as answer:
        next(iter(answer))
    answer.close()
    assert source.closed and in_flight() == flying


def test_on_complete_hooks_see_the_completion_when_it_arrives():
    seen = []
    answer = start(Source(TextDelta("Hi"), completion("Hi", conversation_id="c-9")))
    answer.on_complete(lambda done: seen.append(done.conversation_id))
    assert seen == []
    answer.read()
    assert seen == ["c-9"]
