"""auth.openai.com as chatgpt.com's sign-in uses it today (docs/protocol-auth.md), on the emulator's
origin. The pages are a single-page app; each step is a JSON call whose answer names the next page
(`page.type`) and where to go (`continue_url`), whatever the HTTP status:

    GET  /api/accounts/authorize?...        302 /log-in + login_session and oai-did cookies
    GET  /log-in                            200 the app's HTML shell
    POST /api/accounts/authorize/continue   {"username": {"kind": "email", "value"}}
                                            -> login_password (or create_account_password)
    POST /api/accounts/password/verify      {"password"} -> email_otp_verification, mfa_challenge
                                            or done; 401 invalid_username_or_password
    POST /api/accounts/email-otp/send       a new e-mailed code (the tests read `auth.mailbox`)
    POST /api/accounts/email-otp/validate   {"code"} -> mfa_challenge or done
                                            401 wrong_email_otp_code
    POST /api/accounts/mfa/verify           {"type": "totp", "id", "code"} -> done
                                            401 invalid_mfa_code
    GET  /api/accounts/consent?challenge=C  302 <redirect_uri>?code=...&state=...
                                            ("done" is the consent page, which leads there)
    POST /backend-api/sentinel/req          {p, id, flow} -> {token, proofofwork, ...}

Every api/accounts/* POST must carry `openai-sentinel-token`: JSON {p, t, c, id, flow} where `c` is
a token /sentinel/req issued for that flow and device, used once, and `p` the proof it asked for.
"""
from __future__ import annotations

import json
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import jsonify, redirect, request

from . import sentinel

if TYPE_CHECKING:
    from .auth_pages import AuthPages

LOGIN_COOKIE = "login_session"
# The sentinel flow each api/accounts/* step belongs to.
STEP_FLOWS = {
    "authorize_continue": "authorize_continue",
    "password_verify": "password_verify",
    "email_otp_validate": "email_otp_validate",
    "mfa_verify": "mfa_verify",
}


@dataclass
class _Transaction:
    """One sign-in, bound to the browser by its login_session cookie."""

    redirect_uri: str
    state: str
    device_id: str
    email: str | None = None
    password_ok: bool = False
    email_ok: bool = False
    totp_ok: bool = False
    email_code: str | None = None
    factor_id: str = field(default_factory=lambda: "mfa_" + secrets.token_hex(8))


@dataclass(frozen=True)
class _Challenge:
    flow: str
    device_id: str
    seed: str
    difficulty: str
    pow_required: bool


class OpenAIAccountPages:
    """State and views of the auth.openai.com pages; `auth` holds accounts and switches."""

    def __init__(self, auth: AuthPages):
        self.auth = auth
        self._logins: dict[str, _Transaction] = {}
        self._challenges: dict[str, _Challenge] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._logins.clear()
            self._challenges.clear()

    def add_routes(self, bp) -> None:
        bp.add_url_rule("/api/accounts/authorize", "accounts_authorize", self._authorize)
        bp.add_url_rule("/log-in", "login_page", self._page)
        bp.add_url_rule("/log-in/password", "login_password_page", self._page)
        bp.add_url_rule("/api/accounts/authorize/continue", "authorize_continue",
                        self._continue, methods=["POST"])
        bp.add_url_rule("/api/accounts/password/verify", "password_verify", self._password,
                        methods=["POST"])
        bp.add_url_rule("/api/accounts/email-otp/send", "email_otp_send", self._email_send,
                        methods=["POST"])
        bp.add_url_rule("/api/accounts/email-otp/validate", "email_otp_validate",
                        self._email_validate, methods=["POST"])
        bp.add_url_rule("/api/accounts/mfa/verify", "mfa_verify", self._mfa, methods=["POST"])
        bp.add_url_rule("/api/accounts/consent", "consent", self._consent)
        bp.add_url_rule("/backend-api/sentinel/req", "sentinel_req", self._sentinel_req,
                        methods=["POST"])

    # -- the sentinel of the auth flows ------------------------------------------------------

    def _sentinel_req(self):
        try:
            body = json.loads(request.get_data(as_text=True) or "null")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str)
                                                  for k in ("p", "id", "flow")):
            return jsonify({"detail": "the body must be JSON {p, id, flow}"}), 400
        problem = sentinel.check_requirements_token(body["p"])
        if problem:
            return jsonify({"detail": problem}), 400
        switches = self.auth.switches
        challenge = _Challenge(body["flow"], body["id"], repr(random.random()),
                               switches.sentinel_pow_difficulty, switches.sentinel_pow_required)
        token = "gAAAAAB" + secrets.token_urlsafe(96)
        with self._lock:
            self._challenges[token] = challenge
        return jsonify({
            "token": token, "flow": challenge.flow, "expires_at": int(time.time()) + 540,
            "turnstile": {"required": False},
            "proofofwork": {"required": challenge.pow_required, "seed": challenge.seed,
                            "difficulty": challenge.difficulty}})

    def _sentinel_problem(self, step: str, login: _Transaction) -> str | None:
        """Why this request's openai-sentinel-token does not pass for `step`, or None."""
        if not self.auth.switches.require_sentinel:
            return None
        try:
            header = json.loads(request.headers.get("openai-sentinel-token", ""))
        except ValueError:
            return "openai-sentinel-token is missing or not JSON"
        if not isinstance(header, dict) or not all(isinstance(header.get(k), str)
                                                    for k in ("p", "t", "c", "id", "flow")):
            return "openai-sentinel-token must be JSON {p, t, c, id, flow}"
        with self._lock:
            challenge = self._challenges.pop(header["c"], None)  # a token is good once
        if challenge is None:
            return "the sentinel token is unknown or was used already"
        if header["flow"] != STEP_FLOWS[step] or challenge.flow != STEP_FLOWS[step]:
            return f"the sentinel token is not for flow {STEP_FLOWS[step]}"
        if not (header["id"] == challenge.device_id == login.device_id):
            return "the sentinel token belongs to another device"
        if challenge.pow_required:
            # The chat sentinel's check: FNV for an answer ending in "~S", else SHA3.
            return sentinel.check_proof(header["p"], challenge.seed, challenge.difficulty)
        return sentinel.check_requirements_token(header["p"])

    # -- the pages -----------------------------------------------------------------------------

    def _authorize(self):
        redirect_uri, state = request.args.get("redirect_uri"), request.args.get("state")
        if not redirect_uri or not state:
            return _error(400, "invalid_request", "missing redirect_uri or state")
        device_id = request.args.get("device_id") or request.cookies.get("oai-did") or ""
        cookie = secrets.token_urlsafe(24)
        with self._lock:
            self._logins[cookie] = _Transaction(redirect_uri, state, device_id)
        response = redirect("/log-in")
        response.set_cookie(LOGIN_COOKIE, cookie, secure=True, httponly=True, samesite="Lax")
        if device_id:
            response.set_cookie("oai-did", device_id, samesite="Lax")
        return response

    def _page(self):
        return ("<!DOCTYPE html><html><head><title>Log in - OpenAI</title></head><body>"
                "<div id=\"root\"></div><script src=\"/assets/auth.js\"></script></body></html>",
                200, {"Content-Type": "text/html; charset=utf-8"})

    def _step(self, step: str):
        """The transaction of this request and its JSON body, or an error answer."""
        login = self._logins.get(request.cookies.get(LOGIN_COOKIE, ""))
        if login is None:
            return None, None, _error(400, "invalid_auth_step",
                                      "Your session has ended. Please start over.")
        problem = self._sentinel_problem(step, login)
        if problem:
            return None, None, _error(403, "invalid_sentinel_token", problem)
        body = request.get_json(silent=True)
        return login, body if isinstance(body, dict) else {}, None

    def _continue(self):
        login, body, refused = self._step("authorize_continue")
        if refused:
            return refused
        username = body.get("username")
        email = username.get("value") if isinstance(username, dict) else None
        if not isinstance(email, str) or "@" not in email:
            return _error(400, "invalid_username", "Email is not valid.")
        account = self.auth.accounts.get(email.lower())
        if account is None:  # login_or_signup: an unknown address is offered a new account
            return _page_answer("create_account_password", "/create-account/password")
        login.email = account.email
        return _page_answer("login_password", "/log-in/password")

    def _password(self):
        login, body, refused = self._step("password_verify")
        if refused:
            return refused
        account = self.auth.accounts.get((login.email or "").lower())
        if account is None or body.get("password") != account.password:
            return _error(401, "invalid_username_or_password",
                          "Incorrect email address or password")
        login.password_ok = True
        return self._next(login)

    def _email_send(self):
        login = self._logins.get(request.cookies.get(LOGIN_COOKIE, ""))
        if login is None or not login.password_ok:
            return _error(400, "invalid_auth_step", "Your session has ended. Please start over.")
        self._send_code(login)
        return jsonify({"status": "sent"})

    def _email_validate(self):
        login, body, refused = self._step("email_otp_validate")
        if refused:
            return refused
        if not login.password_ok or login.email_code is None:
            return _error(400, "invalid_auth_step", "Your session has ended. Please start over.")
        if body.get("code") != login.email_code:
            return _error(401, "wrong_email_otp_code", "Incorrect code")
        login.email_ok = True
        return self._next(login)

    def _mfa(self):
        login, body, refused = self._step("mfa_verify")
        if refused:
            return refused
        account = self.auth.accounts.get((login.email or "").lower())
        if not login.password_ok or account is None or not account.has_totp:
            return _error(400, "invalid_auth_step", "Your session has ended. Please start over.")
        if (body.get("type") != "totp" or body.get("id") != login.factor_id
                or not account.totp_ok(str(body.get("code", "")))):
            return _error(401, "invalid_mfa_code", "Incorrect code")
        login.totp_ok = True
        return self._next(login)

    def _next(self, login: _Transaction):
        """The page after a passed step: the e-mailed code, the authenticator, or done."""
        account = self.auth.accounts[login.email.lower()]
        if account.email_otp and not login.email_ok:
            self._send_code(login)
            return _page_answer("email_otp_verification", "/email-verification")
        if account.has_totp and not login.totp_ok:
            return _page_answer("mfa_challenge", "/mfa-challenge/totp",
                                {"factors": [{"id": login.factor_id, "type": "totp"}]})
        challenge = secrets.token_urlsafe(16)
        with self._lock:
            self._logins[challenge] = login  # the consent step finds it by its challenge
        return _page_answer("consent", f"/api/accounts/consent?challenge={challenge}")

    def _consent(self):
        with self._lock:
            login = self._logins.pop(request.args.get("challenge", ""), None)
        if login is None or not login.password_ok:
            return _error(400, "invalid_auth_step", "Your session has ended. Please start over.")
        code = self.auth.issue_code(login.email)
        separator = "&" if "?" in login.redirect_uri else "?"
        return redirect(f"{login.redirect_uri}{separator}code={code}&state={login.state}")

    def _send_code(self, login: _Transaction) -> None:
        login.email_code = f"{secrets.randbelow(1_000_000):06d}"
        self.auth.mailbox.setdefault(login.email.lower(), []).append(login.email_code)


def _page_answer(page_type: str, path: str, payload: dict | None = None):
    origin = request.host_url.rstrip("/")
    page = {"type": page_type, **({"payload": payload} if payload else {})}
    return jsonify({"continue_url": origin + path, "method": "GET", "page": page})


def _error(status: int, code: str, message: str):
    return jsonify({"error": {"message": message, "type": "invalid_request_error",
                              "param": None, "code": code}}), status
