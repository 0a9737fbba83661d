"""JSON out of a model's text answer, and its check against a JSON Schema.

The web backend has no JSON mode and no function calling: the model is asked in words to answer
with JSON (tool_calls.py, structured_output.py), and what it writes is prose that should contain
that JSON, often inside a ```json fence. `find_json()` finds the first JSON value in such a text;
`schema_problem()` says in one line what is wrong with a value against a schema (jsonschema), or
None. Both are pure: their tests need no server.

jsonschema (with referencing, rpds and attrs: about 3 MB in each worker) is imported by
`_jsonschema()` when the first schema arrives, not with the app: most requests bring none, and a
service that is never asked for tools or structured output never holds it (README "Memory").
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema

MAX_PROBLEM_LENGTH = 300


class InvalidReply(ValueError):
    """The model's answer is not what it was asked for; the message says what is wrong (and is
    sent back to the model when it gets its second chance)."""


_decoder = json.JSONDecoder()


def _jsonschema():
    """The jsonschema module, imported here at the first schema this process checks."""
    import jsonschema

    return jsonschema


def find_json(text: str, *, want=(dict,), accept=lambda value: True) -> Any:
    """The first JSON value in `text` of a type in `want` for which `accept(value)` is true.

    :raise InvalidReply: no such value.
    """
    for index, char in enumerate(text):
        if char not in "{[":
            continue
        try:
            value, _ = _decoder.raw_decode(text, index)
        except ValueError:
            continue
        if isinstance(value, want) and accept(value):
            return value
    raise InvalidReply("the answer holds no JSON " + ("object" if want == (dict,) else "value"))


def check_schema(schema: Any) -> str | None:
    """What is wrong with `schema` as a JSON Schema, or None."""
    if not isinstance(schema, dict):
        return "a JSON Schema must be an object"
    jsonschema = _jsonschema()
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as error:
        return _short(error)
    return None


def schema_problem(value: Any, schema: dict) -> str | None:
    """What is wrong with `value` against `schema` (the most relevant error), or None."""
    jsonschema = _jsonschema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    return None if error is None else _short(error)


def _short(error: jsonschema.ValidationError | jsonschema.SchemaError) -> str:
    where = "/".join(str(part) for part in error.absolute_path)
    text = f"at /{where}: {error.message}" if where else error.message
    return text[:MAX_PROBLEM_LENGTH]
