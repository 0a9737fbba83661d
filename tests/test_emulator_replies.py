"""The emulated model's answers to tool and JSON instructions (tests/emulator/replies.py)."""
from __future__ import annotations

import json

from tests.emulator.replies import scripted_answer

TOOLS = ('<tools>\n[{"name": "lookup", "description": "", "parameters": {"type": "object", '
         '"properties": {"q": {"type": "string"}, "k": {"type": "integer"}}}}]\n</tools>')


def message(role, text):
    return {"author": {"role": role}, "content": {"content_type": "text", "parts": [text]}}


def fenced_json(text):
    assert text.startswith("```json\n") and text.endswith("\n```")
    return json.loads(text[8:-4])


def test_plain_messages_get_no_scripted_answer():
    assert scripted_answer([message("user", "hello")]) is None


def test_a_mentioned_tool_is_called_with_arguments_from_the_prompt():
    answer = scripted_answer([message("system", TOOLS), message("user", "lookup q=cats")])
    assert fenced_json(answer) == {"tool_calls": [{"name": "lookup",
                                                   "arguments": {"q": "cats", "k": 1}}]}


def test_a_required_call_is_made_even_unasked_and_results_are_acknowledged():
    system = TOOLS + "\nYou must call at least one function now."
    assert fenced_json(scripted_answer([message("system", system), message("user", "hi")]))
    result = [message("user", "Tool result (call_1):\n42")]
    assert scripted_answer(result) == "Result: 42"


def test_a_schema_gets_an_instance():
    system = ('<json_schema>\n{"type": "object", "properties": {"ok": {"type": "boolean"}, '
              '"tags": {"type": "array", "items": {"enum": ["x", "y"]}}}}\n</json_schema>')
    answer = scripted_answer([message("system", system), message("user", "go")])
    assert fenced_json(answer) == {"ok": True, "tags": ["x"]}
