"""Send a turn to `{api}/conversation` and relay the answer as it streams (protocol §2–3).

`ConversationClient.stream()` is the one data path every face uses: it runs the sentinel handshake,
POSTs the body of protocol §2.2, feeds the SSE bytes to the one StreamReducer, and continues a
`max_tokens`-truncated answer automatically (up to MAX_CONTINUES times), so callers see one answer.
"""
from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..config import Config
from ..errors import UpstreamError, UpstreamTimeout
from ..metrics import timed_upstream
from ..transport import StreamedResponse, new_session, stream_post, upstream_errors, user_agent_for
from .endpoints import Upstream
from .errors import from_upstream
from .pow import ProofOfWorkSolver
from .sentinel import PageAssets, fetch_page_assets, requirement_headers
from .stream import Completion, StreamReducer, TextDelta, iter_sse

MAX_CONTINUES = 3
PAGE_ASSETS_TTL = 900  # seconds; peers re-read the home page every 15 minutes
_MAX_ERROR_BODY = 64 * 1024
_DEVICE_NAMESPACE = uuid.UUID("8c3f6a57-7a0e-4c4f-9d8e-1b0d2e6f4a11")


@dataclass(frozen=True)
class ChatMessage:
    """One message to send upstream: role is "user", "system" or "assistant"."""

    role: str
    content: str


@dataclass(frozen=True)
class ConversationRequest:
    """One turn: the new messages, and where in which conversation they attach."""

    messages: tuple[ChatMessage, ...]
    model: str
    conversation_id: str | None = None
    parent_message_id: str | None = None
    timeout: float = 120.0  # seconds for the whole answer, continuations included
    extra: dict = field(default_factory=dict)


def device_id(access_token: str) -> str:
    """A stable Oai-Device-Id per account, derived from a hash so the token itself is not exposed."""
    return str(uuid.uuid5(_DEVICE_NAMESPACE, hashlib.sha256(access_token.encode()).hexdigest()))


def build_body(request: ConversationRequest, *, history_disabled: bool,
               action: str = "next", parent_message_id: str | None = None) -> dict:
    """The conversation POST body of protocol §2.2 (key order as the browser sends it)."""
    messages = [] if action == "continue" else [
        {"id": str(uuid.uuid4()), "author": {"role": message.role},
         "content": {"content_type": "text", "parts": [message.content]}, "metadata": {}}
        for message in request.messages
    ]
    body = {
        "action": action,
        "conversation_mode": {"kind": "primary_assistant"},
        "force_paragen": False,
        "force_paragen_model_slug": "",
        "force_rate_limit": False,
        "force_use_sse": True,
        "history_and_training_disabled": history_disabled,
        "messages": messages,
        "model": request.model,
        "parent_message_id": parent_message_id or request.parent_message_id or str(uuid.uuid4()),
        "reset_rate_limits": False,
        "suggestions": [],
        "supported_encodings": [],
        "system_hints": [],
        "timezone_offset_min": -480,
        "variant_purpose": "comparison_implicit",
        "websocket_request_id": str(uuid.uuid4()),
    }
    if request.conversation_id:
        body["conversation_id"] = request.conversation_id
    body.update(request.extra)
    return body


class ConversationClient:
    """Talks to one upstream on behalf of one access token per call."""

    def __init__(self, config: Config, solver: ProofOfWorkSolver):
        self.config = config
        self.solver = solver
        self.user_agent = user_agent_for(config.impersonate)
        self._assets: dict[str, tuple[float, PageAssets]] = {}
        self._assets_lock = threading.Lock()

    def _page_assets(self, session, upstream: Upstream, deadline: float) -> PageAssets:
        """The home page's build id and script URL for `upstream`, re-read every 15 minutes."""
        if not upstream.has_home_page:
            return PageAssets()
        now = time.monotonic()
        with self._assets_lock:
            cached = self._assets.get(upstream.origin)
        if cached and cached[0] > now:
            return cached[1]
        assets = fetch_page_assets(session, upstream.origin, _remaining(deadline))
        with self._assets_lock:
            self._assets[upstream.origin] = (now + PAGE_ASSETS_TTL, assets)
        return assets

    def _headers(self, upstream: Upstream, access_token: str) -> dict:
        return {
            "Accept": "*/*",
            "Accept-Language": "en-US,en;q=0.9",
            "Authorization": f"Bearer {access_token}",
            "Content-Type": "application/json",
            "Oai-Device-Id": device_id(access_token),
            "Oai-Language": "en-US",
            "Origin": upstream.origin,
            "Referer": upstream.origin + "/",
            "Sec-Fetch-Dest": "empty",
            "Sec-Fetch-Mode": "cors",
            "Sec-Fetch-Site": "same-origin",
        }

    def stream(self, access_token: str, request: ConversationRequest,
               upstream: Upstream) -> Iterator[TextDelta | Completion]:
        """Yield TextDelta pieces as the upstream sends them, then one final Completion.

        :raise ApiError: any failure, classified by upstream.errors.from_upstream or the curl
            boundary.
        """
        deadline = time.monotonic() + request.timeout
        headers = self._headers(upstream, access_token)
        with new_session(self.config, resolve=upstream.resolve) as session:
            assets = self._page_assets(session, upstream, deadline)
            completion: Completion | None = None
            for attempt in range(MAX_CONTINUES + 1):
                sentinel = requirement_headers(session, upstream, headers, solver=self.solver,
                                               user_agent=self.user_agent,
                                               timeout=_remaining(deadline), assets=assets)
                if completion is None:
                    body = build_body(request, history_disabled=self.config.history_disabled)
                else:
                    body = build_body(
                        ConversationRequest((), request.model, completion.conversation_id,
                                    timeout=request.timeout, extra=request.extra),
                        history_disabled=self.config.history_disabled, action="continue",
                        parent_message_id=completion.message_id,
                    )
                reducer = StreamReducer(prefix=completion.text if completion else "")
                yield from self._post(session, upstream, {**headers, **sentinel,
                                                          "Accept": "text/event-stream"},
                                      body, reducer, deadline)
                completion = reducer.result()
                if completion.finish_type != "max_tokens" or attempt == MAX_CONTINUES:
                    break
            yield completion

    def _post(self, session, upstream: Upstream, headers: dict, body: dict,
              reducer: StreamReducer, deadline: float) -> Iterator[TextDelta]:
        # stream_post reads the answer in this thread (fewer thread hand-overs per chunk than
        # session.post(stream=True)) with the session's impersonation, proxy and DNS pinning.
        with upstream_errors("conversation"):
            with timed_upstream("conversation"):
                response = stream_post(session, upstream.url("/conversation"), json=body,
                                       headers=headers, timeout=_remaining(deadline))
            # Closing also runs when the caller stops early (client went away): it ends the
            # transfer and closes its connection.
            with response:
                _check_stream_response(response)
                chunks = _chunks(response, deadline, self.config.max_upstream_answer_bytes)
                for event in iter_sse(chunks, self.config.max_upstream_event_bytes):
                    yield from reducer.feed(event)
                    if reducer.done:
                        break


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise UpstreamTimeout("the answer did not complete within the timeout")
    return remaining


def _chunks(response: StreamedResponse, deadline: float, max_bytes: int) -> Iterator[bytes]:
    received = 0
    for chunk in response.iter_content():
        _remaining(deadline)
        received += len(chunk)
        if received > max_bytes:  # MAX_UPSTREAM_ANSWER_BYTES: a hostile reverse_proxy never ends
            raise UpstreamError(f"the upstream answer is longer than {max_bytes} bytes",
                                "upstream_bad_answer")
        yield chunk


def _check_stream_response(response: StreamedResponse) -> None:
    if response.status_code != 200:
        body = b""
        for chunk in response.iter_content():
            body += chunk
            if len(body) > _MAX_ERROR_BODY:
                break
        raise from_upstream(response.status_code, body, response.headers)
    content_type = response.headers.get("Content-Type", "")
    if "text/event-stream" not in content_type:
        raise UpstreamError("the upstream answered with something other than an event stream",
                            "upstream_bad_answer")
