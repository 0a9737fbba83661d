"""Admin endpoints, guarded by ADMIN_KEY (access.py): what an operator needs to see the pool.

Nothing here ever shows a token, a password, an email or a session cookie: accounts are shown by
their label (the `name` of ACCOUNTS_FILE, or a short hash of the credential).
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..services import current

blueprint = Blueprint("admin", __name__, url_prefix="/admin")


@blueprint.get("/accounts")
def accounts():
    """Each pooled account's state, token expiry, last error and rest-until time."""
    pool = current().pool
    return jsonify({"pool": pool is not None, "accounts": pool.report() if pool else []})
