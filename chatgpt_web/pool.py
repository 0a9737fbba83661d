"""Server-held ChatGPT accounts: weighted rotation, health states, failover, conversation pins.

Accounts come from ACCOUNTS_FILE (see README, "Account pool"). Each one's access token is obtained
through the login code and its cache (tokens.TokenProvider), which renews it TOKEN_EXPIRY_MARGIN
seconds before its JWT expires: a user's request never meets an expired token that could have been
renewed. Health lives in the Store, so every worker process and every instance sharing a Redis sees
the same picture:

    healthy --401--> re-login once --401 again--> dead
    healthy --429--> resting until clears_in / Retry-After
    healthy --403 (Cloudflare, sentinel)--> resting, longer with each strike in a row
    any --operator: disable--> disabled --operator: enable--> healthy (the console, api/admin.py)

A request that fails on an account before its first byte moves on to the next account; the caller
sees an error only when none can serve. A conversation stays on the account that created it. A new
one goes to an account whose model list (account_models.py) offers the model asked for or is not
read yet, when there is one; else to any (a list may lag behind the site).

What the operator needs to hear about (alerts.py) is counted per account, in the Store:
`refresh_failures` (token renewals failed in a row), `refusals` (401/403/429 answers in a row),
and, per SHARE_WINDOW, how many answers came from another model than asked (`other_model`);
`degraded` is the downgrade banner, or that share above DEGRADED_SHARE over at least
DEGRADED_MIN_ANSWERS answers whose model could be told (models.answered_as_asked).
"""
from __future__ import annotations

import base64
import hashlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .account_models import AccountModels
from .answers import Answer
from .config import read_json_file
from .errors import (
    ApiError,
    ConfigError,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)
from .models import answered_as_asked
from .store import Store
from .tokens import Credential, TokenProvider, jwt_expiry
from .upstream.conversation import ConversationClient, ConversationRequest
from .upstream.endpoints import Upstream

log = logging.getLogger(__name__)
STATE_PREFIX = "pool:v1:account:"
PIN_PREFIX = "pool:v1:pin:"
# Which client key started a pooled conversation, and each key's conversations (id -> account),
# so that a key manages only its own (api/conversations.py).
OWNER_PREFIX = "pool:v1:owner:"
OWNED_PREFIX = "pool:v1:owned:"
STRIKES_PREFIX = "pool:v1:strikes:"
REFUSALS_PREFIX = "pool:v1:refusals:"
REFRESH_FAILURES_PREFIX = "pool:v1:refresh-failures:"
# Answers whose model could be told, and those from another model, per SHARE_WINDOW bucket.
JUDGED_PREFIX = "pool:v1:judged:"
OTHER_MODEL_PREFIX = "pool:v1:other-model:"
SHARE_WINDOW = 3600
# Degraded: more than half of the answers of the last one to two hours came from another model,
# counted over at least four answers (fewer say too little).
DEGRADED_SHARE = 0.5
DEGRADED_MIN_ANSWERS = 4
# Refusals further apart than this do not add up.
STRIKE_MEMORY = 24 * 3600
PIN_TTL = 90 * 24 * 3600
DEFAULT_REST = 60.0
MAX_STRIKE_REST = 3600.0
_DEFAULT_STATE = {"status": "healthy", "rest_until": 0, "strikes": 0, "last_error": None}
# Statuses in which an account serves nothing: its token failed twice, or the operator said so.
_OUT_OF_SERVICE = ("dead", "disabled")
_KINDS = ("password", "session_token", "refresh_token", "access_token")


@dataclass(frozen=True)
class Account:
    """One configured account. `id` is a label safe to show; the secrets never leave this object."""

    id: str
    kind: str
    weight: float = 1.0
    credential: Credential | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)


def _entry_to_account(index: int, entry: dict) -> Account:
    where = f"ACCOUNTS_FILE entry {index}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object")
    weight = entry.get("weight", 1)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight <= 0:
        raise ConfigError(f"{where}: weight must be a positive number")
    kinds = [kind for kind in ("email", "session_token", "refresh_token", "access_token")
             if entry.get(kind)]
    if len(kinds) != 1:
        raise ConfigError(f"{where} needs exactly one of email+password, session_token, "
                          "refresh_token or access_token")
    kind = "password" if kinds[0] == "email" else kinds[0]
    if kind == "password":
        if not isinstance(entry.get("password"), str) or not entry["password"]:
            raise ConfigError(f"{where}: an email needs a password")
        secrets: tuple[str, ...] = (str(entry["email"]), entry["password"])
        totp_secret = entry.get("totp_secret")
        if totp_secret is not None and not _is_base32(totp_secret):
            raise ConfigError(f"{where}: totp_secret must be the authenticator's base32 secret")
        credential = Credential.password(*secrets, totp_secret=totp_secret)
    else:
        secrets = (str(entry[kind]),)
        credential = None if kind == "access_token" else Credential(kind, secrets)
        if kind == "session_token":
            credential = Credential.session_token(secrets[0])
    if kind != "password" and entry.get("totp_secret") is not None:
        raise ConfigError(f"{where}: totp_secret goes with an email and password")
    client_id = entry.get("client_id")
    if client_id is not None:
        if kind != "refresh_token" or not isinstance(client_id, str) or not client_id.strip():
            raise ConfigError(f"{where}: client_id is a non-empty string, for a refresh_token")
        credential = Credential.refresh_token(secrets[0], client_id.strip())
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError(f"{where}: name must be a non-empty string")
    # Without a name, a short hash labels the account: stable across restarts, reveals nothing.
    label = name or "acct-" + hashlib.sha256("\0".join((kind, *secrets)).encode()).hexdigest()[:10]
    return Account(label, kind, float(weight), credential,
                   secrets[0] if kind == "access_token" else None)


def _is_base32(value) -> bool:
    if not isinstance(value, str) or not value.strip():
        return False
    text = value.replace(" ", "").upper()
    try:
        base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        return False
    return True


def load_accounts(path: str) -> list[Account]:
    """Read ACCOUNTS_FILE: a JSON list (or {"accounts": [...]}) of account objects.

    :raise ConfigError: unreadable file or a malformed entry (the message never quotes a secret).
    """
    data = read_json_file(path, "ACCOUNTS_FILE")
    entries = data.get("accounts") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ConfigError("ACCOUNTS_FILE must hold a non-empty list of accounts")
    accounts = [_entry_to_account(index, entry) for index, entry in enumerate(entries)]
    if len({account.id for account in accounts}) != len(accounts):
        raise ConfigError("ACCOUNTS_FILE has two accounts with the same name or credentials")
    return accounts


def _is_account_fault(error: ApiError) -> bool:
    """Failures that say something about the account, so that another account may do better."""
    return isinstance(error, (Unauthorized, Forbidden, RateLimited))


class AccountPool:
    """Chooses accounts, keeps their health, and runs answers with failover."""

    def __init__(self, accounts: Sequence[Account], store: Store, tokens: TokenProvider, *,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.time,
                 models: AccountModels | None = None):
        self.accounts = {account.id: account for account in accounts}
        self.store = store
        self.tokens = tokens
        self.models = models
        self._rng = rng or random.Random()
        self._clock = clock

    # --- health ------------------------------------------------------------------------------
    def state(self, account: Account) -> dict:
        """The shared health record of `account`: the defaults, overridden by what is stored."""
        stored = self.store.get(STATE_PREFIX + account.id)
        return {**_DEFAULT_STATE, **(stored if isinstance(stored, dict) else {})}

    def _update(self, account: Account, **changes) -> None:
        # An atomic merge of only the changed fields: two processes or instances recording
        # different facts about one account at once (a token renewal, a 429) both keep theirs.
        self.store.merge(STATE_PREFIX + account.id, changes)

    def _fault(self, account: Account, error: ApiError) -> None:
        """Record what `error` says about `account`: dead, resting, or one more strike; and one
        more refusal in a row."""
        now = self._clock()
        refusals, _ = self.store.hit(REFUSALS_PREFIX + account.id, STRIKE_MEMORY)
        self._update(account, refusals=refusals)
        if isinstance(error, Unauthorized):
            self._update(account, status="dead", last_error=error.code)
        elif isinstance(error, RateLimited):
            self._update(account, rest_until=now + (error.retry_after or DEFAULT_REST),
                         last_error=error.code)
        elif isinstance(error, Forbidden):
            # Counted with the store's atomic hit(): two instances refused at the same moment
            # make two strikes, where reading the record and writing it back would make one.
            strikes, _ = self.store.hit(STRIKES_PREFIX + account.id, STRIKE_MEMORY)
            rest = min(DEFAULT_REST * 2 ** (strikes - 1), MAX_STRIKE_REST)
            self._update(account, strikes=strikes, rest_until=now + rest, last_error=error.code)

    def _usable(self, account: Account, now: float) -> bool:
        state = self.state(account)
        return state.get("status") not in _OUT_OF_SERVICE and state.get("rest_until", 0) <= now

    # --- operator actions (the console) ------------------------------------------------------
    def account(self, account_id: str) -> Account:
        """The account labelled `account_id`. :raise NotFound: no such account."""
        found = self.accounts.get(account_id)
        if found is None:
            raise NotFound("no pooled account has this id", "account_not_found")
        return found

    def disable(self, account: Account) -> None:
        """Take `account` out of rotation until `enable` (its conversations cannot continue)."""
        self._update(account, status="disabled")

    def enable(self, account: Account) -> None:
        """Put `account` back into rotation with a clean record (no rest, no strikes)."""
        self._clear_refusals(account)
        self._update(account, status="healthy", rest_until=0, strikes=0, refusals=0,
                     last_error=None)

    def recheck(self, account: Account, probe: Callable[[str], None]) -> None:
        """Renew the account's token now and try it with `probe(access_token)` (an upstream call
        that spends no quota); record the outcome. A disabled account stays disabled.

        :raise ApiError: what the token renewal or the probe failed with (after recording it).
        """
        try:
            probe(self.access_token(account, force=account.credential is not None))
        except ApiError as error:
            if _is_account_fault(error):
                self._fault(account, error)
            else:
                self._update(account, last_error=error.code)
            raise
        self._clear_refusals(account)
        changes = {"rest_until": 0, "strikes": 0, "refusals": 0, "last_error": None}
        if self.state(account).get("status") != "disabled":
            changes["status"] = "healthy"
        self._update(account, **changes)

    def choose(self, exclude: set[str] = frozenset(), model: str | None = None) -> Account:
        """A healthy, rested account by weighted random choice; with `model` (a web slug), among
        those whose model list offers it or is not read yet, if any, else among all.

        :raise ServiceUnavailable: no account can serve now (Retry-After: the earliest rest end).
        """
        now = self._clock()
        candidates = [a for a in self.accounts.values()
                      if a.id not in exclude and self._usable(a, now)]
        if candidates and model and model != "auto" and self.models is not None:
            # An account whose list is not read yet may offer it: it keeps its turn (and so
            # gets its list read); only a list that lacks the model moves an account aside.
            candidates = [a for a in candidates
                          if self.models.offers(a.id, model) is not False] or candidates
        if not candidates:
            rests = [self.state(a).get("rest_until", 0) for a in self.accounts.values()
                     if self.state(a).get("status") not in _OUT_OF_SERVICE]
            retry = max(1, int(min(rests) - now) + 1) if rests and min(rests) > now else None
            raise ServiceUnavailable("no pooled account can serve this request now",
                                     "no_account_available",
                                     headers={"Retry-After": str(retry)} if retry else None)
        return self._rng.choices(candidates, weights=[a.weight for a in candidates])[0]

    # --- tokens ------------------------------------------------------------------------------
    def access_token(self, account: Account, *, force: bool = False) -> str:
        """A live access token for `account`, from the login cache or a fresh login."""
        if account.credential is None:
            exp = jwt_expiry(account.access_token)
            if exp is not None and exp <= self._clock():
                raise Unauthorized("the pooled access token has expired", "token_expired")
            self._update(account, token_expires_at=exp)
            return account.access_token
        try:
            issued = self.tokens.access_token(account.credential, force=force)
        except ApiError as error:
            failures, _ = self.store.hit(REFRESH_FAILURES_PREFIX + account.id, STRIKE_MEMORY)
            self._update(account, refresh_failures=failures, refresh_error=error.code)
            raise
        state = self.state(account)
        changes = {}
        if state.get("token_expires_at") != issued.expires_at:
            changes["token_expires_at"] = issued.expires_at
        if state.get("refresh_failures"):
            self.store.delete(REFRESH_FAILURES_PREFIX + account.id)
            changes.update(refresh_failures=0, refresh_error=None)
        if changes:
            self._update(account, **changes)
        return issued.access_token

    # --- conversations -----------------------------------------------------------------------
    def pin(self, conversation_id: str, account: Account) -> None:
        """Remember that `conversation_id` lives on `account`."""
        self.store.set(PIN_PREFIX + conversation_id, account.id, expire=PIN_TTL)

    def pinned(self, conversation_id: str) -> Account:
        """The account holding `conversation_id`. :raise Conflict: unknown pin or account gone."""
        account = self.accounts.get(self.store.get(PIN_PREFIX + conversation_id) or "")
        if account is None:
            raise Conflict("this conversation is not held by any pooled account (it was started "
                           "elsewhere, or that account was removed); start a new conversation",
                           "conversation_account_gone")
        if self.state(account).get("status") in _OUT_OF_SERVICE:
            raise Conflict("the pooled account that holds this conversation is no longer usable; "
                           "start a new conversation", "conversation_account_gone")
        return account

    def owner(self, conversation_id: str) -> str | None:
        """The client key id that started `conversation_id` on the pool, if one did."""
        return self.store.get(OWNER_PREFIX + conversation_id)

    def owned(self, owner: str) -> dict[str, str]:
        """The conversations `owner` started on the pool: {conversation id: account id}."""
        stored = self.store.get(OWNED_PREFIX + owner)
        return {conversation: account for conversation, account in
                (stored.items() if isinstance(stored, dict) else ()) if account}

    def forget(self, conversation_id: str, owner: str) -> None:
        """Drop a deleted conversation's pin and ownership."""
        self.store.merge(OWNED_PREFIX + owner, {conversation_id: None}, expire=PIN_TTL)
        self.store.delete(OWNER_PREFIX + conversation_id)
        self.store.delete(PIN_PREFIX + conversation_id)

    def _own(self, conversation_id: str, account: Account, owner: str) -> None:
        self.store.set(OWNER_PREFIX + conversation_id, owner, expire=PIN_TTL)
        self.store.merge(OWNED_PREFIX + owner, {conversation_id: account.id}, expire=PIN_TTL)

    # --- answers -----------------------------------------------------------------------------
    def run(self, client: ConversationClient, request: ConversationRequest,
            upstream: Upstream, *, owner: str | None = None) -> Answer:
        """Start `request` on a pooled account, moving on to the next one while nothing was sent.

        A new conversation is pinned to the account that answered it, and recorded as `owner`'s
        (a client key id) when one is given.
        """
        if request.conversation_id:
            if self.owner(request.conversation_id) != owner:
                # Another client key's conversation (or, with keys on, one no key started): the
                # same answer as for a conversation that does not exist, so ids leak nothing.
                raise NotFound("conversation not found", "conversation_not_found")
            account = self.pinned(request.conversation_id)
            return self._pinning(self._attempt(account, client, request, upstream), account,
                                 request.model)
        tried: set[str] = set()
        while True:
            try:
                account = self.choose(exclude=tried, model=request.model)
            except ServiceUnavailable as unavailable:
                if not tried:
                    raise
                raise ServiceUnavailable(f"no pooled account could serve this request "
                                         f"({len(tried)} tried)", unavailable.code,
                                         headers=unavailable.headers) from None
            tried.add(account.id)
            try:
                answer = self._attempt(account, client, request, upstream)
            except ApiError as error:
                if _is_account_fault(error):
                    continue
                raise
            return self._pinning(answer, account, request.model, owner)

    def _attempt(self, account: Account, client: ConversationClient, request: ConversationRequest,
                 upstream: Upstream) -> Answer:
        """One account, with one re-login when the upstream refuses its token."""
        relogged = False
        while True:
            try:
                token = self.access_token(account, force=relogged)
                answer = Answer.start(client, token, request, upstream)
            except Unauthorized as error:
                # token_invalidated: the backend itself refused the account's token (GET /me).
                if relogged or account.credential is None or error.code == "token_invalidated":
                    self._fault(account, error)
                    raise
                relogged = True
                continue
            except ApiError as error:
                if _is_account_fault(error):
                    self._fault(account, error)
                raise
            try:
                state = self.state(account)
                if state.get("strikes") or state.get("refusals"):
                    self._clear_refusals(account)  # "in a row": a success starts again
                    self._update(account, strikes=0, refusals=0)
            except BaseException:
                answer.close()  # the store failed: the started answer must not stay open
                raise
            if self.models is not None:
                answer.on_complete(lambda _completion, token=token: self._read_models(account,
                                                                                      token))
            return answer

    def _clear_refusals(self, account: Account) -> None:
        self.store.delete(STRIKES_PREFIX + account.id)
        self.store.delete(REFUSALS_PREFIX + account.id)

    def _read_models(self, account: Account, token: str) -> None:
        """Once an answer is given: read the account's model list if it is due (at most once
        per account per TTL across every worker; account_models.py)."""
        try:
            self.models.refresh(account.id, lambda: token)
        except ApiError as error:  # the Store is down: the answer itself must not fail for it
            log.warning("model list of pooled account %s not refreshed (%s)", account.id,
                        error.code)

    def _pinning(self, answer: Answer, account: Account, model: str,
                 owner: str | None = None) -> Answer:
        def pin(completion) -> None:
            if completion.conversation_id:
                self.pin(completion.conversation_id, account)
                if owner:
                    self._own(completion.conversation_id, account, owner)
            self._note_model(account, model,
                             completion.message_model_slug or completion.model_slug,
                             completion.banner.name if completion.banner else None)
        answer.on_complete(pin)
        return answer

    def _note_model(self, account: Account, requested: str, served: str | None,
                    banner: str | None = None) -> None:
        """Count the answer in the account's model share, and flag a silent downgrade: an answer
        from another model than the one asked (models.answered_as_asked: "auto", internal and
        unknown slugs say nothing), or the account_sharing_degrade banner."""
        degraded = banner == "account_sharing_degrade"
        extra = (self.models.known(account.id) or ()) if self.models is not None else ()
        as_asked = answered_as_asked(requested, served, tuple(extra))
        if as_asked is not None:
            bucket = int(self._clock() // SHARE_WINDOW)
            self.store.hit(f"{JUDGED_PREFIX}{account.id}:{bucket}", 2 * SHARE_WINDOW)
            if not as_asked:
                self.store.hit(f"{OTHER_MODEL_PREFIX}{account.id}:{bucket}", 2 * SHARE_WINDOW)
        if degraded or as_asked is False:
            flag = {"requested": requested, "served": served, "at": self._clock()}
            if degraded:
                flag["banner"] = banner
            self._update(account, downgraded=flag)
        else:
            # Cleared by an answer from the model asked, or, for a banner flag, by an answer
            # without the banner (an account asked only for "auto" would otherwise stay flagged).
            flagged = self.state(account).get("downgraded")
            if flagged and (as_asked or flagged.get("banner")):
                self._update(account, downgraded=None)

    def model_share(self, account: Account) -> dict:
        """Answers whose model could be told, and those from another model, in this and the
        previous SHARE_WINDOW; `share` is None before any."""
        bucket = int(self._clock() // SHARE_WINDOW)
        answers = other = 0
        for moment in (bucket - 1, bucket):
            answers += self.store.get(f"{JUDGED_PREFIX}{account.id}:{moment}") or 0
            other += self.store.get(f"{OTHER_MODEL_PREFIX}{account.id}:{moment}") or 0
        return {"answers": answers, "other_model": other,
                "share": round(other / answers, 3) if answers else None,
                "window_seconds": 2 * SHARE_WINDOW}

    def offered_models(self) -> tuple[str, ...]:
        """Every slug some pooled account lists, reading first the lists that are due of the
        accounts in service (each at most once per TTL; account_models.py)."""
        if self.models is None:
            return ()
        now = self._clock()
        for account in self.accounts.values():
            if self._usable(account, now) and self.models.stale(account.id):
                try:
                    self.models.refresh(account.id, lambda account=account: self.access_token(
                        account))
                except ApiError as error:
                    log.warning("model list of pooled account %s not read (%s)", account.id,
                                error.code)
        return self.models.union(self.accounts)

    def report(self) -> list[dict]:
        """Each account's state for the admin view: never a token, a password or an email."""
        now = self._clock()
        rows = []
        for account in self.accounts.values():
            state = self.state(account)
            rest_until = state.get("rest_until", 0)
            status = state.get("status", "healthy")
            if status not in _OUT_OF_SERVICE and rest_until > now:
                status = "resting"
            share = self.model_share(account)
            downgraded = state.get("downgraded")
            rows.append({"id": account.id, "kind": account.kind, "weight": account.weight,
                         "status": status, "token_expires_at": state.get("token_expires_at"),
                         "rest_until": rest_until if rest_until > now else None,
                         "last_error": state.get("last_error"),
                         "downgraded": downgraded,
                         "refresh_failures": state.get("refresh_failures") or 0,
                         "refresh_error": state.get("refresh_error"),
                         "refusals": state.get("refusals") or 0,
                         "model_share": share,
                         "degraded": bool(
                             (downgraded or {}).get("banner") == "account_sharing_degrade"
                             or (share["answers"] >= DEGRADED_MIN_ANSWERS
                                 and share["share"] > DEGRADED_SHARE)),
                         "models": (self.models.known(account.id)
                                    if self.models is not None else None)})
        return rows
