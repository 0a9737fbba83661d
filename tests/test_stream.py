"""The one stream reducer: both body formats, every recorded sample, any chunking."""
import json
import random

import pytest

from chatgpt_web.errors import ContentBlocked, UpstreamError
from chatgpt_web.upstream.stream import (
    SseEvent,
    SseParser,
    StreamReducer,
    apply_operation,
    iter_sse,
    relay,
)


def strip_annotations(text: str) -> bytes:
    """Our sample files annotate streams with '#' lines; they are not part of the wire bytes."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("#")).encode()


def chunked(raw: bytes, seed: int | None):
    if seed is None:
        return [raw]
    if seed == 0:
        return [raw[i:i + 1] for i in range(len(raw))]
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(raw):
        size = rng.randint(1, 40)
        chunks.append(raw[i:i + size])
        i += size
    return chunks


def reduce(raw: bytes, seed: int | None = None, prefix: str = ""):
    reducer = StreamReducer(prefix=prefix)
    deltas = []
    for event in iter_sse(chunked(raw, seed)):
        deltas += [delta.text for delta in reducer.feed(event)]
    completion = reducer.result()
    assert "".join(deltas) == completion.text[len(prefix):]
    return completion, deltas


def sse(*payloads, blank=True) -> bytes:
    sep = "\n\n" if blank else "\n"
    return "".join(f"data: {p if isinstance(p, str) else json.dumps(p)}{sep}"
                   for p in payloads).encode()


def message(text, *, role="assistant", status="in_progress", end_turn=None, mid="m1", **extra):
    return {"message": {"id": mid, "author": {"role": role},
                        "content": {"content_type": "text", "parts": [text]},
                        "status": status, "end_turn": end_turn, "recipient": "all",
                        "metadata": {}, **extra},
            "conversation_id": "c1", "error": None}


SEEDS = [None, 0, 1, 2, 3]


@pytest.mark.parametrize("seed", SEEDS)
def test_real_v1_capture_reduces_to_its_text_and_ids(samples_dir, seed):
    raw = strip_annotations((samples_dir / "delta-v1-capture.txt").read_text())
    completion, deltas = reduce(raw, seed)
    assert completion.conversation_id == "6974e0a3-b684-8321-a73a-bf4e7b6dfafe"
    assert completion.message_id == "0fe98393-5d68-4e41-9fb6-75b50f27c79e"
    assert completion.text.startswith(
        "Here\u2019s a list of 10 famous people from different fields")
    assert completion.text.endswith(
        "Any particular field or person you're interested in learning more about?")
    assert "10. **Frida Kahlo** \u2013 Mexican artist" in completion.text
    assert completion.finish_type == "stop"
    assert completion.title == "Famous People List"
    assert "give me a list" not in completion.text  # the user echo is not part of the answer


@pytest.mark.parametrize("seed", SEEDS)
def test_legacy_samples_reduce_to_their_text_and_ids(samples_dir, seed):
    text = (samples_dir / "legacy-full-message.txt").read_text()
    first, second = text.split("# ---- [B] ----")
    completion, _ = reduce(strip_annotations(first), seed)
    assert (completion.text, completion.conversation_id, completion.message_id) == (
        "Pro", "5d8777ca-cd79-4756-857e-c5c21339f57c", "62f92567-4ce0-4fe3-800f-3d5b82aa0e4d")
    completion, _ = reduce(strip_annotations(second), seed)
    assert completion.text.startswith("That's alright! If you don't have a specific question")
    assert completion.text.endswith("would like to learn more about?")
    assert completion.finish_type == "stop"


@pytest.mark.parametrize("seed", SEEDS)
def test_aurora_fixtures_reduce_to_their_text(samples_dir, seed):
    sections = (samples_dir / "delta-v1-aurora-fixtures.txt").read_text().split("# ----")[1:]
    results = [reduce(strip_annotations(section), seed)[0] for section in sections]
    assert [(c.text, c.conversation_id, c.message_id) for c in results] == [
        ("hello world", None, None),
        ("hello world", "conv-test", "msg-test"),
        ("hello world", "conv-batch", "msg-batch"),
        ("answer", "conv-thinking", "msg-final"),
    ]


def test_events_split_across_chunks_and_crlf_decode_identically():
    raw = b"event: delta\r\ndata: {\"v\": \"caf\xc3\xa9\"}\r\n\r\n: comment\r\ndata: [DONE]\r\n\r\n"
    whole = list(iter_sse([raw]))
    assert list(iter_sse(chunked(raw, 0))) == whole
    assert whole == [SseEvent("delta", '{"v": "café"}'), SseEvent(None, "[DONE]")]


def test_characters_and_invalid_bytes_split_anywhere_decode_as_one_read():
    # Whole chunks decode at once, a character split between chunks (or bytes that are no
    # UTF-8) through the incremental decoder: for every way to cut the stream in three, the
    # events are those of the stream read whole, invalid bytes replaced by U+FFFD.
    raw = ("data: {\"v\": \"é中🙂\"}\n\n".encode() + b"data: bad \xff\xc3 end\n\n"
           + "data: ünï\n\n".encode())
    whole = list(iter_sse([raw]))
    assert whole == [SseEvent(None, '{"v": "é中🙂"}'), SseEvent(None, "bad \ufffd\ufffd end"),
                     SseEvent(None, "ünï")]
    for first in range(len(raw)):
        for second in range(first, len(raw)):
            pieces = [raw[:first], raw[first:second], raw[second:]]
            assert list(iter_sse(pieces)) == whole, (first, second)


def test_multiline_data_is_joined_with_newlines():
    assert list(iter_sse([b"data: a\ndata: b\n\n"])) == [SseEvent(None, "a\nb")]


def test_pings_and_heartbeats_are_skipped():
    raw = (b"event: ping\ndata: {}\n\n" + b"data: 2024-04-08 12:00:00.123456\n\n" + b"data: \n\n"
           + sse(message("Hi", status="finished_successfully", end_turn=True), "[DONE]"))
    completion, deltas = reduce(raw)
    assert completion.text == "Hi" and deltas == ["Hi"]


def test_user_system_and_tool_echoes_are_not_answer_text():
    raw = sse(message("", role="system", mid="s"), message("question", role="user", mid="u"),
              message("search('x')", mid="t", recipient="browser"),
              message("tool output", role="tool", mid="o"),
              message("answer", status="finished_successfully", end_turn=True, mid="a"), "[DONE]")
    completion, _ = reduce(raw)
    assert completion.text == "answer" and completion.message_id == "a"


def test_turn_with_end_turn_false_goes_on_to_the_next_message():
    raw = sse(message("Let me check.", status="finished_successfully", end_turn=False, mid="a1"),
              message("looked", role="tool", mid="t"),
              message("Found it", mid="a2"),
              message("Found it.", status="finished_successfully", end_turn=True, mid="a2"),
              "[DONE]")
    completion, deltas = reduce(raw)
    assert completion.text == "Let me check.\n\nFound it."
    assert completion.message_id == "a2"
    assert "".join(deltas) == completion.text


def test_analysis_channel_is_not_answer_text():
    raw = sse({"v": {"message": {"id": "r", "author": {"role": "assistant"}, "channel": "analysis",
                                 "content": {"content_type": "text", "parts": ["thinking"]}}},
               "c": 0},
              {"v": {"message": {"id": "f", "author": {"role": "assistant"}, "channel": "final",
                                 "content": {"content_type": "text", "parts": [""]}}}, "c": 1},
              {"p": "/message/content/parts/0", "o": "append", "v": "done"}, "[DONE]")
    completion, _ = reduce(raw)
    assert completion.text == "done" and completion.message_id == "f"


def test_channel_is_carried_over_between_deltas():
    raw = sse({"p": "", "o": "add", "v": message("", mid="a0"), "c": 3},
              {"p": "/message/content/parts/0", "o": "append", "v": "x"},
              {"v": "y"}, "[DONE]")
    assert reduce(raw)[0].text == "xy"


def test_a_bare_piece_follows_the_channel_it_was_moved_to():
    # `{"c": 1}` moves to message 1 without text: the next bare piece belongs there, not to the
    # message the previous piece grew.
    raw = sse({"p": "", "o": "add", "v": message("", mid="a0"), "c": 0},
              {"p": "/message/content/parts/0", "o": "append", "v": "x"},
              {"v": "y"},
              {"p": "", "o": "add", "v": message("", mid="a1", role="tool"), "c": 1},
              {"c": 0}, {"v": "z"}, {"c": 1}, {"v": "tool output"}, "[DONE]")
    completion, deltas = reduce(raw)
    assert completion.text == "xyz" and deltas == ["x", "y", "z"]


def test_a_bare_piece_after_a_patch_repeats_the_patch_not_its_last_append():
    # The carried-over op of a patch is the patch: a bare string patches nothing, even when the
    # patch's own last operation appended answer text.
    raw = sse({"p": "", "o": "add", "v": message("", mid="a0"), "c": 0},
              {"p": "/message/content/parts/0", "o": "append", "v": "x"},
              {"p": "/message/metadata", "o": "patch",
               "v": [{"p": "/message/content/parts/0", "o": "append", "v": "y"}]},
              {"v": "ignored"},
              {"p": "/message/content/parts/0", "o": "append", "v": "z"}, {"v": "!"}, "[DONE]")
    completion, deltas = reduce(raw)
    assert completion.text == "xyz!" and deltas == ["x", "y", "z", "!"]


def test_bare_pieces_after_a_rewrite_of_the_answer_are_read_again():
    # A truncate in between: the text is re-read (slow path), and the next bare pieces grow the
    # truncated text, whichever event grew it before.
    raw = sse({"p": "", "o": "add", "v": message("", mid="a"), "c": 0},
              {"p": "/message/content/parts/0", "o": "append", "v": "abc"}, {"v": "def"},
              {"p": "/message/content/parts/0", "o": "truncate", "v": 2},
              {"p": "/message/content/parts/0", "o": "append", "v": "cdefgh"}, {"v": "ij"},
              {"p": "/message/status", "o": "replace", "v": "finished_successfully"}, "[DONE]")
    completion, deltas = reduce(raw)
    assert completion.text == "abcdefghij" and deltas == ["abc", "def", "gh", "ij"]


@pytest.mark.parametrize("path, op, value, expected", [
    ("/a/b", "add", 1, {"a": {"b": 1}, "s": "hello", "l": [1, 2, 3]}),
    ("/s", "append", "!", {"s": "hello!", "l": [1, 2, 3]}),
    ("/l", "append", [4], {"s": "hello", "l": [1, 2, 3, 4]}),
    ("/s", "truncate", 2, {"s": "he", "l": [1, 2, 3]}),
    ("/l", "truncate", 1, {"s": "hello", "l": [1]}),
    ("/s", "remove", None, {"l": [1, 2, 3]}),
    ("/l/1", "remove", None, {"s": "hello", "l": [1, 3]}),
    ("/l/1", "replace", 9, {"s": "hello", "l": [1, 9, 3]}),
    ("/l/0", "add", 0, {"s": "hello", "l": [0, 1, 2, 3]}),
    ("", "patch", [{"p": "/s", "o": "append", "v": "!"}, {"p": "/n", "o": "replace", "v": 1}],
     {"s": "hello!", "l": [1, 2, 3], "n": 1}),
])
def test_delta_operations(path, op, value, expected):
    assert apply_operation({"s": "hello", "l": [1, 2, 3]}, path, op, value) == expected


def test_append_to_an_object_merges_keys():
    root = {"message": {"metadata": {"a": 1}}}
    assert apply_operation(root, "/message/metadata", "append", {"b": 2}) == {
        "message": {"metadata": {"a": 1, "b": 2}}}


def test_truncate_on_answer_text_is_followed():
    raw = sse({"p": "", "o": "add", "v": message("", mid="a"), "c": 0},
              {"p": "/message/content/parts/0", "o": "append", "v": "abcdef"},
              {"p": "/message/content/parts/0", "o": "truncate", "v": 3},
              {"p": "/message/status", "o": "replace", "v": "finished_successfully"}, "[DONE]")
    reducer = StreamReducer()
    for event in iter_sse([raw]):
        reducer.feed(event)
    assert reducer.result().text == "abc"


@pytest.mark.parametrize("payload", [
    {"type": "moderation", "moderation_response": {"blocked": True, "flagged": True}},
    {"conversation_id": "c", "message_id": "m", "is_completion": True,
     "moderation_response": {"blocked": True, "flagged": True, "moderation_id": "modr-1"}},
])
def test_blocked_moderation_raises_instead_of_empty_text(payload):
    with pytest.raises(ContentBlocked):
        reduce(sse(payload, "[DONE]"))


def test_unblocked_moderation_is_ignored():
    raw = sse({"type": "moderation", "moderation_response": {"blocked": False, "flagged": False}},
              message("ok", status="finished_successfully", end_turn=True), "[DONE]")
    assert reduce(raw)[0].text == "ok"


@pytest.mark.parametrize("payload", [
    {"message": None, "conversation_id": "c", "error": "Something went wrong"},
    {"detail": {"type": "invalid_request_error", "message": "bad", "code": "x"}},
])
def test_in_stream_error_raises(payload):
    raw = sse(message("partial"), payload, "[DONE]")
    with pytest.raises(UpstreamError) as caught:
        reduce(raw)
    assert caught.value.code == "upstream_stream_error"


def test_non_json_event_raises():
    with pytest.raises(UpstreamError) as caught:
        reduce(b"data: <html>oops</html>\n\n")
    assert caught.value.code == "upstream_bad_stream"


def test_stream_cut_before_done_raises_at_result():
    raw = sse(message("Hel"), message("Hello"))
    reducer = StreamReducer()
    for event in iter_sse([raw]):
        reducer.feed(event)
    with pytest.raises(UpstreamError) as caught:
        reducer.result()
    assert caught.value.code == "upstream_stream_broken"


def test_finished_turn_without_done_is_complete():
    raw = sse(message("Hello", status="finished_successfully", end_turn=True))
    assert reduce(raw)[0].text == "Hello"


def test_max_tokens_is_reported():
    cut = message("long", status="finished_successfully", end_turn=False,
                  metadata={"finish_details": {"type": "max_tokens"}})
    assert reduce(sse(cut, "[DONE]"))[0].finish_type == "max_tokens"


def test_continued_cumulative_message_emits_only_the_new_part():
    raw = sse(message("one two"), message("one two three"),
              message("one two three four", status="finished_successfully", end_turn=True),
              "[DONE]")
    completion, deltas = reduce(raw, prefix="one two")
    assert completion.text == "one two three four"
    assert "".join(deltas) == " three four"


def test_continued_message_that_restarts_is_appended_to_the_prefix():
    raw = sse(message(" three"),
              message(" three four", status="finished_successfully", end_turn=True), "[DONE]")
    completion, deltas = reduce(raw, prefix="one two")
    assert completion.text == "one two three four"
    assert "".join(deltas) == " three four"


def test_a_long_line_in_many_pieces_and_lone_cr_line_ends_decode_identically():
    long = json.dumps(message("word " * 2000))
    raw = f"data: {long}\n\ndata: a\r\rdata: [DONE]\r\r".encode()
    whole = list(iter_sse([raw]))
    assert whole == [SseEvent(None, long), SseEvent(None, "a"), SseEvent(None, "[DONE]")]
    assert list(iter_sse([raw[i:i + 7] for i in range(0, len(raw), 7)])) == whole


def test_an_event_is_yielded_before_the_next_chunk_is_read():
    # "a\r" then "\r": the held "\r" ends the event once a chunk without any line break follows.
    chunks = [b"data: a\r", b"\r", b"data: b", b"\n\n"]
    pulled = []

    def network():
        for chunk in chunks:
            pulled.append(chunk)
            yield chunk

    events = iter_sse(network())
    assert next(events) == SseEvent(None, "a")
    assert pulled == chunks[:3]
    assert list(events) == [SseEvent(None, "b")]


def endless(piece: bytes, count: int):
    for _ in range(count):
        yield piece


@pytest.mark.parametrize("chunks", [
    endless(b"x" * 65536, 10_000),                         # one line that never ends
    endless(b"data: " + b"x" * 65530, 10_000),             # a data line that never ends
    endless(b"data: xxxxxxxx\n", 1_000_000),               # one event of endless short lines
    [b"data: " + b"y" * 3000 + b"\n\n"],                   # one whole line over the cap
])
def test_an_endless_line_or_event_is_cut_at_the_cap(chunks):
    with pytest.raises(UpstreamError) as caught:
        for _ in iter_sse(chunks, max_event=2048):
            pass
    assert caught.value.code == "upstream_bad_answer"


def test_events_within_the_cap_pass():
    events = list(iter_sse([b"data: " + b"y" * 2000 + b"\n\n"] * 3, max_event=2048))
    assert [len(event.data) for event in events] == [2000] * 3


def answer_events(*words) -> list[bytes]:
    """A v1 answer as network chunks, one event each: the opening snapshot, then one word each."""
    return [sse({"p": "", "o": "add", "v": message("", mid="a"), "c": 0}),
            sse({"p": "/message/content/parts/0", "o": "append", "v": words[0]}),
            *(sse({"v": word}) for word in words[1:])]


def test_events_that_arrive_together_are_relayed_as_one_piece():
    chunks = answer_events("a", "b", "c", "d", "e")
    together = [chunks[0] + chunks[1], chunks[2] + chunks[3] + chunks[4], chunks[5],
                sse("[DONE]")]
    reducer = StreamReducer()
    assert [delta.text for delta in relay(together, reducer)] == ["a", "bcd", "e"]
    assert reducer.result().text == "abcde"


def test_a_piece_is_relayed_before_the_next_chunk_is_read():
    read = []

    def network():
        for index, chunk in enumerate([*answer_events("a", "b"), sse("[DONE]")]):
            read.append(index)
            yield chunk

    pieces = relay(network(), StreamReducer())
    assert next(pieces).text == "a" and read == [0, 1]
    assert next(pieces).text == "b" and read == [0, 1, 2]


def test_text_that_came_with_a_failing_event_is_relayed_before_the_failure():
    chunks = answer_events("a", "b")
    broken = chunks[2] + sse({"type": "error", "message": "the model broke down"})
    relayed = []
    with pytest.raises(UpstreamError, match="broke down"):
        for delta in relay([chunks[0] + chunks[1], broken], StreamReducer()):
            relayed.append(delta.text)
    assert relayed == ["a", "b"]


def test_relay_stops_reading_at_done():
    def network():
        yield from answer_events("a")
        yield sse("[DONE]") + sse({"v": "after"})
        raise AssertionError("read past [DONE]")

    assert [delta.text for delta in relay(network(), StreamReducer())] == ["a"]


def test_the_parser_returns_each_event_with_the_chunk_that_completes_it():
    parser = SseParser()
    assert parser.feed(b"event: delta\ndata: {\"v\": 1}\n") == []
    assert parser.feed(b"\ndata: two\n\ndata: th") == [SseEvent("delta", '{"v": 1}'),
                                                       SseEvent(None, "two")]
    assert parser.feed(b"ree") == []
    assert parser.close() == [SseEvent(None, "three")]
