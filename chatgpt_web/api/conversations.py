"""A caller's own conversations, on both faces: `/conversations...` beside /send_message, and
`/v1/conversations...` (errors in the OpenAI envelope) for SDK-style clients.

    GET          /conversations?offset=0&limit=20    list, newest first
    GET          /conversations/<id>                  the messages (transcript)
    PATCH|POST   /conversations/<id>   {title}        rename
    DELETE       /conversations/<id>                  delete (hidden, as the web app does)
    POST         /conversations/<id>/title            generate a title from the last answer
    GET          /conversations/<id>/export?format=json|markdown

Whose conversations: those of the caller's own ChatGPT account (an access token as the bearer,
or on the form face an access_token, session_token or refresh_token field); or, when the caller
is one of the service's client keys, the conversations that key started on the account pool,
each reached through the account that holds it. Without API keys nobody owns pooled
conversations, so they cannot be managed here (set API_KEYS). A conversation that is not the
caller's answers 404 conversation_not_found, as an unknown one does.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify, request

from ..access import bearer, client_key
from ..errors import BadRequest, Forbidden, NotFound, ServiceUnavailable, Unauthorized
from ..pool import AccountPool
from ..services import Services, current
from ..tokens import Credential, ensure_not_expired
from ..upstream.endpoints import Upstream, from_base_url
from ..upstream.history import MAX_LIST_LIMIT
from ..upstream.transcripts import last_answer, summary, transcript
from . import fields as f
from .credentials import MAX_TOKEN_LENGTH
from .error_boundary import install_error_handlers
from .openai_compat import error_body

primary_face = Blueprint("conversations", __name__, url_prefix="/conversations")
openai_face = Blueprint("v1_conversations", __name__, url_prefix="/v1/conversations")
install_error_handlers(openai_face, error_body)

_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_TITLE = 200


def _not_found() -> NotFound:
    return NotFound("no conversation with this id belongs to the caller", "conversation_not_found")


@dataclass(frozen=True)
class Caller:
    """Whose conversations a request manages: an account's token, or a client key's pooled ones."""

    upstream: Upstream
    access_token: str | None = None
    pool: AccountPool | None = None
    owner: str | None = None

    def token_for(self, conversation_id: str) -> str:
        """The access token that reaches `conversation_id`. :raise NotFound: not the caller's."""
        if self.pool is None:
            return self.access_token
        if self.pool.owner(conversation_id) != self.owner:
            raise _not_found()
        return self.pool.access_token(self.pool.pinned(conversation_id))


def _caller(services: Services, form_face: bool) -> Caller:
    upstream = from_base_url(services.config.base_url)
    fields = f.read_fields() if form_face and request.method != "GET" else {}
    given = {name: f.text(fields, name, max_length=MAX_TOKEN_LENGTH)
             for name in ("access_token", "session_token", "refresh_token")}
    key = client_key()
    token = given["access_token"] or (None if key else bearer())
    if token is None and given["session_token"]:
        token = services.tokens.access_token(
            Credential.session_token(given["session_token"])).access_token
    elif token is None and given["refresh_token"]:
        token = services.tokens.access_token(
            Credential.refresh_token(given["refresh_token"])).access_token
    if token is not None:
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("the bearer token is too long to be an access token",
                               "invalid_token")
        ensure_not_expired(token)
        return Caller(upstream, access_token=token)
    if key is not None:
        if services.pool is None:
            raise ServiceUnavailable("API keys are enabled but no ACCOUNTS_FILE holds accounts "
                                     "whose conversations a key could have", "no_account_available")
        return Caller(upstream, pool=services.pool, owner=key.id)
    if services.pool is not None:
        raise Forbidden("conversations on the server's accounts belong to client keys: this "
                        "service has none (API_KEYS), so they cannot be managed",
                        "conversations_need_a_key")
    raise Unauthorized("no access token: send 'Authorization: Bearer <ChatGPT access token>'",
                       "missing_token")


def _conversation_id(value: str) -> str:
    if not _ID.match(value):
        raise BadRequest("the conversation id is not a valid id", "invalid_field",
                         param="conversation_id")
    return value


def _bounded_int(name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"'{name}' must be a whole number", "invalid_field", param=name) from None
    if not minimum <= value <= maximum:
        raise BadRequest(f"'{name}' must be between {minimum} and {maximum}", "invalid_field",
                         param=name)
    return value


# --- the operations (shared by both faces) ------------------------------------------------------

def list_conversations(services: Services, caller: Caller) -> dict:
    offset = _bounded_int("offset", 0, 0, 100_000)
    limit = _bounded_int("limit", 20, 1, MAX_LIST_LIMIT)
    history = services.history
    if caller.pool is None:
        page = history.list(caller.access_token, caller.upstream, offset=offset, limit=limit)
        items = [summary(item) for item in page.get("items") or [] if isinstance(item, dict)]
        total = page.get("total") if isinstance(page.get("total"), int) else len(items)
        return {"object": "list", "data": items, "total": total, "offset": offset,
                "limit": limit}
    # A client key's conversations are spread over the pooled accounts: each holder's newest
    # MAX_LIST_LIMIT conversations are read and the key's own kept.
    owned = caller.pool.owned(caller.owner)
    items = []
    for account_id in sorted(set(owned.values())):
        account = caller.pool.accounts.get(account_id)
        if account is None:
            continue
        token = caller.pool.access_token(account)
        page = history.list(token, caller.upstream, offset=0, limit=MAX_LIST_LIMIT)
        items += [summary(item) for item in page.get("items") or []
                  if isinstance(item, dict) and owned.get(item.get("id")) == account_id]
    items.sort(key=lambda item: item["update_time"] or 0, reverse=True)
    return {"object": "list", "data": items[offset:offset + limit], "total": len(items),
            "offset": offset, "limit": limit}


def get_conversation(services: Services, caller: Caller, conversation_id: str) -> dict:
    token = caller.token_for(conversation_id)
    return transcript(conversation_id,
                      services.history.get(token, caller.upstream, conversation_id))


def rename_conversation(services: Services, caller: Caller, conversation_id: str,
                        fields: dict) -> dict:
    title = f.text(fields, "title", required=True, max_length=MAX_TITLE).strip()
    if not title:
        raise BadRequest("the title must not be blank", "invalid_field", param="title")
    token = caller.token_for(conversation_id)
    services.history.rename(token, caller.upstream, conversation_id, title)
    return {"id": conversation_id, "object": "conversation", "title": title}


def delete_conversation(services: Services, caller: Caller, conversation_id: str) -> dict:
    token = caller.token_for(conversation_id)
    services.history.hide(token, caller.upstream, conversation_id)
    if caller.pool is not None:
        caller.pool.forget(conversation_id, caller.owner)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


def title_conversation(services: Services, caller: Caller, conversation_id: str) -> dict:
    """Ask the upstream for a title from the last answer; an already titled conversation keeps
    (and answers) its title."""
    token = caller.token_for(conversation_id)
    history = services.history
    detail = history.get(token, caller.upstream, conversation_id)
    answer = last_answer(detail)
    if answer is None or not isinstance(answer.get("id"), str):
        raise BadRequest("the conversation has no answer to make a title from",
                         "conversation_has_no_answer")
    model = detail.get("default_model_slug")
    title = history.generate_title(token, caller.upstream, conversation_id, answer["id"],
                                   model if isinstance(model, str) else None)
    if title is None:
        title = history.get(token, caller.upstream, conversation_id).get("title")
    return {"id": conversation_id, "object": "conversation", "title": title}


def to_markdown(conversation: dict) -> str:
    """A transcript as a markdown document: the title, then each message under its author."""
    lines = [f"# {conversation['title'] or 'Conversation'}", ""]
    created = conversation.get("create_time")
    when = (datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%d %H:%M UTC")
            if created else "unknown time")
    lines += [f"_Conversation {conversation['id']}, started {when}._", ""]
    for message in conversation["messages"]:
        role = (message["role"] or "unknown").capitalize()
        if message.get("model"):
            role += f" ({message['model']})"
        lines += [f"## {role}", "", message["content"], ""]
    return "\n".join(lines)


def export_conversation(services: Services, caller: Caller, conversation_id: str) -> Response:
    kind = request.args.get("format", "json")
    if kind not in ("json", "markdown", "md"):
        raise BadRequest("format must be json or markdown", "invalid_field", param="format")
    conversation = get_conversation(services, caller, conversation_id)
    if kind == "json":
        response = jsonify(conversation)
        extension = "json"
    else:
        response = Response(to_markdown(conversation), content_type="text/markdown; charset=utf-8")
        extension = "md"
    # The id is checked to be [A-Za-z0-9_-], so the file name needs no quoting.
    response.headers["Content-Disposition"] = (
        f'attachment; filename="conversation-{conversation_id}.{extension}"')
    return response


# --- routes on both faces -----------------------------------------------------------------------

def _register(blueprint: Blueprint, form_face: bool) -> None:
    def run(operation: Callable, *args, with_fields: bool = False):
        services = current()
        fields = f.read_fields() if with_fields else None
        caller = _caller(services, form_face)
        result = operation(services, caller, *args, *(() if fields is None else (fields,)))
        return result if isinstance(result, Response) else jsonify(result)

    def collection():
        return run(list_conversations)

    def one(conversation_id: str):
        conversation_id = _conversation_id(conversation_id)
        if request.method == "GET":
            return run(get_conversation, conversation_id)
        if request.method == "DELETE":
            return run(delete_conversation, conversation_id)
        return run(rename_conversation, conversation_id, with_fields=True)

    def title(conversation_id: str):
        return run(title_conversation, _conversation_id(conversation_id))

    def export(conversation_id: str):
        return run(export_conversation, _conversation_id(conversation_id))

    blueprint.add_url_rule("", "list", collection, methods=["GET"])
    blueprint.add_url_rule("/<conversation_id>", "one", one,
                           methods=["GET", "PATCH", "POST", "DELETE"])
    blueprint.add_url_rule("/<conversation_id>/title", "title", title, methods=["POST"])
    blueprint.add_url_rule("/<conversation_id>/export", "export", export, methods=["GET"])


_register(primary_face, form_face=True)
_register(openai_face, form_face=False)
