"""Configuration comes from environment variables, validated once."""
import pytest

from chatgpt_web.config import DEFAULT_IMPERSONATE, Config
from chatgpt_web.errors import ConfigError


def test_defaults_follow_the_original_project():
    config = Config.from_env({})
    assert config.base_url == "https://chatgpt.com"
    assert config.port == 3000
    assert config.impersonate == DEFAULT_IMPERSONATE and any(c.isdigit() for c in config.impersonate)
    assert config.allowed_proxies == ()


def test_environment_overrides_are_parsed():
    config = Config.from_env({"CHATGPT_BASE_URL": "http://127.0.0.1:1/", "PORT": "8080",
                              "CHATGPT_ALLOWED_PROXIES": "https://a/api, https://b/api",
                              "HISTORY_DISABLED": "yes", "REQUEST_TIMEOUT": "2.5"})
    assert config.base_url == "http://127.0.0.1:1"
    assert config.port == 8080
    assert config.allowed_proxies == ("https://a/api", "https://b/api")
    assert config.history_disabled is True and config.request_timeout == 2.5


@pytest.mark.parametrize("env", [
    {"PORT": "many"}, {"PORT": "0"}, {"HISTORY_DISABLED": "maybe"},
    {"CHATGPT_BASE_URL": "chatgpt.com"}, {"POW_MAX_DIFFICULTY": "zz"},
])
def test_bad_values_are_refused_at_start(env):
    with pytest.raises(ConfigError):
        Config.from_env(env)


@pytest.mark.parametrize("content", ["{not json", '[{"name": "a"}]', '{"email": "x"}'])
def test_a_malformed_accounts_file_stops_the_start(tmp_path, content):
    from chatgpt_web import create_app

    accounts = tmp_path / "accounts.json"
    accounts.write_text(content)
    with pytest.raises(ConfigError) as caught:
        create_app({"ACCOUNTS_FILE": str(accounts), "CACHE_DIR": str(tmp_path / "cache")})
    assert "ACCOUNTS_FILE" in str(caught.value) or "account" in str(caught.value).lower()
    assert not (tmp_path / "cache").exists()  # refused before any state was opened
