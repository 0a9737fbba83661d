"""The login pages of the emulator (protocol §10 item 1): NextAuth on the ChatGPT origin and the
Auth0 pages of the identity provider, collapsed onto the emulator's one loopback origin.

    GET  /api/auth/csrf                 {csrfToken} + csrf cookie
    POST /api/auth/signin/auth0         {url: <origin>/authorize?...}  (or an OAuthSignin error url)
    GET  /authorize                     302 /u/login/identifier?state=S, state also in the body
    GET  /u/login/identifier            200 page          POST  302 /u/login/password?state=S
    POST /u/login/password              302 /authorize/resume?state=S   or 400
    GET  /authorize/resume              302 /u/mfa-otp-challenge?state=S (MFA not yet passed)
                                        302 <origin>/api/auth/callback/auth0?code=C
    POST /u/mfa-otp-challenge           302 /authorize/resume?state=S   or 400
    GET  /api/auth/callback/auth0       302 <origin>/ + session cookie
    GET  /api/auth/session              {user, expires, accessToken} + rotated session cookie
    POST /oauth/token                   refresh_token and authorization_code grants

Failures are switched on through `AuthPages.switches` (see `AuthSwitches`); accounts, sessions and
refresh tokens are added with `add_account()`, `add_session()` and `add_refresh_token()`.
"""
from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from flask import Blueprint, jsonify, make_response, redirect, request

SESSION_COOKIE = "__Secure-next-auth.session-token"
CSRF_COOKIE = "__Host-next-auth.csrf-token"
IOS_CLIENT_ID = "pdlLIX2Y72MIl2rhLhTE9VV9bN905kBh"

CLOUDFLARE_PAGE = (
    "<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title></head><body>"
    "<div id=\"cf-please-wait\">Checking your browser</div>"
    "<script>window._cf_chl_opt={cvId: '2', cType: 'managed'};</script>"
    "<script src=\"/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1\"></script>"
    "</body></html>"
)
UNEXPECTED_PAGE = ("<!DOCTYPE html><html><head><title>Maintenance</title></head>"
                   "<body><h1>We'll be back soon</h1></body></html>")

# Step names used by the switches, one per page.
STEPS = ("csrf", "signin", "authorize", "identifier", "password", "resume", "mfa", "callback",
         "session", "oauth_token")


@dataclass
class AuthSwitches:
    """Failure injection for the login pages; `reset()` turns everything off."""

    signin_rate_limited: bool = False   # signin answers {url: .../api/auth/error?error=OAuthSignin}
    cloudflare_at: str | None = None    # this step answers 403 with a Cloudflare challenge page
    unexpected_at: str | None = None    # this step answers 200 with an unrelated HTML page
    rate_limited_at: str | None = None  # this step answers 429 (Retry-After: 30)
    state_in_body_only: bool = False    # /authorize answers 200 with the state only in a link
    session_error_style: str = "refresh_error"  # expired session: "refresh_error" or "empty"
    rotate_refresh_tokens: bool = False  # /oauth/token returns a new refresh token
    access_token_exp_in: float = 3600.0  # lifetime of minted access tokens, seconds


@dataclass
class Account:
    email: str
    password: str
    otp: str | None = None  # the one-time code the account's MFA challenge accepts


@dataclass
class _Login:
    """One Auth0 login transaction, keyed by its `state`."""

    nextauth_state: str
    redirect_uri: str
    email: str | None = None
    password_ok: bool = False
    mfa_ok: bool = False


@dataclass
class AuthPages:
    """State of the login pages. `mint(email, exp_in)` issues access tokens (the emulator's)."""

    mint: Callable[..., str]
    switches: AuthSwitches = field(default_factory=AuthSwitches)
    accounts: dict[str, Account] = field(default_factory=dict)
    sessions: dict[str, dict] = field(default_factory=dict)        # cookie -> {email, expired}
    refresh_tokens: dict[str, dict] = field(default_factory=dict)  # token -> {email, revoked}
    _logins: dict[str, _Login] = field(default_factory=dict)
    _codes: dict[str, str] = field(default_factory=dict)           # code -> email
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        """Forget accounts, sessions, tokens and logins; turn every switch off."""
        with self._lock:
            self.switches = AuthSwitches()
            for table in (self.accounts, self.sessions, self.refresh_tokens, self._logins,
                          self._codes):
                table.clear()

    def add_account(self, email: str, password: str, otp: str | None = None) -> Account:
        """An account that can sign in; with `otp`, it has MFA and that code passes it."""
        account = Account(email, password, otp)
        self.accounts[email.lower()] = account
        return account

    def add_session(self, email: str = "user@example.com") -> str:
        """A valid `__Secure-next-auth.session-token` value for `email`."""
        token = _session_cookie_value()
        self.sessions[token] = {"email": email, "expired": False}
        return token

    def expire_session(self, token: str) -> None:
        self.sessions[token]["expired"] = True

    def add_refresh_token(self, email: str = "user@example.com") -> str:
        """A valid refresh token (Auth0 issues 45-character ones, protocol §5.3)."""
        token = secrets.token_urlsafe(34)[:45]
        self.refresh_tokens[token] = {"email": email, "revoked": False}
        return token

    def revoke_refresh_token(self, token: str) -> None:
        self.refresh_tokens[token]["revoked"] = True

    def blueprint(self) -> Blueprint:
        """The routes, to register on the emulator app."""
        bp = Blueprint("emulator_auth", __name__)
        bp.before_request(self._injected_failure)
        bp.add_url_rule("/api/auth/csrf", "csrf", self._csrf)
        bp.add_url_rule("/api/auth/signin/auth0", "signin", self._signin, methods=["POST"])
        bp.add_url_rule("/authorize", "authorize", self._authorize)
        bp.add_url_rule("/u/login/identifier", "identifier", self._identifier,
                        methods=["GET", "POST"])
        bp.add_url_rule("/u/login/password", "password", self._password, methods=["GET", "POST"])
        bp.add_url_rule("/authorize/resume", "resume", self._resume)
        bp.add_url_rule("/u/mfa-otp-challenge", "mfa", self._mfa, methods=["GET", "POST"])
        bp.add_url_rule("/api/auth/callback/auth0", "callback", self._callback)
        bp.add_url_rule("/api/auth/session", "session", self._session)
        bp.add_url_rule("/oauth/token", "oauth_token", self._oauth_token, methods=["POST"])
        return bp

    # -- failure injection -------------------------------------------------------------------

    def _injected_failure(self):
        step = (request.endpoint or "").rpartition(".")[2]
        switches = self.switches
        if step == switches.cloudflare_at:
            return CLOUDFLARE_PAGE, 403, {"Content-Type": "text/html; charset=UTF-8",
                                          "cf-mitigated": "challenge"}
        if step == switches.rate_limited_at:
            return jsonify({"error": "too_many_attempts",
                            "error_description": "Too many requests"}), 429, {"Retry-After": "30"}
        if step == switches.unexpected_at:
            return UNEXPECTED_PAGE, 200, {"Content-Type": "text/html; charset=UTF-8"}
        return None

    # -- NextAuth on the ChatGPT origin ------------------------------------------------------

    def _csrf(self):
        token = secrets.token_hex(32)
        response = jsonify({"csrfToken": token})
        response.set_cookie(CSRF_COOKIE, f"{token}|{secrets.token_hex(32)}", secure=True,
                            httponly=True, samesite="Lax", path="/")
        return response

    def _signin(self):
        origin = request.host_url.rstrip("/")
        if self.switches.signin_rate_limited:
            return jsonify({"url": f"{origin}/api/auth/error?error=OAuthSignin"})
        cookie = request.cookies.get(CSRF_COOKIE, "")
        form_token = request.form.get("csrfToken", "")
        # NextAuth checks the form's token against the cookie: a flow without one cookie jar fails.
        if not form_token or cookie.split("|", 1)[0] != form_token:
            return jsonify({"url": f"{origin}/api/auth/signin?csrf=true"})
        nextauth_state = secrets.token_urlsafe(32)
        query = urlencode({
            "client_id": "TdJIcbe16WoTHtN95nyywh5E4yOo6ItG",
            "scope": "openid email profile offline_access model.request model.read "
                     "organization.read",
            "response_type": "code",
            "redirect_uri": f"{origin}/api/auth/callback/auth0",
            "audience": "https://api.openai.com/v1",
            "prompt": "login",
            "state": nextauth_state,
            "code_challenge": secrets.token_urlsafe(32),
            "code_challenge_method": "S256",
        })
        return jsonify({"url": f"{origin}/authorize?{query}"})

    def _callback(self):
        email = self._codes.pop(request.args.get("code", ""), None)
        if email is None:
            return redirect(f"{request.host_url}api/auth/error?error=OAuthCallback")
        response = redirect(request.host_url)
        response.set_cookie(SESSION_COOKIE, self.add_session(email), secure=True, httponly=True,
                            samesite="Lax", path="/")
        return response

    def _session(self):
        token = request.cookies.get(SESSION_COOKIE)
        entry = self.sessions.get(token or "")
        if entry is None:
            return jsonify({})
        user = {"id": "user-" + secrets.token_hex(12), "name": entry["email"],
                "email": entry["email"], "image": "", "picture": "", "idp": "auth0",
                "iat": 1700000000, "mfa": False, "groups": [], "intercom_hash": "x"}
        if entry["expired"]:
            if self.switches.session_error_style == "empty":
                return jsonify({})
            return jsonify({"user": user, "expires": "2030-01-01T00:00:00.000Z",
                            "error": "RefreshAccessTokenError"})
        response = jsonify({
            "user": user, "expires": "2030-01-01T00:00:00.000Z",
            "accessToken": self._mint(entry["email"]),
            "authProvider": "auth0"})
        # NextAuth re-sets the cookie on every session read; the old one stays valid (JWE).
        response.set_cookie(SESSION_COOKIE, self.add_session(entry["email"]), secure=True,
                            httponly=True, samesite="Lax", path="/")
        return response

    # -- Auth0 pages -------------------------------------------------------------------------

    def _authorize(self):
        redirect_uri = request.args.get("redirect_uri")
        if not redirect_uri or not request.args.get("state"):
            return "missing redirect_uri or state", 400
        state = secrets.token_urlsafe(24)
        self._logins[state] = _Login(request.args["state"], redirect_uri)
        target = f"/u/login/identifier?state={state}"
        body = f'Found. Redirecting to <a href="{target}">{target}</a>'
        if self.switches.state_in_body_only:
            return f"<html><body>{body}</body></html>", 200, {"Content-Type": "text/html"}
        return body, 302, {"Location": target, "Content-Type": "text/html"}

    def _identifier(self):
        state = request.values.get("state", "")
        login = self._logins.get(state)
        if login is None:
            return "Invalid state", 400
        if request.method == "GET":
            return _form_page("login/identifier", state, ("username",))
        email = request.form.get("username", "")
        if "@" not in email:
            return _form_page("login/identifier", state, ("username",),
                              error="Email is not valid."), 400
        login.email = email
        return redirect(f"/u/login/password?state={state}")

    def _password(self):
        state = request.values.get("state", "")
        login = self._logins.get(state)
        if login is None:
            return "Invalid state", 400
        if request.method == "GET":
            return _form_page("login/password", state, ("username", "password"))
        account = self.accounts.get(request.form.get("username", "").lower())
        if account is None or account.password != request.form.get("password"):
            return _form_page("login/password", state, ("username", "password"),
                              error="Wrong email or password"), 400
        login.email, login.password_ok = account.email, True
        return self._to_resume(state)

    def _mfa(self):
        state = request.values.get("state", "")
        login = self._logins.get(state)
        if login is None or not login.password_ok:
            return "Invalid state", 400
        if request.method == "GET":
            return _form_page("mfa-otp-challenge", state, ("code",))
        if request.form.get("code") != self.accounts[login.email.lower()].otp:
            return _form_page("mfa-otp-challenge", state, ("code",),
                              error="The code you entered is invalid"), 400
        login.mfa_ok = True
        return self._to_resume(state)

    def _to_resume(self, state: str):
        # Auth0 gives each stage a new state; the emulator keeps one transaction under both.
        new_state = secrets.token_urlsafe(24)
        self._logins[new_state] = self._logins.pop(state)
        return redirect(f"/authorize/resume?state={new_state}")

    def _resume(self):
        state = request.args.get("state", "")
        login = self._logins.get(state)
        if login is None or not login.password_ok:
            return "Invalid state", 400
        account = self.accounts[login.email.lower()]
        if account.otp and not login.mfa_ok:
            new_state = secrets.token_urlsafe(24)
            self._logins[new_state] = self._logins.pop(state)
            return redirect(f"/u/mfa-otp-challenge?state={new_state}")
        del self._logins[state]
        code = secrets.token_urlsafe(24)
        self._codes[code] = account.email
        query = urlencode({"code": code, "state": login.nextauth_state})
        return redirect(f"{login.redirect_uri}?{query}")

    def _oauth_token(self):
        body = request.get_json(silent=True) if request.is_json else request.form.to_dict()
        body = body if isinstance(body, dict) else {}
        grant = body.get("grant_type")
        if body.get("client_id") != IOS_CLIENT_ID:
            return _oauth_error("unauthorized_client", "Unknown client", 401)
        if grant == "refresh_token":
            entry = self.refresh_tokens.get(body.get("refresh_token") or "")
            if entry is None or entry["revoked"]:
                return _oauth_error("invalid_grant", "Unknown or invalid refresh token.", 403)
            return jsonify(self._tokens(entry["email"], rotate_from=body["refresh_token"]))
        if grant == "authorization_code":
            email = self._codes.pop(body.get("code") or "", None)
            if email is None:
                return _oauth_error("invalid_grant", "Invalid authorization code", 403)
            return jsonify(self._tokens(email, new_refresh=True))
        return _oauth_error("unsupported_grant_type", "Unsupported grant type", 400)

    def _mint(self, email: str) -> str:
        # A jti makes every issued token distinct, even two minted within the same second.
        return self.mint(email=email, exp_in=self.switches.access_token_exp_in,
                         jti=secrets.token_hex(8))

    def _tokens(self, email: str, rotate_from: str | None = None,
                new_refresh: bool = False) -> dict:
        answer = {"access_token": self._mint(email),
                  "id_token": "id." + secrets.token_urlsafe(16),
                  "scope": "openid email profile offline_access model.request model.read",
                  "expires_in": int(self.switches.access_token_exp_in), "token_type": "Bearer"}
        if new_refresh or (rotate_from and self.switches.rotate_refresh_tokens):
            if rotate_from:
                self.revoke_refresh_token(rotate_from)
            answer["refresh_token"] = self.add_refresh_token(email)
        return answer


def _session_cookie_value() -> str:
    # Real values are JWEs ("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..<iv>.<ciphertext>.<tag>").
    return ("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0.." + secrets.token_urlsafe(12) + "."
            + secrets.token_urlsafe(300) + "." + secrets.token_urlsafe(16))


def _oauth_error(error: str, description: str, status: int):
    return jsonify({"error": error, "error_description": description}), status


def _form_page(name: str, state: str, inputs: tuple[str, ...], error: str | None = None):
    fields = "".join(f'<input name="{item}">' for item in inputs)
    message = f'<span class="error">{error}</span>' if error else ""
    page = (f"<!DOCTYPE html><html><head><title>Log in | OpenAI</title></head><body>"
            f'<form method="POST" action="/u/{name}?state={state}">{message}'
            f'<input type="hidden" name="state" value="{state}">{fields}'
            f'<button type="submit" name="action" value="default">Continue</button></form>'
            f"</body></html>")
    return make_response(page)
