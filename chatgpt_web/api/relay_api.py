"""The relay faces: /v1 endpoints served by OpenAI-compatible upstreams, and /admin/upstreams.

POST /v1/completions, /v1/embeddings, /v1/moderations and /v1/audio/speech take JSON;
/v1/audio/transcriptions takes multipart form data, passed on as received but for the `model`
field a route renames (relay/multipart.py). /v1/images/generations, /edits and /variations are
api/images.py's, which asks `route_images()` first (edits and variations are multipart, passed on
the same way).
/v1/chat/completions is the OpenAI face's; it asks `route_chat()` first, which hands
the request to the relay when the model's route says so (web pool resting, a relay-only model,
tools the web backend lacks). `/v1/models` adds `listed_models()` to the web list.

Other OpenAI API families answer 501 `unsupported_endpoint` (organisation and admin APIs are never
relayed: they would expose the upstream accounts). Errors use the OpenAI envelope.

Requests are read and run by relay_requests.py (also used by the chat hook).
"""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..errors import ApiError, NotFound
from ..services import current
from .error_boundary import install_error_handlers
from .openai_compat import error_body
from .relay_requests import DEFAULT_MODERATION_MODEL, form_request, json_request, run

blueprint = Blueprint("relay", __name__, url_prefix="/v1")
admin_blueprint = Blueprint("relay_admin", __name__, url_prefix="/admin")

# OpenAI API families this service does not relay: 501 rather than a confusing 404.
UNSUPPORTED = ("files", "uploads", "batches", "fine_tuning", "fine-tunes",
               "vector_stores", "assistants", "threads", "organization", "projects",
               "realtime", "containers", "evals", "chatkit", "videos", "audio/translations")


install_error_handlers(blueprint, error_body)


@blueprint.before_request
def _relay_configured() -> None:
    """Without UPSTREAMS_FILE the relay endpoints are unknown URLs, as before the relay."""
    if current().relay is None and not (request.endpoint or "").startswith("relay.unsupported"):
        raise NotFound(f"Invalid URL ({request.method} {request.path})", "unknown_url")


@blueprint.post("/completions")
def completions():
    services = current()
    return run(services, json_request(services, "/completions"))


@blueprint.post("/embeddings")
def embeddings():
    services = current()
    return run(services, json_request(services, "/embeddings"))


@blueprint.post("/moderations")
def moderations():
    services = current()
    return run(services, json_request(services, "/moderations",
                                       default_model=DEFAULT_MODERATION_MODEL))


@blueprint.post("/audio/speech")
def speech():
    services = current()
    return run(services, json_request(services, "/audio/speech", binary=True))


@blueprint.post("/audio/transcriptions")
def transcriptions():
    services = current()
    return run(services, form_request(services, "/audio/transcriptions", what="the audio"))


def unsupported(family: str, rest: str = ""):
    """OpenAI API families the service does not serve: 501 in the OpenAI envelope."""
    raise ApiError(f"/v1/{family} is not offered by this service", "unsupported_endpoint",
                   status=501, headers={"x-should-retry": "false"})


for _family in UNSUPPORTED:
    for _rule in (f"/{_family}", f"/{_family}/<path:rest>"):
        blueprint.add_url_rule(_rule, f"unsupported_{_family}{'_sub' if 'rest' in _rule else ''}",
                               unsupported, defaults={"family": _family},
                               methods=["GET", "POST", "PUT", "PATCH", "DELETE"])


@admin_blueprint.get("/upstreams")
def upstreams():
    """Each relay upstream key (by id) with its health; never a key or a base URL."""
    relay = current().relay
    if relay is None:
        raise NotFound("Not available: no relay upstreams (UPSTREAMS_FILE is not set; "
                       "docs/relay.md)", "relay_disabled")
    return jsonify({"keys": relay.report()})
