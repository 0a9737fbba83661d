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
openai SDK sends them). An edit may instead be the official JSON body (`Content-Type:
application/json`): the same fields, and the pictures as `images`, a list of references
`{"image_url": "data:..." | "https://..."}`, each read as a chat `image_url` part's URL is
(attachments.url_ref and read_all: data: URLs decoded, https URLs fetched through the SSRF
guard); a `file_id` reference is refused, as the web accounts have no uploaded files here. Each
picture is checked as a chat attachment is (api/attachments.py: PNG, JPEG or WebP by its bytes,
MAX_UPLOAD_BYTES, MAX_FILES) and uploaded to the account with the turn (upstream/uploads.py), so
the user message of each image turn carries the pictures and the prompt. A variation's prompt is
VARIATION_PROMPT. The web app has no masked edit: `mask` is a 400 on the web accounts, in
either form.

A model the relay routes (relay_requests.route_images) goes to the relay, edits and variations
as the body they came as: multipart, or an edit's JSON.

`GET /v1/files/<id>/content?expires=&sig=` serves a linked image: the signature is the credential
(no API key: chat UIs load these links as plain <img> sources), the bytes are read from the
account each time, and neither the account nor a ChatGPT URL ever reaches the caller.

The turns, downloads and links are image_turns.py's (the chat faces use them too).
"""
from __future__ import annotations

import base64
import time
from collections.abc import Callable
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
from .relay_requests import EDITS, GENERATIONS, VARIATIONS

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
MASKS = ("mask", "markup")  # what the web app cannot do: a masked edit
# One picture of a JSON edit, in words (for the errors that ask for one).
IMAGE_REFERENCE = '{"image_url": a data: URL or an https URL}'


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


@blueprint.post(GENERATIONS)
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


@blueprint.post(EDITS)
def edits():
    """Draw `n` edits of the caller's images as `prompt` asks: multipart `image` or `image[]`
    files, or a JSON body whose `images` are image_url references."""
    return _edit(EDITS, SIZES, _JSON_EDIT if request.is_json else _MULTIPART_EDIT)


@blueprint.post(VARIATIONS)
def variations():
    """Draw `n` variations of the caller's image (multipart `image`)."""
    return _edit(VARIATIONS, VARIATION_SIZES, _MULTIPART_VARIATION)


@dataclass(frozen=True)
class _Form:
    """A form an edit's body comes in: `fields()` reads its fields (refusing a mask), and
    `pictures(body, rules)` reads its pictures as checked Attachments."""

    fields: Callable[[], dict]
    pictures: Callable[[dict, attachments.FileRules], tuple[Attachment, ...]]


def _edit(path: str, sizes: tuple[str, ...], form: _Form):
    """An edit of the pictures sent to `path` in `form`: as its `prompt` asks, or, for a
    variation (no prompt of the caller's), as VARIATION_PROMPT."""
    services = current()
    relayed = relay_requests.route_images(services, path)
    if relayed is not None:
        return relayed
    grant = authenticate(services)
    body = form.fields()
    variation = path == VARIATIONS
    prompt = VARIATION_PROMPT if variation else _prompt(body, services.config)
    options = _options(body, sizes)
    images = form.pictures(body, attachments.FileRules.from_config(services.config))
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


def _form(wrong_type: str) -> dict:
    """The text fields of a multipart image request, read as generations' JSON body would be: a
    form holds only strings, so `n` becomes a number and `stream` a boolean when they are one.
    A `mask` (or `markup`) is refused: the web app has no masked edit.

    :raise BadRequest: invalid_content_type (saying `wrong_type`), a body that is not multipart;
        unsupported_parameter.
    """
    if request.mimetype != "multipart/form-data":
        raise BadRequest(wrong_type, "invalid_content_type")
    for name in MASKS:
        if name in request.files or request.form.get(name):
            raise _no_mask(name)
    body = request.form.to_dict()
    n = body.get("n")
    if n is not None and n.isascii() and n.isdigit() and len(n) <= 3:
        body["n"] = int(n)
    if body.get("stream") in ("true", "false"):
        body["stream"] = body["stream"] == "true"
    return body


def _no_mask(name: str) -> BadRequest:
    return BadRequest(f"'{name}' is not available on the web backend: it has no masked edit; "
                      "say in the prompt what to change", "unsupported_parameter", param=name)


def _images(rules: attachments.FileRules, names: tuple[str, ...],
            most: int) -> tuple[Attachment, ...]:
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
    return attachments.form_files(files, rules, param="image", accepted=INPUT_TYPES, most=most)


def _json_fields() -> dict:
    """The fields of a JSON edit; a `mask` (or `markup`) is refused, as in a multipart one.

    :raise BadRequest: invalid_json, unsupported_parameter.
    """
    body = _body()
    for name in MASKS:
        if body.get(name) is not None:
            raise _no_mask(name)
    return body


def _json_images(body: dict, rules: attachments.FileRules) -> tuple[Attachment, ...]:
    """A JSON edit's `images`: 1 to MAX_FILES references `{"image_url": URL}`, each URL read as
    a chat image_url part's is (a data: URL decoded, an https URL fetched), PNG, JPEG or WebP.

    :raise BadRequest: missing_field, invalid_field, too_many_files, unsupported_parameter (a
        file_id), invalid_image_url and the fetch's refusals. :raise PayloadTooLarge.
    :raise UnsupportedMediaType. :raise UpstreamError: an image server failed.
    """
    images = body.get("images")
    if images is None or images == []:
        raise BadRequest("'images' is required: a list of 1 to "
                         f"{attachments.MAX_FILES} images, each {IMAGE_REFERENCE}",
                         "missing_field", param="images")
    if not isinstance(images, list):
        raise BadRequest(f"images must be a list of images, each {IMAGE_REFERENCE}",
                         "invalid_field", param="images")
    attachments.check_count(len(images), attachments.MAX_FILES, "images")
    refs = [_image_reference(reference, f"images[{index}]")
            for index, reference in enumerate(images)]
    return attachments.read_all(refs, rules, accepted=INPUT_TYPES)


def _image_reference(reference, param: str) -> attachments.FileRef:
    """The FileRef of one image reference of a JSON edit (at `param`)."""
    if not isinstance(reference, dict):
        raise BadRequest(f"{param} must be an object: {IMAGE_REFERENCE}", "invalid_field",
                         param=param)
    url, file_id = reference.get("image_url"), reference.get("file_id")
    if url is not None and file_id is not None:
        raise BadRequest(f"{param} has both image_url and file_id: give one of them",
                         "invalid_field", param=param)
    if file_id is not None:
        raise BadRequest("file_id is not available on the web backend: this service keeps no "
                         "uploaded files; send the image as image_url (a data: URL or an https "
                         "URL)", "unsupported_parameter", param=f"{param}.file_id")
    if url is None:
        raise BadRequest(f"{param} needs image_url: {IMAGE_REFERENCE}", "invalid_field",
                         param=param)
    if not isinstance(url, str) or not url.strip():
        raise BadRequest(f"{param}.image_url must be a data: URL or an https URL, as a string",
                         "invalid_field", param=f"{param}.image_url")
    return attachments.url_ref(url, f"{param}.image_url", field=f"{param}.image_url")


_MULTIPART_EDIT = _Form(
    lambda: _form("send the images as multipart/form-data (image or image[] files, as the "
                  "openai SDK does) or as a JSON body (Content-Type: application/json) whose "
                  f"images are a list, each {IMAGE_REFERENCE}"),
    lambda body, rules: _images(rules, ("image", "image[]"), attachments.MAX_FILES))
_JSON_EDIT = _Form(_json_fields, _json_images)
_MULTIPART_VARIATION = _Form(
    lambda: _form("send the image as multipart/form-data (as the openai SDK does)"),
    lambda body, rules: _images(rules, ("image",), 1))


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
