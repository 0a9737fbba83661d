"""The emulator's 2026 answer stream, checked frame by frame against docs/protocol.md.

The plain turn goes through the emulator's HTTP route; the hand-off legs are checked as
generators. Texts are read back with the independent mini-client of test_emulator (reduce_v1),
and, for the hand-off, with the service's own reducer fed both legs.
"""
from __future__ import annotations

import json

from chatgpt_web.upstream.stream import StreamReducer, iter_sse
from tests.emulator import Switches, streams
from tests.test_emulator import Chat, answer_of_v1, planned_turn, sse_events


def kinds_of(events) -> list[str]:
    """Each event's `type`, else its `event:` name (`delta`, `delta_encoding`), or [DONE]."""
    kinds = []
    for name, data in events:
        payload = None if data == "[DONE]" else json.loads(data)
        kinds.append(payload.get("type", name) if isinstance(payload, dict) else name or data)
    return kinds


def test_a_plain_turn_is_the_2026_sequence_frame_by_frame(emulator):
    emulator.switches.answer = "Test received! How are you today?"
    emulator.switches.pings = False
    raw = Chat(emulator).send("test", v1=True).content
    assert raw.startswith(b'event: delta_encoding\ndata: "v1"\n\ndata: {"type": '
                          b'"resume_conversation_token", "kind": "topic", "token": ')
    events = sse_events(raw)
    assert kinds_of(events) == [
        "delta_encoding", "resume_conversation_token", "delta", "input_message", "delta",
        "message_marker", "delta", "delta", "delta", "delta", "delta", "delta",
        "message_marker", "title_generation", "server_ste_metadata", "message_stream_complete",
        "conversation_detail_metadata", "[DONE]"]
    frames = [json.loads(data) for _, data in events[1:-1]]
    cid = frames[0]["conversation_id"]
    system, echo, snapshot, first = frames[1], frames[2], frames[3], frames[4]
    assert list(system) == ["p", "o", "v", "c"] and system["c"] == 0
    assert list(system["v"]) == ["message", "conversation_id", "error"]
    assert system["v"]["message"]["metadata"]["is_visually_hidden_from_conversation"] is True
    assert echo["input_message"]["content"]["parts"] == ["test"]
    assert echo["input_message"]["metadata"]["resolved_model_slug"]
    # The assistant snapshot comes without p/o, with the counter 1.
    assert list(snapshot) == ["v", "c"] and snapshot["c"] == 1
    assert list(snapshot["v"]) == ["message", "conversation_id"]
    message = snapshot["v"]["message"]
    assert (message["status"], message["channel"], message["content"]["parts"]) == (
        "in_progress", "final", [""])
    assert first == {"type": "message_marker", "conversation_id": cid,
                     "message_id": message["id"], "marker": "user_visible_token",
                     "event": "first"}
    appends = frames[5:10]
    assert appends[0] == {"p": "/message/content/parts/0", "o": "append", "v": "Test "}
    assert all(list(frame) == ["v"] for frame in appends[1:])
    closing = frames[10]
    assert (closing["p"], closing["o"]) == ("", "patch")
    assert closing["v"] == [
        {"p": "/message/content/parts/0", "o": "append", "v": "today?"},
        {"p": "/message/status", "o": "replace", "v": "finished_successfully"},
        {"p": "/message/end_turn", "o": "replace", "v": True},
        {"p": "/message/metadata", "o": "append",
         "v": {"is_complete": True, "finish_details": {"type": "stop", "stop_tokens": [200002]}}}]
    assert frames[11] == {"type": "message_marker", "marker": "last_token", "event": "last"}
    assert frames[12] == {"type": "title_generation", "title": "test", "conversation_id": cid}
    assert frames[13]["metadata"]["message_id"] == message["id"]
    assert frames[15]["banner_info"] is None and frames[15]["conversation_id"] == cid
    assert answer_of_v1(raw)["content"]["parts"] == ["Test received! How are you today?"]


def test_a_reasoning_turn_thinks_in_the_analysis_channel_then_answers(emulator):
    emulator.switches.reasoning = "The user wants a number."
    emulator.switches.answer = "Forty-two."
    raw = Chat(emulator).send("number?", v1=True).content
    frames = [json.loads(d) for _, d in sse_events(raw) if d not in ("[DONE]", '"v1"')]
    snapshots = [f["v"]["message"] for f in frames if isinstance(f.get("v"), dict)
                 and "message" in f["v"] and f["v"]["message"]["author"]["role"] == "assistant"]
    assert [(m["content"]["content_type"], m["channel"]) for m in snapshots] == [
        ("thoughts", "analysis"), ("reasoning_recap", "analysis"), ("text", "final")]
    markers = [f["marker"] for f in frames if f.get("type") == "message_marker"]
    assert markers == ["cot_token", "final_channel_token", "last_token"]
    completion = reduce_with_the_service(raw)
    assert completion.text == "Forty-two."
    assert completion.reasoning == "Thinking it over\nThe user wants a number."


def test_served_model_and_downgrade_banner(emulator):
    emulator.switches.served_model = "gpt-5-6-t-mini"
    emulator.switches.degraded = True
    raw = Chat(emulator).send("hi", v1=True, model="gpt-5-6-thinking").content
    frames = {f.get("type"): f for f in (json.loads(d) for _, d in sse_events(raw)
                                         if d not in ("[DONE]", '"v1"'))}
    assert frames["server_ste_metadata"]["metadata"]["model_slug"] == "gpt-5-6-t-mini"
    assert frames["conversation_detail_metadata"]["banner_info"]["name"] == \
        "account_sharing_degrade"
    completion = reduce_with_the_service(raw)
    assert completion.model_slug == "gpt-5-6-t-mini"
    assert completion.banner.name == "account_sharing_degrade"


def test_max_tokens_ends_the_patch_with_max_tokens(emulator):
    emulator.switches.answer = "one two three four"
    emulator.switches.max_tokens_cuts = 1
    completion = reduce_with_the_service(Chat(emulator).send("x", v1=True).content)
    assert (completion.text, completion.finish_type) == ("one two ", "max_tokens")


def test_an_in_band_error_ends_the_stream_without_completion(emulator):
    emulator.switches.answer = "one two three four"
    emulator.switches.stream_error = "Something went wrong"
    kinds = kinds_of(sse_events(Chat(emulator).send("x", v1=True).content))
    assert "message_stream_complete" not in kinds and kinds[-1] == "[DONE]"


def reduce_with_the_service(raw: bytes):
    reducer = StreamReducer()
    deltas = []
    for event in iter_sse([raw]):
        deltas += [d.text for d in reducer.feed(event)]
    completion = reducer.result()
    assert "".join(deltas) == completion.text
    return completion


# --- hand-off ---------------------------------------------------------------------------------

def test_the_first_leg_of_a_handoff_offers_both_transports_and_no_text():
    turn = planned_turn("long question")
    raw = b"".join(streams.handoff_leg(turn, "resume-token"))
    events = sse_events(raw)
    assert kinds_of(events) == ["delta_encoding", "resume_conversation_token", "delta",
                                "input_message", "stream_handoff", "[DONE]"]
    handoff = json.loads(events[4][1])
    exchange = turn.assistant["metadata"]["turn_exchange_id"]
    assert handoff == {"type": "stream_handoff", "conversation_id": turn.conversation_id,
                       "turn_exchange_id": exchange, "options": [
                           {"type": "subscribe_ws_topic",
                            "topic_id": f"conversation-turn-{exchange}"},
                           {"type": "resume_sse_endpoint",
                            "topic_id": f"conversation-turn-{exchange}"}]}
    assert "Echo" not in raw.decode()


def test_the_resumed_leg_repeats_the_preamble_and_continues_from_the_offset():
    turn = planned_turn("a b c d e f")
    leg = b"".join(streams.resumed_leg(turn, "resume-token", offset=3))
    kinds = kinds_of(sse_events(leg))
    assert kinds[:4] == ["delta_encoding", "resume_conversation_token", "delta", "input_message"]
    snapshot = json.loads(sse_events(leg)[4][1])["v"]["message"]
    assert snapshot["content"]["parts"] == ["Echo: a b "]  # three frames folded in
    assert answer_of_v1(leg)["content"]["parts"] == ["Echo: a b c d e f"]


def test_the_service_reducer_follows_both_legs_into_one_answer():
    turn = planned_turn("a b c d e f", Switches(reasoning="hmm"))
    reducer = StreamReducer()
    for event in iter_sse([b"".join(streams.handoff_leg(turn, "t"))]):
        assert reducer.feed(event) == []
    assert reducer.handoff_pending and reducer.handoff.offers("resume_sse_endpoint")
    reducer.resume_leg()
    deltas = []
    for event in iter_sse([b"".join(streams.resumed_leg(turn, "t", offset=0))]):
        deltas += [d.text for d in reducer.feed(event)]
    completion = reducer.result()
    assert completion.text == "".join(deltas) == "Echo: a b c d e f"
    assert completion.reasoning == "Thinking it over\nhmm"


# --- the model list ----------------------------------------------------------------------------

def test_the_model_list_has_the_2026_shape_and_slugs(emulator):
    chat = Chat(emulator)
    listing = chat.session.get(f"{chat.root}/models", headers=chat.auth()).json()
    assert listing["default_model_slug"] == "auto" and "categories" not in listing
    slugs = [model["slug"] for model in listing["models"]]
    assert {"auto", "gpt-5-6", "gpt-5-6-thinking", "gpt-6", "gpt-6-thinking"} <= set(slugs)
    emulator.switches.dialect = "2024"
    emulator.switches.extra_models = ("gpt-7-preview",)
    old = chat.session.get(f"{chat.root}/models", headers=chat.auth()).json()
    assert old["categories"][0]["default_model"] == "auto" and "default_model_slug" not in old
    assert old["models"][-1]["slug"] == "gpt-7-preview"
