"""Shared fixtures."""
from __future__ import annotations

import ast
import threading

import pytest

from tests.emulator import Emulator

# CPython 3.11 keeps ast.parse's recursion-depth check in state shared by all threads
# (gh-106905): two threads parsing at once (werkzeug compiling an app's routes, another thread
# formatting a traceback, which parses the failing line to place its ^ marks) can fail with
# "SystemError: AST constructor recursion depth mismatch". The suite runs servers in threads of
# its own process, so parsing is serialised here; the service itself parses only at start-up.
_parse, _parsing = ast.parse, threading.Lock()


def _serialised_parse(*args, **kwargs):
    with _parsing:
        return _parse(*args, **kwargs)


ast.parse = _serialised_parse

# The service under test (app, client, make_app, live_service, ...) and a real redis-server
# (skipped without one, unless CI / REQUIRE_REDIS=1).
# A real browser (Debian's chromium through Playwright) for the page tests.
# The fake OpenAI API and services relaying to it (tests/relay_fixtures.py).
# A webhook collector for the alert tests (tests/webhook_receiver.py).
pytest_plugins = ["tests.service_fixtures", "tests.redis_fixtures", "tests.browser_fixtures",
                  "tests.relay_fixtures", "tests.webhook_receiver"]

# --- the ChatGPT backend emulator ------------------------------------------------------------
# One server for the whole session; `emulator` hands each test a clean one (default switches,
# no conversations, empty request log).


@pytest.fixture(scope="session")
def _emulator_server():
    emulator = Emulator().start()
    yield emulator
    emulator.stop()


@pytest.fixture
def dialect(request) -> str:
    """The dialect the emulator speaks: "2026", or each of DIALECTS in a module that sets
    `BOTH_DIALECTS = True` (the site as it is now, and a mirror that only knows the 2024 paths)."""
    return getattr(request, "param", "2026")


DIALECTS = ("2026", "2024")


def pytest_generate_tests(metafunc):
    """Run the tests of a `BOTH_DIALECTS` module that use the emulator once per dialect."""
    if getattr(metafunc.module, "BOTH_DIALECTS", False) and "dialect" in metafunc.fixturenames:
        metafunc.parametrize("dialect", DIALECTS, indirect=True)


@pytest.fixture
def emulator(_emulator_server, dialect):
    _emulator_server.reset()
    _emulator_server.switches.dialect = dialect
    yield _emulator_server


# The same emulator over TLS, HTTP/2 by ALPN (tests/emulator/tls.py), for the tests of that mode.
@pytest.fixture(scope="session")
def _tls_emulator_server():
    emulator = Emulator(tls=True).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def tls_emulator(_tls_emulator_server):
    _tls_emulator_server.reset()
    yield _tls_emulator_server


# --- live services with settings of their own (OpenAI SDK tests) ---------------------------
# `live_service` serves the default app; `live_service_factory(**env)` serves an app built with
# environment overrides, e.g. live_service_factory(MAX_PROMPT_CHARS="10"), each on its own port.


@pytest.fixture
def live_service_factory(make_app):
    from tests.service_fixtures import LiveServer

    servers = []

    def factory(**overrides):
        server = LiveServer(make_app(**overrides))
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


# --- the fake OpenAI API (relay upstream) ------------------------------------------------------
@pytest.fixture(scope="session")
def _fake_openai_server():
    from tests.fake_openai import FakeOpenAI
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_openai(_fake_openai_server):
    _fake_openai_server.reset()
    yield _fake_openai_server
