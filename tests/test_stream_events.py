"""The 2026 stream grammar: typed frames, sticky deltas, reasoning, hand-off, linear work.

Streams here are written out frame by frame in the shape docs/protocol.md gives, so each test
reads as the stream it specifies. No server is involved: bytes in, text and metadata out.
"""
from __future__ import annotations

import json
import sys

import pytest

from chatgpt_web.errors import ContentBlocked, RateLimited, UpstreamError
from chatgpt_web.upstream import stream as stream_module
from chatgpt_web.upstream.stream import Banner, HandoffOption, StreamReducer, iter_sse

CID = "69544e47-48c8-832c-a76e-8593ef78f119"


def frame(payload, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"{head}data: {data}\n\n".encode()


def delta(payload) -> bytes:
    return frame(payload, "delta")


def message(mid, role="assistant", text="", *, status="in_progress", channel="final",
            content_type="text", **metadata):
    return {"id": mid, "author": {"role": role, "name": None, "metadata": {}},
            "content": {"content_type": content_type, "parts": [text]}, "status": status,
            "end_turn": None, "weight": 1.0, "metadata": dict(metadata), "recipient": "all",
            "channel": channel}


def envelope(msg) -> dict:
    return {"message": msg, "conversation_id": CID, "error": None}


HEADER = frame('"v1"', "delta_encoding")
RESUME_TOKEN = frame({"type": "resume_conversation_token", "kind": "topic",
                      "token": "eyJhbGciOiJFUzI1NiJ9.e30.sig", "conversation_id": CID})
SYSTEM = delta({"p": "", "o": "add", "c": 0, "v": envelope(
    message("sys", "system", status="finished_successfully", channel=None,
            is_visually_hidden_from_conversation=True))})
INPUT = frame({"type": "input_message", "conversation_id": CID, "input_message": message(
    "user-1", "user", "what is the secret?", status="finished_successfully",
    resolved_model_slug="gpt-5-6")})
ASSISTANT = delta({"v": envelope(message("answer-1", model_slug="gpt-5-6")), "c": 1})
FIRST_MARK = frame({"type": "message_marker", "conversation_id": CID, "message_id": "answer-1",
                    "marker": "user_visible_token", "event": "first"})
CLOSE = delta({"p": "", "o": "patch", "v": [
    {"p": "/message/content/parts/0", "o": "append", "v": " today?"},
    {"p": "/message/status", "o": "replace", "v": "finished_successfully"},
    {"p": "/message/end_turn", "o": "replace", "v": True},
    {"p": "/message/metadata", "o": "append",
     "v": {"is_complete": True, "finish_details": {"type": "stop", "stop_tokens": [200002]}}}]})
TAIL = (frame({"type": "message_marker", "marker": "last_token", "event": "last"})
        + frame({"type": "title_generation", "title": "Secret question", "conversation_id": CID})
        + frame({"type": "server_ste_metadata", "conversation_id": CID,
                 "metadata": {"model_slug": "gpt-5-6-t-mini", "plan_type": "free",
                              "turn_exchange_id": "tx-1"}})
        + frame({"type": "message_stream_complete", "conversation_id": CID}))
DETAIL = frame({"type": "conversation_detail_metadata", "conversation_id": CID,
                "banner_info": None, "blocked_features": [], "model_limits": [],
                "default_model_slug": "auto"})
DONE = frame("[DONE]")


def plain_turn(detail: bytes = DETAIL) -> bytes:
    return (HEADER + RESUME_TOKEN + SYSTEM + INPUT + ASSISTANT + FIRST_MARK
            + delta({"p": "/message/content/parts/0", "o": "append", "v": "How"})
            + delta({"v": " are"}) + delta({"v": " you"}) + CLOSE + TAIL + detail + DONE)


def run(raw: bytes, reducer: StreamReducer | None = None, pieces: int = 7):
    """Feed `raw` cut into `pieces`-byte chunks; the deltas and the reducer."""
    reducer = reducer or StreamReducer()
    deltas = []
    for event in iter_sse(raw[i:i + pieces] for i in range(0, len(raw), pieces)):
        deltas += [d.text for d in reducer.feed(event)]
    return deltas, reducer


# --- the plain 2026 turn -------------------------------------------------------------------------

def test_a_2026_turn_reduces_to_its_answer_and_keeps_what_the_upstream_said():
    deltas, reducer = run(plain_turn())
    completion = reducer.result()
    assert completion.text == "How are you today?" == "".join(deltas)
    assert completion.conversation_id == CID and completion.message_id == "answer-1"
    assert completion.finish_type == "stop"
    assert completion.title == "Secret question"
    # The model that answered is the one server_ste_metadata names, not the one asked.
    assert completion.model_slug == "gpt-5-6-t-mini"
    assert completion.banner is None and completion.reasoning is None
    assert reducer.encoding == "v1"
    assert reducer.resume_token == "eyJhbGciOiJFUzI1NiJ9.e30.sig"
    assert "what is the secret" not in completion.text  # input_message is the user's echo


def test_the_downgrade_banner_is_kept():
    detail = frame({"type": "conversation_detail_metadata", "conversation_id": CID,
                    "banner_info": {"name": "account_sharing_degrade", "title": "Limited",
                                    "resets_after": "2026-12-05T00:00:00Z"}})
    completion = run(plain_turn(detail))[1].result()
    assert completion.banner == Banner("account_sharing_degrade", "Limited",
                                       "2026-12-05T00:00:00Z")


def test_without_server_metadata_the_message_names_the_model():
    raw = plain_turn().replace(b"server_ste_metadata", b"server_ste_other")
    assert run(raw)[1].result().model_slug == "gpt-5-6"


def test_async_status_is_recorded():
    raw = frame({"type": "conversation_async_status", "conversation_id": CID,
                 "async_status": 7}) + plain_turn()
    assert run(raw)[1].async_status == 7


# --- sticky deltas and the message counter -------------------------------------------------------

def test_bare_v_frames_reuse_path_and_op_and_c_selects_the_message():
    raw = (HEADER + delta({"v": envelope(message("a", text="one")), "c": 0})
           + delta({"v": envelope(message("b", channel="analysis")), "c": 1})
           + delta({"p": "/message/content/parts/0", "o": "append", "v": "thinking"})
           + delta({"v": " more"})          # still message 1 (reasoning)
           + delta({"c": 0})                # a bare counter frame moves back to message 0
           + delta({"p": "/message/content/parts/0", "o": "append", "v": " two"})
           + delta({"v": " three"})
           + delta({"p": "/message/status", "o": "replace", "v": "finished_successfully"})
           + DONE)
    deltas, reducer = run(raw)
    completion = reducer.result()
    assert completion.text == "one two three" == "".join(deltas)
    assert completion.reasoning == "thinking more"


def test_a_snapshot_without_p_and_o_after_appends_is_a_new_message_not_an_append():
    raw = (delta({"p": "", "o": "add", "v": envelope(message("a")), "c": 0})
           + delta({"p": "/message/content/parts/0", "o": "append", "v": "first"})
           + delta({"v": envelope(message("b", text="second")), "c": 1})
           + delta({"v": " part"}) + DONE)
    deltas, reducer = run(raw)
    assert reducer.result().text == "first\n\nsecond part" == "".join(deltas)


def test_patch_batches_apply_in_order_to_the_current_message():
    raw = (ASSISTANT + delta({"p": "", "o": "patch", "v": [
        {"p": "/message/content/parts/0", "o": "append", "v": "a"},
        {"p": "/message/content/parts/0", "o": "append", "v": "b"},
        {"p": "/message/metadata/finish_details", "o": "replace", "v": {"type": "max_tokens"}},
        {"p": "/message/status", "o": "replace", "v": "finished_successfully"}]}) + DONE)
    deltas, reducer = run(raw)
    assert deltas == ["a", "b"]
    assert reducer.result().finish_type == "max_tokens"


# --- reasoning -----------------------------------------------------------------------------------

def test_reasoning_never_reaches_the_answer_and_is_kept_apart():
    thoughts = message("think", content_type="thoughts", channel="analysis")
    thoughts["content"] = {"content_type": "thoughts", "thoughts": [
        {"summary": "Reading the question", "content": "The user asks", "finished": False}],
        "source_analysis_msg_id": "x"}
    recap = message("recap", content_type="reasoning_recap", channel="analysis")
    recap["content"] = {"content_type": "reasoning_recap", "content": "Thought for 3s"}
    raw = (HEADER + SYSTEM + delta({"v": envelope(thoughts), "c": 1})
           + frame({"type": "message_marker", "conversation_id": CID, "message_id": "think",
                    "marker": "cot_token", "event": "first"})
           + delta({"p": "/message/content/thoughts/0/content", "o": "append", "v": " a riddle."})
           + delta({"v": " Easy."})
           + delta({"v": envelope(recap), "c": 2})
           + delta({"v": envelope(message("plain-cot", channel=None)), "c": 3})
           + frame({"type": "message_marker", "conversation_id": CID, "message_id": "plain-cot",
                    "marker": "cot_token", "event": "first"})
           + delta({"p": "/message/content/parts/0", "o": "append", "v": "hidden steps"})
           + delta({"v": envelope(message("final", channel="final")), "c": 4})
           + frame({"type": "message_marker", "conversation_id": CID, "message_id": "final",
                    "marker": "final_channel_token", "event": "first"})
           + delta({"p": "/message/content/parts/0", "o": "append", "v": "Forty-two."})
           + delta({"p": "/message/status", "o": "replace", "v": "finished_successfully"})
           + DONE)
    deltas, reducer = run(raw)
    completion = reducer.result()
    assert completion.text == "Forty-two." == "".join(deltas)
    assert completion.message_id == "final"
    assert completion.reasoning == ("Reading the question\nThe user asks a riddle. Easy."
                                    "\n\nhidden steps")


# --- errors and moderation -----------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    {"type": "error", "message": "Something went wrong", "conversation_id": CID},
    {"type": "conversation_error", "detail": "Error in message stream", "conversation_id": CID},
    {"type": "error", "error": {"message": "bad", "code": "x"}},
])
def test_in_band_error_frames_end_the_answer_with_a_stream_error(payload):
    raw = ASSISTANT + delta({"p": "/message/content/parts/0", "o": "append", "v": "par"}) \
        + frame(payload) + DONE
    with pytest.raises(UpstreamError) as caught:
        run(raw)
    assert caught.value.code == "upstream_stream_error"


def test_an_in_band_usage_limit_is_a_rate_limit():
    raw = ASSISTANT + frame({"type": "error", "error_code": "usage_limit",
                             "message": "You've hit your limit. Please try again later."})
    with pytest.raises(RateLimited) as caught:
        run(raw)
    assert caught.value.code == "upstream_rate_limited"


def test_an_error_inside_a_snapshot_is_reported():
    raw = delta({"p": "", "o": "add", "c": 1,
                 "v": {"message": None, "conversation_id": CID, "error": "Too many requests"}})
    with pytest.raises(UpstreamError, match="Too many requests"):
        run(raw)


def test_a_blocked_moderation_frame_withholds_the_answer():
    raw = HEADER + SYSTEM + INPUT + frame({
        "type": "moderation", "conversation_id": CID, "message_id": "user-1",
        "is_completion": False, "moderation_response": {"flagged": True, "blocked": True}})
    with pytest.raises(ContentBlocked):
        run(raw)


# --- hand-off ------------------------------------------------------------------------------------

HANDOFF = frame({"type": "stream_handoff", "conversation_id": CID, "turn_exchange_id": "tx-9",
                 "options": [{"type": "subscribe_ws_topic", "topic_id": "conversation-turn-tx-9"},
                             {"type": "resume_sse_endpoint",
                              "topic_id": "conversation-turn-tx-9"}]})
FIRST_LEG = (HEADER + RESUME_TOKEN + SYSTEM + INPUT + ASSISTANT + HANDOFF
             + frame({"type": "message_stream_complete", "conversation_id": CID}) + DONE)


def test_a_handed_off_stream_is_not_complete_and_says_where_the_answer_went():
    deltas, reducer = run(FIRST_LEG)
    assert deltas == [] and not reducer.done and reducer.handoff_pending
    assert reducer.handoff.conversation_id == CID
    assert reducer.handoff.turn_exchange_id == "tx-9"
    assert reducer.handoff.options == (
        HandoffOption("subscribe_ws_topic", "conversation-turn-tx-9"),
        HandoffOption("resume_sse_endpoint", "conversation-turn-tx-9"))
    assert reducer.handoff.offers("resume_sse_endpoint")
    with pytest.raises(UpstreamError) as caught:
        reducer.result()
    assert caught.value.code == "upstream_stream_broken"


def test_a_handoff_is_incomplete_even_when_the_first_leg_had_text():
    raw = (ASSISTANT + delta({"p": "/message/content/parts/0", "o": "append", "v": "Hi"})
           + delta({"p": "/message/status", "o": "replace", "v": "finished_successfully"})
           + HANDOFF + DONE)
    with pytest.raises(UpstreamError):
        run(raw)[1].result()


def test_the_resumed_leg_repeats_the_preamble_and_the_answer_is_emitted_once():
    deltas, reducer = run(FIRST_LEG + delta({"p": "/message/content/parts/0", "o": "append",
                                             "v": "Early"}))
    assert deltas == []  # events after [DONE] of a handed-off leg wait for resume_leg()
    reducer.resume_leg()
    text_so_far = envelope(message("answer-1", text="How", model_slug="gpt-5-6"))
    resumed = (HEADER + RESUME_TOKEN + SYSTEM + INPUT + HANDOFF  # the preamble, again
               + delta({"v": text_so_far, "c": 1})
               + delta({"p": "/message/content/parts/0", "o": "append", "v": " are"})
               + delta({"v": " you"}) + CLOSE + TAIL + DONE)
    more, reducer = run(resumed, reducer)
    assert more == ["How", " are", " you", " today?"]
    assert reducer.done and not reducer.handoff_pending
    assert reducer.result().text == "How are you today?"


def test_a_resumed_snapshot_repeating_text_already_sent_emits_nothing_twice():
    first = ASSISTANT + delta({"p": "/message/content/parts/0", "o": "append", "v": "How"})
    deltas, reducer = run(first)
    again = delta({"v": envelope(message("answer-1", text="How"))}) + delta(
        {"p": "/message/content/parts/0", "o": "append", "v": " now"}) + CLOSE + DONE
    more, reducer = run(again, reducer)
    assert deltas + more == ["How", " now", " today?"]


# --- linear work ---------------------------------------------------------------------------------

def traced_lines(raw: bytes) -> int:
    """Python lines executed inside the stream module while reducing `raw` (deterministic)."""
    count = 0
    module_file = stream_module.__file__

    def local(frame_, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def tracer(frame_, event, arg):
        return local if frame_.f_code.co_filename == module_file else None

    events = list(iter_sse([raw]))
    reducer = StreamReducer()
    sys.settrace(tracer)
    try:
        for event in events:
            reducer.feed(event)
    finally:
        sys.settrace(None)
    reducer.result()
    return count


def many_messages(n: int) -> bytes:
    """A hostile upstream: n assistant messages (issue: 20,000 of them took 58 s)."""
    raw = b"".join(delta({"v": envelope(message(f"m{i}", text=f"w{i}")), "c": i})
                   for i in range(n))
    return raw + DONE


def many_appends(n: int) -> bytes:
    return (ASSISTANT + b"".join(delta({"p": "/message/content/parts/0", "o": "append",
                                        "v": "word "}) for _ in range(n))
            + frame({"type": "message_marker", "marker": "last_token"}) * n + CLOSE + DONE)


def many_bare_appends(n: int) -> bytes:
    """The common 2026 case: one path and op, then bare `{"v": "..."}` deltas."""
    return (ASSISTANT + delta({"p": "/message/content/parts/0", "o": "append", "v": "A"})
            + b"".join(delta({"v": " word"}) for _ in range(n)) + CLOSE + DONE)


@pytest.mark.parametrize("stream_of", [many_messages, many_appends, many_bare_appends])
def test_reducing_four_times_the_events_costs_four_times_the_work(stream_of):
    small, large = traced_lines(stream_of(300)), traced_lines(stream_of(1200))
    # Linear work gives a ratio of 4; re-walking every message (or the text) on every event,
    # as the reducer once did, gives about 16.
    assert large / small < 4.5


def test_a_stream_that_keeps_rewriting_its_text_is_refused():
    # Truncating by one character and appending one re-reads the whole text each time: the
    # reducer allows a bounded amount of such re-reading, then gives up.
    head = ASSISTANT + delta({"p": "/message/content/parts/0", "o": "append", "v": "x" * 200_000})
    churn = (delta({"p": "/message/content/parts/0", "o": "truncate", "v": 199_999})
             + delta({"p": "/message/content/parts/0", "o": "append", "v": "y"})) * 200
    with pytest.raises(UpstreamError) as caught:
        run(head + churn + DONE, pieces=1 << 16)
    assert caught.value.code == "upstream_bad_stream"
