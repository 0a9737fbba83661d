"""CORS: which origins may call the service from a browser, and what their pages may read."""
from __future__ import annotations

import pytest

from chatgpt_web.config import Config
from chatgpt_web.errors import ConfigError

PAGE = "https://chat.example.com"


def preflight(client, origin=PAGE, path="/v1/chat/completions"):
    return client.options(path, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"})


def test_no_cors_headers_by_default(client):
    response = client.get("/v1/models", headers={"Origin": PAGE})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert preflight(client).status_code == 403


def test_an_allowed_origin_gets_its_preflight_answered_without_a_key(make_app):
    client = make_app(CORS_ORIGINS=PAGE + "/", API_KEYS="k1").test_client()
    response = preflight(client)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == PAGE
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Headers"] == (
        "authorization, content-type, x-stainless-os")
    assert response.headers["Vary"] == "Origin"


def test_answers_and_errors_carry_the_origin_and_expose_the_headers_a_client_reads(make_app):
    client = make_app(CORS_ORIGINS=PAGE, API_KEYS="k1").test_client()
    refused = client.get("/v1/models", headers={"Origin": PAGE})  # no key: 401
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == PAGE
    exposed = refused.headers["Access-Control-Expose-Headers"]
    for name in ("RateLimit-Remaining", "Retry-After", "X-Request-ID"):
        assert name in exposed
    other = client.get("/v1/models", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert preflight(client, "https://evil.example").status_code == 403


def test_any_origin_needs_api_keys(make_app):
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        Config.from_env({"CORS_ORIGINS": "*"})
    client = make_app(CORS_ORIGINS="*", API_KEYS="k1").test_client()
    response = preflight(client, "https://anything.example")
    assert response.status_code == 204 and response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("value", ["chat.example.com", "https://chat.example.com/app", "ftp://x"])
def test_an_origin_must_be_a_scheme_and_host(value):
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        Config.from_env({"CORS_ORIGINS": value})
