"""How the emulated model follows the service's tool and JSON instructions, deterministically.

A real model reads the system message that asks it to call functions (`<tools>` ... `</tools>`)
or to answer with JSON (`<json_schema>` ... `</json_schema>`, or "only one JSON object") and
does so, usually inside a ```json fence. This module does the same from the turn's messages:

* the last message is a function's result ("Tool result ..."): answer `Result: <its text>`;
* tools are offered: call the function `tool_choice` names, else the functions whose names the
  last user message mentions (all of them, unless told to call at most one), else the first one
  when a call is required; otherwise answer normally;
* a JSON Schema is given: answer an instance of it; a plain JSON object is asked: answer
  `{"answer": "Echo: <last user message>"}`.

Arguments and instances are built from the schema: for each property, a `name=value` pair in the
last user message gives the value (JSON if it parses, else the text), otherwise an example of the
property's type (its first enum value, "example", 1, true...). Anything else returns None, and the
turn answers as usual.
"""
from __future__ import annotations

import json
import re

_TOOLS = re.compile(r"<tools>\s*(.*?)\s*</tools>", re.S)
_SCHEMA = re.compile(r"<json_schema>\s*(.*?)\s*</json_schema>", re.S)
_MUST_CALL = re.compile(r"You must call the function `([^`]+)`")
_PAIR = re.compile(r"(\w+)=(\"[^\"]*\"|\S+)")


def _text(message: dict) -> str:
    return "\n".join(p for p in message["content"]["parts"] if isinstance(p, str))


def _fenced(value) -> str:
    return "```json\n" + json.dumps(value) + "\n```"


def _example(schema: dict, pairs: dict, name: str | None = None):
    if name is not None and name in pairs:
        return pairs[name]
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if "anyOf" in schema:
        return _example(schema["anyOf"][0], pairs)
    if kind == "object" or "properties" in schema:
        return {key: _example(sub, pairs, key)
                for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_example(schema.get("items", {}), pairs)]
    return {"string": "example", "integer": 1, "number": 1.5, "boolean": True,
            "null": None}.get(kind, "example")


def _pairs(text: str) -> dict:
    pairs = {}
    for key, raw in _PAIR.findall(text):
        try:
            pairs[key] = json.loads(raw)
        except ValueError:
            pairs[key] = raw
    return pairs


def scripted_answer(messages: list[dict]) -> str | None:
    """The answer to the turn's messages when they hold a tool or JSON instruction, else None."""
    if not messages:
        return None
    system = "\n".join(_text(m) for m in messages if m["author"]["role"] == "system")
    users = [_text(m) for m in messages if m["author"]["role"] == "user"]
    last = users[-1] if users else ""
    if last.startswith("Tool result"):
        return "Result: " + last.split("\n", 1)[-1]
    pairs = _pairs(last)
    tools = _TOOLS.search(system)
    if tools:
        functions = {f["name"]: f for f in json.loads(tools.group(1))}
        must = _MUST_CALL.search(system)
        if must:
            chosen = [must.group(1)]
        else:
            chosen = [name for name in functions if name in last]
            if "Call at most one function" in system:
                chosen = chosen[:1]
            if not chosen and "You must call at least one function" in system:
                chosen = list(functions)[:1]
        if chosen:
            return _fenced({"tool_calls": [
                {"name": name, "arguments": _example(functions[name]["parameters"], pairs)}
                for name in chosen]})
    schema = _SCHEMA.search(system)
    if schema:
        return _fenced(_example(json.loads(schema.group(1)), pairs))
    if "only one JSON object" in system:
        return _fenced({"answer": f"Echo: {last}"})
    return None
