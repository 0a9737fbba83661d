"""Admin endpoints, guarded by ADMIN_KEY (access.py): what an operator needs to run the pool.

    GET  /admin/accounts                 each account's health (the console's table)
    POST /admin/accounts/<id>/check      renew its token now and try it upstream (no quota spent)
    POST /admin/accounts/<id>/disable    take it out of rotation
    POST /admin/accounts/<id>/enable     put it back, with a clean record
    GET  /admin/keys                     every scoped client key (never a key or its hash), with
                                         its quota use today and this month
    POST /admin/keys                     make a scoped key: the answer shows the key, once
    GET|PATCH|DELETE /admin/keys/<id>    read, change (null removes a scope), revoke at once
    GET  /admin/usage?from=&to=&key=&format=csv   the usage ledger (UTC days, counts only)

Nothing here ever shows a token, a password, an email or a session cookie: accounts are shown by
their label (the `name` of ACCOUNTS_FILE, or a short hash of the credential).
"""
from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

from flask import Blueprint, Response, jsonify, request

from ..errors import ApiError, BadRequest, NotFound
from ..key_policy import KeyPolicy
from ..keys import KeyBook
from ..pool import AccountPool
from ..services import current
from ..upstream.endpoints import from_base_url

blueprint = Blueprint("admin", __name__, url_prefix="/admin")


@blueprint.get("/accounts")
def accounts():
    """Each pooled account's state, token expiry, last error and rest-until time."""
    services = current()
    pool = services.pool
    body = {"pool": pool is not None, "accounts": pool.report() if pool else []}
    if services.alerts is not None:  # ALERT_WEBHOOK_URL is set: what it is told about
        body["alerts"] = list(services.alerts.conditions().values())
    return jsonify(body)


def _pool() -> AccountPool:
    pool = current().pool
    if pool is None:
        raise NotFound("no ACCOUNTS_FILE is configured: there are no pooled accounts",
                       "account_not_found")
    return pool


def _row(pool: AccountPool, account_id: str) -> dict:
    return next(row for row in pool.report() if row["id"] == account_id)


@blueprint.post("/accounts/<account_id>/check")
def check_account(account_id: str):
    """Renew the account's token and list one conversation with it; 200 either way, with `ok`
    and the error the account met (its record is updated as a failed answer would)."""
    services = current()
    pool = _pool()
    account = pool.account(account_id)
    upstream = from_base_url(services.config.base_url)
    try:
        pool.recheck(account, lambda token: services.history.list(token, upstream, limit=1))
    except ApiError as error:
        return jsonify({"ok": False, "error": {**error.to_dict(), "status": error.status},
                        "account": _row(pool, account.id)})
    return jsonify({"ok": True, "account": _row(pool, account.id)})


@blueprint.post("/accounts/<account_id>/disable")
def disable_account(account_id: str):
    pool = _pool()
    account = pool.account(account_id)
    pool.disable(account)
    return jsonify({"ok": True, "account": _row(pool, account.id)})


@blueprint.post("/accounts/<account_id>/enable")
def enable_account(account_id: str):
    pool = _pool()
    account = pool.account(account_id)
    pool.enable(account)
    return jsonify({"ok": True, "account": _row(pool, account.id)})


# --- client keys -------------------------------------------------------------------------------
def _book() -> KeyBook:
    return current().keys.book


def _fields() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("send the key's fields as a JSON object", "invalid_key_policy")
    return body


def _shown(policy: KeyPolicy) -> dict:
    """A key's scopes and what it used today and this month (as GET /v1/key shows its holder)."""
    services = current()
    return {**policy.scopes(), "usage": services.ledger.status(policy, policy.id),
            "in_flight": services.ledger.in_flight(policy.id)}


@blueprint.get("/keys")
def list_keys():
    """`required` is false when no client key is asked of callers (neither KEYS_FILE nor
    API_KEYS is set): keys made then are kept but nobody has to present one."""
    services = current()
    return jsonify({"required": services.keys.enabled,
                    "keys": [_shown(policy) for policy in _book().list()]})


@blueprint.post("/keys")
def create_key():
    """Make a key; the answer is the only place the key ever appears."""
    key, policy = _book().create(_fields())
    return jsonify({"key": key, **policy.scopes()}), 201


@blueprint.get("/keys/<key_id>")
def get_key(key_id: str):
    return jsonify(_shown(_book().get(key_id)))


@blueprint.patch("/keys/<key_id>")
def update_key(key_id: str):
    return jsonify(_shown(_book().update(key_id, _fields())))


@blueprint.delete("/keys/<key_id>")
def revoke_key(key_id: str):
    policy = _book().revoke(key_id)
    return jsonify({"id": policy.id, "revoked": True})


# --- usage -------------------------------------------------------------------------------------
USAGE_COLUMNS = ("day", "key", "model", "backend", "requests", "prompt_tokens",
                 "completion_tokens")


def _day(name: str, default: date) -> date:
    value = request.args.get(name)
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"'{name}' must be a day like 2026-12-04", "invalid_request",
                         param=name) from None


@blueprint.get("/usage")
def usage_report():
    """Ledger rows per UTC day x key x model x backend, from `from` to `to` (default: the last
    7 days), as JSON or, with format=csv, as CSV."""
    services = current()
    today = datetime.now(UTC).date()
    last = _day("to", today)
    first = _day("from", last - timedelta(days=6))
    retention = services.config.usage_retention_days
    if first > last or (last - first).days >= retention:
        raise BadRequest(f"'from' must be on or before 'to', at most {retention} days before",
                         "invalid_request", param="from")
    rows = services.ledger.rows(first, last, request.args.get("key") or None)
    if request.args.get("format") == "csv":
        text = io.StringIO()
        writer = csv.DictWriter(text, USAGE_COLUMNS)
        writer.writeheader()
        writer.writerows({name: _cell(value) for name, value in row.items()} for row in rows)
        return Response(text.getvalue(), mimetype="text/csv")
    return jsonify({"from": first.isoformat(), "to": last.isoformat(), "usage": rows})


def _cell(value):
    """A CSV cell a spreadsheet will not run as a formula (a model name comes from a caller)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
