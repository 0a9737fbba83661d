"""Send a turn and relay the answer as it streams (docs/protocol-requests.md).

`ConversationClient.stream()` is the one data path every face uses. It speaks one of two dialects
of the site, chosen per upstream by CHATGPT_PROTOCOL:

* 2026: home page (bootstrap.py) → conduit prepare (`POST {api}/f/conversation/prepare`, which
  answers the conduit token) beside the sentinel bundle (sentinel.py: prepare, finalize) →
  `POST {api}/f/conversation`. The browser asks for the conduit token while the user types, so
  its order against the sentinel does not matter to the site; the conduit prepare runs while
  the sentinel's requests do (transport.py `post_beside`), which saves a round trip per answer,
  once the upstream is known to speak 2026 (CHATGPT_PROTOCOL=2026, or an earlier conduit prepare
  answered), and by default (CONDUIT_PREPARE_BESIDE=auto) only over a connection that carries
  both at once (HTTP/2, as the site's): over HTTP/1.1 it would take a second connection per
  answer, which at 500 answers at once on the HTTP/1.1 emulator cost more than it saved
  (bench/concurrency.py). A stream that hands the answer off (`stream_handoff`) is continued by
  handoff.py.
* 2024: `POST {api}/sentinel/chat-requirements` → `POST {api}/conversation`.

With `auto`, an upstream whose conduit prepare answers 404 (a mirror or reverse proxy that only
knows the 2024 paths) is remembered as 2024-only for 15 minutes. Either way the SSE bytes go to the
one StreamReducer, and a `max_tokens`-truncated answer is continued automatically (up to
MAX_CONTINUES times, each continuation with a fresh sentinel bundle and conduit token), so callers
see one answer.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..config import Config
from ..curl_transfer import END_OF_BODY_WAIT
from ..errors import ApiError, BadRequest, UpstreamError, seconds_left
from ..jwt_claims import expiry, payload
from ..metrics import timed_upstream
from ..store import Store
from ..transport import (
    PendingResponse,
    StreamedResponse,
    new_session,
    stream_post,
    upstream_errors,
)
from ..ws_client import Dialer
from . import handoff, turnstile
from .bootstrap import Bootstrap, Visit
from .browser import ACCEPT_LANGUAGE, LANGUAGE, TIME_ZONE, Chrome, timezone_offset_min
from .endpoints import Upstream
from .errors import from_upstream
from .headers import target_headers
from .pow import ProofOfWorkSolver
from .sentinel import PageAssets, requirement_headers, sentinel_bundle
from .stream import Completion, StreamReducer, TextDelta, bounded_chunks, relay
from .uploads import Uploader, attachments_metadata, message_content

MAX_CONTINUES = 3
DIALECT_MEMORY = 900  # seconds an upstream found to be 2024-only is remembered
MAX_REMEMBERED_UPSTREAMS = 1024  # callers choose reverse proxies: the memory is bounded
CONDUIT_LIFETIME = 60  # seconds, when the token does not say
NEW_CHAT_PARENT = "client-created-root"
THINKING_EFFORTS = ("standard", "extended", "max")
_MAX_ERROR_BODY = 64 * 1024
UNUSUAL_ACTIVITY = "unusual activity"


@dataclass(frozen=True)
class ChatMessage:
    """One message to send upstream: role is "user", "system" or "assistant".

    `attachments` are files sent with it: uploads.Attachment (bytes, uploaded by `stream()`
    before the write) or uploads.UploadedFile (already in the account's file store).
    """

    role: str
    content: str
    attachments: tuple = ()


@dataclass(frozen=True)
class ConversationRequest:
    """One turn: the new messages, and where in which conversation they attach."""

    messages: tuple[ChatMessage, ...]
    model: str
    conversation_id: str | None = None
    parent_message_id: str | None = None
    timeout: float = 120.0  # seconds for the whole answer, continuations included
    extra: dict = field(default_factory=dict)
    thinking_effort: str | None = None  # "standard", "extended" or "max" (models.thinking_effort)


def build_body(request: ConversationRequest, *, history_disabled: bool,
               action: str = "next", parent_message_id: str | None = None) -> dict:
    """The 2024 conversation POST body (docs/protocol-requests.md; key order as the browser
    sends it)."""
    messages = [] if action == "continue" else [
        {"id": str(uuid.uuid4()), "author": {"role": message.role},
         "content": message_content(message.content, message.attachments),
         "metadata": attachments_metadata(message.attachments)}
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


def build_body_2026(request: ConversationRequest, *, history_disabled: bool, now: float,
                    action: str = "next", parent_message_id: str | None = None) -> dict:
    """The body of `POST {api}/f/conversation` (docs/protocol-requests.md, "The write").

    A new chat attaches to "client-created-root" and sends no conversation_id; a continuation
    (`action: "continue"`) sends no messages. `thinking_effort` only when the caller asked for one.
    """
    body: dict = {"action": action}
    if action != "continue":
        body["messages"] = [
            {"id": str(uuid.uuid4()), "author": {"role": message.role}, "create_time": now,
             "content": message_content(message.content, message.attachments),
             "metadata": {"selected_sources": [], "selected_github_repos": [],
                          "selected_all_github_repos": False,
                          "serialization_metadata": {"custom_symbol_offsets": []},
                          **attachments_metadata(message.attachments)}}
            for message in request.messages
        ]
    body["parent_message_id"] = (parent_message_id or request.parent_message_id
                                 or NEW_CHAT_PARENT)
    if request.conversation_id:
        body["conversation_id"] = request.conversation_id
    body.update({
        "model": request.model,
        "client_prepare_state": "success",
        "timezone_offset_min": timezone_offset_min(now),
        "timezone": TIME_ZONE,
        "conversation_mode": {"kind": "primary_assistant"},
        "system_hints": [],
        "history_and_training_disabled": history_disabled,
        "paragen_cot_summary_display_override": "allow",
        "force_parallel_switch": "auto",
        # What lets the server hand a long answer off to another transport (handoff.py).
        "supports_buffering": True,
        "supported_encodings": ["v1"],
    })
    effort = thinking_effort(request)
    if effort:
        body["thinking_effort"] = effort
    body.update(request.extra)
    return body


def thinking_effort(request: ConversationRequest) -> str | None:
    """The request's thinking effort, if it asked for one; only the three values the site takes.

    :raise BadRequest: any other value.
    """
    effort = request.thinking_effort
    if effort is None:
        return None
    if effort not in THINKING_EFFORTS:
        raise BadRequest(f"thinking_effort must be one of {', '.join(THINKING_EFFORTS)}",
                         "invalid_thinking_effort", param="thinking_effort")
    return effort


def prepare_body(write: dict) -> dict:
    """The conduit prepare body for a write: the write's routing fields, no messages."""
    body = {"action": write["action"], "fork_from_shared_post": False,
            "parent_message_id": write["parent_message_id"]}
    for key in ("conversation_id", "model", "client_prepare_state", "timezone_offset_min",
                "timezone", "conversation_mode", "system_hints", "supports_buffering",
                "supported_encodings", "thinking_effort", "history_and_training_disabled"):
        if key in write:
            body[key] = write[key]
    return body


class Only2024(Exception):
    """The upstream does not know the 2026 write endpoints (404 on the conduit prepare)."""


class _Rejected(Exception):
    """The write was refused for its sentinel bundle or conduit token (403 "Unusual activity")."""

    def __init__(self, error: ApiError):
        super().__init__(error.message)
        self.error = error


@dataclass
class _Conduit:
    token: str
    expires_at: float  # time.time() seconds


class DialectMemory:
    """Which upstreams answered 404 to the 2026 endpoints, remembered for DIALECT_MEMORY s, and
    which answered a conduit prepare (a few bytes each, bounded as well)."""

    def __init__(self, ttl: float = DIALECT_MEMORY):
        self.ttl = ttl
        self._until: dict[str, float] = {}
        self._speak_2026: dict[str, None] = {}
        self._lock = threading.Lock()

    def speaks_2026(self, upstream: Upstream) -> bool:
        return upstream.api_root in self._speak_2026

    def remember_2026(self, upstream: Upstream) -> None:
        if upstream.api_root in self._speak_2026:
            return
        with self._lock:
            self._speak_2026[upstream.api_root] = None
            while len(self._speak_2026) > MAX_REMEMBERED_UPSTREAMS:
                del self._speak_2026[next(iter(self._speak_2026))]

    def is_2024_only(self, upstream: Upstream) -> bool:
        with self._lock:
            return self._until.get(upstream.api_root, 0) > time.monotonic()

    def remember_2024_only(self, upstream: Upstream) -> None:
        with self._lock:
            self._until.pop(upstream.api_root, None)
            self._until[upstream.api_root] = time.monotonic() + self.ttl
            while len(self._until) > MAX_REMEMBERED_UPSTREAMS:
                del self._until[next(iter(self._until))]


class ConversationClient:
    """Talks to one upstream on behalf of one access token per call."""

    def __init__(self, config: Config, solver: ProofOfWorkSolver, store: Store | None = None):
        self.config = config
        self.solver = solver
        self.chrome = Chrome.from_target(config.impersonate)
        self.bootstrap = Bootstrap(store)
        self.dialects = DialectMemory()
        self.uploader = Uploader(config, store)
        # Seconds between two reads of a handed-off conversation (handoff.py).
        self.poll_interval = 1.0
        # How a handed-off answer's WebSocket is dialled (None: HANDOFF_WEBSOCKET=false).
        self.websocket = Dialer.from_config(config) if config.handoff_websocket else None

    def dialect(self, upstream: Upstream) -> str:
        """"2026" or "2024" for this upstream, per CHATGPT_PROTOCOL and what it answered."""
        if self.config.protocol != "auto":
            return self.config.protocol
        return "2024" if self.dialects.is_2024_only(upstream) else "2026"

    def _headers(self, upstream: Upstream, access_token: str, visit: Visit) -> dict:
        page = visit.page
        return {
            "Accept": "*/*",
            "Accept-Language": ACCEPT_LANGUAGE,
            "Authorization": f"Bearer {access_token}",
            "Content-Type": "application/json",
            "Oai-Client-Build-Number": page.build_number,
            "Oai-Client-Version": page.build_id,
            "Oai-Device-Id": visit.device_id,
            "Oai-Language": LANGUAGE,
            "Oai-Session-Id": page.session_id,
            "Origin": upstream.origin,
            "Priority": "u=1, i",
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
        thinking_effort(request)  # a bad value is the caller's error, before any upstream call
        with new_session(self.config, resolve=upstream.resolve) as session:
            visit = self.bootstrap.visit(session, upstream, access_token, seconds_left(deadline))
            visit.install(session, upstream)
            headers = self._headers(upstream, access_token, visit)
            request = self._with_uploads(session, upstream, headers, access_token, request,
                                         deadline)
            if self.dialect(upstream) == "2026":
                try:
                    yield from self._stream_2026(session, upstream, headers, visit, request,
                                                 deadline)
                    return
                except Only2024:
                    if self.config.protocol != "auto":
                        raise UpstreamError("the upstream does not know the 2026 endpoints "
                                            "(f/conversation/prepare answered 404); set "
                                            "CHATGPT_PROTOCOL=auto or 2024",
                                            "upstream_protocol_mismatch") from None
                    self.dialects.remember_2024_only(upstream)
            yield from self._stream_2024(session, upstream, headers, visit, request, deadline)

    def _with_uploads(self, session, upstream: Upstream, headers: dict, access_token: str,
                      request: ConversationRequest, deadline: float) -> ConversationRequest:
        """The request with every attachment uploaded to this account (uploads.py); the
        2026 dialect also waits for the file processing stream."""
        if not any(message.attachments for message in request.messages):
            return request
        processing = self.dialect(upstream) == "2026"
        messages = tuple(
            dataclasses.replace(message, attachments=self.uploader.upload_all(
                session, upstream, headers, access_token, message.attachments, deadline,
                processing=processing)) if message.attachments else message
            for message in request.messages)
        return dataclasses.replace(request, messages=messages)

    # --- 2026 -------------------------------------------------------------------------------

    def _stream_2026(self, session, upstream: Upstream, headers: dict, visit: Visit,
                     request: ConversationRequest, deadline: float) -> Iterator:
        completion: Completion | None = None
        for attempt in range(MAX_CONTINUES + 1):
            earlier = completion
            now = time.time()
            if completion is None:
                body = build_body_2026(request, history_disabled=self.config.history_disabled,
                                       now=now)
            else:
                # The same request (model, thinking effort...) continued where it stopped.
                body = build_body_2026(
                    dataclasses.replace(request, messages=(),
                                        conversation_id=completion.conversation_id),
                    history_disabled=self.config.history_disabled, now=now, action="continue",
                    parent_message_id=completion.message_id)
            prefix = completion.text if completion else ""
            reducer = StreamReducer(prefix=prefix)
            relayed = ""
            for delta in self._write_2026(session, upstream, headers, visit, body, reducer,
                                          deadline, first=attempt == 0):
                relayed += delta.text
                yield delta
            if reducer.handoff_pending:
                completion = yield from handoff.follow(
                    session, upstream, headers, reducer, prefix=prefix, relayed=relayed,
                    deadline=deadline, poll_interval=self.poll_interval,
                    limits=handoff.Limits(self.config.max_upstream_answer_bytes,
                                          self.config.max_upstream_event_bytes),
                    websocket=self.websocket)
            else:
                completion = reducer.result()
            completion = completion.continuing(earlier)
            if completion.finish_type != "max_tokens" or attempt == MAX_CONTINUES:
                break
        yield completion

    def _write_2026(self, session, upstream: Upstream, headers: dict, visit: Visit, body: dict,
                    reducer: StreamReducer, deadline: float, *,
                    first: bool) -> Iterator[TextDelta]:
        """Conduit token + sentinel bundle + the write; a refused bundle or conduit token gets
        one more try with fresh ones (a bundle is never sent twice)."""
        trace_id = str(uuid.uuid4())
        referer = upstream.origin + (f"/c/{body['conversation_id']}"
                                     if body.get("conversation_id") else "/")
        base = {**headers, "Referer": referer}
        for retry in (False, True):
            may_be_2024 = first and not retry
            early = self._conduit_beside(session, upstream, base, body, trace_id, deadline,
                                         may_be_2024)
            try:
                if early is None:
                    conduit = self._conduit(session, upstream, base, body, trace_id, deadline,
                                            may_be_2024=may_be_2024)
                bundle = sentinel_bundle(session, upstream, base, solver=self.solver,
                                         chrome=self.chrome, visit=visit,
                                         timeout=seconds_left(deadline))
                if early is not None:
                    conduit = self._conduit(session, upstream, base, body, trace_id, deadline,
                                            may_be_2024=may_be_2024, early=early)
            finally:
                if early is not None:
                    early.close()
            if conduit.expires_at <= time.time():  # the solve took longer than its lifetime
                conduit = self._conduit(session, upstream, base, body, trace_id, deadline)
            write_headers = {**base, **target_headers("/f/conversation"),
                             **bundle.headers(), "Accept": "text/event-stream",
                             "X-Conduit-Token": conduit.token, "X-Oai-Turn-Trace-Id": trace_id}
            try:
                yield from self._post(session, upstream, "/f/conversation", write_headers, body,
                                      reducer, deadline, retryable=True)
                return
            except _Rejected as rejected:
                if retry:
                    raise rejected.error from None

    def _conduit_beside(self, session, upstream: Upstream, headers: dict, write: dict,
                        trace_id: str, deadline: float,
                        may_be_2024: bool) -> PendingResponse | None:
        """The conduit prepare, started to run beside the sentinel's requests; None when it
        must come first: an upstream that may be 2024-only answers it 404, and then no
        sentinel call is made for the 2026 flow."""
        mode = self.config.prepare_beside
        if mode == "off" or mode == "auto" and not session.multiplexes():
            return None
        if may_be_2024 and not (self.config.protocol == "2026"
                                or self.dialects.speaks_2026(upstream)):
            return None
        with upstream_errors("conduit prepare"):
            return session.post_beside(upstream.url("/f/conversation/prepare"),
                                       json=prepare_body(write),
                                       headers=_conduit_headers(headers, "", trace_id),
                                       timeout=seconds_left(deadline))

    def _conduit(self, session, upstream: Upstream, headers: dict, write: dict, trace_id: str,
                 deadline: float, *, may_be_2024: bool = False,
                 early: PendingResponse | None = None) -> _Conduit:
        """A conduit token from `POST {api}/f/conversation/prepare` (the first one's answer is
        `early`'s, when it was started beside the sentinel); a null or expired one gets one fresh
        prepare (passing the previous token, as the browser does)."""
        previous = ""
        for _ in range(2):
            # Started beside the sentinel, the prepare is timed from here: how long the answer
            # still waited for it.
            with upstream_errors("conduit prepare"), timed_upstream("conduit"):
                if early is not None:
                    response, early = early.response(), None
                else:
                    response = session.post(upstream.url("/f/conversation/prepare"),
                                            json=prepare_body(write),
                                            headers=_conduit_headers(headers, previous, trace_id),
                                            timeout=seconds_left(deadline))
            if response.status_code == 404 and may_be_2024:
                raise Only2024()
            if response.status_code != 200:
                raise from_upstream(response.status_code, response.content, response.headers)
            try:
                answer = json.loads(response.content[:_MAX_ERROR_BODY])
            except ValueError:
                answer = None
            if not isinstance(answer, dict):
                raise UpstreamError("conduit prepare: the upstream answer was not JSON",
                                    "upstream_bad_answer")
            self.dialects.remember_2026(upstream)
            token = answer.get("conduit_token")
            if isinstance(token, str) and token:
                conduit = _Conduit(token, expiry(payload(token)) or time.time() + CONDUIT_LIFETIME)
                if conduit.expires_at > time.time():
                    return conduit
                previous = token
        return _Conduit("", time.time() + CONDUIT_LIFETIME)  # the write decides what it is worth

    # --- 2024 -------------------------------------------------------------------------------

    def _environment(self, upstream: Upstream, visit: Visit) -> turnstile.BrowserEnvironment:
        scripts = visit.page.script_srcs
        return turnstile.BrowserEnvironment(user_agent=self.chrome.user_agent,
                                            device_id=visit.device_id, origin=upstream.origin,
                                            script_src=scripts[0] if scripts else "")

    def _stream_2024(self, session, upstream: Upstream, headers: dict, visit: Visit,
                     request: ConversationRequest, deadline: float) -> Iterator:
        page = visit.page
        assets = PageAssets(page.build_id, page.script_srcs[0] if page.script_srcs else "")
        completion: Completion | None = None
        for attempt in range(MAX_CONTINUES + 1):
            sentinel = requirement_headers(session, upstream, headers, solver=self.solver,
                                           user_agent=self.chrome.user_agent,
                                           timeout=seconds_left(deadline), assets=assets,
                                           environment=self._environment(upstream, visit))
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
            yield from self._post(session, upstream, "/conversation",
                                  {**headers, **sentinel, "Accept": "text/event-stream"},
                                  body, reducer, deadline)
            completion = reducer.result().continuing(completion)
            if completion.finish_type != "max_tokens" or attempt == MAX_CONTINUES:
                break
        yield completion

    def _post(self, session, upstream: Upstream, path: str, headers: dict, body: dict,
              reducer: StreamReducer, deadline: float,
              retryable: bool = False) -> Iterator[TextDelta]:
        # stream_post reads the answer in this thread (fewer thread hand-overs per chunk than
        # session.post(stream=True)) with the session's impersonation, proxy and DNS pinning.
        with upstream_errors("conversation"):
            with timed_upstream("conversation"):
                response = stream_post(session, upstream.url(path), json=body,
                                       headers=headers, timeout=seconds_left(deadline))
            # Closing also runs when the caller stops early (client went away): it ends the
            # transfer and closes its connection.
            with response:
                _check_stream_response(response, retryable=retryable)
                chunks = bounded_chunks(response.iter_content(), deadline,
                                        self.config.max_upstream_answer_bytes)
                yield from relay(chunks, reducer, self.config.max_upstream_event_bytes)
                if reducer.done:  # the end of the body follows [DONE]: keep the connection
                    response.finish(min(END_OF_BODY_WAIT, deadline - time.monotonic()))


def _conduit_headers(headers: dict, previous: str, trace_id: str) -> dict:
    return {**headers, **target_headers("/f/conversation/prepare"),
            "X-Conduit-Token": previous, "X-Oai-Turn-Trace-Id": trace_id}


def _check_stream_response(response: StreamedResponse, *, retryable: bool = False) -> None:
    """Raise the upstream's error; `_Rejected` for a 2026 write refused as "Unusual activity"
    (when `retryable`), which a fresh bundle and conduit token may cure."""
    if response.status_code != 200:
        body = b""
        for chunk in response.iter_content():
            body += chunk
            if len(body) > _MAX_ERROR_BODY:
                break
        error = from_upstream(response.status_code, body, response.headers)
        if retryable and response.status_code == 403 and UNUSUAL_ACTIVITY in body[:4096].decode(
                "utf-8", "replace").lower():
            raise _Rejected(error)
        raise error
    content_type = response.headers.get("Content-Type", "")
    if "text/event-stream" not in content_type:
        raise UpstreamError("the upstream answered with something other than an event stream",
                            "upstream_bad_answer")
