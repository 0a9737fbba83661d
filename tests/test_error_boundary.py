"""One error boundary: errors get their `param` and `status` when they are built, and every face
renders them through api/error_boundary.py."""
from __future__ import annotations

import ast

from chatgpt_web.errors import ApiError, BadRequest
from tests.test_docs_agree import PACKAGE, error_classes


def patched_errors(source: str, classes: set[str]) -> list[int]:
    """Lines that set `.param` or `.status` on a name that was bound to a built error."""
    lines = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        built = set()
        for node in ast.walk(function):
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                    and getattr(node.value.func, "id", None) in classes):
                built.update(target.id for target in node.targets if isinstance(target, ast.Name))
        for node in ast.walk(function):
            if isinstance(node, ast.Assign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                lines.extend(node.lineno for target in targets
                             if isinstance(target, ast.Attribute)
                             and target.attr in ("param", "status")
                             and isinstance(target.value, ast.Name) and target.value.id in built)
    return lines


def test_no_code_patches_param_or_status_onto_a_built_error():
    classes = error_classes()
    patched = {str(path.relative_to(PACKAGE.parent)): lines for path in PACKAGE.rglob("*.py")
               if (lines := patched_errors(path.read_text(encoding="utf-8"), classes))}
    assert patched == {}, "give param=/status= to the constructor instead"


def test_the_check_finds_a_patched_error():
    source = "def f():\n    error = BadRequest('x')\n    error.param = 'model'\n    raise error\n"
    assert patched_errors(source, {"BadRequest"}) == [3]


def test_param_and_status_are_given_at_construction():
    error = BadRequest("bad model", "invalid_field", param="model")
    assert (error.status, error.code, error.param) == (400, "invalid_field", "model")
    assert ApiError("no such method", "method_not_allowed", status=405).status == 405
    assert BadRequest("x").param is None and ApiError.status == 500
