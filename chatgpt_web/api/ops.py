"""Operational endpoints: the landing page, liveness, readiness and Prometheus metrics.

None of them calls the upstream: a probe every few seconds must not spend the account's quota,
and "ChatGPT is slow" is not a reason to take this process out of a load balancer.
"""
from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .. import metrics, transport
from ..errors import ConfigError, ServiceUnavailable
from ..services import current
from . import pages

blueprint = Blueprint("ops", __name__)


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
    """Readiness: the cache can be written and the settings make sense (503 if not)."""
    services = current()
    store = services.store
    problems = services.config.problems()  # the list that stops start-up (config.py)
    checks = {
        "cache": {"ok": store.writable(), "kind": store.kind},
        "upstream_config": {"ok": not problems, "problems": problems},
        # The public fallback serves as well, at more CPU per answer: a detail, not a failure.
        "stream_reader": {"ok": True, "reader": transport.STREAM_READER,
                          "missing": list(transport.READER_MISSING)},
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
