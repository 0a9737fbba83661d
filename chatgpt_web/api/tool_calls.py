"""Function calling, emulated on the web backend: `tools` become an instruction, and the model's
answer becomes `tool_calls`.

The web backend cannot call a client's functions. So `Tools.instruction()` describes the functions
(name, description, JSON Schema of the parameters) in a system message and asks the model to
answer, when it wants to call some, with only

    {"tool_calls": [{"name": "<function>", "arguments": {...}}]}

`Tools.read_answer()` turns such an answer into OpenAI `tool_calls` (each with a fresh `call_...`
id and its arguments as a JSON string), checking each call: a known function, the one
`tool_choice` names if it names one, arguments valid against the function's schema, at most one
call unless `parallel_tool_calls`. A text answer is a text answer when `tool_choice` is `auto`;
when a call was required it is an InvalidReply, as is any call that fails the checks.

Earlier turns travel back the same way (openai_messages.py): an assistant message's `tool_calls`
become that JSON, and a `tool` message becomes a user message starting with TOOL_RESULT_PREFIX.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest
from .model_json import InvalidReply, check_schema, find_json, schema_problem

MAX_TOOLS = 128
MAX_NAME_LENGTH = 64
TOOL_RESULT_PREFIX = "Tool result"
TOOLS_OPEN, TOOLS_CLOSE = "<tools>", "</tools>"
EMPTY_PARAMETERS = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class Function:
    name: str
    description: str
    parameters: dict


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the official API gives it

    def to_dict(self) -> dict:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


def new_call_id() -> str:
    return "call_" + secrets.token_urlsafe(18)


def call_json(calls: list[tuple[str, Any]]) -> str:
    """The text the model is asked to write for `calls` (name, arguments) (also how earlier
    calls of the history are shown to it)."""
    return json.dumps({"tool_calls": [{"name": name, "arguments": arguments}
                                      for name, arguments in calls]}, ensure_ascii=False)


def tool_result_text(name: str | None, call_id: str | None, content: str) -> str:
    """A `tool` message of the history as the text the model reads."""
    label = ", ".join(part for part in (name, call_id) if part)
    return f"{TOOL_RESULT_PREFIX} ({label}):\n{content}" if label else \
        f"{TOOL_RESULT_PREFIX}:\n{content}"


def _bad(message: str, param: str) -> BadRequest:
    return BadRequest(message, "invalid_field", param=param)


class Tools:
    """The functions of a request, its tool_choice and parallel_tool_calls."""

    def __init__(self, functions: list[Function], choice: str, parallel: bool):
        self.functions = {function.name: function for function in functions}
        self.choice = choice  # "auto", "required", or the one function's name
        self.parallel = parallel

    @classmethod
    def from_request(cls, body: dict) -> Tools | None:
        """The tools of an OpenAI request body (`tools`, or the legacy `functions`), or None when
        there are none or `tool_choice` is "none" (then the model is not told of them).

        :raise BadRequest: malformed tools, a schema that is not a JSON Schema, a choice of an
            unknown function.
        """
        raw, param = body.get("tools"), "tools"
        if raw is None and body.get("functions") is not None:
            raw = [{"type": "function", "function": f} for f in body["functions"]] \
                if isinstance(body["functions"], list) else body["functions"]
            param = "functions"
        if raw is None or raw == []:
            return None
        if not isinstance(raw, list) or len(raw) > MAX_TOOLS:
            raise _bad(f"{param} must be an array of at most {MAX_TOOLS} tools", param)
        functions = [_function(tool, f"{param}[{i}]") for i, tool in enumerate(raw)]
        names = [function.name for function in functions]
        if len(set(names)) != len(names):
            raise _bad("tool names must be unique", param)
        choice = _choice(body.get("tool_choice", body.get("function_call", "auto")), names)
        if choice == "none":
            return None
        parallel = body.get("parallel_tool_calls", True)
        if not isinstance(parallel, bool):
            raise _bad("parallel_tool_calls must be true or false", "parallel_tool_calls")
        return cls(functions, choice, parallel)

    def instruction(self) -> str:
        """The system message that tells the model about the functions."""
        listed = json.dumps([{"name": f.name, "description": f.description,
                              "parameters": f.parameters} for f in self.functions.values()],
                            ensure_ascii=False)
        if self.choice == "auto":
            rule = "Call a function only when you need it to answer; otherwise answer in text."
        elif self.choice == "required":
            rule = "You must call at least one function now."
        else:
            rule = f"You must call the function `{self.choice}` now."
        if not self.parallel:
            rule += " Call at most one function."
        return (
            "You can call the functions listed below as JSON (name, description, and parameters "
            f"as a JSON Schema).\n{TOOLS_OPEN}\n{listed}\n{TOOLS_CLOSE}\n"
            "To call functions, answer with only this JSON object and nothing else:\n"
            + call_json([("<function name>", {"<argument>": "<value>"})]) + "\n"
            f"{rule}\nA message that starts with \"{TOOL_RESULT_PREFIX}\" is the output of a "
            "function you called: use it to answer.")

    def read_answer(self, text: str) -> list[ToolCall] | None:
        """The calls in the model's answer, or None for a text answer.

        :raise InvalidReply: a call is required and the answer has none, or a call is wrong.
        """
        try:
            found = find_json(text, accept=lambda value: "tool_calls" in value)
        except InvalidReply:
            if self.choice == "auto":
                return None
            raise InvalidReply("a function call was required, and the answer calls none") \
                from None
        raw_calls = found["tool_calls"]
        if not isinstance(raw_calls, list) or not raw_calls:
            raise InvalidReply("tool_calls must be a non-empty array")
        if not self.parallel:
            raw_calls = raw_calls[:1]
        return [self._call(raw) for raw in raw_calls]

    def _call(self, raw: Any) -> ToolCall:
        if not isinstance(raw, dict):
            raise InvalidReply("each tool call must be an object with name and arguments")
        name = raw.get("name")
        function = self.functions.get(name) if isinstance(name, str) else None
        if function is None:
            raise InvalidReply(f"there is no function named {name!r}")
        if self.choice not in ("auto", "required") and name != self.choice:
            raise InvalidReply(f"the function to call is {self.choice!r}, not {name!r}")
        arguments = raw.get("arguments", {})
        if isinstance(arguments, str):  # some models write the arguments as a JSON string
            try:
                arguments = json.loads(arguments)
            except ValueError:
                raise InvalidReply(f"the arguments of {name} are not JSON") from None
        if not isinstance(arguments, dict):
            raise InvalidReply(f"the arguments of {name} must be a JSON object")
        problem = schema_problem(arguments, function.parameters)
        if problem:
            raise InvalidReply(f"the arguments of {name} do not match its parameters: {problem}")
        return ToolCall(new_call_id(), name, json.dumps(arguments, ensure_ascii=False))


def _function(tool: Any, param: str) -> Function:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise _bad("each tool must be {\"type\": \"function\", \"function\": {...}}", param)
    spec = tool.get("function", tool)  # the Responses API puts name and parameters at the top
    if not isinstance(spec, dict):
        raise _bad("a tool's function must be an object", f"{param}.function")
    name = spec.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        raise _bad(f"a function needs a name of 1 to {MAX_NAME_LENGTH} characters",
                   f"{param}.function.name")
    description = spec.get("description") or ""
    if not isinstance(description, str):
        raise _bad("a function's description must be a string", f"{param}.function.description")
    parameters = spec.get("parameters") or EMPTY_PARAMETERS
    problem = check_schema(parameters)
    if problem:
        raise _bad(f"the parameters of {name} are not a valid JSON Schema: {problem}",
                   f"{param}.function.parameters")
    return Function(name, description, parameters)


def _choice(raw: Any, names: list[str]) -> str:
    if raw in ("auto", "none", "required"):
        return raw
    if isinstance(raw, dict):
        named = raw.get("function", raw) if raw.get("type", "function") == "function" else {}
        name = named.get("name") if isinstance(named, dict) else None
        if name in names:
            return name
        raise _bad(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")
    raise _bad("tool_choice must be auto, none, required or {\"type\": \"function\", "
               "\"function\": {\"name\": ...}}", "tool_choice")
