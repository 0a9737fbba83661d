"""The login pages of the emulator: NextAuth on the ChatGPT origin, the identity provider of today
(auth.openai.com, in auth_openai.py) and the 2023 Auth0 pages, all on the emulator's one origin.

NextAuth (both flows):
    GET  /api/auth/csrf                 {csrfToken} + csrf cookie
    POST /api/auth/signin/openai        {url: <origin>/api/accounts/authorize?...}
    POST /api/auth/signin/auth0         {url: <origin>/authorize?...}  (or an OAuthSignin error url)
    GET  /api/auth/callback/{openai,auth0}  302 <origin>/ + session cookie (chunked when long)
    GET  /api/auth/session              {user, expires, account, accessToken, sessionToken} and a
                                        rotated session cookie; the old one is refused from then on
    POST /oauth/token                   refresh_token grant: rotation, family revocation on reuse
The 2023 Auth0 pages (CHATGPT_LOGIN_FLOW=auth0):
    GET  /authorize                     302 /u/login/identifier?state=S, state also in the body
    GET  /u/login/identifier            200 page          POST  302 /u/login/password?state=S
    POST /u/login/password              302 /authorize/resume?state=S   or 400
    GET  /authorize/resume              302 /u/mfa-otp-challenge?state=S (MFA not yet passed)
                                        302 <origin>/api/auth/callback/auth0?code=C
    POST /u/mfa-otp-challenge           302 /authorize/resume?state=S   or 400

Failures are switched on through `AuthPages.switches` (see `AuthSwitches`); accounts, sessions and
refresh tokens are added with `add_account()`, `add_session()` and `add_refresh_token()`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from flask import Blueprint, jsonify, make_response, redirect, request

from .auth_openai import OpenAIAccountPages

SESSION_COOKIE = "__Secure-next-auth.session-token"
CSRF_COOKIE = "__Host-next-auth.csrf-token"
# The OAuth clients refresh tokens are issued to (protocol-auth.md): iOS before and since 2025,
# Codex. The web client's id is in the authorize URL only: it has no refresh tokens.
IOS_LEGACY_CLIENT_ID = "pdlLIX2Y72MIl2rhLhTE9VV9bN905kBh"
IOS_CLIENT_ID = "app_LlGpXReQgckcGGUo2JrYvtJK"
CODEX_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
WEB_CLIENT_ID = "app_X8zY6vW2pQ9tR3dE7nK1jL5gH"
REFRESH_CLIENTS = (IOS_LEGACY_CLIENT_ID, IOS_CLIENT_ID, CODEX_CLIENT_ID)
# NextAuth splits a cookie value into `name.0`, `name.1`, ... of at most this many characters
# (4096 bytes a cookie may take, less its estimated attributes).
COOKIE_CHUNK = 4096 - 163
# What auth.openai.com answers for a refresh token used twice (seen verbatim in 2025-2026 reports).
REFRESH_REUSED = ("Your refresh token has already been used to generate a new access token. "
                  "Please try signing in again.")
TOKEN_INVALIDATED = ("Your authentication token has been invalidated. Please try signing in "
                     "again.")

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
         "session", "oauth_token",
         # auth.openai.com (auth_openai.py)
         "signin_openai", "accounts_authorize", "login_page", "authorize_continue",
         "password_verify", "email_otp_validate", "mfa_verify", "consent", "callback_openai",
         "sentinel_req")


@dataclass
class AuthSwitches:
    """Failure injection for the login pages; `reset()` turns everything off."""

    signin_rate_limited: bool = False   # signin answers {url: .../api/auth/error?error=OAuthSignin}
    cloudflare_at: str | None = None    # this step answers 403 with a Cloudflare challenge page
    unexpected_at: str | None = None    # this step answers 200 with an unrelated HTML page
    rate_limited_at: str | None = None  # this step answers 429 (Retry-After: 30)
    state_in_body_only: bool = False    # /authorize answers 200 with the state only in a link
    session_error_style: str = "refresh_error"  # expired session: "refresh_error" or "empty"
    access_token_exp_in: float = 3600.0  # lifetime of minted access tokens, seconds
    # Characters of a minted session cookie value: real ones are JWEs of about 5 KB, more than
    # one cookie carries, so they travel as `.0`/`.1` chunks.
    session_token_chars: int = 5000
    rotate_sessions: bool = True        # /api/auth/session sets a new cookie, retiring the old
    sentinel_pow_required: bool = True  # the auth sentinel asks for a proof of work
    sentinel_pow_difficulty: str = "0fffff"
    require_sentinel: bool = True       # api/accounts/* refuse calls without a valid sentinel token


@dataclass
class Account:
    email: str
    password: str
    otp: str | None = None          # a fixed authenticator code the MFA challenge accepts
    totp_secret: str | None = None  # base32 secret of an authenticator app (RFC 6238 codes)
    email_otp: bool = False         # sign-in asks for a code e-mailed to the account

    @property
    def has_totp(self) -> bool:
        return bool(self.otp or self.totp_secret)

    def totp_ok(self, code: str) -> bool:
        if self.otp and hmac.compare_digest(code, self.otp):
            return True
        if self.totp_secret:
            now = time.time()
            return any(hmac.compare_digest(code, totp(self.totp_secret, now + drift))
                       for drift in (-30, 0, 30))
        return False


def totp(secret: str, at: float | None = None) -> str:
    """The six-digit RFC 6238 code of base32 `secret` at unix time `at` (now)."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // 30)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{number % 1_000_000:06d}"


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
    # cookie -> {email, expired, rotated (a newer cookie replaced it)}
    sessions: dict[str, dict] = field(default_factory=dict)
    # token -> {email, client_id, family, used, revoked}
    refresh_tokens: dict[str, dict] = field(default_factory=dict)
    # e-mail -> the one-time codes sent to it, newest last (the tests' mailbox)
    mailbox: dict[str, list[str]] = field(default_factory=dict)
    # e-mails whose access tokens GET /backend-api/me refuses (revoked, as after a password change)
    invalidated: set[str] = field(default_factory=set)
    _logins: dict[str, _Login] = field(default_factory=dict)
    _codes: dict[str, str] = field(default_factory=dict)           # code -> email
    _lock: threading.Lock = field(default_factory=threading.Lock)
    openai: OpenAIAccountPages = field(init=False)

    def __post_init__(self):
        self.openai = OpenAIAccountPages(self)

    def reset(self) -> None:
        """Forget accounts, sessions, tokens and logins; turn every switch off."""
        with self._lock:
            self.switches = AuthSwitches()
            for table in (self.accounts, self.sessions, self.refresh_tokens, self._logins,
                          self._codes, self.mailbox, self.invalidated):
                table.clear()
            self.openai.reset()

    def add_account(self, email: str, password: str, otp: str | None = None, *,
                    totp_secret: str | None = None, email_otp: bool = False) -> Account:
        """An account that can sign in. `otp` (a fixed code) or `totp_secret` give it an
        authenticator second factor; `email_otp` makes sign-in ask for an e-mailed code."""
        account = Account(email, password, otp, totp_secret, email_otp)
        self.accounts[email.lower()] = account
        return account

    def add_session(self, email: str = "user@example.com") -> str:
        """A valid `__Secure-next-auth.session-token` value for `email`."""
        token = _session_cookie_value(self.switches.session_token_chars)
        with self._lock:
            self.sessions[token] = {"email": email, "expired": False, "rotated": False}
        return token

    def expire_session(self, token: str) -> None:
        self.sessions[token]["expired"] = True

    def live_sessions(self, email: str) -> list[str]:
        """The session cookies of `email` that are still accepted."""
        return [token for token, entry in self.sessions.items()
                if entry["email"] == email and not entry["expired"] and not entry["rotated"]]

    def add_refresh_token(self, email: str = "user@example.com",
                          client_id: str = IOS_LEGACY_CLIENT_ID, family: str | None = None) -> str:
        """A valid refresh token issued to OAuth client `client_id`."""
        token = "rt_" + secrets.token_urlsafe(32)
        with self._lock:
            self.refresh_tokens[token] = {"email": email, "client_id": client_id,
                                          "family": family or secrets.token_hex(8),
                                          "used": False, "revoked": False}
        return token

    def revoke_refresh_token(self, token: str) -> None:
        self.refresh_tokens[token]["revoked"] = True

    def invalidate_access_tokens(self, email: str) -> None:
        """From now on GET /backend-api/me answers 401 token_invalidated for `email`'s tokens,
        while /api/auth/session still hands them out (as the real site can)."""
        self.invalidated.add(email.lower())

    def blueprint(self) -> Blueprint:
        """The routes, to register on the emulator app."""
        bp = Blueprint("emulator_auth", __name__)
        bp.before_request(self._injected_failure)
        bp.add_url_rule("/api/auth/csrf", "csrf", self._csrf)
        bp.add_url_rule("/api/auth/signin/auth0", "signin", self._signin, methods=["POST"])
        bp.add_url_rule("/api/auth/signin/openai", "signin_openai", self._signin_openai,
                        methods=["POST"])
        bp.add_url_rule("/authorize", "authorize", self._authorize)
        bp.add_url_rule("/u/login/identifier", "identifier", self._identifier,
                        methods=["GET", "POST"])
        bp.add_url_rule("/u/login/password", "password", self._password, methods=["GET", "POST"])
        bp.add_url_rule("/authorize/resume", "resume", self._resume)
        bp.add_url_rule("/u/mfa-otp-challenge", "mfa", self._mfa, methods=["GET", "POST"])
        bp.add_url_rule("/api/auth/callback/auth0", "callback", self._callback)
        bp.add_url_rule("/api/auth/callback/openai", "callback_openai", self._callback)
        bp.add_url_rule("/api/auth/session", "session", self._session)
        bp.add_url_rule("/oauth/token", "oauth_token", self._oauth_token, methods=["POST"])
        self.openai.add_routes(bp)
        return bp

    def issue_code(self, email: str) -> str:
        """An authorization code for `email`, redeemed by the NextAuth callback."""
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = email
        return code

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

    def _signin_refused(self, origin: str):
        """NextAuth's answer to a sign-in POST it refuses (a url to its error or sign-in page),
        or None to go on."""
        if self.switches.signin_rate_limited:
            return jsonify({"url": f"{origin}/api/auth/error?error=OAuthSignin"})
        cookie = request.cookies.get(CSRF_COOKIE, "")
        form_token = request.form.get("csrfToken", "")
        # NextAuth checks the form's token against the cookie: a flow without one cookie jar fails.
        if not form_token or cookie.split("|", 1)[0] != form_token:
            return jsonify({"url": f"{origin}/api/auth/signin?csrf=true"})
        return None

    def _signin(self):
        origin = request.host_url.rstrip("/")
        if refused := self._signin_refused(origin):
            return refused
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

    def _signin_openai(self):
        origin = request.host_url.rstrip("/")
        if refused := self._signin_refused(origin):
            return refused
        query = urlencode({
            "client_id": WEB_CLIENT_ID,
            "scope": "openid email profile offline_access model.request model.read "
                     "organization.read organization.write",
            "response_type": "code",
            "redirect_uri": f"{origin}/api/auth/callback/openai",
            "audience": "https://api.openai.com/v1",
            "device_id": request.args.get("ext-oai-did", ""),
            "prompt": request.args.get("prompt", "login"),
            "screen_hint": request.args.get("screen_hint", ""),
            "login_hint": request.args.get("login_hint", ""),
            "state": secrets.token_urlsafe(32),
            "code_challenge": secrets.token_urlsafe(32),
            "code_challenge_method": "S256",
        })
        return jsonify({"url": f"{origin}/api/accounts/authorize?{query}"})

    def _callback(self):
        with self._lock:
            email = self._codes.pop(request.args.get("code", ""), None)
        if email is None:
            return redirect(f"{request.host_url}api/auth/error?error=OAuthCallback")
        response = redirect(request.host_url)
        set_session_cookie(response, self.add_session(email))
        return response

    def session_cookie(self) -> str | None:
        """The session cookie of this request, whole or joined from its numbered chunks."""
        whole = request.cookies.get(SESSION_COOKIE)
        if whole:
            return whole
        pieces = []
        while (piece := request.cookies.get(f"{SESSION_COOKIE}.{len(pieces)}")) is not None:
            pieces.append(piece)
        return "".join(pieces) or None

    def _session(self):
        token = self.session_cookie()
        with self._lock:
            entry = self.sessions.get(token or "")
            # A rotated cookie is dead: NextAuth's JWE of today carries a one-time rotation.
            if entry is None or entry["rotated"]:
                return jsonify({})
            if not entry["expired"] and self.switches.rotate_sessions:
                entry["rotated"] = True
        email = entry["email"]
        user = {"id": "user-" + hashlib.sha256(email.encode()).hexdigest()[:24], "name": email,
                "email": email, "image": "", "picture": "", "idp": "openai",
                "iat": 1700000000, "mfa": False, "groups": [], "intercom_hash": "x"}
        if entry["expired"]:
            if self.switches.session_error_style == "empty":
                return jsonify({})
            return jsonify({"user": user, "expires": "2030-01-01T00:00:00.000Z",
                            "error": "RefreshAccessTokenError"})
        new_token = self.add_session(email) if self.switches.rotate_sessions else token
        response = jsonify({
            "WARNING_BANNER": "Do not share this token with anyone.",
            "user": user, "expires": "2030-01-01T00:00:00.000Z",
            "account": {"id": hashlib.sha256(email.encode()).hexdigest()[:32],
                        "planType": "free", "structure": "personal"},
            "accessToken": self._mint(email),
            "authProvider": "openai",
            "sessionToken": new_token,
            "rumViewTags": {"light_account": {"fetched": False}}})
        if self.switches.rotate_sessions:
            set_session_cookie(response, new_token)
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
        if grant == "authorization_code":
            with self._lock:
                email = self._codes.pop(body.get("code") or "", None)
            if email is None:
                return _oauth_error(403, "invalid_grant", "Invalid authorization code")
            return jsonify(self._tokens(email, body.get("client_id") or WEB_CLIENT_ID))
        if grant != "refresh_token":
            return _oauth_error(400, "unsupported_grant_type", "Unsupported grant type")
        with self._lock:
            entry = self.refresh_tokens.get(body.get("refresh_token") or "")
            if entry is None:
                return _oauth_error(401, "refresh_token_expired",
                                    "Could not validate your refresh token. Please try signing "
                                    "in again.")
            if body.get("client_id") != entry["client_id"]:
                # Nothing is spent: the token stays usable with its own client.
                return _oauth_error(401, "invalid_client",
                                    "The refresh token was not issued to this client.")
            if entry["revoked"]:
                return _oauth_error(401, "refresh_token_invalidated",
                                    "Your refresh token has been invalidated. Please try signing "
                                    "in again.")
            if entry["used"]:
                # Reuse means a copy leaked: the whole family dies, the newest token included.
                for other in self.refresh_tokens.values():
                    if other["family"] == entry["family"]:
                        other["revoked"] = True
                return _oauth_error(401, "refresh_token_reused", REFRESH_REUSED)
            entry["used"] = True
        answer = self._tokens(entry["email"], entry["client_id"])
        answer["refresh_token"] = self.add_refresh_token(entry["email"], entry["client_id"],
                                                         entry["family"])
        return jsonify(answer)

    def _mint(self, email: str, client_id: str = WEB_CLIENT_ID) -> str:
        # A jti makes every issued token distinct, even two minted within the same second.
        return self.mint(email=email, exp_in=self.switches.access_token_exp_in,
                         jti=secrets.token_hex(8), client_id=client_id)

    def _tokens(self, email: str, client_id: str) -> dict:
        return {"access_token": self._mint(email, client_id),
                "id_token": "id." + secrets.token_urlsafe(16),
                "scope": "openid email profile offline_access model.request model.read",
                "expires_in": int(self.switches.access_token_exp_in), "token_type": "Bearer"}


def set_session_cookie(response, token: str) -> None:
    """Set the session cookie as NextAuth does: whole when it fits in one cookie, else in
    numbered chunks (and the other form cleared, so that a browser never holds both)."""
    options = {"secure": True, "httponly": True, "samesite": "Lax", "path": "/"}
    if len(token) <= COOKIE_CHUNK:
        response.set_cookie(SESSION_COOKIE, token, **options)
        return
    chunks = [token[i:i + COOKIE_CHUNK] for i in range(0, len(token), COOKIE_CHUNK)]
    for index, chunk in enumerate(chunks):
        response.set_cookie(f"{SESSION_COOKIE}.{index}", chunk, **options)
    response.set_cookie(SESSION_COOKIE, "", expires=0, **options)


def _session_cookie_value(chars: int) -> str:
    # Real values are JWEs ("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..<iv>.<ciphertext>.<tag>").
    head = "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0.." + secrets.token_urlsafe(12) + "."
    tail = "." + secrets.token_urlsafe(16)
    body_chars = max(16, chars - len(head) - len(tail))
    return head + secrets.token_urlsafe(body_chars)[:body_chars] + tail


def _oauth_error(status: int, code: str, message: str):
    """auth.openai.com's error shape of today (OpenAI API style)."""
    return jsonify({"error": {"message": message, "type": "invalid_request_error",
                              "param": None, "code": code}}), status


def _form_page(name: str, state: str, inputs: tuple[str, ...], error: str | None = None):
    fields = "".join(f'<input name="{item}">' for item in inputs)
    message = f'<span class="error">{error}</span>' if error else ""
    page = (f"<!DOCTYPE html><html><head><title>Log in | OpenAI</title></head><body>"
            f'<form method="POST" action="/u/{name}?state={state}">{message}'
            f'<input type="hidden" name="state" value="{state}">{fields}'
            f'<button type="submit" name="action" value="default">Continue</button></form>'
            f"</body></html>")
    return make_response(page)
