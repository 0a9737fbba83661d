"""The anti-abuse handshake before each write (docs/protocol-requests.md, "Sentinel").

2026: `POST {api}/sentinel/chat-requirements/prepare {p}` answers the challenges (proof of work,
a Turnstile `dx` program, optionally `so`) and a `prepare_token`; `.../finalize {prepare_token,
proofofwork, turnstile}` answers the requirements token. Token, proof and Turnstile answer are one
single-use bundle, sent as the write's `OpenAI-Sentinel-*` headers. An upstream without the
two-phase endpoints (404) gets the one-step `POST {api}/sentinel/chat-requirements {p}`.

2024 (`requirement_headers`): the one-step call with the 18-item config and SHA3-512 proofs.

Arkose and a Turnstile without a `dx` program need a real browser, which this service does not
have, so a demand for them is a clear 403 instead of a hang. `so` is optional and skipped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import Forbidden, Unauthorized, UpstreamError
from ..metrics import timed_upstream
from ..transport import Session, upstream_errors
from . import turnstile
from .bootstrap import Visit
from .browser import Chrome, sentinel_config
from .endpoints import Upstream
from .errors import from_upstream
from .pow import DEFAULT_BUILD_ID, ProofOfWorkSolver, requirements_token_2026

_MAX_ANSWER = 4_000_000  # a prepare answer with its dx programs is tens of kilobytes


@dataclass(frozen=True)
class PageAssets:
    """What the 2024 proof-of-work config quotes from the home page (slots 5 and 6)."""

    build_id: str = DEFAULT_BUILD_ID
    script_src: str = ""


def requirement_headers(session: Session, upstream: Upstream, headers: dict, *,
                        solver: ProofOfWorkSolver, user_agent: str, timeout: float,
                        assets: PageAssets = PageAssets(),
                        environment: turnstile.BrowserEnvironment | None = None) -> dict:
    """Run the sentinel handshake; return the `Openai-Sentinel-*` headers for the conversation POST.

    :raise Forbidden: Arkose or a Turnstile without a program demanded, or the proof of work is
        too hard or unsolved. A Turnstile program is run in our VM with `environment`.
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

    _refuse_unanswerable(requirements)
    result = {"Openai-Sentinel-Chat-Requirements-Token": token}
    demand = requirements.get("turnstile") or {}
    if isinstance(demand, dict) and demand.get("required") and environment is not None:
        result["Openai-Sentinel-Turnstile-Token"] = turnstile.solve(demand["dx"], body["p"],
                                                                    environment)
    proof = requirements.get("proofofwork") or {}
    if proof.get("required"):
        seed, difficulty = proof.get("seed"), proof.get("difficulty")
        if not isinstance(seed, str) or not isinstance(difficulty, str):
            raise UpstreamError("sentinel: proof of work demanded without seed or difficulty",
                                "upstream_bad_answer")
        result["Openai-Sentinel-Proof-Token"] = solver.proof_token(seed, difficulty, user_agent,
                                                                   **page)
    return result


# --- 2026: the two-phase handshake and its single-use bundle ---------------------------------

@dataclass(frozen=True)
class SentinelBundle:
    """One finalized challenge: requirements token, proof and Turnstile answer, used once."""

    token: str
    proof: str | None = None
    turnstile: str | None = None

    def headers(self) -> dict:
        headers = {"OpenAI-Sentinel-Chat-Requirements-Token": self.token}
        if self.proof:
            headers["OpenAI-Sentinel-Proof-Token"] = self.proof
        if self.turnstile:
            headers["OpenAI-Sentinel-Turnstile-Token"] = self.turnstile
        return headers


def sentinel_bundle(session: Session, upstream: Upstream, headers: dict, *,
                    solver: ProofOfWorkSolver, chrome: Chrome, visit: Visit,
                    timeout: float) -> SentinelBundle:
    """Prepare, solve and finalize; the one-step endpoint when prepare answers 404.

    :raise Forbidden: Arkose or a Turnstile without a program demanded; proof too hard.
    :raise Unauthorized: the upstream demands a fresh login (`force_login`).
    """
    page = visit.page
    config = sentinel_config(chrome, build_id=page.build_id, sdk_url=page.sdk_url,
                             page_loaded_at=page.loaded_at)
    p = requirements_token_2026(config)
    status, challenge = _post_json(session, upstream.url("/sentinel/chat-requirements/prepare"),
                                   {"p": p}, headers, timeout, "sentinel prepare",
                                   allow_not_found=True)
    two_phase = status != 404
    if not two_phase:
        _, challenge = _post_json(session, upstream.url("/sentinel/chat-requirements"), {"p": p},
                                  headers, timeout, "sentinel")
    _refuse_unanswerable(challenge)

    proof = None
    pow_demand = challenge.get("proofofwork") or {}
    if isinstance(pow_demand, dict) and pow_demand.get("required"):
        seed, difficulty = pow_demand.get("seed"), pow_demand.get("difficulty")
        if not isinstance(seed, str) or not isinstance(difficulty, str):
            raise UpstreamError("sentinel: proof of work demanded without seed or difficulty",
                                "upstream_bad_answer")
        proof = solver.fnv_proof_token(seed, difficulty, config)
    answer = None
    demand = challenge.get("turnstile") or {}
    if isinstance(demand, dict) and demand.get("required"):
        environment = turnstile.BrowserEnvironment(
            user_agent=chrome.user_agent, device_id=visit.device_id, origin=upstream.origin,
            script_src=page.script_srcs[0] if page.script_srcs else "")
        answer = turnstile.solve(demand["dx"], p, environment)

    if not two_phase:
        return SentinelBundle(_field(challenge, "token"), proof, answer)
    finalize = {"prepare_token": _field(challenge, "prepare_token")}
    if proof:
        finalize["proofofwork"] = proof
    if answer:
        finalize["turnstile"] = answer
    _, finalized = _post_json(session, upstream.url("/sentinel/chat-requirements/finalize"),
                              finalize, headers, timeout, "sentinel finalize")
    return SentinelBundle(_field(finalized, "token"), proof, answer)


def _refuse_unanswerable(challenge: dict) -> None:
    if challenge.get("force_login"):
        raise Unauthorized("the upstream requires a fresh login for this account", "force_login")
    arkose = challenge.get("arkose") or {}
    if isinstance(arkose, dict) and arkose.get("required"):
        raise Forbidden("the upstream requires an Arkose challenge, which this service cannot "
                        "solve; try another account, proxy or later", "sentinel_required")
    demand = challenge.get("turnstile") or {}
    if isinstance(demand, dict) and demand.get("required") and not (
            isinstance(demand.get("dx"), str) and demand["dx"]):
        raise Forbidden("the upstream requires a Cloudflare Turnstile widget (no dx program), "
                        "which needs a real browser; try another account, proxy or later",
                        "sentinel_required")


def _field(answer: dict, name: str) -> str:
    value = answer.get(name)
    if not isinstance(value, str) or not value:
        raise UpstreamError(f"sentinel: the upstream answer has no {name}", "upstream_bad_answer")
    return value


def _post_json(session: Session, url: str, body: dict, headers: dict, timeout: float,
               step: str, *, allow_not_found: bool = False) -> tuple[int, dict]:
    with upstream_errors(step), timed_upstream("sentinel"):
        response = session.post(url, json=body, headers=headers, timeout=timeout)
    if allow_not_found and response.status_code == 404:
        return 404, {}
    if response.status_code != 200:
        raise from_upstream(response.status_code, response.content, response.headers)
    try:
        answer = json.loads(response.content[:_MAX_ANSWER])
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise UpstreamError(f"{step}: the upstream answer was not the expected JSON",
                            "upstream_bad_answer")
    return response.status_code, answer
