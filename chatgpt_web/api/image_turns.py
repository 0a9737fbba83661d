"""Image turns on the web accounts, and the images they draw: read back, or linked.

`draw()` runs one turn in the web app's image mode (`system_hints: ["picture_v2"]`), with the
images to edit if any (uploaded as any chat attachment is), and returns its Completion, whose
`images` are asset pointers. `source_of()` says which account may read one;
`fetch()` reads its bytes from that account (upstream/downloads.py); `image_markdown()` turns the
images of a chat answer into markdown image links to this service (image_links.py), which is how
chat UIs show what the model drew.
"""
from __future__ import annotations

from flask import request

from ..errors import NotFound, UpstreamError
from ..image_links import ImageSource
from ..services import Services
from ..upstream.conversation import ChatMessage, ConversationRequest
from ..upstream.downloads import AssetPointer, Download
from ..upstream.endpoints import from_base_url
from ..upstream.stream import Completion
from .credentials import Grant
from .intake import client_gone

NO_RETRY = {"x-should-retry": "false"}


def draw(services: Services, grant: Grant, text: str, images: tuple = ()) -> Completion:
    """One image turn, `images` (uploads.Attachment: the pictures to edit) uploaded to the
    account and sent with `text`; its Completion has at least one image.

    :raise UpstreamError: image_not_generated, when the model answered without drawing.
    """
    config = services.config
    answer = grant.start_answer(services.conversations, ConversationRequest(
        messages=(ChatMessage("user", text, images),), model=config.default_model,
        timeout=config.image_timeout, extra={"system_hints": ["picture_v2"]}))
    completion = answer.read(abandoned=client_gone)
    if not completion.images:
        said = (completion.text or "").strip()[:300]
        raise UpstreamError("the model answered without drawing an image"
                            + (f": {said}" if said else ""), "image_not_generated",
                            headers=NO_RETRY)
    return completion


def source_of(grant: Grant, completion: Completion, pointer: str) -> ImageSource:
    """Where the image is and which account may read it."""
    if grant.pool is not None:
        account = grant.pool.pinned(completion.conversation_id or "")
        return ImageSource(pointer, completion.conversation_id, account_id=account.id)
    return ImageSource(pointer, completion.conversation_id, access_token=grant.access_token)


def fetch(services: Services, source: ImageSource) -> Download:
    """The image's bytes, read from its account. :raise NotFound: the account is gone."""
    pointer = AssetPointer.parse(source.pointer)
    if pointer is None:
        raise UpstreamError("the upstream named an image this service cannot read",
                            "upstream_bad_answer")
    if source.account_id is not None:
        pool = services.pool
        if pool is None:
            raise NotFound("this file is no longer available", "file_not_found")
        access_token = pool.access_token(pool.account(source.account_id))
    else:
        access_token = source.access_token
    config = services.config
    return services.downloads.fetch(access_token, from_base_url(config.base_url), pointer,
                                    source.conversation_id, max_bytes=config.max_image_bytes,
                                    timeout=config.request_timeout)


def image_markdown(services: Services, grant: Grant, completion: Completion, base: str) -> str:
    """The images of a chat answer as markdown image links to this service at `base` (its
    origin), "" when it drew none. Images drawn through a caller's reverse_proxy are not linked:
    a link is read back later through the configured upstream only."""
    if not completion.images or grant.upstream != from_base_url(services.config.base_url):
        return ""
    links = [f"![image]({base}{services.image_links.issue(source_of(grant, completion, p))})"
             for p in completion.images]
    return "\n\n".join(links)


def link_base(services: Services) -> str:
    """The origin image links name: PUBLIC_URL, else the one the current request came to."""
    return services.config.public_url or request.host_url.rstrip("/")


def with_images(text: str, drawn: str) -> str:
    """An answer's text followed by the markdown of its images."""
    return f"{text}\n\n{drawn}" if text and drawn else text or drawn
