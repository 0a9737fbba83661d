"""The sign-in of today (CHATGPT_LOGIN_FLOW=openai): NextAuth's `openai` provider hands over to
auth.openai.com, whose steps are JSON calls; each answer names the next page (`page.type`) and
where to go (`continue_url`), and each `api/accounts/*` call carries the `openai-sentinel-token`
of its flow. See docs/protocol-auth.md.
"""
from __future__ import annotations

import json
import uuid
from urllib.parse import urlencode, urlsplit

from ..config import Config
from ..errors import ApiError
from ..transport import upstream_errors
from .browser import Chrome, sentinel_config
from .errors import is_cloudflare_page, login_error
from .pow import DEFAULT_BUILD_ID, ProofOfWorkSolver, requirements_token_2026
from .signin_flow import (
    HEADERS,
    MAX_REDIRECTS,
    STEP_TIMEOUT,
    LoginResult,
    SignInFlow,
    error_code,
    origin,
)

MAX_PAGES = 8
# auth.openai.com page types (the `page.type` of each JSON answer) and what they ask for.
_PASSWORD_PAGES = {"login_password"}
_EMAIL_CODE_PAGES = {"email_otp_verification", "email_otp_send"}
_TOTP_PAGES = {"mfa_challenge", "mfa_verify", "totp_challenge"}
_SIGNUP_PAGES = {"create_account_password", "create_account", "about_you"}


class PendingLogin(dict):
    """A sign-in stopped at an e-mailed code: the cookie jar and page that a later call with the
    code resumes (a new sign-in would mail a new code and void the one the caller holds).
    Holds login cookies: whoever keeps it must encrypt it."""


class OpenAISignIn:
    """The sign-in of today: NextAuth's `openai` provider, then auth.openai.com's JSON pages."""

    def __init__(self, config: Config):
        self.config = config
        self.flow = SignInFlow(config)
        self.chrome = Chrome.from_target(config.impersonate)
        self.solver = ProofOfWorkSolver(max_difficulty=config.pow_max_difficulty)
        self.device_id = str(uuid.uuid4())
        self.second_factor = False
        self.resumed = False

    def run(self, email: str, password: str, otp: str | None,
            pending: PendingLogin | None) -> LoginResult:
        flow = self.flow
        with flow.session:
            if pending:
                answer = self._resume(pending)
            else:
                self._start(email)
                answer = self._accounts("login: email", "/api/accounts/authorize/continue",
                                        "authorize_continue",
                                        {"username": {"kind": "email", "value": email}},
                                        refused_code="invalid_credentials")
            code = "".join(otp.split()) if otp else None  # apps show "123 456"
            for _ in range(MAX_PAGES):
                page = answer.get("page") if isinstance(answer.get("page"), dict) else {}
                kind = page.get("type")
                if kind in _PASSWORD_PAGES:
                    answer = self._accounts("login: password", "/api/accounts/password/verify",
                                            "password_verify", {"password": password},
                                            refused_code="invalid_credentials")
                elif kind in _SIGNUP_PAGES:
                    raise login_error("invalid_credentials", "login: email",
                                      "no account uses this e-mail address")
                elif kind in _EMAIL_CODE_PAGES:
                    answer = self._email_code(code)
                    code = None  # one code per call: another page asking for one needs a new one
                elif kind in _TOTP_PAGES:
                    answer = self._totp(page, code)
                    code = None
                elif isinstance(answer.get("continue_url"), str):
                    self._follow_to_callback("login: callback", answer["continue_url"])
                    break
                else:
                    raise login_error("login_failed", "login: page",
                                      "an answer named no known page and no continue_url")
            else:
                raise login_error("login_failed", "login: page", "too many pages")
            result = flow.exchange_session("login: session", "login_failed")
        return LoginResult(result.access_token, result.session_token,
                           second_factor=self.second_factor)

    def _start(self, email: str) -> None:
        flow = self.flow
        query = urlencode({"prompt": "login", "ext-oai-did": self.device_id,
                           "screen_hint": "login_or_signup", "login_hint": email,
                           "auth_session_logging_id": str(uuid.uuid4())})
        authorize_url = flow.next_auth_signin("/api/auth/signin/openai?" + query)
        step = "login: authorize"
        page = flow.open_page(step, authorize_url)
        # /authorize always sends the browser on to the sign-in page: an answer of its own is
        # an error or maintenance page.
        if page.url and urlsplit(str(page.url)).path == urlsplit(authorize_url).path:
            raise login_error("login_failed", step, "the sign-in page did not open")

    def _email_code(self, code: str | None) -> dict:
        step = "login: e-mailed code"
        self.second_factor = True
        # A new sign-in mails a new code and voids older ones: a code the caller already holds
        # belongs to the sign-in that stopped here before, which the next call resumes.
        if not code or not self.resumed:
            error = login_error("mfa_required", step, "the account asks for the one-time code "
                                "just e-mailed to it: call again with it as otp within a few "
                                "minutes")
            error.param = "otp"
            error.pending = PendingLogin(cookies=self.flow.cookies(), device_id=self.device_id,
                                         page={"type": "email_otp_verification"})
            raise error
        return self._accounts(step, "/api/accounts/email-otp/validate", "email_otp_validate",
                              {"code": code}, refused_code="invalid_otp",
                              refused_reason="the e-mailed one-time code was refused")

    def _totp(self, page: dict, code: str | None) -> dict:
        step = "login: authenticator code"
        self.second_factor = True
        if not code:
            error = login_error("mfa_required", step, "the account has two-factor "
                                "authentication: pass the authenticator app's current code as otp")
            error.param = "otp"
            raise error
        payload = page.get("payload") if isinstance(page.get("payload"), dict) else {}
        factors = payload.get("factors") if isinstance(payload.get("factors"), list) else []
        factor = next((f for f in factors if isinstance(f, dict) and f.get("type") == "totp"
                       and isinstance(f.get("id"), str)), None)
        if factor is None:
            raise login_error("login_failed", step, "the page offers no authenticator factor")
        return self._accounts(step, "/api/accounts/mfa/verify", "mfa_verify",
                              {"type": "totp", "id": factor["id"], "code": code},
                              refused_code="invalid_otp",
                              refused_reason="the authenticator code was refused")

    def _resume(self, pending: PendingLogin) -> dict:
        self.resumed = True
        self.device_id = str(pending.get("device_id") or self.device_id)
        self.flow.restore_cookies(pending.get("cookies") or [])
        return {"page": pending.get("page") or {}}

    def _accounts(self, step: str, path: str, flow_name: str, body: dict, *, refused_code: str,
                  refused_reason: str | None = None) -> dict:
        """POST one auth.openai.com step with its sentinel token; the JSON answer, routed by
        its error code when it has one."""
        flow = self.flow
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Origin": origin(flow.config.auth_url),
                   "openai-sentinel-token": self._sentinel_token(step, flow_name)}
        response = flow.post(step, flow.auth(path), data=json.dumps(body), headers=headers)
        if is_cloudflare_page(response.content) or response.status_code == 429:
            flow.check(step, response)
        try:
            answer = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            answer = None
        if not isinstance(answer, dict):
            flow.check(step, response)
            raise login_error("login_failed", step, "the answer is not the expected JSON")
        error = answer.get("error")
        if error or response.status_code >= 400:
            code = error_code(response) or ""
            if "sentinel" in code:
                raise login_error("login_failed", step, "the anti-bot check refused the call")
            if code == "invalid_auth_step":
                raise login_error("login_failed", step, "the sign-in session was not found "
                                  "(its cookies were refused or it expired)")
            if response.status_code in (400, 401, 403):
                raise login_error(refused_code, step, refused_reason)
            flow.check(step, response)
        return answer

    def _sentinel_token(self, step: str, flow_name: str) -> str:
        """The `openai-sentinel-token` header of one step: JSON {p, t, c, id, flow}, where `c`
        comes from the sentinel's /req for this flow and `p` is the proof of work it asked for."""
        flow = self.flow
        config = self._fingerprint()
        p = requirements_token_2026(config)
        with upstream_errors(step + " (sentinel)"):
            response = flow.session.post(
                sentinel_url(self.config), timeout=STEP_TIMEOUT,
                data=json.dumps({"p": p, "id": self.device_id, "flow": flow_name},
                                separators=(",", ":")),
                headers={**HEADERS, "Content-Type": "text/plain;charset=UTF-8"})
        answer = flow.json(step + " (sentinel)", response)
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise login_error("login_failed", step, "the sentinel answer has no token")
        proof = p
        work = answer.get("proofofwork") if isinstance(answer.get("proofofwork"), dict) else {}
        if work.get("required"):
            try:
                proof = self.solver.fnv_proof_token(str(work.get("seed", "")),
                                                    str(work.get("difficulty", "")), config)
            except ApiError:
                raise login_error("login_failed", step,
                                  "the sentinel's proof of work could not be solved") from None
        return json.dumps({"p": proof, "t": "", "c": token, "id": self.device_id,
                           "flow": flow_name}, separators=(",", ":"))

    def _fingerprint(self) -> list:
        """The browser config of the auth pages' sentinel: the 2026 layout, but the screen as
        "WIDTHxHEIGHT" text in slot 0, as sentinel.openai.com's SDK writes it (the chat SDK
        writes a number)."""
        sdk_url = origin(sentinel_url(self.config)) + "/backend-api/sentinel/sdk.js"
        config = sentinel_config(self.chrome, build_id=DEFAULT_BUILD_ID, sdk_url=sdk_url)
        config[0] = "1920x1080"
        return config

    def _follow_to_callback(self, step: str, url: str) -> None:
        """Follow `continue_url` through its redirects to NextAuth's callback, which sets the
        session cookie."""
        flow = self.flow
        if origin(url) not in flow.origins:
            raise login_error("login_failed", step, "the next page is on an unexpected host")
        for _ in range(MAX_REDIRECTS):
            response = flow.get(step, url)
            if "/api/auth/callback/" in urlsplit(url).path:
                flow.redirect(step, response)  # NextAuth answers 302 home, or to its error page
                if urlsplit(response.headers.get("Location") or "").path.endswith(
                        "/api/auth/error"):
                    raise login_error("login_failed", step, "the callback was refused")
                if not flow.session_token():
                    raise login_error("login_failed", step, "no session cookie was set")
                return
            url = flow.redirect(step, response)
        raise login_error("login_failed", step, "too many redirects")


def sentinel_url(config: Config) -> str:
    """The sentinel that auth.openai.com's pages call: sentinel.openai.com beside auth.openai.com;
    for any other CHATGPT_AUTH_URL (a mirror, the emulator) the same origin serves it."""
    parts = urlsplit(config.auth_url)
    host = parts.netloc
    if host.startswith("auth."):
        host = "sentinel." + host[len("auth."):]
    return f"{parts.scheme}://{host}/backend-api/sentinel/req"


