"""Image generation on the web accounts: POST /v1/images/generations, GET /v1/files/<id>/content.

`POST /v1/images/generations` takes the official body (`prompt`, `model`, `n`, `size`,
`response_format`) and runs one image turn per image on the caller's account or the pool: a new
chat in image mode (`system_hints: ["picture_v2"]`, the web app's image tool), whose answer is
handed off and awaited as any answer is (upstream/handoff.py), within IMAGE_TIMEOUT. The drawn
image's asset pointer is then either downloaded (`b64_json`) or turned into a link to this
service (`url`, image_links.py). The official answer: `{"created", "data": [{"b64_json"|"url",
"revised_prompt"}]}`. A model the relay routes (relay_requests.route_images) goes to the relay.

`GET /v1/files/<id>/content?expires=&sig=` serves a linked image: the signature is the credential
(no API key: chat UIs load these links as plain <img> sources), the bytes are read from the
account each time, and neither the account nor a ChatGPT URL ever reaches the caller.

The turns, downloads and links are image_turns.py's (the chat faces use them too).
"""
from __future__ import annotations

import base64
import time

from flask import Blueprint, Response, jsonify, request

from .. import models
from ..config import Config
from ..errors import BadRequest, NotFound
from ..services import current
from . import relay_requests
from .credentials import authenticate
from .error_boundary import install_error_handlers
from .image_turns import draw, fetch, link_base, source_of
from .openai_compat import error_body

blueprint = Blueprint("images", __name__, url_prefix="/v1")
install_error_handlers(blueprint, error_body)

SIZES = ("auto", "256x256", "512x512", "1024x1024", "1536x1024", "1024x1536", "1792x1024",
         "1024x1792")
FORMATS = ("b64_json", "url")
MAX_IMAGES = 4  # `n`: each image is a whole web turn


def _body() -> dict:
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", "invalid_json")
    return body


def _choice(body: dict, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(name)
    if value is None:
        return default
    if value not in allowed:
        raise BadRequest(f"{name} must be one of {', '.join(allowed)}", "invalid_field",
                         param=name)
    return value


def _count(body: dict) -> int:
    n = body.get("n", 1)
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IMAGES:
        raise BadRequest(f"n must be a whole number from 1 to {MAX_IMAGES}", "invalid_field",
                         param="n")
    return n


def _prompt(body: dict, config: Config) -> str:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest("'prompt' is required (the text describing the image)", "missing_field",
                         param="prompt")
    if len(prompt) > config.max_prompt_chars:
        raise BadRequest(f"the prompt is longer than {config.max_prompt_chars} characters",
                         "prompt_too_long", param="prompt")
    return prompt


def _model(body: dict) -> str:
    model = body.get("model") or models.DEFAULT_IMAGE_MODEL
    if model not in models.IMAGE_MODELS:
        raise NotFound(f"The model `{str(model)[:100]}` does not exist or you do not have access "
                       "to it (image models: " + ", ".join(models.IMAGE_MODELS) + ")",
                       "model_not_found", param="model")
    return model


@blueprint.post("/images/generations")
def generations():
    """Draw `n` images on the web account and answer in the official shape."""
    services = current()
    relayed = relay_requests.route_images(services)
    if relayed is not None:
        return relayed
    grant = authenticate(services)
    body = _body()
    config = services.config
    prompt = _prompt(body, config)
    model = _model(body)
    n = _count(body)
    size = _choice(body, "size", SIZES, "auto")
    # dall-e answers links by default, the gpt-image models base64 (as the official API does).
    response_format = _choice(body, "response_format", FORMATS,
                              "url" if model.startswith("dall-e") else "b64_json")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("stream must be true or false", "invalid_field", param="stream")
    if stream:
        raise BadRequest("streamed image generation is not available on the web backend",
                         "unsupported_parameter", param="stream")
    created = int(time.time())
    data = []
    for _ in range(n):
        completion = draw(services, grant, _instruction(prompt, size))
        source = source_of(grant, completion, completion.images[0])
        item: dict = {"revised_prompt": prompt}
        if response_format == "b64_json":
            item["b64_json"] = base64.b64encode(fetch(services, source).data).decode()
        else:
            item["url"] = link_base(services) + services.image_links.issue(source)
        data.append(item)
    return jsonify({"created": created, "data": data})


def _instruction(prompt: str, size: str) -> str:
    """The user message of the image turn. The web tool chooses its own size; a size other than
    square is passed on as the shape asked for."""
    if size in ("auto", "256x256", "512x512", "1024x1024"):
        return prompt
    width, height = size.split("x")
    shape = "landscape" if int(width) > int(height) else "portrait"
    return f"{prompt}\n\n(Draw it in {shape} format, {size}.)"


@blueprint.get("/files/<link_id>/content")
def file_content(link_id: str):
    """A generated image by its signed link (image_links.py)."""
    services = current()
    source = services.image_links.open(link_id, request.args.get("expires"),
                                       request.args.get("sig"))
    download = fetch(services, source)
    return Response(download.data, 200, content_type=download.content_type, headers={
        "Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff",
        "Content-Disposition": "inline"})
