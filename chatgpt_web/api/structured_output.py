"""Structured output, emulated on the web backend: `response_format` becomes an instruction, and the
model's answer is reduced to the JSON it was asked for.

* `{"type": "json_object"}`: the answer must be a JSON object.
* `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`: the answer must be JSON
  valid against `schema` (checked with `jsonschema`). With `strict: true` an answer that does not
  match after the second chance is an error; without it, the JSON is returned as the model wrote
  it, as the official API does for non-strict schemas.
* `{"type": "text"}` (or none): nothing to do.

`OutputFormat.read_answer()` returns the JSON alone, compactly re-encoded, so that `.parse()` in
the SDK and LangChain's parsers see exactly one JSON value, never the prose or the ``` fence
around it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest
from .model_json import InvalidReply, check_schema, find_json, schema_problem

SCHEMA_OPEN, SCHEMA_CLOSE = "<json_schema>", "</json_schema>"


def _bad(message: str, param: str = "response_format") -> BadRequest:
    return BadRequest(message, "invalid_field", param=param)


@dataclass(frozen=True)
class OutputFormat:
    schema: dict | None  # None: any JSON object (json_object)
    strict: bool = False
    name: str = "response"

    @classmethod
    def from_request(cls, raw: Any, param: str = "response_format") -> OutputFormat | None:
        """The format a request asks for, or None for text.

        :raise BadRequest: an unknown type, or a schema that is not a JSON Schema.
        """
        if raw is None:
            return None
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            raise _bad("response_format must be an object with a type", param)
        kind = raw["type"]
        if kind == "text":
            return None
        if kind == "json_object":
            return cls(None)
        if kind != "json_schema":
            raise _bad(f"response_format type {kind!r} is not supported: use text, json_object "
                       "or json_schema", f"{param}.type")
        # Chat Completions nests the schema under "json_schema"; the Responses API does not.
        spec = raw.get("json_schema", raw)
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise _bad("a json_schema response_format needs json_schema.schema (an object)",
                       f"{param}.json_schema")
        problem = check_schema(spec["schema"])
        if problem:
            raise _bad(f"json_schema.schema is not a valid JSON Schema: {problem}",
                       f"{param}.json_schema.schema")
        return cls(spec["schema"], strict=spec.get("strict") is True,
                   name=str(spec.get("name") or "response")[:64])

    def instruction(self) -> str:
        """The system message that asks for the JSON."""
        if self.schema is None:
            return ("Answer with only one JSON object and nothing else: no text before or after "
                    "it, no code fence.")
        return ("Answer with only one JSON value and nothing else (no text before or after it, no "
                "code fence). It must be valid against this JSON Schema:\n"
                f"{SCHEMA_OPEN}\n{json.dumps(self.schema, ensure_ascii=False)}\n{SCHEMA_CLOSE}")

    def read_answer(self, text: str, *, last_chance: bool = False) -> str:
        """The JSON of the answer, re-encoded on its own.

        :raise InvalidReply: no JSON, or (strict, or not yet the last chance) not valid against
            the schema.
        """
        if self.schema is None:
            return json.dumps(find_json(text), ensure_ascii=False)
        value = find_json(text, want=(dict, list))
        problem = schema_problem(value, self.schema)
        if problem and (self.strict or not last_chance):
            raise InvalidReply(f"the JSON does not match the schema: {problem}")
        return json.dumps(value, ensure_ascii=False)
