"""Step 0 of a write: the home page, per origin and account (docs/protocol-requests.md).

`GET /` with a browser's navigation headers yields the site cookies (`oai-did`, `__cf_bm`), the
`data-build` id and the script URLs that the sentinel's fingerprint config quotes. The device id
(`Oai-Device-Id`) must equal the `oai-did` cookie and must not change for an account (a device id
that keeps changing marks an account as shared): it is kept in the store, so that every worker and
every instance uses the same one. The first visit of an account adopts the `oai-did` the site sets
(or makes one when the site sets none); later visits send the stored one back.

A page is re-read every 15 minutes; an origin without a home page (most reverse proxies) gets the
defaults and a device id all the same.
"""
from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from ..errors import ApiError
from ..jwt_claims import payload
from ..store import Store
from ..transport import Session, upstream_errors
from .endpoints import Upstream

PAGE_TTL = 900  # seconds; the browser reloads, peers re-read the home page every 15 minutes
# Pages kept per process: (upstream, account) pairs come from callers (their tokens, their
# reverse_proxy), so the cache is bounded; the oldest entries go first.
MAX_PAGES = 4096
PAGE_TIMEOUT = 10  # seconds a home-page GET may take
DEVICE_TTL = 400 * 86400  # as long as the site's oai-did cookie lives
DEVICE_PREFIX = "device:"
# Placeholders in the shape of a build id and number, from a 2026-06 capture; the live values of
# the home page replace them whenever it has them.
DEFAULT_BUILD_ID = "prod-dbbd612ddb47498515c3eecf8579bcafa0066e07"
DEFAULT_BUILD_NUMBER = "7823760"
_MAX_PAGE = 2_000_000
_BUILD_ID = re.compile(r'data-build="([^"]{1,100})"')
_BUILD_NUMBER = re.compile(r'data-build-number="(\d{1,12})"')
_SCRIPT_BUILD = re.compile(r"/c/([^/\"]{1,100})/_")
_SCRIPT_SRC = re.compile(r'<script[^>]+src="([^"]{1,2000})"')
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NAVIGATION_HEADERS = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
              "image/apng,*/*;q=0.8",
    "Sec-Fetch-Dest": "document", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "none",
    "Upgrade-Insecure-Requests": "1",
}


@dataclass(frozen=True)
class Page:
    """What one visit of the home page told us, and the identity of that page load."""

    build_id: str = DEFAULT_BUILD_ID
    build_number: str = DEFAULT_BUILD_NUMBER
    script_srcs: tuple[str, ...] = ()
    sdk_url: str = ""
    # Site cookies other than oai-did (e.g. __cf_bm), sent back on every later request.
    cookies: tuple[tuple[str, str], ...] = ()
    # Oai-Session-Id: one per page load.
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    loaded_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Visit:
    """A page and the account's device id, ready to be put into a session."""

    page: Page
    device_id: str

    def install(self, session: Session, upstream: Upstream) -> None:
        """Put the site cookies and `oai-did` into the session's jar for the upstream's host."""
        host = urlsplit(upstream.api_root).hostname or ""
        for name, value in (*self.page.cookies, ("oai-did", self.device_id)):
            session.cookies.set(name, value, domain=host, path="/")


_DEVICE_NAMESPACE = uuid.UUID("8c3f6a57-7a0e-4c4f-9d8e-1b0d2e6f4a11")


def device_id(access_token: str) -> str:
    """A device id derived from the account (a hash, so the token is not exposed): what an
    account uses where the site issues no `oai-did` (an upstream without a home page)."""
    return str(uuid.uuid5(_DEVICE_NAMESPACE, account_key(access_token)))


def api_headers(access_token: str, upstream: Upstream) -> dict[str, str]:
    """The headers of a plain JSON call to the backend API outside a turn (history, downloads):
    the account's bearer and derived device id, and the site as origin."""
    return {
        "Accept": "application/json",
        "Authorization": f"Bearer {access_token}",
        "Oai-Device-Id": device_id(access_token),
        "Oai-Language": "en-US",
        "Origin": upstream.origin,
        "Referer": upstream.origin + "/",
    }


def account_key(access_token: str) -> str:
    """A store key for the account behind a token: a hash of its user id (which stays the same
    across token renewals), or of the token itself when it carries none."""
    claims = payload(access_token)
    try:
        auth = claims.get("https://api.openai.com/auth") or {}
        user = auth.get("user_id") or auth.get("chatgpt_user_id") or claims.get("sub")
    except AttributeError:
        user = None
    basis = f"user:{user}" if isinstance(user, str) and user else f"token:{access_token}"
    return hashlib.sha256(basis.encode()).hexdigest()


class Bootstrap:
    """Pages per (origin, account), re-read every PAGE_TTL seconds; device ids in the store."""

    def __init__(self, store: Store | None = None, *, ttl: float = PAGE_TTL):
        self.store = store
        self.ttl = ttl
        self._pages: dict[tuple[str, str], tuple[float, Page, str]] = {}
        self._local_devices: dict[str, str] = {}  # when there is no store (tests, scripts)
        self._reading: dict[tuple[str, str], threading.Event] = {}  # pages being read, by key
        self._lock = threading.Lock()

    def visit(self, session: Session, upstream: Upstream, access_token: str,
              timeout: float) -> Visit:
        """The page and device id for this account on this upstream, from cache or a fresh GET.

        One GET at a time per page in a process: the answers that find the page missing or stale
        while another thread reads it wait for that read (at most as long as it may take)
        instead of asking the site again. A burst of answers for one account on a fresh worker
        made one GET each until the first came back: dozens of home-page loads at once, one
        more request on each of those answers' way to their first word.
        """
        account = account_key(access_token)
        key = (upstream.api_root, account)
        while True:
            with self._lock:
                cached = self._pages.get(key)
                # The device id read or stored with the page: an account's id never changes once
                # stored (the first write wins), so the store is not asked again at every answer.
                if cached and cached[0] > time.monotonic():
                    return Visit(cached[1], cached[2])
                reading = self._reading.get(key)
                if reading is None:
                    reading = self._reading[key] = threading.Event()
                    break
            if not reading.wait(min(timeout, PAGE_TIMEOUT) + 1):
                reading = None  # that read hangs: this answer reads the page itself
                break
            # The read ended: the page is cached, or it failed and the next one in reads it.
        try:
            return self._read_visit(session, upstream, access_token, key, timeout)
        finally:
            if reading is not None:
                with self._lock:
                    del self._reading[key]
                reading.set()

    def _read_visit(self, session: Session, upstream: Upstream, access_token: str,
                    key: tuple[str, str], timeout: float) -> Visit:
        """The page read from the site and the account's device id, both cached under `key`."""
        account = key[1]
        now = time.monotonic()
        stored = self._device(account)
        page, offered = self._read_page(session, upstream, stored, timeout)
        device = stored or offered or device_id(access_token)
        if not stored:
            device = self._remember_device(account, device)
        with self._lock:
            self._pages.pop(key, None)
            self._pages[key] = (now + self.ttl, page, device)
            while len(self._pages) > MAX_PAGES:
                del self._pages[next(iter(self._pages))]
        return Visit(page, device)

    def _read_page(self, session: Session, upstream: Upstream, device: str | None,
                   timeout: float) -> tuple[Page, str | None]:
        origin = upstream.origin
        sdk_url = upstream.url("/sentinel/sdk.js")
        if not upstream.has_home_page:
            return Page(sdk_url=sdk_url), None
        headers = dict(_NAVIGATION_HEADERS)
        if device:
            headers["Cookie"] = f"oai-did={device}"
        try:
            with upstream_errors("home page"):
                response = session.get(origin + "/", headers=headers,
                                       timeout=min(timeout, PAGE_TIMEOUT))
        except ApiError:
            return Page(sdk_url=sdk_url), None
        if response.status_code != 200:
            return Page(sdk_url=sdk_url), None
        cookies = {name: value for name, value in response.cookies.items()
                   if isinstance(value, str) and len(value) < 4096}
        offered = cookies.pop("oai-did", None)
        if offered is not None and not _UUID.fullmatch(offered):
            offered = None
        html = response.content[:_MAX_PAGE].decode("utf-8", "replace")
        build = _BUILD_ID.search(html) or _SCRIPT_BUILD.search(html)
        number = _BUILD_NUMBER.search(html)
        scripts = tuple(urljoin(origin + "/", src) for src in _SCRIPT_SRC.findall(html)[:20])
        page = Page(build_id=build.group(1) if build else DEFAULT_BUILD_ID,
                    build_number=number.group(1) if number else DEFAULT_BUILD_NUMBER,
                    script_srcs=scripts, sdk_url=sdk_url,
                    cookies=tuple(sorted(cookies.items())))
        return page, offered

    def _device(self, account: str) -> str | None:
        if self.store is None:
            with self._lock:
                return self._local_devices.get(account)
        value = self.store.get(DEVICE_PREFIX + account)
        found = value.get("id") if isinstance(value, dict) else None
        return found if isinstance(found, str) else None

    def _remember_device(self, account: str, device: str) -> str:
        """Keep `device` as the account's id unless another visit stored one first; the id to
        use. (Two instances visiting a new account at once: the first write wins for both, so
        the account never shows the site two devices.)"""
        if self.store is None:
            with self._lock:
                device = self._local_devices.setdefault(account, device)
                while len(self._local_devices) > MAX_PAGES:
                    del self._local_devices[next(iter(self._local_devices))]
            return device
        if self.store.add(DEVICE_PREFIX + account, {"id": device}, expire=DEVICE_TTL):
            return device
        return self._device(account) or device
