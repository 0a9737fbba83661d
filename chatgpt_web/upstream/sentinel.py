"""The anti-abuse handshake before each conversation POST (protocol §4).

`POST {api}/sentinel/chat-requirements` with a requirements token `p` answers what the next
conversation POST must prove. We answer proof of work; Turnstile and Arkose need external solvers
that this service does not have, so a demand for them is a clear 403 instead of a hang.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urljoin

from ..errors import ApiError, Forbidden, Unauthorized, UpstreamError
from ..metrics import timed_upstream
from ..transport import Session, upstream_errors
from .endpoints import Upstream
from .errors import from_upstream
from .pow import DEFAULT_BUILD_ID, ProofOfWorkSolver

_BUILD_ID = re.compile(r'data-build="([^"]+)"')
_SCRIPT_BUILD = re.compile(r"/c/([^/\"]+)/_")
_SCRIPT_SRC = re.compile(r'<script[^>]+src="([^"]+)"')


@dataclass(frozen=True)
class PageAssets:
    """What the browser's proof-of-work config quotes from the home page (protocol §4.3 [5], [6])."""

    build_id: str = DEFAULT_BUILD_ID
    script_src: str = ""


def fetch_page_assets(session: Session, origin: str, timeout: float) -> PageAssets:
    """Read the build id and a script URL from `origin`'s home page; defaults if it has none
    (reverse proxies often serve only the API)."""
    try:
        with upstream_errors("home page"):
            response = session.get(origin + "/", headers={"Accept": "text/html"},
                                   timeout=min(timeout, 10))
    except ApiError:
        return PageAssets()
    if response.status_code != 200:
        return PageAssets()
    html = response.content[:1_000_000].decode("utf-8", "replace")
    build = _BUILD_ID.search(html) or _SCRIPT_BUILD.search(html)
    scripts = _SCRIPT_SRC.findall(html)
    return PageAssets(build.group(1) if build else DEFAULT_BUILD_ID,
                      urljoin(origin + "/", scripts[0]) if scripts else "")


def requirement_headers(session: Session, upstream: Upstream, headers: dict, *,
                        solver: ProofOfWorkSolver, user_agent: str, timeout: float,
                        assets: PageAssets = PageAssets()) -> dict:
    """Run the sentinel handshake; return the `Openai-Sentinel-*` headers for the conversation POST.

    :raise Forbidden: Turnstile/Arkose demanded, or the proof of work is too hard or unsolved.
    :raise Unauthorized: the upstream demands a fresh login (`force_login`).
    """
    page = {"build_id": assets.build_id, "script_src": assets.script_src}
    body = {"p": solver.requirements_token(user_agent, **page)}
    with upstream_errors("sentinel"), timed_upstream("sentinel"):
        response = session.post(upstream.url("/sentinel/chat-requirements"), json=body,
                                headers=headers, timeout=timeout)
    if response.status_code != 200:
        raise from_upstream(response.status_code, response.content, response.headers)
    try:
        requirements = json.loads(response.content)
        token = requirements["token"]
    except (ValueError, KeyError, TypeError):
        raise UpstreamError("sentinel: the upstream answer was not the expected JSON",
                            "upstream_bad_answer") from None

    if requirements.get("force_login"):
        raise Unauthorized("the upstream requires a fresh login for this account", "force_login")
    for name in ("arkose", "turnstile"):
        if (requirements.get(name) or {}).get("required"):
            raise Forbidden(f"the upstream requires a {name.capitalize()} challenge, which this "
                            "service cannot solve; try another account, proxy or later",
                            "sentinel_required")

    result = {"Openai-Sentinel-Chat-Requirements-Token": token}
    proof = requirements.get("proofofwork") or {}
    if proof.get("required"):
        seed, difficulty = proof.get("seed"), proof.get("difficulty")
        if not isinstance(seed, str) or not isinstance(difficulty, str):
            raise UpstreamError("sentinel: proof of work demanded without seed or difficulty",
                                "upstream_bad_answer")
        result["Openai-Sentinel-Proof-Token"] = solver.proof_token(seed, difficulty, user_agent,
                                                                   **page)
    return result
