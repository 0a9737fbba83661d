"""Shared fixtures."""
from __future__ import annotations

import pytest

from tests.emulator import Emulator


# --- the ChatGPT backend emulator ------------------------------------------------------------
# One server for the whole session; `emulator` hands each test a clean one (default switches,
# no conversations, empty request log).


@pytest.fixture(scope="session")
def _emulator_server():
    emulator = Emulator().start()
    yield emulator
    emulator.stop()


@pytest.fixture
def emulator(_emulator_server):
    _emulator_server.reset()
    yield _emulator_server


# --- the service under test ------------------------------------------------------------------
from tests.service_fixtures import (app, client, live_service, make_app, samples_dir,  # noqa: E402,F401
                                     service_env, token)
