"""GET /healthz, /readyz and /metrics: no upstream call, truthful answers."""
import re

import pytest

from chatgpt_web import create_app


@pytest.fixture
def make_ops_app(tmp_path):
    def factory(**env):
        return create_app({"CACHE_DIR": str(tmp_path / "cache"),
                           # An address nothing listens on: any upstream call would fail loudly.
                           "CHATGPT_BASE_URL": "http://127.0.0.1:9", **env})
    return factory


def counter_value(metrics_text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus text, 0 if absent."""
    label_text = ",".join(f'{key}="{value}"' for key, value in labels.items())
    match = re.search(rf"^{re.escape(name)}{{{re.escape(label_text)}}} (\S+)$", metrics_text, re.M)
    return float(match.group(1)) if match else 0.0


def test_healthz_says_the_process_is_up(make_ops_app):
    response = make_ops_app().test_client().get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_readyz_checks_the_cache_and_the_upstream_settings(make_ops_app, tmp_path):
    response = make_ops_app().test_client().get("/readyz")
    assert response.status_code == 200, response.json
    assert response.json["status"] == "ready"
    assert response.json["checks"]["cache"] == {"ok": True, "kind": "disk"}
    assert response.json["checks"]["upstream_config"] == {"ok": True, "problems": []}
    assert (tmp_path / "cache").is_dir()


def test_readyz_reports_the_problems_of_a_config_built_in_code(tmp_path):
    from chatgpt_web.config import Config
    config = Config(cache_dir=str(tmp_path / "cache"), base_url="http://127.0.0.1:9")
    app = create_app(config)
    object.__setattr__(config, "proxy", "ftp://user:sk-planted-pass@proxy:21")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    [problem] = response.json["checks"]["upstream_config"]["problems"]
    assert problem.startswith("CHATGPT_PROXY") and "planted" not in response.get_data(as_text=True)


@pytest.mark.parametrize("impersonate", ["chrome136", "chrome124", "safari"])
def test_readyz_accepts_targets_curl_cffi_knows(make_ops_app, impersonate):
    response = make_ops_app(CHATGPT_IMPERSONATE=impersonate).test_client().get("/readyz")
    assert response.status_code == 200, response.json


def test_readyz_with_an_unusable_cache_dir_reports_the_fallback(make_ops_app, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    response = make_ops_app(CACHE_DIR=str(blocker / "cache")).test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"]["cache"]["ok"] is True


def test_metrics_count_requests_by_route_and_status(make_ops_app):
    client = make_ops_app().test_client()
    before = client.get("/metrics", buffered=True).get_data(as_text=True)
    client.get("/healthz", buffered=True)
    client.get("/healthz", buffered=True)
    client.get("/no/such/page", buffered=True)
    response = client.get("/metrics", buffered=True)
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    after = response.get_data(as_text=True)
    name = "chatgpt_web_requests_total"
    assert counter_value(after, name, route="/healthz", status="200") == \
        counter_value(before, name, route="/healthz", status="200") + 2
    assert counter_value(after, name, route="<unmatched>", status="404") == \
        counter_value(before, name, route="<unmatched>", status="404") + 1
    assert "no/such/page" not in after


def test_metrics_expose_every_family(make_ops_app):
    text = make_ops_app().test_client().get("/metrics").get_data(as_text=True)
    for family in ("chatgpt_web_requests_total", "chatgpt_web_request_seconds",
                   "chatgpt_web_upstream_seconds", "chatgpt_web_time_to_first_token_seconds",
                   "chatgpt_web_upstream_errors_total", "chatgpt_web_streams_in_flight"):
        assert f"# TYPE {family} " in text, family


def test_readyz_reports_the_account_pool_without_secrets(make_ops_app, tmp_path):
    import json
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"name": "one", "access_token": "secret-token-1"},
                                    {"session_token": "secret-session-2"}]))
    response = make_ops_app(ACCOUNTS_FILE=str(accounts)).test_client().get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"]["accounts"] == {"ok": True, "accounts": 2, "not_dead": 2}
    assert "secret" not in response.get_data(as_text=True)


def test_readyz_is_503_when_the_accounts_file_is_broken(make_ops_app, tmp_path):
    # A broken file stops the start (test_config); one broken after the start shows here.
    accounts = tmp_path / "accounts.json"
    accounts.write_text('[{"email": "someone@example.com", "password": "pw"}]')
    app = make_ops_app(ACCOUNTS_FILE=str(accounts))
    accounts.write_text('[{"email": "someone@example.com", "password": ""}]')
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    check = response.json["checks"]["accounts"]
    assert check["ok"] is False and "entry 0" in check["problems"][0]
    assert "someone@" not in response.get_data(as_text=True)
