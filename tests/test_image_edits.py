"""Image edits and variations on the web accounts, through the official `openai` SDK over real
HTTP (api/images.py).

The SDK sends the pictures as multipart files (`image`, or `image[]` for several). The service
checks them as any attachment (PNG, JPEG or WebP by their bytes, MAX_UPLOAD_BYTES, MAX_FILES),
uploads them to the account (the emulator's file store keeps the bytes it received), and runs one
image turn whose user message points at them before the prompt; the emulator draws, and the
answer has the official shape, as generations' does.

An edit may also be the official JSON body, its pictures `images: [{"image_url": ...}]`: data:
URLs, or https URLs the service fetches (tests/tls_images.py serves them over TLS on loopback,
allowed by IMAGE_URL_ALLOW and trusted by IMAGE_URL_CA_FILE). The SDK sends edits as multipart,
so those requests are raw JSON.
"""
import base64
import io
import json

import openai
import pytest
from curl_cffi import requests as curl_requests
from werkzeug.formparser import parse_form_data

from chatgpt_web.api.images import VARIATION_PROMPT
from tests.relay_fixtures import CLIENT_KEY, upstream
from tests.vision_helpers import PDF, data_url, png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PHOTO = png(6, 4, shade=10)
SKETCH = png(3, 5, shade=200)


def drawn(emulator) -> list[bytes]:
    return [stored.data for stored in emulator.files.generated()]


def writes(emulator) -> list[dict]:
    return [r.json for r in emulator.requests_to("/f/conversation") if r.method == "POST"]


def user_content(write: dict) -> dict:
    return write["messages"][0]["content"]


def pointers(write: dict) -> list[str]:
    return [part["asset_pointer"] for part in user_content(write)["parts"]
            if isinstance(part, dict)]


def uploaded(emulator) -> dict[str, bytes]:
    """The uploads the account received, by asset pointer."""
    return {stored.pointer: stored.data for stored in emulator.files.uploaded()}


# --- POST /v1/images/edits ---------------------------------------------------------------------

def test_an_edit_uploads_the_image_and_sends_it_with_the_prompt(sdk, emulator):
    answer = sdk.images.edit(model="gpt-image-1", image=("photo.png", PHOTO, "image/png"),
                             prompt="give the cat a hat")
    (item,) = answer.data
    image = base64.b64decode(item.b64_json)
    assert image.startswith(PNG_SIGNATURE) and [image] == drawn(emulator)
    assert item.revised_prompt == "give the cat a hat"
    (write,) = writes(emulator)
    assert write["system_hints"] == ["picture_v2"]
    content = user_content(write)
    assert content["content_type"] == "multimodal_text"
    assert content["parts"][-1] == "give the cat a hat"
    # The one picture the account received is the caller's, byte for byte.
    assert [uploaded(emulator)[pointer] for pointer in pointers(write)] == [PHOTO]
    (attachment,) = write["messages"][0]["metadata"]["attachments"]
    assert attachment["mime_type"] == "image/png"
    assert (attachment["width"], attachment["height"]) == (6, 4)


def test_an_edit_of_two_images_sends_both_in_order(sdk, emulator):
    answer = sdk.images.edit(model="gpt-image-1", prompt="put them side by side",
                             image=[("a.png", PHOTO, "image/png"), ("b.png", SKETCH, "image/png")])
    assert [base64.b64decode(answer.data[0].b64_json)] == drawn(emulator)
    (write,) = writes(emulator)
    assert [uploaded(emulator)[pointer] for pointer in pointers(write)] == [PHOTO, SKETCH]
    assert user_content(write)["parts"][-1] == "put them side by side"


def test_an_edit_as_a_link_serves_the_drawn_bytes(sdk, emulator, live_service):
    answer = sdk.images.edit(model="gpt-image-1", image=("p.png", PHOTO), prompt="at night",
                             response_format="url")
    url = answer.data[0].url
    assert url.startswith(live_service.url + "/v1/files/img-")
    assert [curl_requests.get(url, timeout=30).content] == drawn(emulator)


def test_n_edits_are_n_turns_with_one_upload(sdk, emulator):
    answer = sdk.images.edit(model="dall-e-2", image=("p.png", PHOTO), prompt="in winter", n=2,
                             response_format="b64_json")
    assert [base64.b64decode(item.b64_json) for item in answer.data] == drawn(emulator)
    assert len(writes(emulator)) == 2
    assert len(emulator.files.uploaded()) == 1  # the same bytes on the same account


def test_a_jpeg_and_a_webp_are_accepted_by_their_bytes(sdk, emulator):
    jpeg = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffc0000b080004000601011100"
                         "ffd9")
    webp = b"RIFF" + (30).to_bytes(4, "little") + b"WEBPVP8X" + bytes(8) + (5).to_bytes(
        3, "little") + (3).to_bytes(3, "little")
    # Labelled as anything: the bytes decide.
    sdk.images.edit(model="gpt-image-1", prompt="p",
                    image=[("x.bin", jpeg, "application/octet-stream"), ("y", webp)])
    (write,) = writes(emulator)
    types = [entry["mime_type"] for entry in write["messages"][0]["metadata"]["attachments"]]
    assert types == ["image/jpeg", "image/webp"]


# --- POST /v1/images/variations ------------------------------------------------------------------
# The SDK marks create_variation deprecated (the official endpoint is retired); clients still call
# it, and the web accounts still serve it.
VARIATIONS_DEPRECATED = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")


@VARIATIONS_DEPRECATED
def test_a_variation_is_an_edit_with_the_documented_prompt(sdk, emulator):
    answer = sdk.images.create_variation(model="dall-e-2", image=("p.png", PHOTO),
                                         response_format="b64_json")
    (item,) = answer.data
    assert [base64.b64decode(item.b64_json)] == drawn(emulator)
    assert item.revised_prompt is None  # the prompt was ours, not the caller's
    (write,) = writes(emulator)
    assert write["system_hints"] == ["picture_v2"]
    assert user_content(write)["parts"][-1] == VARIATION_PROMPT
    assert [uploaded(emulator)[pointer] for pointer in pointers(write)] == [PHOTO]


@VARIATIONS_DEPRECATED
def test_variations_default_to_links_for_dall_e_and_take_n(sdk, emulator):
    answer = sdk.images.create_variation(image=("p.png", PHOTO), n=2, size="512x512")
    assert all(item.url for item in answer.data) and len(answer.data) == 2
    assert len(writes(emulator)) == 2


# --- what is refused, before any turn ----------------------------------------------------------

def post_form(service, path, token, fields=(), files=(), **options):
    from curl_cffi import CurlMime
    mime = CurlMime()
    for name, value in fields:
        mime.addpart(name=name, data=value.encode())
    for name, filename, data in files:
        mime.addpart(name=name, filename=filename, data=data, content_type="image/png")
    try:
        return curl_requests.post(service.url + "/v1" + path, multipart=mime, timeout=30,
                                  headers={"Authorization": f"Bearer {token}"}, **options)
    finally:
        mime.close()


def refused(response, status: int, code: str, param: str | None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["message"] and error["type"]
    return error


IMAGE = ("image", "p.png", PHOTO)


@pytest.mark.parametrize("fields, files, status, code, param", [
    ([], [IMAGE], 400, "missing_field", "prompt"),
    ([("prompt", "  ")], [IMAGE], 400, "missing_field", "prompt"),
    ([("prompt", "p")], [], 400, "missing_field", "image"),
    ([("prompt", "p")], [("image", "doc.png", PDF)], 415, "unsupported_file_type", "image[0]"),
    ([("prompt", "p")], [IMAGE, ("image[]", "a.gif", b"GIF89a\x01\x00\x01\x00")], 415,
     "unsupported_file_type", "image[1]"),
    ([("prompt", "p")], [("image", "empty.png", b"")], 400, "invalid_field", "image[0]"),
    ([("prompt", "p")], [("image[]", f"{n}.png", PHOTO) for n in range(11)], 400,
     "too_many_files", "image"),
    ([("prompt", "p")], [IMAGE, ("mask", "m.png", PHOTO)], 400, "unsupported_parameter", "mask"),
    ([("prompt", "p"), ("n", "9")], [IMAGE], 400, "invalid_field", "n"),
    ([("prompt", "p"), ("n", "0")], [IMAGE], 400, "invalid_field", "n"),
    ([("prompt", "p"), ("n", "two")], [IMAGE], 400, "invalid_field", "n"),
    ([("prompt", "p"), ("n", "9" * 5000)], [IMAGE], 400, "invalid_field", "n"),
    ([("prompt", "p"), ("n", "\u00b2")], [IMAGE], 400, "invalid_field", "n"),  # a digit to isdigit
    ([("prompt", "p"), ("size", "3x3")], [IMAGE], 400, "invalid_field", "size"),
    ([("prompt", "p"), ("response_format", "png")], [IMAGE], 400, "invalid_field",
     "response_format"),
    ([("prompt", "p"), ("stream", "true")], [IMAGE], 400, "unsupported_parameter", "stream"),
    ([("prompt", "p"), ("model", "midjourney-9")], [IMAGE], 404, "model_not_found", "model"),
], ids=lambda value: repr(value)[:30])
def test_bad_edits_are_4xx_naming_the_field(live_service, emulator, token, fields, files,
                                            status, code, param):
    refused(post_form(live_service, "/images/edits", token, fields, files), status, code, param)
    assert not writes(emulator) and not emulator.files.uploaded()


@pytest.mark.parametrize("fields, files, status, code, param", [
    ([], [], 400, "missing_field", "image"),
    ([], [IMAGE, ("image", "b.png", SKETCH)], 400, "too_many_files", "image"),
    ([], [("image", "doc.png", PDF)], 415, "unsupported_file_type", "image[0]"),
    ([("size", "1024x1536")], [IMAGE], 400, "invalid_field", "size"),  # square only
    ([("n", "5")], [IMAGE], 400, "invalid_field", "n"),
    ([("response_format", "svg")], [IMAGE], 400, "invalid_field", "response_format"),
], ids=lambda value: repr(value)[:30])
def test_bad_variations_are_4xx_naming_the_field(live_service, emulator, token, fields, files,
                                                 status, code, param):
    refused(post_form(live_service, "/images/variations", token, fields, files), status, code,
            param)
    assert not writes(emulator)


def test_a_mask_through_the_sdk_is_a_clear_400(sdk, emulator):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.images.edit(model="gpt-image-1", image=("p.png", PHOTO), mask=("m.png", PHOTO),
                        prompt="replace the sky")
    assert raised.value.code == "unsupported_parameter"
    assert raised.value.body["param"] == "mask" and "mask" in raised.value.message
    assert not writes(emulator)


def test_an_image_over_max_upload_bytes_is_413(live_service_factory, emulator, token):
    service = live_service_factory(MAX_UPLOAD_BYTES="100")
    big = png(40, 40, shade=3) + bytes(200)
    with openai.OpenAI(base_url=service.url + "/v1", api_key=token, max_retries=0,
                       timeout=30) as client:
        with pytest.raises(openai.APIStatusError) as raised:
            client.images.edit(model="gpt-image-1", image=("big.png", big), prompt="p")
    assert raised.value.status_code == 413
    assert (raised.value.code, raised.value.body["param"]) == ("file_too_large", "image[0]")
    assert not emulator.files.uploaded()


@pytest.mark.parametrize("path", ["/images/edits", "/images/variations"])
@pytest.mark.parametrize("body, content_type", [
    (b'{"prompt": "p", "image": "iVBOR"}', "application/json"),
    (b"prompt=p", "application/x-www-form-urlencoded"),
    (b"--x\r\nbroken", "multipart/form-data; boundary=x"),
])
def test_a_body_that_is_not_a_multipart_image_is_400(live_service, emulator, token, path, body,
                                                     content_type):
    response = curl_requests.post(live_service.url + "/v1" + path, data=body, timeout=30,
                                  headers={"Authorization": f"Bearer {token}",
                                           "Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("invalid_content_type", "missing_field")
    assert not writes(emulator)


def test_no_token_is_401(live_service, emulator):
    response = post_form(live_service, "/images/edits", "", [("prompt", "p")], [IMAGE])
    assert response.status_code == 401
    assert not writes(emulator)


# --- POST /v1/images/edits as JSON ------------------------------------------------------------

JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffc0000b080004000601011100ffd9")


def post_json(service, token, body, path="/images/edits", content_type="application/json"):
    return curl_requests.post(service.url + "/v1" + path, data=json.dumps(body), timeout=30,
                              headers={"Authorization": f"Bearer {token}",
                                       "Content-Type": content_type})


def image_refs(*urls) -> list[dict]:
    return [{"image_url": url} for url in urls]


def test_a_json_edit_uploads_its_data_url_image_and_sends_it_with_the_prompt(live_service,
                                                                             emulator, token):
    response = post_json(live_service, token, {"model": "gpt-image-1", "prompt": "a hat",
                                               "images": image_refs(data_url(PHOTO))})
    assert response.status_code == 200, response.text
    (item,) = response.json()["data"]
    assert [base64.b64decode(item["b64_json"])] == drawn(emulator)
    assert item["revised_prompt"] == "a hat"
    (write,) = writes(emulator)
    assert write["system_hints"] == ["picture_v2"]
    assert user_content(write)["content_type"] == "multimodal_text"
    assert user_content(write)["parts"][-1] == "a hat"
    assert [uploaded(emulator)[pointer] for pointer in pointers(write)] == [PHOTO]
    (attachment,) = write["messages"][0]["metadata"]["attachments"]
    assert (attachment["mime_type"], attachment["width"], attachment["height"]) == (
        "image/png", 6, 4)


def test_a_json_edit_of_several_images_sends_them_all_in_order(live_service, emulator, token):
    # Labelled as anything: the bytes decide, as for a multipart edit.
    response = post_json(live_service, token, {
        "prompt": "put them side by side", "n": 2, "response_format": "url", "size": "1536x1024",
        "quality": "high", "background": "auto", "output_format": "png", "user": "u-1",
        "images": image_refs(data_url(PHOTO), data_url(JPEG, "image/png"), data_url(SKETCH))})
    assert response.status_code == 200, response.text
    assert [curl_requests.get(item["url"], timeout=30).content
            for item in response.json()["data"]] == drawn(emulator)
    first, second = writes(emulator)  # n turns, each with every picture, in order
    for write in (first, second):
        assert [uploaded(emulator)[pointer] for pointer in pointers(write)] == [PHOTO, JPEG,
                                                                                SKETCH]
        assert [entry["mime_type"] for entry in write["messages"][0]["metadata"]["attachments"]
                ] == ["image/png", "image/jpeg", "image/png"]
        assert user_content(write)["parts"][-1].startswith("put them side by side\n\n")
    assert len(emulator.files.uploaded()) == 3  # each picture once on the account


CAT = png(5, 3, shade=77)


@pytest.fixture(scope="module")
def image_server(tmp_path_factory):
    from tests.tls_images import ImageServer
    server = ImageServer(tmp_path_factory.mktemp("edit-images"), {
        "/cat.png": ("image/png", CAT),
        "/page": ("text/html", b"<html>not an image</html>"),
        "/cat.gif": ("image/gif", b"GIF89a\x01\x00\x01\x00"),
        "/big.png": ("image/png", CAT + b"\0" * 5000),
    })
    yield server
    server.stop()


@pytest.fixture
def allowed_service(live_service_factory, image_server):
    """A service that may fetch from the local TLS image server (and trusts its certificate)."""
    return live_service_factory(IMAGE_URL_ALLOW=image_server.url + "/",
                                IMAGE_URL_CA_FILE=str(image_server.cert_file),
                                MAX_UPLOAD_BYTES="4096")


def test_a_json_edit_fetches_an_https_image_url_and_uploads_it(allowed_service, emulator, token,
                                                              image_server):
    response = post_json(allowed_service, token, {"prompt": "a hat", "images": image_refs(
        data_url(PHOTO), image_server.url + "/to-cat")})  # a redirect, followed
    assert response.status_code == 200, response.text
    (write,) = writes(emulator)
    assert [uploaded(emulator)[pointer] for pointer in pointers(write)] == [PHOTO, CAT]
    assert image_server.requests[-2:] == ["/to-cat", "/cat.png"]


@pytest.mark.parametrize("path, status, code", [
    ("/page", 415, "unsupported_file_type"),  # not an image
    ("/cat.gif", 415, "unsupported_file_type"),  # an image chat takes, but not an edit
    ("/big.png", 413, "file_too_large"),
    ("/missing.png", 400, "image_url_unreachable"),
    ("/to-private", 400, "image_url_not_allowed"),  # localhost is not under IMAGE_URL_ALLOW
])
def test_https_image_urls_that_cannot_be_used_are_refused(allowed_service, emulator, token,
                                                          image_server, path, status, code):
    response = post_json(allowed_service, token, {"prompt": "p", "images": image_refs(
        data_url(PHOTO), image_server.url + path)})
    refused(response, status, code, "images[1].image_url")
    assert not writes(emulator) and not emulator.files.uploaded()


GOOD = {"image_url": data_url(PHOTO)}


@pytest.mark.parametrize("body, status, code, param", [
    ([GOOD], 400, "invalid_json", None),
    ("images", 400, "invalid_json", None),
    ({"prompt": "p"}, 400, "missing_field", "images"),
    ({"prompt": "p", "images": None}, 400, "missing_field", "images"),
    ({"prompt": "p", "images": []}, 400, "missing_field", "images"),
    ({"prompt": "p", "images": GOOD}, 400, "invalid_field", "images"),
    ({"prompt": "p", "images": data_url(PHOTO)}, 400, "invalid_field", "images"),
    ({"prompt": "p", "images": [GOOD] * 11}, 400, "too_many_files", "images"),
    ({"prompt": "p", "images": [data_url(PHOTO)]}, 400, "invalid_field", "images[0]"),
    ({"prompt": "p", "images": [GOOD, None]}, 400, "invalid_field", "images[1]"),
    ({"prompt": "p", "images": [{}]}, 400, "invalid_field", "images[0]"),
    ({"prompt": "p", "images": [{"detail": "high"}]}, 400, "invalid_field", "images[0]"),
    ({"prompt": "p", "images": [{**GOOD, "file_id": "file-1"}]}, 400, "invalid_field",
     "images[0]"),
    ({"prompt": "p", "images": [GOOD, {"file_id": "file-abc"}]}, 400, "unsupported_parameter",
     "images[1].file_id"),
    ({"prompt": "p", "images": [{"image_url": 5}]}, 400, "invalid_field", "images[0].image_url"),
    ({"prompt": "p", "images": [{"image_url": "  "}]}, 400, "invalid_field",
     "images[0].image_url"),
    ({"prompt": "p", "images": [{"image_url": {"url": data_url(PHOTO)}}]}, 400, "invalid_field",
     "images[0].image_url"),
    ({"prompt": "p", "images": [GOOD, {"image_url": "ftp://example.com/a.png"}]}, 400,
     "invalid_image_url", "images[1].image_url"),
    ({"prompt": "p", "images": [{"image_url": "file:///etc/passwd"}]}, 400, "invalid_image_url",
     "images[0].image_url"),
    ({"prompt": "p", "images": [{"image_url": "http://example.com/a.png"}]}, 400,
     "image_url_not_allowed", "images[0].image_url"),
    ({"prompt": "p", "images": [{"image_url": "https://10.0.0.1/a.png"}]}, 400,
     "image_url_not_allowed", "images[0].image_url"),
    ({"prompt": "p", "images": [{"image_url": data_url(b"plain words", "text/plain")}]}, 415,
     "unsupported_file_type", "images[0].image_url"),
    ({"prompt": "p", "images": [GOOD, {"image_url": data_url(PDF, "application/pdf")}]}, 415,
     "unsupported_file_type", "images[1].image_url"),
    ({"prompt": "p", "images": [{"image_url": data_url(b"GIF89a\x01\x00\x01\x00", "image/gif")}]},
     415, "unsupported_file_type", "images[0].image_url"),
    ({"prompt": "p", "images": [{"image_url": "data:image/png;base64,%%%not-base64"}]}, 400,
     "invalid_field", "images[0].image_url"),
    ({"prompt": "p", "images": [{"image_url": "data:image/png;base64"}]}, 400, "invalid_field",
     "images[0].image_url"),
    ({"prompt": "p", "images": [{"image_url": "data:image/png;base64,"}]}, 400, "invalid_field",
     "images[0].image_url"),
    ({"prompt": "p", "images": [GOOD], "mask": GOOD}, 400, "unsupported_parameter", "mask"),
    ({"images": [GOOD]}, 400, "missing_field", "prompt"),
    ({"prompt": 5, "images": [GOOD]}, 400, "missing_field", "prompt"),
    ({"prompt": "p", "images": [GOOD], "n": 9}, 400, "invalid_field", "n"),
    ({"prompt": "p", "images": [GOOD], "n": "2"}, 400, "invalid_field", "n"),
    ({"prompt": "p", "images": [GOOD], "size": "3x3"}, 400, "invalid_field", "size"),
    ({"prompt": "p", "images": [GOOD], "response_format": "png"}, 400, "invalid_field",
     "response_format"),
    ({"prompt": "p", "images": [GOOD], "stream": True}, 400, "unsupported_parameter", "stream"),
    ({"prompt": "p", "images": [GOOD], "stream": "yes"}, 400, "invalid_field", "stream"),
    ({"prompt": "p", "images": [GOOD], "model": "midjourney-9"}, 404, "model_not_found",
     "model"),
], ids=lambda value: repr(value)[:40])
def test_bad_json_edits_are_4xx_naming_the_field(live_service, emulator, token, body, status,
                                                 code, param):
    refused(post_json(live_service, token, body), status, code, param)
    assert not writes(emulator) and not emulator.files.uploaded()


def test_a_json_edit_says_why_a_file_id_is_refused(live_service, emulator, token):
    error = refused(post_json(live_service, token, {"prompt": "p", "images": [
        {"file_id": "file-abc"}]}), 400, "unsupported_parameter", "images[0].file_id")
    assert "image_url" in error["message"] and "data: URL" in error["message"]


def test_malformed_json_is_400_invalid_json(live_service, emulator, token):
    response = curl_requests.post(live_service.url + "/v1/images/edits", data=b'{"prompt": "p",',
                                  timeout=30, headers={"Authorization": f"Bearer {token}",
                                                       "Content-Type": "application/json"})
    refused(response, 400, "invalid_json", None)
    assert not writes(emulator)


def test_a_json_image_over_max_upload_bytes_is_413(live_service_factory, emulator, token):
    service = live_service_factory(MAX_UPLOAD_BYTES="100")
    big = png(40, 40, shade=3) + bytes(200)
    response = post_json(service, token, {"prompt": "p", "images": image_refs(data_url(big))})
    refused(response, 413, "file_too_large", "images[0].image_url")
    assert not emulator.files.uploaded()


@pytest.mark.parametrize("body, content_type", [
    (b"prompt=p", "application/x-www-form-urlencoded"),
    (b'{"prompt": "p", "images": []}', "text/plain"),
    (b"", ""),
])
def test_an_edit_in_neither_form_is_400_naming_both(live_service, emulator, token, body,
                                                    content_type):
    response = curl_requests.post(live_service.url + "/v1/images/edits", data=body, timeout=30,
                                  headers={"Authorization": f"Bearer {token}",
                                           "Content-Type": content_type})
    error = refused(response, 400, "invalid_content_type", None)
    assert "multipart/form-data" in error["message"]
    assert "application/json" in error["message"]
    assert not writes(emulator)


def test_a_variation_stays_multipart_only(live_service, emulator, token):
    response = post_json(live_service, token, {"images": [GOOD]}, path="/images/variations")
    error = refused(response, 400, "invalid_content_type", None)
    assert error["message"] == "send the image as multipart/form-data (as the openai SDK does)"
    assert not writes(emulator)


def test_a_json_edit_without_a_token_is_401(live_service, emulator):
    response = post_json(live_service, "", {"prompt": "p", "images": [GOOD]})
    assert response.status_code == 401
    assert not writes(emulator)


# --- the relay: a routed model's edits and variations go to its upstream, as sent ------------

def relay_sdk(service):
    return openai.OpenAI(base_url=service.url + "/v1", api_key=CLIENT_KEY, max_retries=0,
                         timeout=30)


def test_a_routed_model_is_edited_by_the_relay_with_the_body_as_sent(relay_service, fake_openai,
                                                                     emulator):
    client = relay_sdk(relay_service())
    answer = client.images.edit(model="dall-e-3", prompt="add a moon",
                                image=[("a.png", PHOTO, "image/png"), ("b.png", SKETCH)],
                                mask=("m.png", SKETCH), response_format="b64_json", n=2)
    assert len(answer.data) == 2 and answer.data[0].b64_json
    (sent,) = fake_openai.requests_to("/images/edits")
    # The multipart body the SDK sent reached the upstream unchanged, mask included.
    for piece in (b'name="image[]"; filename="a.png"', PHOTO, SKETCH, b'name="mask"',
                  b"add a moon"):
        assert piece in sent.body
    assert sent.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert not writes(emulator)


def sent_form(sent):
    """(form fields, {file field: [bytes, ...]}) of a multipart request the fake upstream got."""
    _, form, files = parse_form_data({
        "REQUEST_METHOD": "POST", "CONTENT_TYPE": sent.headers["content-type"],
        "CONTENT_LENGTH": str(len(sent.body)), "wsgi.input": io.BytesIO(sent.body)})
    return form.to_dict(), {name: [f.read() for f in files.getlist(name)] for name in files}


def renaming_plan(fake_openai, public: str, upstream_model: str) -> dict:
    return {"upstreams": [upstream(fake_openai.base_url, "sk-fake-good-1")],
            "models": {public: {"routes": [{"to": "openai", "model": upstream_model}]}}}


def test_a_renamed_model_reaches_the_upstream_under_its_routed_name(relay_service, fake_openai,
                                                                    emulator):
    service = relay_service(plan=renaming_plan(fake_openai, "house-painter", "dall-e-3"))
    answer = relay_sdk(service).images.edit(model="house-painter", prompt="add a moon",
                                            image=[("a.png", PHOTO), ("b.png", SKETCH)],
                                            mask=("m.png", SKETCH), response_format="b64_json")
    assert answer.data[0].b64_json
    (sent,) = fake_openai.requests_to("/images/edits")
    form, files = sent_form(sent)
    assert form == {"model": "dall-e-3", "prompt": "add a moon", "response_format": "b64_json"}
    assert files == {"image[]": [PHOTO, SKETCH], "mask": [SKETCH]}
    assert b"house-painter" not in sent.body
    assert not writes(emulator)


def test_an_edit_left_to_the_default_model_gets_the_routed_name(relay_service, fake_openai,
                                                               emulator):
    service = relay_service(plan=renaming_plan(fake_openai, "dall-e-2", "gpt-image-1"))
    relay_sdk(service).images.edit(prompt="add a moon", image=("a.png", PHOTO))
    (sent,) = fake_openai.requests_to("/images/edits")
    form, files = sent_form(sent)
    assert form == {"prompt": "add a moon", "model": "gpt-image-1"}
    assert files == {"image": [PHOTO]}
    assert not writes(emulator)


@VARIATIONS_DEPRECATED
def test_a_routed_model_is_varied_by_the_relay(relay_service, fake_openai, emulator):
    client = relay_sdk(relay_service())
    answer = client.images.create_variation(model="dall-e-3", image=("p.png", PHOTO))
    assert answer.data[0].url
    (sent,) = fake_openai.requests_to("/images/variations")
    assert PHOTO in sent.body and b'name="image"; filename="p.png"' in sent.body
    assert not writes(emulator)


def test_a_routed_models_json_edit_is_relayed_as_json(relay_service, fake_openai, emulator):
    body = {"model": "dall-e-3", "prompt": "add a moon", "n": 2, "response_format": "b64_json",
            "images": [{"image_url": data_url(PHOTO)}, {"file_id": "file-upstream-1"}],
            "mask": {"image_url": data_url(SKETCH)}, "input_fidelity": "high"}
    response = post_json(relay_service(), CLIENT_KEY, body)
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2
    (sent,) = fake_openai.requests_to("/images/edits")
    # The JSON the caller sent reached the upstream as JSON: file_id and mask included.
    assert sent.headers["content-type"] == "application/json"
    assert sent.body == json.dumps(body).encode()  # byte for byte
    assert not writes(emulator) and not emulator.files.uploaded()


def test_a_json_edit_gets_the_routed_model_name(relay_service, fake_openai, emulator):
    service = relay_service(plan=renaming_plan(fake_openai, "house-painter", "dall-e-3"))
    body = {"model": "house-painter", "prompt": "add a moon",
            "images": image_refs(data_url(PHOTO), "https://images.example/b.png")}
    response = post_json(service, CLIENT_KEY, body)
    assert response.status_code == 200, response.text
    (sent,) = fake_openai.requests_to("/images/edits")
    assert sent.json == {**body, "model": "dall-e-3"}
    assert sent.headers["content-type"] == "application/json"
    assert not writes(emulator)
