"""An account's conversation history on the web backend: list, read, rename, hide, title.

    GET   {api}/conversations?offset=&limit=&order=updated  -> {"items": [...], "total", ...}
    GET   {api}/conversation/{id}                     -> the message tree (see transcripts.py)
    PATCH {api}/conversation/{id}  {"title": "..."}       -> {"success": true}
    PATCH {api}/conversation/{id}  {"is_visible": false}  -> {"success": true}  (the web "delete")
    POST  {api}/conversation/gen_title/{id}  {"message_id", "model"}  -> {"title": "..."}, or
          {"message": "Conversation <id> already has title '<title>'"}
    GET   {api}/models?iim=false&is_gizmo=true          -> {"default_model_slug", "models": [...]}
          (the account's models, beside its history because it is read the same way)

README ("Managing conversations") describes what the service builds on them. They cost no message
quota, which is why the operator console's "re-check" uses the list as its probe.
"""
from __future__ import annotations

import json

from ..config import Config
from ..errors import UpstreamError
from ..metrics import timed_upstream
from ..transport import new_session, upstream_errors
from .bootstrap import api_headers
from .endpoints import Upstream
from .errors import from_upstream

MAX_BODY = 8 * 1024 * 1024  # a long conversation's tree is a few hundred KB
MAX_LIST_LIMIT = 100  # the web app asks for 28 at a time; the backend caps pages at 100
TIMEOUT = 30.0


class HistoryClient:
    """Talks to one upstream's conversation-history endpoints for one access token per call."""

    def __init__(self, config: Config):
        self.config = config

    def list(self, access_token: str, upstream: Upstream, *, offset: int = 0,
             limit: int = 20) -> dict:
        """One page of the account's conversations, newest first (the upstream's shape)."""
        query = f"?offset={int(offset)}&limit={min(int(limit), MAX_LIST_LIMIT)}&order=updated"
        return self._call("GET", access_token, upstream, "/conversations" + query)

    def get(self, access_token: str, upstream: Upstream, conversation_id: str) -> dict:
        """The conversation with its message tree. :raise NotFound: conversation_not_found."""
        return self._call("GET", access_token, upstream, f"/conversation/{conversation_id}")

    def rename(self, access_token: str, upstream: Upstream, conversation_id: str,
               title: str) -> None:
        self._call("PATCH", access_token, upstream, f"/conversation/{conversation_id}",
                   {"title": title})

    def hide(self, access_token: str, upstream: Upstream, conversation_id: str) -> None:
        """Delete the conversation as the web app does: it is hidden and no longer listed."""
        self._call("PATCH", access_token, upstream, f"/conversation/{conversation_id}",
                   {"is_visible": False})

    def generate_title(self, access_token: str, upstream: Upstream, conversation_id: str,
                       message_id: str, model: str | None) -> str | None:
        """Ask the upstream to title the conversation from `message_id` (its last answer).

        Returns the new title, or None when the conversation already had one (the upstream then
        answers with a sentence instead of a title; the caller reads the title it kept).
        """
        body = {"message_id": message_id}
        if model:
            body["model"] = model
        answer = self._call("POST", access_token, upstream,
                            f"/conversation/gen_title/{conversation_id}", body)
        title = answer.get("title")
        return title if isinstance(title, str) and title else None

    def models(self, access_token: str, upstream: Upstream) -> dict:
        """The account's model list (models.slugs_of reads the slugs out of it)."""
        return self._call("GET", access_token, upstream, "/models?iim=false&is_gizmo=true")

    def _call(self, method: str, access_token: str, upstream: Upstream, path: str,
              body: dict | None = None) -> dict:
        headers = api_headers(access_token, upstream)
        with new_session(self.config, resolve=upstream.resolve) as session:
            with upstream_errors("conversation history"), timed_upstream("history"):
                response = session.request(method, upstream.url(path), json=body,
                                           headers=headers, timeout=TIMEOUT, stream=True)
                try:
                    raw = _read_bounded(response)
                finally:
                    response.close()
        if not 200 <= response.status_code < 300:
            raise from_upstream(response.status_code, raw, response.headers)
        try:
            answer = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            answer = None
        if not isinstance(answer, dict):
            raise UpstreamError("the upstream's conversation history answer is not a JSON "
                                "object", "upstream_bad_answer")
        return answer


def _read_bounded(response) -> bytes:
    body = bytearray()
    for chunk in response.iter_content():
        body += chunk
        if len(body) > MAX_BODY:
            raise UpstreamError("the upstream's conversation history answer is too large",
                                "upstream_bad_answer")
    return bytes(body)
