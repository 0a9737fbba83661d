"""stop and max_tokens on streamed text, and reading JSON out of a model's prose (pure)."""
from __future__ import annotations

import pytest

from chatgpt_web.api.answer_limits import AnswerCutter, cut_text, stop_sequences
from chatgpt_web.api.model_json import InvalidReply, find_json
from chatgpt_web.api.structured_output import OutputFormat
from chatgpt_web.api.tool_calls import Tools
from chatgpt_web.errors import BadRequest


def words(text: str) -> int:
    return len(text.split())


def feed_all(cutter: AnswerCutter, pieces) -> str:
    return "".join(cutter.feed(piece) for piece in pieces) + cutter.finish()


def test_a_stop_sequence_split_across_pieces_is_never_sent():
    cutter = AnswerCutter(stops=("STOP",))
    sent = [cutter.feed(piece) for piece in ("abc S", "T", "OP tail")]
    assert "".join(sent) == "abc " and cutter.finish_reason == "stop"
    assert cutter.done and cutter.feed("more") == ""


def test_held_back_text_is_released_when_no_stop_follows():
    cutter = AnswerCutter(stops=("STOP",))
    assert feed_all(cutter, ["abc S", "TO", "p!"]) == "abc STOp!"
    assert cutter.finish_reason is None


def test_the_earliest_of_several_stops_wins():
    assert cut_text("a. b! c", ("!", "."), None, words) == ("a", "stop")


def test_max_tokens_cuts_at_the_longest_prefix_within_the_limit():
    cutter = AnswerCutter(max_tokens=2, count_tokens=words)
    assert feed_all(cutter, ["one two", " three four"]) == "one two "
    assert cutter.finish_reason == "length"


def test_no_limits_change_nothing():
    assert cut_text("whole answer", (), None, words) == ("whole answer", None)


def test_json_is_found_inside_prose_and_fences():
    assert find_json('Sure:\n```json\n{"a": [1, {"b": 2}]}\n```\nDone.') == {"a": [1, {"b": 2}]}
    assert find_json("x {not json} then [1,2]", want=(dict, list)) == [1, 2]
    with pytest.raises(InvalidReply):
        find_json("no json here")


def test_structured_output_keeps_only_the_json():
    output = OutputFormat.from_request({"type": "json_schema", "json_schema": {
        "name": "p", "strict": True, "schema": {"type": "object", "required": ["x"],
                                                "properties": {"x": {"type": "integer"}}}}})
    assert output.read_answer('Here: {"x": 3} hope it helps') == '{"x": 3}'
    with pytest.raises(InvalidReply, match="x"):
        output.read_answer('{"x": "three"}', last_chance=True)


def test_tool_calls_are_checked_against_the_function_and_its_schema():
    tools = Tools.from_request({"tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "required": ["n"],
                                    "properties": {"n": {"type": "integer"}}}}}],
        "tool_choice": "required"})
    [call] = tools.read_answer('{"tool_calls": [{"name": "f", "arguments": "{\\"n\\": 2}"}]}')
    assert call.name == "f" and call.arguments == '{"n": 2}'
    for wrong in ('{"tool_calls": [{"name": "g", "arguments": {}}]}',
                  '{"tool_calls": [{"name": "f", "arguments": {"n": "two"}}]}',
                  "no call at all"):
        with pytest.raises(InvalidReply):
            tools.read_answer(wrong)


def test_stop_accepts_a_string_a_list_or_nothing():
    assert stop_sequences(None) == stop_sequences("") == stop_sequences([]) == ()
    assert stop_sequences("x") == ("x",) and stop_sequences(["a", "b"]) == ("a", "b")
    for bad in (5, [""], ["a"] * 5, ["x" * 201]):
        with pytest.raises(BadRequest):
            stop_sequences(bad)
