"""Reading request fields the same way from form-urlencoded, multipart and JSON bodies.

Each reader's BadRequest names the field as its `param` (shown by the OpenAI-compatible face).
"""
from __future__ import annotations

import re

from flask import request

from ..errors import BadRequest

_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def read_fields() -> dict:
    """The request's fields as a dict: JSON object body, else form (urlencoded or multipart)."""
    if request.is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise BadRequest("the JSON body must be an object", "invalid_json")
        return data
    return request.form.to_dict()


def text(fields: dict, name: str, *, required: bool = False, max_length: int = 4096) -> str | None:
    """A string field; empty counts as absent. :raise BadRequest: missing, not text or too long."""
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise BadRequest(f"the field '{name}' is required", "missing_field", param=name)
        return None
    if not isinstance(value, str):
        raise BadRequest(f"the field '{name}' must be a string", "invalid_field", param=name)
    if len(value) > max_length:
        raise BadRequest(f"the field '{name}' is too long", "invalid_field", param=name)
    return value


def identifier(fields: dict, name: str) -> str | None:
    """An upstream id (conversation or message id): letters, digits, '-' and '_' only."""
    value = text(fields, name)
    if value is not None and not _ID.match(value):
        raise BadRequest(f"the field '{name}' is not a valid id", "invalid_field", param=name)
    return value


def flag(fields: dict, name: str, default: bool = False) -> bool:
    """A boolean field given as true/false, 1/0, yes/no."""
    value = fields.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise BadRequest(f"the field '{name}' must be true or false", "invalid_field", param=name)


def number(fields: dict, name: str, *, minimum: float, maximum: float) -> float | None:
    """A number field within [minimum, maximum]."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        number_value = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"the field '{name}' must be a number", "invalid_field",
                         param=name) from None
    if not minimum <= number_value <= maximum:
        raise BadRequest(f"the field '{name}' must be between {minimum:g} and {maximum:g}",
                         "invalid_field", param=name)
    return number_value
