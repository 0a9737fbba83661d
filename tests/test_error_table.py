"""README's error table lists every code the service can answer with.

The codes are collected from the source: the code argument of every error raised, the class
defaults, and the translation tables of upstream/errors.py. A new code without a README row fails.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ERROR_CLASSES = {"ApiError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "Conflict",
                 "PayloadTooLarge", "RateLimited", "UpstreamError", "ServiceUnavailable",
                 "UpstreamTimeout", "ContentBlocked"}
CODE = re.compile(r"[a-z]+(_[a-z0-9]+)+|[a-z]+")


def _string(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def emitted_codes() -> set[str]:
    codes = set()
    for path in (ROOT / "chatgpt_web").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if name in ERROR_CLASSES:
                    argument = node.args[1] if len(node.args) > 1 else next(
                        (k.value for k in node.keywords if k.arg == "code"), None)
                    codes.add(_string(argument))
            elif isinstance(node, ast.ClassDef):
                for statement in node.body:
                    if isinstance(statement, ast.Assign) and any(
                            getattr(t, "id", None) == "code" for t in statement.targets):
                        codes.add(_string(statement.value))
            elif isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "").endswith(
                    ("_STATUS_TABLE", "_CODE_TABLE", "_LOGIN_TABLE")):
                table = node.value
                if getattr(node.target, "id", "") == "_LOGIN_TABLE":
                    codes.update(_string(key) for key in table.keys)
                else:
                    codes.update(_string(value.elts[1]) for value in table.values)
    return {code for code in codes if code and CODE.fullmatch(code)}


def readme_codes() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## Errors")
    section = readme[start:readme.index("\n## ", start + 5)]
    return set(re.findall(r"`([a-z_0-9]+)`", section))


def test_every_emitted_code_has_a_row_in_the_readme():
    codes = emitted_codes()
    assert {"upstream_sentinel_rejected", "upstream_bad_request", "sentinel_required",
            "token_expired", "invalid_credentials"} <= codes  # the scan finds all three kinds
    assert sorted(codes - readme_codes()) == []
