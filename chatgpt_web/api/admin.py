"""Admin endpoints, guarded by ADMIN_KEY (access.py): what an operator needs to run the pool.

    GET  /admin/accounts                 each account's health (the console's table)
    POST /admin/accounts/<id>/check      renew its token now and try it upstream (no quota spent)
    POST /admin/accounts/<id>/disable    take it out of rotation
    POST /admin/accounts/<id>/enable     put it back, with a clean record

Nothing here ever shows a token, a password, an email or a session cookie: accounts are shown by
their label (the `name` of ACCOUNTS_FILE, or a short hash of the credential).
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..errors import ApiError, NotFound
from ..pool import AccountPool
from ..services import current
from ..upstream.endpoints import from_base_url

blueprint = Blueprint("admin", __name__, url_prefix="/admin")


@blueprint.get("/accounts")
def accounts():
    """Each pooled account's state, token expiry, last error and rest-until time."""
    pool = current().pool
    return jsonify({"pool": pool is not None, "accounts": pool.report() if pool else []})


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
