"""The anti-abuse handshake before each conversation POST (protocol §4).

`POST {api}/sentinel/chat-requirements` with a requirements token `p` answers what the next
conversation POST must prove. We answer proof of work; Turnstile and Arkose need external solvers
that this service does not have, so a demand for them is a clear 403 instead of a hang.
"""
from __future__ import annotations

import json

from ..errors import Forbidden, Unauthorized, UpstreamError, from_upstream
from ..http import Session, upstream_errors
from ..metrics import timed_upstream
from .endpoints import Upstream
from .pow import ProofOfWorkSolver


def requirement_headers(session: Session, upstream: Upstream, headers: dict, *,
                        solver: ProofOfWorkSolver, user_agent: str, timeout: float) -> dict:
    """Run the sentinel handshake; return the `Openai-Sentinel-*` headers for the conversation POST.

    :raise Forbidden: Turnstile/Arkose demanded, or the proof of work is too hard or unsolved.
    :raise Unauthorized: the upstream demands a fresh login (`force_login`).
    """
    body = {"p": solver.requirements_token(user_agent)}
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
        result["Openai-Sentinel-Proof-Token"] = solver.proof_token(seed, difficulty, user_agent)
    return result
