"""Services configured with an UPSTREAMS_FILE that points at the fake OpenAI API."""
from __future__ import annotations

import json

import pytest

from chatgpt_web import create_app
from tests.service_fixtures import LiveServer

CLIENT_KEY = "client-key-for-relay-tests"
ADMIN_KEY = "admin-key-for-relay-tests"
ALL_MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small",
              "omni-moderation-latest", "dall-e-3", "tts-1", "whisper-1"]


def upstream(base_url: str, *keys: str, name: str = "openai", **extra) -> dict:
    """An upstream entry whose keys are env: references K_<name>_<n> (see relay_service)."""
    return {"name": name, "base_url": base_url, "models": ALL_MODELS,
            "keys": [{"id": f"k{n}", "key": f"env:K_{name}_{n}"} for n in range(len(keys))],
            **extra}


def key_env(name: str, keys) -> dict:
    return {f"K_{name}_{n}": key for n, key in enumerate(keys)}


@pytest.fixture
def relay_service(fake_openai, tmp_path):
    """relay_service(keys=[...], plan=None, **env): a live service relaying to the fake.

    Without `plan`, one upstream "openai" with `keys` serves every model of ALL_MODELS.
    Client keys are on (CLIENT_KEY); ADMIN_KEY opens /admin.
    """
    servers = []

    def factory(keys=("sk-fake-good-1",), plan=None, **env):
        plan = plan or {"upstreams": [upstream(fake_openai.base_url, *keys)]}
        path = tmp_path / f"upstreams-{len(servers)}.json"
        path.write_text(json.dumps(plan))
        settings = {"UPSTREAMS_FILE": str(path), "API_KEYS": CLIENT_KEY, "ADMIN_KEY": ADMIN_KEY,
                    "CACHE_DIR": str(tmp_path / f"cache-{len(servers)}"),
                    "RELAY_MODEL_DISCOVERY": "0", "RATE_LIMIT": "off", "RATE_LIMIT_IP": "off",
                    **key_env("openai", keys), **env}
        server = LiveServer(create_app(settings))
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()
