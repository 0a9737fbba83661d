"""Images on the web accounts: POST /v1/images/generations, /edits and /variations, and
GET /v1/files/<id>/content.

`POST /v1/images/generations` takes the official body (`prompt`, `model`, `n`, `size`,
`response_format`) and runs one image turn per image on the caller's account or the pool: a new
chat in image mode (`system_hints: ["picture_v2"]`, the web app's image tool), whose answer is
handed off and awaited as any answer is (upstream/handoff.py), within IMAGE_TIMEOUT. The drawn
image's asset pointer is then either downloaded (`b64_json`) or turned into a link to this
service (`url`, image_links.py). The official answer: `{"created", "data": [{"b64_json"|"url",
"revised_prompt"}]}`.

`POST /v1/images/edits` and `/v1/images/variations` take the official multipart form: the same
fields as text, and the pictures as files (`image`, or several `image[]` for an edit, as the
openai SDK sends them). Each picture is checked as a chat attachment is (api/attachments.py:
PNG, JPEG or WebP by its bytes, MAX_UPLOAD_BYTES, MAX_FILES) and uploaded to the account with
the turn (upstream/uploads.py), so the user message of each image turn carries the pictures and
the prompt. A variation's prompt is VARIATION_PROMPT. The web app has no masked edit: `mask` is a
400 on the web accounts.

A model the relay routes (relay_requests.route_images) goes to the relay, edits and variations
as the multipart body they came as.

`GET /v1/files/<id>/content?expires=&sig=` serves a linked image: the signature is the credential
(no API key: chat UIs load these links as plain <img> sources), the bytes are read from the
account each time, and neither the account nor a ChatGPT URL ever reaches the caller.

The turns, downloads and links are image_turns.py's (the chat faces use them too).
"""
from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from flask import Blueprint, Response, jsonify, request

from .. import models
from ..config import Config
from ..errors import BadRequest, NotFound
from ..services import Services, current
from ..upstream.uploads import Attachment
from . import attachments, relay_requests
from .credentials import Grant, authenticate
from .error_boundary import install_error_handlers
from .image_turns import draw, fetch, link_base, source_of
from .openai_compat import error_body

blueprint = Blueprint("images", __name__, url_prefix="/v1")
install_error_handlers(blueprint, error_body)

SIZES = ("auto", "256x256", "512x512", "1024x1024", "1536x1024", "1024x1536", "1792x1024",
         "1024x1792")
VARIATION_SIZES = ("256x256", "512x512", "1024x1024")  # the official API's, square only
FORMATS = ("b64_json", "url")
MAX_IMAGES = 4  # `n`: each image is a whole web turn
INPUT_TYPES = ("image/png", "image/jpeg", "image/webp")  # what the official edits take
# The user message of a variation's turn (the web app has no variation of its own).
VARIATION_PROMPT = ("Draw a variation of the attached image: keep its subject, composition and "
                    "style, and change the details.")


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
    prompt = _prompt(body, services.config)
    options = _options(body, SIZES)
    return _drawn(services, grant, _instruction(prompt, options.size), (), options, prompt)


@blueprint.post("/images/edits")
def edits():
    """Draw `n` edits of the caller's images (multipart `image` or `image[]`) as `prompt` asks."""
    return _edit("/images/edits", SIZES, ("image", "image[]"), attachments.MAX_FILES)


@blueprint.post("/images/variations")
def variations():
    """Draw `n` variations of the caller's image (multipart `image`)."""
    return _edit("/images/variations", VARIATION_SIZES, ("image",), 1)


def _edit(path: str, sizes: tuple[str, ...], names: tuple[str, ...], most: int):
    """An edit of at most `most` pictures (the files `names`) sent as multipart to `path`: as
    its `prompt` asks, or, for a variation (no prompt of the caller's), as VARIATION_PROMPT."""
    services = current()
    relayed = relay_requests.route_images(services, path)
    if relayed is not None:
        return relayed
    grant = authenticate(services)
    body = _form()
    variation = path == "/images/variations"
    prompt = VARIATION_PROMPT if variation else _prompt(body, services.config)
    options = _options(body, sizes)
    images = _images(services.config, names, most)
    return _drawn(services, grant, _instruction(prompt, options.size), images, options,
                  None if variation else prompt)


@dataclass(frozen=True)
class _Options:
    """What an image request asks for besides its prompt and images."""

    n: int
    size: str
    response_format: str


def _options(body: dict, sizes: tuple[str, ...]) -> _Options:
    """The checked `model`, `n`, `size`, `response_format` and `stream` of a request."""
    model = _model(body)
    n = _count(body)
    size = _choice(body, "size", sizes, "auto" if "auto" in sizes else "1024x1024")
    # dall-e answers links by default, the gpt-image models base64 (as the official API does).
    response_format = _choice(body, "response_format", FORMATS,
                              "url" if model.startswith("dall-e") else "b64_json")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("stream must be true or false", "invalid_field", param="stream")
    if stream:
        raise BadRequest("streamed image generation is not available on the web backend",
                         "unsupported_parameter", param="stream")
    return _Options(n, size, response_format)


def _drawn(services: Services, grant: Grant, text: str, images: tuple[Attachment, ...],
           options: _Options, revised_prompt: str | None):
    """`options.n` image turns of `text` and `images`, in the official answer's shape."""
    created = int(time.time())
    data = []
    for _ in range(options.n):
        completion = draw(services, grant, text, images)
        source = source_of(grant, completion, completion.images[0])
        item: dict = {} if revised_prompt is None else {"revised_prompt": revised_prompt}
        if options.response_format == "b64_json":
            item["b64_json"] = base64.b64encode(fetch(services, source).data).decode()
        else:
            item["url"] = link_base(services) + services.image_links.issue(source)
        data.append(item)
    return jsonify({"created": created, "data": data})


def _form() -> dict:
    """The text fields of a multipart image request, read as generations' JSON body would be: a
    form holds only strings, so `n` becomes a number and `stream` a boolean when they are one.
    A `mask` (or `markup`) is refused: the web app has no masked edit.

    :raise BadRequest: invalid_content_type, a body that is not multipart; unsupported_parameter.
    """
    if request.mimetype != "multipart/form-data":
        raise BadRequest("send the image as multipart/form-data (as the openai SDK does)",
                         "invalid_content_type")
    for name in ("mask", "markup"):
        if name in request.files or request.form.get(name):
            raise BadRequest(f"'{name}' is not available on the web backend: it has no masked "
                             "edit; say in the prompt what to change", "unsupported_parameter",
                             param=name)
    body = request.form.to_dict()
    n = body.get("n")
    if n is not None and n.isascii() and n.isdigit() and len(n) <= 3:
        body["n"] = int(n)
    if body.get("stream") in ("true", "false"):
        body["stream"] = body["stream"] == "true"
    return body


def _images(config: Config, names: tuple[str, ...], most: int) -> tuple[Attachment, ...]:
    """The request's image files (fields `names`, at most `most`), checked as any attachment is
    (each at most MAX_UPLOAD_BYTES, PNG, JPEG or WebP by its bytes).

    :raise BadRequest: missing_field, too_many_files. :raise PayloadTooLarge: file_too_large.
    :raise UnsupportedMediaType: unsupported_file_type.
    """
    files = [storage for name in names for storage in request.files.getlist(name)]
    if not files:
        raise BadRequest("'image' is required: the picture as a file"
                         + (" (several as image[])" if most > 1 else ""), "missing_field",
                         param="image")
    return attachments.form_files(files, attachments.FileRules.from_config(config),
                                  param="image", accepted=INPUT_TYPES, most=most)


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
