"""The browser we present to chatgpt.com: one Chrome, named the same way everywhere.

The TLS fingerprint (curl_cffi's impersonation target), the User-Agent, the `Sec-Ch-Ua` client
hints and the sentinel's fingerprint config all name the same Chrome version and platform, and the
config's date string, language list and the write's time zone agree with each other: the site
compares them (docs/protocol-requests.md, "One browser").
"""
from __future__ import annotations

import os
import random
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from ..transport import user_agent_for

TIME_ZONE = "America/Los_Angeles"
LANGUAGE = "en-US"
LANGUAGES = "en-US,en"
ACCEPT_LANGUAGE = "en-US,en;q=0.9"
HEAP_LIMIT = 4294967296
_SCREENS = (1920 + 1080, 1536 + 864, 2560 + 1440, 1440 + 900)
_CORES = (8, 12, 16)
# "<navigator key>−<String(value)>" with U+2212 as the separator, as the SDK writes it.
_NAVIGATOR_KEYS = ("webdriver\u2212false", "vendor\u2212Google Inc.", "cookieEnabled\u2212true",
                   "pdfViewerEnabled\u2212true", "hardwareConcurrency\u22128",
                   "geolocation\u2212[object Geolocation]")
_DOCUMENT_KEYS = ("location", "_reactListeningo0x4j1zcg8", "URL", "compatMode")
_WINDOW_KEYS = ("onfocus", "close", "chrome", "webpackChunk_N_E", "__NEXT_DATA__", "ondrag")
# Slots 18-24: whether window has ai, createPRNG, cache, data, solana, dump, InstallTrigger.
# A plain desktop Chrome has none of them.
_WINDOW_FLAGS = (0, 0, 0, 0, 0, 0, 0)
# What a config's random slots are drawn from unless the caller gives a generator: one for all
# configs (a new Random() seeds itself from the OS at each answer), reseeded in a forked worker
# as the random module reseeds its own.
_RANDOM = random.Random()
os.register_at_fork(after_in_child=_RANDOM.seed)


@dataclass(frozen=True)
class Chrome:
    """One desktop Chrome: the curl_cffi target and the headers that must match it."""

    impersonate: str
    version: int
    platform: str  # "Windows" or "macOS", as Sec-Ch-Ua-Platform names them

    @classmethod
    def from_target(cls, impersonate: str) -> Chrome:
        """`chrome152` → Chrome 152 on Windows; `chrome152_macos` → on macOS (curl_cffi's naming).
        A target that is not a desktop Chrome keeps the headers of the default one."""
        match = re.fullmatch(r"chrome(\d+)[a-z]?(_macos)?", impersonate)
        if match is None:
            return cls(impersonate, 152, "Windows")
        return cls(impersonate, int(match.group(1)), "macOS" if match.group(2) else "Windows")

    @property
    def user_agent(self) -> str:
        """The User-Agent curl_cffi sends for this target; the Sec-Ch-Ua headers are left to
        curl_cffi, which writes them as that Chrome does (its brand order and GREASE brand)."""
        return user_agent_for(f"chrome{self.version}" + ("_macos" if self.platform == "macOS"
                                                         else ""))


def js_date(now: float) -> str:
    """`String(new Date())` in our time zone, e.g. 'Mon Jun 01 2026 12:00:00 GMT-0700 (Pacific
    Daylight Time)'."""
    local = datetime.fromtimestamp(now, ZoneInfo(TIME_ZONE))
    offset = local.strftime("%z")
    name = "Pacific Daylight Time" if local.dst() else "Pacific Standard Time"
    return local.strftime("%a %b %d %Y %H:%M:%S ") + f"GMT{offset} ({name})"


def timezone_offset_min(now: float) -> int:
    """`new Date().getTimezoneOffset()`: minutes to add to local time to get UTC (480 for PST)."""
    offset = datetime.fromtimestamp(now, ZoneInfo(TIME_ZONE)).utcoffset()
    return -int(offset.total_seconds() // 60)


def sentinel_config(chrome: Chrome, *, build_id: str, sdk_url: str, now: float | None = None,
                    page_loaded_at: float | None = None,
                    rng: random.Random | None = None) -> list:
    """The 25-item fingerprint config the 2026 sentinel reads (docs/protocol-requests.md).

    Slot 3 (1 in the requirements token, the nonce in a proof) and slot 9 (elapsed milliseconds)
    are left at 0 for the caller. `now`, `page_loaded_at` (epoch seconds) and `rng` make it
    reproducible. Slot 14 is a fresh UUID per SDK instance, i.e. per config built.
    """
    now = time.time() if now is None else now
    rng = rng or _RANDOM
    loaded = now - rng.uniform(5, 120) if page_loaded_at is None else page_loaded_at
    since_load_ms = round((now - loaded) * 1000, 1)
    return [
        rng.choice(_SCREENS),
        js_date(now),
        HEAP_LIMIT,
        0,
        chrome.user_agent,
        sdk_url,
        build_id,
        LANGUAGE,
        LANGUAGES,
        0,
        rng.choice(_NAVIGATOR_KEYS),
        rng.choice(_DOCUMENT_KEYS),
        rng.choice(_WINDOW_KEYS),
        since_load_ms,
        str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "",
        rng.choice(_CORES),
        round(loaded * 1000, 1),
        *_WINDOW_FLAGS,
    ]
