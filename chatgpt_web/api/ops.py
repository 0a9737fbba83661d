"""Operational endpoints: the landing page, liveness, readiness and Prometheus metrics.

None of them calls the upstream: a probe every few seconds must not spend the account's quota,
and "ChatGPT is slow" is not a reason to take this process out of a load balancer.
"""
from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .. import metrics
from ..config import Config, is_url
from ..errors import ConfigError, ServiceUnavailable
from ..services import current
from . import pages

blueprint = Blueprint("ops", __name__)

_PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")


@blueprint.get("/")
def index():
    """A browser gets the chat playground; a program learns the service is deployed and where
    to start."""
    if pages.wants_html():
        response = pages.page("playground.html")
    else:
        response = jsonify({"status": "ok", "message": "chatgpt_web is deployed",
                            "endpoints": ["/get_access_token", "/send_message",
                                          "/v1/chat/completions", "/v1/models"]})
    response.vary.add("Accept")  # one URL, two representations: caches must keep both
    return response


@blueprint.get("/healthz")
def healthz():
    """Liveness: the process is up and serving requests."""
    return jsonify({"status": "ok"})


@blueprint.get("/readyz")
def readyz():
    """Readiness: the cache can be written and the upstream settings make sense (503 if not)."""
    services = current()
    store = services.store
    problems = upstream_config_problems(services.config)
    checks = {
        "cache": {"ok": store.writable(), "kind": store.kind},
        "upstream_config": {"ok": not problems, "problems": problems},
    }
    if services.config.accounts_file:
        checks["accounts"] = _accounts_check(services)
    ready = all(check["ok"] for check in checks.values())
    return jsonify({"status": "ready" if ready else "not_ready", "checks": checks}), (
        200 if ready else 503)


def _accounts_check(services) -> dict:
    """ACCOUNTS_FILE loads, and how many of its accounts are not dead (no upstream call).

    All accounts dead does not make the instance unready: callers with their own tokens can
    still be served, and every instance shares the same accounts anyway.
    """
    try:
        pool = services.pool
    except ConfigError as problem:  # its message names the entry, never a secret
        return {"ok": False, "problems": [str(problem)]}
    try:
        not_dead = sum(1 for row in pool.report() if row["status"] != "dead")
    except ServiceUnavailable:  # REDIS_URL is set and Redis is down: health cannot be read
        return {"ok": False, "problems": ["account health cannot be read: the state store "
                                          "cannot be reached"]}
    return {"ok": True, "accounts": len(pool.accounts), "not_dead": not_dead}


@blueprint.get("/metrics")
def prometheus_metrics():
    """Prometheus text exposition, merged across gunicorn workers."""
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)


def upstream_config_problems(config: Config) -> list[str]:
    """What is wrong with the upstream settings, checked locally (no network).

    Messages name the variable, never its value: CHATGPT_PROXY may carry a password.
    """
    problems = []
    for name, url in (("CHATGPT_BASE_URL", config.base_url), ("CHATGPT_AUTH_URL", config.auth_url)):
        if not is_url(url, ("http", "https")):
            problems.append(f"{name} is not an http(s) URL with a host")
    if config.proxy and not is_url(config.proxy, _PROXY_SCHEMES):
        problems.append("CHATGPT_PROXY is not a proxy URL (http, https, socks4 or socks5)")
    if any(not is_url(prefix, ("http", "https")) for prefix in config.allowed_proxies):
        problems.append("CHATGPT_ALLOWED_PROXIES holds an entry that is not an http(s) URL")
    if config.impersonate not in _impersonate_targets():
        problems.append("CHATGPT_IMPERSONATE is not a browser target this curl_cffi supports")
    return problems


def _impersonate_targets() -> frozenset[str]:
    from curl_cffi.requests import impersonate
    targets = {target.value for target in impersonate.BrowserType}
    # Floating aliases ("chrome", "safari"...) resolve to a concrete target inside curl_cffi.
    targets.update(getattr(impersonate, "REAL_TARGET_MAP", {}))
    return frozenset(targets)
