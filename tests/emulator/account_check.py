"""GET /backend-api/me: who the bearer is, or 401 token_invalidated once the account's tokens were
revoked (`emulator.auth.invalidate_access_tokens(email)`), even while /api/auth/session still hands
such a token out. Clients use it to tell a live access token from a dead one."""
from __future__ import annotations

from flask import Blueprint, current_app, request

from . import tokens
from .auth_pages import TOKEN_INVALIDATED
from .failures import detail_error, json_response

blueprint = Blueprint("account_check", __name__)


@blueprint.get("/me")
def me():
    emulator = current_app.extensions["emulator"]
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return detail_error(401, "missing_authorization_header",
                            "Missing or malformed Authorization header.")
    try:
        claims = tokens.verify(emulator.secret, header[len("Bearer "):])
    except tokens.TokenRejected as rejected:
        return detail_error(401, rejected.code, str(rejected))
    email = claims[tokens.PROFILE_CLAIM]["email"]
    if email.lower() in emulator.auth.invalidated:
        return json_response(401, {"detail": {"message": TOKEN_INVALIDATED,
                                              "type": "invalid_request_error", "param": None,
                                              "code": "token_invalidated"}})
    return json_response(200, {"object": "user", "id": tokens.user_id(claims), "email": email,
                               "name": email, "picture": None, "created": 1700000000,
                               "phone_number": None, "mfa_flag_enabled": False,
                               "amr": [], "groups": [], "orgs": {"object": "list", "data": []}})
