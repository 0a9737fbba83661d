"""Fixtures for the service under test: the app wired to the emulator, a test client, a live
server."""
from __future__ import annotations

import threading
from pathlib import Path

import openai
import pytest
from werkzeug.serving import make_server

from chatgpt_web import create_app

# Real captured streams (and peers' fixtures), copied into the repository with their provenance
# in the '#' lines at the top of each file, so a bare clone runs every test that reads them.
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def samples_dir() -> Path:
    return FIXTURES_DIR


@pytest.fixture
def service_env(emulator, tmp_path) -> dict:
    """Environment variables that point a service at the emulator, as a user would configure it."""
    return {
        "CHATGPT_BASE_URL": emulator.url,
        "CHATGPT_AUTH_URL": emulator.url,
        "CHATGPT_ALLOWED_PROXIES": emulator.url + "/",
        "CACHE_DIR": str(tmp_path / "cache"),
        "REQUEST_TIMEOUT": "30",
    }


@pytest.fixture
def make_app(service_env):
    """Build an app from the emulator environment plus overrides:
    make_app(MAX_PROMPT_CHARS="10")."""
    def factory(**overrides):
        return create_app({**service_env, **overrides})
    return factory


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def token(emulator) -> str:
    """A valid access token the emulator accepts."""
    return emulator.mint_access_token()


class LiveServer:
    """A WSGI app served on a real loopback port in a thread (for SDKs and streaming clients)."""

    def __init__(self, app):
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        # shutdown() waits for the serving loop to look at its flag, once per poll interval:
        # the default half second was most of the time of a test that starts a server.
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def live_service(app):
    """The app served on a real port; `.url` is its origin."""
    server = LiveServer(app)
    yield server
    server.stop()


@pytest.fixture
def sdk(live_service, token):
    """The official sync OpenAI SDK with the live service as its base URL and no retries (errors
    show at once)."""
    with openai.OpenAI(base_url=live_service.url + "/v1", api_key=token, max_retries=0,
                       timeout=30) as client:
        yield client
