"""What every sign-in shares: one curl_cffi session (one cookie jar) that follows redirects only
within the configured origins, the checks each step makes, NextAuth's session cookie (whole or in
numbered chunks) and its exchange at `/api/auth/session`. The flows themselves are in
signin_openai.py (today's) and signin_auth0.py (2023); upstream/auth.py is their entry point.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urljoin, urlsplit

from ..config import Config
from ..transport import Response, Session, new_session, upstream_errors
from .errors import is_cloudflare_page, login_error

SESSION_COOKIE = "__Secure-next-auth.session-token"
# NextAuth splits a longer cookie value into `name.0`, `name.1`, ...: 4096 bytes per cookie less
# its estimate of what the attributes take (163).
COOKIE_CHUNK = 4096 - 163
MAX_SESSION_CHUNKS = 10
STEP_TIMEOUT = 30.0
MAX_REDIRECTS = 5
HEADERS = {"Accept-Language": "en-US,en;q=0.9"}


@dataclass(frozen=True)
class LoginResult:
    """An access token, plus the credentials the upstream issued anew while getting it."""

    access_token: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)  # a rotated or new session cookie
    refresh_token: str | None = field(default=None, repr=False)  # the rotated refresh token
    second_factor: bool = False  # the login passed a one-time code (e-mailed or authenticator)
    client_id: str | None = None  # the OAuth client that took the refresh token


def session_cookie_header(token: str) -> str:
    """The Cookie header that carries session `token` as NextAuth expects: one cookie when it
    fits, else `name.0`, `name.1`, ... of COOKIE_CHUNK characters."""
    if len(token) <= COOKIE_CHUNK:
        return f"{SESSION_COOKIE}={token}"
    chunks = [token[i:i + COOKIE_CHUNK] for i in range(0, len(token), COOKIE_CHUNK)]
    return "; ".join(f"{SESSION_COOKIE}.{n}={chunk}" for n, chunk in enumerate(chunks))


def join_session_token(text: str) -> str:
    """The session token in what a caller pasted: the value itself (as devtools shows the joined
    cookie), or a Cookie header / list of `name=value` pairs, whose numbered chunks are joined."""
    text = text.strip()
    if SESSION_COOKIE not in text:
        return text
    fields = (pair.partition("=") for pair in re.split(r"[;\n]", text))
    whole, pieces = _session_cookie_parts((name.strip(), value.strip())
                                          for name, _, value in fields)
    if whole:
        return whole
    if pieces and sorted(pieces) == list(range(len(pieces))):
        return "".join(pieces[n] for n in sorted(pieces))
    return text


class SignInFlow:
    """One login: one curl_cffi session (one cookie jar) and the checks every step shares."""

    def __init__(self, config: Config):
        self.config = config
        self.session: Session = new_session(config)
        # Redirects are followed only within the two configured origins: the flow must not be
        # steered to a host the operator did not choose.
        self.origins = {origin(config.base_url), origin(config.auth_url)}
        self._cookie_from_answers: str | None = None

    def base(self, path: str) -> str:
        return self.config.base_url + path

    def auth(self, path: str) -> str:
        return self.config.auth_url + path

    def get(self, step: str, url: str, cookie: str | None = None) -> Response:
        # A given cookie goes in the header as is: the jar would re-flag `__Secure-` cookies.
        headers = {**HEADERS, "Cookie": cookie} if cookie else HEADERS
        with upstream_errors(step):
            response = self.session.get(url, headers=headers, timeout=STEP_TIMEOUT)
        self._remember_session_cookie(response)
        return response

    def post(self, step: str, url: str, headers: dict | None = None, **kwargs) -> Response:
        with upstream_errors(step):
            response = self.session.post(url, headers={**HEADERS, **(headers or {})},
                                         timeout=STEP_TIMEOUT, **kwargs)
        self._remember_session_cookie(response)
        return response

    def open_page(self, step: str, url: str) -> Response:
        """GET `url` and follow its redirects (within our origins) to the page they end on."""
        if origin(url) not in self.origins:
            raise login_error("login_failed", step, "the sign-in URL leads to an unexpected host")
        for _ in range(MAX_REDIRECTS):
            response = self.get(step, url)
            if response.status_code not in (301, 302, 303, 307, 308):
                return self.check(step, response)
            url = self.redirect(step, response)
        raise login_error("login_failed", step, "too many redirects")

    def cookies(self) -> list[list[str]]:
        """This flow's cookie jar as [name, value, domain, path] rows (secrets: encrypt them)."""
        return [[c.name, c.value or "", c.domain or "", c.path or "/"]
                for c in self.session.cookies.jar]

    def restore_cookies(self, rows: list) -> None:
        for row in rows:
            if isinstance(row, list) and len(row) == 4 and all(isinstance(v, str) for v in row):
                name, value, domain, path = row
                with warnings.catch_warnings():
                    # curl_cffi notes that a `__Host-` cookie keeps its host and path "/": it
                    # does, as it did when it was read.
                    warnings.simplefilter("ignore")
                    self.session.cookies.set(name, value, domain=domain, path=path)

    def check(self, step: str, response: Response, ok: tuple[int, ...] = (200,)) -> Response:
        """Return `response` if its status is in `ok`; else the error for Cloudflare, a rate
        limit or an unexpected answer at `step`."""
        if response.status_code in ok and not is_cloudflare_page(response.content):
            return response
        if is_cloudflare_page(response.content):
            raise login_error("login_failed", step,
                              "the upstream answered with a Cloudflare challenge page; use a "
                              "residential CHATGPT_PROXY or a session token")
        if response.status_code == 429:
            raise login_error("login_rate_limited", step,
                              retry_after=_retry_after(response))
        raise login_error("login_failed", step,
                          f"unexpected answer (HTTP {response.status_code})")

    def json(self, step: str, response: Response) -> dict:
        """The JSON object of a 200 answer at `step`."""
        self.check(step, response)
        try:
            data = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            raise login_error("login_failed", step, "the answer is not the expected JSON")
        return data

    def next_auth_signin(self, provider_path: str) -> str:
        """NextAuth's sign-in, where both login flows begin: its CSRF token, then the POST to
        `provider_path` (e.g. "/api/auth/signin/auth0?prompt=login"); the authorize URL it
        answers.

        :raise ApiError: login_failed without a token or a url; login_rate_limited when the url
            is NextAuth's error page, how it reports a refused sign-in (a rate limit).
        """
        csrf = self.json("login: csrf", self.get("login: csrf", self.base("/api/auth/csrf")))
        csrf_token = csrf.get("csrfToken")
        if not isinstance(csrf_token, str):
            raise login_error("login_failed", "login: csrf", "the answer has no csrfToken")
        step = "login: signin"
        response = self.post(step, self.base(provider_path),
                             data={"callbackUrl": "/", "csrfToken": csrf_token, "json": "true"})
        authorize_url = self.json(step, response).get("url")
        if not isinstance(authorize_url, str):
            raise login_error("login_failed", step, "the answer has no url")
        if (query_value(authorize_url, "error")
                or urlsplit(authorize_url).path.endswith("/api/auth/error")):
            raise login_error("login_rate_limited", step)
        return authorize_url

    def redirect(self, step: str, response: Response, path: str | None = None) -> str:
        """The absolute Location of a redirect at `step`, which must lead to one of our origins
        (and to `path`, if given)."""
        self.check(step, response, ok=(301, 302, 303, 307, 308))
        location = response.headers.get("Location") or ""
        target = urljoin(str(response.url or ""), location) if location else ""
        if not target or origin(target) not in self.origins:
            raise login_error("login_failed", step, "unexpected redirect")
        if path and not urlsplit(target).path.endswith(path):
            raise login_error("login_failed", step, "unexpected redirect")
        return target

    def exchange_session(self, step: str, refused_code: str,
                         given: str | None = None) -> LoginResult:
        """`GET /api/auth/session`; `refused_code` is the outcome when it has no access token.

        With `given`, that session cookie is sent; otherwise the one in this flow's jar is.
        """
        cookie = session_cookie_header(given) if given else None
        response = self.get(step, self.base("/api/auth/session"), cookie=cookie)
        if refused(response, (401, 403)):
            raise login_error(refused_code, step)
        answer = self.json(step, response)
        access_token = answer.get("accessToken")
        # NextAuth answers 200 `{}` (or with error RefreshAccessTokenError) for a dead session.
        if answer.get("error") or not isinstance(access_token, str) or not access_token:
            raise login_error(refused_code, step)
        rotated = self.session_token()
        if rotated is None and isinstance(answer.get("sessionToken"), str):
            # The 2026 answer also names the session token in its body.
            rotated = answer["sessionToken"] or None
        if given is not None and rotated == given:
            rotated = None
        return LoginResult(access_token, session_token=rotated)

    def session_token(self) -> str | None:
        """The newest session cookie the upstream set in this flow, if any."""
        return self._cookie_from_answers

    def _remember_session_cookie(self, response: Response) -> None:
        token = _session_cookie_in(response)
        if token:
            self._cookie_from_answers = token


def refused(response: Response, statuses: tuple[int, ...] = (400, 401, 403)) -> bool:
    """True if the provider refused what we sent (as opposed to a Cloudflare wall)."""
    return response.status_code in statuses and not is_cloudflare_page(response.content)


def error_code(response: Response) -> str | None:
    """The error code of an OAuth / auth.openai.com JSON answer: `{"error": "<code>"}` (OAuth)
    or `{"error": {"code": "<code>", ...}}` (2026)."""
    try:
        answer = json.loads(response.content[:100_000])
    except (ValueError, UnicodeDecodeError):
        return None
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        error = error.get("code")
    return error if isinstance(error, str) else None


def _session_cookie_parts(pairs) -> tuple[str | None, dict[int, str]]:
    """The whole session cookie and its numbered pieces among (name, value) `pairs`: NextAuth
    splits a cookie over 4 KB into `name.0`, `name.1`, ..."""
    whole, pieces = None, {}
    for name, value in pairs:
        if name == SESSION_COOKIE:
            whole = value
        elif name.startswith(SESSION_COOKIE + ".") and name.rsplit(".", 1)[1].isdigit():
            pieces[int(name.rsplit(".", 1)[1])] = value
    return whole, pieces


def _session_cookie_in(response: Response) -> str | None:
    """The session cookie set by `response`'s Set-Cookie headers, its pieces joined in order."""
    fields = (header.partition("=") for header in _set_cookie_headers(response))
    set_cookies = ((name.strip(), rest.split(";", 1)[0].strip()) for name, _, rest in fields)
    # An empty value is a deletion (NextAuth clears the cookie of a dead session).
    whole, pieces = _session_cookie_parts((name, value) for name, value in set_cookies if value)
    if whole:
        return whole
    if pieces:
        return "".join(pieces[index] for index in sorted(pieces))
    return None


def _set_cookie_headers(response: Response) -> list[str]:
    headers = response.headers
    if hasattr(headers, "get_list"):
        return list(headers.get_list("set-cookie") or [])
    value = headers.get("set-cookie")
    return [value] if value else []


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def query_value(url: str, name: str) -> str | None:
    values = parse_qs(urlsplit(url).query).get(name)
    return values[0] if values else None


def _retry_after(response: Response) -> float | None:
    try:
        return float(response.headers.get("Retry-After"))
    except (TypeError, ValueError):
        return None
