"""The guard in front of every request: the client key, the admin key, the client's IP, limits.

When API_KEYS or API_KEYS_FILE is set, every endpoint except OPEN_PATHS needs one of the keys
(keys.py), as `Authorization: Bearer <key>` or, on the original form endpoints, the `api_key`
field. `/admin/*` needs ADMIN_KEY instead and is closed when none is set.

The guard runs before every request (`init_app`) and then asks the rate limiter (limits.py) about
the client key and the client IP; the IP honours X-Forwarded-For only from TRUSTED_PROXIES. The
limiter's decision is kept on `flask.g` for the RateLimit-* headers of the answer.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
from urllib.parse import urlsplit

from flask import Flask, g, request

from . import models
from .config import Config
from .errors import ApiError, BadRequest, Forbidden, NotFound, RateLimited, Unauthorized
from .key_policy import KeyPolicy
from .keys import ClientKey, KeyRing
from .limits import headers_for
from .services import Services, current

log = logging.getLogger(__name__)
# Reachable without a key: a load balancer's probes, the playground page and the console page
# (the pages hold no data: their scripts ask for the key and send it with every call).
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/admin"})
# The pages' scripts and styles (api/pages.py).
OPEN_PREFIXES = ("/static/",)
# Need a key but are not rate limited: a Prometheus scrape every 15 s would exhaust 120/hour.
UNLIMITED_PATHS = frozenset({"/metrics"})
ADMIN_PREFIX = "/admin"
# A generated image's signed link (image_links.py): its signature is the credential, because chat
# UIs load it as a plain <img> source that carries no key. The per-IP limit still applies.
SIGNED_LINK = re.compile(r"/v1/files/[^/]+/content")
# POSTed here, a request is answered by a backend: a scoped key's model and backend scopes,
# concurrency cap and quotas apply (ledger.py). The relay's paths count when it is configured.
CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
ANSWER_PATHS = CHAT_PATHS | {"/send_message", "/v1/responses"}
# Served by relay upstreams only, with the model they assume when the body names none.
RELAY_PATHS = {"/v1/completions": None, "/v1/embeddings": None,
               "/v1/moderations": "omni-moderation-latest", "/v1/audio/speech": None,
               "/v1/audio/transcriptions": None}
# Served by the web accounts, or by the relay for a model it routes (api/images.py); edits and
# variations are multipart.
IMAGE_PATHS = frozenset({"/v1/images/generations", "/v1/images/edits", "/v1/images/variations"})
# Answer paths whose body may be a form rather than JSON (see _read_as_json).
FORM_PATHS = frozenset({"/send_message", "/v1/audio/transcriptions", "/v1/images/edits",
                        "/v1/images/variations"})
DEFAULT_MODELS = {**RELAY_PATHS, **dict.fromkeys(IMAGE_PATHS, models.DEFAULT_IMAGE_MODEL)}
BACKEND_NAMES = {"web": "the web accounts", "relay": "the relay upstreams"}
NO_RETRY = {"x-should-retry": "false"}


def client_ip(remote_addr: str | None, forwarded_for: str | None, trusted) -> str:
    """The address of the client: `remote_addr`, unless that is a trusted proxy, in which case
    X-Forwarded-For is read from the right, past every trusted proxy, to the first other hop.

    Reading from the right matters: the left part of the header is whatever the client sent.
    """
    address = remote_addr or "unknown"
    if not trusted or not forwarded_for or not _is_trusted(address, trusted):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        if not _parses(hop):
            break  # a malformed hop: stop at the last address we could verify
        address = hop
        if not _is_trusted(hop, trusted):
            break
    return address


def _parses(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def bearer() -> str | None:
    """The credential of the request's `Authorization: Bearer <credential>` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def presented_key() -> str | None:
    """The key the request presents: `Authorization: Bearer <key>`, else the `api_key` field."""
    token = bearer()
    if token:
        return token
    if request.is_json:
        body = request.get_json(silent=True)
        value = body.get("api_key") if isinstance(body, dict) else None
    else:
        value = request.form.get("api_key")
    return value if isinstance(value, str) and value else None


def require_same_origin(allowed_origins: tuple[str, ...]) -> None:
    """Refuse a request a browser sent on behalf of another site's page.

    Without client keys, the account pool answers anyone who can reach the service, and a web
    page the operator happens to visit could make their browser post a form to it (browsers send
    such cross-site posts without asking). Browsers name the page's origin in `Origin` (or at
    least say `Sec-Fetch-Site: cross-site`); programs send neither. Allowed: this service's own
    host and CORS_ORIGINS. :raise Forbidden: cross_origin_refused.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        if request.headers.get("Sec-Fetch-Site", "").lower() != "cross-site":
            return
    elif origin in allowed_origins or urlsplit(origin).netloc.lower() == request.host.lower():
        return
    raise Forbidden("pooled accounts do not serve pages of other sites: add the page's origin "
                    "to CORS_ORIGINS, or set API_KEYS", "cross_origin_refused")


def _require_admin(config: Config) -> None:
    if not config.admin_key:
        raise Forbidden("the admin endpoints are disabled: set ADMIN_KEY to enable them",
                        "admin_disabled")
    expected = hashlib.sha256(config.admin_key.encode()).digest()
    given = hashlib.sha256((bearer() or "").encode()).digest()
    if not hmac.compare_digest(expected, given):
        raise Unauthorized("the admin endpoints need 'Authorization: Bearer <ADMIN_KEY>'",
                           "invalid_admin_key")


def _require_client_key(keys: KeyRing) -> ClientKey:
    presented = presented_key()
    if presented is None:
        raise Unauthorized("this service needs an API key: send 'Authorization: Bearer <key>' "
                           "(or the api_key field)", "missing_api_key")
    client = keys.match(presented)
    if client is None:
        raise Unauthorized("the API key is not valid", "invalid_api_key")
    return client


def requested_model(path: str, default: str) -> str | None:
    """The `model` the body of a POST to `path` asks for (`default` when it names none).

    :raise BadRequest: invalid_json, a body read as JSON (as `path`'s route reads it) that is not
        a JSON object; invalid_field, a `model` that is not text. The caller's malformed request
        is told so before a scope refuses it.
    """
    if _read_as_json(path):
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object", "invalid_json")
        value = body.get("model")
    else:
        if request.mimetype == "multipart/form-data":
            # Keep the body: the relay passes a multipart upload on as it came (get_data after
            # the form was parsed would be empty). MAX_CONTENT_LENGTH bounds it.
            request.get_data(cache=True, parse_form_data=False)
        value = request.form.get("model")
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise BadRequest("the field 'model' must be a string", "invalid_field", param="model")
    return value


def _read_as_json(path: str) -> bool:
    """Whether `path`'s route reads its body as JSON: always, but for /send_message (JSON when
    its Content-Type says so, else a form), /v1/audio/transcriptions and the image edits and
    variations (multipart)."""
    if path in FORM_PATHS:
        return path == "/send_message" and request.is_json
    return True


def web_knows(model: str, default_model: str) -> bool:
    """Whether the web backend accepts the model name `model`."""
    try:
        models.resolve(model, extra_slugs=(default_model,))
    except NotFound:
        return False
    return True


def answering_backends(services: Services, path: str, model: str | None) -> set[str]:
    """The backends that may answer a POST to `path` for `model`: "web" and/or "relay"."""
    if path in RELAY_PATHS:
        return {"relay"}
    relay = services.relay
    if path in IMAGE_PATHS:
        targets = relay.router.targets(model, web_knows=model in models.IMAGE_MODELS) \
            if relay is not None and model else None
        return {"web" if target.is_web else "relay" for target in targets} if targets \
            else {"web"}
    if path in CHAT_PATHS and relay is not None and model:
        targets = relay.router.targets(
            model, web_knows=web_knows(model, services.config.default_model))
        if targets:
            return {"web" if target.is_web else "relay" for target in targets}
    return {"web"}


def backend_refused(backends) -> Forbidden:
    names = " or ".join(BACKEND_NAMES[name] for name in sorted(backends))
    return Forbidden(f"this API key may not use {names}, which serve this request",
                     "backend_not_allowed", headers=NO_RETRY)


def check_scopes(services: Services, policy: KeyPolicy, ip: str, path: str | None) -> None:
    """Refuse a request outside the scoped key's scopes (`path`: the answer path POSTed to,
    None for other requests).

    The order is the OpenAI API's: the key itself (disabled, expired, its networks), then the
    body (malformed: 400), then what the key may use (403).

    :raise Unauthorized: key_disabled, key_expired. :raise BadRequest: invalid_json.
    :raise Forbidden: ip_not_allowed, backend_not_allowed, model_not_allowed.
    """
    if policy.disabled:
        raise Unauthorized("this API key is disabled", "key_disabled", headers=NO_RETRY)
    if policy.expired():
        raise Unauthorized("this API key has expired", "key_expired", headers=NO_RETRY)
    if not policy.allows_ip(ip):
        raise Forbidden("this API key may not be used from this address", "ip_not_allowed",
                        headers=NO_RETRY)
    if path is None:
        return
    model = requested_model(path, DEFAULT_MODELS.get(path) or services.config.default_model)
    # Refused here, before the request is counted, when no backend that could serve it is
    # allowed; on a route that mixes both, the relay skips the targets the key may not use.
    backends = answering_backends(services, path, model)
    if not any(policy.allows_backend(backend) for backend in backends):
        raise backend_refused(backends)
    if model is not None and not policy.allows_model(model):
        raise Forbidden(f"this API key may not use the model {model[:100]!r}",
                        "model_not_allowed", param="model", headers=NO_RETRY)


def _admit(services: Services, client: ClientKey) -> None:
    """Take a concurrency slot and count the request against the key's quotas; the slot is
    given back when the answer (or its stream) is closed."""
    ledger = services.ledger
    # A slot outlives a stuck request by at most its deadline and a minute.
    lease = (ledger.lease(client.policy, services.config.request_timeout + 60)
             if client.policy else None)
    try:
        if not (client.policy and client.policy.quota) and _asks_for_a_stream():
            # A key without quotas has nothing to check: its stream is counted once its first
            # chunk is out (after_request), not beside the work before it.
            g.key_count_later = (ledger, client.id, client.policy)
        else:
            # Counted while the request runs; the count is awaited before the answer ends
            # (after_request), so that the next reader of the usage sees it.
            g.key_counting = ledger.admit(client.id, client.policy, wait=False)
    except Exception:
        if lease:
            ledger.release(client.id, lease)
        raise
    if lease:
        g.key_lease = (ledger, client.id, lease)


def _asks_for_a_stream() -> bool:
    body = request.get_json(silent=True) if request.is_json else None
    return isinstance(body, dict) and body.get("stream") is True


def _look_for_alerts() -> None:
    """Let the alert watcher look at the pool (at most once per ALERT_INTERVAL, in a thread)."""
    alerts = current().alerts
    if alerts is None:
        return
    try:
        alerts.maybe_run_in_background()
    except ApiError as error:  # the Store is down: the answer itself must not fail for it
        log.warning("alerts not checked (%s)", error.code)


def _request_ip(services) -> str:
    return client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"),
                     services.config.trusted_proxies)


def _counting_refusals(services, authenticate):
    """Run a key check, counting its refusals per client IP: past AUTH_FAILURE_LIMIT the IP gets
    429 with Retry-After, before any key it sends is compared (a guesser learns nothing more)."""
    ip = _request_ip(services)
    wait = services.limiter.auth_blocked(ip)
    if wait is not None:
        raise RateLimited("too many refused authentications from this address; retry later",
                          "too_many_auth_failures", retry_after=wait)
    try:
        return authenticate()
    except Unauthorized:
        services.limiter.auth_refused(ip)
        raise


def limit_pooled_request() -> None:
    """Count the default limits (those that apply only to pooled requests) for a request that
    turned out to run on the account pool; the tighter decision goes on the answer's headers."""
    services = current()
    key = client_key()
    decision = services.limiter.check(key.id if key else None, _request_ip(services),
                                      pooled=True,
                                      key_rate=key.policy.rate if key and key.policy else None)
    current_decision = g.get("rate_limit")
    if decision is not None and (current_decision is None
                                 or decision.remaining < current_decision.remaining):
        g.rate_limit = decision


def client_key() -> ClientKey | None:
    """The client key the current request presented (None when keys are off)."""
    return g.get("client_key")


def init_app(app: Flask) -> None:
    """Check keys and rate limits before every request; put RateLimit-* headers on every answer."""
    @app.before_request
    def guard() -> None:
        path = request.path
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return
        services = current()
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            _counting_refusals(services, lambda: _require_admin(services.config))
            return
        client = None
        signed_link = request.method == "GET" and SIGNED_LINK.fullmatch(path) is not None
        if services.keys.enabled and not signed_link:
            client = _counting_refusals(services, lambda: _require_client_key(services.keys))
        g.client_key = client
        ip = client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"),
                       services.config.trusted_proxies)
        policy = client.policy if client else None
        answering = request.method == "POST" and (
            path in ANSWER_PATHS or path in IMAGE_PATHS
            or path in RELAY_PATHS and services.relay is not None)
        if policy is not None:
            check_scopes(services, policy, ip, path if answering else None)
        if path not in UNLIMITED_PATHS:
            g.rate_limit = services.limiter.check(
                client.id if client else None, ip,
                key_rate=policy.rate if policy else None)
        if client is not None and answering:
            _admit(services, client)

    @app.after_request
    def rate_limit_headers(response):
        decision = g.get("rate_limit")
        if decision is not None:
            response.headers.update(headers_for(decision))
        if request.path in ANSWER_PATHS or request.path == ADMIN_PREFIX + "/accounts":
            _look_for_alerts()
        counting = g.pop("key_counting", None)
        if counting is not None:
            _counted_before_the_end(response, counting, client_key().id)
        later = g.pop("key_count_later", None)
        if later is not None:
            _counted_after_the_first_chunk(response, *later)
        lease = g.pop("key_lease", None)
        if lease is not None:
            _release_when_answered(response, *lease)
        return response


def _wait_for_count(counting, key_id: str) -> None:
    try:
        counting.wait()
    except ApiError as error:  # the answer is ready: a lost count must not fail it
        log.warning("request of key %s not counted (%s)", key_id, error.code)


def _counted_before_the_end(response, counting, key_id: str) -> None:
    """Wait for the request's admission count (ledger.admit) before the answer ends, so that
    whoever reads the key's usage after it sees the request: a whole answer before it goes out;
    a stream before its end, not before its first byte (the count is written meanwhile)."""
    def wait() -> None:
        _wait_for_count(counting, key_id)

    if not response.is_streamed:
        wait()
        return

    response.response = _done_by_the_last_event(response.response, wait)


def _counted_after_the_first_chunk(response, ledger, key_id: str, policy) -> None:
    """Count a stream's request (a key without quotas) once its first chunk has gone out, and
    wait for the count before its end; an answer that is not a stream, now. A stream closed
    before its first chunk is counted all the same."""
    if not response.is_streamed:
        _counted_before_the_end(response, ledger.admit(key_id, policy, wait=False), key_id)
        return
    counting = []

    def count():
        if not counting:
            counting.append(ledger.admit(key_id, policy, wait=False))
        return counting[0]

    def first_then_count(chunks):
        try:
            for chunk in chunks:
                if _ends_the_stream(chunk):
                    _wait_for_count(count(), key_id)
                yield chunk
                count()
        finally:
            _wait_for_count(count(), key_id)

    response.response = first_then_count(response.response)
    response.call_on_close(count)  # a body the server closed before it began


# The last event of the service's SSE streams (api/sse.DONE).
_LAST_EVENT = b"data: [DONE]\n\n"


def _ends_the_stream(chunk) -> bool:
    """Whether `chunk` is a stream's last event. A client that has read it may ask again at once:
    the openai SDK closes the connection as soon as it reads [DONE], before the server has ended
    the body, so what must be done before the next request (the slot given back, the count
    written) is done before this chunk goes out, not after it."""
    return isinstance(chunk, bytes) and chunk.endswith(_LAST_EVENT)


def _done_by_the_last_event(chunks, action):
    """`chunks`, with `action()` (idempotent) run before the last event ([DONE]) is handed out, or
    at the end of a stream that ends otherwise."""
    try:
        for chunk in chunks:
            if _ends_the_stream(chunk):
                action()
            yield chunk
    finally:
        action()


def _release_when_answered(response, ledger, key_id: str, lease_id: str) -> None:
    """Give a key's slot back once `response` is answered: a whole answer now; a stream before its
    last event ([DONE]) goes to the server, so that a client that has read it may ask again at
    once (after it, or on close, it would race with that next request). A stream that ends
    otherwise gives it back at its end, and one closed early (the client left) on close."""
    released = []

    def release() -> None:
        if not released:
            released.append(True)
            ledger.release(key_id, lease_id)

    if not response.is_streamed:
        release()
        return

    response.response = _done_by_the_last_event(response.response, release)
    response.call_on_close(release)
