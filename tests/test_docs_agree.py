"""README, .env.example and the code agree: every error code the service can emit and every
environment variable it reads is documented. Both lists are found in the source mechanically, so
a new code or variable fails here until README (and .env.example) name it.
"""
from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

from chatgpt_web.config import variables

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "chatgpt_web"
README = (REPO / "README.md").read_text(encoding="utf-8")
# Standard variables of the platform, read for defaults, not settings of ours.
PLATFORM_VARIABLES = {"TMPDIR", "TEMP", "TMP", "HOME", "PATH"}


@functools.cache
def package_nodes() -> tuple[ast.AST, ...]:
    """Every node of every module of the package, parsed and walked once for all the scans."""
    return tuple(node for path in PACKAGE.rglob("*.py")
                 for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))


def error_classes() -> set[str]:
    """Names of every ApiError subclass defined in the package (not only in errors.py)."""
    names = {"ApiError"}
    changed = True
    classes = [node for node in package_nodes() if isinstance(node, ast.ClassDef)]
    while changed:
        changed = False
        for node in classes:
            if node.name not in names and any(_name(base) in names for base in node.bases):
                names.add(node.name)
                changed = True
    return names


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _text(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


_HELPERS: dict = {}


def emitted_codes() -> set[str]:
    """Every literal code in the package: the code argument of an error's construction (or the
    class's default code when a construction gives none), `code="..."` anywhere, rows of the
    translation tables (`(Class, "code", ...)`), and the login outcomes (`login_error("code")`
    and the keys of the table of `{"code": (Class, "message")}`)."""
    classes = error_classes()
    defaults = class_default_codes(classes)
    _HELPERS.update(code_positions())
    codes: set[str] = {value for key, value in _HELPERS.items() if key.endswith(":default")}
    for node in package_nodes():
        if isinstance(node, ast.Call):
            codes.update(_call_codes(node, classes, defaults))
        elif (isinstance(node, ast.Tuple) and len(node.elts) >= 2
              and _name(node.elts[0]) in classes and _text(node.elts[1])):
            codes.add(_text(node.elts[1]))  # a table row: (Class, "code", ...)
        elif (isinstance(node, ast.Dict) and node.values
              and all(_is_class_and_message(value, classes) for value in node.values)):
            # {"our_code": (Class, "message")}: the login table, keyed by our codes.
            codes.update(filter(None, (_text(key) for key in node.keys)))
    return {code for code in codes if _CODE.match(code)}


def class_default_codes(classes: set[str]) -> dict[str, str]:
    """Each error class's default code (`code = "..."` or `status, code = 400, "..."`)."""
    defaults = {}
    for node in package_nodes():
        if isinstance(node, ast.ClassDef) and node.name in classes:
            for statement in node.body:
                if isinstance(statement, ast.Assign):
                    for code in _class_codes(statement):
                        defaults[node.name] = code
    return defaults


_CODE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def code_positions() -> dict[str, int]:
    """Functions of the package with a `code` parameter, and its position: helpers such as
    `_invalid(message, param, code="invalid_field")` pass codes on to an error class."""
    positions = {}
    for node in package_nodes():
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names = [arg.arg for arg in node.args.posonlyargs + node.args.args]
            if "code" in names and node.name != "__init__":
                positions[node.name] = names.index("code") - (names[:1] == ["self"])
                defaults = dict(zip(names[::-1], node.args.defaults[::-1], strict=False))
                if default := _text(defaults.get("code")):
                    positions[f"{node.name}:default"] = default
    return positions


def _call_codes(node: ast.Call, classes: set[str], defaults: dict[str, str]) -> set[str]:
    """`Class(message, "code")` (or the class default), `code="..."`, `login_error("code")`,
    and the code argument of any helper with a `code` parameter."""
    found = {_text(keyword.value) for keyword in node.keywords if keyword.arg == "code"}
    helper = _name(node.func)
    position = _HELPERS.get(helper) if helper not in classes else None
    if isinstance(position, int) and len(node.args) > position:
        found.add(_text(node.args[position]))
    if _name(node.func) in classes:
        if len(node.args) > 1:
            found.add(_text(node.args[1]))
        elif not any(keyword.arg == "code" for keyword in node.keywords):
            found.add(defaults.get(_name(node.func)))
    if _name(node.func) == "login_error" and node.args:
        found.add(_text(node.args[0]))
    return {code for code in found if code}


def _is_class_and_message(node: ast.AST, classes: set[str]) -> bool:
    return (isinstance(node, ast.Tuple) and len(node.elts) == 2
            and _name(node.elts[0]) in classes and " " in (_text(node.elts[1]) or ""))


def _class_codes(statement: ast.Assign) -> set[str]:
    found = set()
    for target in statement.targets:
        if isinstance(target, ast.Name) and target.id == "code":
            found.add(_text(statement.value))
        elif isinstance(target, ast.Tuple) and isinstance(statement.value, ast.Tuple):
            for name, value in zip(target.elts, statement.value.elts, strict=False):
                if isinstance(name, ast.Name) and name.id == "code":
                    found.add(_text(value))
    return {code for code in found if code}


def readme_error_codes() -> set[str]:
    section = README.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"^\| \d{3} \|", line)]
    return {code for row in rows for code in re.findall(r"`([a-z0-9_]+)`", row.split("|")[2])}


def test_the_scan_finds_codes_of_every_kind():
    codes = emitted_codes()
    assert {"deadline_exceeded",          # a class default: UpstreamTimeout("...")
            "missing_field",              # a construction's code argument
            "upstream_conflict",          # a row of the upstream status table
            "mfa_required",               # a login outcome
            "rate_limited"} <= codes


def test_every_error_code_the_service_can_emit_is_in_the_readme_table():
    missing = emitted_codes() - readme_error_codes()
    assert not missing, f"add to README's error table: {sorted(missing)}"


def test_the_readme_table_names_no_code_the_service_never_emits():
    stale = readme_error_codes() - emitted_codes()
    assert not stale, f"README's error table names codes nothing emits: {sorted(stale)}"


# --- environment variables ------------------------------------------------------------------
def variables_read_in(path: Path) -> set[str]:
    """Variables `path` reads by name from the process environment (os.environ, os.getenv)."""
    source = path.read_text(encoding="utf-8")
    pattern = r"""os\.(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']"""
    return set(re.findall(pattern, source))


def readme_table_variables() -> set[str]:
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", README, re.M))


def env_example_variables() -> set[str]:
    text = (REPO / ".env.example").read_text(encoding="utf-8")
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.M))


def server_variables() -> set[str]:
    return variables_read_in(PACKAGE / "gunicorn_config.py")


def test_every_setting_is_in_the_readme_tables_and_in_env_example():
    settings = set(variables())
    assert settings - readme_table_variables() == set()
    assert settings - env_example_variables() == set()


def test_the_docs_list_no_variable_that_nothing_reads():
    read = set(variables()) | server_variables()
    assert readme_table_variables() - read == set()
    assert env_example_variables() - read == set()


def test_every_variable_the_code_reads_is_documented():
    read = server_variables()
    for path in PACKAGE.rglob("*.py"):
        read |= variables_read_in(path)
    undocumented = {name for name in read - PLATFORM_VARIABLES if f"`{name}`" not in README}
    assert not undocumented, f"document in README: {sorted(undocumented)}"


# --- citations --------------------------------------------------------------------------------
SOURCES = [path for folder in ("chatgpt_web", "tests", "bench")
           for path in (REPO / folder).rglob("*") if path.suffix in (".py", ".txt", ".js", ".html")
           and path != Path(__file__).resolve()]


def test_comments_cite_no_document_outside_the_repository():
    """No "protocol §4.3" pointing at notes outside the repository: cite docs/ or README."""
    outside = [f"{path.relative_to(REPO)}:{number}"
               for path in SOURCES
               for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
               if "§" in line or "/work/shared" in line or "peers.md" in line]
    assert not outside, outside


def test_every_cited_docs_page_exists():
    cited = {name for path in SOURCES
             for name in re.findall(r"docs/([\w.-]+\.md)", path.read_text(encoding="utf-8"))}
    missing = {name for name in cited if not (REPO / "docs" / name).exists()}
    assert not missing, f"cited but not in docs/: {sorted(missing)}"


# --- the test command -------------------------------------------------------------------------
def test_ci_runs_the_test_command_readme_gives():
    """README's set-up line `pip install -r requirements-dev.txt && <command>` and the last line
    of .ci/run are the same command, so a fresh clone tests what CI tests."""
    given = re.search(r"^ {4}pip install -r requirements-dev\.txt && (.+)$", README, re.M)
    assert given, "README gives no test command"
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert ci_lines[-1] == given.group(1)
