"""Configuration comes from environment variables, validated once."""
import ipaddress

import pytest

from chatgpt_web import create_app
from chatgpt_web.config import DEFAULT_IMPERSONATE, Config, Rate
from chatgpt_web.errors import ConfigError


def test_defaults_follow_the_original_project():
    config = Config.from_env({})
    assert config.base_url == "https://chatgpt.com"
    assert config.port == 3000
    assert config.impersonate == DEFAULT_IMPERSONATE
    assert any(c.isdigit() for c in config.impersonate)
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
    {"TOKEN_EXPIRY_MARGIN": "-1"}, {"RATE_LIMIT_STRATEGY": "leaky"}, {"LOG_LEVEL": "loud"},
    {"IMAGE_URL_TIMEOUT": "0"}, {"IMAGE_URL_TIMEOUT": "301"}, {"IMAGE_URL_TIMEOUT": "nan"},
    {"IMAGE_URL_TIMEOUT": "inf"}, {"IMAGE_URL_TIMEOUT": "soon"},
    # regression: "nan" and "inf" parse as floats, and NaN is not below any minimum
    {"REQUEST_TIMEOUT": "nan"}, {"REQUEST_TIMEOUT": "inf"}, {"RELAY_PING_INTERVAL": "nan"},
    {"MODERATION_TIMEOUT": "1e999"},
])
def test_bad_values_are_refused_at_start(env):
    with pytest.raises(ConfigError) as refused:
        Config.from_env(env)
    assert str(refused.value).startswith(next(iter(env)))


@pytest.mark.parametrize("env, variable", [
    ({"CHATGPT_PROXY": "nonsense"}, "CHATGPT_PROXY"),
    ({"CHATGPT_PROXY": "ftp://user:sk-planted-pass@proxy:21"}, "CHATGPT_PROXY"),
    ({"CHATGPT_PROXY": "http://user:sk-planted-pass@proxy:notaport"}, "CHATGPT_PROXY"),
    ({"CHATGPT_IMPERSONATE": "chrome999"}, "CHATGPT_IMPERSONATE"),
    ({"CHATGPT_BASE_URL": "http:///x"}, "CHATGPT_BASE_URL"),
    ({"CHATGPT_BASE_URL": "http://:8080"}, "CHATGPT_BASE_URL"),
    ({"CHATGPT_ALLOWED_PROXIES": "https://ok.example/api,proxy.example/api"},
     "CHATGPT_ALLOWED_PROXIES"),
])
def test_settings_that_cannot_work_stop_the_start_naming_the_variable_not_its_value(env, variable):
    with pytest.raises(ConfigError) as refused:
        create_app(env)
    assert str(refused.value).startswith(variable) and "planted" not in str(refused.value)


def test_every_problem_is_named_at_once():
    with pytest.raises(ConfigError) as refused:
        Config.from_env({"PORT": "0", "CHATGPT_PROXY": "nonsense"})
    assert "PORT" in str(refused.value) and "CHATGPT_PROXY" in str(refused.value)


def test_a_config_built_in_code_is_held_to_the_same_rules():
    with pytest.raises(ConfigError, match="CHATGPT_IMPERSONATE"):
        create_app(Config(impersonate="netscape4"))


def test_the_image_url_timeout_is_a_bounded_number_of_seconds():
    assert Config.from_env({}).image_url_timeout == 20
    assert Config.from_env({"IMAGE_URL_TIMEOUT": "2.5"}).image_url_timeout == 2.5
    with pytest.raises(ConfigError, match="from 0.1 to 300"):
        Config.from_env({"IMAGE_URL_TIMEOUT": "3600"})


@pytest.mark.parametrize("raw", ["0", "off", "-1", "nan", "inf", "soon"])
def test_the_client_send_timeout_is_a_number_of_seconds_and_cannot_be_turned_off(raw):
    assert Config.from_env({}).client_send_timeout == 60
    assert Config.from_env({"CLIENT_SEND_TIMEOUT": "2.5"}).client_send_timeout == 2.5
    with pytest.raises(ConfigError, match="^CLIENT_SEND_TIMEOUT must be a number"):
        Config.from_env({"CLIENT_SEND_TIMEOUT": raw})


@pytest.mark.parametrize("raw", ["-0.1", "1.5", "nan", "inf", "fast"])
def test_the_stream_coalescing_wait_is_at_most_a_second(raw):
    assert Config.from_env({}).stream_coalesce_seconds == 0.4
    assert Config.from_env({"STREAM_COALESCE_SECONDS": "0.1"}).stream_coalesce_seconds == 0.1
    assert Config.from_env({"STREAM_COALESCE_SECONDS": "0"}).stream_coalesce_seconds == 0
    with pytest.raises(ConfigError, match="^STREAM_COALESCE_SECONDS must be a number of seconds "
                                          "from 0 to 1"):
        Config.from_env({"STREAM_COALESCE_SECONDS": raw})


def test_a_token_expiry_margin_of_zero_is_allowed():
    assert Config.from_env({"TOKEN_EXPIRY_MARGIN": "0"}).token_expiry_margin == 0


def test_values_are_parsed_once_into_typed_values():
    config = Config.from_env({"RATE_LIMIT": "5/minute", "RATE_LIMIT_IP": "off",
                              "TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7"})
    assert config.rate_limit == Rate(5, 60) and config.rate_limit_ip is None
    assert config.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),
                                      ipaddress.ip_network("192.0.2.7/32"))


def test_the_proxy_url_is_kept_out_of_repr():
    config = Config.from_env({"CHATGPT_PROXY": "http://user:sk-planted-pass@proxy:8080"})
    assert "planted" not in repr(config)


@pytest.mark.parametrize("content", ["{not json", '[{"name": "a"}]', '{"email": "x"}'])
def test_a_malformed_accounts_file_stops_the_start(tmp_path, content):
    accounts = tmp_path / "accounts.json"
    accounts.write_text(content)
    with pytest.raises(ConfigError) as caught:
        create_app({"ACCOUNTS_FILE": str(accounts), "CACHE_DIR": str(tmp_path / "cache")})
    assert "ACCOUNTS_FILE" in str(caught.value) or "account" in str(caught.value).lower()
    assert not (tmp_path / "cache").exists()  # refused before any state was opened


def test_the_request_body_limit_follows_max_prompt_chars_and_max_upload_bytes_unless_set():
    # 12 bytes a prompt character + one file of MAX_UPLOAD_BYTES in base64 + 64 KiB
    assert Config.from_env({}).request_body_limit == 12 * 32000 + 27_962_027 + 65536
    assert Config.from_env({"MAX_PROMPT_CHARS": "300000", "MAX_UPLOAD_BYTES": "3"}
                           ).request_body_limit == 3_665_540
    assert Config.from_env({"MAX_PROMPT_CHARS": "10", "MAX_UPLOAD_BYTES": "3"}
                           ).request_body_limit == 1 << 20
    assert Config.from_env({"MAX_REQUEST_BYTES": "5000"}).request_body_limit == 5000
